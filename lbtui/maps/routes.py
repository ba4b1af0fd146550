"""Routes: listen ports, source routes and SNI routes (weighted target groups), and the
port prefilter every route marks."""

from __future__ import annotations

import ctypes as ct
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lbtui import abi, bpfsys
from lbtui.addr import (
    IpLike,
    be_to_ip,
    be_to_port,
    ip_to_be,
    parse_cidr,
    parse_ipv4,
    parse_port,
    port_to_be,
)
from lbtui.bpfsys import K
from lbtui.sni import hostname_hash, normalize_hostname
from lbtui.targets import RouteRecord, TargetGroup, decode_route

if TYPE_CHECKING:
    from lbtui.maps.mapset import BpfMap


@dataclass(frozen=True, slots=True)
class ListenRecord:
    ifindex: int
    port: int
    route: RouteRecord

    def to_dict(self) -> dict[str, Any]:
        return {"listen": {"ifindex": self.ifindex, "port": self.port},
                "route": self.route.to_dict()}


PROTOCOL_FLAGS = {"tcp": abi.ROUTE_F_TCP, "udp": abi.ROUTE_F_UDP, "both": 0}


def listener_flags(*, stats: bool, sni: bool, protocol: str, address: str | None) -> int:
    """Route flags of a listener written from a config: it serves its own address, or
    (without one) the addresses local to the balancer, never traffic routed through to
    other hosts."""
    served = abi.ROUTE_F_ADDRESS if address else abi.ROUTE_F_LOCAL
    return ((abi.ROUTE_F_STATS if stats else 0) | (abi.ROUTE_F_SNI if sni else 0)
            | PROTOCOL_FLAGS[protocol] | served)


def listen_entry(ifindex: int, port: int, group: TargetGroup, flags: int
                 ) -> tuple[abi.ListenKey, abi.Route]:
    """(key, value) of a listen entry, for a transaction."""
    return _listen_key(ifindex, port), _group(group).to_route(_flags(flags))


def source_route_entry(cidr: Any, group: TargetGroup, flags: int
                       ) -> tuple[abi.LpmKey, abi.Route]:
    return _lpm_key(cidr), _group(group).to_route(_flags(flags))


def sni_route_entry(hostname: str, group: TargetGroup, flags: int = abi.ROUTE_F_STATS
                    ) -> tuple[ct.c_uint64, abi.Route]:
    return ct.c_uint64(hostname_hash(hostname)), _group(group).to_route(_flags(flags))


def vip_entry(ip: IpLike, port: int) -> tuple[abi.VipKey, ct.c_uint32]:
    """(key, value) of an address a listener with its own address serves."""
    return vip_key(ip, port), ct.c_uint32(1)


def _listen_key(ifindex: int, port: int) -> abi.ListenKey:
    if isinstance(ifindex, bool) or not isinstance(ifindex, int) or ifindex <= 0:
        raise ValueError(f"ifindex: {ifindex!r} must be a positive interface index")
    return abi.ListenKey(ifindex, port_to_be(parse_port(port, "listen port")), 0)


def _flags(flags: int) -> int:
    if isinstance(flags, bool) or not isinstance(flags, int) or not 0 <= flags <= 0xFFFF:
        raise ValueError(f"flags: {flags!r} must be an integer 0..65535")
    return flags


def _group(target_group: TargetGroup) -> TargetGroup:
    if not isinstance(target_group, TargetGroup):
        raise ValueError("target_group: expected a TargetGroup (TargetGroup.of([...]))")
    return target_group


def add_listen_port_weighted(listen_map: BpfMap, ifindex: int, listen_port: int,
                             target_group: TargetGroup, flags: int = 0) -> None:
    """Balance ``listen_port`` on interface ``ifindex`` over ``target_group``."""
    key = _listen_key(ifindex, listen_port)
    group = _group(target_group)
    route = group.to_route(_flags(flags))
    if listen_map.ports is not None:   # prefilter bits first: a route never lacks them
        mark_ports(listen_map.ports, listen=[listen_port],
                   targets=[t.port for t in group.targets])
    bpfsys.update(listen_map._require_open(), key, route)


def _single(target: Any) -> TargetGroup:
    if isinstance(target, Mapping):
        return TargetGroup.single(target.get("ip"), target.get("port"))
    if isinstance(target, tuple) and len(target) == 2:
        return TargetGroup.single(*target)
    raise ValueError(f"target: expected {{'ip': ..., 'port': ...}}, got {target!r}")


def add_listen_port(listen_map: BpfMap, ifindex: int, listen_port: int, target: Any,
                    flags: int = 0) -> None:
    """Deprecated: one target. Use add_listen_port_weighted."""
    warnings.warn("add_listen_port is deprecated; use add_listen_port_weighted",
                  DeprecationWarning, stacklevel=2)
    add_listen_port_weighted(listen_map, ifindex, listen_port, _single(target), flags)


