"""Per-target traffic derived from conntrack snapshots and closed events.

The datapath counts packets and bytes per flow, not per target. Between two snapshots a
target's traffic is the growth of its flows' counters, plus the full counters of flows
first seen, plus, for flows that disappeared, their final counters (from the "closed"
event) minus what the previous snapshot had already counted.
"""

from __future__ import annotations

import socket
from collections import deque
from collections.abc import Iterable
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

# A conntrack row as flowrows reads it: (key, flags, target, created_ns, last_seen_ns,
# packets and bytes both ways).
FlowRow = tuple[Any, ...]
WINDOW_NS = 60 * 1_000_000_000
GONE_WAIT_NS = 10 * 1_000_000_000
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
        self.targets: dict[str, TargetTraffic] = {}

    def update(self, rows: list[FlowRow], now_ns: int, closed: Iterable[LbEvent] = ()
               ) -> dict[str, TargetTraffic]:
        """Account one snapshot taken at ``now_ns`` (CLOCK_MONOTONIC). A snapshot at the
        same instant as the last one changes nothing."""
        prev_ns = self._prev_ns
        if prev_ns is not None and now_ns <= prev_ns:
            return self.targets
        primed = prev_ns is not None
        dt = (now_ns - prev_ns) / 1e9 if prev_ns is not None else 0.0
        prev = self._prev
        get_prev = prev.get
        acc: dict[bytes, list[int]] = {}   # target -> [active, flows, new, pf, pr, bf, br]
        get_acc = acc.get
        cur: dict[bytes, FlowRow] = {}
        rst, fins = abi.CT_F_RST, abi.CT_F_FIN_FWD | abi.CT_F_FIN_REV
        # The hot loop of a refresh (once per flow): no function calls in it.
        for r in rows:
            k = r[0]
            cur[k] = r
            a = get_acc(r[2])
            if a is None:
                a = acc[r[2]] = [0, 0, 0, 0, 0, 0, 0]
            a[1] += 1
            f = r[1]
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
        finals = {event_key(e): e for e in closed if e.kind == "closed"}
        gone = self._gone
        for k in prev.keys() - cur.keys():
            e = finals.pop(k, None)
            if e is None:   # its closed event may come with a later batch
                gone[k] = (prev[k], now_ns)
                continue
            self._add_final(acc, prev[k], e)
        for k, e in finals.items():
            if k in cur:
                continue    # still listed (finished, lingering): counted by the deltas
            g = gone.pop(k, None)
            if g is not None:
                self._add_final(acc, g[0], e)
                continue
            # Opened and closed between two snapshots, never listed (e.g. a spliced TLS
            # flow, deleted at its close): all of it happened in this interval.
            a = acc.setdefault(event_target(e), [0, 0, 0, 0, 0, 0, 0])
            a[2] += primed
            a[3] += e.packets_fwd
            a[4] += e.packets_rev
            a[5] += e.bytes_fwd
            a[6] += e.bytes_rev
        for k in [k for k, (_, t) in gone.items() if now_ns - t > GONE_WAIT_NS]:
            del gone[k]
        self._prev, self._prev_ns = cur, now_ns
        self._account(acc, now_ns, dt)
        return self.targets

    @staticmethod
    def _add_final(acc: dict[bytes, list[int]], last: FlowRow, e: LbEvent) -> None:
        """A flow gone from the map: what its final counters add to its last row."""
        a = acc.setdefault(last[TARGET], [0, 0, 0, 0, 0, 0, 0])
        a[3] += max(0, e.packets_fwd - last[PKTS_FWD])
        a[4] += max(0, e.packets_rev - last[PKTS_REV])
        a[5] += max(0, e.bytes_fwd - last[BYTES_FWD])
        a[6] += max(0, e.bytes_rev - last[BYTES_REV])

    def _account(self, acc: dict[bytes, list[int]], now_ns: int, dt: float) -> None:
        for t in self.targets.values():
            t.active = t.flows = 0
            t.new_per_s = t.pps_fwd = t.pps_rev = t.bps_fwd = t.bps_rev = 0.0
        for tb, (active, flows, new, pf, pr, bf, br) in acc.items():
            name = target_str(tb)
            t = self.targets.get(name) or self.targets.setdefault(name, TargetTraffic(name))
            t.active, t.flows = active, flows
            t.total_bytes += bf + br
            if dt > 0:
                t.new_per_s, t.pps_fwd, t.pps_rev = new / dt, pf / dt, pr / dt
                t.bps_fwd, t.bps_rev = bf / dt, br / dt
        if dt <= 0:
            return
        for t in self.targets.values():
            t.rate_history.append((now_ns, int(dt * 1e9), t.bps_fwd + t.bps_rev))
            t.new_history.append((now_ns, round(t.new_per_s * dt)))
            for h in (t.rate_history, t.new_history):
                while h and now_ns - h[0][0] >= WINDOW_NS:
                    h.popleft()
