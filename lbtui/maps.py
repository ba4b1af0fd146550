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
import functools
import json
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping
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
PIN_NAMES = ("listen", "config", "sni", "conntrack", "settings", "counters", "stats", "ports",
             "local_addrs", "vips", "reasons", "tx_ports")


class AbiMismatch(RuntimeError):
    """Pinned maps were made by an lbtui with another map layout: refuse to read them."""


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
    # Listen and config maps: the port prefilter, marked for every route written.
    ports: BpfMap | None = None

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
    """The maps of one datapath: the seed's six, the kernel counters, and the maps the
    packet path needs on networks lbtui did not build (port prefilter, addresses served,
    per-interface reasons, the egress devmap)."""

    config_map: BpfMap
    listen_map: BpfMap
    sni_map: BpfMap
    conntrack_map: BpfMap
    settings_map: BpfMap
    stats_ringbuf: BpfMap
    counters_map: BpfMap
    ports_map: BpfMap
    local_addrs_map: BpfMap
    vips_map: BpfMap
    reasons_map: BpfMap
    tx_ports_map: BpfMap
    pin_dir: Path | None = None

    def by_pin_name(self) -> dict[str, BpfMap]:
        return {"listen": self.listen_map, "config": self.config_map, "sni": self.sni_map,
                "conntrack": self.conntrack_map, "settings": self.settings_map,
                "counters": self.counters_map, "stats": self.stats_ringbuf,
                "ports": self.ports_map, "local_addrs": self.local_addrs_map,
                "vips": self.vips_map, "reasons": self.reasons_map,
                "tx_ports": self.tx_ports_map}

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
        """Open maps pinned by an earlier ``pin_all`` (another process, or a restart).

        Raises AbiMismatch, naming both layouts, when the pins were made by an lbtui whose
        maps have another layout (version, set of maps, map types or key/value sizes)."""
        d = Path(pin_dir)
        check_pinned_version(d)
        opened: dict[str, BpfMap] = {}
        try:
            for name in PIN_NAMES:
                try:
                    fd = bpfsys.obj_get(str(d / name))
                except OSError as e:
                    if e.errno != errno.ENOENT:
                        raise
                    raise _abi_mismatch(d, f"map {name!r} is missing") from None
                info = bpfsys.map_info(fd)
                key_t, val_t = _TYPES[name]
                opened[name] = BpfMap(name, fd, info.type, key_t, val_t, info.max_entries)
                _check_layout(d, name, info)
        except (OSError, AbiMismatch):
            for m in opened.values():
                m.close()
            raise
        ms = _assemble(opened)
        ms.pin_dir = d
        ms.sni_map.sni_names = SniNames(_sni_names_path(d))
        return ms


def pinned_abi_version(pin_dir: Path) -> int | None:
    """The map layout version of the maps pinned under ``pin_dir``; None when nothing is
    pinned there. Maps from before versions were recorded read as 1."""
    try:
        fd = bpfsys.obj_get(str(pin_dir / "settings"))
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        raise
    try:
        info = bpfsys.map_info(fd)
        if info.max_entries <= abi.SETTING_ABI_VERSION:
            return 1
        v = bpfsys.lookup(fd, ct.c_uint32(abi.SETTING_ABI_VERSION), ct.c_uint32)
        return (v.value if v is not None else 0) or 1
    finally:
        os.close(fd)


def check_pinned_version(pin_dir: Path) -> None:
    """AbiMismatch when maps of another layout version are pinned under ``pin_dir``."""
    version = pinned_abi_version(pin_dir)
    if version is not None and version != abi.ABI_VERSION:
        raise _abi_mismatch(pin_dir, f"they have map layout version {version}")


def _abi_mismatch(pin_dir: Path, what: str) -> AbiMismatch:
    return AbiMismatch(
        f"the maps pinned under {pin_dir} were made by another lbtui version ({what}; this "
        f"lbtui uses map layout version {abi.ABI_VERSION}) and cannot be read safely. "
        f"Run `lbtui down --instance {pin_dir.name}` with the lbtui that created them (or "
        "this one: it only detaches and unpins), then start again; established connections "
        "through that instance are dropped.")


def _check_layout(pin_dir: Path, name: str, info: bpfsys.MapInfo) -> None:
    key_t = _TYPES[name][0]
    want = (_MAP_TYPES[name], ct.sizeof(key_t) if key_t else 0, _value_size(name))
    have = (info.type, info.key_size, info.value_size)
    if want != have:
        raise _abi_mismatch(pin_dir, f"map {name!r} has type/key/value sizes {have}, "
                                     f"expected {want}")


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
    "ports": (ct.c_uint32, ct.c_uint64),
    "local_addrs": (ct.c_uint32, ct.c_uint32),
    "vips": (abi.VipKey, ct.c_uint32),
    "reasons": (abi.ReasonKey, ct.c_uint64),   # per CPU: one value per possible CPU
    "tx_ports": (ct.c_uint32, ct.c_uint32),
}

