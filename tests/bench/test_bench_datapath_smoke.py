"""bench.datapath (the datapath helper's script) runs in its quick mode and prints its
table, so bench.report can embed it."""

from __future__ import annotations

from conftest import run_module


def test_datapath_quick_prints_the_per_path_table() -> None:
    p = run_module(["bench.datapath", "--quick"], 120)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.splitlines()
    assert any("floor" in line for line in lines)
    assert any(line.startswith("established") for line in lines)
