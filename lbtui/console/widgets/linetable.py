"""A virtual table on Textual's Line API: it renders only the rows on screen.

Textual's DataTable builds every row up front (about 13 s for 100k rows); this widget
holds a list of rows and formats the visible ones in ``render_line``. The selection is kept
by row key across updates, not by index, so a refresh that reorders rows keeps the cursor
on the same flow (except on the first row, which stays the first row).

Every list view of the console is one of these, so they share what a column knows: its
filter field, its raw value for exports, and when it may be left out of a narrow screen
(``drop``: the highest goes first; 0 never).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from lbtui.console.messages import HeaderClicked

GAP = 1
# What ``row_class`` may return: a component class that colours the whole row.
ROW_CLASSES = ("bad", "warn", "dim")


@dataclass(frozen=True)
class TableColumn:
    name: str
    width: int
    text: Callable[[Any, Any], str]     # (row, context) -> cell text
    right: bool = False
    field: str | None = None            # filter and export name (default: the name)
    search: bool | None = None          # free text looks here (default: left-aligned)
    drop: int = 0                       # narrow screens leave out the highest first
    style: str | None = None            # a rich style for this column's cells
    value: Callable[[Any, Any], object] | None = None   # raw value for exports
    export: bool = True                 # part of copies and exports

    @property
    def key(self) -> str:
        return self.field or self.name

    @property
    def searchable(self) -> bool:
        return not self.right if self.search is None else self.search

    def raw(self, row: Any, context: Any) -> object:
        return self.value(row, context) if self.value else self.text(row, context)

    def filter_text(self, row: Any, context: Any) -> str:
        """What a filter sees: the cell text, and the raw value when it differs (a
        drained weight is both "drained" and 0)."""
        t = self.text(row, context)
        if self.value is None:
            return t.lower()
        v = self.value(row, context)
        return (t if v is None or str(v) == t else f"{t} {v}").lower()


def fit_columns(columns: Sequence[TableColumn], width: int) -> tuple[TableColumn, ...]:
    """The columns that fit ``width``: droppable ones are left out, highest ``drop`` first
    (later columns before earlier ones on ties), then any that fit again come back."""
    def total(cs: Sequence[TableColumn]) -> int:
        return sum(c.width + GAP for c in cs)

    shown = list(columns)
    dropped: list[TableColumn] = []
    while total(shown) > width:
        candidates = [c for c in shown if c.drop]
        if not candidates:
            break
        worst = max(candidates, key=lambda c: (c.drop, shown.index(c)))
        shown.remove(worst)
        dropped.append(worst)
    for c in reversed(dropped):
        if total(shown) + c.width + GAP <= width:
            shown.append(c)
    return tuple(c for c in columns if c in shown)


class LineTable(ScrollView, can_focus=True):
    """Rows in, visible lines out. ``key`` names a row across updates."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "linetable--header", "linetable--cursor", "linetable--sorted",
        *(f"linetable--{c}" for c in ROW_CLASSES)}
    DEFAULT_CSS = """
    LineTable { height: 1fr; background: $surface; }
    LineTable > .linetable--header { text-style: bold; background: $panel; color: $text; }
    LineTable > .linetable--sorted { text-style: bold underline; background: $panel; }
    LineTable > .linetable--cursor { background: $accent 40%; }
    LineTable:focus > .linetable--cursor { background: $accent; color: $text; }
    LineTable > .linetable--bad { color: $text-error; }
    LineTable > .linetable--warn { color: $text-warning; }
    LineTable > .linetable--dim { color: $text-muted; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", "Up", show=False, id="table.up"),
        Binding("down", "cursor(1)", "Down", show=False, id="table.down"),
        Binding("pageup", "page(-1)", "Page up", show=False, id="table.pageup"),
        Binding("pagedown", "page(1)", "Page down", show=False, id="table.pagedown"),
        Binding("home", "jump(0)", "First", show=False, id="table.home"),
        Binding("end", "jump(-1)", "Last", show=False, id="table.end"),
    ]

    def __init__(self, columns: Sequence[TableColumn], key: Callable[[Any], Hashable],
                 *, row_class: Callable[[Any], str | None] | None = None,
                 span: tuple[str, Callable[[Any, Any], str | None]] | None = None,
                 name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.all_columns = tuple(columns)
        self.columns = self.all_columns          # those that fit the width
        # (column key, (row, context) -> text or None): a row for which it gives text
        # shows that text from this column to the end of the line (a note among flows).
        self.span = span
        self.key = key
        self.row_class = row_class
        self.rows: Sequence[Any] = []
        self.context: Any = None
        self.cursor = 0
        self.sorted_column: str | None = None
        self.sort_reverse = False
        self._selected: Hashable | None = None
        # On the first row the cursor stays on the first row (a live view keeps showing
        # its top, like top(1)); moved down, it follows its row through updates.
        self._follow_top = True
        self._width = sum(c.width + GAP for c in self.columns)
        self._styles: tuple[Style, Style, Style, Style] = (Style(),) * 4
        self._row_styles: dict[str, Style] = {}
        self._plain = not any(c.style for c in self.columns)   # one segment per row
        self.virtual_size = Size(self._width, 1)

    # --- data ----------------------------------------------------------------------------

    def set_rows(self, rows: Sequence[Any], context: Any = None) -> None:
        """Show ``rows``; the cursor stays on the row with the same key if it is still
        there. O(visible) rendering plus one scan for the selected key."""
        self.rows = rows
        self.context = context
        if self._follow_top:
            self.cursor = 0
        elif self._selected is not None:
            idx = self._index_of(self._selected)
            if idx is not None:
                self.cursor = idx
        self.cursor = max(0, min(self.cursor, len(rows) - 1))
        self._selected = self.key(rows[self.cursor]) if rows else None
        self.virtual_size = Size(self._width, len(rows) + 1)
        self._scroll_cursor_into_view()
        self.refresh()

    def _fit(self, width: int) -> None:
        shown = fit_columns(self.all_columns, width)
        if shown == self.columns:
            return
        self.columns = shown
        self._width = sum(c.width + GAP for c in shown)
        self._plain = not any(c.style for c in shown)
        self.virtual_size = Size(self._width, len(self.rows) + 1)
        self.refresh()

    @property
    def hidden_columns(self) -> tuple[TableColumn, ...]:
        return tuple(c for c in self.all_columns if c not in self.columns)

    def _index_of(self, key: Hashable) -> int | None:
        k = self.key
        # Most refreshes keep the order: try the old position first.
        if self.cursor < len(self.rows) and k(self.rows[self.cursor]) == key:
            return self.cursor
        return next((i for i, r in enumerate(self.rows) if k(r) == key), None)

    @property
    def selected(self) -> Any | None:
        return self.rows[self.cursor] if self.rows else None

    # --- movement ------------------------------------------------------------------------

    def move_to(self, index: int) -> None:
        if not self.rows:
            return
        self.cursor = max(0, min(index, len(self.rows) - 1))
        self._follow_top = self.cursor == 0
        self._selected = self.key(self.rows[self.cursor])
        self._scroll_cursor_into_view()
        self.refresh()

    def action_cursor(self, delta: int) -> None:
        self.move_to(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self.move_to(self.cursor + direction * max(1, self.size.height - 2))

    def action_jump(self, where: int) -> None:
        self.move_to(len(self.rows) - 1 if where < 0 else where)

    def _scroll_cursor_into_view(self) -> None:
        body = max(1, self.size.height - 1 - (1 if self.show_horizontal_scrollbar else 0))
        top = round(self.scroll_y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor >= top + body:
            self.scroll_to(y=self.cursor - body + 1, animate=False, immediate=True)

    # --- rendering -----------------------------------------------------------------------

    def render_lines(self, crop: Region) -> list[Strip]:
        # Resolving CSS styles is the costly part of a line; do it once per paint.
        self._styles = (self.rich_style,
                        self.get_component_rich_style("linetable--header"),
                        self.get_component_rich_style("linetable--sorted"),
                        self.rich_style + self.get_component_rich_style("linetable--cursor"))
        self._row_styles = {c: self.rich_style + self.get_component_rich_style(
            f"linetable--{c}") for c in ROW_CLASSES}
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        base = self._styles[0]
        if y == 0:
            strip = self._header_strip()
        else:
            idx = scroll_y + y - 1
            if idx >= len(self.rows):
                return Strip.blank(width, base)
            strip = self._row_strip(idx)
        return strip.crop_extend(scroll_x, scroll_x + width, base)

    def _header_strip(self) -> Strip:
        _, base, sorted_style, _ = self._styles
        segs = []
        for c in self.columns:
            label = c.name
            style: Style = base
            if c.name == self.sorted_column:
                label = f"{label}{'▼' if self.sort_reverse else '▲'}"
                style = sorted_style
            label = label[: c.width]
            pad = Segment(" " * (c.width - len(label)), base)
            segs.extend([pad, Segment(label, style)] if c.right else
                         [Segment(label, style), pad])
            segs.append(Segment(" " * GAP, base))
        return Strip(segs, self._width)

    def _row_strip(self, idx: int) -> Strip:
        row = self.rows[idx]
        if idx == self.cursor:
            style = self._styles[3]
        else:
            cls = self.row_class(row) if self.row_class else None
            style = self._row_styles.get(cls, self._styles[0]) if cls else self._styles[0]
        spanned = self._spanned(row)
        if spanned is not None:
            return Strip([Segment(spanned, style)], self._width)
        texts = [c.text(row, self.context) for c in self.columns]
        if self._plain:
            return Strip([Segment(self._cells(texts), style)], self._width)
        segs = []
        for c, t in zip(self.columns, texts, strict=True):
            cell = self._cells_one(c, t)
            segs.append(Segment(cell, style + Style.parse(c.style) if c.style else style))
            segs.append(Segment(" " * GAP, style))
        return Strip(segs, self._width)

    def _spanned(self, row: Any) -> str | None:
        """The line of a row that spans (see ``span``), or None."""
        if self.span is None:
            return None
        key, text = self.span
        wide = text(row, self.context)
        if wide is None:
            return None
        at = next((i for i, c in enumerate(self.columns) if c.key == key), len(self.columns))
        before = self.columns[:at]
        head = self._cells([c.text(row, self.context) for c in before], before) if at \
            else ""
        rest = self._width - len(head) - GAP
        tail = wide if len(wide) <= rest else wide[: max(0, rest - 1)] + "…"
        return head + tail.ljust(rest) + " " * GAP

    def _cells(self, texts: Sequence[str], columns: Sequence[TableColumn] | None = None
               ) -> str:
        cell = self._cells_one
        cols = self.columns if columns is None else columns
        return (" " * GAP).join([cell(c, t) for c, t in zip(cols, texts, strict=True)]
                                ) + " " * GAP

    @staticmethod
    def _cells_one(c: TableColumn, t: str) -> str:
        t = t if len(t) <= c.width else t[: c.width - 1] + "…"
        return t.rjust(c.width) if c.right else t.ljust(c.width)

    # --- mouse ---------------------------------------------------------------------------

    def on_click(self, event: events.Click) -> None:
        x = event.x + round(self.scroll_x)
        if event.y == 0:
            pos = 0
            for c in self.columns:
                if pos <= x < pos + c.width + GAP:
                    self.post_message(HeaderClicked(self, c.name))
                    return
                pos += c.width + GAP
            return
        self.move_to(round(self.scroll_y) + event.y - 1)

    def on_resize(self, _event: events.Resize) -> None:
        self._fit(self.size.width)
        self._scroll_cursor_into_view()
