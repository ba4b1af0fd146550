"""The domain model: what an operator configures, independent of files and map bytes.

The config file (``lbtui.control.config`` reads and validates it), the Controller (every
edit), ``ctl``, the console and the splicer all speak these types; ``lbtui.maps`` turns
them into map entries. A target group is a validated, immutable ``TargetGroup`` (one set of
target rules, ``lbtui.targets``); a group is named by a typed ``GroupKey``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from lbtui import maglev
from lbtui.addr import parse_port
from lbtui.sni import normalize_hostname
from lbtui.targets import TargetGroup, TargetSpec

PROTOCOLS = ("tcp", "udp", "both")
XDP_MODES = ("auto", "native", "generic")
HASHES = maglev.HASHES        # how a group picks a target; None on a route: the default


class GroupKind(StrEnum):
    """What chooses a target group: a listener's port, a client's source prefix, or a TLS
    server name."""

    LISTENER = "listener"
    SOURCE = "source"
    SNI = "sni"


def canonical_cidr(cidr: str) -> str:
    """The canonical form of a prefix; netmask forms ("198.18.2.0/255.255.255.0") too."""
    return str(ipaddress.IPv4Network(cidr.strip(), strict=False))


@dataclass(frozen=True, order=True)
class GroupKey:
    """Names one editable target group: ``GroupKey.of("listener", 80)``,
    ``GroupKey.of("source", "198.18.2.0/24")``, ``GroupKey.of("sni", "API.example.com")``
    (keys are kept canonical: a port, a network in CIDR form, a lower-case hostname)."""

    kind: GroupKind
    key: int | str

    @classmethod
    def of(cls, kind: str | GroupKind, key: Any) -> GroupKey:
        try:
            k = GroupKind(kind)
        except ValueError:
            raise ValueError(f"kind {kind!r}: use one of "
                             f"{', '.join(g.value for g in GroupKind)}") from None
        if k is GroupKind.LISTENER:
            return cls(k, parse_port(key, "listener port"))
        if k is GroupKind.SOURCE:
            try:
                return cls(k, canonical_cidr(str(key)))
            except ValueError:
                raise ValueError(f"{key!r} is not an IPv4 prefix like 198.18.1.0/24"
                                 ) from None
        return cls(k, normalize_hostname(str(key)).decode())

    @property
    def label(self) -> str:
        if self.kind is GroupKind.LISTENER:
            return f"listener :{self.key}"
        if self.kind is GroupKind.SOURCE:
            return f"source {self.key}"
        return f"SNI {self.key}"

    def __str__(self) -> str:
        return self.label


@dataclass
class Listener:
    """One balanced port (one listener per port)."""

    port: int
    group: TargetGroup
    protocol: str = "both"                 # tcp | udp | both
    interfaces: list[str] | None = None    # None: the [datapath] interfaces
    stats: bool = True
    sni: bool = False                      # connections go to the SNI splicer
    # The VIP it serves (and an SNI listener's splicer binds); None: every address local
    # to the balancer's namespace.
    address: str | None = None
    # How its group picks a target (HASHES); None: the default ("weighted"), and an update
    # given None keeps the listener's current choice.
    hash: str | None = None

    @property
    def key(self) -> GroupKey:
        return GroupKey(GroupKind.LISTENER, self.port)


@dataclass
class SourceRoute:
    """Clients in ``cidr`` go to ``group`` instead of the listener's."""

    cidr: str
    group: TargetGroup
    stats: bool = True
    hash: str | None = None                # as Listener.hash

    @property
    def key(self) -> GroupKey:
        return GroupKey(GroupKind.SOURCE, canonical_cidr(self.cidr))


@dataclass
class SniRoute:
    """TLS connections for ``hostname`` (on SNI listeners) go to ``group``."""

    hostname: str
    group: TargetGroup
    hash: str | None = None                # as Listener.hash

    @property
    def key(self) -> GroupKey:
        return GroupKey(GroupKind.SNI, normalize_hostname(self.hostname).decode())


