"""Targets: one row per (group, target): configured weight against the actual share of the
group's new connections, the target's health in that group (judged from its traffic:
unanswered SYNs, resets, timeouts, failed connects), the active checks' verdict (in or
out of rotation), and the traffic that group sent it; from a target to its connections."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from textual.binding import Binding, BindingType

from lbtui.console.data import fmt
from lbtui.console.data.groups import Group
from lbtui.console.data.hub import DEGRADED, FAILING
from lbtui.console.data.snapshot import Snapshot
from lbtui.console.data.tables import (
    ALL_NODES,
    UNREACHABLE,
    TargetRow,
    cluster_target_rows,
    relabel,
    target_rows,
)
from lbtui.console.messages import TargetRequested
from lbtui.console.views.base import LIST_BINDINGS, ListView
from lbtui.console.widgets.linetable import LineTable, TableColumn

SPARK_WIDTH = 20


def _weight(r: TargetRow, _c: object) -> str:
    return "-" if r.weight is None else "drained" if r.weight == 0 else str(r.weight)


def _num(name: str, width: int, text: Any, value: Any, field: str, drop: int = 0
         ) -> TableColumn:
    return TableColumn(name, width, lambda r, _c: text(r.traffic), right=True, field=field,
                       drop=drop, value=lambda r, _c: value(r.traffic))


def _health(name: str, width: int, field: str, drop: int) -> TableColumn:
    """A count from the hub's account of this (group, target); "-" without one."""
    def value(r: TargetRow, _c: object) -> int | None:
        return getattr(r.health, field) if r.health is not None else None

    return TableColumn(name, width, lambda r, c: "-" if (v := value(r, c)) is None
                       else fmt.count(v), right=True, field=field, drop=drop, value=value)


TARGET_COLUMNS = [
    TableColumn("group", 20, lambda r, _c: r.label if r.first else "",
                value=lambda r, _c: r.label),
    TableColumn("target", 21, lambda r, _c: r.target),
    TableColumn("weight", 7, _weight, right=True, search=True,
                value=lambda r, _c: r.weight),
    TableColumn("health", 8, lambda r, _c: r.state, field="state"),
    TableColumn("check", 5, lambda r, _c: r.rotation, field="rotation", drop=2),
    TableColumn("share 1m", 8, lambda r, _c: r.share, right=True, field="share"),
    TableColumn("active", 7, lambda r, _c: fmt.count(r.active), right=True, drop=2,
                value=lambda r, _c: r.active),
    TableColumn("new/s", 6, lambda r, _c: fmt.rate(r.new_per_s), right=True,
                field="new_per_s", drop=3, value=lambda r, _c: round(r.new_per_s, 2)),
    _health("unansw", 6, "unanswered", 3),
    _health("resets", 6, "resets", 3),
    _health("timeo", 5, "timeouts", 4),
    _health("connf", 5, "connect_failed", 4),
    _num("pkt/s →", 8, lambda t: fmt.rate(t.pps_fwd), lambda t: round(t.pps_fwd, 1),
         "pps_fwd", drop=6),
    _num("pkt/s ←", 8, lambda t: fmt.rate(t.pps_rev), lambda t: round(t.pps_rev, 1),
         "pps_rev", drop=6),
    _num("B/s →", 11, lambda t: fmt.rate_bytes(t.bps_fwd), lambda t: round(t.bps_fwd),
         "bps_fwd", drop=5),
    _num("B/s ←", 11, lambda t: fmt.rate_bytes(t.bps_rev), lambda t: round(t.bps_rev),
         "bps_rev", drop=5),
    _num("total", 10, lambda t: fmt.size(t.total_bytes), lambda t: t.total_bytes,
         "total_bytes", drop=7),
    TableColumn("bytes/s, last minute", SPARK_WIDTH,
                lambda r, ctx: r.traffic.sparkline(ctx, SPARK_WIDTH), style="green",
                field="sparkline", drop=4, export=False),
]


def target_class(r: TargetRow) -> str | None:
    """Failing, out of rotation or on an unreachable node: red; degraded or drained:
    yellow; in no route: dim."""
    if r.state in (FAILING, UNREACHABLE) or r.rotation == "OUT":
        return "bad"
    if r.state == DEGRADED or r.weight == 0:
        return "warn"
    return "dim" if r.group is None else None


