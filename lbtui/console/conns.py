"""Conntrack rows for the console: decoded fast, formatted only when shown.

A row is a plain tuple straight from ``struct.iter_unpack`` over the batch buffers (about
1.5 µs per flow); addresses stay as network-order bytes, which sort in numeric order.
Strings are made only for the rows on screen, or for all rows when a text filter is set.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import humanize

from lbtui import abi, bpfsys
from lbtui.maps import BpfMap, FiveTuple, conntrack_reader, ct_state

# Row fields. KEY is the 16-byte conntrack key: client ip [0:4], VIP ip [4:8],
# client port [8:10], VIP port [10:12], proto [12]. TARGET is nat ip + nat port (6 bytes).
KEY, FLAGS, TARGET, CREATED, LAST_SEEN, PKTS_FWD, PKTS_REV, BYTES_FWD, BYTES_REV = range(9)
Row = tuple  # (bytes, int, bytes, int, int, int, int, int, int)

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


def read_rows(reader: bpfsys.BatchReader, max_rows: int | None = None) -> ConnDump:
    """Every forward flow of the map, as rows. Past ``max_rows`` flows are only counted
    (the rows are then a sample in hash order, which is unrelated to any column)."""
    rows: list[Row] = []
    total = entries = 0
    ki, vi = _KEY.iter_unpack, _VALUE.iter_unpack
    for keys, values, n in reader.chunks():
        vb = memoryview(values).cast("B")[: n * 64]
        entries += n
        replies = bytes(vb[6::64]).translate(_ODD).count(1)
        total += n - replies
        if max_rows is not None and len(rows) >= max_rows:
            continue
        kb = memoryview(keys).cast("B")[: n * 16]
        rows.extend([k + v for k, v in zip(ki(kb), vi(vb), strict=True)
                     if not v[0] & abi.CT_F_REPLY])
    if max_rows is not None and len(rows) > max_rows:
        del rows[max_rows:]
    return ConnDump(rows, total, entries, total > len(rows))


def open_reader(conntrack_map: BpfMap, chunk: int = 8192) -> bpfsys.BatchReader:
    return conntrack_reader(conntrack_map, chunk)


# --- columns ---------------------------------------------------------------------------


def _dur(ns: int) -> str:
    return span(max(0, ns) // 1_000_000_000)


def span(s: int) -> str:
    """Seconds as a compact age: 42s, 3m05s, 2h07m, 1d04h."""
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def size(n: int) -> str:
    return humanize.naturalsize(n, binary=True, format="%.1f") if n >= 1024 else f"{n} B"


def count(n: int) -> str:
    return humanize.intcomma(n) if n < 1_000_000 else humanize.intword(n, "%.1f")


@dataclass(frozen=True)
class Column:
    name: str
    width: int
    text: Callable[[Row, int], str]           # (row, now_ns) -> cell text
    sort_key: Callable[[Row], Any]            # natural order of the displayed value...
    flip: bool = False                        # ...or its reverse (age: newest first)
    right: bool = False


_key_client = lambda r: r[KEY][0:4] + r[KEY][8:10]  # noqa: E731  (ip then port, bytes)
_key_vip = lambda r: r[KEY][4:8] + r[KEY][10:12]  # noqa: E731
_key_proto = lambda r: r[KEY][12]  # noqa: E731

COLUMNS: tuple[Column, ...] = (
    Column("client", 21, lambda r, _n: client_of(r), _key_client),
    Column("vip", 21, lambda r, _n: vip_of(r), _key_vip),
    Column("target", 21, lambda r, _n: target_of(r), itemgetter(TARGET)),
    Column("proto", 5, lambda r, _n: proto_of(r), _key_proto),
    Column("state", 11, lambda r, _n: state_of(r), state_of),
    # Sorting on the timestamps (C-level itemgetter) with the direction flipped is the
    # same order as sorting on age/idle, and much cheaper.
    Column("age", 7, lambda r, n: _dur(n - r[CREATED]), itemgetter(CREATED), flip=True,
           right=True),
    Column("idle", 7, lambda r, n: _dur(n - r[LAST_SEEN]), itemgetter(LAST_SEEN),
           flip=True, right=True),
    Column("pkts→", 8, lambda r, _n: count(r[PKTS_FWD]), itemgetter(PKTS_FWD), right=True),
    Column("pkts←", 8, lambda r, _n: count(r[PKTS_REV]), itemgetter(PKTS_REV), right=True),
    Column("bytes→", 10, lambda r, _n: size(r[BYTES_FWD]), itemgetter(BYTES_FWD),
           right=True),
    Column("bytes←", 10, lambda r, _n: size(r[BYTES_REV]), itemgetter(BYTES_REV),
           right=True),
)
COLUMN_NAMES = tuple(c.name for c in COLUMNS)

# Flow -> (target, "client vip target proto"): a flow's addresses never change, so the
# text a filter searches is made once per flow, not once per refresh.
_texts: dict[bytes, tuple[bytes, str]] = {}
_states: dict[int, str] = {}


def search_text(r: Row) -> str:
    k = r[KEY]
    hit = _texts.get(k)
    if hit is None or hit[0] != r[TARGET]:
        hit = _texts[k] = (r[TARGET], f"{client_of(r)} {vip_of(r)} {target_of(r)} "
                                      f"{proto_of(r)}")
    sk = r[FLAGS] << 8 | k[12]
    st = _states.get(sk)
    if st is None:
        st = _states[sk] = ct_state(r[FLAGS], k[12])
    return f"{hit[1]} {st}"


TIEBREAK_MAX = 20_000


@dataclass(frozen=True)
class ViewSpec:
    """How the operator wants the table: sort column, direction, filter text."""

    sort: str = "age"
    reverse: bool = False
    filter: str = ""


@dataclass
class ConnView:
    """Rows in display order, for one ViewSpec over one dump."""

    rows: list[Row]
    total: int
    sampled: bool
    spec: ViewSpec = field(default_factory=ViewSpec)


def apply_view(dump: ConnDump, spec: ViewSpec) -> ConnView:
    """Filter (every space-separated term must appear, case-insensitive) then sort. Runs
    off the UI thread: about 60 ms to sort 100k rows, more with a filter."""
    rows: Sequence[Row] = dump.rows
    terms = spec.filter.lower().split()
    if terms:
        if len(_texts) > 2 * len(rows) + 10_000:   # forget flows long gone
            _texts.clear()
        rows = [r for r in rows if all(t in search_text(r) for t in terms)]
    col = COLUMNS[COLUMN_NAMES.index(spec.sort)]
    if len(rows) <= TIEBREAK_MAX:
        # Ties in flow-key order rather than the map's hash order (seeded per map):
        # the same data shows the same way. Above this size, a tuple sort costs more
        # than it is worth and ties keep the (stable between refreshes) read order.
        rows = sorted(rows)
    out = sorted(rows, key=col.sort_key, reverse=spec.reverse != col.flip)
    return ConnView(out, dump.total, dump.sampled, spec)
