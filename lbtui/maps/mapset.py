"""The map set of one datapath: creating, pinning and re-opening its maps, and the
layout checks that refuse maps of another lbtui version."""

from __future__ import annotations

import ctypes as ct
import errno
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lbtui import abi, bpfsys, maglev
from lbtui.maps.settings import enable_stats, set_connection_timeout, set_setting
from lbtui.maps.sni_names import SniNames

DEFAULT_CONFIG: dict[str, int] = {
    "max_routes": 10000,
    "max_listen_ports": 256,
    "max_sni_routes": 1000,
    "max_connections": 100000,
    "settings_entries": abi.SETTINGS_MAX,
    "ringbuf_size": 256 * 1024,
    "connection_timeout": 300,
    "nexthop_cache_ms": 100,
    # 1: the conntrack LRU keeps one LRU list per CPU (BPF_F_NO_COMMON_LRU). Entries stay
    # visible to every CPU; only eviction bookkeeping is per CPU, and each CPU's list holds
    # max_connections / CPUs entries, so one busy CPU evicts while the table is half empty.
    # Measured on 2 CPUs, new flows are slower with it, twice as slow once the table is
    # full (docs/benchmarks.md, issue 16): an option, not the default.
    "conntrack_per_cpu_lru": 0,
    # Maglev lookup tables (lbtui.maglev): slots per table (a prime; one byte each) and
    # how many groups may use hash = "maglev" (two tables each, see lb_abi.h).
    "maglev_table_size": maglev.DEFAULT_TABLE_SIZE,
    "max_maglev_groups": 64,
    # New TCP flows per second per CPU above which SYNs create no flow until the client
    # completes the handshake (SYN flood guard, see lb_xdp.c); 0 = off, below 8 = every
    # SYN. Off by default: docs/configuration.md says why and what to set.
    "syn_flood_rate": 0,
}


# Map file names under a pin directory; also the BCC table names in lbtui/datapath/bpf/lb_xdp.c.
PIN_NAMES = ("listen", "config", "sni", "conntrack", "settings", "counters", "stats", "ports",
             "local_addrs", "vips", "reasons", "tx_ports", "maglev")


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
    maglev_map: BpfMap
    pin_dir: Path | None = None

    def by_pin_name(self) -> dict[str, BpfMap]:
        return {"listen": self.listen_map, "config": self.config_map, "sni": self.sni_map,
                "conntrack": self.conntrack_map, "settings": self.settings_map,
                "counters": self.counters_map, "stats": self.stats_ringbuf,
                "ports": self.ports_map, "local_addrs": self.local_addrs_map,
                "vips": self.vips_map, "reasons": self.reasons_map,
                "tx_ports": self.tx_ports_map, "maglev": self.maglev_map}

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
                if name == "maglev":       # one byte per slot: the value size is the size
                    val_t = abi.maglev_table_type(info.value_size)
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
    if name == "maglev" and maglev.table_size_problem(info.value_size) is None:
        want = (*want[:2], info.value_size)     # any valid table size
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
    "maglev": (ct.c_uint32, abi.MaglevTable),  # value: its own size (maglev_table_type)
}


_MAP_TYPES: dict[str, int] = {
    "listen": bpfsys.MAP_TYPE_HASH, "config": bpfsys.MAP_TYPE_LPM_TRIE,
    "sni": bpfsys.MAP_TYPE_HASH, "conntrack": bpfsys.MAP_TYPE_LRU_HASH,
    "settings": bpfsys.MAP_TYPE_ARRAY, "counters": bpfsys.MAP_TYPE_PERCPU_ARRAY,
    "stats": bpfsys.MAP_TYPE_RINGBUF, "ports": bpfsys.MAP_TYPE_ARRAY,
    "local_addrs": bpfsys.MAP_TYPE_HASH, "vips": bpfsys.MAP_TYPE_HASH,
    "reasons": bpfsys.MAP_TYPE_PERCPU_HASH, "tx_ports": bpfsys.MAP_TYPE_DEVMAP_HASH,
    "maglev": bpfsys.MAP_TYPE_ARRAY,
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
                  vips_map=m["vips"], reasons_map=m["reasons"], tx_ports_map=m["tx_ports"],
                  maglev_map=m["maglev"])


def _positive(opts: Mapping[str, Any], key: str) -> int:
    v = opts.get(key, DEFAULT_CONFIG[key])
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"{key}: {v!r} must be a positive integer")
    return v


