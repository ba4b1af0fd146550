"""bench.paths in its tiny mode, for real: one shape in one XDP mode carries a real burst
through ``lbtui serve``, and the table says which path its packets took, with sane numbers.
The argument checks refuse what cannot run, before anything is built."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from conftest import run_module
from pyroute2 import netns as pr_netns

from bench import paths
from lbtui.control.instance import pin_dir_of
from tests.topologies import shapes

TAG = f"pt{os.getpid() % 10000}"
CONNECTIONS, UDP = paths.QUICK["connections"], paths.QUICK["udp"]


def test_redirect_shape_in_native_mode_is_forwarded_by_xdp_itself(tmp_path: Path) -> None:
    """``redirect``: GRO on the far ends (veth then takes XDP frames) and full checksums,
    so native XDP forwards every packet of the burst itself and the LB's kernel none."""
    if os.geteuid() != 0:
        pytest.fail("benchmark tests need root (namespaces, BPF)", pytrace=False)
    out = tmp_path / "paths.json"
    p = run_module(["bench.paths", "--quick", "--shapes", "redirect", "--modes", "native",
                    "--senders", "offload", "--tag", TAG, "--json", str(out)], 150)
    assert p.returncode == 0, f"bench.paths failed:\n{p.stdout}\n{p.stderr[-3000:]}"
    lines = p.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("shape"))
    assert re.split(r"\s{2,}", lines[header].strip()) == paths.COLUMNS
    (row,) = [line for line in lines[header + 2:] if line.startswith("redirect ")]
    assert re.split(r"\s{2,}", row.strip())[:4] == ["redirect", "offload", "native", "native"]
    assert "every connection and datagram answered, no wrk errors" in lines

    (cell,) = json.loads(out.read_text())["cells"]
    c = paths.Cell(**cell)
    assert set(c.xdp.values()) == {"native"} and all(c.egress.values()), (c.xdp, c.egress)
    assert c.burst["tcp_ok"] == 2 * CONNECTIONS and c.burst["udp_ok"] == 2 * UDP, c.burst
    # every connection: SYN, ACK, request, FIN... both ways; every UDP flow: one each way
    assert c.flow_packets >= 2 * CONNECTIONS * 6 + 2 * UDP * 2, c
    assert c.stack <= 10 and c.burst["kernel_fwd"] <= 10, c
    assert c.redirect >= c.flow_packets - 10, c
    assert len(c.lbtui_rates) == 1 and len(c.direct_rates) == 2, c
    assert min(c.lbtui_rates + c.direct_rates) > 300 and c.wrk_errors == 0, c
    assert 0.1 < c.ratios[0] < 10, c.ratios
    lab = shapes.lab_name("redirect", TAG)
    assert not [n for n in pr_netns.listnetns() if n.startswith(f"lbt-{lab}-")]
    assert not pin_dir_of(f"{lab}-native").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--shapes", "bridge", "--modes", "native"], "nothing to run"),
    (["--shapes", "redirect", "--senders", "full"], "nothing to run"),
    (["--shapes", "veth,lan"], "--shapes: unknown or repeated ['lan']"),
    (["--modes", "auto,auto"], "--modes: unknown or repeated"),
    (["--rounds", "0"], "--rounds must be 1..10"),
    (["--tag", "a-much-too-long-tag"], "--tag: lab name"),
])
def test_refuses_what_cannot_run(args: list[str], message: str,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        paths.parse_args(args)
    assert e.value.code == 2
    assert message in capsys.readouterr().err
