"""A virtual table on Textual's Line API: it renders only the rows on screen.

Textual's DataTable builds every row up front (about 13 s for 100k rows); this widget
holds a list of rows and formats the visible ones in ``render_line``. The selection is kept
by row key across updates, not by index, so a refresh that reorders rows keeps the cursor
on the same flow (except on the first row, which stays the first row).
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
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

GAP = 1


@dataclass(frozen=True)
class TableColumn:
    name: str
    width: int
    text: Callable[[Any, Any], str]     # (row, context) -> cell text
    right: bool = False


class LineTable(ScrollView, can_focus=True):
    """Rows in, visible lines out. ``key`` names a row across updates."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "linetable--header", "linetable--cursor", "linetable--sorted"}
    DEFAULT_CSS = """
    LineTable { height: 1fr; background: $surface; }
    LineTable > .linetable--header { text-style: bold; background: $panel; color: $text; }
    LineTable > .linetable--sorted { text-style: bold underline; background: $panel; }
    LineTable > .linetable--cursor { background: $accent 40%; }
    LineTable:focus > .linetable--cursor { background: $accent; color: $text; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", "Up", show=False, id="table.up"),
        Binding("down", "cursor(1)", "Down", show=False, id="table.down"),
        Binding("pageup", "page(-1)", "Page up", show=False, id="table.pageup"),
        Binding("pagedown", "page(1)", "Page down", show=False, id="table.pagedown"),
        Binding("home", "jump(0)", "First", show=False, id="table.home"),
        Binding("end", "jump(-1)", "Last", show=False, id="table.end"),
    ]

    class HeaderClicked(Message):
        def __init__(self, table: LineTable, column: str) -> None:
            self.table = table
            self.column = column
            super().__init__()

        @property
        def control(self) -> LineTable:
            return self.table

    def __init__(self, columns: Sequence[TableColumn], key: Callable[[Any], Hashable],
                 *, name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.columns = tuple(columns)
        self.key = key
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

    def _cells(self, texts: Sequence[str]) -> str:
        parts = []
        for c, t in zip(self.columns, texts, strict=True):
            t = t if len(t) <= c.width else t[: c.width - 1] + "…"
            parts.append(t.rjust(c.width) if c.right else t.ljust(c.width))
        return (" " * GAP).join(parts) + " " * GAP

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
        text = self._cells([c.text(row, self.context) for c in self.columns])
        style = self._styles[3] if idx == self.cursor else self._styles[0]
        return Strip([Segment(text, style)], self._width)

    # --- mouse ---------------------------------------------------------------------------

    def on_click(self, event: events.Click) -> None:
        x = event.x + round(self.scroll_x)
        if event.y == 0:
            pos = 0
            for c in self.columns:
                if pos <= x < pos + c.width + GAP:
                    self.post_message(self.HeaderClicked(self, c.name))
                    return
                pos += c.width + GAP
            return
        self.move_to(round(self.scroll_y) + event.y - 1)

    def on_resize(self, _event: events.Resize) -> None:
        self._scroll_cursor_into_view()
