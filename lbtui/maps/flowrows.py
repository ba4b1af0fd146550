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
# orig_dst (6 B, the key has it), flags, nat ip+port (6 B), reserved, six u64 counters.
_VALUE = struct.Struct("=6xH6s2xQQQQQQ")
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
    holds added (the datapath counts replies there). Past ``max_rows`` flows are only
    counted (the rows are then a sample in hash order, which is unrelated to any column).

    Two passes: the batches are read (and copied) first, since a flow's reply entry may
    come in any batch; the rows are built from the copies with the counts joined in."""
    kept: list[tuple[bytes, bytes]] = []
    rev: dict[bytes, int] = {}
    total = entries = 0
    for keys, values, n in reader.chunks():
        kb = bytes(memoryview(keys).cast("B")[: n * 16])
        vb = bytes(memoryview(values).cast("B")[: n * 64])
        entries += n
        replies = vb[6::64].translate(_ODD).count(1)
        if max_rows is None or total < max_rows:
            kept.append((kb, vb))
        total += n - replies
        if replies:
            rev.update(_reverse_counts(kb, vb, n))
    rows: list[Row] = []
    g = rev.get
    for kb, vb in kept:
        rows.extend([(k, f, t, c, s, pf, pr, bf, br) if (h := g(k + t)) is None
                     else (k, f, t, c, s, pf, pr + (h >> 64), bf, br + (h & _U64))
                     for (k,), (f, t, c, s, pf, pr, bf, br) in zip(
                         _KEY.iter_unpack(kb), _VALUE.iter_unpack(vb), strict=True)
                     if not f & abi.CT_F_REPLY])
    if max_rows is not None and len(rows) > max_rows:
        del rows[max_rows:]
    return ConnDump(rows, total, entries, total > len(rows))


# A reply entry, rearranged for the join with its flow's row (bytes copied for a whole
# batch at once with strided slices): the join key, 22 bytes, a row's KEY + TARGET (its
# flow's forward key: client ip, VIP ip, client port, VIP port, proto and pad; then its
# target: the reply's source ip and port), then its flags, packets_rev and bytes_rev.
# (destination offset, from the key (else the value), source offset, length). A dict hit
# on KEY + TARGET is the rule of lb_abi.h: the reply entry is under the flow's reply tuple
# and names the flow's VIP:port.
_JOINED = struct.Struct("=22sHQQ")
_U64 = (1 << 64) - 1    # the counts travel as one int: packets_rev << 64 | bytes_rev
_JOIN_FIELDS = ((0, True, 4, 4),       # client ip: the reply's destination
                (4, False, 0, 4),      # VIP ip: orig_dst_ip
                (8, True, 10, 2),      # client port: the reply's destination
                (10, False, 4, 2),     # VIP port: orig_dst_port
                (12, True, 12, 4),     # proto and pad
                (16, True, 0, 4),      # target ip: the reply's source
                (20, True, 8, 2),      # target port: the reply's source
                (22, False, 6, 2),     # flags
                (24, False, 40, 8),    # packets_rev
                (32, False, 56, 8))    # bytes_rev


def _reverse_counts(keys: bytes, values: bytes, n: int) -> dict[bytes, int]:
    """A batch's reply entries that counted packets, under their join key (a row's KEY +
    TARGET): packets_rev << 64 | bytes_rev (one int per entry: the console joins 100,000s
    of them on every refresh)."""
    size = _JOINED.size
    joined = bytearray(n * size)
    for dst, from_key, src, length in _JOIN_FIELDS:
        raw, stride = (keys, 16) if from_key else (values, 64)
        for i in range(length):
            joined[dst + i::size] = raw[src + i::stride]
    return {k: p << 64 | b for k, f, p, b in _JOINED.iter_unpack(joined)
            if f & abi.CT_F_REPLY and (p or b)}


def open_reader(conntrack_map: BpfMap, chunk: int = 8192) -> CtReader:
    return conntrack_reader(conntrack_map, chunk)


# Sort keys on the raw bytes (ip then port), in numeric order.
def key_client(r: Row) -> bytes:
    return r[KEY][0:4] + r[KEY][8:10]


def key_vip(r: Row) -> bytes:
    return r[KEY][4:8] + r[KEY][10:12]


def key_proto(r: Row) -> int:
    return r[KEY][12]


