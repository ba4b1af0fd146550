"""The Connections table: columns, filtering and sorting over conntrack rows
(``lbtui.maps.flowrows``), off the UI thread. Strings are made only for the rows on
screen, or for all rows when a filter is set."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Final

from lbtui import abi
from lbtui.console.data.filters import Filter, parse_filter
from lbtui.console.data.fmt import count, size, span
from lbtui.console.data.traffic import FlowRow
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


@dataclass(frozen=True)
class Column:
    name: str
    width: int
    text: Callable[[FlowRow, int], str]       # (row, now_ns) -> cell text
    sort_key: Callable[[FlowRow], Any]        # natural order of the displayed value...
    flip: bool = False                        # ...or its reverse (age: newest first)
    right: bool = False
    field: str | None = None                  # filter/export name when not the name
    drop: int = 0                             # narrow screens leave out the highest first
    value: Callable[[FlowRow, int], object] | None = None   # raw value for exports


COLUMNS: tuple[Column, ...] = (
    Column("client", 21, lambda r, _n: client_of(r), key_client),
    Column("vip", 21, lambda r, _n: vip_of(r), key_vip, drop=3),
    Column("target", 21, lambda r, _n: target_of(r), itemgetter(TARGET)),
    Column("proto", 5, lambda r, _n: proto_of(r), key_proto),
    Column("state", 11, lambda r, _n: state_of(r), state_of),
    # Sorting on the timestamps (C-level itemgetter) with the direction flipped is the
    # same order as sorting on age/idle, and much cheaper.
    Column("age", 7, lambda r, n: _dur(n - r[CREATED]), itemgetter(CREATED), flip=True,
           right=True, drop=2, value=lambda r, n: max(0, n - r[CREATED]) // 1_000_000_000),
    Column("idle", 7, lambda r, n: _dur(n - r[LAST_SEEN]), itemgetter(LAST_SEEN),
           flip=True, right=True, drop=4,
           value=lambda r, n: max(0, n - r[LAST_SEEN]) // 1_000_000_000),
    Column("pkts→", 8, lambda r, _n: count(r[PKTS_FWD]), itemgetter(PKTS_FWD), right=True,
           field="packets_fwd", drop=6, value=lambda r, _n: r[PKTS_FWD]),
    Column("pkts←", 8, lambda r, _n: count(r[PKTS_REV]), itemgetter(PKTS_REV), right=True,
           field="packets_rev", drop=6, value=lambda r, _n: r[PKTS_REV]),
    Column("bytes→", 10, lambda r, _n: size(r[BYTES_FWD]), itemgetter(BYTES_FWD),
           right=True, field="bytes_fwd", drop=5, value=lambda r, _n: r[BYTES_FWD]),
    Column("bytes←", 10, lambda r, _n: size(r[BYTES_REV]), itemgetter(BYTES_REV),
           right=True, field="bytes_rev", drop=5, value=lambda r, _n: r[BYTES_REV]),
)
COLUMN_NAMES = tuple(c.name for c in COLUMNS)
# What a filter can name; free text searches all of them.
FIELDS = ("client", "vip", "target", "proto", "state")
ALIASES = {"backend": "target", "src": "client", "dst": "vip"}


def parse(text: str) -> Filter:
    """A Connections filter (FilterError says why not)."""
    return parse_filter(text, FIELDS, ALIASES)


# Flow -> (target, (client, vip, target, proto)): a flow's addresses never change, so the
# strings a filter looks at are made once per flow, not once per refresh.
_texts: dict[bytes, tuple[bytes, tuple[str, str, str, str]]] = {}
_states: dict[int, str] = {}


def filter_record(r: FlowRow) -> tuple[str, str, str, str, str]:
    """The row's FIELDS, lower-case."""
    k = r[KEY]
    hit = _texts.get(k)
    if hit is None or hit[0] != r[TARGET]:
        hit = _texts[k] = (r[TARGET], (client_of(r), vip_of(r), target_of(r), proto_of(r)))
    sk = r[FLAGS] << 8 | k[12]
    st = _states.get(sk)
    if st is None:
        st = _states[sk] = ct_state(r[FLAGS], k[12])
    return (*hit[1], st)


