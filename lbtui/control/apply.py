"""Make the maps hold exactly what a Config says, all or nothing.

``plan`` compares the entries a config wants (listen, source-route, SNI and settings maps)
with what the maps hold and returns the changes; ``Transaction`` applies them, remembering
each entry's previous value, and ``rollback`` restores them if any later step (another map
update, the config file write) fails. Puts go before deletes, so traffic moving from one
entry to another never meets a gap. Conntrack is never touched here.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lbtui import abi, bpfsys
from lbtui.addr import ip_to_be, parse_cidr, port_to_be
from lbtui.control.config import Config, ListenerCfg, group_of
from lbtui.maps import BpfMap, MapSet, SniNames, mark_ports, vip_key
from lbtui.sni import hostname_hash

IfindexOf = Callable[[Sequence[str]], list[int]]

PROTOCOL_FLAGS = {"tcp": abi.ROUTE_F_TCP, "udp": abi.ROUTE_F_UDP, "both": 0}


def listener_flags(lst: ListenerCfg) -> int:
    """A listener from a config file serves its own address, or (without one) the
    addresses local to the balancer's namespace, never traffic routed through to others."""
    served = abi.ROUTE_F_ADDRESS if lst.address else abi.ROUTE_F_LOCAL
    return ((abi.ROUTE_F_STATS if lst.stats else 0) | (abi.ROUTE_F_SNI if lst.sni else 0)
            | PROTOCOL_FLAGS[lst.protocol] | served)


@dataclass
class Entry:
    key: Any
    value: Any
    hostname: str | None = None   # SNI entries: the name behind the hash


# map name -> bytes(key) -> Entry
Entries = dict[str, dict[bytes, Entry]]
MAP_NAMES = ("listen", "config", "sni", "settings", "vips")


def desired_entries(config: Config, ifindex_of: IfindexOf) -> Entries:
    out: Entries = {name: {} for name in MAP_NAMES}
    for lst in config.listeners:
        route = group_of(lst.targets).to_route(listener_flags(lst))
        for ifindex in ifindex_of(config.listener_interfaces(lst)):
            k = abi.ListenKey(ifindex, port_to_be(lst.port), 0)
            out["listen"][bytes(k)] = Entry(k, route)
        if lst.address:
            vk = vip_key(lst.address, lst.port)
            out["vips"][bytes(vk)] = Entry(vk, ct.c_uint32(1))
    for src in config.source_routes:
        net = parse_cidr(src.cidr)
        k = abi.LpmKey(net.prefixlen, ip_to_be(net.network_address))
        route = group_of(src.targets).to_route(abi.ROUTE_F_STATS if src.stats else 0)
        out["config"][bytes(k)] = Entry(k, route)
    for sni in config.sni_routes:
        k = ct.c_uint64(hostname_hash(sni.hostname))
        out["sni"][bytes(k)] = Entry(k, group_of(sni.targets).to_route(abi.ROUTE_F_STATS),
                                     sni.hostname)
    st = config.settings
    for idx, val in ((abi.SETTING_STATS_ENABLED, int(st.stats)),
                     (abi.SETTING_CONN_TIMEOUT_S, st.connection_timeout)):
        k = ct.c_uint32(idx)
        out["settings"][bytes(k)] = Entry(k, ct.c_uint32(val))
    return out


def current_entries(maps: MapSet) -> Entries:
    out: Entries = {name: {} for name in MAP_NAMES}
    by_name = maps.by_pin_name()
    for name in ("listen", "config", "sni", "vips"):
        m = by_name[name]
        for k in bpfsys.keys(m.fd, m.key_type):
            v = bpfsys.lookup(m.fd, k, m.value_type)
            if v is not None:
                out[name][bytes(k)] = Entry(k, v)
    for idx in (abi.SETTING_STATS_ENABLED, abi.SETTING_CONN_TIMEOUT_S):
        k = ct.c_uint32(idx)
        v = bpfsys.lookup(maps.settings_map.fd, k, ct.c_uint32)
        out["settings"][bytes(k)] = Entry(k, v if v is not None else ct.c_uint32(0))
    return out


@dataclass
class Change:
    map: BpfMap
    key: Any
    value: Any | None          # None: delete
    hostname: str | None = None


