"""Targets: configured weight against the actual share of new connections, and traffic."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Static

from lbtui.console.data import fmt
from lbtui.console.data.groups import Group, find_group
from lbtui.console.data.snapshot import Snapshot
from lbtui.console.data.traffic import TargetTraffic
from lbtui.console.views.routes import keep_cursor

SPARK_WIDTH = 20
# Right-aligned columns and their widths (DataTable aligns cells left).
NUMERIC = (("weight", 7), ("share 1m", 8), ("active", 7), ("new/s", 6), ("pkt/s →", 8),
           ("pkt/s ←", 8), ("B/s →", 11), ("B/s ←", 11), ("total", 10))
UNROUTED = "(not in any route)"


class TargetsView(Vertical):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("d", "drain", "Drain", id="targets.drain"),
        Binding("w", "weights", "Weights", id="targets.weights"),
    ]
    DEFAULT_CSS = """
    TargetsView > #targets-title { height: 1; padding: 0 1; background: $boost; }
    TargetsView > DataTable { height: 1fr; }
    """

    class Requested(Message):
        def __init__(self, action: str, group: Group, target: str | None) -> None:
            self.action = action
            self.group = group
            self.target = target
            super().__init__()

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.groups: list[Group] = []

    def compose(self) -> ComposeResult:
        yield Static("[b]Targets[/b]", id="targets-title")
        t: DataTable = DataTable(id="targets-table", cursor_type="row", zebra_stripes=True)
        t.add_column("group", key="group")
        t.add_column("target", key="target")
        for name, width in NUMERIC:
            t.add_column(name.rjust(width), key=name)
        t.add_column("bytes/s, last minute", key="spark")
        yield t

    def show(self, snap: Snapshot, groups: list[Group]) -> None:
        self.groups = groups
        traffic = snap.targets
        rows = []
        routed: set[str] = set()
        for g in groups:
            members = [str(t) for t in g.route.targets]
            new_total = sum(traffic[m].new_last_minute for m in members if m in traffic)
            for i, t in enumerate(g.route.targets):
                name = str(t)
                routed.add(name)
                tr = traffic.get(name) or TargetTraffic(name)
                share = fmt.pct(tr.new_last_minute, new_total)
                rows.append((f"{g.ref}|{name}", _cells(
                    g.label if i == 0 else "", name, t.weight, share, tr, snap.now_ns)))
        for name, tr in sorted(traffic.items()):
            if name not in routed and tr.flows:
                rows.append((f"-|-|{name}", _cells(UNROUTED, name, None, "-", tr,
                                                     snap.now_ns)))
        keep_cursor(self.query_one(DataTable), rows)
        note = "  [yellow](from a sample of the flows)[/]" if snap.conns.sampled else ""
        self.query_one("#targets-title", Static).update(
            "[b]Targets[/b]  configured weight vs share of new connections in the last "
            f"minute; rates over the last refresh{note}")

    def _selected(self) -> tuple[Group, str] | None:
        t = self.query_one(DataTable)
        if not t.row_count:
            return None
        key = t.coordinate_to_cell_key(t.cursor_coordinate).row_key.value or ""
        kind, gkey, target = key.split("|", 2)
        g = find_group(self.groups, f"{kind}|{gkey}")
        return (g, target) if g else None

    def _request(self, action: str) -> None:
        sel = self._selected()
        if sel is None:
            self.notify("select a target of a route first", severity="warning")
            return
        self.post_message(self.Requested(action, sel[0], sel[1]))

    def action_drain(self) -> None:
        self._request("drain")

    def action_weights(self) -> None:
        self._request("weights")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self._request("weights")


def _cells(group: str, name: str, weight: int | None, share: str, tr: TargetTraffic,
           now_ns: int) -> tuple:
    w = "-" if weight is None else str(weight)
    values = (w, share, fmt.count(tr.active), fmt.rate(tr.new_per_s), fmt.rate(tr.pps_fwd),
              fmt.rate(tr.pps_rev), fmt.rate_bytes(tr.bps_fwd), fmt.rate_bytes(tr.bps_rev),
              fmt.size(tr.total_bytes))
    cells = [Text(v.rjust(width)) for v, (_n, width) in zip(values, NUMERIC, strict=True)]
    if weight == 0:
        cells[0] = Text(f"{'drained':>{NUMERIC[0][1]}}", style="yellow")
    return (group, name, *cells, Text(tr.sparkline(now_ns, SPARK_WIDTH), style="green"))
