"""``bench.synflood --quick`` for real, lbtui without and with its SYN flood guard: spoofed
SYNs through the lab's XDP datapath while a real client connects through the kernel's
TCP. With the guard every real connection completes by the handshake path and the
idle connections outlive the flood; without it the flood's SYNs become flows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pyroute2 import netns as pr_netns

REPO = Path(__file__).resolve().parents[2]


def test_the_guard_tracks_no_flood_and_keeps_established_flows(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("benchmark tests need root (namespaces, BPF)", pytrace=False)
    lab = f"h7t{os.getpid() % 100000}"
    out = tmp_path / "synflood.json"
    p = subprocess.run([sys.executable, "-m", "bench.synflood", "--quick", "--lab", lab,
                        "--contenders", "lbtui,lbtui-cap", "--json", str(out)], cwd=REPO,
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, f"bench.synflood failed:\n{p.stdout}\n{p.stderr[-3000:]}"
    assert "lbtui-cap: real connections never failed" in p.stdout, p.stdout
    res = json.loads(out.read_text())
    cap, plain = res["results"]["lbtui-cap"], res["results"]["lbtui"]
    for step in cap:
        assert step["established_alive"] == step["established"], step
        assert step["probe_ok_ratio"] >= 0.99, step
    for step in (s for s in cap if s["rate"]):
        # At most the first window of each CPU (134 ms of 1,000/s) beside the real ones.
        real = step["probe_ok"] + step["probe_failed"]
        assert step["flows_created"] <= real + 2 * 140, step
        assert step["flood_syns"] >= 0.9 * step["sent"] - 2 * 140, step   # veth may drop
    for step in (s for s in plain if s["rate"]):
        assert step["flood_syns"] == 0 and step["flows_created"] >= 0.9 * step["sent"], step
    table_flows = res["settings"]["max_connections"] // 2
    if sum(s["sent"] for s in plain) > 2 * table_flows:    # the flood outgrew the table
        assert plain[-1]["established_alive"] < plain[-1]["established"], plain[-1]
    assert not [n for n in pr_netns.listnetns() if n.startswith(f"lbt-{lab}-")]
