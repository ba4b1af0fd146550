"""Map management: the Python form of the seed map-management API.

Every seed function has a snake_case counterpart here with the same meaning. Maps are
created with the layouts of ``lbtui/datapath/bpf/lb_abi.h`` (mirrored in
:mod:`lbtui.abi`); list functions return decoded records (dotted IPs, host-order ints),
and bad input raises ``ValueError`` before anything is written.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import errno
import json
import os
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    proto_name,
    proto_number,
)
from lbtui.files import atomic_write
from lbtui.sni import hostname_hash, normalize_hostname
from lbtui.targets import RouteRecord, TargetGroup, decode_route

__all__ = [
    "DEFAULT_CONFIG", "BpfMap", "Connection", "FiveTuple", "MapSet", "add_listen_port",
    "add_listen_port_weighted", "add_sni_route", "add_source_route",
    "add_source_route_weighted", "clear_stale_connections", "close_all_maps",
    "create_all_maps", "create_config_map", "create_conntrack_map", "create_counters_map",
    "create_listen_map", "create_settings_map", "create_sni_map", "create_stats_ringbuf",
    "delete_connection", "disable_stats", "enable_stats", "flush_nexthop_cache",
    "get_connection_timeout",
    "get_setting", "list_connections", "list_listen_ports", "list_sni_routes",
    "list_source_routes", "lookup_connection", "lookup_listen_port", "lookup_sni_route",
    "lookup_source_route", "map_fd", "read_counters", "remove_listen_port",
    "remove_sni_route", "remove_source_route", "set_connection_timeout", "set_setting",
    "stats_enabled",
]

DEFAULT_CONFIG: dict[str, int] = {
    "max_routes": 10000,
    "max_listen_ports": 256,
    "max_sni_routes": 1000,
    "max_connections": 100000,
    "settings_entries": abi.SETTINGS_MAX,
    "ringbuf_size": 256 * 1024,
    "connection_timeout": 300,
    "nexthop_cache_ms": 100,
}

# Map file names under a pin directory; also the BCC table names in lbtui/datapath/bpf/lb_xdp.c.
PIN_NAMES = ("listen", "config", "sni", "conntrack", "settings", "counters", "stats")


@dataclass(eq=False)
class BpfMap:
    """An open BPF map: its fd and the ctypes types of its key and value."""

    name: str
    fd: int
    map_type: int
    key_type: Any
    value_type: Any
    max_entries: int
    # SNI map only: hash -> hostname, persisted next to the pins (the map holds hashes).
    sni_names: SniNames | None = None
    # Conntrack map only: the counters map, to count deletions made by userspace.
    counters: BpfMap | None = None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def pin(self, path: str | Path) -> None:
        bpfsys.obj_pin(self.fd, str(path))

    def _require_open(self) -> int:
        if self.fd < 0:
            raise ValueError(f"map {self.name!r} is closed")
        return self.fd


class SniNames:
    """Hostnames behind SNI hashes, kept in a JSON file (0600) when the maps are pinned."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.names: dict[int, str] = {}
        if path and path.exists():
            self.names = {int(k): v for k, v in json.loads(path.read_text()).items()}

    _deferring = 0
    _dirty = False

    def set(self, h: int, name: str) -> None:
        self.names[h] = name
        self._save()

    def drop(self, h: int) -> None:
        if self.names.pop(h, None) is not None:
            self._save()

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Write the file once at the end of a batch of changes, not once per change
        (loading a config with many SNI routes)."""
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1
            if not self._deferring and self._dirty:
                self._save()

    def _save(self) -> None:
        if self._deferring:
            self._dirty = True
            return
        self._dirty = False
        if self.path:
            atomic_write(self.path, json.dumps({str(k): v for k, v in sorted(
                self.names.items())}, indent=1))


@dataclass(eq=False)
class MapSet:
    """The maps of one datapath: the seed's six plus the kernel counters."""

    config_map: BpfMap
    listen_map: BpfMap
    sni_map: BpfMap
    conntrack_map: BpfMap
    settings_map: BpfMap
    stats_ringbuf: BpfMap
    counters_map: BpfMap
    pin_dir: Path | None = None

    def by_pin_name(self) -> dict[str, BpfMap]:
        return {"listen": self.listen_map, "config": self.config_map, "sni": self.sni_map,
                "conntrack": self.conntrack_map, "settings": self.settings_map,
                "counters": self.counters_map, "stats": self.stats_ringbuf}

    def __iter__(self) -> Iterator[BpfMap]:
        return iter(self.by_pin_name().values())

    def pin_all(self, pin_dir: str | Path) -> None:
        """Pin every map under ``pin_dir`` (created 0700) so programs and other lbtui
        processes can open them; SNI hostnames are kept beside them."""
        d = Path(pin_dir)
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name, m in self.by_pin_name().items():
            m.pin(d / name)
        self.pin_dir = d
        names = SniNames(_sni_names_path(d))
        if self.sni_map.sni_names:
            names.names.update(self.sni_map.sni_names.names)
        names._save()
        self.sni_map.sni_names = names

    @classmethod
    def open_pinned(cls, pin_dir: str | Path) -> MapSet:
        """Open maps pinned by an earlier ``pin_all`` (another process, or a restart)."""
        d = Path(pin_dir)
        opened: dict[str, BpfMap] = {}
        try:
            for name in PIN_NAMES:
                fd = bpfsys.obj_get(str(d / name))
                info = bpfsys.map_info(fd)
                key_t, val_t = _TYPES[name]
                opened[name] = BpfMap(name, fd, info.type, key_t, val_t, info.max_entries)
        except OSError:
            for m in opened.values():
                m.close()
            raise
        ms = _assemble(opened)
        ms.pin_dir = d
        ms.sni_map.sni_names = SniNames(_sni_names_path(d))
        return ms


