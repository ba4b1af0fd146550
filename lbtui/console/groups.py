"""The editable target groups of a snapshot, named by the Controller's typed keys."""

from __future__ import annotations

from dataclasses import dataclass

from lbtui.console.snapshot import Snapshot
from lbtui.model import GroupKey, GroupKind
from lbtui.targets import RouteRecord, TargetGroup


@dataclass(frozen=True)
class Group:
    key: GroupKey
    route: RouteRecord
    detail: str = ""     # protocol/interfaces of a listener

    @property
    def kind(self) -> GroupKind:
        return self.key.kind

    @property
    def label(self) -> str:
        return self.key.label

    @property
    def group(self) -> TargetGroup:
        return self.route.group

    @property
    def ref(self) -> str:
        """A stable string id (DataTable row keys, command ids)."""
        return f"{self.key.kind}|{self.key.key}"


def _sni_key(hostname: str | None, hostname_hash: int) -> GroupKey:
    """An SNI route's key; one whose name this process does not know (added elsewhere
    before the names file was read) is shown by its hash."""
    if hostname:
        return GroupKey.of(GroupKind.SNI, hostname)
    return GroupKey(GroupKind.SNI, f"#{hostname_hash:016x}")


def groups_of(s: Snapshot) -> list[Group]:
    out = [Group(GroupKey(GroupKind.LISTENER, lr.port), lr.route,
                 f"{lr.protocol} on {','.join(lr.interfaces)}"
                 + (" sni" if lr.sni else "") + ("" if lr.stats else " nostats"))
           for lr in s.listeners]
    out += [Group(GroupKey.of(GroupKind.SOURCE, sr.cidr), sr.route) for sr in s.source_routes]
    out += [Group(_sni_key(sn.hostname, sn.hostname_hash), sn.route) for sn in s.sni_routes]
    return out


def find_group(groups: list[Group], ref: str) -> Group | None:
    return next((g for g in groups if g.ref == ref), None)
