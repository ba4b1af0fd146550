"""Deterministic console data: fixed routes, flows and events, and a clock the test moves.

The scenario is plain data (``LISTENERS``, ``flow_specs``, ``fixed_events``) used two ways:
- written into real maps and read by the real ``Collector`` (the data-layer tests, root);
- turned into ``Snapshot`` objects without any BPF by ``FakeCollector`` (the UI snapshot
  tests, no root): rows made by ``flowrows.make_row`` and per-target traffic by the real
  ``TrafficTracker``, so both paths show the same figures.
"""

from __future__ import annotations

import copy
import ctypes as ct
import socket
from dataclasses import dataclass, field

from lbtui import abi, bpfsys
from lbtui import maps as M
from lbtui.console.data.collector import Clock, Collector
from lbtui.console.data.eventfeed import EventFeed
from lbtui.console.data.snapshot import InstanceInfo, ListenerRow, Rates, Snapshot
from lbtui.console.data.traffic import TrafficTracker, by_group
from lbtui.maps import flowrows as R
from lbtui.maps import settings
from lbtui.maps.events import LbEvent
from lbtui.maps.routes import SniRouteRecord, SourceRouteRecord
from lbtui.sni import hostname_hash
from lbtui.targets import RouteRecord, TargetGroup, decode_route

T0_NS = 5_000 * 1_000_000_000          # CLOCK_MONOTONIC of the first snapshot
WALL0 = 1_767_268_800.0                # 2026-01-01 12:00:00 UTC
VIP = "198.18.0.10"
IFINDEX = {"c1": 11, "c2": 12}
WEB = TargetGroup.of([("198.18.101.2", 8080, 50), ("198.18.102.2", 8080, 30),
                      ("198.18.103.2", 8080, 20)])
LISTENERS = [
    (80, WEB, abi.ROUTE_F_STATS),
    (443, TargetGroup.of([("198.18.101.2", 8443, 100)]),
     abi.ROUTE_F_STATS | abi.ROUTE_F_SNI | abi.ROUTE_F_TCP),
    (53, TargetGroup.of([("198.18.103.2", 9000, 100)]), abi.ROUTE_F_STATS | abi.ROUTE_F_UDP),
]
SOURCE_ROUTES = [("198.18.2.0/24", TargetGroup.of([("198.18.103.2", 8080, 100)]))]
SNI_ROUTES = [
    ("api.example.test", TargetGroup.of([("198.18.101.2", 8443, 70),
                                         ("198.18.102.2", 8443, 30)])),
    ("www.example.test", TargetGroup.of([("198.18.103.2", 8443, 0),
                                         ("198.18.102.2", 8443, 100)])),
]
CT_MAX = 4096
MAP_OPTIONS = {"max_connections": CT_MAX, "max_routes": 64, "max_sni_routes": 64}


@dataclass
class FakeClock:
    mono: int = T0_NS
    wall0: float = WALL0
    start: int = field(default=T0_NS)

    def mono_ns(self) -> int:
        return self.mono

    def wall(self) -> float:
        return self.wall0 + (self.mono - self.start) / 1e9

    def advance(self, seconds: float) -> None:
        self.mono += int(seconds * 1e9)


# --- the scenario ----------------------------------------------------------------------


@dataclass(frozen=True)
class Flow:
    client: tuple[str, int]
    vip_port: int
    target: tuple[str, int]
    proto: int = abi.IPPROTO_TCP
    flags: int = abi.CT_F_SEEN_REPLY
    created: int = 0
    last: int = 0
    packets: tuple[int, int] = (0, 0)
    nbytes: tuple[int, int] = (0, 0)

    def row(self) -> R.Row:
        t = M.FiveTuple(self.client[0], VIP, self.client[1], self.vip_port, self.proto)
        return R.make_row(t, self.target, flags=self.flags | abi.CT_F_STATS,
                          created_ns=self.created, last_seen_ns=self.last,
                          packets=self.packets, nbytes=self.nbytes)


NEW_PER_STEP = 10
TARGETS = [("198.18.101.2", 8080), ("198.18.102.2", 8080), ("198.18.103.2", 8080)]
STATES = [abi.CT_F_SEEN_REPLY, abi.CT_F_SEEN_REPLY, 0,
          abi.CT_F_SEEN_REPLY | abi.CT_F_FIN_FWD,
          abi.CT_F_SEEN_REPLY | abi.CT_F_FIN_FWD | abi.CT_F_FIN_REV,
          abi.CT_F_SEEN_REPLY | abi.CT_F_RST]