def _sni_names_path(pin_dir: Path) -> Path:
    state = Path(os.environ.get("LBTUI_STATE_DIR", "/var/lib/lbtui")) / pin_dir.name
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    return state / "sni-names.json"


_TYPES: dict[str, tuple[Any, Any]] = {
    "listen": (abi.ListenKey, abi.Route),
    "config": (abi.LpmKey, abi.Route),
    "sni": (abi.SniKey, abi.Route),
    "conntrack": (abi.CtKey, abi.CtValue),
    "settings": (ct.c_uint32, ct.c_uint32),
    "counters": (ct.c_uint32, ct.c_uint64),
    "stats": (None, None),
}


def _assemble(m: Mapping[str, BpfMap]) -> MapSet:
    m["conntrack"].counters = m["counters"]
    return MapSet(config_map=m["config"], listen_map=m["listen"], sni_map=m["sni"],
                  conntrack_map=m["conntrack"], settings_map=m["settings"],
                  stats_ringbuf=m["stats"], counters_map=m["counters"])


def _positive(opts: Mapping[str, Any], key: str) -> int:
    v = opts.get(key, DEFAULT_CONFIG[key])
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"{key}: {v!r} must be a positive integer")
    return v


def _create(name: str, map_type: int, max_entries: int, flags: int = 0) -> BpfMap:
    key_t, val_t = _TYPES[name]
    ks = ct.sizeof(key_t) if key_t else 0
    vs = ct.sizeof(val_t) if val_t else 0
    fd = bpfsys.create_map(map_type, f"lb_{name}", ks, vs, max_entries, flags)
    return BpfMap(name, fd, map_type, key_t, val_t, max_entries)


# --- creation ------------------------------------------------------------------------


def create_config_map(max_routes: int = DEFAULT_CONFIG["max_routes"]) -> BpfMap:
    """LPM trie: source prefix -> weighted route (BPF_F_NO_PREALLOC, as LPM requires)."""
    n = _positive({"max_routes": max_routes}, "max_routes")
    return _create("config", bpfsys.MAP_TYPE_LPM_TRIE, n, bpfsys.BPF_F_NO_PREALLOC)


