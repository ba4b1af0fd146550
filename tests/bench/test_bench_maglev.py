"""bench.maglev in a tiny mode: tables built, removals measured, new flows timed through the
real XDP program, the tables printed."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_module


def test_maglev_quick_measures_balance_and_disruption(tmp_path: Path) -> None:
    out = tmp_path / "maglev.json"
    p = run_module(["bench.maglev", "--quick", "--tuples", "5000", "--kernel", "--json",
                    str(out)], 180)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Removing one of N equal targets, 5,000 flows" in p.stdout
    res = json.loads(out.read_text())
    assert [b["size"] for b in res["builds"]] == [4093, 65537]
    assert all(b["share_error_pp"] < 0.1 for b in res["builds"])
    assert {(r["size"], r["n"]) for r in res["removals"]} == {
        (s, n) for s in (4093, 65537) for n in (2, 3, 4)}
    # 5,000 flows: binomial noise of ~0.7 pp on top of the bound's 2 pp
    assert all(r["moved_pct"] <= r["bound_pct"] + 1.5 for r in res["removals"])
    # --kernel: every new flow of both listeners was forwarded (the run checks verdicts)
    assert [(r["path"], r["samples"]) for r in res["kernel"]] == [
        ("empty program (floor)", 800), ("new flow, weighted", 800), ("new flow, maglev", 800)]
    assert "New flow through the XDP program" in p.stdout