def flow_specs(step: int, now: int, n: int = 40) -> list[Flow]:
    """``n`` flows whose counters grow with ``step`` (a refresh number), new flows each
    step (about 5:3:2 over the web targets) and one UDP flow."""
    out = []
    for i in range(n):
        tgt = TARGETS[0 if i % 10 < 5 else 1 if i % 10 < 8 else 2]
        grow = sum(1 + (k * (i + 1)) % 4 for k in range(step + 1)) * (i % 7 + 1)
        out.append(Flow((f"198.18.{1 + i % 2}.2", 40000 + i), 80, tgt,
                        flags=STATES[i % len(STATES)],
                        created=T0_NS - (i + 1) * 7_000_000_000,
                        last=now - (i % 5) * 1_000_000_000,
                        packets=(10 * grow, 8 * grow), nbytes=(1200 * grow, 48000 * grow + i)))
    for j in range(NEW_PER_STEP * step):
        out.append(Flow(("198.18.1.2", 45000 + j), 80,
                        TARGETS[0 if j % 10 < 5 else 1 if j % 10 < 8 else 2],
                        created=now - 400_000_000 * (j % 3), last=now, packets=(6, 5),
                        nbytes=(700, 5200)))
    out.append(Flow(("198.18.1.2", 53000), 53, ("198.18.103.2", 9000), proto=abi.IPPROTO_UDP,
                    created=T0_NS - 3_000_000_000, last=now, packets=(2 + step, 2 + step),
                    nbytes=(120 + 60 * step, 300 + 150 * step)))
    return out


def counters_at(step: int) -> dict[str, int]:
    values = {abi.CTR_FLOWS_CREATED: 1000 + NEW_PER_STEP * step,
              abi.CTR_FLOWS_CLOSED: 900 + 7 * step, abi.CTR_FLOWS_DELETED: 12,
              abi.CTR_USER_EVENTS: 3}
    return {name: values.get(slot, 0) for slot, name in settings.COUNTER_NAMES.items()}


def reasons_at(step: int) -> dict[int, dict[int, int]]:
    """ifindex -> reason -> packets."""
    return {IFINDEX["c1"]: {abi.REASON_EGRESS_NOT_XDP: 400 + 15 * step},
            IFINDEX["c2"]: {abi.REASON_NO_FLOW: 7}}