def create_listen_map(max_listen_ports: int = DEFAULT_CONFIG["max_listen_ports"]) -> BpfMap:
    n = _positive({"max_listen_ports": max_listen_ports}, "max_listen_ports")
    return _create("listen", bpfsys.MAP_TYPE_HASH, n)


def create_sni_map(max_sni_routes: int = DEFAULT_CONFIG["max_sni_routes"]) -> BpfMap:
    n = _positive({"max_sni_routes": max_sni_routes}, "max_sni_routes")
    m = _create("sni", bpfsys.MAP_TYPE_HASH, n)
    m.sni_names = SniNames()
    return m


def create_conntrack_map(max_connections: int = DEFAULT_CONFIG["max_connections"]) -> BpfMap:
    """Shared LRU hash, never per-CPU: a reply handled on another CPU than its flow's first
    packet must see the NAT state. Each flow takes two entries."""
    n = _positive({"max_connections": max_connections}, "max_connections")
    return _create("conntrack", bpfsys.MAP_TYPE_LRU_HASH, n)


def create_settings_map(settings_entries: int = DEFAULT_CONFIG["settings_entries"]) -> BpfMap:
    n = _positive({"settings_entries": settings_entries}, "settings_entries")
    if n < 2:
        raise ValueError("settings_entries: at least 2 (stats, connection timeout)")
    return _create("settings", bpfsys.MAP_TYPE_ARRAY, n)


def create_stats_ringbuf(ringbuf_size: int = DEFAULT_CONFIG["ringbuf_size"]) -> BpfMap:
    n = _positive({"ringbuf_size": ringbuf_size}, "ringbuf_size")
    if n & (n - 1) or n < 4096:
        raise ValueError(f"ringbuf_size: {n} must be a power of two of at least 4096")
    return _create("stats", bpfsys.MAP_TYPE_RINGBUF, n)


def create_counters_map() -> BpfMap:
    return _create("counters", bpfsys.MAP_TYPE_ARRAY, abi.COUNTERS_MAX)


