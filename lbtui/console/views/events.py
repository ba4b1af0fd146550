"""Events: the instance's event stream (opened / closed), newest first, filterable,
pausable."""

from __future__ import annotations

import time
from collections import deque
from typing import Any, ClassVar

from textual.binding import Binding, BindingType

from lbtui.console.data import fmt
from lbtui.console.views.base import LIST_BINDINGS, ListView
from lbtui.console.widgets.linetable import LineTable, TableColumn
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


def _wall(e: LbEvent, ctx: tuple[int, float]) -> float:
    now_ns, wall = ctx
    return round(wall - (now_ns - e.ts_ns) / 1e9, 3)


EVENT_COLUMNS = [
    TableColumn("time", 12, _clock, value=_wall),
    TableColumn("event", 6, lambda e, _c: e.kind),
    TableColumn("why", 4, lambda e, _c: e.reason),
    TableColumn("proto", 5, lambda e, _c: e.proto),
    TableColumn("client", 21, lambda e, _c: e.client),
    TableColumn("vip", 21, lambda e, _c: f"{e.vip_ip}:{e.vip_port}", drop=3),
    TableColumn("target", 21, lambda e, _c: e.target),
    TableColumn("lived", 7, _lifetime, right=True, drop=4,
                value=lambda e, _c: (e.ts_ns - e.created_ns) / 1e9 if e.kind == "closed"
                else None),
    TableColumn("pkts→", 7, lambda e, _c: fmt.count(e.packets_fwd), right=True,
                field="packets_fwd", drop=6, value=lambda e, _c: e.packets_fwd),
    TableColumn("pkts←", 7, lambda e, _c: fmt.count(e.packets_rev), right=True,
                field="packets_rev", drop=6, value=lambda e, _c: e.packets_rev),
    TableColumn("bytes→", 10, lambda e, _c: fmt.size(e.bytes_fwd), right=True,
                field="bytes_fwd", drop=5, value=lambda e, _c: e.bytes_fwd),
    TableColumn("bytes←", 10, lambda e, _c: fmt.size(e.bytes_rev), right=True,
                field="bytes_rev", drop=5, value=lambda e, _c: e.bytes_rev),
]


def event_class(e: LbEvent) -> str | None:
    """Resets and failed connects stand out."""
    return "bad" if e.reason == "rst" or e.kind == "connect_failed" else None


class EventsView(ListView):
    NAME = "events"
    FIELDS = tuple(c.key for c in EVENT_COLUMNS if c.searchable)
    ALIASES: ClassVar[dict[str, str]] = {"kind": "event", "reason": "why",
                                         "backend": "target"}
    EXAMPLE = "why:rst !event:opened"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p,space", "pause", "Pause", id="events.pause"),
        Binding("c", "clear", "Clear", id="events.clear"),
        *LIST_BINDINGS,
    ]

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.events: deque[LbEvent] = deque(maxlen=KEEP)   # newest first
        self.paused = False
        self.received = 0
        self.lost = 0
        self._ctx: tuple[int, float] = (0, 0.0)

    def make_table(self) -> LineTable:
        return LineTable(EVENT_COLUMNS, key=lambda e: e, row_class=event_class,
                         id="events-table")

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

    def refilter(self) -> None:
        self._render_rows()

    def _render_rows(self) -> None:
        rows = self.filtered(self.events, EVENT_COLUMNS, self._ctx)
        self.table.set_rows(rows, self._ctx)
        self._update_title(len(rows))

    def _update_title(self, shown: int | None = None) -> None:
        shown = len(self.table.rows) if shown is None else shown
        parts = [f"[b]Events[/b]  {shown:,} shown / {len(self.events):,} kept / "
                 f"{self.received:,} received",
                 f"lost [b]{self.lost:,}[/b]" if self.lost else "lost 0"]
        if self.paused:
            parts.append("[reverse b] PAUSED [/]")
        self.title(*parts)

    def action_pause(self) -> None:
        self.paused = not self.paused
        self._render_rows()

    def action_clear(self) -> None:
        self.events.clear()
        self._render_rows()
