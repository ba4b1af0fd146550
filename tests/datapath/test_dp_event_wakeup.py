"""Waking the event reader: an event wakes the reader only if it is the first of its CPU in
this clock tick (lb_event_wakeup in lb_xdp.c); the others are submitted without a wakeup,
and EventReader.poll consumes them when its wait times out. Nothing is lost either way."""

from __future__ import annotations

import ctypes as ct
import select
import time

from dp_harness import CLIENT, T1, VIP, Harness
from dp_packets import SYN, fast_tcp

from lbtui import abi, bpfsys
from lbtui.datapath.loader import Datapath
from lbtui.maps.events import EventReader, LbEvent
from lbtui.maps.settings import possible_cpus
from lbtui.targets import TargetGroup

NEVER = 2**64 - 1      # a last-wakeup tick no clock reaches: no event of that CPU wakes


def _wakeup_ticks(datapath: Datapath) -> list[int]:
    fd = datapath.bpf[b"event_wakeups"].map_fd
    v = bpfsys.lookup(fd, ct.c_uint32(0), ct.c_uint64 * possible_cpus())
    assert v is not None
    return list(v)


def _set_wakeup_ticks(datapath: Datapath, tick: int) -> None:
    fd = datapath.bpf[b"event_wakeups"].map_fd
    bpfsys.update(fd, ct.c_uint32(0), (ct.c_uint64 * possible_cpus())(
        *[tick] * possible_cpus()))


def _ready(ep: select.epoll) -> bool:
    return bool(ep.poll(0))


def test_first_event_of_a_tick_wakes_the_reader_and_records_the_tick(
        dp: Harness, datapath: Datapath) -> None:
    dp.listen(80, TargetGroup.single(T1, 8080), flags=abi.ROUTE_F_STATS)
    _set_wakeup_ticks(datapath, 0)
    ring_fd = datapath.maps.stats_ringbuf.fd
    with select.epoll() as ep:
        ep.register(ring_fd, select.EPOLLIN)
        assert not _ready(ep)                       # empty ring buffer
        assert dp.run(fast_tcp(CLIENT, VIP, 40000, 80, SYN)).name == "REDIRECT"
        assert _ready(ep)                           # woken
    [ev] = dp.events()
    assert ev.kind == "opened"
    # The CPU that ran the program recorded the tick of its wakeup: the flow's clock.
    ticks = _wakeup_ticks(datapath)
    assert max(ticks) == ev.created_ns and sorted(ticks)[:-1] == [0] * (len(ticks) - 1)


def test_later_events_of_the_tick_do_not_wake_but_poll_still_reads_them(
        dp: Harness, datapath: Datapath) -> None:
    dp.listen(80, TargetGroup.single(T1, 8080), flags=abi.ROUTE_F_STATS)
    _set_wakeup_ticks(datapath, NEVER)              # every CPU has woken the reader "now"
    got: list[LbEvent] = []
    reader = EventReader(datapath.maps.stats_ringbuf, got.append)
    try:
        with select.epoll() as ep:
            ep.register(datapath.maps.stats_ringbuf.fd, select.EPOLLIN)
            for port in (40001, 40002, 40003):
                assert dp.run(fast_tcp(CLIENT, VIP, port, 80, SYN)).name == "REDIRECT"
            assert not _ready(ep)                   # no wakeup
        t0 = time.monotonic()
        assert reader.poll(300) == 3                # the wait times out, then consumes
        assert time.monotonic() - t0 >= 0.25
    finally:
        reader.close()
    assert [(e.kind, e.client_port) for e in got] == [("opened", p) for p in
                                                      (40001, 40002, 40003)]
    assert dp.counters()["events_lost"] == 0
    assert _wakeup_ticks(datapath) == [NEVER] * possible_cpus()


def test_a_woken_reader_returns_at_once(dp: Harness, datapath: Datapath) -> None:
    dp.listen(80, TargetGroup.single(T1, 8080), flags=abi.ROUTE_F_STATS)
    _set_wakeup_ticks(datapath, 0)
    got: list[LbEvent] = []
    reader = EventReader(datapath.maps.stats_ringbuf, got.append)
    try:
        assert dp.run(fast_tcp(CLIENT, VIP, 40004, 80, SYN)).name == "REDIRECT"
        t0 = time.monotonic()
        assert reader.poll(5000) == 1
        assert time.monotonic() - t0 < 2.5
    finally:
        reader.close()
    assert [(e.kind, e.client_port) for e in got] == [("opened", 40004)]
