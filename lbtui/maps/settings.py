"""The settings array, the kernel's counters and the per-interface reasons."""

from __future__ import annotations

import ctypes as ct
import functools
from pathlib import Path
from typing import TYPE_CHECKING

from lbtui import abi, bpfsys

if TYPE_CHECKING:
    from lbtui.maps.mapset import BpfMap


# The settings a config file sets (the rest belong to the datapath and lbtui itself).
CONFIG_SETTINGS = (abi.SETTING_STATS_ENABLED, abi.SETTING_CONN_TIMEOUT_S,
                   abi.SETTING_SYN_FLOOD_RATE)


def setting_entry(index: int, value: int) -> tuple[ct.c_uint32, ct.c_uint32]:
    """(key, value) of a settings slot, for a transaction."""
    return ct.c_uint32(index), ct.c_uint32(value)


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
    abi.CTR_FLOOD_SYNS: "flood_syns",
    abi.CTR_FLOWS_DELETED: "flows_deleted",
    abi.CTR_FLOOD_FLOWS: "flood_flows",
    abi.CTR_FLOWS_ADOPTED: "flows_adopted",
}


def _per_cpu(counters_map: BpfMap, slot: int) -> ct.Array[ct.c_uint64]:
    """A counter's per-CPU values (the kernel adds on its own CPU without atomics)."""
    v = bpfsys.lookup(counters_map._require_open(), ct.c_uint32(slot),
                      ct.c_uint64 * possible_cpus())
    return v if v is not None else (ct.c_uint64 * possible_cpus())()


def read_counters(counters_map: BpfMap) -> dict[str, int]:
    return {name: sum(_per_cpu(counters_map, slot)) for slot, name in COUNTER_NAMES.items()}


def add_counter(counters_map: BpfMap, slot: int, n: int) -> None:
    """Userspace's own counts (flows it deleted): added to the first CPU's value."""
    values = _per_cpu(counters_map, slot)
    values[0] += n
    bpfsys.update(counters_map._require_open(), ct.c_uint32(slot), values)


def set_counter(counters_map: BpfMap, slot: int, value: int) -> None:
    """A counter to ``value`` (zero to reset): the first CPU holds it, the others 0."""
    values = (ct.c_uint64 * possible_cpus())(value)
    bpfsys.update(counters_map._require_open(), ct.c_uint32(slot), values)


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