def _create(name: str, max_entries: int, flags: int = 0, val_t: Any = None) -> BpfMap:
    key_t, default_val_t = _TYPES[name]
    val_t = val_t or default_val_t
    ks = ct.sizeof(key_t) if key_t else 0
    vs = ct.sizeof(val_t) if val_t else 0
    map_type = _MAP_TYPES[name]
    fd = bpfsys.create_map(map_type, f"lb_{name}", ks, vs, max_entries, flags)
    return BpfMap(name, fd, map_type, key_t, val_t, max_entries)


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


def create_conntrack_map(max_connections: int = DEFAULT_CONFIG["max_connections"],
                         per_cpu_lru: bool = False) -> BpfMap:
    """Shared LRU hash, never a per-CPU hash: a reply handled on another CPU than its
    flow's first packet must see the NAT state. Each flow takes two entries.
    ``per_cpu_lru``: per-CPU LRU lists (see DEFAULT_CONFIG["conntrack_per_cpu_lru"])."""
    n = _positive({"max_connections": max_connections}, "max_connections")
    return _create("conntrack", n, bpfsys.BPF_F_NO_COMMON_LRU if per_cpu_lru else 0)


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


def create_maglev_map(table_size: int = DEFAULT_CONFIG["maglev_table_size"],
                      max_groups: int = DEFAULT_CONFIG["max_maglev_groups"]) -> BpfMap:
    """The Maglev lookup tables: two per group (see lb_abi.h), ``table_size`` bytes each,
    so ``2 * max_groups * table_size`` bytes of kernel memory (16 MiB at most)."""
    problem = maglev.table_size_problem(table_size)
    if problem:
        raise ValueError(f"maglev_table_size: {problem}")
    n = _positive({"max_maglev_groups": max_groups}, "max_maglev_groups")
    if n > MAX_MAGLEV_GROUPS:
        raise ValueError(f"max_maglev_groups: {n} is more than {MAX_MAGLEV_GROUPS}")
    return _create("maglev", 2 * n, val_t=abi.maglev_table_type(table_size))


MAX_MAGLEV_GROUPS = 1024       # struct lb_route.table is a u16; memory is the real bound


def create_all_maps(opts: Mapping[str, Any] | None = None) -> MapSet:
    """Create every map. ``opts`` overrides DEFAULT_CONFIG keys (max_routes, ...).

    Settings start with stats enabled and the default connection timeout."""
    o = {**DEFAULT_CONFIG, **(opts or {})}
    unknown = set(o) - set(DEFAULT_CONFIG)
    if unknown:
        raise ValueError(f"unknown map option(s): {', '.join(sorted(unknown))}")
    # Validate everything before creating anything.
    for key in DEFAULT_CONFIG:
        if key in ("connection_timeout", "nexthop_cache_ms", "syn_flood_rate"):  # 0 = off
            v = o[key]
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 0xFFFFFFFF:
                raise ValueError(f"{key}: {v!r} must be an integer 0..4294967295")
        elif key == "conntrack_per_cpu_lru":
            if o[key] not in (0, 1):
                raise ValueError(f"{key}: {o[key]!r} must be 0 or 1")
        elif key == "maglev_table_size":
            if problem := maglev.table_size_problem(o[key]):
                raise ValueError(f"{key}: {problem}")
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
        created["conntrack"] = create_conntrack_map(o["max_connections"],
                                                    bool(o["conntrack_per_cpu_lru"]))
        created["settings"] = create_settings_map(o["settings_entries"])
        created["stats"] = create_stats_ringbuf(o["ringbuf_size"])
        created["counters"] = create_counters_map()
        created["ports"] = create_ports_map()
        created["local_addrs"] = create_local_addrs_map()
        created["vips"] = create_vips_map()
        created["reasons"] = create_reasons_map()
        created["tx_ports"] = create_tx_ports_map()
        created["maglev"] = create_maglev_map(o["maglev_table_size"], o["max_maglev_groups"])
    except (OSError, ValueError):
        for m in created.values():
            m.close()
        raise
    ms = _assemble(created)
    set_setting(ms.settings_map, abi.SETTING_ABI_VERSION, abi.ABI_VERSION)
    enable_stats(ms.settings_map)
    set_connection_timeout(ms.settings_map, o["connection_timeout"])
    set_setting(ms.settings_map, abi.SETTING_NH_CACHE_MS, o["nexthop_cache_ms"])
    set_setting(ms.settings_map, abi.SETTING_SYN_FLOOD_RATE, o["syn_flood_rate"])
    return ms


def close_all_maps(maps: MapSet) -> None:
    """Close every map fd. Pinned maps live on until unpinned."""
    for m in maps:
        m.close()


def count_entries(m: BpfMap) -> int:
    """Entries in a (small) map, by walking its keys."""
    return sum(1 for _ in bpfsys.keys(m._require_open(), m.key_type))


def map_fd(m: BpfMap) -> int:
    return m._require_open()
