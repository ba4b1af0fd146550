"""Deterministic console data on real maps: fixed routes, flows and events, and a clock the
test moves, so the collector's real code produces the same screen every run."""

from __future__ import annotations

import ctypes as ct
import socket
from dataclasses import dataclass, field

from lbtui import abi, bpfsys
from lbtui import maps as M
from lbtui.console.collector import Clock, Collector
from lbtui.console.eventfeed import EventFeed
from lbtui.console.snapshot import InstanceInfo
from lbtui.maps import settings
from lbtui.maps.events import LbEvent
from lbtui.targets import TargetGroup

T0_NS = 5_000 * 1_000_000_000          # CLOCK_MONOTONIC of the first snapshot
WALL0 = 1_767_268_800.0                # 2026-01-01 12:00:00 UTC
VIP = "198.18.0.10"
IFINDEX = {"c1": 11, "c2": 12}
WEB = TargetGroup.of([("198.18.101.2", 8080, 50), ("198.18.102.2", 8080, 30),
                      ("198.18.103.2", 8080, 20)])


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


def put_flow(ms: M.MapSet, client: tuple[str, int], vip_port: int, target: tuple[str, int],
             *, proto: int = abi.IPPROTO_TCP, flags: int = abi.CT_F_SEEN_REPLY,
             created: int, last: int, packets: tuple[int, int], nbytes: tuple[int, int]
             ) -> None:
    """A forward entry and its reply entry, as the datapath writes them."""
    be = socket.inet_aton
    k = abi.CtKey(int.from_bytes(be(client[0]), "little"), int.from_bytes(be(VIP), "little"),
                  socket.htons(client[1]), socket.htons(vip_port), proto)
    v = abi.CtValue(orig_dst_ip=k.dst_ip, orig_dst_port=k.dst_port,
                    flags=flags | abi.CT_F_STATS,
                    nat_dst_ip=int.from_bytes(be(target[0]), "little"),
                    nat_dst_port=socket.htons(target[1]), created_ns=created,
                    last_seen_ns=last, packets_fwd=packets[0], packets_rev=packets[1],
                    bytes_fwd=nbytes[0], bytes_rev=nbytes[1])
    rk = abi.CtKey(v.nat_dst_ip, k.src_ip, v.nat_dst_port, k.src_port, proto)
    rv = abi.CtValue(orig_dst_ip=k.dst_ip, orig_dst_port=k.dst_port,
                     flags=v.flags | abi.CT_F_REPLY, nat_dst_ip=v.nat_dst_ip,
                     nat_dst_port=v.nat_dst_port, created_ns=created, last_seen_ns=last)
    bpfsys.update(ms.conntrack_map.fd, rk, rv)
    bpfsys.update(ms.conntrack_map.fd, k, v)


def set_counter(ms: M.MapSet, slot: int, value: int) -> None:
    settings.set_counter(ms.counters_map, slot, value)


def set_reason(ms: M.MapSet, ifindex: int, reason: int, value: int) -> None:
    """A per-CPU reasons counter, all of it on CPU 0."""
    values = (ct.c_uint64 * M.possible_cpus())(value)
    bpfsys.update(ms.reasons_map.fd, abi.ReasonKey(ifindex, reason), values)


def fill_routes(ms: M.MapSet) -> None:
    for idx in IFINDEX.values():
        M.add_listen_port_weighted(ms.listen_map, idx, 80, WEB, flags=abi.ROUTE_F_STATS)
        M.add_listen_port_weighted(
            ms.listen_map, idx, 443, TargetGroup.of([("198.18.101.2", 8443, 100)]),
            flags=abi.ROUTE_F_STATS | abi.ROUTE_F_SNI | abi.ROUTE_F_TCP)
        M.add_listen_port_weighted(
            ms.listen_map, idx, 53, TargetGroup.of([("198.18.103.2", 9000, 100)]),
            flags=abi.ROUTE_F_STATS | abi.ROUTE_F_UDP)
    M.add_source_route_weighted(ms.config_map, "198.18.2.0/24", TargetGroup.of(
        [("198.18.103.2", 8080, 100)]))
    M.add_sni_route(ms.sni_map, "api.example.test", TargetGroup.of(
        [("198.18.101.2", 8443, 70), ("198.18.102.2", 8443, 30)]))
    M.add_sni_route(ms.sni_map, "www.example.test", TargetGroup.of(
        [("198.18.103.2", 8443, 0), ("198.18.102.2", 8443, 100)]))


