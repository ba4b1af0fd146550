"""What one collection hands to the UI: plain data, never touched by the worker again."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from lbtui import abi
from lbtui.console.data.hub import GroupNew, HubState
from lbtui.console.data.traffic import TargetTraffic
from lbtui.maps import SniRouteRecord, SourceRouteRecord
from lbtui.maps.events import LbEvent
from lbtui.maps.flowrows import ConnDump
from lbtui.model import GroupKey
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
    nodes: tuple[str, ...] = ()               # a cluster console: its nodes, in order


@dataclass(frozen=True)
class NodeState:
    """A cluster node as the header shows it: reachable (its figures are in the totals)
    or not, and why."""

    name: str
    instance: str
    reachable: bool
    problem: str = ""


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
    targets: dict[str, TargetTraffic]       # per address
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
    # The same per second over the last refresh (empty on the first).
    reason_rates: dict[int, dict[str, float]] = field(default_factory=dict)
    sni_names: dict[int, str] = field(default_factory=dict)   # hash -> hostname
    hub: HubState = field(default_factory=HubState)    # health, checks, edits
    # The same per (group, target): the group that chose each flow's target.
    group_traffic: dict[tuple[GroupKey, str], TargetTraffic] = field(default_factory=dict)
    # New connections per (group, target), from the hub's counts.
    group_new: dict[tuple[GroupKey, str], GroupNew] = field(default_factory=dict)
    read_ms: float = 0.0        # conntrack read + decode
    total_ms: float = 0.0       # whole collection
    # A cluster console's: every node's state, the reachable ones' own snapshots (the
    # figures above are their totals), and the nodes whose routes differ from the first's.
    nodes: list[NodeState] = field(default_factory=list)
    node_snaps: dict[str, Snapshot] = field(default_factory=dict)
    drift: list[str] = field(default_factory=list)

    @property
    def uptime_s(self) -> float | None:
        if self.info.started_wall is None:
            return None
        return max(0.0, self.wall - self.info.started_wall)

    def reason_totals(self) -> dict[str, int]:
        """Packets per reason over all interfaces, nonzero ones, most first."""
        totals: dict[str, int] = {}
        for per_if in self.reasons.values():
            for name, n in per_if.items():
                totals[name] = totals.get(name, 0) + n
        return dict(sorted(((k, v) for k, v in totals.items() if v),
                           key=lambda kv: (-kv[1], kv[0])))

    def top_reasons(self, n: int = 2) -> list[tuple[str, float]]:
        """The ``n`` reasons most packets went to the stack for now (by rate over the last
        refresh; by total while nothing moves), with their rate."""
        rates: dict[str, float] = {}
        for per_if in self.reason_rates.values():
            for name, r in per_if.items():
                rates[name] = rates.get(name, 0.0) + r
        moving = sorted((k for k, v in rates.items() if v > 0), key=lambda k: -rates[k])
        order = moving or list(self.reason_totals())
        return [(k, rates.get(k, 0.0)) for k in order[:n]]

    def wall_of(self, mono_ns: int) -> float:
        """time.time() of a CLOCK_MONOTONIC timestamp (event times)."""
        return self.wall - (self.now_ns - mono_ns) / 1e9


class SnapshotSource(Protocol):
    """What the app collects from: ``Collector`` over an instance's maps, or a test's
    source that builds Snapshots without BPF."""

    @property
    def info(self) -> InstanceInfo: ...

    def collect(self, events: list[LbEvent] | None = None) -> Snapshot: ...
