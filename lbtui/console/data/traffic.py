"""Per-target traffic derived from conntrack snapshots and closed events, per address and
per (group, target).

The datapath counts packets and bytes per flow, not per target. Between two snapshots a
target's traffic is the growth of its flows' counters, plus the full counters of flows
first seen, plus, for flows that disappeared, their final counters (from the "closed"
event) minus what the previous snapshot had already counted.

Every flow is also credited to the group that chose its target (a "via"): the listener
of its VIP port, the source route holding its client (the flow is flagged as source
routed), or, for a flow the SNI splicer proxies, the SNI route its opened event names. So
a target two listeners share has its own figures under each.
"""

from __future__ import annotations

import copy
import ipaddress
import socket
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lbtui import abi
from lbtui.maps.events import LbEvent
from lbtui.maps.flowrows import (
    BYTES_FWD,
    BYTES_REV,
    FLAGS,
    KEY,
    PKTS_FWD,
    PKTS_REV,
    TARGET,
    target_str,
)
from lbtui.model import GroupKey, GroupKind

# A conntrack row as flowrows reads it: (key, flags, target, created_ns, last_seen_ns,
# packets and bytes both ways).
FlowRow = tuple[Any, ...]
WINDOW_NS = 60 * 1_000_000_000
GONE_WAIT_NS = 10 * 1_000_000_000
TARGET_LEN = 6           # ip + port, as conntrack rows hold a target
# A via: which group chose a flow's target, after the target's 6 bytes in an account key.
LISTENER, SOURCE, SNI = b"L", b"S", b"N"     # + VIP port / source CIDR / SNI hash
CLIENT = b"C"            # + client address: a source-routed flow before its CIDR is known

# The hot loop below indexes rows by number; this is the layout it relies on.
assert (KEY, FLAGS, TARGET, PKTS_FWD, PKTS_REV, BYTES_FWD, BYTES_REV) == (0, 1, 2, 5, 6, 7, 8)


def is_closed(flags: int) -> bool:
    return bool(flags & abi.CT_F_RST) or (
        flags & (abi.CT_F_FIN_FWD | abi.CT_F_FIN_REV)) == (abi.CT_F_FIN_FWD | abi.CT_F_FIN_REV)


def event_key(ev: LbEvent) -> bytes:
    """The 16-byte conntrack key of the flow an event is about."""
    return (socket.inet_aton(ev.client_ip) + socket.inet_aton(ev.vip_ip)
            + ev.client_port.to_bytes(2, "big") + ev.vip_port.to_bytes(2, "big")
            + bytes([6 if ev.proto == "tcp" else 17, 0, 0, 0]))


def event_target(ev: LbEvent) -> bytes:
    return socket.inet_aton(ev.target_ip) + ev.target_port.to_bytes(2, "big")


def event_via(ev: LbEvent) -> bytes:
    """The group that chose an event's target (see the module doc)."""
    if ev.group == "sni":
        return SNI + ev.sni_hash.to_bytes(8, "big")
    if ev.group == "source":
        return CLIENT + socket.inet_aton(ev.client_ip)
    return LISTENER + ev.vip_port.to_bytes(2, "big")


def row_via(r: FlowRow, sni_of: dict[bytes, bytes]) -> bytes:
    """The group that chose a conntrack row's target: a spliced flow's SNI route (from its
    opened event), the source route of a flow flagged so, else its VIP port's listener."""
    k: bytes = r[KEY]
    f: int = r[FLAGS]
    if f & abi.CT_F_LOCAL and (via := sni_of.get(k)) is not None:
        return via
    if f & abi.CT_F_SOURCE:
        return CLIENT + k[0:4]
    return LISTENER + k[10:12]


@dataclass
class TargetTraffic:
    """One target's figures for the last interval, and its last minute."""

    target: str
    active: int = 0
    flows: int = 0
    new_per_s: float = 0.0
    pps_fwd: float = 0.0
    pps_rev: float = 0.0
    bps_fwd: float = 0.0
    bps_rev: float = 0.0
    total_bytes: int = 0
    # (end_ns, span_ns, bytes/s both ways) and (t_ns, new flows) of the last minute.
    rate_history: deque[tuple[int, int, float]] = field(default_factory=deque)
    new_history: deque[tuple[int, int]] = field(default_factory=deque)

    @property
    def new_last_minute(self) -> int:
        return sum(n for _, n in self.new_history)

    def sparkline(self, now_ns: int, width: int = 20) -> str:
        return sparkline(self.rate_history, now_ns, width)


_BARS = " ▁▂▃▄▅▆▇█"


