"""ctypes mirror of ``lbtui/datapath/bpf/lb_abi.h``: the map keys, values and the event struct.

The C header is the one definition; ``tests/datapath/test_dp_abi.py`` compiles it with BCC
and checks that every size and field offset here equals what BCC reports.
Fields typed ``*_be`` hold network-order bytes as they sit in the map.
"""

from __future__ import annotations

import ctypes as ct

ABI_VERSION = 4
MAX_TARGETS = 8

ROUTE_F_STATS = 1 << 0
ROUTE_F_SNI = 1 << 1
ROUTE_F_TCP = 1 << 2
ROUTE_F_UDP = 1 << 3
ROUTE_F_LOCAL = 1 << 4
ROUTE_F_ADDRESS = 1 << 5
ROUTE_F_MAGLEV = 1 << 6

CT_F_REPLY = 1 << 0
CT_F_SEEN_REPLY = 1 << 1
CT_F_FIN_FWD = 1 << 2
CT_F_FIN_REV = 1 << 3
CT_F_RST = 1 << 4
CT_F_STATS = 1 << 5
CT_F_CLOSE_SENT = 1 << 6
CT_F_LOCAL = 1 << 7
CT_F_SOURCE = 1 << 8
CT_F_RST_REV = 1 << 9
CT_F_ADOPTED = 1 << 10

SETTING_STATS_ENABLED = 0
SETTING_CONN_TIMEOUT_S = 1
SETTING_NH_CACHE_MS = 2
SETTING_NH_GENERATION = 3
SETTING_XDP_GENERIC = 4
SETTING_SYN_FLOOD_RATE = 5
SETTING_ABI_VERSION = 15
SETTINGS_MAX = 16

CTR_FLOWS_CREATED = 0
CTR_EVENTS_LOST = 1
CTR_NO_TARGET = 2
CTR_FLOWS_CLOSED = 3
CTR_SNI_PASSED = 4
CTR_USER_EVENTS = 5
CTR_REPLIES_REBUILT = 6
CTR_FLOOD_SYNS = 7
CTR_FLOWS_DELETED = 8
CTR_FLOOD_FLOWS = 9
CTR_FLOWS_ADOPTED = 10
COUNTERS_MAX = 16

MAX_TX_PORTS = 256
PORTS_LISTEN_BASE = 0
PORTS_TARGET_BASE = 1024
PORTS_MAX = 2048
MAX_LOCAL_ADDRS = 1024
MAX_VIPS = 1024
MAX_REASON_KEYS = 4096

REASON_FIB_MISS = 1
REASON_NO_NEIGH = 2
REASON_MTU = 3
REASON_EGRESS_NOT_XDP = 4
REASON_VLAN = 5
REASON_TTL = 6
REASON_FRAGMENT = 7
REASON_IP_OPTIONS = 8
REASON_CSUM_PARTIAL = 9
REASON_NO_FLOW = 10
REASON_NO_TARGET = 11
REASON_REPLY_CLASH = 12
REASON_STALE_REPLY = 13
REASON_NOT_VIP = 14
REASON_ICMP = 15
REASONS_MAX = 16

EVENT_OPENED = 1
EVENT_CLOSED = 2
EVENT_CONNECT_FAILED = 3
CLOSE_FIN = 1
CLOSE_RST = 2
CLOSE_AGED = 3
GROUP_LISTENER = 0
GROUP_SOURCE = 1
GROUP_SNI = 2
EVENT_F_REPLIED = 1 << 0
EVENT_F_RST_TARGET = 1 << 1

IPPROTO_TCP = 6
IPPROTO_UDP = 17


class ListenKey(ct.Structure):
    _fields_ = [("ifindex", ct.c_uint32), ("port", ct.c_uint16), ("pad", ct.c_uint16)]


class Target(ct.Structure):
    _fields_ = [("ip", ct.c_uint32), ("port", ct.c_uint16), ("cumulative_weight", ct.c_uint16)]


