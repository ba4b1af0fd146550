"""The rows of the Routes and Targets tables: one per (group, target), built from a
snapshot and its groups. ``first`` marks the row that names its group (the others leave
the group columns blank); ``relabel`` sets it again after a filter removed rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from lbtui.console.data import fmt
from lbtui.console.data.groups import Group
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
    """A target of a group with its traffic; ``group`` None for a target that has flows
    but no route names any more."""

    group: Group | None
    target: str
    weight: int | None
    share: str                 # of the group's new connections in the last minute
    traffic: TargetTraffic
    first: bool = True

    @property
    def ref(self) -> tuple[str, str]:
        return self.group.ref if self.group else "-", self.target

    @property
    def label(self) -> str:
        return self.group.label if self.group else UNROUTED


Row = TypeVar("Row", RouteRow, TargetRow)


def route_rows(groups: Sequence[Group]) -> list[RouteRow]:
    return [RouteRow(g, t, i == 0) for g in groups for i, t in enumerate(g.route.targets)]


def traffic_of(snap: Snapshot, group: Group | None, target: str) -> TargetTraffic:
    """A target's traffic as the snapshot accounts it."""
    return snap.targets.get(target) or TargetTraffic(target)


def target_rows(snap: Snapshot, groups: Sequence[Group]) -> list[TargetRow]:
    """Every group's targets, with the share each had of the group's new connections in
    the last minute; then targets with flows that no route names."""
    rows = []
    routed: set[str] = set()
    for g in groups:
        members = [(t, traffic_of(snap, g, str(t))) for t in g.route.targets]
        new_total = sum(tr.new_last_minute for _, tr in members)
        for i, (t, tr) in enumerate(members):
            routed.add(str(t))
            rows.append(TargetRow(g, str(t), t.weight, fmt.pct(tr.new_last_minute,
                                                                 new_total), tr, i == 0))
    for name, tr in sorted(snap.targets.items()):
        if name not in routed and tr.flows:
            rows.append(TargetRow(None, name, None, "-", tr))
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
