"""Conntrack flows as compact rows for displays: decoded fast, formatted only when shown.

A row is a plain tuple straight from ``struct.iter_unpack`` over the batch buffers (about
1.5 µs per flow); addresses stay as network-order bytes, which sort in numeric order.
Strings are made only for the rows on screen (``client_of`` and friends).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Final

from lbtui import abi
from lbtui.maps.conntrack import CtReader, FiveTuple, conntrack_reader, ct_state
from lbtui.maps.mapset import BpfMap

# Row fields. KEY is the 16-byte conntrack key: client ip [0:4], VIP ip [4:8],
# client port [8:10], VIP port [10:12], proto [12]. TARGET is nat ip + nat port (6 bytes).
# Final, so the checker knows each field's type when a row is indexed with them.
KEY: Final = 0
FLAGS: Final = 1
TARGET: Final = 2
CREATED: Final = 3
LAST_SEEN: Final = 4
PKTS_FWD: Final = 5
PKTS_REV: Final = 6
BYTES_FWD: Final = 7
BYTES_REV: Final = 8
Row = tuple[bytes, int, bytes, int, int, int, int, int, int]

_KEY = struct.Struct("=16s")
# orig_dst (6 B: VIP ip + port; a row drops it, the key has it), flags, nat ip+port (6 B),
# reserved, six u64 counters.
_VALUE = struct.Struct("=6sH6s2xQQQQQQ")
_ODD = bytes(i & 1 for i in range(256))   # translate table: flags low byte -> REPLY bit


def ip_str(b: bytes) -> str:
    return socket.inet_ntoa(b)


def endpoint(ip: bytes, port: bytes) -> str:
    return f"{socket.inet_ntoa(ip)}:{int.from_bytes(port, 'big')}"


def client_of(r: Row) -> str:
    k = r[KEY]
    return endpoint(k[0:4], k[8:10])


def vip_of(r: Row) -> str:
    k = r[KEY]
    return endpoint(k[4:8], k[10:12])


def target_of(r: Row) -> str:
    return target_str(r[TARGET])


_target_names: dict[bytes, str] = {}


def target_str(t: bytes) -> str:
    """"ip:port" of a 6-byte target, cached (there are few targets and many rows)."""
    s = _target_names.get(t)
    if s is None:
        s = _target_names[t] = endpoint(t[0:4], t[4:6])
    return s


def proto_of(r: Row) -> str:
    return {6: "tcp", 17: "udp"}.get(r[KEY][12], str(r[KEY][12]))


def state_of(r: Row) -> str:
    return ct_state(r[FLAGS], r[KEY][12])


def five_tuple(r: Row) -> FiveTuple:
    k = r[KEY]
    return FiveTuple(ip_str(k[0:4]), ip_str(k[4:8]), int.from_bytes(k[8:10], "big"),
                     int.from_bytes(k[10:12], "big"), k[12])


def make_row(t: FiveTuple, target: tuple[str, int], *, flags: int = abi.CT_F_SEEN_REPLY,
             created_ns: int = 0, last_seen_ns: int = 0, packets: tuple[int, int] = (0, 0),
             nbytes: tuple[int, int] = (0, 0)) -> Row:
    """A row from readable values (tests and the benchmark)."""
    tgt = socket.inet_aton(target[0]) + target[1].to_bytes(2, "big")
    return (bytes(t.key()), flags, tgt, created_ns, last_seen_ns, packets[0], packets[1],
            nbytes[0], nbytes[1])


@dataclass
class ConnDump:
    """One read of the conntrack map."""

    rows: list[Row]
    total: int            # forward entries (connections) in the map
    entries: int          # all entries, reply entries included (the map's fill)
    sampled: bool = False  # True when rows holds only the first max_rows flows


def read_rows(reader: CtReader, max_rows: int | None = None) -> ConnDump:
    """Every forward flow of the map, as rows, with the reverse counts its reply entry
    holds added (the datapath counts replies there; joined by the reply entry's key and
    VIP:port). Past ``max_rows`` flows are only counted (the rows are then a sample in hash
    order, which is unrelated to any column)."""
    rows: list[Row] = []
    rev: dict[bytes, tuple[bytes, int, int]] = {}   # forward key -> (target, pkts, bytes)
    total = entries = 0
    ki, vi = _KEY.iter_unpack, _VALUE.iter_unpack
    for keys, values, n in reader.chunks():
        vb = memoryview(values).cast("B")[: n * 64]
        entries += n
        replies = bytes(vb[6::64]).translate(_ODD).count(1)
        total += n - replies
        kb = memoryview(keys).cast("B")[: n * 16]
        if replies:
            _collect_reverse(rev, kb, vb)
        if max_rows is not None and len(rows) >= max_rows:
            continue
        rows.extend([k + v[1:] for k, v in zip(ki(kb), vi(vb), strict=True)
                     if not v[1] & abi.CT_F_REPLY])
    if max_rows is not None and len(rows) > max_rows:
        del rows[max_rows:]
    if rev:
        _add_reverse(rows, rev)
    return ConnDump(rows, total, entries, total > len(rows))


def _collect_reverse(rev: dict[bytes, tuple[bytes, int, int]], kb: memoryview,
                     vb: memoryview) -> None:
    """Reply entries with counts of one batch, under their flow's forward key."""
    for (k,), v in zip(_KEY.iter_unpack(kb), _VALUE.iter_unpack(vb), strict=True):
        if v[1] & abi.CT_F_REPLY and (v[PKTS_REV] or v[BYTES_REV]):
            orig = v[0]
            fkey = k[4:8] + orig[0:4] + k[10:12] + orig[4:6] + k[12:16]
            rev[fkey] = (k[0:4] + k[8:10], v[PKTS_REV], v[BYTES_REV])


def _add_reverse(rows: list[Row], rev: dict[bytes, tuple[bytes, int, int]]) -> None:
    for i, r in enumerate(rows):
        hit = rev.get(r[KEY])
        if hit is not None and hit[0] == r[TARGET]:
            rows[i] = (r[KEY], r[FLAGS], r[TARGET], r[CREATED], r[LAST_SEEN], r[PKTS_FWD],
                       r[PKTS_REV] + hit[1], r[BYTES_FWD], r[BYTES_REV] + hit[2])


def open_reader(conntrack_map: BpfMap, chunk: int = 8192) -> CtReader:
    return conntrack_reader(conntrack_map, chunk)


# Sort keys on the raw bytes (ip then port), in numeric order.
def key_client(r: Row) -> bytes:
    return r[KEY][0:4] + r[KEY][8:10]


def key_vip(r: Row) -> bytes:
    return r[KEY][4:8] + r[KEY][10:12]


def key_proto(r: Row) -> int:
    return r[KEY][12]