def remove_listen_port(listen_map: BpfMap, ifindex: int, port: int) -> bool:
    return bpfsys.delete(listen_map._require_open(), _listen_key(ifindex, port))


def _route_at(route_map: BpfMap, key: abi.ListenKey | abi.LpmKey | ct.c_uint64
              ) -> RouteRecord | None:
    v = bpfsys.lookup(route_map._require_open(), key, abi.Route)
    return decode_route(v) if v is not None else None


def _all_routes(route_map: BpfMap, key_type: type[K]) -> Iterator[tuple[K, RouteRecord]]:
    """Every (key, route) of a route map (keys deleted while it walks are skipped)."""
    fd = route_map._require_open()
    for k in bpfsys.keys(fd, key_type):
        v = bpfsys.lookup(fd, k, abi.Route)
        if v is not None:
            yield k, decode_route(v)


def lookup_listen_port(listen_map: BpfMap, ifindex: int, port: int) -> RouteRecord | None:
    return _route_at(listen_map, _listen_key(ifindex, port))


def list_listen_ports(listen_map: BpfMap) -> list[ListenRecord]:
    out = [ListenRecord(k.ifindex, be_to_port(k.port), r)
           for k, r in _all_routes(listen_map, abi.ListenKey)]
    return sorted(out, key=lambda r: (r.ifindex, r.port))


@dataclass(frozen=True, slots=True)
class SourceRouteRecord:
    cidr: str
    route: RouteRecord

    def to_dict(self) -> dict[str, Any]:
        ip, _, plen = self.cidr.partition("/")
        return {"source": {"ip": ip, "prefix_len": int(plen), "cidr": self.cidr},
                "route": self.route.to_dict()}


def _lpm_key(source: Any) -> abi.LpmKey:
    net = parse_cidr(source)
    return abi.LpmKey(net.prefixlen, ip_to_be(net.network_address))


def add_source_route_weighted(config_map: BpfMap, source: Any, target_group: TargetGroup,
                              flags: int = abi.ROUTE_F_STATS) -> None:
    """Clients in ``source`` (CIDR) go to ``target_group`` instead of the listen default."""
    key = _lpm_key(source)
    group = _group(target_group)
    route = group.to_route(_flags(flags))
    if config_map.ports is not None:
        mark_ports(config_map.ports, targets=[t.port for t in group.targets])
    bpfsys.update(config_map._require_open(), key, route)


def add_source_route(config_map: BpfMap, source: Any, target: Any,
                     flags: int = abi.ROUTE_F_STATS) -> None:
    """Deprecated: one target. Use add_source_route_weighted."""
    warnings.warn("add_source_route is deprecated; use add_source_route_weighted",
                  DeprecationWarning, stacklevel=2)
    add_source_route_weighted(config_map, source, _single(target), flags)


def remove_source_route(config_map: BpfMap, source: Any) -> bool:
    return bpfsys.delete(config_map._require_open(), _lpm_key(source))


def lookup_source_route(config_map: BpfMap, source: Any) -> RouteRecord | None:
    """Exact match on prefix and length (not longest-prefix)."""
    key = _lpm_key(source)
    for rec in list_source_routes(config_map):
        ip, _, plen = rec.cidr.partition("/")
        if int(plen) == key.prefixlen and ip_to_be(ip) == key.ip:
            return rec.route
    return None


def list_source_routes(config_map: BpfMap) -> list[SourceRouteRecord]:
    out = [SourceRouteRecord(f"{be_to_ip(k.ip)}/{k.prefixlen}", r)
           for k, r in _all_routes(config_map, abi.LpmKey)]
    return sorted(out, key=lambda r: (parse_cidr(r.cidr).network_address,
                                      parse_cidr(r.cidr).prefixlen))


@dataclass(frozen=True, slots=True)
class SniRouteRecord:
    hostname_hash: int
    hostname: str | None
    route: RouteRecord

    def to_dict(self) -> dict[str, Any]:
        return {"hostname_hash": self.hostname_hash, "hostname": self.hostname,
                "route": self.route.to_dict()}


def add_sni_route(sni_map: BpfMap, hostname: str, target_group: TargetGroup,
                  flags: int = abi.ROUTE_F_STATS) -> int:
    """Route TLS connections for ``hostname`` (lower-cased) to ``target_group``.

    Returns the hash that keys the map."""
    name = normalize_hostname(hostname)
    h = hostname_hash(name)
    route = _group(target_group).to_route(_flags(flags))
    bpfsys.update(sni_map._require_open(), ct.c_uint64(h), route)
    if sni_map.sni_names is not None:
        sni_map.sni_names.set(h, name.decode())
    return h