_MAP_TYPES: dict[str, int] = {
    "listen": bpfsys.MAP_TYPE_HASH, "config": bpfsys.MAP_TYPE_LPM_TRIE,
    "sni": bpfsys.MAP_TYPE_HASH, "conntrack": bpfsys.MAP_TYPE_LRU_HASH,
    "settings": bpfsys.MAP_TYPE_ARRAY, "counters": bpfsys.MAP_TYPE_ARRAY,
    "stats": bpfsys.MAP_TYPE_RINGBUF, "ports": bpfsys.MAP_TYPE_ARRAY,
    "local_addrs": bpfsys.MAP_TYPE_HASH, "vips": bpfsys.MAP_TYPE_HASH,
    "reasons": bpfsys.MAP_TYPE_PERCPU_HASH, "tx_ports": bpfsys.MAP_TYPE_DEVMAP_HASH,
}


def _value_size(name: str) -> int:
    val_t = _TYPES[name][1]
    return ct.sizeof(val_t) if val_t else 0


def _assemble(m: Mapping[str, BpfMap]) -> MapSet:
    m["conntrack"].counters = m["counters"]
    m["listen"].ports = m["config"].ports = m["ports"]
    return MapSet(config_map=m["config"], listen_map=m["listen"], sni_map=m["sni"],
                  conntrack_map=m["conntrack"], settings_map=m["settings"],
                  stats_ringbuf=m["stats"], counters_map=m["counters"],
                  ports_map=m["ports"], local_addrs_map=m["local_addrs"],
                  vips_map=m["vips"], reasons_map=m["reasons"], tx_ports_map=m["tx_ports"])


def _positive(opts: Mapping[str, Any], key: str) -> int:
    v = opts.get(key, DEFAULT_CONFIG[key])
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"{key}: {v!r} must be a positive integer")
    return v


def _create(name: str, max_entries: int, flags: int = 0) -> BpfMap:
    key_t, val_t = _TYPES[name]
    ks = ct.sizeof(key_t) if key_t else 0
    map_type = _MAP_TYPES[name]
    fd = bpfsys.create_map(map_type, f"lb_{name}", ks, _value_size(name), max_entries, flags)
    return BpfMap(name, fd, map_type, key_t, val_t, max_entries)


# --- creation ------------------------------------------------------------------------


def create_config_map(max_routes: int = DEFAULT_CONFIG["max_routes"]) -> BpfMap:
    """LPM trie: source prefix -> weighted route (BPF_F_NO_PREALLOC, as LPM requires)."""
    n = _positive({"max_routes": max_routes}, "max_routes")
    return _create("config", n, bpfsys.BPF_F_NO_PREALLOC)


def create_listen_map(max_listen_ports: int = DEFAULT_CONFIG["max_listen_ports"]) -> BpfMap:
    n = _positive({"max_listen_ports": max_listen_ports}, "max_listen_ports")
    return _create("listen", n)


def create_sni_map(max_sni_routes: int = DEFAULT_CONFIG["max_sni_routes"]) -> BpfMap:
    n = _positive({"max_sni_routes": max_sni_routes}, "max_sni_routes")
    m = _create("sni", n)
    m.sni_names = SniNames()
    return m


def create_conntrack_map(max_connections: int = DEFAULT_CONFIG["max_connections"]) -> BpfMap:
    """Shared LRU hash, never per-CPU: a reply handled on another CPU than its flow's first
    packet must see the NAT state. Each flow takes two entries."""
    n = _positive({"max_connections": max_connections}, "max_connections")
    return _create("conntrack", n)


def create_settings_map(settings_entries: int = DEFAULT_CONFIG["settings_entries"]) -> BpfMap:
    n = _positive({"settings_entries": settings_entries}, "settings_entries")
    if n < 2:
        raise ValueError("settings_entries: at least 2 (stats, connection timeout)")
    return _create("settings", n)


def create_stats_ringbuf(ringbuf_size: int = DEFAULT_CONFIG["ringbuf_size"]) -> BpfMap:
    n = _positive({"ringbuf_size": ringbuf_size}, "ringbuf_size")
    if n & (n - 1) or n < 4096:
        raise ValueError(f"ringbuf_size: {n} must be a power of two of at least 4096")
    return _create("stats", n)


def create_counters_map() -> BpfMap:
    return _create("counters", abi.COUNTERS_MAX)


