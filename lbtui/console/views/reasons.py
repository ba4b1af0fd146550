"""Reasons: why packets went to the kernel stack instead of being forwarded by XDP, per
interface, with rates over the last refresh and totals."""

from __future__ import annotations

from typing import Any, ClassVar

from textual.binding import BindingType

from lbtui.console.data import fmt
from lbtui.console.data.reasons import ReasonRow, reason_rows
from lbtui.console.data.snapshot import Snapshot
from lbtui.console.views.base import LIST_BINDINGS, ListView
from lbtui.console.widgets.linetable import LineTable, TableColumn

REASON_COLUMNS = [
    TableColumn("interface", 12, lambda r, _c: r.interface),
    TableColumn("reason", 16, lambda r, _c: r.reason),
    TableColumn("pkt/s", 9, lambda r, _c: fmt.rate(r.per_s), right=True, field="per_s",
                value=lambda r, _c: round(r.per_s, 2)),
    TableColumn("total", 12, lambda r, _c: fmt.count(r.total), right=True,
                value=lambda r, _c: r.total),
    TableColumn("meaning", 66, lambda r, _c: r.meaning, drop=1),
]


def reason_class(r: ReasonRow) -> str | None:
    """Reasons moving now are yellow."""
    return "warn" if r.per_s > 0 else None


class ReasonsView(ListView):
    NAME = "reasons"
    FIELDS = ("interface", "reason", "meaning")
    ALIASES: ClassVar[dict[str, str]] = {"if": "interface", "why": "reason"}
    EXAMPLE = "reason:no_flow  !interface:c1"
    BINDINGS: ClassVar[list[BindingType]] = [*LIST_BINDINGS]

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.rows: list[ReasonRow] = []
        self._pps = 0.0

    def make_table(self) -> LineTable:
        return LineTable(REASON_COLUMNS, key=lambda r: r.ref, row_class=reason_class,
                         id="reasons-table")

    def on_mount(self) -> None:
        self._render_rows()

    def show(self, snap: Snapshot) -> None:
        self.rows = reason_rows(snap)
        self._pps = snap.stack_pps
        self._render_rows()

    def refilter(self) -> None:
        self._render_rows()

    def _render_rows(self) -> None:
        rows = self.filtered(self.rows, REASON_COLUMNS, None)
        self.table.set_rows(rows, None)
        total = sum(r.total for r in self.rows)
        self.title("[b]Reasons[/b]  packets handed to the kernel stack instead of forwarded "
                   "by XDP, per interface", f"now {fmt.rate(self._pps)} pkt/s",
                   f"total {fmt.count(total)}" if total else "none so far")
