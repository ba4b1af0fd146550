"""HealthBook's states from outcomes (no root: events built as the reader decodes them,
a clock the test moves)."""

from __future__ import annotations

from lbtui.control.health import DEGRADED, FAILING, HEALTHY, HealthBook
from lbtui.maps.events import LbEvent
from lbtui.model import GroupKey, HealthSettings

S = 1_000_000_000
L80, L82 = GroupKey.of("listener", 80), GroupKey.of("listener", 82)


class Clock:
    def __init__(self) -> None:
        self.now = 1000 * S

    def __call__(self) -> int:
        return self.now


def closed(port: int, target: str = "198.18.101.2", *, replied: bool = True,
           rst: bool = False) -> LbEvent:
    return LbEvent(0, "closed", "tcp", "rst" if rst else "fin", "198.18.1.2", 40000,
                   "198.18.0.10", port, target, 8080, 0, 3, 3, 180, 180,
                   replied=replied, rst_by_target=rst)


def book(clock: Clock) -> HealthBook:
    return HealthBook(HealthSettings(window=30, min_samples=5), lambda ev: GroupKey.of(
        "listener", ev.vip_port), clock)


def state(b: HealthBook, group: GroupKey) -> str:
    return next(t["state"] for t in b.snapshot() if t["group"] == str(group))


def test_failures_make_a_target_failing_and_successes_bring_it_back() -> None:
    clock = Clock()
    b = book(clock)
    for _ in range(4):
        assert b.record(closed(80, replied=False)) == []     # under min_samples: no verdict
    changes = b.record(closed(80, replied=False))
    assert [(t.target, old, new) for t, old, new in changes] == [
        ("198.18.101.2:8080", HEALTHY, FAILING)]
    clock.now += 31 * S                                       # the failures leave the window
    for _ in range(9):
        b.record(closed(80))
    b.record(closed(80, rst=True))
    assert state(b, L80) == DEGRADED                          # 1 reset in 10 = 10%
    for _ in range(10):
        b.record(closed(80))
    assert state(b, L80) == HEALTHY


def test_silence_is_no_evidence_a_failing_target_stays_failing() -> None:
    """A target out of rotation gets no traffic; it must not read healthy for that."""
    clock = Clock()
    b = book(clock)
    for _ in range(6):
        b.record(closed(80, replied=False))
    assert state(b, L80) == FAILING
    for _ in range(5):
        clock.now += 30 * S
        assert b.tick() == []
    assert state(b, L80) == FAILING


def test_a_shared_target_is_judged_per_group() -> None:
    clock = Clock()
    b = book(clock)
    for _ in range(6):
        b.record(closed(80, replied=False))
        b.record(closed(82))
    assert state(b, L80) == FAILING and state(b, L82) == HEALTHY
    totals = {t["group"]: (t["unanswered"], t["closed"]) for t in b.snapshot()}
    assert totals == {str(L80): (6, 6), str(L82): (0, 6)}
