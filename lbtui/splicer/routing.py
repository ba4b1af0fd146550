"""Choosing a spliced connection's target from the BPF maps, read afresh per connection.

The maps are the single source of truth: an SNI route, weight or listener edit made by
ctl or the console applies to the next connection, and never to established ones.

Precedence, per connection:
1. the sni map entry for the hello's server_name (FNV-1a of the ASCII-lower-cased name);
2. otherwise (no SNI, unknown name, or a name that is not a valid hostname) the same
   fallback as the XDP datapath: a source route (longest prefix match on the client IP),
   else the listener's own group (its listen map entry, the one flagged SNI).

A group with hash = "maglev" picks with its lookup table and the connection's 5-tuple hash,
as the datapath does, so every balancer sends a connection to the same target; other
groups pick at random on their weights.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from lbtui import abi
from lbtui.maglev import flow_hash
from lbtui.maps import MapSet
from lbtui.maps.maglev import pick_target
from lbtui.maps.routes import ListenerLookup, lookup_sni_hash, match_source_route
from lbtui.sni import hostname_hash
from lbtui.targets import RouteRecord, TargetSpec


@dataclass(frozen=True, slots=True)
class Decision:
    target: TargetSpec
    kind: str          # "sni" | "source" | "listener": which group chose it
    flags: int         # the chosen route's LB_ROUTE_F_* flags (STATS decides events)
    sni_hash: int = 0  # kind "sni": the route's hostname hash


def pick(route: RouteRecord, rng: random.Random) -> TargetSpec | None:
    """Weighted pick on cumulative weights (as the datapath does); None when every target
    has weight 0 (drained)."""
    if not route.cumulative_weights or route.cumulative_weights[-1] == 0:
        return None
    x = rng.randrange(route.cumulative_weights[-1])
    for t, cum in zip(route.targets, route.cumulative_weights, strict=True):
        if x < cum:
            return t
    return None


def sni_key(server_name: bytes | None) -> int | None:
    """The sni map key for a hello's server_name, or None when it cannot match a route
    (absent, or not a valid hostname: routes are only ever added for valid ones)."""
    if not server_name:
        return None
    try:
        return hostname_hash(server_name)
    except ValueError:
        return None


class Router:
    """Looks up a target for one listener port. Owned by the splicer's thread."""

    def __init__(self, maps: MapSet, port: int, rng: random.Random | None = None) -> None:
        self.maps = maps
        self.port = port
        self.rng = rng or random.Random()
        self._listener = ListenerLookup(maps.listen_map, port, abi.ROUTE_F_SNI)

    def listener_route(self) -> RouteRecord | None:
        """This port's listen entry flagged SNI."""
        return self._listener.route()

    def route(self, server_name: bytes | None, client_ip: str,
              flow: tuple[tuple[str, int], tuple[str, int]] | None = None
              ) -> tuple[Decision | None, str]:
        """(decision, kind of group consulted); decision None when that group has no target
        with weight > 0, or when there is no group at all (kind "none"). ``flow``:
        ((client ip, port), (vip, port)), which Maglev groups hash (without it they pick
        at random too)."""
        h = sni_key(server_name)
        if h is not None:
            r = lookup_sni_hash(self.maps.sni_map, h)
            if r is not None:
                return self._decide(r, flow, "sni", h), "sni"
        r = match_source_route(self.maps.config_map, client_ip)
        if r is not None:
            return self._decide(r, flow, "source"), "source"
        r = self.listener_route()
        if r is not None:
            return self._decide(r, flow, "listener"), "listener"
        return None, "none"

    def _decide(self, route: RouteRecord, flow: tuple[tuple[str, int], tuple[str, int]] | None,
                kind: str, sni_hash: int = 0) -> Decision | None:
        if route.flags & abi.ROUTE_F_MAGLEV and flow is not None:
            (cip, cport), (vip, vport) = flow
            fh = flow_hash(cip, vip, cport, vport, abi.IPPROTO_TCP)
            t = pick_target(self.maps.maglev_map, route.table, route.targets, fh)
        else:
            t = pick(route, self.rng)
        return Decision(t, kind, route.flags, sni_hash) if t is not None else None
