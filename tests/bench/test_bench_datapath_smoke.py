"""bench.datapath (the datapath helper's script) runs in its quick mode and prints its
table, so bench.report can embed it, with the reference balancer timed beside lbtui."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_module


def test_datapath_quick_prints_the_per_path_table(tmp_path: Path) -> None:
    out = tmp_path / "datapath.json"
    p = run_module(["bench.datapath", "--quick", "--json", str(out)], 120)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.splitlines()
    assert any("floor" in line for line in lines)
    assert any(line.startswith("established") for line in lines)
    # the reference: its own rows, filled like lbtui's table, and the side-by-side table
    side_by_side = p.stdout.split("lbtui against the reference balancer")[1].splitlines()
    assert any(line.split()[:2] == ["established", "established"] for line in side_by_side)
    size = json.loads(out.read_text())["sizes"][0]
    ref = {r["name"] for r in size["rows_90"] + size["rows_full"] if r["prog"] == "ref"}
    assert ref == {"non-matching", "established", "reply", "new flow",
                   "new flow, two entries", "new flow, table full (evicts)",
                   "new flow, two entries, table full", "new flow, no insert"}
    assert abs(size["ref_entries_90"] - 0.9 * size["size"]) < 0.01 * size["size"]
    assert size["ref_entries_full"] > 0.98 * size["size"]
    assert all(r["samples"] > 0 and r["single_minus_floor_ns"] is not None
               for r in size["rows_90"] + size["rows_full"] if r["prog"] == "ref")