def fixed_events() -> list[LbEvent]:
    out = []
    for i in range(12):
        tgt = TARGETS[i % 3]
        kind = "opened" if i % 3 else "closed"
        ts = T0_NS + 60_000_000_000 - (12 - i) * 1_500_000_000
        out.append(LbEvent(ts, kind, "tcp", "" if kind == "opened" else
                           ("fin", "rst", "aged")[i // 3 % 3], "198.18.1.2",
                           41000 + i, VIP, 80, tgt[0], tgt[1], ts - 4_000_000_000 * (i % 4),
                           0 if kind == "opened" else 12 + i, 0 if kind == "opened" else 10,
                           0 if kind == "opened" else 1500 + 10 * i,
                           0 if kind == "opened" else 90000 + 100 * i))
    return out


def info() -> InstanceInfo:
    return InstanceInfo(name="demo", interfaces=("c1", "c2"),
                        reply_interfaces=("b1", "b2", "b3"), xdp_mode="native",
                        netns="lbt-demo-lb", started_wall=WALL0 - 3725,
                        ifnames={v: k for k, v in IFINDEX.items()})


def hub_messages() -> list[dict]:
    """What a hub says besides flows, as it says it (NDJSON messages): per-(group, target)
    health, with backend3:8080 shared by listener :80 (failing there) and the source
    route (degraded), an SNI route the hub knows only by its hash, the active check that
    took backend3 out of rotation, an edit and two changes of state."""
    b1, b2, b3 = (f"{ip}:{port}" for ip, port in TARGETS)
    api = f"#{hostname_hash('api.example.test'):016x}"

    def health(kind: str, key: object, target: str, state: str, opened: int, closed: int,
               unanswered: int = 0, resets: int = 0, timeouts: int = 0) -> dict:
        return {"group": "?", "kind": kind, "key": key, "target": target, "state": state,
                "opened": opened, "closed": closed, "unanswered": unanswered,
                "timeouts": timeouts, "resets": resets, "connect_failed": 0}

    wall = WALL0 + 55
    return [
        {"type": "health", "checks": [
            {"target": b3, "state": "down", "last_error": "connection refused"},
            {"target": b1, "state": "up", "last_error": None}],
         "targets": [
            health("listener", 80, b1, "healthy", 1200, 1190),
            health("listener", 80, b2, "healthy", 700, 694, unanswered=2),
            health("listener", 80, b3, "failing", 480, 470, 212, 150, 9),
            health("source", "198.18.2.0/24", b3, "degraded", 90, 88, 11, 0, 11),
            health("sni", api, "198.18.101.2:8443", "healthy", 40, 40)]},
        {"type": "edit", "source": "ctl", "user": "alice", "ts": wall - 30,
         "change": f"listener :80: {b1} w40, {b2} w40, {b3} w20 -> {b1} w50, {b2} w30, "
                   f"{b3} w20"},
        {"type": "transition", "source": "traffic", "group": "listener :80", "target": b3,
         "from": "healthy", "to": "failing", "ts": wall - 12},
        {"type": "transition", "source": "check", "group": None, "target": b3,
         "from": "up", "to": "down", "why": "connection refused", "ts": wall - 10},
    ]


def event_feed() -> EventFeed:
    feed = EventFeed()
    for e in fixed_events():
        feed.push(e)
    for m in hub_messages():
        feed.on_message(m)
    return feed


# --- into real maps (root) ---------------------------------------------------------------


def put_flow(ms: M.MapSet, f: Flow) -> None:
    """A forward entry and its reply entry, as the datapath writes them."""
    be = socket.inet_aton
    k = abi.CtKey(int.from_bytes(be(f.client[0]), "little"), int.from_bytes(be(VIP), "little"),
                  socket.htons(f.client[1]), socket.htons(f.vip_port), f.proto)
    v = abi.CtValue(orig_dst_ip=k.dst_ip, orig_dst_port=k.dst_port,
                    flags=f.flags | abi.CT_F_STATS,
                    nat_dst_ip=int.from_bytes(be(f.target[0]), "little"),
                    nat_dst_port=socket.htons(f.target[1]), created_ns=f.created,
                    last_seen_ns=f.last, packets_fwd=f.packets[0], packets_rev=f.packets[1],
                    bytes_fwd=f.nbytes[0], bytes_rev=f.nbytes[1])
    rk = abi.CtKey(v.nat_dst_ip, k.src_ip, v.nat_dst_port, k.src_port, f.proto)
    rv = abi.CtValue(orig_dst_ip=k.dst_ip, orig_dst_port=k.dst_port,
                     flags=v.flags | abi.CT_F_REPLY, nat_dst_ip=v.nat_dst_ip,
                     nat_dst_port=v.nat_dst_port, created_ns=f.created, last_seen_ns=f.last)
    bpfsys.update(ms.conntrack_map.fd, rk, rv)
    bpfsys.update(ms.conntrack_map.fd, k, v)


def fill_flows(ms: M.MapSet, step: int, now: int, n: int = 40) -> None:
    for f in flow_specs(step, now, n):
        put_flow(ms, f)


def fill_routes(ms: M.MapSet) -> None:
    for idx in IFINDEX.values():
        for port, group, flags in LISTENERS:
            M.add_listen_port_weighted(ms.listen_map, idx, port, group, flags=flags)
    for cidr, group in SOURCE_ROUTES:
        M.add_source_route_weighted(ms.config_map, cidr, group)
    for host, group in SNI_ROUTES:
        M.add_sni_route(ms.sni_map, host, group)


def fill_counters(ms: M.MapSet, step: int) -> None:
    slots = {name: slot for slot, name in settings.COUNTER_NAMES.items()}
    for name, value in counters_at(step).items():
        settings.set_counter(ms.counters_map, slots[name], value)
    for ifindex, per in reasons_at(step).items():
        for reason, n in per.items():       # a per-CPU counter, all of it on CPU 0
            values = (ct.c_uint64 * M.possible_cpus())(n)
            bpfsys.update(ms.reasons_map.fd, abi.ReasonKey(ifindex, reason), values)


def make_maps() -> M.MapSet:
    ms = M.create_all_maps(MAP_OPTIONS)
    fill_routes(ms)
    return ms


def warm_collector(ms: M.MapSet, steps: int = 13, every: float = 5.0
                   ) -> tuple[Collector, FakeClock]:
    """A collector that has seen a minute of growing traffic (rates, sparklines)."""
    clock = FakeClock()
    col = Collector(ms, info(), clock=Clock(clock.mono_ns, clock.wall, lambda: 0.0))
    for step in range(steps):
        fill_flows(ms, step, clock.mono)
        fill_counters(ms, step)
        col.collect([])
        if step < steps - 1:
            clock.advance(every)
    return col, clock


# --- without BPF (no root) -----------------------------------------------------------------


def _record(group: TargetGroup, flags: int = 0) -> RouteRecord:
    return decode_route(group.to_route(flags))


class FakeCollector:
    """Snapshots of the scenario after ``steps`` refreshes ``every`` seconds apart, built
    in memory: what the Collector would read from maps filled by ``warm_collector``.
    Every ``collect`` is at that last instant (a frozen clock), like the real collector
    under the tests' clock."""

    def __init__(self, steps: int = 13, every: float = 5.0) -> None:
        self.info = info()
        self.clock = FakeClock()
        self.tracker = TrafficTracker()
        self.seq = 0
        self.rows: dict[bytes, R.Row] = {}   # the map: flows stay until deleted
        prev_created = None
        prev_reasons: dict[int, dict[int, int]] | None = None
        for step in range(steps):
            for f in flow_specs(step, self.clock.mono):
                r = f.row()
                self.rows[r[R.KEY]] = r
            self.tracker.update(list(self.rows.values()), self.clock.mono)
            created = counters_at(step)["flows_created"]
            if prev_created is not None:
                self.new_per_s = (created - prev_created) / every
            prev_created = created
            reasons = reasons_at(step)
            if prev_reasons is not None:
                self.reason_rates = {
                    i: {settings.REASON_NAMES[r]: (n - prev_reasons[i].get(r, 0)) / every
                        for r, n in per.items()} for i, per in reasons.items()}
                self.stack_pps = sum(sum(per.values()) for per in self.reason_rates.values())
            prev_reasons = reasons
            self.step = step
            if step < steps - 1:
                self.clock.advance(every)

    def collect(self, events: list[LbEvent] | None = None) -> Snapshot:
        self.seq += 1
        rows = list(self.rows.values())
        targets = self.tracker.update(rows, self.clock.mono)    # same instant: unchanged
        ts = targets.values()
        reason_names = settings.REASON_NAMES
        return Snapshot(
            seq=self.seq, now_ns=self.clock.mono, wall=self.clock.wall(), info=self.info,
            conns=R.ConnDump(rows, len(rows), 2 * len(rows)),
            listeners=[ListenerRow(port, tuple(IFINDEX), _record(g, flags))
                       for port, g, flags in sorted(LISTENERS, key=lambda x: x[0])],
            source_routes=[SourceRouteRecord(c, _record(g, abi.ROUTE_F_STATS))
                           for c, g in SOURCE_ROUTES],
            sni_routes=[SniRouteRecord(hostname_hash(h), h, _record(g, abi.ROUTE_F_STATS))
                        for h, g in SNI_ROUTES],
            targets={k: copy.deepcopy(v) for k, v in targets.items()}, events=events or [],
            rates=Rates(self.new_per_s, sum(t.pps_fwd for t in ts),
                        sum(t.pps_rev for t in ts), sum(t.bps_fwd for t in ts),
                        sum(t.bps_rev for t in ts)),
            active=sum(t.active for t in ts), stats_enabled=True, conn_timeout=300,
            counters=counters_at(self.step), ct_max=CT_MAX,
            reasons={i: {reason_names[r]: n for r, n in per.items()}
                     for i, per in reasons_at(self.step).items()},
            stack_pps=self.stack_pps, reason_rates=self.reason_rates,
            sni_names=(names := {hostname_hash(h): h for h, _ in SNI_ROUTES}),
            group_traffic=by_group(self.tracker.by_via, names))