@dataclass
class Settings:
    stats: bool = True
    connection_timeout: int = 300
    max_connections: int = 100000
    max_routes: int = 10000
    max_sni_routes: int = 1000
    ringbuf_size: int = 262144
    sweep_interval: float = 5.0
    maglev_table_size: int = maglev.DEFAULT_TABLE_SIZE
    max_maglev_groups: int = 64
    syn_flood_rate: int = 0           # new TCP flows/s per CPU; above: SYN flood guard; 0: off


@dataclass
class HealthSettings:
    """When a target counts as degraded or failing, from its traffic (and optionally from
    active checks). Ratios are failures / outcomes over the last ``window`` seconds, once
    there are ``min_samples`` outcomes."""

    window: float = 60.0
    min_samples: int = 5
    degraded_ratio: float = 0.1
    failing_ratio: float = 0.5
    check_interval: float = 0.0       # active TCP connect checks; 0: off
    check_timeout: float = 1.0
    fall: int = 3                     # consecutive failed checks to take a target out
    rise: int = 2                     # consecutive good checks to put it back
    check_targets: list[str] = field(default_factory=list)   # "ip:port"; empty: all


@dataclass
class MetricsSettings:
    """Prometheus metrics written by ``serve``: a node_exporter textfile (when its
    directory exists; "" turns it off) and an optional HTTP endpoint."""

    textfile_dir: str = "/var/lib/prometheus/node-exporter"
    interval: float = 15.0
    listen: str = ""                  # "ADDRESS:PORT" for an HTTP endpoint; "": none


@dataclass
class DatapathSettings:
    interfaces: list[str] = field(default_factory=list)
    instance: str = "default"
    reply_interfaces: list[str] = field(default_factory=list)
    netns: str | None = None
    xdp_mode: str = "auto"
    keep: bool = False


Route = Listener | SourceRoute | SniRoute


def uses_maglev(route: Route) -> bool:
    """Does the route's group pick with a Maglev lookup table?"""
    return route.hash == "maglev"


@dataclass
class Config:
    """Everything one instance runs: its datapath, routes and settings."""

    datapath: DatapathSettings
    listeners: list[Listener] = field(default_factory=list)
    source_routes: list[SourceRoute] = field(default_factory=list)
    sni_routes: list[SniRoute] = field(default_factory=list)
    settings: Settings = field(default_factory=Settings)
    health: HealthSettings = field(default_factory=HealthSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    path: Path | None = None

    def listener(self, port: int) -> Listener | None:
        return next((x for x in self.listeners if x.port == port), None)

    def source_route(self, cidr: str) -> SourceRoute | None:
        key = GroupKey.of(GroupKind.SOURCE, cidr)
        return next((r for r in self.source_routes if r.key == key), None)

    def sni_route(self, hostname: str) -> SniRoute | None:
        key = GroupKey.of(GroupKind.SNI, hostname)
        return next((r for r in self.sni_routes if r.key == key), None)

    def route(self, key: GroupKey) -> Route | None:
        """The listener or route a group key names."""
        if key.kind is GroupKind.LISTENER:
            return self.listener(int(key.key))
        if key.kind is GroupKind.SOURCE:
            return self.source_route(str(key.key))
        return self.sni_route(str(key.key))

    def routes(self) -> list[Route]:
        """Every target group holder: listeners, source routes, SNI routes."""
        return [*self.listeners, *self.source_routes, *self.sni_routes]

    def listener_interfaces(self, lst: Listener) -> list[str]:
        return list(lst.interfaces) if lst.interfaces is not None else list(
            self.datapath.interfaces)

    def map_options(self) -> dict[str, int]:
        """Options for ``maps.create_all_maps``."""
        s = self.settings
        return {"max_connections": s.max_connections, "max_routes": s.max_routes,
                "max_sni_routes": s.max_sni_routes, "ringbuf_size": s.ringbuf_size,
                "connection_timeout": s.connection_timeout,
                "maglev_table_size": s.maglev_table_size,
                "max_maglev_groups": s.max_maglev_groups}


__all__ = ["HASHES", "PROTOCOLS", "XDP_MODES", "Config", "DatapathSettings", "GroupKey",
           "GroupKind", "HealthSettings", "Listener", "MetricsSettings", "Route", "Settings",
           "SniRoute", "SourceRoute", "TargetGroup", "TargetSpec", "canonical_cidr",
           "uses_maglev"]
