"""Choosing a spliced connection's target from the BPF maps, read afresh per connection.

The maps are the single source of truth: an SNI route, weight or listener edit made by
ctl or the console applies to the next connection, and never to established ones.

Precedence, per connection:
1. the sni map entry for the hello's server_name (FNV-1a of the ASCII-lower-cased name);
2. otherwise (no SNI, unknown name, or a name that is not a valid hostname) the same
   fallback as the XDP datapath: a source route (longest prefix match on the client IP),
   else the listener's own group (its listen map entry, the one flagged SNI).
"""

from __future__ import annotations

import ctypes as ct
import random
from dataclasses import dataclass

from lbtui import abi, bpfsys
from lbtui.addr import port_to_be
from lbtui.maps import MapSet
from lbtui.sni import hostname_hash
from lbtui.splicer.flows import ip_be_cached
from lbtui.targets import RouteRecord, TargetSpec, decode_route


@dataclass(frozen=True, slots=True)
class Decision:
    target: TargetSpec
    kind: str          # "sni" | "source" | "listener": which group chose it
    flags: int         # the chosen route's LB_ROUTE_F_* flags (STATS decides events)


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
        self._listen_key: abi.ListenKey | None = None

    def listener_route(self) -> abi.Route | None:
        """This port's listen entry flagged SNI. Entries exist per interface and hold the
        same group; the key found is remembered and re-found if it goes away."""
        fd = self.maps.listen_map.fd
        if self._listen_key is not None:
            v = bpfsys.lookup(fd, self._listen_key, abi.Route)
            if v is not None and v.flags & abi.ROUTE_F_SNI:
                return v
        self._listen_key = None
        want = port_to_be(self.port)
        for k in sorted(bpfsys.keys(fd, abi.ListenKey), key=lambda k: k.ifindex):
            if k.port != want:
                continue
            v = bpfsys.lookup(fd, k, abi.Route)
            if v is not None and v.flags & abi.ROUTE_F_SNI:
                self._listen_key = k
                return v
        return None

    def route(self, server_name: bytes | None, client_ip: str) -> tuple[Decision | None, str]:
        """(decision, kind of group consulted); decision None when that group has no target
        with weight > 0, or when there is no group at all (kind "none")."""
        h = sni_key(server_name)
        if h is not None:
            v = bpfsys.lookup(self.maps.sni_map.fd, ct.c_uint64(h), abi.Route)
            if v is not None:
                return self._decide(v, "sni"), "sni"
        v = bpfsys.lookup(self.maps.config_map.fd, abi.LpmKey(32, ip_be_cached(client_ip)),
                          abi.Route)
        if v is not None:
            return self._decide(v, "source"), "source"
        v = self.listener_route()
        if v is not None:
            return self._decide(v, "listener"), "listener"
        return None, "none"

    def _decide(self, route: abi.Route, kind: str) -> Decision | None:
        t = pick(decode_route(route), self.rng)
        return Decision(t, kind, route.flags) if t is not None else None