def create_all_maps(opts: Mapping[str, Any] | None = None) -> MapSet:
    """Create every map. ``opts`` overrides DEFAULT_CONFIG keys (max_routes, ...).

    Settings start with stats enabled and the default connection timeout."""
    o = {**DEFAULT_CONFIG, **(opts or {})}
    unknown = set(o) - set(DEFAULT_CONFIG)
    if unknown:
        raise ValueError(f"unknown map option(s): {', '.join(sorted(unknown))}")
    # Validate everything before creating anything.
    for key in DEFAULT_CONFIG:
        if key in ("connection_timeout", "nexthop_cache_ms"):  # 0 = off
            v = o[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{key}: {v!r} must be an integer >= 0")
        else:
            _positive(o, key)
    created: dict[str, BpfMap] = {}
    try:
        created["config"] = create_config_map(o["max_routes"])
        created["listen"] = create_listen_map(o["max_listen_ports"])
        created["sni"] = create_sni_map(o["max_sni_routes"])
        created["conntrack"] = create_conntrack_map(o["max_connections"])
        created["settings"] = create_settings_map(o["settings_entries"])
        created["stats"] = create_stats_ringbuf(o["ringbuf_size"])
        created["counters"] = create_counters_map()
    except (OSError, ValueError):
        for m in created.values():
            m.close()
        raise
    ms = _assemble(created)
    enable_stats(ms.settings_map)
    set_connection_timeout(ms.settings_map, o["connection_timeout"])
    set_setting(ms.settings_map, abi.SETTING_NH_CACHE_MS, o["nexthop_cache_ms"])
    return ms


def close_all_maps(maps: MapSet) -> None:
    """Close every map fd. Pinned maps live on until unpinned."""
    for m in maps:
        m.close()


def map_fd(m: BpfMap) -> int:
    return m._require_open()


# --- listen ports --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListenRecord:
    ifindex: int
    port: int
    route: RouteRecord

    def to_dict(self) -> dict[str, Any]:
        return {"listen": {"ifindex": self.ifindex, "port": self.port},
                "route": self.route.to_dict()}


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
    route = _group(target_group).to_route(_flags(flags))
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


def lookup_listen_port(listen_map: BpfMap, ifindex: int, port: int) -> RouteRecord | None:
    v = bpfsys.lookup(listen_map._require_open(), _listen_key(ifindex, port), abi.Route)
    return decode_route(v) if v is not None else None


def list_listen_ports(listen_map: BpfMap) -> list[ListenRecord]:
    fd = listen_map._require_open()
    out = []
    for k in bpfsys.keys(fd, abi.ListenKey):
        v = bpfsys.lookup(fd, k, abi.Route)
        if v is not None:
            out.append(ListenRecord(k.ifindex, be_to_port(k.port), decode_route(v)))
    return sorted(out, key=lambda r: (r.ifindex, r.port))


# --- source routes ---------------------------------------------------------------------


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
    route = _group(target_group).to_route(_flags(flags))
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
    fd = config_map._require_open()
    out = []
    for k in bpfsys.keys(fd, abi.LpmKey):
        v = bpfsys.lookup(fd, k, abi.Route)
        if v is not None:
            out.append(SourceRouteRecord(f"{be_to_ip(k.ip)}/{k.prefixlen}", decode_route(v)))
    return sorted(out, key=lambda r: (parse_cidr(r.cidr).network_address,
                                      parse_cidr(r.cidr).prefixlen))


# --- SNI routes ----------------------------------------------------------------------


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
    v = bpfsys.lookup(sni_map._require_open(), ct.c_uint64(hostname_hash(hostname)), abi.Route)
    return decode_route(v) if v is not None else None


def list_sni_routes(sni_map: BpfMap) -> list[SniRouteRecord]:
    fd = sni_map._require_open()
    names = sni_map.sni_names.names if sni_map.sni_names else {}
    out = []
    for k in bpfsys.keys(fd, ct.c_uint64):
        v = bpfsys.lookup(fd, k, abi.Route)
        if v is not None:
            out.append(SniRouteRecord(k.value, names.get(k.value), decode_route(v)))
    return sorted(out, key=lambda r: (r.hostname or "~", r.hostname_hash))


# --- connections ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FiveTuple:
    """A flow as the client sent it: client -> VIP."""

    src_ip: str
    dst_ip: str
    src_port: int
    dst_port: int
    proto: int = abi.IPPROTO_TCP

    @classmethod
    def parse(cls, t: Any) -> FiveTuple:
        if isinstance(t, FiveTuple):
            return t
        if isinstance(t, Mapping):
            g = lambda *names: next((t[n] for n in names if n in t), None)  # noqa: E731
            t = (g("src_ip", "src-ip"), g("dst_ip", "dst-ip"), g("src_port", "src-port"),
                 g("dst_port", "dst-port"), g("proto", "protocol") or "tcp")
        if not isinstance(t, tuple | list) or len(t) not in (4, 5):
            raise ValueError(f"five-tuple: expected (src_ip, dst_ip, src_port, dst_port, "
                             f"proto), got {t!r}")
        proto = t[4] if len(t) == 5 else abi.IPPROTO_TCP
        return cls(str(parse_ipv4(t[0], "src_ip")), str(parse_ipv4(t[1], "dst_ip")),
                   parse_port(t[2], "src_port"), parse_port(t[3], "dst_port"),
                   proto_number(proto))

    def key(self) -> abi.CtKey:
        return abi.CtKey(ip_to_be(self.src_ip), ip_to_be(self.dst_ip),
                         port_to_be(self.src_port), port_to_be(self.dst_port), self.proto)

    def __str__(self) -> str:
        return (f"{proto_name(self.proto)} {self.src_ip}:{self.src_port} -> "
                f"{self.dst_ip}:{self.dst_port}")


def ct_state(flags: int, proto: int) -> str:
    """Human state of a forward entry, derived from its flags."""
    if flags & abi.CT_F_RST:
        return "reset"
    if flags & abi.CT_F_FIN_FWD and flags & abi.CT_F_FIN_REV:
        return "closed"
    if flags & (abi.CT_F_FIN_FWD | abi.CT_F_FIN_REV):
        return "closing"
    if flags & abi.CT_F_SEEN_REPLY:
        return "established" if proto == abi.IPPROTO_TCP else "replied"
    return "syn-sent" if proto == abi.IPPROTO_TCP else "new"


@dataclass(frozen=True, slots=True)
class Connection:
    client_ip: str
    client_port: int
    vip_ip: str
    vip_port: int
    target_ip: str
    target_port: int
    proto: int
    flags: int
    created_ns: int
    last_seen_ns: int
    packets_fwd: int
    packets_rev: int
    bytes_fwd: int
    bytes_rev: int

    @property
    def five_tuple(self) -> FiveTuple:
        return FiveTuple(self.client_ip, self.vip_ip, self.client_port, self.vip_port,
                         self.proto)

    @property
    def target(self) -> str:
        return f"{self.target_ip}:{self.target_port}"

    @property
    def state(self) -> str:
        return ct_state(self.flags, self.proto)

    def to_dict(self) -> dict[str, Any]:
        d = {f: getattr(self, f) for f in self.__slots__}
        d["proto"] = proto_name(self.proto)
        d["state"] = self.state
        return d


def decode_connection(k: abi.CtKey, v: abi.CtValue) -> Connection:
    return Connection(be_to_ip(k.src_ip), be_to_port(k.src_port), be_to_ip(v.orig_dst_ip),
                      be_to_port(v.orig_dst_port), be_to_ip(v.nat_dst_ip),
                      be_to_port(v.nat_dst_port), k.proto, v.flags, v.created_ns,
                      v.last_seen_ns, v.packets_fwd, v.packets_rev, v.bytes_fwd, v.bytes_rev)


def conntrack_reader(conntrack_map: BpfMap, chunk: int = 4096) -> bpfsys.BatchReader:
    """A reusable batched reader (fixed-size buffers) for repeated dumps."""
    return bpfsys.BatchReader(conntrack_map._require_open(), abi.CtKey, abi.CtValue, chunk)


def list_connections(conntrack_map: BpfMap, *, reader: bpfsys.BatchReader | None = None
                     ) -> list[Connection]:
    """Every tracked flow (forward entries), read with BPF_MAP_LOOKUP_BATCH in chunks."""
    r = reader or conntrack_reader(conntrack_map)
    out = []
    for keys, values, n in r.chunks():
        for i in range(n):
            v = values[i]
            if not v.flags & abi.CT_F_REPLY:
                out.append(decode_connection(keys[i], v))
    return out


def lookup_connection(conntrack_map: BpfMap, five_tuple: Any) -> Connection | None:
    t = FiveTuple.parse(five_tuple)
    k = t.key()
    v = bpfsys.lookup(conntrack_map._require_open(), k, abi.CtValue)
    if v is None or v.flags & abi.CT_F_REPLY:
        return None
    return decode_connection(k, v)


def _reply_key(k: abi.CtKey, v: abi.CtValue) -> abi.CtKey:
    return abi.CtKey(v.nat_dst_ip, k.src_ip, v.nat_dst_port, k.src_port, k.proto)


def _count_deleted(conntrack_map: BpfMap, n: int) -> None:
    c = conntrack_map.counters
    if c is None or n == 0:
        return
    slot = ct.c_uint32(abi.CTR_FLOWS_DELETED)
    cur = bpfsys.lookup(c.fd, slot, ct.c_uint64)
    bpfsys.update(c.fd, slot, ct.c_uint64((cur.value if cur else 0) + n))


def delete_connection(conntrack_map: BpfMap, five_tuple: Any) -> bool:
    """Forget a flow (both its entries). Its next packet is treated as new. A spliced
    flow is reset by its splicer (``_close_spliced``)."""
    t = FiveTuple.parse(five_tuple)
    fd = conntrack_map._require_open()
    k = t.key()
    v = bpfsys.lookup(fd, k, abi.CtValue)
    if v is None or v.flags & abi.CT_F_REPLY:
        return False
    if v.flags & abi.CT_F_LOCAL and time.monotonic_ns() - v.last_seen_ns < SPLICED_STALE_NS:
        return _close_spliced(conntrack_map, k)
    bpfsys.delete(fd, _reply_key(k, v))
    removed = bpfsys.delete(fd, k)
    _count_deleted(conntrack_map, int(removed))
    return removed


# A spliced flow (CT_F_LOCAL) belongs to the splicer proxying it, which writes its entry
# back if the LRU map evicts it. An operator's delete must not look like an eviction, so it
# flags the entry instead and the splicer resets the connection and removes the entry at
# its next refresh (every second). CT_F_RST is never set on a live spliced entry otherwise.
CT_F_CLOSE_REQUEST = abi.CT_F_RST
_BPF_EXIST = 2
SPLICED_STALE_NS = 3_000_000_000   # not refreshed for this long: no splicer runs it
_SPLICED_WAIT_S = 3.0


def _close_spliced(conntrack_map: BpfMap, k: abi.CtKey) -> bool:
    """Ask the splicer to reset a spliced flow and wait until it has; re-flag if a
    refresh overwrote the flag meanwhile. If no splicer answers in time, remove it here."""
    fd = conntrack_map._require_open()
    deadline = time.monotonic() + _SPLICED_WAIT_S
    while (v := bpfsys.lookup(fd, k, abi.CtValue)) is not None:
        if time.monotonic() >= deadline:
            bpfsys.delete(fd, k)
            break
        if not v.flags & CT_F_CLOSE_REQUEST:
            v.flags |= CT_F_CLOSE_REQUEST
            try:
                bpfsys.update(fd, k, v, _BPF_EXIST)
            except OSError as e:
                if e.errno != errno.ENOENT:    # ENOENT: gone meanwhile, done
                    raise
        time.sleep(0.05)
    _count_deleted(conntrack_map, 1)
    return True


def clear_stale_connections(conntrack_map: BpfMap, current_time_ns: int,
                            timeout_ns: int, closed_timeout_ns: int | None = None
                            ) -> list[Connection]:
    """Remove flows idle for longer than ``timeout_ns``, and orphaned reply entries.

    Times are CLOCK_MONOTONIC ns (``time.monotonic_ns()``); the kernel stamps flows with
    the coarse form of that clock (bpf_ktime_get_coarse_ns). With ``closed_timeout_ns``,
    flows that finished (FIN both ways, or RST) go once idle that long, so closed flows
    linger only briefly (for the last ACK and retransmissions). Returns the removed flows."""
    if timeout_ns < 0 or (closed_timeout_ns is not None and closed_timeout_ns < 0):
        raise ValueError("timeouts must be >= 0")
    fd = conntrack_map._require_open()
    stale_fwd: list[tuple[abi.CtKey, abi.CtValue]] = []
    stale_rev: list[abi.CtKey] = []
    for k, v in conntrack_reader(conntrack_map).items():
        idle = current_time_ns - v.last_seen_ns
        finished = closed_timeout_ns is not None and not v.flags & abi.CT_F_REPLY and (
            v.flags & abi.CT_F_RST or (v.flags & abi.CT_F_FIN_FWD and v.flags & abi.CT_F_FIN_REV))
        if idle <= timeout_ns and not (finished and idle > closed_timeout_ns):  # type: ignore[operator]
            continue
        (stale_rev.append(k) if v.flags & abi.CT_F_REPLY else stale_fwd.append((k, v)))
    removed = []
    for k, v in stale_fwd:
        bpfsys.delete(fd, _reply_key(k, v))
        if bpfsys.delete(fd, k):
            removed.append(decode_connection(k, v))
    for k in stale_rev:
        bpfsys.delete(fd, k)
    _count_deleted(conntrack_map, len(removed))
    return removed


# --- settings and counters -----------------------------------------------------------


def get_setting(settings_map: BpfMap, index: int) -> int:
    _setting_index(settings_map, index)
    v = bpfsys.lookup(settings_map._require_open(), ct.c_uint32(index), ct.c_uint32)
    return v.value if v is not None else 0


def _setting_index(settings_map: BpfMap, index: int) -> None:
    if isinstance(index, bool) or not isinstance(index, int) or not (
            0 <= index < settings_map.max_entries):
        raise ValueError(f"setting index {index!r} must be 0..{settings_map.max_entries - 1}")


def set_setting(settings_map: BpfMap, index: int, value: int) -> None:
    _setting_index(settings_map, index)
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"setting value {value!r} must be an integer 0..4294967295")
    bpfsys.update(settings_map._require_open(), ct.c_uint32(index), ct.c_uint32(value))


