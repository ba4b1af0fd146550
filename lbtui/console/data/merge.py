"""Many nodes' snapshots as one: the totals a cluster console shows, and the per-node
snapshots kept beside them for the per-node breakdown.

Pure functions over ``Snapshot`` objects (no maps, no threads): counts and rates add up,
a target's health is its worst node's, routes and settings are the first reachable
node's (every node is meant to hold the same config; ``drift`` names those that do not).
Conntrack rows get their node's index as a tenth field (``conns.NODE``) so the
Connections view can show and sort by node; every other reader indexes the first nine.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import cast

from lbtui.console.data.groups import groups_of
from lbtui.console.data.hub import (
    DEGRADED,
    FAILING,
    HEALTHY,
    OUT,
    CheckState,
    GroupNew,
    HubState,
    TargetHealth,
)
from lbtui.console.data.snapshot import InstanceInfo, NodeState, Rates, Snapshot
from lbtui.console.data.traffic import TargetTraffic
from lbtui.maps.flowrows import ConnDump, Row
from lbtui.model import GroupKey

# Reason counters are per ingress ifindex; nodes number their interfaces independently,
# so a node's ifindexes are moved into a range of their own.
IFINDEX_SPAN = 1_000_000
_WORST = {HEALTHY: 0, DEGRADED: 1, FAILING: 2}


def merge_traffic(target: str, parts: Sequence[TargetTraffic]) -> TargetTraffic:
    """One target's figures summed over nodes; the last minute's history summed per
    sample of the node with the longest history (nodes are read in the same refresh)."""
    out = TargetTraffic(target)
    for t in parts:
        out.active += t.active
        out.flows += t.flows
        out.new_per_s += t.new_per_s
        out.pps_fwd += t.pps_fwd
        out.pps_rev += t.pps_rev
        out.bps_fwd += t.bps_fwd
        out.bps_rev += t.bps_rev
        out.total_bytes += t.total_bytes
    if parts:
        base = max(parts, key=lambda t: len(t.rate_history))
        out.rate_history = deque(
            (end, span, sum(_rate_at(t.rate_history, end) for t in parts))
            for end, span, _r in base.rate_history)
        newest = max(parts, key=lambda t: len(t.new_history))
        out.new_history = deque(
            (ts, sum(_new_at(t.new_history, ts, newest is t, n) for t in parts))
            for ts, n in newest.new_history)
    return out


def _rate_at(history: Iterable[tuple[int, int, float]], when: int) -> float:
    """The rate of the sample covering ``when`` (0 if none)."""
    for end, span, rate in history:
        if end - span < when <= end:
            return rate
    return 0.0


def _new_at(history: Iterable[tuple[int, int]], when: int, own: bool, n: int) -> int:
    if own:
        return n
    # Another node's sample of the same refresh: the closest one not after ``when``.
    best = 0
    for ts, k in history:
        if ts <= when + 500_000_000:
            best = k
    return best


def _sum_keyed(maps: Sequence[Mapping[str, TargetTraffic]]) -> dict[str, TargetTraffic]:
    keys = sorted({k for m in maps for k in m})
    return {k: merge_traffic(k, [m[k] for m in maps if k in m]) for k in keys}


def merge_hub(nodes: Sequence[tuple[str, HubState]]) -> HubState:
    """Health summed per (group, target) with the worst node's state; a check's verdict
    is the worst node's; every node's notices, each labelled with its node."""
    health: dict[tuple[GroupKey, str], TargetHealth] = {}
    checks: dict[str, CheckState] = {}
    notices = []
    for name, hub in nodes:
        for h in hub.health:
            have = health.get(h.ref)
            if have is None:
                health[h.ref] = h
                continue
            state = max(have.state, h.state, key=lambda s: _WORST.get(s, 0))
            health[h.ref] = replace(
                have, state=state, opened=have.opened + h.opened,
                closed=have.closed + h.closed, unanswered=have.unanswered + h.unanswered,
                timeouts=have.timeouts + h.timeouts, resets=have.resets + h.resets,
                connect_failed=have.connect_failed + h.connect_failed,
                recent_ok=have.recent_ok + h.recent_ok,
                recent_failed=have.recent_failed + h.recent_failed)
        for target, c in hub.checks.items():
            have_c = checks.get(target)
            if have_c is None or (c.state == OUT and have_c.state != OUT):
                checks[target] = replace(c, last_error=f"{name}: {c.last_error}"
                                         if c.last_error else "")
        notices += [replace(n, source=f"{name} {n.source}") for n in hub.notices]
    problems = [f"{name}: {hub.problem}" for name, hub in nodes if hub.problem]
    return HubState(list(health.values()), checks, sorted(notices, key=lambda n: n.ts),
                    bool(nodes) and all(h.connected for _, h in nodes), "; ".join(problems))


def merge_group_new(maps: Sequence[Mapping[tuple[GroupKey, str], GroupNew]]
                    ) -> dict[tuple[GroupKey, str], GroupNew]:
    out: dict[tuple[GroupKey, str], GroupNew] = {}
    for m in maps:
        for k, g in m.items():
            have = out.get(k, GroupNew())
            out[k] = GroupNew(have.per_s + g.per_s, have.last_minute + g.last_minute)
    return out


def drift(snaps: Sequence[tuple[str, Snapshot]]) -> list[str]:
    """Nodes whose routes (groups and their targets) differ from the first node's."""
    if len(snaps) < 2:
        return []

    def routes(s: Snapshot) -> set[tuple[GroupKey, str]]:
        return {(g.key, str(g.group)) for g in groups_of(s)}

    first = routes(snaps[0][1])
    return [name for name, s in snaps[1:] if routes(s) != first]


