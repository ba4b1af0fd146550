"""Every bad input of the corpus, through the real CLI in a subprocess, against a live
serve: the exit code and message are right, and nothing changed (config and state files
byte-identical, every map entry identical, the decoys intact, serve still balancing)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbtui import netns

from .conftest import LBTUI, TAG, Live
from .corpus import CORPUS, HELLOS, Case

pytestmark = [pytest.mark.datapath, pytest.mark.netns, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def bad_files(live: Live, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    d = tmp_path_factory.mktemp("bad")
    good = live.config.read_text()
    files = {k: d / f"{k}.toml" for k in ("instance", "netns", "not_utf8", "deep", "huge",
                                           "missing", "syntax")}
    files["instance"].write_text(good.replace(f'instance = "{live.name}"',
                                              f'instance = "../../../..{live.decoy}"'))
    files["netns"].write_text(good.replace(f'netns = "{live.topo.lb_ns}"',
                                           'netns = "../../proc/1/ns/net"'))
    files["not_utf8"].write_bytes(good.encode().replace(b"# web", b"\n# w\xe9b", 1))
    files["deep"].write_text("[datapath]\nx = " + "[" * 5000 + "]" * 5000 + "\n")
    with files["huge"].open("wb") as f:
        f.truncate(17 << 20)                 # sparse: costs no disk
    files["syntax"].write_text(good + "\n[[listener]\n")
    files["fifo"] = d / "fifo"
    os.mkfifo(files["fifo"])
    files["directory"] = d / "directory"
    files["directory"].mkdir()
    yield files


def _argv(case: Case, live: Live, bad: dict[str, Path]) -> list[str]:
    ctx = {"name": live.name, "decoy": str(live.decoy), "tag": TAG, "vip": live.topo.vip,
           "b1": live.topo.backends[0].ip, "bad": {k: str(v) for k, v in bad.items()}}
    return [a.format(**ctx) for a in case.argv]


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_bad_input_changes_nothing(live: Live, bad_files: dict[str, Path], case: Case
                                   ) -> None:
    before = live.snapshot()
    argv = _argv(case, live, bad_files)
    r = subprocess.run([*LBTUI, *argv], capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    said = r.stderr + r.stdout
    assert r.returncode == case.code, (argv, said)
    assert case.says.format(decoy=live.decoy, tag=TAG) in said, (argv, said)
    if case.code == 2:
        assert "Traceback" not in said
    assert live.snapshot() == before
    live.assert_serving()


@pytest.mark.parametrize("payload", HELLOS.values(), ids=list(HELLOS))
def test_bad_hello_is_refused_and_changes_nothing(live: Live, payload: bytes) -> None:
    before = live.snapshot()
    with netns.inside(live.topo.clients[0].ns):
        s = socket.create_connection((live.topo.vip, 443), timeout=5)
    with s:
        t0 = time.monotonic()
        s.sendall(payload)
        try:
            assert s.recv(100) == b""
        except ConnectionResetError:
            pass
        assert time.monotonic() - t0 < 3       # refused for what it sent, not a timeout
    assert live.snapshot() == before
    live.assert_serving()
