"""One snapshot of an instance's maps, taken on a worker thread.

Everything the views show comes from here: conntrack rows (batched reads through one
reusable reader), routes, settings and counters, plus the per-target traffic derived by
``TrafficTracker``. The clock is injectable so tests get deterministic figures.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from lbtui import maps as M
from lbtui.console.data.snapshot import InstanceInfo, ListenerRow, Rates, Snapshot
from lbtui.console.data.traffic import (
    TargetTraffic,
    TrafficTracker,
    by_group,
    source_finder,
)
from lbtui.maps.events import LbEvent
from lbtui.maps.flowrows import ConnDump, open_reader, read_rows
from lbtui.maps.routes import SniRouteRecord
from lbtui.targets import RouteRecord

# Past this many flows the console keeps a sample (the title says so): decoding a million
# flows into Python objects costs seconds and hundreds of MB per refresh.
MAX_ROWS = 250_000


@dataclass
class Clock:
    """CLOCK_MONOTONIC (the kernel's conntrack clock) and wall time."""

    mono_ns: Callable[[], int] = time.monotonic_ns
    wall: Callable[[], float] = time.time
    perf: Callable[[], float] = time.perf_counter   # for the read timings shown


class Collector:
    def __init__(self, maps: M.MapSet, info: InstanceInfo, *, clock: Clock | None = None,
                 max_rows: int | None = MAX_ROWS,
                 sweep: Callable[[], object] | None = None, sweep_interval: float = 5.0,
                 names: Callable[[], dict[int, str]] | None = None) -> None:
        self.maps = maps
        self.info = info
        self.clock = clock or Clock()
        self.max_rows = max_rows
        self.tracker = TrafficTracker()
        self._reader = open_reader(maps.conntrack_map)
        self._seq = 0
        self._prev_counters: tuple[int, dict[str, int]] | None = None
        self._rates = Rates()
        self._prev_stack: tuple[int, dict[int, dict[str, int]]] | None = None
        self._stack_pps = 0.0
        self._reason_rates: dict[int, dict[str, float]] = {}
        # The SNI names of the applied record (console.data.names); without it, only
        # those the maps' own names file had when they were opened.
        self._names = names
        self._sweep = sweep
        self._sweep_interval_ns = int(sweep_interval * 1e9)
        self._last_sweep_ns = 0

    def collect(self, events: list[LbEvent] | None = None) -> Snapshot:
        """Read everything once. ``events``: taken from the ring buffer since last time."""
        t0 = self.clock.perf()
        events = events or []
        now = self.clock.mono_ns()
        if self._sweep and now - self._last_sweep_ns >= self._sweep_interval_ns:
            self._last_sweep_ns = now
            self._sweep()
        dump: ConnDump = read_rows(self._reader, self.max_rows)
        read_ms = (self.clock.perf() - t0) * 1000
        sources = M.list_source_routes(self.maps.config_map)
        targets = self.tracker.update(dump.rows, now, events,
                                      source_finder(r.cidr for r in sources))
        counters = M.read_counters(self.maps.counters_map)
        self._rates = self._rates_from(now, counters, targets)
        reasons = M.read_reasons(self.maps.reasons_map)
        self._stack_rate(now, reasons)
        names = self._names() if self._names is not None else {}
        self._seq += 1
        snap = Snapshot(
            seq=self._seq, now_ns=now, wall=self.clock.wall(), info=self.info, conns=dump,
            listeners=self._listeners(), source_routes=sources,
            sni_routes=named(M.list_sni_routes(self.maps.sni_map), names),
            targets={k: copy.deepcopy(v) for k, v in targets.items()}, events=events,
            rates=self._rates, active=sum(t.active for t in targets.values()),
            stats_enabled=M.stats_enabled(self.maps.settings_map),
            conn_timeout=M.get_connection_timeout(self.maps.settings_map),
            counters=counters, ct_max=self.maps.conntrack_map.max_entries, reasons=reasons,
            group_traffic=by_group(self.tracker.by_via, names),
            stack_pps=self._stack_pps, reason_rates=self._reason_rates, sni_names=names,
            read_ms=read_ms)
        snap.total_ms = (self.clock.perf() - t0) * 1000
        return snap

    def _rates_from(self, now: int, counters: dict[str, int],
                    targets: dict[str, TargetTraffic]) -> Rates:
        prev, self._prev_counters = self._prev_counters, (now, counters)
        if prev is None or now <= prev[0]:
            if prev is not None:
                self._prev_counters = prev
            return self._rates
        dt = (now - prev[0]) / 1e9
        created = counters["flows_created"] - prev[1]["flows_created"]
        ts = targets.values()
        return Rates(max(0, created) / dt, sum(t.pps_fwd for t in ts),
                     sum(t.pps_rev for t in ts), sum(t.bps_fwd for t in ts),
                     sum(t.bps_rev for t in ts))

    def _stack_rate(self, now: int, reasons: dict[int, dict[str, int]]) -> None:
        """Packets to the stack per second over the last refresh: in all, and per
        interface and reason."""
        prev, self._prev_stack = self._prev_stack, (now, reasons)
        if prev is None or now <= prev[0]:
            if prev is not None:
                self._prev_stack = prev
            return
        dt = (now - prev[0]) / 1e9
        self._reason_rates = {
            i: {r: max(0, n - prev[1].get(i, {}).get(r, 0)) / dt for r, n in per.items()}
            for i, per in reasons.items()}
        self._stack_pps = sum(sum(per.values()) for per in self._reason_rates.values())

    def _listeners(self) -> list[ListenerRow]:
        """Listen entries grouped by port (one entry per interface in the map)."""
        by_port: dict[tuple[int, RouteRecord], list[int]] = {}
        for rec in M.list_listen_ports(self.maps.listen_map):
            by_port.setdefault((rec.port, rec.route), []).append(rec.ifindex)
        out = []
        for (port, route), idxs in sorted(by_port.items(), key=lambda kv: kv[0][0]):
            names = tuple(self.info.ifnames.get(i, f"if{i}") for i in sorted(idxs))
            out.append(ListenerRow(port, names, route))
        return out


def named(routes: list[SniRouteRecord], names: dict[int, str]) -> list[SniRouteRecord]:
    """SNI routes with the hostnames ``names`` knows (hash -> hostname)."""
    return sorted((replace(r, hostname=names.get(r.hostname_hash, r.hostname))
                   for r in routes), key=lambda r: (r.hostname or "~", r.hostname_hash))
