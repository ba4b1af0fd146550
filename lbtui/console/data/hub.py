"""What the instance's event hub says besides flow events, as plain data for the views.

The hub (``lbtui.control.eventhub``) sends, per (group, target), totals and a health state
judged from the traffic; the active checks' state per target; and a line for every change
of state and every configuration edit, whoever made it. ``EventFeed`` keeps the raw
messages; this module turns them into typed rows (``HubState``) once per refresh.

Groups are named as the hub named them when it first saw their traffic; an SNI route it
only knew by its hash is renamed here with the names the console uses (``rename``), so a
route shows under one name in every view.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from lbtui.model import GroupKey, GroupKind

HEALTHY, DEGRADED, FAILING = "healthy", "degraded", "failing"
OUT = "down"      # an active check took the target out of rotation


@dataclass(frozen=True)
class TargetHealth:
    """One (group, target) as the hub accounts it: totals since its reader started."""

    group: GroupKey
    target: str
    state: str = HEALTHY
    opened: int = 0
    closed: int = 0
    unanswered: int = 0
    timeouts: int = 0
    resets: int = 0
    connect_failed: int = 0
    recent_ok: int = 0           # outcomes within the health window
    recent_failed: int = 0

    @property
    def ref(self) -> tuple[GroupKey, str]:
        return self.group, self.target


@dataclass(frozen=True)
class CheckState:
    """An active check's verdict on a target: ``up`` (in rotation) or ``down``."""

    target: str
    state: str
    last_error: str = ""

    @property
    def in_rotation(self) -> bool:
        return self.state != OUT


@dataclass(frozen=True)
class Notice:
    """A line of the Events view that is not a flow: an edit or a change of state.

    ``kind`` is "edit", "health" (judged from traffic) or "check" (active checks);
    ``source`` who made an edit (console, ctl, reload) or what judged a state; ``who``
    the user behind an edit, or the group of a health change; ``what`` the change itself
    (``old -> new``)."""

    ts: float            # wall-clock time
    kind: str
    source: str
    who: str
    what: str
    target: str = ""
    old: str = ""
    new: str = ""


@dataclass
class HubState:
    """The hub's latest word, taken once per refresh."""

    health: list[TargetHealth] = field(default_factory=list)
    checks: dict[str, CheckState] = field(default_factory=dict)
    notices: list[Notice] = field(default_factory=list)   # new since the last refresh
    connected: bool = False
    problem: str = ""

    def rename(self, names: Mapping[int, str]) -> HubState:
        """With SNI groups known only by their hash named from ``names`` (hash ->
        hostname)."""
        health = [replace(h, group=rename_group(h.group, names)) for h in self.health]
        notices = [replace(n, who=rename_label(n.who, names)) for n in self.notices]
        return replace(self, health=health, notices=notices)

    def health_of(self, group: GroupKey, target: str) -> TargetHealth | None:
        return next((h for h in self.health if h.group == group and h.target == target),
                    None)


def group_key(kind: str, key: object) -> GroupKey:
    """A hub's group (``kind``, ``key``) as the console's typed key."""
    k = GroupKind(kind)
    if k is GroupKind.LISTENER:
        return GroupKey(k, int(str(key)))
    return GroupKey(k, str(key))


def hash_of(key: object) -> int | None:
    """The hash of an SNI key written as ``#<16 hex digits>`` (None for a hostname)."""
    s = str(key)
    if not s.startswith("#"):
        return None
    try:
        return int(s[1:], 16)
    except ValueError:
        return None


def rename_group(g: GroupKey, names: Mapping[int, str]) -> GroupKey:
    h = hash_of(g.key) if g.kind is GroupKind.SNI else None
    if h is None or h not in names:
        return g
    return GroupKey(GroupKind.SNI, names[h])


def rename_label(label: str, names: Mapping[int, str]) -> str:
    """A group's label ("SNI #…") with its hostname when known."""
    prefix = "SNI "
    if label.startswith(prefix):
        h = hash_of(label[len(prefix):])
        if h is not None and h in names:
            return prefix + names[h]
    return label


def target_health(msg: Mapping[str, Any]) -> TargetHealth:
    """One entry of a hub ``health`` message's ``targets``."""
    return TargetHealth(
        group_key(msg["kind"], msg["key"]), str(msg["target"]), str(msg.get("state", HEALTHY)),
        *(int(msg.get(f, 0)) for f in ("opened", "closed", "unanswered", "timeouts",
                                       "resets", "connect_failed", "recent_ok",
                                       "recent_failed")))


def check_state(msg: Mapping[str, Any]) -> CheckState:
    """One entry of a hub ``health`` message's ``checks``."""
    return CheckState(str(msg["target"]), str(msg.get("state", "up")),
                      str(msg.get("last_error") or ""))


def notice(msg: Mapping[str, Any]) -> Notice:
    """A hub ``edit`` or ``transition`` message."""
    ts = float(msg.get("ts", 0.0))
    if msg.get("type") == "edit":
        return Notice(ts, "edit", str(msg.get("source", "?")), str(msg.get("user", "?")),
                      str(msg.get("change", "")))
    old, new, target = str(msg.get("from", "")), str(msg.get("to", "")), str(msg["target"])
    if msg.get("source") == "check":
        where = "out of rotation" if new == OUT else "back in rotation"
        why = f" ({msg['why']})" if msg.get("why") else ""
        return Notice(ts, "check", "check", "every group", f"{target} {where}{why}",
                      target, old, new)
    return Notice(ts, "health", "traffic", str(msg.get("group") or "?"),
                  f"{target}: {old} -> {new}", target, old, new)


@dataclass(frozen=True)
class GroupNew:
    """New connections of one (group, target): per second over the last refresh and in
    the last minute."""

    per_s: float = 0.0
    last_minute: int = 0


class OpenedTracker:
    """Turns the hub's cumulative ``opened`` per (group, target) into rates, so a target
    two groups share has a share and a rate in each."""

    def __init__(self, window_ns: int = 60 * 1_000_000_000) -> None:
        self.window_ns = window_ns
        self._prev: dict[tuple[GroupKey, str], int] = {}
        self._prev_ns: int | None = None
        self._history: dict[tuple[GroupKey, str], deque[tuple[int, int]]] = {}
        self.figures: dict[tuple[GroupKey, str], GroupNew] = {}

    def update(self, health: list[TargetHealth], now_ns: int
               ) -> dict[tuple[GroupKey, str], GroupNew]:
        if not health or (self._prev_ns is not None and now_ns <= self._prev_ns):
            return self.figures
        dt = (now_ns - self._prev_ns) / 1e9 if self._prev_ns is not None else 0.0
        out = {}
        for h in health:
            before = self._prev.get(h.ref, 0)
            # A hub that restarted counts from zero again: all it counted is new.
            new = (h.opened - before if h.opened >= before else h.opened) if dt > 0 else 0
            hist = self._history.setdefault(h.ref, deque())
            hist.append((now_ns, new))
            while hist and now_ns - hist[0][0] >= self.window_ns:
                hist.popleft()
            out[h.ref] = GroupNew(new / dt if dt > 0 else 0.0, sum(n for _, n in hist))
        self._prev = {h.ref: h.opened for h in health}
        self._prev_ns = now_ns
        self.figures = out
        return out