def create_ports_map() -> BpfMap:
    """The port prefilter bitmap (see lb_abi.h): listener and target ports."""
    return _create("ports", abi.PORTS_MAX)


def create_local_addrs_map() -> BpfMap:
    return _create("local_addrs", abi.MAX_LOCAL_ADDRS)


def create_vips_map() -> BpfMap:
    return _create("vips", abi.MAX_VIPS)


def create_reasons_map() -> BpfMap:
    return _create("reasons", abi.MAX_REASON_KEYS)


def create_tx_ports_map() -> BpfMap:
    """The egress devmap: interfaces the control plane verified can take XDP frames."""
    return _create("tx_ports", abi.MAX_TX_PORTS)


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
    if o["settings_entries"] < abi.SETTINGS_MAX:
        raise ValueError(f"settings_entries: {o['settings_entries']} is fewer than the "
                         f"{abi.SETTINGS_MAX} slots the datapath reads")
    created: dict[str, BpfMap] = {}
    try:
        created["config"] = create_config_map(o["max_routes"])
        created["listen"] = create_listen_map(o["max_listen_ports"])
        created["sni"] = create_sni_map(o["max_sni_routes"])
        created["conntrack"] = create_conntrack_map(o["max_connections"])
        created["settings"] = create_settings_map(o["settings_entries"])
        created["stats"] = create_stats_ringbuf(o["ringbuf_size"])
        created["counters"] = create_counters_map()
        created["ports"] = create_ports_map()
        created["local_addrs"] = create_local_addrs_map()
        created["vips"] = create_vips_map()
        created["reasons"] = create_reasons_map()
        created["tx_ports"] = create_tx_ports_map()
    except (OSError, ValueError):
        for m in created.values():
            m.close()
        raise
    ms = _assemble(created)
    set_setting(ms.settings_map, abi.SETTING_ABI_VERSION, abi.ABI_VERSION)
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
    """Forget a flow (both its entries). Its next packet is treated as new."""
    t = FiveTuple.parse(five_tuple)
    fd = conntrack_map._require_open()
    k = t.key()
    v = bpfsys.lookup(fd, k, abi.CtValue)
    if v is None or v.flags & abi.CT_F_REPLY:
        return False
    bpfsys.delete(fd, _reply_key(k, v))
    removed = bpfsys.delete(fd, k)
    _count_deleted(conntrack_map, int(removed))
    return removed


def _finished(flags: int) -> bool:
    return bool(flags & abi.CT_F_RST or (flags & abi.CT_F_FIN_FWD and flags & abi.CT_F_FIN_REV))


def clear_stale_connections(conntrack_map: BpfMap, current_time_ns: int,
                            timeout_ns: int, closed_timeout_ns: int | None = None
                            ) -> list[Connection]:
    """Remove flows idle for longer than ``timeout_ns``, and orphaned reply entries.

    A flow is its two entries, and is idle only when both are: traffic in either direction
    keeps it (a UDP flow whose target is quiet stays as long as its client talks). Both
    entries go together, so a live flow never loses one half.

    Times are CLOCK_MONOTONIC ns (``time.monotonic_ns()``); the kernel stamps flows with
    the coarse form of that clock (bpf_ktime_get_coarse_ns). With ``closed_timeout_ns``,
    flows that finished (FIN both ways, or RST) go once idle that long, so closed flows
    linger only briefly (for the last ACK and retransmissions); a reply entry whose flow is
    gone goes after that long too. Returns the removed flows."""
    if timeout_ns < 0 or (closed_timeout_ns is not None and closed_timeout_ns < 0):
        raise ValueError("timeouts must be >= 0")
    fd = conntrack_map._require_open()
    linger = timeout_ns if closed_timeout_ns is None else min(closed_timeout_ns, timeout_ns)

    def stale(v: abi.CtValue, limit: int) -> bool:
        return current_time_ns - v.last_seen_ns > limit

    # Entries idle on their own; their other half decides (one lookup per candidate).
    candidates = [(k, v) for k, v in conntrack_reader(conntrack_map).items()
                  if stale(v, linger)]
    removed = []
    for k, v in candidates:
        if v.flags & abi.CT_F_REPLY:
            fk = abi.CtKey(k.dst_ip, v.orig_dst_ip, k.dst_port, v.orig_dst_port, k.proto)
            fv = bpfsys.lookup(fd, fk, abi.CtValue)
            if fv is None or fv.flags & abi.CT_F_REPLY or (fv.nat_dst_ip, fv.nat_dst_port) != (
                    k.src_ip, k.src_port):
                bpfsys.delete(fd, k)            # orphan: its flow is gone
            continue                            # else decided with its forward entry
        limit = linger if _finished(v.flags) else timeout_ns
        rk = _reply_key(k, v)
        rv = bpfsys.lookup(fd, rk, abi.CtValue)
        ours = rv is not None and (rv.orig_dst_ip, rv.orig_dst_port) == (
            v.orig_dst_ip, v.orig_dst_port)
        last = max(v.last_seen_ns, rv.last_seen_ns) if ours and rv is not None else (
            v.last_seen_ns)
        if current_time_ns - last <= limit:
            continue
        if ours:
            bpfsys.delete(fd, rk)
        if bpfsys.delete(fd, k):
            removed.append(decode_connection(k, v))
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
    abi.CTR_REPLIES_REBUILT: "replies_rebuilt",
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



