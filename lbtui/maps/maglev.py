"""The maglev map: Maglev lookup tables of the groups with ``hash = "maglev"``.

Layout (lb_abi.h): an ARRAY of tables, ``table_size`` bytes each (slot -> index into the
route's targets); group g owns tables 2g and 2g+1 and its routes name one of them. A
table a route names is never written. ``TablePlanner`` decides, for each Maglev group of a
desired state, which table its routes name: the current one when its content is already
right, else the group's other table, which the transaction writes before the routes that
switch to it (tables come first in ``transaction.MAP_NAMES``). Switching is one route
update per entry, atomic for the datapath: a flow sees the old table with the old targets
or the new table with the new targets, never a half-written table.
"""

from __future__ import annotations

import ctypes as ct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lbtui import abi, bpfsys
from lbtui.addr import be_to_ip, be_to_port
from lbtui.maglev import build_table
from lbtui.model import GroupKey, GroupKind
from lbtui.sni import hostname_hash
from lbtui.targets import TargetGroup, TargetSpec

if TYPE_CHECKING:
    from lbtui.maps.mapset import BpfMap
    from lbtui.maps.transaction import Entries

# What identifies a group across edits: its kind and canonical key (a listener's entries
# on every interface share its table).
GroupId = tuple[str, str]


def table_size(maglev_map: BpfMap) -> int:
    """Slots per table of this map (its value size: one byte per slot)."""
    return ct.sizeof(maglev_map.value_type)


def group_capacity(maglev_map: BpfMap) -> int:
    return maglev_map.max_entries // 2


def read_table(maglev_map: BpfMap, index: int) -> bytes | None:
    v = bpfsys.lookup(maglev_map._require_open(), ct.c_uint32(index), maglev_map.value_type)
    return bytes(v) if v is not None else None


def table_entry(maglev_map: BpfMap, index: int, content: bytes
                ) -> tuple[ct.c_uint32, ct.Structure]:
    """(key, value) of one table, for a transaction."""
    if len(content) != table_size(maglev_map):
        raise ValueError(f"a table of {len(content)} slots for a map of "
                         f"{table_size(maglev_map)}-slot tables")
    return ct.c_uint32(index), maglev_map.value_type.from_buffer_copy(content)


def pick_target(maglev_map: BpfMap, table: int, targets: tuple[TargetSpec, ...],
                fhash: int) -> TargetSpec | None:
    """The target table ``table`` gives flow hash ``fhash`` (what the datapath's
    lb_pick_maglev picks; the SNI splicer picks with it). None: no target has weight."""
    content = read_table(maglev_map, table)
    if content is None:
        return None
    i = content[fhash % len(content)]
    return targets[i] if i < len(targets) else None


def groups_in_use(*route_maps: BpfMap) -> int:
    """Maglev groups the routes in ``route_maps`` (listen, config, sni) use now."""
    pairs = set()
    for m in route_maps:
        fd = m._require_open()
        for k in bpfsys.keys(fd, m.key_type):
            v = bpfsys.lookup(fd, k, abi.Route)
            if v is not None and v.flags & abi.ROUTE_F_MAGLEV:
                pairs.add(v.table // 2)
    return len(pairs)


def group_id(key: GroupKey) -> GroupId:
    """The identity of the group ``key`` names (SNI: by hostname hash, as the map is)."""
    if key.kind is GroupKind.SNI:
        return ("sni", f"{hostname_hash(str(key.key)):016x}")
    return (key.kind.value, str(key.key))


def _route_group_id(map_name: str, key: ct._CData) -> GroupId:
    """The identity of the group a route entry under ``key`` belongs to."""
    if map_name == "listen":
        return ("listener", str(be_to_port(key.port)))   # type: ignore[attr-defined]
    if map_name == "config":
        return ("source", f"{be_to_ip(key.ip)}/{key.prefixlen}")  # type: ignore[attr-defined]
    return ("sni", f"{key.value:016x}")                  # type: ignore[attr-defined]


@dataclass
class TablePlanner:
    """Chooses the tables of a desired state's Maglev groups (see the module docstring)."""

    maglev_map: BpfMap
    current: dict[GroupId, set[int]] = field(default_factory=dict)  # tables routes name now
    chosen: dict[GroupId, int] = field(default_factory=dict)
    writes: dict[int, bytes] = field(default_factory=dict)
    staying: set[GroupId] | None = None    # the Maglev groups of the desired state

    @classmethod
    def of(cls, maglev_map: BpfMap, current: Entries,
           staying: set[GroupId] | None = None) -> TablePlanner:
        """A planner over the route entries the maps hold now (``current_entries``).
        ``staying``: every Maglev group of the desired state, if known; then a change that
        removes one group and adds another can reuse the leaving group's spare table when
        the map is otherwise full."""
        p = cls(maglev_map, staying=staying)
        for name in ("listen", "config", "sni"):
            for e in current[name].values():
                if e.value.flags & abi.ROUTE_F_MAGLEV:
                    p.current.setdefault(_route_group_id(name, e.key), set()).add(
                        e.value.table)
        return p

    def table_for(self, gid: GroupId, group: TargetGroup) -> int:
        """The table index the routes of group ``gid`` name once the desired state is
        applied; records the table to write if it must change."""
        if gid in self.chosen:
            return self.chosen[gid]
        content = build_table(group.targets, table_size(self.maglev_map))
        named = self.current.get(gid, set())
        for t in sorted(named):
            if read_table(self.maglev_map, t) == content:
                return self._choose(gid, t)
        pairs = {t // 2 for t in named}
        spare = [t ^ 1 for t in sorted(named) if t ^ 1 not in named]
        if len(pairs) == 1 and spare:
            return self._choose(gid, spare[0], content)
        return self._choose(gid, self._free_table(gid), content)

    def _choose(self, gid: GroupId, table: int, content: bytes | None = None) -> int:
        self.chosen[gid] = table
        if content is not None:
            self.writes[table] = content
        return table

    def _free_table(self, gid: GroupId) -> int:
        """The first table of a pair no route names now and no other group of the
        desired state uses. When there is none: the spare table of a group this change
        removes (its routes name the other table until they are deleted, after the new
        table is written)."""
        busy = {t // 2 for ts in self.current.values() for t in ts}
        busy |= {t // 2 for t in self.chosen.values()}
        cap = group_capacity(self.maglev_map)
        free = next((2 * p for p in range(cap) if p not in busy), None)
        if free is None and self.staying is not None:
            taken = {t // 2 for t in self.chosen.values()}
            free = next((t ^ 1 for g, ts in sorted(self.current.items())
                         if g not in self.staying and len(ts) == 1
                         for t in ts if t // 2 not in taken), None)
        if free is None:
            raise ValueError(
                f"{gid[0]} group: no free Maglev table (the maglev map holds {cap} groups, "
                "settings.max_maglev_groups, all in use); use hash = \"weighted\" for a "
                "group, or raise max_maglev_groups and restart (`lbtui down`, then serve)")
        return free

    def entries(self) -> list[tuple[ct.c_uint32, ct.Structure]]:
        """The tables to write, for the transaction's maglev map."""
        return [table_entry(self.maglev_map, i, c) for i, c in sorted(self.writes.items())]
