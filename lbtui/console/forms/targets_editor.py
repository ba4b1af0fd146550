"""Rows of (ip, port, weight) with a live weight sum: the heart of every route form."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Static

from lbtui import abi
from lbtui.console.data.hints import FormHints
from lbtui.console.forms import fields as F
from lbtui.console.forms.base import Invalid
from lbtui.targets import TOTAL_WEIGHT, TargetGroup

_TARGET_INDEX = re.compile(r"^targets\[(\d+)\]")


class TargetRow(Vertical):
    DEFAULT_CSS = """
    TargetRow { height: auto; }
    TargetRow > Horizontal { height: 1; }
    TargetRow .t-ip { width: 24; }
    TargetRow .t-port { width: 9; }
    TargetRow .t-weight { width: 7; }
    TargetRow Input { margin-right: 1; }
    TargetRow .t-remove { min-width: 10; }
    TargetRow .t-error { color: $error; height: auto; display: none; }
    """

    def __init__(self, ip: str = "", port: str = "", weight: str = "",
                 hints: FormHints | None = None) -> None:
        super().__init__()
        self._init = (ip, port, weight)
        self.hints = hints or FormHints()

    def compose(self) -> ComposeResult:
        ip, port, weight = self._init
        with Horizontal():
            yield Input(ip, placeholder=self.hints.target_ip, classes="t-ip", compact=True,
                        validators=[F.IP], validate_on=["changed"])
            yield Input(port, placeholder=self.hints.target_port, classes="t-port",
                        compact=True,
                        validators=[F.PORT], validate_on=["changed"])
            yield Input(weight, placeholder="0-100", classes="t-weight", compact=True,
                        validators=[F.WEIGHT], validate_on=["changed"])
            yield Button("remove", classes="t-remove", compact=True)
        yield Static("", classes="t-error")

    @property
    def ip_input(self) -> Input:
        return self.query_one(".t-ip", Input)

    @property
    def port_input(self) -> Input:
        return self.query_one(".t-port", Input)

    @property
    def weight_input(self) -> Input:
        return self.query_one(".t-weight", Input)

    @property
    def error(self) -> Static:
        return self.query_one(".t-error", Static)

    def show_error(self, text: str) -> None:
        self.error.update(text)
        self.error.display = bool(text)

    def read(self) -> tuple[str, int, int]:
        """(ip, port, weight), or Invalid with every bad field named next to the row."""
        problems = []
        values: list[str | int] = []
        fields: tuple[tuple[Input, Callable[[str], str | int]], ...] = (
            (self.ip_input, F.ipv4), (self.port_input, F.port), (self.weight_input, F.weight))
        for inp, parse in fields:
            try:
                values.append(parse(inp.value))
                inp.remove_class("-invalid")
            except ValueError as e:
                problems.append(str(e))
                inp.add_class("-invalid")
        self.show_error("; ".join(problems))
        if problems:
            raise Invalid()
        return str(values[0]), int(values[1]), int(values[2])


class TargetsEditor(Vertical):
    """Target rows, add/remove, and a live sum that must reach 100."""

    DEFAULT_CSS = """
    TargetsEditor { height: auto; border: round $panel; padding: 0 1; }
    TargetsEditor > #t-head { height: 1; color: $text-muted; }
    TargetsEditor > #t-rows { height: auto; }
    TargetsEditor > #t-foot { height: 1; margin-top: 1; }
    TargetsEditor #t-sum { width: 1fr; }
    TargetsEditor #t-sum.bad { color: $error; }
    TargetsEditor #t-sum.good { color: $success; }
    """

    def __init__(self, targets: Iterable[tuple[str, int, int]] = (), *,
                 hints: FormHints | None = None, id: str | None = None) -> None:
        super().__init__(id=id)
        self._initial = [(ip, str(port), str(w)) for ip, port, w in targets]
        self.hints = hints or FormHints()

    def compose(self) -> ComposeResult:
        yield Static("target ip                 port      weight  (0 drains)", id="t-head")
        with Vertical(id="t-rows"):
            for ip, port, w in self._initial or [("", "", "100")]:
                yield TargetRow(ip, port, w, self.hints)
        with Horizontal(id="t-foot"):
            yield Static("", id="t-sum")
            yield Button("add target", id="t-add", compact=True)

    def on_mount(self) -> None:
        self.update_sum()

    @property
    def rows(self) -> list[TargetRow]:
        return list(self.query(TargetRow))

    def add_row(self, ip: str = "", port: str = "", weight: str = "0") -> TargetRow:
        row = TargetRow(ip, port, weight, self.hints)
        self.query_one("#t-rows", Vertical).mount(row)
        self.call_after_refresh(self.update_sum)
        return row

    @on(Button.Pressed, "#t-add")
    def _add(self, event: Button.Pressed) -> None:
        event.stop()
        if len(self.rows) >= abi.MAX_TARGETS:
            self.notify(f"a group has at most {abi.MAX_TARGETS} targets", severity="warning")
            return
        row = self.add_row()
        self.call_after_refresh(row.ip_input.focus)

    @on(Button.Pressed, ".t-remove")
    def _remove(self, event: Button.Pressed) -> None:
        event.stop()
        row = next(a for a in event.button.ancestors if isinstance(a, TargetRow))
        if len(self.rows) <= 1:
            self.notify("a group needs at least one target", severity="warning")
            return
        row.remove()
        self.call_after_refresh(self.update_sum)

    @on(Input.Changed, ".t-weight")
    def _weight_changed(self, _event: Input.Changed) -> None:
        self.update_sum()

    def weight_sum(self) -> int | None:
        total = 0
        for r in self.rows:
            v = r.weight_input.value.strip()
            if not v.isdigit():
                return None
            total += int(v)
        return total

    def update_sum(self) -> None:
        s = self.weight_sum()
        label = self.query_one("#t-sum", Static)
        if s is None:
            text, good = "sum of weights: ? (a weight is not a number)", False
        elif s == TOTAL_WEIGHT:
            text, good = f"sum of weights: {s} ✓", True
        else:
            text, good = f"sum of weights: {s}, must be {TOTAL_WEIGHT}", False
        label.update(text)
        label.set_class(good, "good")
        label.set_class(not good, "bad")

    def read(self) -> TargetGroup:
        """Validate every row and the group; Invalid with the reasons shown."""
        values, bad = [], False
        for r in self.rows:
            try:
                values.append(r.read())
            except Invalid:
                bad = True
        if bad:
            raise Invalid("fix the targets marked above")
        try:
            return TargetGroup.of(values)
        except ValueError as e:
            msg = str(e)
            m = _TARGET_INDEX.match(msg)
            if m and int(m.group(1)) < len(self.rows):
                self.rows[int(m.group(1))].show_error(msg)
            raise Invalid(msg) from None
