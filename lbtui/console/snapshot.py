"""What one collection hands to the UI: plain data, never touched by the worker again."""

from __future__ import annotations

from dataclasses import dataclass, field

from lbtui import abi
from lbtui.console.conns import ConnDump
from lbtui.console.traffic import TargetTraffic
from lbtui.maps import SniRouteRecord, SourceRouteRecord
from lbtui.maps.events import LbEvent
from lbtui.targets import RouteRecord


@dataclass(frozen=True)
class InstanceInfo:
    """The instance as the header shows it; read once when the console opens."""

    name: str
    interfaces: tuple[str, ...] = ()
    reply_interfaces: tuple[str, ...] = ()
    xdp_mode: str = "?"
    netns: str | None = None
    started_wall: float | None = None         # time.time() when the datapath started
    ifnames: dict[int, str] = field(default_factory=dict)   # listen ifindex -> name
    owned: bool = False                       # this console started the datapath


@dataclass(frozen=True)
class ListenerRow:
    port: int
    interfaces: tuple[str, ...]
    route: RouteRecord

    @property
    def protocol(self) -> str:
        f = self.route.flags & (abi.ROUTE_F_TCP | abi.ROUTE_F_UDP)
        return {abi.ROUTE_F_TCP: "tcp", abi.ROUTE_F_UDP: "udp"}.get(f, "both")

    @property
    def stats(self) -> bool:
        return bool(self.route.flags & abi.ROUTE_F_STATS)

    @property
    def sni(self) -> bool:
        return bool(self.route.flags & abi.ROUTE_F_SNI)


@dataclass(frozen=True)
class Rates:
    """Whole-instance rates over the last interval (per second)."""

    new_conns: float = 0.0
    pps_fwd: float = 0.0
    pps_rev: float = 0.0
    bps_fwd: float = 0.0
    bps_rev: float = 0.0


@dataclass
class Snapshot:
    seq: int
    now_ns: int                 # CLOCK_MONOTONIC, the kernel's clock for conntrack times
    wall: float                 # time.time() at the same moment
    info: InstanceInfo
    conns: ConnDump
    listeners: list[ListenerRow]
    source_routes: list[SourceRouteRecord]
    sni_routes: list[SniRouteRecord]
    targets: dict[str, TargetTraffic]
    events: list[LbEvent]       # new since the previous snapshot
    rates: Rates
    active: int                 # flows not closed (of the rows read)
    stats_enabled: bool
    conn_timeout: int
    counters: dict[str, int]
    ct_max: int
    # Packets handed to the kernel stack (or handled specially) per ingress ifindex and
    # reason, totals since the maps were created; and their sum per second.
    reasons: dict[int, dict[str, int]] = field(default_factory=dict)
    stack_pps: float = 0.0
    read_ms: float = 0.0        # conntrack read + decode
    total_ms: float = 0.0       # whole collection

    @property
    def uptime_s(self) -> float | None:
        if self.info.started_wall is None:
            return None
        return max(0.0, self.wall - self.info.started_wall)

    def top_reason(self) -> str | None:
        """The reason most packets went to the stack for, over all interfaces."""
        totals: dict[str, int] = {}
        for per_if in self.reasons.values():
            for name, n in per_if.items():
                totals[name] = totals.get(name, 0) + n
        return max(totals, key=lambda k: totals[k]) if totals else None

    def wall_of(self, mono_ns: int) -> float:
        """time.time() of a CLOCK_MONOTONIC timestamp (event times)."""
        return self.wall - (self.now_ns - mono_ns) / 1e9
