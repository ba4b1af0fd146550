"""Small modal questions: confirm a deletion, keep the load balancer when quitting."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Static

DIALOG_CSS = """
{name} {{ align: center middle; }}
{name} > #dialog {{
    width: 72; height: auto; border: heavy $warning; background: $surface; padding: 1 2;
}}
{name} #question {{ height: auto; margin-bottom: 1; }}
{name} #buttons {{ height: 1; align-horizontal: right; }}
{name} #buttons Button {{ margin-left: 2; }}
"""


class ConfirmScreen(ModalScreen[bool]):
    DEFAULT_CSS = DIALOG_CSS.format(name="ConfirmScreen")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm.no"),
    ]

    def __init__(self, question: str, yes: str = "Delete") -> None:
        super().__init__()
        self.question = question
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.question, id="question")
            with Horizontal(id="buttons"):
                yield Button(f"{self.yes} (y)", id="yes", variant="error", compact=True)
                yield Button("Cancel (n)", id="no", compact=True)
        yield Footer()

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class QuitScreen(ModalScreen[str | None]):
    """Asked when quitting a console that loaded the datapath: "keep", "stop" or None."""

    DEFAULT_CSS = DIALOG_CSS.format(name="QuitScreen")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("k", "answer('keep')", "Keep running", id="quit.keep"),
        Binding("s", "answer('stop')", "Stop and detach", id="quit.stop"),
        Binding("escape,c", "answer(None)", "Cancel", id="quit.cancel"),
    ]

    def __init__(self, instance: str) -> None:
        super().__init__()
        self.instance = instance

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(
                f"This console loaded instance [b]{self.instance}[/b].\n\nKeep the load "
                "balancer running after the console exits? Kept, XDP keeps forwarding on "
                "the pinned maps and `lbtui serve` or `lbtui console --attach` can take it "
                "over; stopped, XDP is detached and the maps are removed.", id="question")
            with Horizontal(id="buttons"):
                yield Button("Keep running (k)", id="keep", variant="primary", compact=True)
                yield Button("Stop (s)", id="stop", variant="error", compact=True)
                yield Button("Cancel", id="cancel", compact=True)
        yield Footer()

    def action_answer(self, answer: str | None) -> None:
        self.dismiss(answer)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id if event.button.id in ("keep", "stop") else None)
