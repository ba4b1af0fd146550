"""Table limits and the stats switch: a full conntrack keeps admitting flows (LRU eviction,
derivable from the counters), ring-buffer reserve failures are counted, and events follow
the settings map and the route's stats flag."""

from __future__ import annotations

from dp_harness import CLIENT, T1, T2, T3, VIP, XDP_REDIRECT, Harness
from dp_packets import ACK, RST, SYN, fast_tcp, parse

from lbtui import abi, bpfsys
from lbtui import maps as M
from lbtui.datapath.loader import Datapath
from lbtui.maps.events import LbEvent, emit_event
from lbtui.targets import TargetGroup

SPREAD = TargetGroup.of([(T1, 8080, 50), (T2, 8080, 30), (T3, 8080, 20)])
G1 = TargetGroup.single(T1, 8080)


def test_full_conntrack_keeps_admitting_new_flows_and_evictions_are_derivable(small: Harness
                                                                             ) -> None:
    cap = small.maps.conntrack_map.max_entries
    assert cap == 64
    small.listen(80, SPREAD)
    n = 4 * cap
    picked = {}
    for port in range(30000, 30000 + n):
        r = small.run(fast_tcp(CLIENT, VIP, port, 80))
        assert r.verdict == XDP_REDIRECT, port
        out = parse(r.data)
        assert out is not None
        picked[port] = out.dst
        conn = small.connection(CLIENT, port, 80)
        assert conn is not None and conn.target_ip == out.dst, f"flow {port} not admitted"
        assert small.raw_ct(out.dst, CLIENT, 8080, port) is not None, "reply tuple missing"
    assert len(small.ct_entries()) <= cap

    # Userspace deletions are counted separately from evictions.
    live = M.list_connections(small.maps.conntrack_map)
    for conn in live[:3]:
        assert M.delete_connection(small.maps.conntrack_map, conn.five_tuple)
    present = len(M.list_connections(small.maps.conntrack_map))
    c = small.counters()
    assert (c["flows_created"], c["flows_deleted"]) == (n, 3)
    evicted = c["flows_created"] - c["flows_deleted"] - present
    assert evicted >= n - cap // 2, (c, present)

    # Only a SYN opens a flow: an evicted flow's next segment goes to the stack, counted;
    # a SYN on that tuple (a retransmission) gets the same target (the pick hashes it).
    first = 30000
    assert small.connection(CLIENT, first, 80) is None, "the oldest flow was evicted"
    ack = fast_tcp(CLIENT, VIP, first, 80, ACK)
    assert small.run(ack).data == ack
    assert small.reasons("c1") == {"no_flow": 1}
    again = parse(small.run(fast_tcp(CLIENT, VIP, first, 80)).data)
    assert again is not None and again.dst == picked[first]


def test_ring_buffer_reserve_failures_are_counted(small: Harness) -> None:
    small.listen(80, G1, flags=abi.ROUTE_F_STATS)
    n = 100
    for port in range(31000, 31000 + n):
        small.run(fast_tcp(CLIENT, VIP, port, 80))
    lost = small.counters()["events_lost"]
    got = small.events()
    assert lost > 0, "a 4 KiB ring buffer holds about 51 events"
    assert len(got) + lost == n
    assert len(got) <= 4096 // 80 and {e.kind for e in got} == {"opened"}
    assert [e.client_port for e in got] == list(range(31000, 31000 + len(got)))

    small.run(fast_tcp(CLIENT, VIP, 32000, 80))          # drained: room again
    assert [e.client_port for e in small.events()] == [32000]
    assert small.counters()["events_lost"] == lost


def test_stats_disabled_produces_no_events_and_loses_none(dp: Harness) -> None:
    M.disable_stats(dp.maps.settings_map)
    dp.listen(80, G1, flags=abi.ROUTE_F_STATS)
    dp.run(fast_tcp(CLIENT, VIP, 40000, 80, SYN))
    dp.run(fast_tcp(CLIENT, VIP, 40000, 80, RST))
    assert dp.events() == []
    c = dp.counters()
    assert (c["events_lost"], c["flows_created"], c["flows_closed"]) == (0, 1, 1)

    M.enable_stats(dp.maps.settings_map)
    dp.run(fast_tcp(CLIENT, VIP, 40001, 80, SYN))
    assert [(e.kind, e.client_port) for e in dp.events()] == [("opened", 40001)]


def test_the_route_that_chose_the_target_decides_about_events(dp: Harness) -> None:
    dp.listen(80, G1, flags=0)
    dp.source_route("198.18.1.0/25", TargetGroup.single(T2, 8080), flags=abi.ROUTE_F_STATS)
    dp.source_route("198.18.1.128/25", TargetGroup.single(T3, 8080), flags=0)
    dp.run(fast_tcp("198.18.1.2", VIP, 40000, 80))      # source route with stats
    dp.run(fast_tcp("198.18.1.200", VIP, 40000, 80))    # source route without
    dp.run(fast_tcp("198.18.3.2", VIP, 40000, 80))      # listen entry without
    assert [(e.client_ip, e.target_ip) for e in dp.events()] == [("198.18.1.2", T2)]


def test_userspace_events_share_the_ring_buffer(datapath: Datapath, dp: Harness) -> None:
    """lb_emit_event puts an event made in userspace (an aged flow) into the same stream."""
    ev = LbEvent(123, "closed", "udp", "aged", CLIENT, 40000, VIP, 53, T1, 9000, 100, 5, 4,
                 500, 400)
    assert emit_event(datapath.emit_fd, ev)
    assert dp.events() == [ev]
    assert dp.counters()["user_events"] == 1
    short = bpfsys.prog_test_run(datapath.emit_fd, b"\0" * 40)
    assert short.retval == 0 and dp.events() == [], "a short buffer is refused"
