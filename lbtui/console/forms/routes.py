"""Route forms: a group's weights, SNI routes, source routes, listeners."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Checkbox, Input, Select, Static

from lbtui.console.data.hints import FormHints
from lbtui.console.forms import fields as F
from lbtui.console.forms.base import FormScreen, Invalid, field_row, field_value
from lbtui.console.forms.targets_editor import TargetsEditor
from lbtui.targets import TargetGroup

Targets = Sequence[tuple[str, int, int]]


def _targets(group: TargetGroup | None) -> list[tuple[str, int, int]]:
    return [(t.ip, t.port, t.weight) for t in group.targets] if group else []


class WeightsForm(FormScreen):
    """Weights of one group; applies a whole, valid TargetGroup."""

    def __init__(self, label: str, group: TargetGroup,
                 apply: Callable[[TargetGroup], object], hints: FormHints | None = None
                 ) -> None:
        super().__init__(f"Weights of {label}", apply)
        self.group = group
        self.hints = hints or FormHints()

    def fields(self) -> ComposeResult:
        yield TargetsEditor(_targets(self.group), hints=self.hints, id="targets")

    @property
    def editor(self) -> TargetsEditor:
        return self.query_one("#targets", TargetsEditor)

    def collect(self) -> TargetGroup:
        return self.editor.read()


@dataclass(frozen=True)
class NamedGroup:
    """What the SNI and source-route forms apply: a name (hostname or CIDR), its group,
    and the name it had before (None when adding)."""

    name: str
    group: TargetGroup
    old_name: str | None


class SniRouteForm(FormScreen):
    def __init__(self, apply: Callable[[NamedGroup], object], hostname: str | None = None,
                 group: TargetGroup | None = None, hints: FormHints | None = None) -> None:
        super().__init__(f"SNI route {hostname}" if hostname else "New SNI route", apply)
        self.hostname = hostname
        self.group = group
        self.hints = hints or FormHints()

    def fields(self) -> ComposeResult:
        yield from field_row("hostname", Input(
            self.hostname or "", placeholder=self.hints.hostname, id="hostname",
            compact=True, validators=[F.HOSTNAME]), "hostname-error")
        yield TargetsEditor(_targets(self.group), hints=self.hints, id="targets")

    def collect(self) -> NamedGroup:
        bad = False
        try:
            name = field_value(self.query_one("#hostname", Input),
                               self.query_one("#hostname-error", Static), F.hostname)
        except Invalid:
            bad = True
        try:
            group = self.query_one("#targets", TargetsEditor).read()
        except Invalid:
            if bad:
                raise Invalid("fix the fields marked above") from None
            raise
        if bad:
            raise Invalid()
        return NamedGroup(name, group, self.hostname)


class SourceRouteForm(FormScreen):
    def __init__(self, apply: Callable[[NamedGroup], object], cidr: str | None = None,
                 group: TargetGroup | None = None, hints: FormHints | None = None) -> None:
        super().__init__(f"Source route {cidr}" if cidr else "New source route", apply)
        self.cidr = cidr
        self.group = group
        self.hints = hints or FormHints()

    def fields(self) -> ComposeResult:
        yield from field_row("client CIDR", Input(
            self.cidr or "", placeholder=self.hints.cidr, id="cidr", compact=True,
            validators=[F.CIDR]), "cidr-error")
        yield TargetsEditor(_targets(self.group), hints=self.hints, id="targets")

    def collect(self) -> NamedGroup:
        bad = False
        try:
            cidr = field_value(self.query_one("#cidr", Input),
                               self.query_one("#cidr-error", Static), F.cidr)
        except Invalid:
            bad = True
        group = self.query_one("#targets", TargetsEditor).read()
        if bad:
            raise Invalid()
        return NamedGroup(cidr, group, self.cidr)


@dataclass(frozen=True)
class ListenerSpec:
    port: int
    protocol: str
    interfaces: list[str] | None
    stats: bool
    sni: bool
    group: TargetGroup
    old_port: int | None


class ListenerForm(FormScreen):
    def __init__(self, apply: Callable[[ListenerSpec], object], *, port: int | None = None,
                 protocol: str = "both", interfaces: list[str] | None = None,
                 stats: bool = True, sni: bool = False, group: TargetGroup | None = None,
                 hints: FormHints | None = None) -> None:
        super().__init__(f"Listener :{port}" if port else "New listener", apply)
        self.port = port
        self.protocol = protocol
        self.interfaces = interfaces
        self.stats = stats
        self.sni = sni
        self.group = group
        self.hints = hints or FormHints()
        self.default_interfaces = list(self.hints.interfaces)

    def fields(self) -> ComposeResult:
        yield from field_row("port", Input(str(self.port or ""), placeholder=self.hints.port,
                                        id="port", compact=True, validators=[F.PORT]),
                          "port-error")
        with Horizontal(classes="field"):
            yield Static("protocol", classes="label")
            yield Select([(p, p) for p in ("both", "tcp", "udp")], value=self.protocol,
                         allow_blank=False, id="protocol", compact=True)
        default = ",".join(self.default_interfaces) or "the datapath's"
        yield from field_row("interfaces", Input(
            ",".join(self.interfaces or []), placeholder=f"empty: {default}",
            id="interfaces", compact=True, validators=[F.INTERFACES]), "interfaces-error")
        with Horizontal(classes="field"):
            yield Static("", classes="label")
            yield Checkbox("stats events", self.stats, id="stats")
            yield Checkbox("SNI (TLS routed by hostname)", self.sni, id="sni")
        yield TargetsEditor(_targets(self.group), hints=self.hints, id="targets")

    def collect(self) -> ListenerSpec:
        bad = False
        values = {}
        for name, parse in (("port", F.port), ("interfaces", F.interfaces)):
            try:
                values[name] = field_value(self.query_one(f"#{name}", Input),
                                           self.query_one(f"#{name}-error", Static), parse)
            except Invalid:
                bad = True
        group = self.query_one("#targets", TargetsEditor).read()
        if bad:
            raise Invalid()
        return ListenerSpec(values["port"], str(self.query_one("#protocol", Select).value),
                            values["interfaces"], self.query_one("#stats", Checkbox).value,
                            self.query_one("#sni", Checkbox).value, group, self.port)


class TimeoutForm(FormScreen):
    def __init__(self, seconds: int, apply: Callable[[int], object]) -> None:
        super().__init__("Connection timeout", apply)
        self.seconds = seconds

    def fields(self) -> ComposeResult:
        yield Static("Flows idle for longer than this are removed (and reported as aged). "
                     "0 disables ageing.")
        yield from field_row("seconds", Input(str(self.seconds), id="seconds", compact=True,
                                           validators=[F.SECONDS]), "seconds-error")

    def collect(self) -> int:
        return int(field_value(self.query_one("#seconds", Input),
                               self.query_one("#seconds-error", Static), F.seconds))
