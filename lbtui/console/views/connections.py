"""Connections: the conntrack map as a virtual table, sortable, filterable, freezable."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, Static

from lbtui.console import conns as C
from lbtui.console.linetable import LineTable, TableColumn
from lbtui.maps import flowrows as R

CONN_COLUMNS = [TableColumn(c.name, c.width, c.text, c.right) for c in C.COLUMNS]


class ConnectionsView(Vertical):
    """Shows ConnViews computed off the UI thread; asks for new ones when the operator
    changes sort or filter (``SpecChanged``)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter", id="conns.filter"),
        Binding("space", "freeze", "Freeze", id="conns.freeze"),
        Binding("greater_than_sign", "sort(1)", "Sort →", key_display=">", id="conns.sort_next"),
        Binding("less_than_sign", "sort(-1)", "Sort ←", key_display="<", id="conns.sort_prev"),
        Binding("r", "reverse", "Reverse", id="conns.reverse"),
        Binding("d,delete", "delete", "Delete conn", id="conns.delete"),
        Binding("escape", "clear_filter", "Clear filter", id="conns.clear_filter"),
    ]
    DEFAULT_CSS = """
    ConnectionsView #conns-title { height: 1; padding: 0 1; background: $boost; }
    ConnectionsView #conns-filter { display: none; height: 3; }
    ConnectionsView.filtering #conns-filter { display: block; }
    """

    class SpecChanged(Message):
        def __init__(self, spec: C.ViewSpec) -> None:
            self.spec = spec
            super().__init__()

    class DeleteRequested(Message):
        def __init__(self, row: R.Row) -> None:
            self.row = row
            super().__init__()

    class FreezeToggled(Message):
        def __init__(self, frozen: bool) -> None:
            self.frozen = frozen
            super().__init__()

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.spec = C.ViewSpec()
        self.frozen = False
        self.view: C.ConnView | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="conns-title")
        yield Input(placeholder="filter: text in client, VIP, target, protocol or state "
                    "(Enter keeps it, Esc clears)", id="conns-filter")
        table = LineTable(CONN_COLUMNS, key=lambda r: r[R.KEY], id="conns-table")
        table.sorted_column = self.spec.sort
        yield table

    @property
    def table(self) -> LineTable:
        return self.query_one("#conns-table", LineTable)

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
        arrow = "▼" if self.spec.reverse else "▲"
        parts.append(f"sort {self.spec.sort}{arrow}")
        if self.spec.filter:
            parts.append(f"filter [b]{self.spec.filter}[/b]")
        if self.frozen:
            parts.append("[reverse b] FROZEN [/]")
        self.query_one("#conns-title", Static).update("  ·  ".join(parts))

    def _set_spec(self, spec: C.ViewSpec) -> None:
        self.spec = spec
        self.table.sorted_column = spec.sort
        self.table.sort_reverse = spec.reverse
        self.table.refresh()
        self._update_title()
        self.refresh_bindings()
        self.post_message(self.SpecChanged(spec))

    # --- actions -------------------------------------------------------------------------

    def action_filter(self) -> None:
        self.add_class("filtering")
        self.refresh_bindings()
        inp = self.query_one("#conns-filter", Input)
        inp.value = self.spec.filter
        inp.focus()

    @on(Input.Changed, "#conns-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self._set_spec(C.ViewSpec(self.spec.sort, self.spec.reverse, event.value.strip()))

    @on(Input.Submitted, "#conns-filter")
    def _filter_done(self, _event: Input.Submitted) -> None:
        self.remove_class("filtering")
        self.refresh_bindings()
        self.table.focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "clear_filter":   # in the footer only while there is one
            return bool(self.spec.filter) or self.has_class("filtering")
        return True

    def action_clear_filter(self) -> None:
        self.remove_class("filtering")
        if self.spec.filter:
            self._set_spec(C.ViewSpec(self.spec.sort, self.spec.reverse, ""))
        self.table.focus()

    def action_freeze(self) -> None:
        self.frozen = not self.frozen
        self._update_title()
        self.post_message(self.FreezeToggled(self.frozen))

    def sort_by(self, column: str, reverse: bool | None = None) -> None:
        if reverse is None:
            reverse = not self.spec.reverse if column == self.spec.sort else False
        self._set_spec(C.ViewSpec(column, reverse, self.spec.filter))

    def action_sort(self, step: int) -> None:
        i = (C.COLUMN_NAMES.index(self.spec.sort) + step) % len(C.COLUMN_NAMES)
        self.sort_by(C.COLUMN_NAMES[i], self.spec.reverse)

    def action_reverse(self) -> None:
        self.sort_by(self.spec.sort, not self.spec.reverse)

    def action_delete(self) -> None:
        row = self.table.selected
        if row is None:
            self.notify("no connection selected", severity="warning")
            return
        self.post_message(self.DeleteRequested(row))

    @on(LineTable.HeaderClicked, "#conns-table")
    def _header_clicked(self, event: LineTable.HeaderClicked) -> None:
        self.sort_by(event.column)
