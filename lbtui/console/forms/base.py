"""The modal form pattern: validate every field on save, then apply; on failure show the
reason and stay open."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Static

from lbtui.console.blocking import run_blocking


class Invalid(Exception):
    """Some field is invalid; the field shows why."""


FORM_CSS = """
FormScreen { align: center middle; }
FormScreen > #dialog {
    width: 96; max-width: 100%; height: auto; max-height: 100%;
    border: heavy $accent; background: $surface; padding: 0 1;
}
FormScreen #form-title { text-style: bold; height: 1; margin-bottom: 1; }
FormScreen .field { height: auto; }
FormScreen .label { width: 14; height: 1; padding-top: 0; }
FormScreen .field Input.-textual-compact { width: 1fr; }
FormScreen Input.-textual-compact { background: $boost; }
FormScreen Input.-textual-compact:focus { background: $primary 30%; }
FormScreen Input.-textual-compact.-invalid { background: $error 25%; }
FormScreen Checkbox { border: none; padding: 0; margin-right: 2; height: 1; }
FormScreen Checkbox.-on > .toggle--button { color: $text; background: $success; }
FormScreen .field-error { color: $error; height: auto; padding-left: 14; }
FormScreen #form-error { color: $error; height: auto; margin-top: 1; display: none; }
FormScreen #form-buttons { height: 1; margin-top: 1; align-horizontal: right; }
FormScreen #form-buttons Button { margin-left: 2; }
"""


class FormBody(VerticalScroll, can_focus=False):
    """The dialog: scrolls when the terminal is short, and leaves the focus to the first
    field."""


class FormScreen(ModalScreen[bool]):
    """Subclasses compose their fields in ``fields()`` and return the value to apply from
    ``collect()`` (raising Invalid after marking the bad fields)."""

    DEFAULT_CSS = FORM_CSS
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Save", id="form.save"),
        Binding("escape", "cancel", "Cancel", id="form.cancel"),
    ]

    FAILURE: ClassVar[str] = "map update failed, nothing changed"

    def __init__(self, title: str, apply: Callable[[Any], object]) -> None:
        super().__init__()
        self.form_title = title
        self.apply = apply
        self.applied: Any = None      # the value saved
        self.result: Any = None       # what ``apply`` returned for it
        self.saving = False

    def compose(self) -> ComposeResult:
        with FormBody(id="dialog"):
            yield Static(self.form_title, id="form-title")
            yield from self.fields()
            yield Static("", id="form-error")
            with Horizontal(id="form-buttons"):
                yield Button("Save", id="save", variant="primary", compact=True)
                yield Button("Cancel", id="cancel", compact=True)
        yield Footer()

    def fields(self) -> ComposeResult:
        yield from ()

    def collect(self) -> Any:
        raise NotImplementedError

    def set_error(self, text: str) -> None:
        err = self.query_one("#form-error", Static)
        err.update(text)
        err.display = bool(text)

    @property
    def error_text(self) -> str:
        return str(self.query_one("#form-error", Static).render())

    async def action_save(self) -> None:
        if self.saving:
            return
        self.set_error("")
        try:
            value = self.collect()
        except Invalid as e:
            self.set_error(str(e) or "fix the fields marked above")
            return
        # Off the event loop (lbtui.console.blocking): the Controller writes maps and the
        # file, and may use netlink.
        self.saving = True
        try:
            outcome = await run_blocking(lambda: self.apply(value))
        finally:
            self.saving = False
        if outcome.refused is not None:     # refused by the control plane: nothing changed
            self.set_error(f"refused: {outcome.refused}")
            return
        if outcome.failed is not None:      # a write failed and was rolled back
            self.set_error(f"{self.FAILURE}: {outcome.failed}")
            return
        self.applied = value
        self.result = outcome.value
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)

    @on(Button.Pressed, "#save")
    async def _save_pressed(self) -> None:
        await self.action_save()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()

    @on(Input.Submitted)
    async def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        await self.action_save()


def field_value(inp: Input, error: Static, parse: Callable[[str], Any]) -> Any:
    """Parse one field; show the reason next to it and raise Invalid if it is bad."""
    try:
        v = parse(inp.value)
    except ValueError as e:
        error.update(str(e))
        error.display = True
        inp.add_class("-invalid")
        raise Invalid() from None
    error.update("")
    error.display = False
    inp.remove_class("-invalid")
    return v


def field_row(label: str, inp: Input, error_id: str) -> ComposeResult:
    """A labelled input and the line below it where its error goes."""
    with Horizontal(classes="field"):
        yield Static(label, classes="label")
        yield inp
    err = Static("", id=error_id, classes="field-error")
    err.display = False
    yield err