# --- packet-path support: port prefilter, served addresses, egress devmap, reasons -------


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


def _sync_set(m: BpfMap, want: Mapping[bytes, tuple[Any, Any]]) -> tuple[int, int]:
    """Make a small hash map hold exactly ``want`` (bytes(key) -> (key, value))."""
    fd = m._require_open()
    have = {bytes(k): k for k in bpfsys.keys(fd, m.key_type)}
    for kb, (k, v) in want.items():
        if kb not in have:
            bpfsys.update(fd, k, v)
    gone = [k for kb, k in have.items() if kb not in want]
    for k in gone:
        bpfsys.delete(fd, k)
    return len(want.keys() - have.keys()), len(gone)


def set_local_addresses(local_addrs_map: BpfMap, addresses: Iterable[IpLike]
                        ) -> tuple[int, int]:
    """The addresses local to the LB's namespace (for listeners without an address).
    Returns (added, removed)."""
    want = {}
    for a in addresses:
        k = ct.c_uint32(ip_to_be(a))
        want[bytes(k)] = (k, ct.c_uint32(1))
    if len(want) > local_addrs_map.max_entries:
        raise ValueError(f"{len(want)} local addresses, more than the "
                         f"{local_addrs_map.max_entries} lbtui tracks")
    return _sync_set(local_addrs_map, want)


def local_addresses(local_addrs_map: BpfMap) -> list[str]:
    fd = local_addrs_map._require_open()
    return sorted((be_to_ip(k.value) for k in bpfsys.keys(fd, ct.c_uint32)),
                  key=lambda a: parse_ipv4(a))


def vip_key(ip: IpLike, port: int) -> abi.VipKey:
    return abi.VipKey(ip_to_be(ip), port_to_be(parse_port(port, "port")), 0)


def set_tx_ports(tx_ports_map: BpfMap, ifindexes: Iterable[int]) -> tuple[int, int]:
    """Make the egress devmap hold exactly these interfaces. Returns (added, removed)."""
    want = {}
    for i in ifindexes:
        k = ct.c_uint32(i)
        want[bytes(k)] = (k, ct.c_uint32(i))
    return _sync_set(tx_ports_map, want)


def tx_ports(tx_ports_map: BpfMap) -> list[int]:
    fd = tx_ports_map._require_open()
    return sorted(k.value for k in bpfsys.keys(fd, ct.c_uint32))


REASON_NAMES = {
    abi.REASON_FIB_MISS: "fib_miss",
    abi.REASON_NO_NEIGH: "no_neigh",
    abi.REASON_MTU: "mtu",
    abi.REASON_EGRESS_NOT_XDP: "egress_not_xdp",
    abi.REASON_VLAN: "vlan",
    abi.REASON_TTL: "ttl",
    abi.REASON_FRAGMENT: "fragment",
    abi.REASON_IP_OPTIONS: "ip_options",
    abi.REASON_CSUM_PARTIAL: "csum_partial",
    abi.REASON_NO_FLOW: "no_flow",
    abi.REASON_NO_TARGET: "no_target",
    abi.REASON_REPLY_CLASH: "reply_clash",
    abi.REASON_STALE_REPLY: "stale_reply",
    abi.REASON_NOT_VIP: "not_vip",
    abi.REASON_ICMP: "icmp_translated",
}


@functools.cache
def possible_cpus() -> int:
    """Slots in a per-CPU map value (the kernel's possible CPUs, not the online ones)."""
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    n = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


def read_reasons(reasons_map: BpfMap) -> dict[int, dict[str, int]]:
    """Packets per ingress interface (ifindex) and reason name, summed over CPUs."""
    fd = reasons_map._require_open()
    value_t = ct.c_uint64 * possible_cpus()
    out: dict[int, dict[str, int]] = {}
    for k in bpfsys.keys(fd, abi.ReasonKey):
        v = bpfsys.lookup(fd, k, value_t)
        if v is None:
            continue
        name = REASON_NAMES.get(k.reason, f"reason_{k.reason}")
        out.setdefault(k.ifindex, {})[name] = sum(v)
    return out