def sparkline(samples: Iterable[tuple[int, int, float]], now_ns: int, width: int = 20,
              window_ns: int = WINDOW_NS) -> str:
    """The last ``window_ns`` as ``width`` cells, scaled to the window's peak. A sample
    (end_ns, span_ns, rate) covers (end - span, end]; each cell shows the sample covering
    its middle, so refresh periods longer than a cell leave no gaps."""
    samples = list(samples)
    cells = []
    for i in range(width):
        mid = now_ns - window_ns + (2 * i + 1) * window_ns // (2 * width)
        v = 0.0
        for end, span, rate in samples:
            if end - span < mid <= end:
                v = rate
                break
        cells.append(v)
    peak = max(cells)
    if peak <= 0:
        return _BARS[1] * width
    return "".join(_BARS[max(1, round(c / peak * 8))] for c in cells)


class TrafficTracker:
    """Turns successive conntrack dumps into per-target rates (see the module doc)."""

    def __init__(self) -> None:
        self._prev: dict[bytes, FlowRow] = {}
        self._prev_ns: int | None = None
        # Flows that left the map before their closed event arrived: last row, when.
        self._gone: dict[bytes, tuple[FlowRow, int]] = {}
        # Spliced flows' SNI route (a via), from their opened events.
        self._sni_of: dict[bytes, bytes] = {}
        self.targets: dict[str, TargetTraffic] = {}
        # Per (target, via): account key (target bytes + via) -> figures.
        self.by_via: dict[bytes, TargetTraffic] = {}

    def update(self, rows: list[FlowRow], now_ns: int, closed: Iterable[LbEvent] = (),
               source_of: Callable[[bytes], str | None] = lambda _ip: None
               ) -> dict[str, TargetTraffic]:
        """Account one snapshot taken at ``now_ns`` (CLOCK_MONOTONIC) and the events
        since the last one. ``source_of``: the source route (CIDR) holding a client
        address. A snapshot at the same instant as the last one changes nothing."""
        prev_ns = self._prev_ns
        if prev_ns is not None and now_ns <= prev_ns:
            return self.targets
        primed = prev_ns is not None
        dt = (now_ns - prev_ns) / 1e9 if prev_ns is not None else 0.0
        prev = self._prev
        get_prev = prev.get
        events = list(closed)
        sni_of = self._sni_of
        for ev in events:
            if ev.kind == "opened" and ev.group == "sni":
                sni_of[event_key(ev)] = event_via(ev)
        # target + via -> [active, flows, new, pf, pr, bf, br]
        acc: dict[bytes, list[int]] = {}
        get_acc = acc.get
        cur: dict[bytes, FlowRow] = {}
        rst, fins = abi.CT_F_RST, abi.CT_F_FIN_FWD | abi.CT_F_FIN_REV
        special, listener = abi.CT_F_LOCAL | abi.CT_F_SOURCE, LISTENER
        # The hot loop of a refresh (once per flow): no function calls in it but for
        # spliced and source-routed flows.
        for r in rows:
            k = r[0]
            cur[k] = r
            f = r[1]
            ak = r[2] + (row_via(r, sni_of) if f & special else listener + k[10:12])
            a = get_acc(ak)
            if a is None:
                a = acc[ak] = [0, 0, 0, 0, 0, 0, 0]
            a[1] += 1
            if not (f & rst or f & fins == fins):
                a[0] += 1
            p = get_prev(k)
            if p is None:
                if primed:
                    a[2] += 1
                a[3] += r[5]
                a[4] += r[6]
                a[5] += r[7]
                a[6] += r[8]
            else:
                d = r[5] - p[5]
                if d > 0:
                    a[3] += d
                d = r[6] - p[6]
                if d > 0:
                    a[4] += d
                d = r[7] - p[7]
                if d > 0:
                    a[5] += d
                d = r[8] - p[8]
                if d > 0:
                    a[6] += d
        finals = {event_key(e): e for e in events if e.kind == "closed"}
        gone = self._gone
        for k in prev.keys() - cur.keys():
            e = finals.pop(k, None)
            if e is None:   # its closed event may come with a later batch
                gone[k] = (prev[k], now_ns)
                continue
            self._add_final(acc, prev[k], e, sni_of)
        for k, e in finals.items():
            if k in cur:
                continue    # still listed (finished, lingering): counted by the deltas
            g = gone.pop(k, None)
            if g is not None:
                self._add_final(acc, g[0], e, sni_of)
                continue
            # Opened and closed between two snapshots, never listed (e.g. a spliced TLS
            # flow, deleted at its close): all of it happened in this interval.
            a = acc.setdefault(event_target(e) + event_via(e), [0, 0, 0, 0, 0, 0, 0])
            a[2] += primed
            a[3] += e.packets_fwd
            a[4] += e.packets_rev
            a[5] += e.bytes_fwd
            a[6] += e.bytes_rev
        for k in [k for k, (_, t) in gone.items() if now_ns - t > GONE_WAIT_NS]:
            del gone[k]
        for ev in events:
            if ev.kind == "closed":
                sni_of.pop(event_key(ev), None)
        self._prev, self._prev_ns = cur, now_ns
        acc = fold_sources(acc, source_of)
        per_target: dict[bytes, list[int]] = {}
        for ak, v in acc.items():
            t = per_target.get(ak[:TARGET_LEN])
            if t is None:
                per_target[ak[:TARGET_LEN]] = list(v)
            else:
                for i, n in enumerate(v):
                    t[i] += n
        _account(self.targets, {target_str(tb): v for tb, v in per_target.items()},
                 now_ns, dt)
        _account(self.by_via, acc, now_ns, dt, lambda ak: target_str(ak[:TARGET_LEN]))
        return self.targets

    @staticmethod
    def _add_final(acc: dict[bytes, list[int]], last: FlowRow, e: LbEvent,
                   sni_of: dict[bytes, bytes]) -> None:
        """A flow gone from the map: what its final counters add to its last row."""
        a = acc.setdefault(last[TARGET] + row_via(last, sni_of), [0, 0, 0, 0, 0, 0, 0])
        a[3] += max(0, e.packets_fwd - last[PKTS_FWD])
        a[4] += max(0, e.packets_rev - last[PKTS_REV])
        a[5] += max(0, e.bytes_fwd - last[BYTES_FWD])
        a[6] += max(0, e.bytes_rev - last[BYTES_REV])



