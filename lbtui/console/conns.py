"""The Connections table: columns, filtering and sorting over conntrack rows
(``lbtui.maps.flowrows``), off the UI thread. Strings are made only for the rows on
screen, or for all rows when a text filter is set."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import humanize

from lbtui.maps import ct_state
from lbtui.maps.flowrows import (
    BYTES_FWD,
    BYTES_REV,
    CREATED,
    FLAGS,
    KEY,
    LAST_SEEN,
    PKTS_FWD,
    PKTS_REV,
    TARGET,
    ConnDump,
    Row,
    client_of,
    key_client,
    key_proto,
    key_vip,
    proto_of,
    state_of,
    target_of,
    vip_of,
)

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


COLUMNS: tuple[Column, ...] = (
    Column("client", 21, lambda r, _n: client_of(r), key_client),
    Column("vip", 21, lambda r, _n: vip_of(r), key_vip),
    Column("target", 21, lambda r, _n: target_of(r), itemgetter(TARGET)),
    Column("proto", 5, lambda r, _n: proto_of(r), key_proto),
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
