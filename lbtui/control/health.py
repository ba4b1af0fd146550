"""Per-target traffic and health, from the event stream itself.

Every event names a target and what chose it (a listener, a source route, an SNI route),
so outcomes are kept per (group, target): a target shared by two listeners is counted
under each. An outcome is a success (the flow closed after the target answered) or a
failure of the target's: a SYN or datagram it never answered (timeouts among them), a
reset it sent, a connection the SNI splicer could not open. Over a sliding window the
failure ratio gives a state: healthy, degraded or failing (thresholds in the config's
``[health]`` section); every change of state is reported once. A state changes only on
evidence (at least ``min_samples`` outcomes in the window), never for silence.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from lbtui.maps.events import LbEvent
from lbtui.model import GroupKey, HealthSettings

HEALTHY, DEGRADED, FAILING = "healthy", "degraded", "failing"
BUCKETS = 12           # the window is kept in this many buckets


@dataclass
class Totals:
    """Cumulative counts (since the reader started) for one (group, target)."""

    opened: int = 0
    closed: int = 0
    unanswered: int = 0       # the target never answered (SYN or first datagram)
    timeouts: int = 0         # of those, flows that aged out waiting
    resets: int = 0           # resets the target sent
    connect_failed: int = 0   # the SNI splicer could not connect
    packets_fwd: int = 0      # of finished flows
    packets_rev: int = 0
    bytes_fwd: int = 0
    bytes_rev: int = 0


@dataclass
class TargetHealth:
    group: GroupKey
    target: str
    totals: Totals = field(default_factory=Totals)
    state: str = HEALTHY
    since_ns: int = 0
    # (bucket start ns, successes, failures), oldest first
    window: deque[list[int]] = field(default_factory=deque)

    def outcome(self, now_ns: int, failed: bool, bucket_ns: int) -> None:
        start = now_ns - now_ns % bucket_ns
        if not self.window or self.window[-1][0] != start:
            self.window.append([start, 0, 0])
        self.window[-1][2 if failed else 1] += 1

    def recent(self, now_ns: int, window_ns: int) -> tuple[int, int]:
        """(successes, failures) within the window."""
        while self.window and self.window[0][0] <= now_ns - window_ns:
            self.window.popleft()
        return sum(b[1] for b in self.window), sum(b[2] for b in self.window)

    def to_dict(self, now_ns: int, window_ns: int) -> dict[str, Any]:
        ok, bad = self.recent(now_ns, window_ns)
        return {"group": str(self.group), "kind": self.group.kind.value,
                "key": self.group.key, "target": self.target, "state": self.state,
                "since_ns": self.since_ns, "recent_ok": ok, "recent_failed": bad,
                **asdict(self.totals)}


Transition = tuple[TargetHealth, str, str]   # (which, from, to)


class HealthBook:
    """Accounts events per (group, target) and keeps their states. ``attribute`` names
    the group that chose an event's target (None: not attributable, ignored)."""

    def __init__(self, settings: HealthSettings,
                 attribute: Callable[[LbEvent], GroupKey | None],
                 clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.settings = settings
        self.attribute = attribute
        self.clock = clock
        self.targets: dict[tuple[GroupKey, str], TargetHealth] = {}

    @property
    def window_ns(self) -> int:
        return int(self.settings.window * 1e9)

    def _entry(self, ev: LbEvent) -> TargetHealth | None:
        group = self.attribute(ev)
        if group is None:
            return None
        k = (group, ev.target)
        th = self.targets.get(k)
        if th is None:
            th = self.targets[k] = TargetHealth(group, ev.target, since_ns=self.clock())
        return th

    def record(self, ev: LbEvent) -> list[Transition]:
        """Account one event; returns the state changes it caused."""
        th = self._entry(ev)
        if th is None:
            return []
        t = th.totals
        now = self.clock()
        bucket = max(1, self.window_ns // BUCKETS)
        if ev.kind == "opened":
            t.opened += 1
            return []
        if ev.kind == "connect_failed":
            t.connect_failed += 1
            th.outcome(now, True, bucket)
            return self._evaluate(th, now)
        t.closed += 1
        t.packets_fwd += ev.packets_fwd
        t.packets_rev += ev.packets_rev
        t.bytes_fwd += ev.bytes_fwd
        t.bytes_rev += ev.bytes_rev
        failed = False
        if not ev.replied:
            t.unanswered += 1
            t.timeouts += ev.reason == "aged"
            failed = True
        if ev.rst_by_target:
            t.resets += 1
            failed = True
        th.outcome(now, failed, bucket)
        return self._evaluate(th, now)

    def _evaluate(self, th: TargetHealth, now: int) -> list[Transition]:
        ok, bad = th.recent(now, self.window_ns)
        s = self.settings
        state = th.state
        if ok + bad >= s.min_samples:
            ratio = bad / (ok + bad)
            state = FAILING if ratio >= s.failing_ratio else (
                DEGRADED if ratio >= s.degraded_ratio else HEALTHY)
        if state == th.state:
            return []
        old, th.state, th.since_ns = th.state, state, now
        return [(th, old, state)]

    def tick(self) -> list[Transition]:
        """Re-evaluate every target as the window slides. Too few outcomes in the window is
        no evidence either way, so the state stands: a failing target taken out of
        rotation gets no traffic, and must not read healthy for its silence."""
        now = self.clock()
        out = []
        for th in self.targets.values():
            out += self._evaluate(th, now)
        return out

    def snapshot(self) -> list[dict[str, Any]]:
        now = self.clock()
        return [th.to_dict(now, self.window_ns)
                for _k, th in sorted(self.targets.items(), key=lambda kv: (kv[0][0],
                                                                            kv[0][1]))]
