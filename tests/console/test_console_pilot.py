"""The console driven by Pilot over FakeCollector's snapshots (no BPF, no root): the
filter language in every list view, the closed-flow toggle, drill-down, copy and export.
Edits that reach the maps are in test_console_live.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import console_data as D
from consolepilot import filter_by, type_text, until
from textual.pilot import Pilot

from lbtui.console.app import ConsoleApp
from lbtui.console.forms.export import ExportForm
from lbtui.console.views.events import EventsView
from lbtui.console.views.routes import RoutesView
from lbtui.console.views.targets import TargetsView
from lbtui.maps import flowrows as R

SIZE = (150, 36)


def make_app() -> ConsoleApp:
    return ConsoleApp(D.FakeCollector(), feed=D.event_feed(), refresh_interval=None,
                      poll_ringbuf=False)


async def loaded(pilot: Pilot) -> ConsoleApp:
    app: ConsoleApp = pilot.app  # type: ignore[assignment]
    await until(pilot, lambda: app.refreshes and app.conns_view.view is not None,
                "the first snapshot")
    return app


async def conns_filter(pilot: Pilot, app: ConsoleApp, text: str) -> list[R.Row]:
    view = app.conns_view
    await filter_by(pilot, text)
    await until(pilot, lambda: view.view is not None and view.view.spec == view.spec
                and view.spec.filter == view.filter, f"the view for {text!r}")
    return view.view.rows   # type: ignore[union-attr]


async def test_connections_closed_toggle_and_field_filters() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        view = app.conns_view
        dump = app.snapshot.conns                       # type: ignore[union-attr]
        states = [R.state_of(r) for r in dump.rows]
        assert len(view.view.rows) == len(dump.rows) - states.count("closed")
        assert "6 closed hidden" in str(view.query_one(".view-title").render())
        await pilot.press("c")
        await until(pilot, lambda: len(view.view.rows) == len(dump.rows), "closed shown")
        assert view.spec.show_closed and "closed shown" in str(
            view.query_one(".view-title").render())
        # Field filters with negation, all terms must hold.
        rows = await conns_filter(pilot, app, "state:reset !target:198.18.102.2")
        assert rows and {R.state_of(r) for r in rows} == {"reset"}
        assert all(not R.target_of(r).startswith("198.18.102.2:") for r in rows)
        want = [r for r in dump.rows if R.state_of(r) == "reset"
                and not R.target_of(r).startswith("198.18.102.2:")]
        assert sorted(rows) == sorted(want)
        await pilot.press("escape")                 # Esc clears the filter
        await until(pilot, lambda: not view.spec.filter and len(view.view.rows) == len(
            dump.rows), "the filter cleared")
        # A bad filter changes nothing and says why.
        await pilot.press("slash")
        await type_text(pilot, "colour:red")
        bar = view.filter_bar
        assert bar.has_class("-invalid")
        assert "unknown field 'colour'" in str(bar.query_one("#filter-error").render())
        assert not view.spec.filter.terms[0].field   # "colour" (typed before the colon)
        await pilot.press("escape")
        await until(pilot, lambda: not view.spec.filter, "cleared again")
        assert not bar.has_class("-invalid") and not bar.is_open


async def test_filters_in_events_routes_and_targets() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await filter_by(pilot, "why:rst !event:opened", "4")
        events = app.query_one(EventsView)
        shown = list(events.table.rows)
        assert shown and all(e.reason == "rst" and e.kind == "closed" for e in shown)
        assert len(shown) == sum(e.reason == "rst" for e in D.fixed_events())
        await filter_by(pilot, "!target:198.18.101.2", "escape")
        notices = [m for m in D.hub_messages() if m["type"] in ("edit", "transition")]
        assert len(events.table.rows) == sum(
            e.target_ip != "198.18.101.2" for e in D.fixed_events()) + len(notices)
        # Edits and changes of state are rows like the flows: the same filter language.
        await filter_by(pilot, "event:edit why:ctl", "escape")
        edits = list(events.table.rows)
        assert len(edits) == 1 and edits[0].who == "alice" and " -> " in edits[0].what
        await filter_by(pilot, "user:alice", "escape")
        assert list(events.table.rows) == edits
        await filter_by(pilot, "target:198.18.103.2:8080 !event:opened !event:closed",
                        "escape")
        assert sorted(n.kind for n in events.table.rows) == ["check", "health"]

        await filter_by(pilot, "kind:sni !weight:0", "2")
        routes = app.query_one(RoutesView)
        got = [(r.group.ref, str(r.target), r.first) for r in routes.table.rows]
        assert got == [("sni|api.example.test", "198.18.101.2:8443", True),
                       ("sni|api.example.test", "198.18.102.2:8443", False),
                       ("sni|www.example.test", "198.18.102.2:8443", True)]  # relabelled

        await filter_by(pilot, "weight:drained", "3")
        targets = app.query_one(TargetsView)
        assert [(r.label, r.target) for r in targets.table.rows] == [
            ("SNI www.example.test", "198.18.103.2:8443")]


async def test_drill_down_from_a_target_to_its_connections() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("3")
        targets = app.query_one(TargetsView)
        idx = next(i for i, r in enumerate(targets.table.rows)
                   if r.target == "198.18.102.2:8080")
        targets.table.move_to(idx)
        await pilot.press("c")
        view = app.conns_view
        await until(pilot, lambda: view.view is not None
                    and view.view.spec.filter == view.filter and view.filter, "drilled")
        assert app.query_one("ContentSwitcher").current == "connections"
        assert view.filter_text == "target:198.18.102.2:8080"
        want = [r for r in app.snapshot.conns.rows                # type: ignore[union-attr]
                if R.target_of(r) == "198.18.102.2:8080" and R.state_of(r) != "closed"]
        assert sorted(view.view.rows) == sorted(want) and want


async def test_row_and_cell_colours() -> None:
    """Resets red, unanswered SYNs yellow (Connections); a drained target's row yellow
    and the sparkline green (Targets)."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        table = app.conns_view.table
        table.focus()

        def colour_of(text: str) -> str | None:
            for y in range(1, table.size.height):
                for seg in table.render_line(y):
                    if text in seg.text and seg.style and seg.style.color:
                        return seg.style.color.triplet.hex if seg.style.color.triplet else (
                            seg.style.color.name)
            raise AssertionError(f"{text!r} not on screen")

        await conns_filter(pilot, app, "state:reset")
        table.move_to(len(table.rows) - 1)     # the cursor row has its own colours
        await pilot.pause()
        red = colour_of("reset")
        await pilot.press("escape")
        await conns_filter(pilot, app, "state:syn-sent")
        table.move_to(len(table.rows) - 1)
        await pilot.pause()
        yellow = colour_of("syn-sent")
        await pilot.press("escape")
        await conns_filter(pilot, app, "state:established")
        table.move_to(len(table.rows) - 1)
        await pilot.pause()
        plain = colour_of("established")
        assert len({red, yellow, plain}) == 3
        await pilot.press("escape", "3")
        table = app.query_one(TargetsView).table
        await pilot.pause()
        assert colour_of("▁") == "green"
        assert colour_of("drained") == yellow


