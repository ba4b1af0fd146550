"""Replies from a target are rewritten back to VIP:port in the kernel, on any CPU."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from dp_harness import CLIENT, CLIENT_MAC, T1, VIP, XDP_PASS, XDP_REDIRECT, Harness
from dp_packets import assert_checksums_valid, decode, fast_tcp, tcp, udp

from lbtui import abi, bpfsys
from lbtui import maps as M
from lbtui.targets import TargetGroup


def test_reply_is_rewritten_to_come_from_vip_port_and_counted(
        dp: Harness) -> None:
    dp.listen(80, TargetGroup.single(T1, 8080))
    dp.run(tcp(CLIENT, VIP, 40000, 80, "S"))
    synack = tcp(T1, CLIENT, 8080, 40000, "SA", seq=5000, ack=1001,
                 options=[("MSS", 1460), ("NOP", None), ("WScale", 7)])
    r = dp.run(synack, iface="b1")

    assert r.verdict == XDP_REDIRECT
    out = decode(r.data)
    assert (out["IP"].src, out["TCP"].sport, out["IP"].dst, out["TCP"].dport) == (
        VIP, 80, CLIENT, 40000)
    assert out.dst == CLIENT_MAC and out.src == dp.net.mac["c1"]
    assert (out["TCP"].seq, out["TCP"].ack) == (5000, 1001)
    assert_checksums_valid(r.data)

    conn = dp.connection(CLIENT, 40000, 80)
    assert conn is not None
    assert (conn.packets_fwd, conn.packets_rev, conn.bytes_rev) == (1, 1, len(synack) - 14)
    assert conn.flags & abi.CT_F_SEEN_REPLY and conn.state == "established"
    assert conn.target_ip == T1


def test_reply_whose_flow_was_evicted_passes_untouched_and_its_tuple_goes(dp: Harness
                                                                          ) -> None:
    """The reply tuple is only an index into its flow: without the forward entry nothing
    says the target still talks to a balanced client, so the packet is not ours."""
    dp.listen(80, TargetGroup.single(T1, 8080))
    dp.run(fast_tcp(CLIENT, VIP, 40000, 80))
    fwd = M.FiveTuple(CLIENT, VIP, 40000, 80).key()
    assert bpfsys.delete(dp.maps.conntrack_map.fd, fwd)
    ack = fast_tcp(T1, CLIENT, 8080, 40000, 0x10)                     # mid-flow ACK
    r = dp.run(ack, iface="b1")
    assert (r.verdict, r.data) == (XDP_PASS, ack)
    assert dp.ct_entries() == {}
    assert dp.reasons("b1") == {"stale_reply": 1}


def test_reply_entry_lost_to_eviction_or_sweep_is_rebuilt_by_forward_traffic(
        dp: Harness) -> None:
    dp.listen(80, TargetGroup.single(T1, 8080))
    dp.run(fast_tcp(CLIENT, VIP, 40000, 80))
    reply = M.FiveTuple(T1, CLIENT, 8080, 40000).key()
    assert bpfsys.delete(dp.maps.conntrack_map.fd, reply)
    # The next forward packet in a new clock tick re-creates it from the flow.
    flow = M.FiveTuple(CLIENT, VIP, 40000, 80).key()
    v = bpfsys.lookup(dp.maps.conntrack_map.fd, flow, abi.CtValue)
    v.last_seen_ns -= 1_000_000_000
    bpfsys.update(dp.maps.conntrack_map.fd, flow, v)
    dp.run(fast_tcp(CLIENT, VIP, 40000, 80, 0x10))
    assert dp.counters()["replies_rebuilt"] == 1
    r = dp.run(fast_tcp(T1, CLIENT, 8080, 40000, 0x10), iface="b1")
    out = decode(r.data)
    assert (out["IP"].src, out["TCP"].sport) == (VIP, 80)
    assert_checksums_valid(r.data)


def test_stale_reply_tuple_does_not_hijack_a_direct_connection_on_the_same_port(
        dp: Harness) -> None:
    """A finished flow's reply tuple lingers until the sweep. When the client reuses its
    port to reach the target directly, the target's SYN-ACK must pass untouched (not come
    back as VIP:80), and the stale tuple is dropped."""
    dp.listen(80, TargetGroup.single(T1, 8080))
    dp.run(fast_tcp(CLIENT, VIP, 40000, 80))
    dp.run(fast_tcp(CLIENT, VIP, 40000, 80, 0x11))                 # FIN|ACK
    dp.run(fast_tcp(T1, CLIENT, 8080, 40000, 0x11), iface="b1")
    assert dp.connection(CLIENT, 40000, 80).state == "closed"
    synack = fast_tcp(T1, CLIENT, 8080, 40000, 0x12)
    r = dp.run(synack, iface="b1")
    assert (r.verdict, r.data) == (XDP_PASS, synack)
    assert not any(v.flags & abi.CT_F_REPLY for v in dp.ct_entries().values())
    ack = fast_tcp(T1, CLIENT, 8080, 40000, 0x10)
    assert dp.run(ack, iface="b1").data == ack                     # and stays untouched


def test_udp_answer_without_its_flow_passes_untouched(dp: Harness) -> None:
    dp.listen(53, TargetGroup.single(T1, 9000))
    dp.run(udp(CLIENT, VIP, 40000, 53, b"query"))
    assert M.delete_connection(dp.maps.conntrack_map, (CLIENT, VIP, 40000, 53, "udp"))
    # delete_connection removes both tuples; plant a lone reply tuple as a sweep race would.
    dp.run(udp(CLIENT, VIP, 40000, 53, b"query"))
    assert bpfsys.delete(dp.maps.conntrack_map.fd,
                         M.FiveTuple(CLIENT, VIP, 40000, 53, abi.IPPROTO_UDP).key())
    answer = udp(T1, CLIENT, 9000, 40000, b"answer")
    r = dp.run(answer, iface="b1")
    assert (r.verdict, r.data) == (XDP_PASS, answer)


def test_udp_reply_is_rewritten(dp: Harness) -> None:
    dp.listen(53, TargetGroup.single(T1, 9000))
    dp.run(udp(CLIENT, VIP, 40000, 53, b"query"))
    r = dp.run(udp(T1, CLIENT, 9000, 40000, b"answer"), iface="b1")
    out = decode(r.data)
    assert (out["IP"].src, out["UDP"].sport, out["IP"].dst) == (VIP, 53, CLIENT)
    assert_checksums_valid(r.data)
    conn = dp.connection(CLIENT, 40000, 53, abi.IPPROTO_UDP)
    assert conn is not None and conn.packets_rev == 1 and conn.state == "replied"


def test_traffic_from_a_target_that_is_no_reply_passes_untouched(dp: Harness) -> None:
    dp.listen(80, TargetGroup.single(T1, 8080))
    dp.run(fast_tcp(CLIENT, VIP, 40000, 80))
    for frame in (fast_tcp(T1, CLIENT, 8080, 40001, 0x12),     # other client port
                  fast_tcp(T1, CLIENT, 8081, 40000, 0x12),     # other target port
                  fast_tcp(T1, "198.18.1.3", 8080, 40000, 0x12)):
        r = dp.run(frame, iface="b1")
        assert (r.verdict, r.data) == (XDP_PASS, frame)


@pytest.fixture
def restore_affinity() -> Iterator[None]:
    saved = os.sched_getaffinity(0)
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)


def test_reply_on_another_cpu_sees_the_flow(dp: Harness, restore_affinity: None) -> None:
    """With a per-CPU conntrack the reply's CPU would read a zeroed entry and
    rewrite the source to 0.0.0.0:0. BPF_PROG_TEST_RUN runs on the calling thread's CPU."""
    assert {0, 1} <= os.sched_getaffinity(0), "needs CPUs 0 and 1"
    dp.listen(80, TargetGroup.of([(T1, 8080, 50), ("198.18.101.3", 8080, 50)]))
    for port in range(42000, 42020):
        os.sched_setaffinity(0, {0})
        fwd = decode(dp.run(fast_tcp(CLIENT, VIP, port, 80)).data)
        target, tport = fwd["IP"].dst, fwd["TCP"].dport
        os.sched_setaffinity(0, {1})
        r = dp.run(fast_tcp(target, CLIENT, tport, port, 0x12), iface="b1")
        out = decode(r.data)
        assert (out["IP"].src, out["TCP"].sport, out["IP"].dst, out["TCP"].dport) == (
            VIP, 80, CLIENT, port)
        assert_checksums_valid(r.data)
        os.sched_setaffinity(0, {0})
        ack = decode(dp.run(fast_tcp(CLIENT, VIP, port, 80, 0x10)).data)
        assert ack["IP"].dst == target, "the forward direction still sees its target"
        conn = dp.connection(CLIENT, port, 80)
        assert conn is not None and (conn.packets_fwd, conn.packets_rev) == (2, 1)


def test_close_seen_from_two_cpus_is_reported_once(dp: Harness, restore_affinity: None
                                                  ) -> None:
    dp.listen(80, TargetGroup.single(T1, 8080), flags=abi.ROUTE_F_STATS)
    os.sched_setaffinity(0, {0})
    dp.run(fast_tcp(CLIENT, VIP, 40000, 80))
    dp.run(fast_tcp(CLIENT, VIP, 40000, 80, 0x11))            # FIN from the client
    os.sched_setaffinity(0, {1})
    dp.run(fast_tcp(T1, CLIENT, 8080, 40000, 0x11), iface="b1")   # FIN from the target
    dp.run(fast_tcp(T1, CLIENT, 8080, 40000, 0x14), iface="b1")   # and an RST after it
    os.sched_setaffinity(0, {0})
    dp.run(fast_tcp(CLIENT, VIP, 40000, 80, 0x10))
    closed = [e for e in dp.events() if e.kind == "closed"]
    assert [(e.reason, e.packets_fwd, e.packets_rev) for e in closed] == [("fin", 2, 1)]
    assert dp.counters()["flows_closed"] == 1
