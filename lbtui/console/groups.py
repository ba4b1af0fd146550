"""The editable target groups of a snapshot, named the way the Controller names them."""

from __future__ import annotations

from dataclasses import dataclass

from lbtui.console.snapshot import Snapshot
from lbtui.targets import RouteRecord, TargetGroup


@dataclass(frozen=True)
class Group:
    kind: str            # "listener" | "source" | "sni"
    key: int | str       # port | cidr | hostname
    route: RouteRecord
    detail: str = ""     # protocol/interfaces of a listener

    @property
    def label(self) -> str:
        if self.kind == "listener":
            return f"listener :{self.key}"
        if self.kind == "source":
            return f"source {self.key}"
        return f"SNI {self.key}"

    @property
    def group(self) -> TargetGroup:
        return self.route.group

    @property
    def ref(self) -> str:
        """A stable string id (DataTable row keys, command ids)."""
        return f"{self.kind}|{self.key}"


def groups_of(s: Snapshot) -> list[Group]:
    out = [Group("listener", lr.port, lr.route,
                 f"{lr.protocol} on {','.join(lr.interfaces)}"
                 + (" sni" if lr.sni else "") + ("" if lr.stats else " nostats"))
           for lr in s.listeners]
    out += [Group("source", sr.cidr, sr.route) for sr in s.source_routes]
    out += [Group("sni", sn.hostname or f"#{sn.hostname_hash:016x}", sn.route)
            for sn in s.sni_routes]
    return out


def find_group(groups: list[Group], ref: str) -> Group | None:
    return next((g for g in groups if g.ref == ref), None)