def enable_stats(settings_map: BpfMap) -> None:
    set_setting(settings_map, abi.SETTING_STATS_ENABLED, 1)


def disable_stats(settings_map: BpfMap) -> None:
    set_setting(settings_map, abi.SETTING_STATS_ENABLED, 0)


def stats_enabled(settings_map: BpfMap) -> bool:
    return get_setting(settings_map, abi.SETTING_STATS_ENABLED) != 0


def get_connection_timeout(settings_map: BpfMap) -> int:
    return get_setting(settings_map, abi.SETTING_CONN_TIMEOUT_S)


def set_connection_timeout(settings_map: BpfMap, timeout_seconds: int) -> None:
    """Idle flows older than this are treated as gone (0 disables ageing in the kernel)."""
    if isinstance(timeout_seconds, bool) or not isinstance(timeout_seconds, int) or not (
            0 <= timeout_seconds <= 7 * 24 * 3600):
        raise ValueError(f"connection timeout {timeout_seconds!r} must be 0..604800 seconds")
    set_setting(settings_map, abi.SETTING_CONN_TIMEOUT_S, timeout_seconds)


def flush_nexthop_cache(settings_map: BpfMap) -> None:
    """Make the datapath forget every cached next hop (after a route or neighbour change
    that should apply at once rather than within settings[NH_CACHE_MS])."""
    gen = get_setting(settings_map, abi.SETTING_NH_GENERATION)
    set_setting(settings_map, abi.SETTING_NH_GENERATION, (gen + 1) & 0xFFFFFFFF)


COUNTER_NAMES = {
    abi.CTR_FLOWS_CREATED: "flows_created",
    abi.CTR_EVENTS_LOST: "events_lost",
    abi.CTR_NO_TARGET: "no_target",
    abi.CTR_FLOWS_CLOSED: "flows_closed",
    abi.CTR_SNI_PASSED: "sni_passed",
    abi.CTR_USER_EVENTS: "user_events",
    abi.CTR_FLOWS_DELETED: "flows_deleted",
}


def read_counters(counters_map: BpfMap) -> dict[str, int]:
    fd = counters_map._require_open()
    out = {}
    for slot, name in COUNTER_NAMES.items():
        v = bpfsys.lookup(fd, ct.c_uint32(slot), ct.c_uint64)
        out[name] = v.value if v is not None else 0
    return out


def ipv4(ip: IpLike) -> str:
    """Dotted form of any accepted address input (convenience for callers)."""
    return str(parse_ipv4(ip))

