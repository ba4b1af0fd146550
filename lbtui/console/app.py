"""The console app: header, six views, modal editors, and the collection loop.

Collection never runs on the UI thread: a thread worker takes one snapshot (and sorts and
filters the connections for the table), posts it, and only when the UI has shown it is
the next one-shot timer armed, so refreshes never overlap and a slow read stretches the
period instead of queueing. Events come from a second thread worker that follows the
instance's event hub with a finite timeout and checks for cancellation; each snapshot
carries what the hub said since the last one (health, checks, edits, changes of state).

Edits, exports and stopping the instance leave the event loop one way,
``lbtui.console.blocking.run_blocking``: forms await it, the app awaits it in async
workers (``_blocking``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

from rich.markup import escape
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import ActiveBinding, Binding, BindingType
from textual.screen import Screen
from textual.widgets import ContentSwitcher, Footer
from textual.worker import get_current_worker

from lbtui.console.blocking import Outcome, run_blocking
from lbtui.console.commands import LiveCommand, LiveCommands
from lbtui.console.data import conns as C
from lbtui.console.data.eventfeed import EventFeed
from lbtui.console.data.export import default_path, write_export
from lbtui.console.data.groups import Group, groups_of
from lbtui.console.data.hints import FormHints, form_hints
from lbtui.console.data.hub import OpenedTracker
from lbtui.console.data.snapshot import Snapshot, SnapshotSource
from lbtui.console.forms.base import FormScreen
from lbtui.console.forms.dialogs import ConfirmScreen, QuitScreen
from lbtui.console.forms.export import ExportForm
from lbtui.console.forms.routes import (
    ListenerForm,
    ListenerSpec,
    NamedGroup,
    SniRouteForm,
    SourceRouteForm,
    TimeoutForm,
    WeightsForm,
)
from lbtui.console.help import HelpScreen
from lbtui.console.messages import (
    Collected,
    CollectFailed,
    DeleteConnRequested,
    ExportRequested,
    FreezeToggled,
    RouteRequested,
    SettingsRequested,
    SpecChanged,
    TargetRequested,
    ViewReady,
)
from lbtui.console.views.base import LIST_BINDINGS
from lbtui.console.views.connections import ClusterConnectionsView, ConnectionsView
from lbtui.console.views.events import EventsView
from lbtui.console.views.reasons import ReasonsView
from lbtui.console.views.routes import HASH_MEANING, RoutesView, match_of
from lbtui.console.views.settings import SettingsView
from lbtui.console.views.targets import ClusterTargetsView, TargetsView
from lbtui.console.widgets.header import StatusHeader
from lbtui.maps import flowrows as R
from lbtui.model import GroupKey, GroupKind, Listener, SniRoute, SourceRoute

if TYPE_CHECKING:
    from lbtui.control.controller import Control
    from lbtui.control.instance import Instance

VIEWS = ("connections", "routes", "targets", "events", "settings", "reasons")
_VIEW_GROUP = Binding.Group("views", compact=True)
KIND_NAME = {GroupKind.LISTENER: "listener", GroupKind.SOURCE: "source route",
             GroupKind.SNI: "SNI route"}


class ConsoleScreen(Screen[None]):
    """The main screen. Its footer lists the keys that work everywhere (views, undo,
    help, quit) before the current view's, so a narrow terminal cuts a view's last keys,
    not the way around."""

    @property
    def active_bindings(self) -> dict[str, ActiveBinding]:
        found = super().active_bindings
        first = {k: v for k, v in found.items() if v.node is self.app}
        return first | {k: v for k, v in found.items() if k not in first}


class ConsoleApp(App[str | None], inherit_bindings=False):
    """``collector`` gives snapshots; ``controller`` applies edits (None: read-only);
    ``instance`` is stopped (or kept) on quit when this console loaded it."""

    TITLE = "lbtui"
    COMMANDS = App.COMMANDS | {LiveCommands}
    CSS = """
    Screen { layout: vertical; }
    ContentSwitcher { height: 1fr; }
    ContentSwitcher > * { height: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("1", "view('connections')", "Conns", id="view.connections",
                group=_VIEW_GROUP),
        Binding("2", "view('routes')", "Routes", id="view.routes", group=_VIEW_GROUP),
        Binding("3", "view('targets')", "Targets", id="view.targets", group=_VIEW_GROUP),
        Binding("4", "view('events')", "Events", id="view.events", group=_VIEW_GROUP),
        Binding("5", "view('settings')", "Settings", id="view.settings", group=_VIEW_GROUP),
        Binding("6", "view('reasons')", "Reasons", id="view.reasons", group=_VIEW_GROUP),
        Binding("u", "undo", "Undo drain", id="app.undo"),
        Binding("question_mark", "help", "Help", key_display="?", id="app.help"),
        Binding("q", "quit", "Quit", id="app.quit"),
        # Textual's own app bindings, re-declared with ids (the footer shows the palette
        # key on its right).
        Binding("ctrl+p", "command_palette", "Palette", show=False, priority=True,
                id="app.palette"),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True, id="app.quit_ctrl_q"),
        Binding("ctrl+c", "help_quit", "How to quit", show=False, system=True,
                id="app.help_quit"),
    ]

    def __init__(self, collector: SnapshotSource, *, controller: Control | None = None,
                 instance: Instance | None = None, feed: EventFeed | None = None,
                 refresh_interval: float | None = 1.0, start_view: str = "connections",
                 poll_ringbuf: bool = True) -> None:
        super().__init__()
        self.collector = collector
        self.controller = controller
        self.instance = instance
        self.feed = feed
        self.refresh_interval = refresh_interval
        self.start_view = start_view
        self.poll_ringbuf = poll_ringbuf
        self.snapshot: Snapshot | None = None
        self.groups: list[Group] = []
        self.frozen = False
        self.spec = C.ViewSpec()
        self.undo: list[tuple[GroupKey, str, int]] = []   # drains: (group, target, weight)
        self.opened = OpenedTracker()       # per-(group, target) rates from the hub
        self.ui_ms: list[float] = []        # UI-thread time per refresh (the benchmark)
        self.refreshes = 0
        self.stopped: str | None = None     # "keep" | "stop" once the instance was released
        self._dump: R.ConnDump | None = None
        # Row lists the UI has let go of. Freeing 100k rows costs tens of milliseconds,
        # so the collection worker drops them, not the UI thread.
        self._graveyard: list[object] = []
        self._collecting = False
        self._again = False
        nodes = collector.info.nodes
        self.conn_table = C.cluster_table(nodes) if nodes else C.SINGLE

    # --- layout --------------------------------------------------------------------------

    def get_default_screen(self) -> Screen[None]:
        return ConsoleScreen(id="_default")

    def compose(self) -> ComposeResult:
        yield StatusHeader(id="header")
        nodes = self.collector.info.nodes
        with ContentSwitcher(initial=self.start_view):
            if nodes:      # a cluster: node columns, per-node rows
                yield ClusterConnectionsView(self.conn_table, id="connections")
            else:
                yield ConnectionsView(id="connections")
            yield RoutesView(id="routes")
            yield ClusterTargetsView(id="targets") if nodes else TargetsView(id="targets")
            yield EventsView(id="events")
            yield SettingsView(id="settings")
            yield ReasonsView(id="reasons")
        yield Footer()

    def on_mount(self) -> None:
        self.action_view(self.start_view)
        if self.feed is not None and self.poll_ringbuf:
            self._poll_events()
        self.collect_now()

    @property
    def conns_view(self) -> ConnectionsView:
        return self.query_one(ConnectionsView)

    @property
    def hints(self) -> FormHints:
        return form_hints(self.snapshot, self.groups)

    # --- collection ----------------------------------------------------------------------

    def collect_now(self) -> None:
        """Take a snapshot now (or right after the one in progress)."""
        if self._collecting:
            self._again = True
            return
        self._collecting = True
        self._collect()

    @work(thread=True, group="collect", exit_on_error=False)
    def _collect(self) -> None:
        worker = get_current_worker()
        while self._graveyard:
            self._graveyard.pop()
        try:
            events = self.feed.take() if self.feed else []
            snap = self.collector.collect(events)
            if self.feed is not None:
                snap.hub = self.feed.take_hub().rename(snap.sni_names)
                snap.group_new = self.opened.update(snap.hub.health, snap.now_ns)
            view = None if self.frozen else C.apply_view(snap.conns, self.spec,
                                                         self.conn_table)
        except Exception as e:  # shown, and collection goes on
            if not worker.is_cancelled:
                self.post_message(CollectFailed(e))
            return
        if not worker.is_cancelled:
            self.post_message(Collected(snap, view))

    @work(thread=True, group="events", exit_on_error=False)
    def _poll_events(self) -> None:
        worker = get_current_worker()
        assert self.feed is not None
        self.feed.run(self.collector.info.name, lambda: worker.is_cancelled)

    def _rearm(self) -> None:
        self._collecting = False
        if self._again:
            self._again = False
            self.collect_now()
        elif self.refresh_interval:
            self.set_timer(self.refresh_interval, self.collect_now)

    @on(Collected)
    def _collected(self, msg: Collected) -> None:
        headers = self.default_screen.query(StatusHeader)
        if not headers:
            return          # a refresh that lands while quitting: the views are gone
        t0 = time.perf_counter()
        self._graveyard.append(self.snapshot)
        s = self.snapshot = msg.snap
        self.groups = groups_of(s)
        headers.first().show(s)
        if msg.view is not None and not self.frozen:
            self._graveyard.append(self._dump)
            self._dump = s.conns
            self._graveyard.append(self.conns_view.view)
            self.conns_view.show(msg.view, s.now_ns)
        self.query_one(RoutesView).show(self.groups)
        self.query_one(TargetsView).show(s, self.groups)
        lost = s.counters.get("events_lost", 0) + (self.feed.dropped if self.feed else 0)
        self.query_one(EventsView).add(s.events, s.now_ns, s.wall, lost, s.hub.notices)
        self.query_one(SettingsView).show(s)
        self.query_one(ReasonsView).show(s)
        self.ui_ms.append((time.perf_counter() - t0) * 1000)
        self.refreshes += 1
        self._rearm()

    @on(CollectFailed)
    def _collect_failed(self, msg: CollectFailed) -> None:
        self.notify(f"reading the maps failed: {msg.error}", severity="error", timeout=5)
        self._rearm()

    # --- connections ---------------------------------------------------------------------

    @on(SpecChanged)
    def _spec_changed(self, msg: SpecChanged) -> None:
        self.spec = msg.spec
        if self._dump is not None:
            self._reapply(self._dump, msg.spec)

    @work(thread=True, group="view", exclusive=True, exit_on_error=False)
    def _reapply(self, dump: R.ConnDump, spec: C.ViewSpec) -> None:
        view = C.apply_view(dump, spec, self.conn_table)
        if not get_current_worker().is_cancelled:
            self.post_message(ViewReady(view))

    @on(ViewReady)
    def _view_ready(self, msg: ViewReady) -> None:
        if self.snapshot is not None:
            self._graveyard.append(self.conns_view.view)
            self.conns_view.show(msg.view, self.snapshot.now_ns)

    @on(FreezeToggled)
    def _freeze(self, msg: FreezeToggled) -> None:
        self.frozen = msg.frozen
        if not msg.frozen:
            self.collect_now()

    @on(DeleteConnRequested)
    def _delete_conn(self, msg: DeleteConnRequested) -> None:
        t = R.five_tuple(msg.row)
        target = R.target_of(msg.row)
        control = self._control()
        if control is None:
            return

        def done(yes: bool | None) -> None:
            if yes:
                self._edit(lambda: control.delete_connection(t), f"deleted {t}")

        self.push_screen(ConfirmScreen(
            f"Delete connection [b]{t}[/b] (target {target})?\n\nThe flow's next packet "
            "is balanced as a new connection."), done)

    def show_connections_of(self, target: str) -> None:
        """Drill down: the Connections view filtered to ``target``."""
        self.action_view("connections")
        self.conns_view.set_filter(f"target:{target}")
        self.notify(f"connections to {target} (filter target:{target}; Esc clears it)",
                    timeout=4)

    # --- running blocking work -----------------------------------------------------------

    def _control(self) -> Control | None:
        """The controller, or None after saying why there is none."""
        if self.controller is None:
            self.notify("read-only: no config file is known for this instance, so edits "
                        "cannot be persisted (start it with --config)", severity="warning")
        return self.controller

    def _blocking(self, call: Callable[[], Any], then: Callable[[Outcome[Any]], None]
                  ) -> None:
        """Run ``call`` off the event loop, then ``then(outcome)`` on it."""
        async def run() -> None:
            then(await run_blocking(call))
        self.run_worker(run(), group="edit", exit_on_error=False)

    def _edit(self, change: Callable[[], object], done: str | Callable[[Any], str]) -> None:
        """Run an edit outside a form; the outcome is notified and the view refreshed.
        ``done`` says what happened (or makes it from the call's result)."""
        def then(o: Outcome[Any]) -> None:
            if not o.ok:
                self.notify(escape(o.problem), title="not changed", severity="error",
                            timeout=8)
            elif o.value is False:
                self.notify(f"{done}: nothing to do (already gone)", severity="warning")
            else:
                said = done(o.value) if callable(done) else done
                self.notify(said + self._where(), timeout=6)
            self.collect_now()
        self._blocking(change, then)

    def _where(self) -> str:
        """Where an edit went, for a cluster: every node, and how long it took."""
        nodes = getattr(self.controller, "nodes", None)
        if not nodes:
            return ""
        ms = getattr(self.controller, "last_edit_ms", 0.0)
        return f" (on all {len(nodes)} nodes, {ms:.0f} ms)"

    def _form(self, make: Callable[[Control], FormScreen]) -> None:
        control = self._control()
        if control is None:
            return
        form = make(control)

        def done(saved: bool | None) -> None:
            if saved:
                self.notify(f"{form.form_title}: saved{self._where()}")
                self.collect_now()

        self.push_screen(form, done)

    # --- routes and weights ----------------------------------------------------------------

    def edit_weights(self, g: Group) -> None:
        self._form(lambda c: WeightsForm(g.label, g.group,
                                         lambda grp: c.set_weights(g.key, grp), self.hints))

    def edit_route(self, kind: str, g: Group | None) -> None:
        hints = self.hints
        name = str(g.key.key) if g else None
        group = g.group if g else None
        if kind == "sni":
            self._form(lambda c: SniRouteForm(lambda v: _apply_sni(c, v), name, group, hints))
        elif kind == "source":
            self._form(lambda c: SourceRouteForm(lambda v: _apply_source(c, v), name, group,
                                                 hints))
        else:
            self._form(lambda c: _listener_form(c, g, hints))

    def delete_route(self, g: Group) -> None:
        what = f"the {KIND_NAME[g.kind]} {match_of(g)}"
        control = self._control()
        if control is None:
            return

        def remove() -> None:
            if g.kind is GroupKind.LISTENER:
                control.remove_listener(int(g.key.key))
            elif g.kind is GroupKind.SOURCE:
                control.remove_source_route(str(g.key.key))
            else:
                control.remove_sni_route(str(g.key.key))

        def done(yes: bool | None) -> None:
            if yes:
                self._edit(remove, f"deleted {what}")

        self.push_screen(ConfirmScreen(
            f"Delete {what}?\n\nTargets: {g.group}\nEstablished connections keep their "
            "backend until they close."), done)

    def drain(self, g: Group, target: str) -> None:
        """Ask, then drain; the weight it had is kept for ``u``."""
        control = self._control()
        if control is None:
            return
        weight = next((t.weight for t in g.route.targets if str(t) == target), None)

        def drained(old: int) -> str:
            self.undo.append((g.key, target, old))
            self.refresh_bindings()
            return (f"drained {target} in {g.label} (weight {old} was spread over the "
                    "others); u undoes")

        def done(yes: bool | None) -> None:
            if yes:
                self._edit(lambda: control.drain(g.key, target), drained)

        self.push_screen(ConfirmScreen(
            f"Drain [b]{target}[/b] in {g.label}?\n\nIt gets no new connections; its "
            f"weight {weight if weight is not None else '?'} goes to the others in "
            "proportion. Established connections stay until they end. u undoes it.",
            yes="Drain"), done)

    def switch_hash(self, g: Group) -> None:
        """Ask, then switch the group between the weighted pick and a Maglev table."""
        control = self._control()
        if control is None:
            return
        old = g.route.hash
        new = "weighted" if old == "maglev" else "maglev"

        def done(yes: bool | None) -> None:
            if yes:
                self._edit(lambda: control.set_hash(g.key, new),
                           f"{g.label}: new connections now picked by {new}")

        self.push_screen(ConfirmScreen(
            f"Switch {escape(g.label)} from {old} to [b]{new}[/b]?\n\n{HASH_MEANING[new]} "
            "New connections may go to other targets than before; established connections "
            "keep theirs.", yes="Switch"), done)

    def action_undo(self) -> None:
        if not self.undo:
            self.notify("nothing to undo", severity="warning")
            return
        control = self._control()
        if control is None:
            return
        key, target, weight = self.undo.pop()
        self.refresh_bindings()
        self._edit(lambda: control.undrain(key, target, weight),
                   f"undone: {target} in {key.label} is back to weight {weight}")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "undo":     # in the footer only when there is a drain to undo
            return bool(self.undo)
        return True

    @on(RouteRequested)
    def _route_requested(self, msg: RouteRequested) -> None:
        if msg.action == "add":
            self.edit_route(msg.kind, None)
        elif msg.group is None:
            return
        elif msg.action == "weights":
            self.edit_weights(msg.group)
        elif msg.action == "edit":
            self.edit_route(msg.kind, msg.group)
        elif msg.action == "delete":
            self.delete_route(msg.group)
        elif msg.action == "hash":
            self.switch_hash(msg.group)

    @on(TargetRequested)
    def _target_requested(self, msg: TargetRequested) -> None:
        if msg.action == "connections":
            self.show_connections_of(msg.target)
        elif msg.group is None:
            return
        elif msg.action == "drain":
            self.drain(msg.group, msg.target)
        else:
            self.edit_weights(msg.group)

    # --- settings --------------------------------------------------------------------------

    @on(SettingsRequested)
    def _settings_requested(self, msg: SettingsRequested) -> None:
        if msg.action == "toggle_stats":
            self.toggle_stats()
        else:
            self.edit_timeout()

    def toggle_stats(self) -> None:
        control = self._control()
        if control is None:
            return
        on_now = self.snapshot.stats_enabled if self.snapshot else True
        self._edit(lambda: control.set_stats(not on_now),
                   f"stats events {'off' if on_now else 'on'}")

    def edit_timeout(self) -> None:
        seconds = self.snapshot.conn_timeout if self.snapshot else 300
        self._form(lambda c: TimeoutForm(seconds, c.set_connection_timeout))

    # --- export ----------------------------------------------------------------------------

    @on(ExportRequested)
    def _export_requested(self, msg: ExportRequested) -> None:
        view = self.query_one(f"#{msg.view}")
        meta = {"instance": self.collector.info.name, "view": msg.view,
                "filter": getattr(view, "filter_text", ""),
                "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        rows = list(msg.rows)
        # Named after the time of the data shown.
        when = self.snapshot.wall if self.snapshot else None
        form = ExportForm(msg.view, len(rows), default_path(msg.view, when),
                          lambda p: write_export(p, msg.columns, rows, msg.context, meta))

        def done(saved: bool | None) -> None:
            if saved:
                self.notify(f"exported {form.result:,} rows to {escape(str(form.applied))}",
                            title="exported", timeout=10)

        self.push_screen(form, done)

    # --- navigation, help, palette -------------------------------------------------------

    def action_view(self, name: str) -> None:
        self.query_one(ContentSwitcher).current = name
        target = {"connections": "#conns-table", "routes": "#routes-table",
                  "targets": "#targets-table", "events": "#events-table",
                  "settings": "#settings", "reasons": "#reasons-table"}[name]
        self.query_one(target).focus()

    def action_help(self) -> None:
        def own(bindings: list[BindingType]) -> list[BindingType]:
            return [b for b in bindings if b not in LIST_BINDINGS]

        self.push_screen(HelpScreen([
            ("everywhere", self.BINDINGS), ("every list", LIST_BINDINGS),
            ("connections", own(ConnectionsView.BINDINGS)),
            ("routes", own(RoutesView.BINDINGS)), ("targets", own(TargetsView.BINDINGS)),
            ("events", own(EventsView.BINDINGS)), ("settings", SettingsView.BINDINGS),
            ("reasons", own(ReasonsView.BINDINGS)),
            ("forms", FormScreen.BINDINGS), ("confirm", ConfirmScreen.BINDINGS),
            ("quit", QuitScreen.BINDINGS)], cluster=bool(self.collector.info.nodes)))

    def live_commands(self) -> list[LiveCommand]:
        out = [LiveCommand(f"Show {v}", f"switch to the {v} view (key {i})",
                           partial(self.action_view, v)) for i, v in enumerate(VIEWS, 1)]
        for g in self.groups:
            out.append(LiveCommand(f"Edit weights of {g.label}", str(g.group),
                                   partial(self.edit_weights, g)))
            for t in g.route.targets:
                if t.weight > 0 and len(g.route.targets) > 1:
                    out.append(LiveCommand(
                        f"Drain {t} ({g.label})", "weight 0: no new connections; the "
                        "others take its share (asks first)", partial(self.drain, g, str(t))))
            name = f"{KIND_NAME[g.kind]} {match_of(g)}"
            out.append(LiveCommand(f"Edit {name}", str(g.group),
                                   partial(self.edit_route, g.kind, g)))
            out.append(LiveCommand(f"Delete {name}", "asks first",
                                   partial(self.delete_route, g)))
            other = "weighted" if g.route.hash == "maglev" else "maglev"
            out.append(LiveCommand(f"Switch hash of {name} to {other}",
                                   f"now {g.route.hash} (asks first)",
                                   partial(self.switch_hash, g)))
        for target in sorted({str(t) for g in self.groups for t in g.route.targets}):
            out.append(LiveCommand(f"Connections of {target}", f"filter target:{target}",
                                   partial(self.show_connections_of, target)))
        out += [
            LiveCommand("Add SNI route", "route TLS by hostname",
                        lambda: self.edit_route("sni", None)),
            LiveCommand("Add source route", "route clients of a CIDR",
                        lambda: self.edit_route("source", None)),
            LiveCommand("Add listener", "balance a new port",
                        lambda: self.edit_route("listener", None)),
            LiveCommand("Toggle stats events", "settings[0]", self.toggle_stats),
            LiveCommand("Set connection timeout", "settings[1]", self.edit_timeout),
        ]
        if self.undo:
            key, target, weight = self.undo[-1]
            out.append(LiveCommand(f"Undo drain of {target} ({key.label})",
                                   f"back to weight {weight}", self.action_undo))
        return out

    # --- quitting ------------------------------------------------------------------------

    async def action_quit(self) -> None:
        inst = self.instance
        if inst is None or not inst.managed:
            await self._shutdown_workers()
            self.exit(None)
            return

        async def answered(answer: str | None) -> None:
            if answer in ("keep", "stop") and await self.release(answer == "keep"):
                self.exit(answer)

        self.push_screen(QuitScreen(inst.name), answered)

    async def _shutdown_workers(self) -> None:
        self.refresh_interval = None
        ours = [w for w in self.workers if w.group in ("collect", "events", "view", "edit")]
        for w in ours:
            w.cancel()
        for w in ours:
            with contextlib.suppress(Exception):   # a cancelled worker may raise here
                await w.wait()

    async def release(self, keep: bool) -> bool:
        """Stop the workers, then stop (or keep) the instance this console loaded. False
        (and said why) if that failed: the console stays open to try again."""
        await self._shutdown_workers()
        inst = self.instance
        if inst is not None and self.stopped is None:
            # pyroute2 (detaching XDP) cannot run inside this event loop.
            outcome = await run_blocking(lambda: inst.stop(keep))
            if not outcome.ok:
                self.notify(f"{escape(outcome.problem)}; q tries again", severity="error",
                            timeout=15)
                return False
            self.stopped = "keep" if keep else "stop"
        return True


def _apply_sni(c: Control, v: NamedGroup) -> None:
    """Add, or update (a rename included) in one transaction."""
    route = SniRoute(v.name, v.group)
    if v.old_name is None:
        c.add_sni_route(route)
    else:
        c.update_sni_route(v.old_name, route)


def _apply_source(c: Control, v: NamedGroup) -> None:
    if v.old_name is None:
        c.add_source_route(SourceRoute(v.name, v.group))
    else:
        old = c.config.source_route(v.old_name)
        stats = old.stats if old is not None else True
        c.update_source_route(v.old_name, SourceRoute(v.name, v.group, stats))


def _apply_listener(c: Control, v: ListenerSpec) -> None:
    """Add, or update in one transaction (the port is never unbalanced in between); what
    the form does not show (the listener's address) is kept."""
    old = c.config.listener(v.old_port) if v.old_port is not None else None
    new = Listener(v.port, v.group, v.protocol, v.interfaces, v.stats, v.sni,
                   old.address if old is not None else None)
    if v.old_port is None:
        c.add_listener(new)
    else:
        c.update_listener(v.old_port, new)


def _listener_form(c: Control, g: Group | None, hints: FormHints) -> ListenerForm:
    def apply(v: ListenerSpec) -> None:
        _apply_listener(c, v)

    if g is None:
        return ListenerForm(apply, hints=hints)
    cfg = c.config.listener(int(g.key.key))
    if cfg is not None:
        return ListenerForm(apply, port=cfg.port, protocol=cfg.protocol,
                            interfaces=cfg.interfaces, stats=cfg.stats, sni=cfg.sni,
                            group=g.group, hints=hints)
    return ListenerForm(apply, port=int(g.key.key), group=g.group, hints=hints)

