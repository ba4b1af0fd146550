"""Connections: the conntrack map as a virtual table, sortable, filterable, freezable;
closed flows (FIN both ways) are hidden until asked for, resets and unanswered SYNs are
coloured."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from textual import on
from textual.binding import Binding, BindingType

from lbtui.console.data import conns as C
from lbtui.console.data.filters import Filter
from lbtui.console.messages import (
    DeleteConnRequested,
    FreezeToggled,
    HeaderClicked,
    SpecChanged,
)
from lbtui.console.views.base import LIST_BINDINGS, ListView
from lbtui.console.widgets.linetable import LineTable, TableColumn
from lbtui.maps import flowrows as R


def table_columns(columns: Sequence[C.Column]) -> list[TableColumn]:
    return [TableColumn(c.name, c.width, c.text, c.right, field=c.field, drop=c.drop,
                        value=c.value) for c in columns]


CONN_COLUMNS = table_columns(C.COLUMNS)


class ConnectionsView(ListView):
    """Shows ConnViews computed off the UI thread; asks for new ones when the operator
    changes sort, filter or the closed-flow choice (``SpecChanged``)."""

    NAME = "connections"
    FIELDS: ClassVar[Sequence[str]] = C.FIELDS
    ALIASES = C.ALIASES
    EXAMPLE = "state:syn-sent !udp"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "freeze", "Freeze", id="conns.freeze"),
        Binding("c", "toggle_closed", "Closed", id="conns.closed"),
        Binding("greater_than_sign", "sort(1)", "Sort →", key_display=">", id="conns.sort_next"),
        Binding("less_than_sign", "sort(-1)", "Sort ←", key_display="<", id="conns.sort_prev"),
        Binding("r", "reverse", "Reverse", id="conns.reverse"),
        Binding("d,delete", "delete", "Delete conn", id="conns.delete"),
        *LIST_BINDINGS,
    ]

    def __init__(self, table: C.ConnTable = C.SINGLE, **kw: Any) -> None:
        super().__init__(**kw)
        self.conn_table = table
        self.columns = CONN_COLUMNS if table is C.SINGLE else table_columns(table.columns)
        self.spec = C.ViewSpec()
        self.frozen = False
        self.view: C.ConnView | None = None

    def make_table(self) -> LineTable:
        table = LineTable(self.columns, key=self.row_key, row_class=C.row_class,
                          id="conns-table")
        table.sorted_column = self.spec.sort
        return table

    @staticmethod
    def row_key(r: Any) -> Any:
        return r[R.KEY]

    def on_mount(self) -> None:
        self._update_title()

    # --- data ----------------------------------------------------------------------------

    def show(self, view: C.ConnView, now_ns: int) -> None:
        """Show a view computed for ``view.spec`` (ignored if the spec changed since)."""
        if view.spec != self.spec:
            return
        self.view = view
        self.table.set_rows(view.rows, now_ns)
        self._update_title()

    def _update_title(self) -> None:
        v = self.view
        shown = len(v.rows) if v else 0
        total = v.total if v else 0
        parts = [f"[b]Connections[/b]  {shown:,} shown / {total:,} total"]
        if v and v.sampled:
            parts.append(f"[yellow]sample of the first {len(v.rows):,} flows read[/]"
                         if not self.spec.filter else "[yellow]filtered sample[/]")
        if self.spec.show_closed:
            parts.append("closed shown")
        elif v and v.closed_hidden:
            parts.append(f"{v.closed_hidden:,} closed hidden (c)")
        arrow = "▼" if self.spec.reverse else "▲"
        parts.append(f"sort {self.spec.sort}{arrow}")
        if self.frozen:
            parts.append("[reverse b] FROZEN [/]")
        self.title(*parts)

    def _set_spec(self, spec: C.ViewSpec) -> None:
        self.spec = spec
        self.table.sorted_column = spec.sort
        self.table.sort_reverse = spec.reverse
        self.table.refresh()
        self._update_title()
        self.refresh_bindings()
        self.post_message(SpecChanged(spec))

    def _respec(self, *, sort: str | None = None, reverse: bool | None = None,
                filter: Filter | None = None, show_closed: bool | None = None) -> None:
        s = self.spec
        self._set_spec(C.ViewSpec(
            s.sort if sort is None else sort, s.reverse if reverse is None else reverse,
            s.filter if filter is None else filter,
            s.show_closed if show_closed is None else show_closed))

    def refilter(self) -> None:
        self._respec(filter=self.filter)

    def export_source(self) -> tuple[Sequence[TableColumn], Sequence[Any], Any]:
        # Every row of the current view, also the ones a narrow screen does not show.
        return self.columns, self.view.rows if self.view else [], self.table.context

    # --- actions -------------------------------------------------------------------------

    def action_freeze(self) -> None:
        self.frozen = not self.frozen
        self._update_title()
        self.post_message(FreezeToggled(self.frozen))

    def action_toggle_closed(self) -> None:
        show = not self.spec.show_closed
        self._respec(show_closed=show)
        self.notify("closed flows shown; c hides them" if show else
                    "closed flows hidden; c shows them", timeout=3)

    def sort_by(self, column: str, reverse: bool | None = None) -> None:
        if reverse is None:
            reverse = not self.spec.reverse if column == self.spec.sort else False
        self._respec(sort=column, reverse=reverse)

    def action_sort(self, step: int) -> None:
        names = self.conn_table.names
        i = (names.index(self.spec.sort) + step) % len(names)
        self.sort_by(names[i], self.spec.reverse)

    def action_reverse(self) -> None:
        self.sort_by(self.spec.sort, not self.spec.reverse)

    def action_delete(self) -> None:
        row = self.table.selected
        if row is None:
            self.notify("no connection selected", severity="warning")
            return
        self.post_message(DeleteConnRequested(row))

    @on(HeaderClicked, "#conns-table")
    def _header_clicked(self, event: HeaderClicked) -> None:
        self.sort_by(event.column)


class ClusterConnectionsView(ConnectionsView):
    """The flows of every node of a cluster, with a node column (sortable, and ``node:``
    in the filter); the same flow on two nodes is two rows."""

    FIELDS: ClassVar[Sequence[str]] = ("node", *C.FIELDS)
    EXAMPLE = "node:node1 state:syn-sent"

    @staticmethod
    def row_key(r: Any) -> Any:
        return r[R.KEY], r[C.NODE]
