"""Snapshot tests: every view and form, at the usual size and at 80x24, rendered from
``console_data.FakeCollector``: Snapshots of a fixed scenario built in memory (no BPF, no
root), which the data-layer tests prove equal to what the real Collector reads from maps
holding the same scenario.

Update after an intended change with ``pytest tests/console --snapshot-update`` and look
at the report before committing the new SVGs.
"""

from __future__ import annotations

from collections.abc import Callable

import console_data as D
import pytest
from consolepilot import filter_by, loaded, type_text
from textual.pilot import Pilot
from textual.widgets import Input

from lbtui.console.app import ConsoleApp
from lbtui.console.data.groups import Group
from lbtui.console.forms.dialogs import ConfirmScreen, QuitScreen
from lbtui.console.forms.routes import (
    ListenerForm,
    SniRouteForm,
    SourceRouteForm,
    TimeoutForm,
    WeightsForm,
)
from lbtui.console.views.routes import RoutesView

SIZE = (150, 36)
SMALL = (80, 24)


pytestmark = pytest.mark.usefixtures("utc")


@pytest.fixture
def app() -> ConsoleApp:
    return ConsoleApp(D.FakeCollector(), feed=D.event_feed(), refresh_interval=None,
                      poll_ringbuf=False)


async def steady(pilot: Pilot) -> None:
    """Input cursors blink every 0.5 s; on a busy machine the screenshot could land on
    either phase. Hold them visible."""
    for inp in pilot.app.screen.query(Input):
        inp.cursor_blink = False
    await pilot.pause()


def keys_then_steady(*keys: str, typed: str = "") -> Callable:
    async def run(pilot: Pilot) -> None:
        await loaded(pilot)
        await pilot.press(*keys)
        await type_text(pilot, typed)
        await steady(pilot)
    return run


def filtered(text: str, *before: str, then: tuple[str, ...] = ()) -> Callable:
    """Loaded, ``before`` pressed, ``text`` typed into the filter bar, ``then`` pressed."""
    async def run(pilot: Pilot) -> None:
        await loaded(pilot)
        await filter_by(pilot, text, *before)
        await pilot.press(*then)
        await steady(pilot)
    return run


def group(app: ConsoleApp, ref: str) -> Group:
    return next(g for g in app.groups if g.ref == ref)


def with_screen(make: Callable[[ConsoleApp], object], *keys: str) -> Callable:
    async def run(pilot: Pilot) -> None:
        await loaded(pilot)
        pilot.app.push_screen(make(pilot.app))  # type: ignore[arg-type]
        await pilot.pause()
        if keys:
            await pilot.press(*keys)
            await pilot.pause()
        await steady(pilot)
    return run


@pytest.mark.parametrize("key,view", [("1", "connections"), ("2", "routes"),
                                      ("3", "targets"), ("4", "events"),
                                      ("5", "settings"), ("6", "reasons")])
def test_view(snap_compare, app: ConsoleApp, key: str, view: str) -> None:
    assert snap_compare(app, press=[key], terminal_size=SIZE, run_before=loaded)


@pytest.mark.parametrize("key,view", [("1", "connections"), ("2", "routes"),
                                      ("3", "targets"), ("4", "events"),
                                      ("5", "settings"), ("6", "reasons")])
def test_view_80x24(snap_compare, app: ConsoleApp, key: str, view: str) -> None:
    """A small terminal: the header keeps the instance, counts, rates, conntrack fill and
    lost events; tables keep their vital columns (the others come back when wider)."""
    assert snap_compare(app, press=[key], terminal_size=SMALL, run_before=loaded)


def test_targets_failing_only(snap_compare, app: ConsoleApp) -> None:
    """Targets per (group, target): backend3:8080 failing and out of rotation under
    listener :80, degraded under the source route that shares it; the SNI route the hub
    knew by its hash under its hostname; a filter keeps what is not healthy."""
    assert snap_compare(app, terminal_size=SIZE, run_before=filtered("!state:healthy", "3"))


def test_events_edits_and_changes_of_state(snap_compare, app: ConsoleApp) -> None:
    """Edits (who, from where, old -> new) and changes of state among the flows; the
    filter bar works on them."""
    assert snap_compare(app, terminal_size=SIZE,
                        run_before=filtered("!event:opened !event:closed", "4"))


def test_connections_closed_shown_and_coloured(snap_compare, app: ConsoleApp) -> None:
    """c shows closed flows (dim); resets red and unanswered SYNs yellow; by state."""
    assert snap_compare(app, press=["c", "less_than_sign", "r"], terminal_size=SIZE,
                        run_before=loaded)


def test_connections_field_filter_with_negation(snap_compare, app: ConsoleApp) -> None:
    assert snap_compare(app, terminal_size=SIZE,
                        run_before=filtered("state:syn-sent !client:198.18.2."))