def plan(maps: MapSet, desired: Entries, current: Entries | None = None) -> list[Change]:
    """The changes that turn ``current`` (default: read from the maps) into ``desired``."""
    cur = current if current is not None else current_entries(maps)
    _reload_sni_names(maps)
    by_name = maps.by_pin_name()
    puts: list[Change] = []
    deletes: list[Change] = []
    for name in MAP_NAMES:
        m = by_name[name]
        want, have = desired[name], cur[name]
        for kb, e in want.items():
            old = have.get(kb)
            if old is None or bytes(old.value) != bytes(e.value) or (
                    name == "sni" and _sni_name(maps, e.key) != e.hostname):
                puts.append(Change(m, e.key, e.value, e.hostname))
        if name != "settings":
            deletes.extend(Change(m, e.key, None) for kb, e in have.items() if kb not in want)
    return puts + deletes


def _reload_sni_names(maps: MapSet) -> None:
    """Another process (ctl, a console) may have changed the names file since we read it."""
    names = maps.sni_map.sni_names
    if names is not None and names.path is not None and names.path.exists():
        names.names = SniNames(names.path).names


def _sni_name(maps: MapSet, key: ct.c_uint64) -> str | None:
    names = maps.sni_map.sni_names
    return names.names.get(key.value) if names else None


class Transaction:
    """Applies changes one by one; ``rollback`` undoes every applied change."""

    def __init__(self) -> None:
        self._undo: list[tuple[BpfMap, Any, Any | None, str | None]] = []

    def apply(self, changes: Sequence[Change]) -> None:
        """Apply all, or (on the first failure) undo what was applied and re-raise."""
        try:
            with contextlib.ExitStack() as stack:
                for names in {id(n): n for c in changes if (n := c.map.sni_names)}.values():
                    stack.enter_context(names.deferred())
                for c in changes:
                    self._apply_one(c)
        except BaseException as e:
            try:
                self.rollback()
            except RuntimeError as r:
                raise RuntimeError(f"{e}; then {r}") from e
            raise

    def _apply_one(self, c: Change) -> None:
        prev = bpfsys.lookup(c.map.fd, c.key, c.map.value_type)
        names = c.map.sni_names
        prev_name = names.names.get(c.key.value) if names is not None else None
        if c.value is None:
            bpfsys.delete(c.map.fd, c.key)
        else:
            bpfsys.update(c.map.fd, c.key, c.value)
        self._undo.append((c.map, c.key, prev, prev_name))
        if names is not None:
            if c.value is None:
                names.drop(c.key.value)
            elif c.hostname:
                names.set(c.key.value, c.hostname)

    def rollback(self) -> None:
        errors = []
        while self._undo:
            m, key, prev, prev_name = self._undo.pop()
            try:
                if prev is None:
                    bpfsys.delete(m.fd, key)
                else:
                    bpfsys.update(m.fd, key, prev)
                if m.sni_names is not None:
                    if prev_name is None:
                        m.sni_names.drop(key.value)
                    else:
                        m.sni_names.set(key.value, prev_name)
            except OSError as e:  # keep undoing the rest; report at the end
                errors.append(str(e))
        if errors:
            raise RuntimeError("rollback incomplete: " + "; ".join(errors))

    @property
    def changed(self) -> int:
        return len(self._undo)


def mark_config_ports(maps: MapSet, config: Config) -> None:
    """Set the datapath's port prefilter for every listener port and every port a target
    answers from (bits are only ever added: a route never lacks its bits)."""
    targets = [t.port for x in config.listeners if not x.sni for t in x.targets]
    targets += [t.port for r in config.source_routes for t in r.targets]
    mark_ports(maps.ports_map, listen=[x.port for x in config.listeners], targets=targets)


def sync(maps: MapSet, config: Config, ifindex_of: IfindexOf) -> Transaction:
    """Make the maps match ``config``; returns the applied transaction (for rollback if a
    later step fails). Raises (after rolling back) if a map update fails."""
    changes = plan(maps, desired_entries(config, ifindex_of))
    mark_config_ports(maps, config)
    txn = Transaction()
    txn.apply(changes)
    return txn