def merge(label: str, states: Sequence[NodeState], snaps: Mapping[str, Snapshot],
          seq: int, index: Mapping[str, int]) -> Snapshot:
    """The cluster's snapshot from the reachable nodes' ``snaps`` (``index``: each node's
    position, the tenth field of its conntrack rows). Needs at least one snapshot."""
    order = [(s.name, snaps[s.name]) for s in states if s.name in snaps]
    if not order:
        raise ValueError("no node of the cluster is reachable")
    first = order[0][1]
    rows: list[Row] = []
    for name, s in order:
        k = (index[name],)
        rows.extend(cast(list[Row], [r + k for r in s.conns.rows]))
    conns = ConnDump(rows, sum(s.conns.total for _, s in order),
                     sum(s.conns.entries for _, s in order),
                     any(s.conns.sampled for _, s in order))
    rates = Rates(*(sum(getattr(s.rates, f) for _, s in order)
                    for f in ("new_conns", "pps_fwd", "pps_rev", "bps_fwd", "bps_rev")))
    counters: dict[str, int] = {}
    for _, s in order:
        for key, n in s.counters.items():
            counters[key] = counters.get(key, 0) + n
    reasons, reason_rates, ifnames = {}, {}, {}
    for name, s in order:
        base = index[name] * IFINDEX_SPAN
        reasons.update({base + i: v for i, v in s.reasons.items()})
        reason_rates.update({base + i: v for i, v in s.reason_rates.items()})
        ifnames.update({base + i: f"{name}:{n}" for i, n in s.info.ifnames.items()})
    names: dict[int, str] = {}
    for _, s in order:
        names.update(s.sni_names)
    group_traffic: dict[tuple[GroupKey, str], TargetTraffic] = {}
    for gk in sorted({k for _, s in order for k in s.group_traffic}, key=str):
        group_traffic[gk] = merge_traffic(gk[1], [s.group_traffic[gk] for _, s in order
                                                  if gk in s.group_traffic])
    starts = [s.info.started_wall for _, s in order if s.info.started_wall is not None]
    info = InstanceInfo(
        name=label, interfaces=first.info.interfaces,
        reply_interfaces=first.info.reply_interfaces,
        xdp_mode="/".join(sorted({s.info.xdp_mode for _, s in order})),
        netns=None, started_wall=min(starts) if starts else None, ifnames=ifnames,
        nodes=tuple(s.name for s in states))
    return Snapshot(
        seq=seq, now_ns=max(s.now_ns for _, s in order), wall=max(s.wall for _, s in order),
        info=info, conns=conns, listeners=first.listeners,
        source_routes=first.source_routes, sni_routes=first.sni_routes,
        targets=_sum_keyed([s.targets for _, s in order]),
        events=sorted((e for _, s in order for e in s.events), key=lambda e: e.ts_ns),
        rates=rates, active=sum(s.active for _, s in order),
        stats_enabled=all(s.stats_enabled for _, s in order),
        conn_timeout=first.conn_timeout, counters=counters,
        ct_max=sum(s.ct_max for _, s in order), reasons=reasons,
        stack_pps=sum(s.stack_pps for _, s in order), reason_rates=reason_rates,
        sni_names=names, hub=merge_hub([(n, s.hub) for n, s in order]),
        group_traffic=group_traffic,
        group_new=merge_group_new([s.group_new for _, s in order]),
        read_ms=sum(s.read_ms for _, s in order), nodes=list(states),
        node_snaps=dict(order), drift=drift(order))