def remove_sni_route(sni_map: BpfMap, hostname: str) -> bool:
    h = hostname_hash(hostname)
    removed = bpfsys.delete(sni_map._require_open(), ct.c_uint64(h))
    if sni_map.sni_names is not None:
        sni_map.sni_names.drop(h)
    return removed


def lookup_sni_route(sni_map: BpfMap, hostname: str) -> RouteRecord | None:
    return _route_at(sni_map, ct.c_uint64(hostname_hash(hostname)))


def list_sni_routes(sni_map: BpfMap) -> list[SniRouteRecord]:
    names = sni_map.sni_names.names if sni_map.sni_names else {}
    out = [SniRouteRecord(k.value, names.get(k.value), r)
           for k, r in _all_routes(sni_map, ct.c_uint64)]
    return sorted(out, key=lambda r: (r.hostname or "~", r.hostname_hash))


def ipv4(ip: IpLike) -> str:
    """Dotted form of any accepted address input (convenience for callers)."""
    return str(parse_ipv4(ip))


def _port_bits(listen: Iterable[int], targets: Iterable[int]) -> dict[int, int]:
    words: dict[int, int] = {}
    for base, ports in ((abi.PORTS_LISTEN_BASE, listen), (abi.PORTS_TARGET_BASE, targets)):
        for port in ports:
            p = parse_port(port, "port")
            words[base + (p >> 6)] = words.get(base + (p >> 6), 0) | (1 << (p & 63))
    return words


def mark_ports(ports_map: BpfMap, *, listen: Iterable[int] = (),
               targets: Iterable[int] = ()) -> int:
    """Set the prefilter bits of listener ports and of target ports (where replies come
    from). Bits are never cleared while the maps live: flows outlive their listener or
    target, and their packets must still be looked at. Returns the words changed."""
    fd = ports_map._require_open()
    changed = 0
    for idx, bits in _port_bits(listen, targets).items():
        key = ct.c_uint32(idx)
        cur = bpfsys.lookup(fd, key, ct.c_uint64)
        have = cur.value if cur is not None else 0
        if have | bits != have:
            bpfsys.update(fd, key, ct.c_uint64(have | bits))
            changed += 1
    return changed


def marked_ports(ports_map: BpfMap) -> tuple[set[int], set[int]]:
    """(listener ports, target ports) marked in the prefilter."""
    fd = ports_map._require_open()
    out: tuple[set[int], set[int]] = (set(), set())
    for base, into in ((abi.PORTS_LISTEN_BASE, out[0]), (abi.PORTS_TARGET_BASE, out[1])):
        for word in range(1024):
            v = bpfsys.lookup(fd, ct.c_uint32(base + word), ct.c_uint64)
            bits = v.value if v is not None else 0
            into.update(word * 64 + b for b in range(64) if bits >> b & 1)
    return out


def vip_key(ip: IpLike, port: int) -> abi.VipKey:
    return abi.VipKey(ip_to_be(ip), port_to_be(parse_port(port, "port")), 0)


# --- lookups on the packet path's terms (the SNI splicer routes as the datapath does) ----


def lookup_sni_hash(sni_map: BpfMap, hostname_hash_value: int) -> RouteRecord | None:
    """The SNI route stored under a hostname hash (the splicer hashes the hello's name)."""
    return _route_at(sni_map, ct.c_uint64(hostname_hash_value))


def match_source_route(config_map: BpfMap, client_ip: IpLike) -> RouteRecord | None:
    """The longest source-route prefix containing ``client_ip`` (what the datapath uses;
    ``lookup_source_route`` is the seed's exact-prefix lookup)."""
    return _route_at(config_map, abi.LpmKey(32, ip_to_be(client_ip)))


class ListenerLookup:
    """Finds a port's listen entry carrying ``flags`` (entries exist per interface and hold
    the same group); remembers the key found and finds it again if it goes away."""

    def __init__(self, listen_map: BpfMap, port: int, flags: int) -> None:
        self.listen_map = listen_map
        self.port = port_to_be(parse_port(port, "port"))
        self.flags = flags
        self._key: abi.ListenKey | None = None

    def route(self) -> RouteRecord | None:
        fd = self.listen_map._require_open()
        if self._key is not None:
            v = bpfsys.lookup(fd, self._key, abi.Route)
            if v is not None and v.flags & self.flags == self.flags:
                return decode_route(v)
        self._key = None
        for k in sorted(bpfsys.keys(fd, abi.ListenKey), key=lambda k: k.ifindex):
            if k.port != self.port:
                continue
            v = bpfsys.lookup(fd, k, abi.Route)
            if v is not None and v.flags & self.flags == self.flags:
                self._key = k
                return decode_route(v)
        return None
