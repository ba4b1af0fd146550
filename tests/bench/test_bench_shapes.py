"""The benchmarks on operator-shaped networks (tests/topologies/shapes.py), in their tiny
modes, for real: ``bench.compare --shape`` and ``bench.hijack``. They print their tables and
leave nothing behind; the speed goals are read from full runs, not here."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import run_module
from pyroute2 import netns as pr_netns

from tests.topologies import shapes

TAG = f"hb{os.getpid() % 10000}"


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("benchmark tests need root (namespaces, BPF)", pytrace=False)


def _leftovers(lab: str) -> list[str]:
    return [n for n in pr_netns.listnetns() if n.startswith(f"lbt-{lab}-")]


def test_compare_on_the_bridge_shape_prints_lbtui_beside_direct(tmp_path: Path) -> None:
    _need_root()
    out = tmp_path / "compare.json"
    p = run_module(["bench.compare", "--quick", "--shape", "bridge", "--lab", TAG,
                    "--contenders", "lbtui,direct", "--json", str(out)], 150)
    assert p.returncode == 0, f"bench.compare failed:\n{p.stdout}\n{p.stderr[-3000:]}"
    assert "network: shape bridge" in p.stdout
    header = next(line for line in p.stdout.splitlines() if line.startswith("metric"))
    assert header.split()[1:] == ["lbtui", "direct"]
    for name in ("lbtui", "direct"):
        (r,) = json.loads(out.read_text())["samples"][name]
        assert r["conns_per_s"] > 300 and r["conn_errors"] <= 0.01 * r["conns_per_s"], r
        assert r["udp_pps"] > 1000 and r["udp_bad_checksums"] == 0, r
    assert not _leftovers(shapes.lab_name("bridge", TAG))


def test_hijack_prints_three_phases_and_the_goal(tmp_path: Path) -> None:
    _need_root()
    out = tmp_path / "hijack.json"
    p = run_module(["bench.hijack", "--quick", "--tag", TAG, "--json", str(out)], 150)
    assert p.returncode == 0, f"bench.hijack failed:\n{p.stdout}\n{p.stderr[-3000:]}"
    phases = json.loads(out.read_text())["phases"]
    assert [ph["name"] for ph in phases] == ["no load balancer", "nftables DNAT",
                                             "lbtui (auto)"]
    for ph in phases:
        assert ph["direct_rate"] > 100 and ph["direct_errors"] == 0, ph
    for ph in phases[1:]:
        assert ph["balanced_rate"] > 100 and ph["balanced_errors"] == 0, ph
    assert sum(line.startswith("goal: direct conns/s with lbtui") for line in
               p.stdout.splitlines()) == 2
    assert not _leftovers(shapes.lab_name("veth", TAG))
