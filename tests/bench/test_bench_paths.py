"""bench.paths in its tiny mode, for real: plain veths (far ends without XDP) with full
checksums, in native and generic XDP, carry a real burst through ``lbtui serve``. The two
modes take opposite paths there, so the table must tell them apart, and the LB
namespace's own forwarding counter must agree with it. The argument checks refuse what
cannot run, before anything is built."""

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
# Per client: every connection at least SYN, ACK, request, FIN forward and SYN-ACK, answer
# with FIN, last ACK back; every UDP flow one datagram each way.
MIN_PACKETS = 2 * (CONNECTIONS * 7 + UDP * 2)
SLACK = 20   # packets the burst's count may miss or add (a retransmission, a late ACK)


def cells_by_mode(out: Path) -> dict[str, paths.Cell]:
    return {c["mode"]: paths.Cell(**c) for c in json.loads(out.read_text())["cells"]}


def test_table_tells_the_stack_from_redirect_by_real_traffic(tmp_path: Path) -> None:
    """Native XDP may not redirect into a veth whose far end has no XDP program and GRO
    off: every packet goes to the stack (egress_not_xdp) and the LB's kernel forwards
    them. Generic XDP redirects through the stack's transmit path: the kernel's IP
    forwarding sees none of them."""
    if os.geteuid() != 0:
        pytest.fail("benchmark tests need root (namespaces, BPF)", pytrace=False)
    out = tmp_path / "paths.json"
    p = run_module(["bench.paths", "--quick", "--shapes", "veth", "--modes", "native,generic",
                    "--senders", "full", "--tag", TAG, "--json", str(out)], 180)
    assert p.returncode == 0, f"bench.paths failed:\n{p.stdout}\n{p.stderr[-3000:]}"
    lines = p.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("shape "))
    assert re.split(r"\s{2,}", lines[header].strip()) == paths.COLUMNS
    rows = {r[2]: r for r in (re.split(r"\s{2,}", line.strip())
                              for line in lines[header + 2:header + 4])}
    assert set(rows) == {"native", "generic"}, lines[header:header + 4]
    assert all(len(r) == len(paths.COLUMNS) for r in rows.values()), rows
    assert rows["native"][:4] == ["veth", "full", "native", "native"]
    assert rows["generic"][:4] == ["veth", "full", "generic", "generic"]
    assert rows["native"][4] == "none" and rows["generic"][4] == "all", rows
    assert rows["native"][9].startswith("egress_not_xdp "), rows["native"]
    assert "every connection and datagram answered, no wrk errors" in lines

    cells = cells_by_mode(out)
    for mode, c in cells.items():
        assert c.burst["tcp_ok"] == 2 * CONNECTIONS and c.burst["udp_ok"] == 2 * UDP, (mode, c)
        assert c.flows >= 2 * (CONNECTIONS + UDP) and c.flow_packets >= MIN_PACKETS, (mode, c)
        assert len(c.lbtui_rates) == 1 and len(c.direct_rates) == 2, (mode, c)
        assert min(c.lbtui_rates + c.direct_rates) > 100 and c.wrk_errors == 0, (mode, c)
        assert 0.05 < c.ratios[0] < 20, (mode, c.ratios)
    native, generic = cells["native"], cells["generic"]
    assert native.stack >= native.flow_packets - SLACK and native.redirect <= SLACK, native
    assert native.reasons.get("egress_not_xdp", 0) >= native.flow_packets - SLACK, native
    assert native.burst["kernel_fwd"] >= native.flow_packets - SLACK, native
    assert generic.redirect >= generic.flow_packets - SLACK and generic.stack <= SLACK, generic
    assert generic.burst["kernel_fwd"] <= SLACK, generic

    lab = shapes.lab_name("veth", TAG)
    assert not [n for n in pr_netns.listnetns() if n.startswith(f"lbt-{lab}-")]
    assert not any(pin_dir_of(f"{lab}-{m}").exists() for m in cells)


@pytest.mark.parametrize(("args", "message"), [
    (["--shapes", "bridge", "--modes", "native"], "nothing to run"),
    (["--shapes", "redirect", "--senders", "full"], "nothing to run"),
    (["--shapes", "veth,lan"], "--shapes: unknown or repeated ['lan']"),
    (["--modes", "auto,auto"], "--modes: unknown or repeated"),
    (["--senders", "nic"], "--senders: unknown or repeated ['nic']"),
    (["--rounds", "0"], "--rounds must be 1..10"),
    (["--connections", "2001"], "--connections must be 1..2000"),
    (["--rate-seconds", "31"], "--rate-seconds must be 1..30"),
    (["--tag", "a-much-too-long-tag"], "--tag: lab name"),
])
def test_refuses_what_cannot_run(args: list[str], message: str,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        paths.parse_args(args)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_defaults_and_quick() -> None:
    """Every shape, mode and sender kind by default; ``--quick`` shrinks only the load."""
    s, _ = paths.parse_args([])
    assert s.shapes == list(shapes.SHAPES) and s.modes == list(shapes.ALL_MODES)
    assert s.senders == list(paths.SENDERS) and (s.rounds, s.rate_seconds) == (5, 1)
    q, _ = paths.parse_args(["--quick", "--senders", "full,offload"])
    assert (q.connections, q.udp, q.rounds) == (40, 20, 1)
    assert q.senders == ["offload", "full"]     # "full" changes the endpoints: run last
    assert ("redirect", "full", ["native", "generic", "auto"]) not in paths.planned(q)
    assert ("bridge", "offload", ["generic", "auto"]) in paths.planned(q)