def test_filter_error_changes_nothing(snap_compare, app: ConsoleApp) -> None:
    """An unknown field pasted into the bar: the reason under it, and the filter in force
    (kind:sni) still in force."""
    async def run(pilot: Pilot) -> None:
        await loaded(pilot)
        await filter_by(pilot, "kind:sni", "2")
        await pilot.press("slash")
        pilot.app.query_one(RoutesView).filter_bar.input.value = "kind:sni colour:red"
        await pilot.pause()
        await steady(pilot)
    assert snap_compare(app, terminal_size=SIZE, run_before=run)


def test_targets_drill_down_to_connections(snap_compare, app: ConsoleApp) -> None:
    """c on a target: Connections filtered to it."""
    assert snap_compare(app, press=["3", "down", "c"], terminal_size=SIZE,
                        run_before=loaded)


def test_export_form(snap_compare, app: ConsoleApp, monkeypatch: pytest.MonkeyPatch
                     ) -> None:
    monkeypatch.chdir("/")
    assert snap_compare(app, terminal_size=SIZE, run_before=filtered("!udp", then=("s",)))


def test_connections_sorted_and_filtered(snap_compare, app: ConsoleApp) -> None:
    """Sorted by packets → descending, filtered to one backend, frozen."""
    assert snap_compare(app, terminal_size=SIZE, run_before=filtered(
        "103.2", "greater_than_sign", "greater_than_sign", "r", then=("space",)))


def test_events_paused_filtered(snap_compare, app: ConsoleApp) -> None:
    assert snap_compare(app, press=["4", "slash", *"closed", "enter", "p"],
                        terminal_size=SIZE, run_before=loaded)


def test_weights_form(snap_compare, app: ConsoleApp) -> None:
    assert snap_compare(app, terminal_size=SIZE, run_before=with_screen(
        lambda a: WeightsForm("listener :80", group(a, "listener|80").group,
                              lambda _g: None, a.hints)))


def test_weights_form_bad_sum(snap_compare, app: ConsoleApp) -> None:
    """A weight edited to make the sum 90: live sum in red, save refused with reason."""
    def make(a: ConsoleApp) -> WeightsForm:
        return WeightsForm("listener :80", group(a, "listener|80").group, lambda _g: None,
                           a.hints)
    assert snap_compare(app, terminal_size=SIZE, run_before=with_screen(
        make, "tab", "tab", "ctrl+k", "4", "0", "ctrl+s"))


def test_weights_form_80x24(snap_compare, app: ConsoleApp) -> None:
    assert snap_compare(app, terminal_size=SMALL, run_before=with_screen(
        lambda a: WeightsForm("listener :80", group(a, "listener|80").group,
                              lambda _g: None, a.hints)))


def test_sni_form_new(snap_compare, app: ConsoleApp) -> None:
    assert snap_compare(app, terminal_size=SIZE, run_before=with_screen(
        lambda a: SniRouteForm(lambda _v: None, hints=a.hints)))


def test_sni_form_bad_hostname(snap_compare, app: ConsoleApp) -> None:
    assert snap_compare(app, terminal_size=SIZE, run_before=with_screen(
        lambda a: SniRouteForm(lambda _v: None, hints=a.hints), *"bad_host..test", "tab",
        *"198.18.101.2", "tab", *"8443", "ctrl+s"))


def test_source_route_form(snap_compare, app: ConsoleApp) -> None:
    assert snap_compare(app, terminal_size=SIZE, run_before=with_screen(
        lambda a: SourceRouteForm(lambda _v: None, "198.18.2.0/24",
                                  group(a, "source|198.18.2.0/24").group, a.hints)))


def test_listener_form(snap_compare, app: ConsoleApp) -> None:
    assert snap_compare(app, terminal_size=SIZE, run_before=with_screen(
        lambda a: ListenerForm(lambda _v: None, port=443, protocol="tcp", sni=True,
                               group=group(a, "listener|443").group,
                               hints=a.hints)))


def test_listener_form_new_80x24(snap_compare, app: ConsoleApp) -> None:
    """A new listener: placeholders from this instance (a free port, its interfaces and
    most used target)."""
    assert snap_compare(app, terminal_size=SMALL, run_before=with_screen(
        lambda a: ListenerForm(lambda _v: None, hints=a.hints)))


def test_timeout_form(snap_compare, app: ConsoleApp) -> None:
    assert snap_compare(app, terminal_size=SIZE, run_before=with_screen(
        lambda a: TimeoutForm(300, lambda _v: None)))


def test_confirm_dialog(snap_compare, app: ConsoleApp) -> None:
    assert snap_compare(app, terminal_size=SIZE, run_before=with_screen(
        lambda a: ConfirmScreen("Delete the SNI route [b]api.example.test[/b]?")))


def test_quit_dialog(snap_compare, app: ConsoleApp) -> None:
    assert snap_compare(app, terminal_size=SIZE, run_before=with_screen(
        lambda a: QuitScreen("demo")))


def test_help(snap_compare, app: ConsoleApp) -> None:
    assert snap_compare(app, press=["question_mark"], terminal_size=(150, 60),
                        run_before=loaded)


def test_palette_live_commands(snap_compare, app: ConsoleApp) -> None:
    assert snap_compare(app, terminal_size=SIZE,
                        run_before=keys_then_steady("ctrl+p", typed="drain 102"))
