"""Events: the ring-buffer stream (opened / closed), newest first, filterable, pausable."""

from __future__ import annotations

import time
from collections import deque
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Input, Static

from lbtui.console import fmt
from lbtui.console.linetable import LineTable, TableColumn
from lbtui.maps.events import LbEvent

KEEP = 10_000   # events kept for the view


def _clock(e: LbEvent, ctx: tuple[int, float]) -> str:
    now_ns, wall = ctx
    w = wall - (now_ns - e.ts_ns) / 1e9
    return time.strftime("%H:%M:%S", time.localtime(w)) + f".{int(w * 1000) % 1000:03d}"


def _lifetime(e: LbEvent, _ctx: object) -> str:
    if e.kind != "closed":
        return ""
    ns = max(0, e.ts_ns - e.created_ns)
    return f"{ns // 1_000_000}ms" if ns < 1_000_000_000 else fmt.duration(ns / 1e9)


EVENT_COLUMNS = [
    TableColumn("time", 12, _clock),
    TableColumn("event", 6, lambda e, _c: e.kind),
    TableColumn("why", 4, lambda e, _c: e.reason),
    TableColumn("proto", 5, lambda e, _c: e.proto),
    TableColumn("client", 21, lambda e, _c: e.client),
    TableColumn("vip", 21, lambda e, _c: f"{e.vip_ip}:{e.vip_port}"),
    TableColumn("target", 21, lambda e, _c: e.target),
    TableColumn("lived", 7, _lifetime, right=True),
    TableColumn("pkts→", 7, lambda e, _c: fmt.count(e.packets_fwd), right=True),
    TableColumn("pkts←", 7, lambda e, _c: fmt.count(e.packets_rev), right=True),
    TableColumn("bytes→", 10, lambda e, _c: fmt.size(e.bytes_fwd), right=True),
    TableColumn("bytes←", 10, lambda e, _c: fmt.size(e.bytes_rev), right=True),
]


def event_text(e: LbEvent) -> str:
    return (f"{e.kind} {e.reason} {e.proto} {e.client} {e.vip_ip}:{e.vip_port} "
            f"{e.target}").lower()


class EventsView(Vertical):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter", id="events.filter"),
        Binding("p,space", "pause", "Pause", id="events.pause"),
        Binding("c", "clear", "Clear", id="events.clear"),
        Binding("escape", "clear_filter", "Clear filter", id="events.clear_filter"),
    ]
    DEFAULT_CSS = """
    EventsView > #events-title { height: 1; padding: 0 1; background: $boost; }
    EventsView > #events-filter { display: none; height: 3; }
    EventsView.filtering > #events-filter { display: block; }
    """

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.events: deque[LbEvent] = deque(maxlen=KEEP)   # newest first
        self.paused = False
        self.filter = ""
        self.received = 0
        self.lost = 0
        self._ctx: tuple[int, float] = (0, 0.0)

    def compose(self) -> ComposeResult:
        yield Static(id="events-title")
        yield Input(placeholder="filter: text in event, reason, protocol, addresses",
                    id="events-filter")
        yield LineTable(EVENT_COLUMNS, key=lambda e: e, id="events-table")

    @property
    def table(self) -> LineTable:
        return self.query_one("#events-table", LineTable)

    def on_mount(self) -> None:
        self._render_rows()

    def add(self, events: list[LbEvent], now_ns: int, wall: float, lost: int) -> None:
        """New events from one snapshot; kept while paused, shown when resumed."""
        self.received += len(events)
        self.lost = lost
        if not self.paused:
            self._ctx = (now_ns, wall)
        self.events.extendleft(events)
        if not self.paused:
            self._render_rows()
        else:
            self._update_title()

    def _render_rows(self) -> None:
        rows: list[LbEvent] = list(self.events)
        terms = self.filter.lower().split()
        if terms:
            rows = [e for e in rows if all(t in event_text(e) for t in terms)]
        self.table.set_rows(rows, self._ctx)
        self._update_title(len(rows))

    def _update_title(self, shown: int | None = None) -> None:
        shown = len(self.table.rows) if shown is None else shown
        parts = [f"[b]Events[/b]  {shown:,} shown / {len(self.events):,} kept / "
                 f"{self.received:,} received",
                 f"lost [b]{self.lost:,}[/b]" if self.lost else "lost 0"]
        if self.filter:
            parts.append(f"filter [b]{self.filter}[/b]")
        if self.paused:
            parts.append("[reverse b] PAUSED [/]")
        self.query_one("#events-title", Static).update("  ·  ".join(parts))

    def action_filter(self) -> None:
        self.add_class("filtering")
        self.refresh_bindings()
        inp = self.query_one("#events-filter", Input)
        inp.value = self.filter
        inp.focus()

    @on(Input.Changed, "#events-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter = event.value.strip()
        self._render_rows()

    @on(Input.Submitted, "#events-filter")
    def _filter_done(self, _event: Input.Submitted) -> None:
        self.remove_class("filtering")
        self.refresh_bindings()
        self.table.focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "clear_filter":   # in the footer only while there is one
            return bool(self.filter) or self.has_class("filtering")
        return True

    def action_clear_filter(self) -> None:
        self.remove_class("filtering")
        self.refresh_bindings()
        self.filter = ""
        self._render_rows()
        self.table.focus()

    def action_pause(self) -> None:
        self.paused = not self.paused
        self._render_rows()

    def action_clear(self) -> None:
        self.events.clear()
        self._render_rows()