class TargetsView(ListView):
    NAME = "targets"
    FIELDS: ClassVar[Sequence[str]] = ("group", "target", "weight", "state", "rotation")
    ALIASES: ClassVar[dict[str, str]] = {"backend": "target", "health": "state",
                                         "check": "rotation"}
    EXAMPLE = "group:sni !weight:0  !state:healthy"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("d", "drain", "Drain", id="targets.drain"),
        Binding("w", "weights", "Weights", id="targets.weights"),
        Binding("c,enter", "connections", "Its conns", id="targets.connections"),
        *LIST_BINDINGS,
    ]

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.groups: list[Group] = []
        self.rows: list[TargetRow] = []
        self._now_ns = 0
        self._sampled = False
        self._hub_note = ""
        self._notes: list[str] = []

    COLUMNS: ClassVar[list[TableColumn]] = TARGET_COLUMNS

    def make_table(self) -> LineTable:
        return LineTable(self.COLUMNS, key=self.row_key, row_class=target_class,
                         id="targets-table")

    @staticmethod
    def row_key(r: TargetRow) -> Any:
        return r.ref

    def rows_of(self, snap: Snapshot, groups: list[Group]) -> list[TargetRow]:
        return target_rows(snap, groups)

    def notes(self, snap: Snapshot) -> list[str]:
        """What the title adds about where the figures come from."""
        return []

    def on_mount(self) -> None:
        self._render_rows()

    def show(self, snap: Snapshot, groups: list[Group]) -> None:
        self.groups = groups
        self.rows = self.rows_of(snap, groups)
        self._now_ns = snap.now_ns
        self._sampled = snap.conns.sampled
        hub = snap.hub
        self._hub_note = "" if hub.connected or not hub.problem else \
            "[yellow]no event stream: health unknown[/]"
        self._notes = self.notes(snap)
        self._render_rows()

    def refilter(self) -> None:
        self._render_rows()

    def _render_rows(self) -> None:
        rows = relabel(self.filtered(self.rows, self.COLUMNS, self._now_ns))
        self.table.set_rows(rows, self._now_ns)
        note = "  [yellow](from a sample of the flows)[/]" if self._sampled else ""
        bad = sum(r.state == FAILING or r.rotation == "OUT" for r in self.rows
                  if r.node in (None, ALL_NODES))     # a cluster's totals, not its nodes
        alarm = f"[b red]{bad} failing or out[/]" if bad else ""
        self.title(f"[b]Targets[/b]  per group: weight vs share of new connections (last "
                   f"minute), health, checks, traffic{note}", alarm, self._hub_note,
                   *self._notes)

    def _request(self, action: str) -> None:
        row = self.table.selected
        if row is None:
            self.notify("no target selected", severity="warning")
            return
        if row.group is None and action != "connections":
            self.notify(f"{row.target} is in no route: nothing to {action}",
                        severity="warning")
            return
        self.post_message(TargetRequested(action, row.group, row.target))

    def action_drain(self) -> None:
        self._request("drain")

    def action_weights(self) -> None:
        self._request("weights")

    def action_connections(self) -> None:
        self._request("connections")


NODE_COLUMN = TableColumn("node", 8, lambda r, _c: r.node or "", value=lambda r, _c: r.node)


class ClusterTargetsView(TargetsView):
    """Targets of a cluster: the totals of every (group, target) (node ``all``) and a row
    per node under it; ``node:node2`` in the filter keeps one node's rows."""

    FIELDS: ClassVar[Sequence[str]] = ("group", "target", "node", "weight", "state",
                                       "rotation")
    EXAMPLE = "node:all  !weight:0"
    COLUMNS: ClassVar[list[TableColumn]] = [*TARGET_COLUMNS[:2], NODE_COLUMN,
                                            *TARGET_COLUMNS[2:]]

    @staticmethod
    def row_key(r: TargetRow) -> Any:
        return (*r.ref, r.node or "")

    def rows_of(self, snap: Snapshot, groups: list[Group]) -> list[TargetRow]:
        return cluster_target_rows(snap, groups)

    def notes(self, snap: Snapshot) -> list[str]:
        down = [n.name for n in snap.nodes if not n.reachable]
        up = [n.name for n in snap.nodes if n.reachable]
        out = []
        if down:
            out.append(f"[b red]{', '.join(down)} unreachable[/]: totals are "
                       f"{', '.join(up)}'s")
        if snap.drift:
            out.append(f"[yellow]routes differ on {', '.join(snap.drift)}[/]")
        return out
