"""The console app: header, five views, modal editors, and the collection loop.

Collection never runs on the UI thread: a thread worker takes one snapshot (and sorts and
filters the connections for the table), posts it, and only when the UI has shown it is
the next one-shot timer armed, so refreshes never overlap and a slow read stretches the
period instead of queueing. Ring-buffer events come from a second thread worker that
polls with a finite timeout and checks for cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any, ClassVar

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import ContentSwitcher, Footer
from textual.worker import get_current_worker

from lbtui.console import conns as C
from lbtui.console.collector import Collector
from lbtui.console.commands import LiveCommand, LiveCommands
from lbtui.console.eventfeed import EventFeed
from lbtui.console.forms.base import FormScreen
from lbtui.console.forms.dialogs import ConfirmScreen, QuitScreen
from lbtui.console.forms.routes import (
    ListenerForm,
    ListenerSpec,
    NamedGroup,
    SniRouteForm,
    SourceRouteForm,
    TimeoutForm,
    WeightsForm,
)
from lbtui.console.groups import Group, groups_of
from lbtui.console.header import StatusHeader
from lbtui.console.help import HelpScreen
from lbtui.console.snapshot import Snapshot
from lbtui.console.views.connections import ConnectionsView
from lbtui.console.views.events import EventsView
from lbtui.console.views.routes import RoutesView
from lbtui.console.views.settings import SettingsView
from lbtui.console.views.targets import TargetsView
from lbtui.maps import flowrows as R
from lbtui.model import GroupKind, Listener, SniRoute, SourceRoute

VIEWS = ("connections", "routes", "targets", "events", "settings")
_VIEW_GROUP = Binding.Group("views", compact=True)


class Collected(Message):
    def __init__(self, snap: Snapshot, view: C.ConnView | None) -> None:
        self.snap = snap
        self.view = view
        super().__init__()


class CollectFailed(Message):
    def __init__(self, error: BaseException) -> None:
        self.error = error
        super().__init__()


class ViewReady(Message):
    def __init__(self, view: C.ConnView) -> None:
        self.view = view
        super().__init__()


class ConsoleApp(App[str | None], inherit_bindings=False):
    """``collector`` reads the maps; ``controller`` applies edits (None: read-only);
    ``instance`` is stopped (or kept) on quit when ``owned`` (this console loaded it)."""

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

    def __init__(self, collector: Collector, *, controller: Any = None,
                 instance: Any = None, feed: EventFeed | None = None,
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
        self.ui_ms: list[float] = []        # UI-thread time per refresh (the benchmark)
        self.refreshes = 0
        self.stopped: str | None = None     # "keep" | "stop" once the instance was released
        self._dump: R.ConnDump | None = None
        # Row lists the UI has let go of. Freeing 100k rows costs tens of milliseconds,
        # so the collection worker drops them, not the UI thread.
        self._graveyard: list[object] = []
        self._collecting = False
        self._again = False

    # --- layout --------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield StatusHeader(id="header")
        with ContentSwitcher(initial=self.start_view):
            yield ConnectionsView(id="connections")
            yield RoutesView(id="routes")
            yield TargetsView(id="targets")
            yield EventsView(id="events")
            yield SettingsView(id="settings")
        yield Footer()

    def on_mount(self) -> None:
        self.action_view(self.start_view)
        if self.feed is not None and self.poll_ringbuf:
            self._poll_events()
        self.collect_now()

    @property
    def conns_view(self) -> ConnectionsView:
        return self.query_one(ConnectionsView)

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
            view = None if self.frozen else C.apply_view(snap.conns, self.spec)
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

    def on_collected(self, msg: Collected) -> None:
        t0 = time.perf_counter()
        self._graveyard.append(self.snapshot)
        s = self.snapshot = msg.snap
        self.groups = groups_of(s)
        self.query_one(StatusHeader).show(s)
        if msg.view is not None and not self.frozen:
            self._graveyard.append(self._dump)
            self._dump = s.conns
            self._graveyard.append(self.conns_view.view)
            self.conns_view.show(msg.view, s.now_ns)
        self.query_one(RoutesView).show(self.groups)
        self.query_one(TargetsView).show(s, self.groups)
        lost = s.counters.get("events_lost", 0) + (self.feed.dropped if self.feed else 0)
        self.query_one(EventsView).add(s.events, s.now_ns, s.wall, lost)
        self.query_one(SettingsView).show(s)
        self.ui_ms.append((time.perf_counter() - t0) * 1000)
        self.refreshes += 1
        self._rearm()

    def on_collect_failed(self, msg: CollectFailed) -> None:
        self.notify(f"reading the maps failed: {msg.error}", severity="error", timeout=5)
        self._rearm()

    # --- connections ---------------------------------------------------------------------

    @on(ConnectionsView.SpecChanged)
    def _spec_changed(self, msg: ConnectionsView.SpecChanged) -> None:
        self.spec = msg.spec
        if self._dump is not None:
            self._reapply(self._dump, msg.spec)

    @work(thread=True, group="view", exclusive=True, exit_on_error=False)
    def _reapply(self, dump: R.ConnDump, spec: C.ViewSpec) -> None:
        view = C.apply_view(dump, spec)
        if not get_current_worker().is_cancelled:
            self.post_message(ViewReady(view))

    def on_view_ready(self, msg: ViewReady) -> None:
        if self.snapshot is not None:
            self._graveyard.append(self.conns_view.view)
            self.conns_view.show(msg.view, self.snapshot.now_ns)

    @on(ConnectionsView.FreezeToggled)
    def _freeze(self, msg: ConnectionsView.FreezeToggled) -> None:
        self.frozen = msg.frozen
        if not msg.frozen:
            self.collect_now()

    @on(ConnectionsView.DeleteRequested)
    def _delete_conn(self, msg: ConnectionsView.DeleteRequested) -> None:
        t = R.five_tuple(msg.row)
        target = R.target_of(msg.row)

        def done(yes: bool | None) -> None:
            if yes:
                self._edit(lambda: self.controller.delete_connection(t), f"deleted {t}")

        self.push_screen(ConfirmScreen(
            f"Delete connection [b]{t}[/b] (target {target})?\n\nThe flow's next packet "
            "is balanced as a new connection."), done)

    # --- edits ---------------------------------------------------------------------------

    def _require_controller(self) -> bool:
        if self.controller is None:
            self.notify("read-only: no config file is known for this instance, so edits "
                        "cannot be persisted (start it with --config)", severity="warning")
            return False
        return True

    def _edit(self, change: Callable[[], object], done: str) -> None:
        """Run an edit (outside a form) on a worker thread; the outcome is notified."""
        if self._require_controller():
            self._run_edit(change, done)

    @work(thread=True, group="edit", exit_on_error=False)
    def _run_edit(self, change: Callable[[], object], done: str) -> None:
        try:
            result = change()
        except (ValueError, RuntimeError, OSError) as e:
            self.call_from_thread(self.notify, str(e), title="not changed",
                                  severity="error", timeout=8)
        else:
            if result is False:
                self.call_from_thread(self.notify, f"{done}: nothing to do (already gone)",
                                      severity="warning")
            else:
                self.call_from_thread(self.notify, done)
        self.call_from_thread(self.collect_now)

    def _form(self, form: FormScreen) -> None:
        if not self._require_controller():
            return

        def done(saved: bool | None) -> None:
            if saved:
                self.notify(f"{form.form_title}: saved")
                self.collect_now()

        self.push_screen(form, done)

    def edit_weights(self, g: Group) -> None:
        self._form(WeightsForm(g.label, g.group,
                               lambda grp: self.controller.set_weights(g.key, grp)))

    def edit_route(self, kind: str, g: Group | None) -> None:
        if kind == "sni":
            self._form(SniRouteForm(self._apply_sni, str(g.key.key) if g else None,
                                    g.group if g else None))
        elif kind == "source":
            self._form(SourceRouteForm(self._apply_source, str(g.key.key) if g else None,
                                       g.group if g else None))
        else:
            self._form(self._listener_form(g))

    def _listener_form(self, g: Group | None) -> ListenerForm:
        defaults = self.snapshot.info.interfaces if self.snapshot else ()
        cfg = self.controller.config.listener(int(g.key.key)) if (
            g and self.controller) else None
        if g is None:
            return ListenerForm(self._apply_listener, default_interfaces=defaults)
        if cfg is not None:
            return ListenerForm(self._apply_listener, port=cfg.port, protocol=cfg.protocol,
                                interfaces=cfg.interfaces, stats=cfg.stats, sni=cfg.sni,
                                group=g.group, default_interfaces=defaults)
        return ListenerForm(self._apply_listener, port=int(g.key.key), group=g.group,
                            default_interfaces=defaults)

    def _apply_sni(self, v: NamedGroup) -> None:
        """Add, or update (a rename included) in one transaction."""
        route = SniRoute(v.name, v.group)
        if v.old_name is None:
            self.controller.add_sni_route(route)
        else:
            self.controller.update_sni_route(v.old_name, route)

    def _apply_source(self, v: NamedGroup) -> None:
        if v.old_name is None:
            self.controller.add_source_route(SourceRoute(v.name, v.group))
        else:
            old = self.controller.config.source_route(v.old_name)
            stats = old.stats if old is not None else True
            self.controller.update_source_route(v.old_name, SourceRoute(v.name, v.group,
                                                                        stats))

    def _apply_listener(self, v: ListenerSpec) -> None:
        """Add, or update in one transaction (the port is never unbalanced in between);
        what the form does not show (the listener's address) is kept."""
        c = self.controller
        old = c.config.listener(v.old_port) if v.old_port is not None else None
        new = Listener(v.port, v.group, v.protocol, v.interfaces, v.stats, v.sni,
                       old.address if old is not None else None)
        if v.old_port is None:
            c.add_listener(new)
        else:
            c.update_listener(v.old_port, new)

    def delete_route(self, g: Group) -> None:
        what = {GroupKind.LISTENER: f"the listener on port {g.key.key}",
                GroupKind.SOURCE: f"the source route {g.key.key}",
                GroupKind.SNI: f"the SNI route {g.key.key}"}[g.kind]

        def done(yes: bool | None) -> None:
            if not yes:
                return
            c = self.controller
            remove = {GroupKind.LISTENER: c.remove_listener,
                      GroupKind.SOURCE: c.remove_source_route,
                      GroupKind.SNI: c.remove_sni_route}[g.kind]
            self._edit(lambda: remove(g.key.key), f"deleted {what}")

        if self._require_controller():
            self.push_screen(ConfirmScreen(
                f"Delete {what}?\n\nTargets: {g.group}\nEstablished connections keep their "
                "backend until they close."), done)

    def drain(self, g: Group, target: str) -> None:
        self._edit(lambda: self.controller.drain(g.key, target),
                   f"drained {target} in {g.label}: it gets no new connections")

    @on(RoutesView.Requested)
    def _route_requested(self, msg: RoutesView.Requested) -> None:
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

    @on(TargetsView.Requested)
    def _target_requested(self, msg: TargetsView.Requested) -> None:
        if msg.action == "drain" and msg.target:
            self.drain(msg.group, msg.target)
        else:
            self.edit_weights(msg.group)

    @on(SettingsView.Requested)
    def _settings_requested(self, msg: SettingsView.Requested) -> None:
        if msg.action == "toggle_stats":
            self.toggle_stats()
        else:
            self.edit_timeout()

    def toggle_stats(self) -> None:
        on_now = self.snapshot.stats_enabled if self.snapshot else True
        self._edit(lambda: self.controller.set_stats(not on_now),
                   f"stats events {'off' if on_now else 'on'}")

    def edit_timeout(self) -> None:
        seconds = self.snapshot.conn_timeout if self.snapshot else 300
        self._form(TimeoutForm(seconds, lambda s: self.controller.set_connection_timeout(s)))

    # --- navigation, help, palette -------------------------------------------------------

    def action_view(self, name: str) -> None:
        self.query_one(ContentSwitcher).current = name
        target = {"connections": "#conns-table", "routes": "#routes-table",
                  "targets": "#targets-table", "events": "#events-table",
                  "settings": "#settings"}[name]
        self.query_one(target).focus()

    def action_help(self) -> None:
        from lbtui.console.forms.dialogs import ConfirmScreen as _Confirm
        from lbtui.console.forms.dialogs import QuitScreen as _Quit

        self.push_screen(HelpScreen([
            ("everywhere", self.BINDINGS), ("connections", ConnectionsView.BINDINGS),
            ("routes", RoutesView.BINDINGS), ("targets", TargetsView.BINDINGS),
            ("events", EventsView.BINDINGS), ("settings", SettingsView.BINDINGS),
            ("forms", FormScreen.BINDINGS), ("confirm", _Confirm.BINDINGS),
            ("quit", _Quit.BINDINGS)]))

    def live_commands(self) -> list[LiveCommand]:
        out = [LiveCommand(f"Show {v}", f"switch to the {v} view (key {i})",
                           lambda v=v: self.action_view(v)) for i, v in enumerate(VIEWS, 1)]
        for g in self.groups:
            out.append(LiveCommand(f"Edit weights of {g.label}", str(g.group),
                                   lambda g=g: self.edit_weights(g)))
            for t in g.route.targets:
                if t.weight > 0 and len(g.route.targets) > 1:
                    out.append(LiveCommand(
                        f"Drain {t} ({g.label})", "weight 0: no new connections; the "
                        "others take its share", lambda g=g, t=t: self.drain(g, str(t))))
            kind = {GroupKind.LISTENER: "listener", GroupKind.SOURCE: "source route",
                    GroupKind.SNI: "SNI route"}
            name = f":{g.key.key}" if g.kind is GroupKind.LISTENER else str(g.key.key)
            out.append(LiveCommand(f"Edit {kind[g.kind]} {name}", str(g.group),
                                   lambda g=g: self.edit_route(g.kind, g)))
            out.append(LiveCommand(f"Delete {kind[g.kind]} {name}", "asks first",
                                   lambda g=g: self.delete_route(g)))
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
        return out

    # --- quitting ------------------------------------------------------------------------

    async def action_quit(self) -> None:
        owned = self.instance is not None and getattr(self.instance, "managed", False)
        if not owned:
            await self._shutdown_workers()
            self.exit(None)
            return

        async def answered(answer: str | None) -> None:
            if answer in ("keep", "stop"):
                await self.release(answer == "keep")
                self.exit(answer)

        self.push_screen(QuitScreen(self.instance.name), answered)

    async def _shutdown_workers(self) -> None:
        self.refresh_interval = None
        ours = [w for w in self.workers if w.group in ("collect", "events", "view", "edit")]
        for w in ours:
            w.cancel()
        for w in ours:
            with contextlib.suppress(Exception):   # a cancelled worker may raise here
                await w.wait()

    async def release(self, keep: bool) -> None:
        """Stop the workers, then stop (or keep) the instance this console loaded."""
        await self._shutdown_workers()
        if self.instance is not None and self.stopped is None:
            # pyroute2 (detaching XDP) cannot run inside this event loop: use a thread.
            await asyncio.to_thread(self.instance.stop, keep)
            self.stopped = "keep" if keep else "stop"