def fold_sources(acc: dict[bytes, list[int]], source_of: Callable[[bytes], str | None]
                 ) -> dict[bytes, list[int]]:
    """Source-routed accounts (per client) merged per source route (its CIDR)."""
    if not any(ak[TARGET_LEN:TARGET_LEN + 1] == CLIENT for ak in acc):
        return acc
    out: dict[bytes, list[int]] = {}
    cidrs: dict[bytes, bytes] = {}
    for ak, v in acc.items():
        if ak[TARGET_LEN:TARGET_LEN + 1] == CLIENT:
            ip = ak[TARGET_LEN + 1:]
            if ip not in cidrs:
                cidrs[ip] = (source_of(ip) or "(removed)").encode()
            ak = ak[:TARGET_LEN] + SOURCE + cidrs[ip]
        t = out.get(ak)
        if t is None:
            out[ak] = list(v)
        else:
            for i, n in enumerate(v):
                t[i] += n
    return out


def _account(store: dict[Any, TargetTraffic], acc: dict[Any, list[int]], now_ns: int,
             dt: float, name: Callable[[Any], str] = str) -> None:
    """Set ``store``'s figures from one interval's accounts (keys alike; ``name``: the
    target's name of a key) and extend the histories."""
    for t in store.values():
        t.active = t.flows = 0
        t.new_per_s = t.pps_fwd = t.pps_rev = t.bps_fwd = t.bps_rev = 0.0
    for k, (active, flows, new, pf, pr, bf, br) in acc.items():
        t = store.get(k) or store.setdefault(k, TargetTraffic(name(k)))
        t.active, t.flows = active, flows
        t.total_bytes += bf + br
        if dt > 0:
            t.new_per_s, t.pps_fwd, t.pps_rev = new / dt, pf / dt, pr / dt
            t.bps_fwd, t.bps_rev = bf / dt, br / dt
    if dt <= 0:
        return
    for t in store.values():
        t.rate_history.append((now_ns, int(dt * 1e9), t.bps_fwd + t.bps_rev))
        t.new_history.append((now_ns, round(t.new_per_s * dt)))
        for h in (t.rate_history, t.new_history):
            while h and now_ns - h[0][0] >= WINDOW_NS:
                h.popleft()


def via_group(via: bytes, names: Mapping[int, str]) -> GroupKey:
    """The group a via names (SNI routes by hostname when ``names`` knows it)."""
    kind, rest = via[:1], via[1:]
    if kind == SOURCE:
        return GroupKey(GroupKind.SOURCE, rest.decode())
    if kind == SNI:
        h = int.from_bytes(rest, "big")
        return GroupKey(GroupKind.SNI, names.get(h) or f"#{h:016x}")
    return GroupKey(GroupKind.LISTENER, int.from_bytes(rest, "big"))


def by_group(by_via: Mapping[bytes, TargetTraffic], names: Mapping[int, str]
             ) -> dict[tuple[GroupKey, str], TargetTraffic]:
    """Per-(group, target) figures, copied (the UI gets them; the tracker goes on)."""
    return {(via_group(ak[TARGET_LEN:], names), t.target): copy.deepcopy(t)
            for ak, t in by_via.items()}


def source_finder(cidrs: Iterable[str]) -> Callable[[bytes], str | None]:
    """client address (4 bytes) -> the longest source route prefix holding it."""
    nets = sorted((ipaddress.IPv4Network(c) for c in cidrs), key=lambda n: -n.prefixlen)

    def find(ip: bytes) -> str | None:
        a = ipaddress.IPv4Address(ip)
        return next((str(n) for n in nets if a in n), None)
    return find
