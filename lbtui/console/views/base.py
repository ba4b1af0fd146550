"""What every list view shares: a title line, the filter bar, a LineTable, and the keys
that work on any list (filter, clear the filter, copy the selected row, export)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from rich.markup import escape
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Static

from lbtui.console.data.export import copy_text, record
from lbtui.console.data.filters import Filter
from lbtui.console.messages import ExportRequested, FilterChanged, FilterClosed
from lbtui.console.widgets.filterbar import FilterBar
from lbtui.console.widgets.linetable import LineTable, TableColumn

LIST_BINDINGS: list[BindingType] = [
    Binding("slash", "filter", "Filter", id="list.filter"),
    Binding("escape", "clear_filter", "Clear filter", id="list.clear_filter"),
    Binding("y", "copy", "Copy row", id="list.copy"),
    Binding("s", "export", "Export", id="list.export"),
]


class ListView(Vertical):
    """Subclasses make the table (``make_table``) and show rows again when the filter
    changes (``refilter``); the filter in force is ``self.filter``."""

    NAME: ClassVar[str] = "list"           # exports are named after it
    FIELDS: ClassVar[Sequence[str]] = ()   # what the filter can name
    ALIASES: ClassVar[Mapping[str, str]] = {}
    EXAMPLE: ClassVar[str] = ""            # a filter to show in the bar's placeholder
    DEFAULT_CSS = """
    ListView > .view-title { height: 1; padding: 0 1; background: $boost; }
    """

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.filter = Filter()
        self.filter_text = ""

    def compose(self) -> ComposeResult:
        yield Static(id=f"{self.NAME}-title", classes="view-title")
        yield FilterBar(self.FIELDS, aliases=self.ALIASES, example=self.EXAMPLE,
                        id=f"{self.NAME}-filter")
        yield self.make_table()

    def make_table(self) -> LineTable:
        raise NotImplementedError

    def refilter(self) -> None:
        raise NotImplementedError

    @property
    def table(self) -> LineTable:
        return self.query_one(LineTable)

    @property
    def filter_bar(self) -> FilterBar:
        return self.query_one(FilterBar)

    def title(self, *parts: str) -> None:
        """Set the title line: ``parts`` and the filter in force, joined by dots."""
        out = [p for p in parts if p]
        if self.filter_text:
            out.append(f"filter [b]{escape(self.filter_text)}[/b]")
        self.query_one(".view-title", Static).update("  ·  ".join(out))

    # --- filtering -------------------------------------------------------------------

    def filtered(self, rows: Sequence[Any], columns: Sequence[TableColumn],
                 context: Any) -> list[Any]:
        """``rows`` that pass the filter in force; FIELDS name columns of ``columns``."""
        if not self.filter:
            return list(rows)
        by_key = {c.key: c for c in columns}
        cols = [by_key[f] for f in self.FIELDS]
        match = self.filter.matcher(self.FIELDS, [c.key for c in cols if c.searchable])
        return [r for r in rows if match([c.filter_text(r, context) for c in cols])]

    def action_filter(self) -> None:
        self.filter_bar.open()
        self.refresh_bindings()

    def set_filter(self, text: str) -> None:
        """Filter as if ``text`` was typed (FilterError if it is not valid)."""
        self.filter_bar.set_text(text)

    @on(FilterChanged)
    def _filter_changed(self, msg: FilterChanged) -> None:
        msg.stop()
        had = bool(self.filter_text)
        self.filter, self.filter_text = msg.filter, msg.text
        if had != bool(msg.text):      # "Clear filter" comes or goes in the footer
            self.refresh_bindings()
        self.refilter()

    @on(FilterClosed)
    def _filter_closed(self, msg: FilterClosed) -> None:
        msg.stop()
        self.refresh_bindings()
        self.table.focus()

    def action_clear_filter(self) -> None:
        self.filter_bar.clear()
        self.refresh_bindings()
        self.table.focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "clear_filter":   # in the footer only while there is one
            bars = self.query(FilterBar)
            return bool(self.filter_text) or any(
                b.is_open or b.has_class("-invalid") for b in bars)
        return True

    # --- copy and export ---------------------------------------------------------------

    def export_source(self) -> tuple[Sequence[TableColumn], Sequence[Any], Any]:
        """Columns, rows (as filtered and ordered on screen) and their context."""
        t = self.table
        return t.all_columns, t.rows, t.context

    def action_copy(self) -> None:
        t = self.table
        row = t.selected
        if row is None:
            self.notify("nothing selected to copy", severity="warning")
            return
        text = copy_text(record(t.all_columns, row, t.context))
        self.app.copy_to_clipboard(text)
        self.notify(f"copied to the clipboard: {escape(text)}", title="copied",
                    timeout=6)

    def action_export(self) -> None:
        columns, rows, context = self.export_source()
        if not rows:
            self.notify("nothing to export: the view is empty", severity="warning")
            return
        self.post_message(ExportRequested(self.NAME, columns, rows, context))