NEW_PER_STEP = 10
TARGETS = [("198.18.101.2", 8080), ("198.18.102.2", 8080), ("198.18.103.2", 8080)]
STATES = [abi.CT_F_SEEN_REPLY, abi.CT_F_SEEN_REPLY, 0,
          abi.CT_F_SEEN_REPLY | abi.CT_F_FIN_FWD,
          abi.CT_F_SEEN_REPLY | abi.CT_F_FIN_FWD | abi.CT_F_FIN_REV,
          abi.CT_F_SEEN_REPLY | abi.CT_F_RST]


def fill_flows(ms: M.MapSet, step: int, now: int, n: int = 40) -> None:
    """``n`` flows whose counters grow with ``step`` (a refresh number)."""
    for i in range(n):
        tgt = TARGETS[0 if i % 10 < 5 else 1 if i % 10 < 8 else 2]
        grow = sum(1 + (k * (i + 1)) % 4 for k in range(step + 1)) * (i % 7 + 1)
        put_flow(ms, (f"198.18.{1 + i % 2}.2", 40000 + i), 80, tgt,
                 flags=STATES[i % len(STATES)], created=T0_NS - (i + 1) * 7_000_000_000,
                 last=now - (i % 5) * 1_000_000_000, packets=(10 * grow, 8 * grow),
                 nbytes=(1200 * grow, 48000 * grow + i))
    for j in range(NEW_PER_STEP * step):   # new flows each refresh, about 5:3:2
        put_flow(ms, ("198.18.1.2", 45000 + j), 80,
                 TARGETS[0 if j % 10 < 5 else 1 if j % 10 < 8 else 2],
                 created=now - 400_000_000 * (j % 3), last=now, packets=(6, 5),
                 nbytes=(700, 5200))
    put_flow(ms, ("198.18.1.2", 53000), 53, ("198.18.103.2", 9000), proto=abi.IPPROTO_UDP,
             created=T0_NS - 3_000_000_000, last=now, packets=(2 + step, 2 + step),
             nbytes=(120 + 60 * step, 300 + 150 * step))


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


def make_maps() -> M.MapSet:
    ms = M.create_all_maps({"max_connections": 4096, "max_routes": 64,
                            "max_sni_routes": 64})
    fill_routes(ms)
    return ms


def info() -> InstanceInfo:
    return InstanceInfo(name="demo", interfaces=("c1", "c2"),
                        reply_interfaces=("b1", "b2", "b3"), xdp_mode="native",
                        netns="lbt-demo-lb", started_wall=WALL0 - 3725,
                        ifnames={v: k for k, v in IFINDEX.items()})


def warm_collector(ms: M.MapSet, steps: int = 13, every: float = 5.0
                   ) -> tuple[Collector, FakeClock]:
    """A collector that has seen a minute of growing traffic (rates, sparklines)."""
    clock = FakeClock()
    col = Collector(ms, info(), clock=Clock(clock.mono_ns, clock.wall, lambda: 0.0))
    for step in range(steps):
        fill_flows(ms, step, clock.mono)
        set_counter(ms, abi.CTR_FLOWS_CREATED, 1000 + NEW_PER_STEP * step)
        set_counter(ms, abi.CTR_FLOWS_CLOSED, 900 + 7 * step)
        set_counter(ms, abi.CTR_FLOWS_DELETED, 12)
        set_counter(ms, abi.CTR_USER_EVENTS, 3)
        set_reason(ms, IFINDEX["c1"], abi.REASON_EGRESS_NOT_XDP, 400 + 15 * step)
        set_reason(ms, IFINDEX["c2"], abi.REASON_NO_FLOW, 7)
        col.collect([])
        if step < steps - 1:
            clock.advance(every)
    return col, clock


def event_feed() -> EventFeed:
    feed = EventFeed()
    for e in fixed_events():
        feed.push(e)
    return feed
