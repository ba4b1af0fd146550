"""Events: the instance's event stream, newest first, filterable, pausable: flows opened
and closed, and among them every configuration edit (who, from where, old -> new) and every
change of a target's health (judged from its traffic, or by active checks)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from textual.binding import Binding, BindingType

from lbtui.console.data import fmt
from lbtui.console.data.hub import DEGRADED, FAILING, OUT, Notice
from lbtui.console.views.base import LIST_BINDINGS, ListView
from lbtui.console.widgets.linetable import LineTable, TableColumn
from lbtui.maps.events import LbEvent

KEEP = 10_000   # events kept for the view
Row = LbEvent | Notice
Context = tuple[int, float]     # (CLOCK_MONOTONIC, wall time) of the shown snapshot


def wall_of(e: Row, ctx: Context) -> float:
    if isinstance(e, Notice):
        return e.ts
    now_ns, wall = ctx
    return wall - (now_ns - e.ts_ns) / 1e9


def _clock(e: Row, ctx: Context) -> str:
    w = wall_of(e, ctx)
    return time.strftime("%H:%M:%S", time.localtime(w)) + f".{int(w * 1000) % 1000:03d}"


def _lifetime(e: Row, _ctx: object) -> str:
    if isinstance(e, Notice) or e.kind != "closed":
        return ""
    ns = max(0, e.ts_ns - e.created_ns)
    return f"{ns // 1_000_000}ms" if ns < 1_000_000_000 else fmt.duration(ns / 1e9)


def _flow(text: Callable[[LbEvent], object], note: Callable[[Notice], object] = lambda _n: ""
          ) -> Callable[[Row, object], Any]:
    """A column's function: ``text`` of a flow event, ``note`` of an edit or a change of
    state."""
    return lambda e, _c: note(e) if isinstance(e, Notice) else text(e)


def _count(field: str, size: bool = False) -> TableColumn:
    show = fmt.size if size else fmt.count
    return TableColumn(field.replace("packets", "pkts").replace("bytes", "bytes")
                       .replace("_fwd", "→").replace("_rev", "←"), 10 if size else 7,
                       _flow(lambda e: show(getattr(e, field))), right=True, field=field,
                       drop=5 if size else 6,
                       value=_flow(lambda e: getattr(e, field), lambda _n: None))


def note_line(e: Row, _ctx: object) -> str | None:
    """An edit's or a change's line, from the "why" column on (None for flows)."""
    if not isinstance(e, Notice):
        return None
    if e.kind == "edit":
        return f"{e.source} ({e.who}): {e.what}"
    if e.kind == "check":
        return f"active check: {e.what}"
    return f"traffic: {e.who}: {e.what}"


EVENT_COLUMNS = [
    TableColumn("time", 12, _clock, value=lambda e, c: round(wall_of(e, c), 3)),
    TableColumn("event", 6, _flow(lambda e: e.kind, lambda n: n.kind)),
    TableColumn("why", 4, _flow(lambda e: e.reason, lambda n: n.source)),
    TableColumn("proto", 5, _flow(lambda e: e.proto)),
    TableColumn("client", 21, _flow(lambda e: e.client, lambda n: n.who)),
    TableColumn("vip", 21, _flow(lambda e: f"{e.vip_ip}:{e.vip_port}", lambda n: n.what),
                drop=3),
    TableColumn("target", 21, _flow(lambda e: e.target, lambda n: n.target)),
    TableColumn("lived", 7, _lifetime, right=True, drop=4,
                value=_flow(lambda e: (e.ts_ns - e.created_ns) / 1e9 if e.kind == "closed"
                            else None, lambda _n: None)),
    _count("packets_fwd"), _count("packets_rev"),
    _count("bytes_fwd", size=True), _count("bytes_rev", size=True),
]


def event_class(e: Row) -> str | None:
    """Resets, failed connects, failing targets and targets out of rotation stand out;
    edits and degraded targets are yellow."""
    if isinstance(e, Notice):
        if e.new in (FAILING, OUT):
            return "bad"
        return "warn" if e.kind == "edit" or e.new == DEGRADED else None
    return "bad" if e.reason == "rst" or e.kind == "connect_failed" else None


class EventsView(ListView):
    NAME = "events"
    FIELDS = tuple(c.key for c in EVENT_COLUMNS if c.searchable)
    # An edit's user and change sit in the client and vip columns (see note_line).
    ALIASES: ClassVar[dict[str, str]] = {"kind": "event", "reason": "why",
                                         "backend": "target", "user": "client",
                                         "change": "vip"}
    EXAMPLE = "why:rst !event:opened  event:edit"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p,space", "pause", "Pause", id="events.pause"),
        Binding("c", "clear", "Clear", id="events.clear"),
        *LIST_BINDINGS,
    ]

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.events: deque[Row] = deque(maxlen=KEEP)   # newest first
        self.paused = False
        self.received = 0
        self.lost = 0
        self._ctx: Context = (0, 0.0)

    def make_table(self) -> LineTable:
        return LineTable(EVENT_COLUMNS, key=lambda e: e, row_class=event_class,
                         span=("why", note_line), id="events-table")

    def on_mount(self) -> None:
        self._render_rows()

    def add(self, events: list[LbEvent], now_ns: int, wall: float, lost: int,
            notices: Sequence[Notice] = ()) -> None:
        """New events and notices from one snapshot; kept while paused, shown when
        resumed."""
        self.received += len(events)
        self.lost = lost
        ctx = (now_ns, wall)
        if not self.paused:
            self._ctx = ctx
        # Kept in the order they happened (notices carry wall time, flows the kernel's).
        rows: list[Row] = [*events, *notices]
        self.events.extendleft(sorted(rows, key=lambda e: wall_of(e, ctx)) if notices
                               else rows)
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