async def test_copy_puts_the_selected_row_on_the_clipboard() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        row = app.conns_view.table.selected
        await pilot.press("y")
        assert app.clipboard.startswith(
            f"client={R.client_of(row)} vip={R.vip_of(row)} target={R.target_of(row)} "
            f"proto={R.proto_of(row)} state={R.state_of(row)} age=")
        assert "bytes_rev=" in app.clipboard      # also columns a narrow screen hides
        await pilot.press("3", "y")
        assert app.clipboard.startswith("group=listener :53 target=198.18.103.2:9000 "
                                        "weight=100 state=- rotation=- share=-")


async def export(pilot: Pilot, app: ConsoleApp, path: Path) -> ExportForm:
    await pilot.press("s")
    form = app.screen
    assert isinstance(form, ExportForm)
    inp = form.query_one("#path")
    inp.value = str(path)
    await pilot.press("ctrl+s")
    await until(pilot, lambda: form not in app.screen_stack or form.error_text,
                "the export")
    return form


async def test_export_writes_csv_and_json_of_the_view(tmp_path: Path) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        rows = await conns_filter(pilot, app, "target:198.18.101.2")
        form = await export(pilot, app, tmp_path / "conns.csv")
        assert form not in app.screen_stack and form.result == len(rows)
        with open(tmp_path / "conns.csv") as f:
            got = list(csv.DictReader(f))
        assert [g["client"] for g in got] == [R.client_of(r) for r in rows]
        assert {g["target"] for g in got} == {"198.18.101.2:8080"}
        first = rows[0]
        assert got[0]["bytes_rev"] == str(first[R.BYTES_REV])         # raw, not "5.1 KiB"
        assert set(got[0]) == {"client", "vip", "target", "proto", "state", "age", "idle",
                               "packets_fwd", "packets_rev", "bytes_fwd", "bytes_rev"}
        # The same path again is refused, and the file is left alone.
        before = (tmp_path / "conns.csv").read_bytes()
        form = await export(pilot, app, tmp_path / "conns.csv")
        assert app.screen is form
        assert "exists" in str(form.query_one("#path-error").render())
        assert (tmp_path / "conns.csv").read_bytes() == before
        await pilot.press("escape")

        await pilot.press("3")
        form = await export(pilot, app, tmp_path / "targets.json")
        doc = json.loads((tmp_path / "targets.json").read_text())
        assert doc["view"] == "targets" and doc["instance"] == "demo"
        targets = app.query_one(TargetsView)
        assert len(doc["rows"]) == len(targets.table.rows) == form.result
        web = [r for r in doc["rows"] if r["group"] == "listener :80"]
        assert [(r["target"], r["weight"]) for r in web] == [
            ("198.18.101.2:8080", 50), ("198.18.102.2:8080", 30), ("198.18.103.2:8080", 20)]
        assert all(isinstance(r["total_bytes"], int) for r in doc["rows"])
        assert "sparkline" not in doc["rows"][0]


async def test_edits_without_a_controller_are_refused_with_the_reason() -> None:
    """No config file known: the console is read-only and says so, for drains too."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("3", "d")
        assert app.screen is app.screen_stack[0]           # nothing asked
        assert any("read-only" in str(n.message) for n in app._notifications)