# A cluster console's rows carry their node's index after the nine conntrack fields.
NODE: Final = 9


@dataclass(frozen=True)
class ConnTable:
    """The Connections table's columns, what its filter can name, and each row's values
    of those fields: one instance's (``SINGLE``), or a cluster's, with a node column."""

    columns: tuple[Column, ...] = COLUMNS
    fields: tuple[str, ...] = FIELDS
    record: Callable[[FlowRow], tuple[str, ...]] = filter_record

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        return self.columns[self.names.index(name)]


SINGLE = ConnTable()


def cluster_table(nodes: Sequence[str]) -> ConnTable:
    """The table of a console over ``nodes``: a node column first, filterable (node:b)."""
    names = tuple(nodes)
    node = Column("node", max(6, *(len(n) + 1 for n in names)),
                  lambda r, _n: names[r[NODE]], itemgetter(NODE),
                  value=lambda r, _n: names[r[NODE]])
    return ConnTable((node, *COLUMNS), ("node", *FIELDS),
                     lambda r: (names[r[NODE]], *filter_record(r)))


TIEBREAK_MAX = 20_000


@dataclass(frozen=True)
class ViewSpec:
    """How the operator wants the table: sort column, direction, filter, and whether
    closed flows (FIN both ways) are shown."""

    sort: str = "age"
    reverse: bool = False
    filter: Filter = field(default_factory=Filter)
    show_closed: bool = False


@dataclass
class ConnView:
    """Rows in display order, for one ViewSpec over one dump."""

    rows: list[FlowRow]
    total: int
    sampled: bool
    spec: ViewSpec = field(default_factory=ViewSpec)
    closed_hidden: int = 0      # closed flows the filter kept but the view leaves out


_FINS = abi.CT_F_FIN_FWD | abi.CT_F_FIN_REV
_RST = abi.CT_F_RST


def is_closed(flags: int) -> bool:
    """State "closed": FIN both ways, no reset (reset flows stay in view, in red)."""
    return flags & _FINS == _FINS and not flags & _RST


def apply_view(dump: ConnDump, spec: ViewSpec, table: ConnTable = SINGLE) -> ConnView:
    """Filter, leave out closed flows (unless asked; counted among those the filter
    kept), then sort (``table``: the columns and fields). Runs off the UI thread: about
    60 ms to sort 100k rows, more with a filter."""
    rows: Sequence[FlowRow] = dump.rows
    if spec.filter:
        if len(_texts) > 2 * len(rows) + 10_000:   # forget flows long gone
            _texts.clear()
        match = spec.filter.matcher(table.fields)
        rec = table.record
        rows = [r for r in rows if match(rec(r))]
    hidden = 0
    if not spec.show_closed:
        n = len(rows)
        rows = [r for r in rows if not is_closed(r[FLAGS])]
        hidden = n - len(rows)
    col = table.column(spec.sort)
    if len(rows) <= TIEBREAK_MAX:
        # Ties in flow-key order rather than the map's hash order (seeded per map):
        # the same data shows the same way. Above this size, a tuple sort costs more
        # than it is worth and ties keep the (stable between refreshes) read order.
        rows = sorted(rows)
    out = sorted(rows, key=col.sort_key, reverse=spec.reverse != col.flip)
    return ConnView(out, dump.total, dump.sampled, spec, hidden)


# How a row is coloured: a reset flow, or a TCP flow the target never answered.
STATE_CLASS = {"reset": "bad", "syn-sent": "warn", "closed": "dim", "closing": "dim"}


def row_class(r: FlowRow) -> str | None:
    return STATE_CLASS.get(state_of(r))
