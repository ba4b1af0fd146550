"""The filter bar every list view shares: one line to type a filter in (the language is in
``lbtui.console.data.filters``), and the reason below it while the text is not valid.

A valid text applies as it is typed (``FilterChanged``); an invalid one changes nothing
and says why. Enter keeps the filter and closes the bar; the view's Esc clears it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.markup import escape
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, Static

from lbtui.console.data.filters import Filter, FilterError, parse_filter
from lbtui.console.messages import FilterChanged, FilterClosed


class FilterBar(Vertical):
    DEFAULT_CSS = """
    FilterBar { height: auto; display: none; }
    FilterBar.open, FilterBar.-invalid { display: block; }
    FilterBar > Horizontal { height: 1; }
    FilterBar #filter-label { width: auto; padding: 0 1; background: $boost; }
    FilterBar Input.-textual-compact { width: 1fr; background: $boost; }
    FilterBar Input.-textual-compact:focus { background: $primary 30%; }
    FilterBar.-invalid Input.-textual-compact { background: $error 25%; }
    FilterBar #filter-error { height: auto; color: $text-error; padding: 0 1; display: none; }
    FilterBar.-invalid #filter-error { display: block; }
    """

    def __init__(self, fields: Sequence[str], *, aliases: Mapping[str, str] | None = None,
                 example: str = "", id: str | None = None) -> None:
        super().__init__(id=id)
        self.fields = tuple(fields)
        self.aliases = dict(aliases or {})
        self.example = example
        self.filter = Filter()
        self.text = ""

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Static("filter", id="filter-label")
            hint = f"text, field:value, !negated ({self.example}); fields: " if (
                self.example) else "text, field:value or !negated; fields: "
            yield Input(placeholder=hint + " ".join(self.fields), compact=True,
                        select_on_focus=False, id="filter-input")
        yield Static(id="filter-error")

    @property
    def input(self) -> Input:
        return self.query_one("#filter-input", Input)

    @property
    def is_open(self) -> bool:
        return self.has_class("open")

    def open(self) -> None:
        self.add_class("open")
        self.input.value = self.text
        self.input.cursor_position = len(self.text)
        self.input.focus()

    def close(self) -> None:
        self.remove_class("open")

    def set_text(self, text: str) -> Filter:
        """Apply ``text`` as if typed (drill-downs); FilterError if it is not valid."""
        f = parse_filter(text, self.fields, self.aliases)
        self.input.value = text
        self._accept(f, text)
        return f

    def clear(self) -> None:
        self.close()
        self.input.value = ""
        self._accept(Filter(), "")

    def _accept(self, f: Filter, text: str) -> None:
        self.remove_class("-invalid")
        if (f, text) != (self.filter, self.text):
            self.filter, self.text = f, text
            self.post_message(FilterChanged(f, text))

    @on(Input.Changed, "#filter-input")
    def _changed(self, event: Input.Changed) -> None:
        event.stop()
        text = event.value.strip()
        try:
            f = parse_filter(text, self.fields, self.aliases)
        except FilterError as e:
            self.query_one("#filter-error", Static).update(escape(str(e)))
            self.add_class("-invalid")
            return
        self._accept(f, text)

    @on(Input.Submitted, "#filter-input")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.has_class("-invalid"):
            self.app.bell()       # the reason is on screen; the filter in force stays
            return
        self.close()
        self.post_message(FilterClosed())
