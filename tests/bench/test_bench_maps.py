"""bench.maps in a tiny mode: real maps, every read method returns every record."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_module


def test_maps_quick_reads_every_entry_and_prints_tables(tmp_path: Path) -> None:
    out = tmp_path / "maps.json"
    p = run_module(["bench.maps", "--quick", "--entries", "6000", "--routes", "500",
                    "--json", str(out)], 60)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "conntrack read, 6,000 entries" in p.stdout
    assert "route updates" in p.stdout
    res = json.loads(out.read_text())
    got = {r["method"].split()[0]: r for r in res["conntrack"]}
    assert got["batched"]["records"] == 6000
    assert got["list_connections"]["records"] == 3000  # forward entries only
    assert got["per-key"]["records"] == 6000
    # the point of batching: one syscall per 4,096 entries instead of two per entry
    assert got["batched"]["seconds"] < got["per-key"]["seconds"]
    ops = {r["operation"]: r for r in res["routes"]}
    assert set(ops) == {"listen entry weight edit", "source route insert (LPM /32)",
                        "source route delete (LPM /32)", "SNI route add (with hostname file)"}
    assert all(r["count"] == 500 and r["ops_per_s"] > 0 for r in ops.values())


def test_maps_rejects_bad_sizes_before_touching_anything() -> None:
    p = run_module(["bench.maps", "--entries", "1"], 30)
    assert p.returncode == 2
    assert "--entries" in p.stderr
