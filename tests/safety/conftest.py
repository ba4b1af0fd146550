"""A live instance to throw bad input at, and what "nothing changed" means.

``live`` (one per test module): a namespace lab with HTTP, echo and TLS backends, a real
``lbtui serve`` subprocess on it (XDP listeners on VIP:80 and VIP:7000, an SNI listener on
VIP:443), and decoys that a path-traversal bug would destroy: a directory outside lbtui's
own (``/tmp/lbtui-decoy-<tag>``), and a lab ``<tag>a-b`` (a namespace and a state
directory) next to which the corpus tears down lab ``<tag>a``.

``Live.snapshot()`` captures everything a bad input must leave alone: the config file's
bytes, the state and SNI-name files, the pinned maps (every entry), the decoys, the lab's
namespaces. ``Live.assert_serving()`` checks serve is alive and still balances.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from control.conftest import LBTUI, Serve, dump_maps, http_get, lab_config
from pyroute2 import netns as pr_netns
from sni.conftest import SniLab, sni_lab, wait_for  # the SNI lab serves overload tests

from lbtui import netns
from lbtui.control.instance import state_dir_of, teardown
from lbtui.control.state import state_path
from lbtui.datapath.loader import DatapathError, preflight
from lbtui.lab import topology as T
from lbtui.lab.tlscerts import TlsFiles, make_certs

TAG = f"sf{os.getpid() % 100000}"
SNI_NAMES = ["api.safety.test", "www.safety.test"]


def tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` with a digest of its bytes ("dir" for directories)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for d in dirs:
            out[os.path.join(dirpath, d)] = "dir"
        for f in files:
            p = os.path.join(dirpath, f)
            out[p] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


def file_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


@dataclass
class Live:
    topo: T.Topology
    name: str
    config: Path
    serve: Serve
    tls: TlsFiles
    decoy: Path           # a directory outside lbtui's own, with files in it
    decoy_lab: str        # a lab whose name extends the one the corpus removes

    @property
    def decoy_lab_ns(self) -> str:
        return f"{T.NS_PREFIX}{self.decoy_lab}-client1"

    def snapshot(self) -> dict[str, Any]:
        return {
            "config": file_bytes(self.config),
            "state": file_bytes(state_path(self.name)),
            "sni_names": tree(state_dir_of(self.name)),
            "maps": dump_maps(self.name, conntrack=False),
            "decoy": tree(self.decoy),
            "decoy_lab": tree(T.STATE_DIR / self.decoy_lab),
            "namespaces": sorted(n for n in pr_netns.listnetns() if TAG in n),
        }

    def assert_serving(self) -> None:
        assert self.serve.proc.poll() is None, f"serve exited:\n{self.serve.output}"
        assert http_get(self.topo) in {e.node for e in self.topo.backends}
        assert self.tls_get("api.safety.test") in {e.node for e in self.topo.backends}

    def tls_get(self, hostname: str) -> str:
        ctx = ssl.create_default_context(cafile=str(self.tls.ca))
        with netns.inside(self.topo.clients[0].ns), socket.create_connection(
                (self.topo.vip, 443), timeout=5) as raw, ctx.wrap_socket(
                raw, server_hostname=hostname) as s:
            s.sendall(f"GET / HTTP/1.0\r\nHost: {hostname}\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        return data.split(b"\r\n\r\n", 1)[1].decode().split()[0]   # "backend2 sni=..."


SNI_CONFIG = """
[[listener]]
port = 443
protocol = "tcp"
sni = true
address = "{vip}"
targets = [{{ ip = "{b1}", port = 8443 }}]

[[sni_route]]
hostname = "api.safety.test"
targets = [{{ ip = "{b2}", port = 8443 }}]
"""


@pytest.fixture(scope="module")
def live(state_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    try:
        preflight()
    except DatapathError as e:
        pytest.fail(f"safety tests need root and BPF: {e}", pytrace=False)
    work = tmp_path_factory.mktemp("safety")
    lab, name = f"{TAG}-live", f"{TAG}-live"
    decoy = Path(f"/tmp/lbtui-decoy-{TAG}")
    decoy_lab = f"{TAG}a-b"
    serve = None
    try:
        topo = T.build(lab, 1, 3)
        tls = make_certs(work / "tls", SNI_NAMES)
        T.start_backend_servers(topo, tls=8443, cert=tls.cert, key=tls.key)
        b = topo.backends
        config = work / "lbtui.toml"
        config.write_text(lab_config(topo, name, extra=SNI_CONFIG.format(
            vip=topo.vip, b1=b[0].ip, b2=b[1].ip)))
        config.chmod(0o640)
        (decoy / "sub").mkdir(parents=True, exist_ok=True)
        (decoy / "keep.txt").write_text("a decoy: must survive every test\n")
        (decoy / "sub" / "data").write_bytes(os.urandom(64))
        pr_netns.create(f"{T.NS_PREFIX}{decoy_lab}-client1")
        (T.STATE_DIR / decoy_lab).mkdir(parents=True, exist_ok=True)
        (T.STATE_DIR / decoy_lab / "keep.txt").write_text("decoy lab\n")
        serve = Serve(config).wait_ready()
        yield Live(topo, name, config, serve, tls, decoy, decoy_lab)
    finally:
        if serve is not None and serve.proc.poll() is None:
            serve.stop()
        teardown(name)
        T.teardown(lab)
        T.teardown(decoy_lab)
        shutil.rmtree(decoy, ignore_errors=True)


__all__ = ["LBTUI", "TAG", "Live", "SniLab", "live", "sni_lab", "tree", "wait_for"]
