"""bench.report: joins the parts into docs markdown and a PNG chart, from real runs."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_module

from bench.compare import CONTENDERS
from bench.report import BEGIN, END


def test_report_writes_section_between_markers_and_a_chart(compare_quick,
                                                          tmp_path: Path) -> None:
    maps_json = tmp_path / "maps.json"
    p = run_module(["bench.maps", "--quick", "--entries", "2000", "--routes", "200",
                    "--json", str(maps_json)], 60)
    assert p.returncode == 0, p.stderr[-2000:]
    datapath_txt = tmp_path / "datapath.txt"
    datapath_txt.write_text("datapath table as printed by bench.datapath\n")
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\nhand-written method\n\n{BEGIN}\nold numbers\n{END}\n\n"
                   "hand-written shortfalls\n")
    png = tmp_path / "chart.png"
    args = ["bench.report", "--compare-json", str(compare_quick.json_path), "--maps-json",
            str(maps_json), "--datapath-text", str(datapath_txt), "--docs", str(doc),
            "--png", str(png)]
    for _ in range(2):  # rerunning replaces the section instead of appending another
        p = run_module(args, 60)
        assert p.returncode == 0, p.stderr[-3000:]
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nhand-written method\n")
    assert text.rstrip().endswith("hand-written shortfalls")
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert "old numbers" not in text
    header = next(line for line in text.splitlines() if line.startswith("| metric"))
    assert [c.strip() for c in header.strip("|").split("|")][1:] == list(CONTENDERS)
    assert "datapath table as printed by bench.datapath" in text
    assert "| batched (BPF_MAP_LOOKUP_BATCH, 4096/chunk) |" in text
    assert "![" in text and "(chart.png)" in text
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000
    # the printed report carries the comparison measured by the real run
    conns = json.loads(compare_quick.json_path.read_text())["samples"]["lbtui"][0]
    assert f"{conns['conns_per_s']:,.0f}" in p.stdout