class Route(ct.Structure):
    _fields_ = [
        ("target_count", ct.c_uint8),
        ("reserved", ct.c_uint8 * 3),
        ("flags", ct.c_uint16),
        ("table", ct.c_uint16),
        ("targets", Target * MAX_TARGETS),
    ]


MAGLEV_SIZE = 65537          # the header's default table size (the layout test's)
MAGLEV_NO_TARGET = 255


def maglev_table_type(size: int) -> type[ct.Structure]:
    """struct lb_maglev_table for a map whose tables have ``size`` slots."""
    return _maglev_types.setdefault(size, type(
        f"MaglevTable{size}", (ct.Structure,), {"_fields_": [("slot", ct.c_uint8 * size)]}))


_maglev_types: dict[int, type[ct.Structure]] = {}
MaglevTable = maglev_table_type(MAGLEV_SIZE)


class LpmKey(ct.Structure):
    _fields_ = [("prefixlen", ct.c_uint32), ("ip", ct.c_uint32)]


SniKey = ct.c_uint64


class CtKey(ct.Structure):
    _fields_ = [
        ("src_ip", ct.c_uint32),
        ("dst_ip", ct.c_uint32),
        ("src_port", ct.c_uint16),
        ("dst_port", ct.c_uint16),
        ("proto", ct.c_uint8),
        ("pad", ct.c_uint8 * 3),
    ]


class CtValue(ct.Structure):
    _fields_ = [
        ("orig_dst_ip", ct.c_uint32),
        ("orig_dst_port", ct.c_uint16),
        ("flags", ct.c_uint16),
        ("nat_dst_ip", ct.c_uint32),
        ("nat_dst_port", ct.c_uint16),
        ("reserved", ct.c_uint16),
        ("created_ns", ct.c_uint64),
        ("last_seen_ns", ct.c_uint64),
        ("packets_fwd", ct.c_uint64),
        ("packets_rev", ct.c_uint64),
        ("bytes_fwd", ct.c_uint64),
        ("bytes_rev", ct.c_uint64),
    ]


class VipKey(ct.Structure):
    _fields_ = [("ip", ct.c_uint32), ("port", ct.c_uint16), ("pad", ct.c_uint16)]


class ReasonKey(ct.Structure):
    _fields_ = [("ifindex", ct.c_uint32), ("reason", ct.c_uint32)]


class Event(ct.Structure):
    _fields_ = [
        ("ts_ns", ct.c_uint64),
        ("packets_fwd", ct.c_uint64),
        ("packets_rev", ct.c_uint64),
        ("bytes_fwd", ct.c_uint64),
        ("bytes_rev", ct.c_uint64),
        ("created_ns", ct.c_uint64),
        ("sni_hash", ct.c_uint64),
        ("client_ip", ct.c_uint32),
        ("vip_ip", ct.c_uint32),
        ("target_ip", ct.c_uint32),
        ("client_port", ct.c_uint16),
        ("vip_port", ct.c_uint16),
        ("target_port", ct.c_uint16),
        ("type", ct.c_uint8),
        ("proto", ct.c_uint8),
        ("reason", ct.c_uint8),
        ("group", ct.c_uint8),
        ("flags", ct.c_uint8),
        ("pad", ct.c_uint8),
    ]


# (python type, C struct name, expected size) for the layout test and the docs.
LAYOUTS: dict[str, tuple[type[ct.Structure], str, int]] = {
    "listen_key": (ListenKey, "lb_listen_key", 8),
    "route": (Route, "lb_route", 72),
    "lpm_key": (LpmKey, "lb_lpm_key", 8),
    "ct_key": (CtKey, "lb_ct_key", 16),
    "ct_value": (CtValue, "lb_ct_value", 64),
    "event": (Event, "lb_event", 80),
    "vip_key": (VipKey, "lb_vip_key", 8),
    "reason_key": (ReasonKey, "lb_reason_key", 8),
    "maglev_table": (MaglevTable, "lb_maglev_table", MAGLEV_SIZE),
}
