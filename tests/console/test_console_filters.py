"""The filter language (parser and matcher), exports, the header's fitting and the
tables' column fitting: plain functions, no screen and no root."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import console_data as D
import pytest

from lbtui.console.data import conns as C
from lbtui.console.data.export import copy_text, export_path, render
from lbtui.console.data.filters import Filter, FilterError, Term, parse_filter
from lbtui.console.widgets.header import header_text
from lbtui.console.widgets.linetable import TableColumn, fit_columns

FIELDS = ("client", "vip", "target", "proto", "state")


def row(client: str = "198.18.1.2:40000", vip: str = "198.18.0.10:80",
        target: str = "10.0.1.11:8080", proto: str = "tcp", state: str = "established"
        ) -> dict[str, str]:
    return {"client": client, "vip": vip, "target": target, "proto": proto, "state": state}


def test_parse_terms() -> None:
    f = parse_filter("State:SYN-sent !target:10.0.1.11 udp !rst 198.18.0.10:80", FIELDS)
    assert f.terms == (Term("state", "syn-sent"), Term("target", "10.0.1.11", True),
                       Term(None, "udp"), Term(None, "rst", True),
                       Term(None, "198.18.0.10:80"))
    assert str(f) == "state:syn-sent !target:10.0.1.11 udp !rst 198.18.0.10:80"
    assert not parse_filter("   ", FIELDS) and parse_filter("x", FIELDS)
    assert parse_filter("backend:10.0.1.11", FIELDS, {"backend": "target"}).terms == (
        Term("target", "10.0.1.11"),)


@pytest.mark.parametrize("text,why", [
    ("colour:red", "unknown field 'colour' in 'colour:red': fields are client, vip, "
                   "target, proto, state"),
    ("state:", "'state:': give a value after the colon, like state:syn-sent"),
    ("!", "'!' needs a term after it"),
    ("udp !", "'!' needs a term after it"),
])
def test_parse_errors_say_why(text: str, why: str) -> None:
    with pytest.raises(FilterError) as e:
        parse_filter(text, FIELDS)
    assert why in str(e.value)


@pytest.mark.parametrize("text,hit,miss", [
    ("state:syn-sent", row(state="syn-sent"), row()),
    ("state:syn", row(state="syn-sent"), row(state="reset")),        # a whole part
    ("target:10.0.1.11", row(), row(target="10.0.1.110:8080")),
    ("target:10.0.1.11:8080", row(), row(target="10.0.1.11:80")),
    ("!target:10.0.1.11", row(target="10.0.1.12:8080"), row()),
    ("client:198.18.2.", row(client="198.18.2.77:5000"), row(client="198.18.20.7:5000")),
    ("vip::80", row(), row(vip="198.18.0.10:8080")),
    ("proto:udp", row(proto="udp"), row()),
    ("udp", row(proto="udp"), row()),                                 # free text
    ("!udp", row(), row(proto="udp")),
    ("0.1.1", row(), row(target="10.0.2.11:8080")),                   # free: substring
    ("tcp !state:reset 10.0.1.", row(), row(state="reset")),          # all must hold
    ("ESTABLISHED", row(), row(state="closed")),                      # any case
])
def test_matching(text: str, hit: dict[str, str], miss: dict[str, str]) -> None:
    f = parse_filter(text, FIELDS)
    assert f.matches(hit) and not f.matches(miss)


def test_free_text_looks_only_in_searchable_fields() -> None:
    f = parse_filter("80", ("target", "packets"))
    match = f.matcher(("target", "packets"), searchable=("target",))
    assert match(["10.0.1.11:8080", "1"]) and not match(["10.0.1.11:9000", "80"])
    assert Filter().matcher(FIELDS)(["", "", "", "", ""])     # empty: everything
    with pytest.raises(FilterError, match="unknown field 'state'"):
        parse_filter("state:x", FIELDS).matcher(("target",))


def test_export_path_checks(tmp_path: Path) -> None:
    assert export_path("out.json", tmp_path) == tmp_path / "out.json"
    assert export_path(str(tmp_path / "x.CSV")) == tmp_path / "x.CSV"
    (tmp_path / "taken.csv").write_text("")
    for text, why in [("", "give a file name"), ("out.txt", "must end in .csv or .json"),
                      ("nodir/out.csv", "is not a directory"), ("taken.csv", "exists")]:
        with pytest.raises(ValueError, match=why):
            export_path(text, tmp_path)


def test_render_csv_and_json() -> None:
    records = [{"client": "198.18.1.2:4000", "bytes_fwd": 1200, "lived": None},
               {"client": "198.18.1.3:4000", "bytes_fwd": 7, "lived": 1.5}]
    rows = list(csv.DictReader(io.StringIO(render("csv", {}, records))))
    assert rows == [{"client": "198.18.1.2:4000", "bytes_fwd": "1200", "lived": ""},
                    {"client": "198.18.1.3:4000", "bytes_fwd": "7", "lived": "1.5"}]
    doc = json.loads(render("json", {"view": "connections"}, records))
    assert doc == {"view": "connections", "rows": records}
    assert copy_text(records[0]) == "client=198.18.1.2:4000 bytes_fwd=1200"


def test_columns_fit_by_drop_order() -> None:
    cols = [TableColumn(n, w, str, drop=d) for n, w, d in
            [("a", 10, 0), ("b", 10, 3), ("c", 10, 1), ("d", 10, 2)]]
    names = [c.name for c in fit_columns(cols, 44)]
    assert names == ["a", "b", "c", "d"]
    assert [c.name for c in fit_columns(cols, 43)] == ["a", "c", "d"]     # b first
    assert [c.name for c in fit_columns(cols, 22)] == ["a", "c"]
    assert [c.name for c in fit_columns(cols, 5)] == ["a"]               # never a
    # A column dropped on the way comes back if it fits after all.
    wide = [TableColumn("x", 10, str), TableColumn("y", 30, str, drop=2),
            TableColumn("z", 5, str, drop=3)]
    assert [c.name for c in fit_columns(wide, 20)] == ["x", "z"]


def test_conn_columns_at_80_keep_client_target_proto_state() -> None:
    cols = [TableColumn(c.name, c.width, c.text, c.right, drop=c.drop) for c in C.COLUMNS]
    assert [c.name for c in fit_columns(cols, 78)] == [
        "client", "target", "proto", "state", "age", "idle"]


def test_header_fits_80_columns_with_the_vital_facts() -> None:
    snap = D.FakeCollector().collect()
    wide = header_text(snap).plain.split("\n")
    assert "instance demo" in wide[0] and "netns lbt-demo-lb" in wide[0]
    assert "conntrack 322/4,096 (8%)" in wide[1] and "lost events 0" in wide[1]
    for width in (80, 60):
        lines = header_text(snap, width).plain.split("\n")
        assert all(len(line) <= width for line in lines), lines
        assert "demo" in lines[0]
        for fact in ("conns 161", "new 2.0/s", "ct 8%", "lost 0"):
            assert fact in lines[1], (width, lines)
    assert "→ 37.7 KiB/s" in header_text(snap, 80).plain
