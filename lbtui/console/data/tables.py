"""The rows of the Routes and Targets tables: one per (group, target), built from a
snapshot and its groups. ``first`` marks the row that names its group (the others leave
the group columns blank); ``relabel`` sets it again after a filter removed rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from lbtui.console.data import fmt
from lbtui.console.data.groups import Group
from lbtui.console.data.hub import CheckState, GroupNew, TargetHealth
from lbtui.console.data.snapshot import Snapshot
from lbtui.console.data.traffic import TargetTraffic
from lbtui.targets import TargetSpec

UNROUTED = "(not in any route)"


@dataclass(frozen=True)
class RouteRow:
    group: Group
    target: TargetSpec
    first: bool = True

    @property
    def ref(self) -> tuple[str, str]:
        return self.group.ref, str(self.target)


@dataclass(frozen=True)
class TargetRow:
    """A target of a group with the traffic that group sent it; ``group`` None for a
    target that has flows but no route names any more. ``health`` is this group's account
    of it (the hub's, None without one), ``check`` the active checks' verdict on the
    address, ``new`` its new connections in this group as the hub counts them (None: from
    conntrack only)."""

    group: Group | None
    target: str
    weight: int | None
    share: str                 # of the group's new connections in the last minute
    traffic: TargetTraffic
    first: bool = True
    health: TargetHealth | None = None
    check: CheckState | None = None
    new: GroupNew | None = None
    node: str | None = None     # a cluster's: the node (ALL_NODES: the totals)
    note: str = ""              # instead of the health state (an unreachable node)

    @property
    def state(self) -> str:
        if self.note:
            return self.note
        return self.health.state if self.health else "-"

    @property
    def rotation(self) -> str:
        """in / OUT of rotation (active checks), or "-" when the address is not checked."""
        if self.check is None:
            return "-"
        return "in" if self.check.in_rotation else "OUT"

    @property
    def new_per_s(self) -> float:
        return self.new.per_s if self.new is not None else self.traffic.new_per_s

    @property
    def active(self) -> int:
        return self.traffic.active

    @property
    def ref(self) -> tuple[str, str]:
        return self.group.ref if self.group else "-", self.target

    @property
    def label(self) -> str:
        return self.group.label if self.group else UNROUTED


ALL_NODES = "all"
UNREACHABLE = "unreach"


Row = TypeVar("Row", RouteRow, TargetRow)


def route_rows(groups: Sequence[Group]) -> list[RouteRow]:
    return [RouteRow(g, t, i == 0) for g in groups for i, t in enumerate(g.route.targets)]


def traffic_of(snap: Snapshot, group: Group | None, target: str) -> TargetTraffic:
    """A target's traffic in ``group`` (the flows that group sent it), or all of the
    address's when there is no group."""
    if group is None:
        return snap.targets.get(target) or TargetTraffic(target)
    return snap.group_traffic.get((group.key, target)) or TargetTraffic(target)


def target_rows(snap: Snapshot, groups: Sequence[Group]) -> list[TargetRow]:
    """One row per (group, target), with the share each had of its group's new
    connections in the last minute (counted per group when the hub reports, so a target
    two listeners share has a row, a share and health under each); then targets with
    flows that no route names."""
    rows = []
    routed: set[str] = set()
    hub = snap.hub
    health = {h.ref: h for h in hub.health}
    for g in groups:
        members = []
        for t in g.route.targets:
            name = str(t)
            new = snap.group_new.get((g.key, name))
            if new is None and snap.group_new:
                new = GroupNew()       # the hub reports, but nothing of this pair yet
            members.append((t, name, traffic_of(snap, g, name), new))
        # The hub's per-group counts when it saw new connections of this group in the
        # last minute; else conntrack's, per address (no hub, or nothing new).
        counts = [new.last_minute if new else 0 for *_, new in members]
        if not sum(counts):
            counts = [tr.new_last_minute for _, _, tr, _ in members]
        total = sum(counts)
        for i, ((t, name, tr, new), n) in enumerate(zip(members, counts, strict=True)):
            routed.add(name)
            rows.append(TargetRow(g, name, t.weight, fmt.pct(n, total), tr, i == 0,
                                  health.get((g.key, name)), hub.checks.get(name), new))
    for name, tr in sorted(snap.targets.items()):
        if name not in routed and tr.flows:
            rows.append(TargetRow(None, name, None, "-", tr, check=hub.checks.get(name)))
    return rows


def relabel(rows: Sequence[Row]) -> list[Row]:
    """``rows`` with ``first`` on the first row of each group among them."""
    out, last = [], None
    for r in rows:
        ref = r.ref[0]
        first = ref != last
        out.append(r if r.first == first else replace(r, first=first))
        last = ref
    return out


def cluster_target_rows(snap: Snapshot, groups: Sequence[Group]) -> list[TargetRow]:
    """A cluster's Targets: each (group, target) row of the totals (node ``all``), then
    one row per node with that node's own figures, health and share; an unreachable
    node's rows say so instead of showing zeros as if it were idle."""
    per_node = {name: {r.ref: r for r in target_rows(ns, groups)}
                for name, ns in snap.node_snaps.items()}
    out = []
    for t in target_rows(snap, groups):
        out.append(replace(t, node=ALL_NODES))
        for st in snap.nodes:
            r = per_node.get(st.name, {}).get(t.ref)
            if r is not None:
                out.append(replace(r, first=False, node=st.name))
            else:
                out.append(TargetRow(t.group, t.target, t.weight, "-",
                                     TargetTraffic(t.target), False, node=st.name,
                                     note="" if st.reachable else UNREACHABLE))
    return out
