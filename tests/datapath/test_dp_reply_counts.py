"""A flow's reverse counts live in its reply entry (the reply path writes nothing else) and
in its forward entry (what a deleted reply entry folded there): every reader sums them,
exactly, whichever reply path (one lookup within a tick, the full path otherwise) counted
a packet, and the counts outlive the reply entry."""

from __future__ import annotations

import time

import pytest
from dp_harness import CLIENT, T1, T2, VIP, XDP_PASS, XDP_REDIRECT, Harness
from dp_packets import ACK, FIN, PSH, RST, SYN, decode, fast_tcp, fast_udp

from lbtui import abi, bpfsys
from lbtui import maps as M
from lbtui.maps import flowrows as R
from lbtui.targets import TargetGroup

PORT = 40000
COARSE = 6    # Linux CLOCK_MONOTONIC_COARSE: bpf_ktime_get_coarse_ns's clock


def fwd(flags: int, payload: bytes = b"") -> bytes:
    return fast_tcp(CLIENT, VIP, PORT, 80, flags, payload=payload)


def rev(flags: int, payload: bytes = b"") -> bytes:
    return fast_tcp(T1, CLIENT, 8080, PORT, flags, payload=payload)


def open_flow(dp: Harness, stats: bool = True) -> int:
    """An established flow; returns the bytes its SYN-ACK counted in reverse."""
    dp.listen(80, TargetGroup.single(T1, 8080), flags=abi.ROUTE_F_STATS if stats else 0)
    assert dp.run(fwd(SYN)).verdict == XDP_REDIRECT
    synack = rev(SYN | ACK)
    assert dp.run(synack, "b1").verdict == XDP_REDIRECT
    assert dp.run(fwd(ACK)).verdict == XDP_REDIRECT
    dp.events()
    return len(synack) - 14


def reply_entry(dp: Harness) -> abi.CtValue | None:
    return dp.raw_ct(T1, CLIENT, 8080, PORT)


def forward_entry(dp: Harness) -> abi.CtValue:
    v = dp.raw_ct(CLIENT, VIP, PORT, 80)
    assert v is not None
    return v


def next_tick() -> None:
    """Wait until the coarse clock (a few ms a tick) has moved on."""
    t = time.clock_gettime_ns(COARSE)
    while time.clock_gettime_ns(COARSE) == t:
        time.sleep(0.001)


def test_every_reply_is_counted_once_within_a_tick_and_across_ticks(dp: Harness) -> None:
    nbytes = open_flow(dp)
    packets, fast = 1, 0
    for i in range(40):
        if i % 10 == 9:
            next_tick()                        # the next reply takes the full path
        if i % 7 == 3:
            assert dp.run(fwd(ACK)).verdict == XDP_REDIRECT   # forward traffic between
        frame = rev(ACK | PSH, payload=bytes(i))
        before = reply_entry(dp)
        t0 = time.clock_gettime_ns(COARSE)
        r = dp.run(frame, "b1")
        same_tick = time.clock_gettime_ns(COARSE) == t0
        assert r.verdict == XDP_REDIRECT
        assert decode(r.data)["IP"].src == VIP and decode(r.data)["TCP"].sport == 80
        packets, nbytes = packets + 1, nbytes + len(frame) - 14
        conn = dp.connection(CLIENT, PORT, 80)
        assert conn is not None and (conn.packets_rev, conn.bytes_rev) == (packets, nbytes)
        assert before is not None
        if same_tick and before.last_seen_ns == t0:
            fast += 1                          # validated this tick: the one-lookup path
    assert fast > 0, "no reply met a reply entry validated in its tick"
    # The reply path writes the counts into the reply entry only.
    f, rv = forward_entry(dp), reply_entry(dp)
    assert rv is not None and (f.packets_rev, f.bytes_rev) == (0, 0)
    assert (rv.packets_rev, rv.bytes_rev) == (packets, nbytes)
    assert conn.state == "established" and conn.packets_fwd == 2 + 6


def test_udp_replies_are_counted_and_mark_the_flow_replied(dp: Harness) -> None:
    dp.listen(53, TargetGroup.single(T1, 9000))
    assert dp.run(fast_udp(CLIENT, VIP, PORT, 53, b"q")).verdict == XDP_REDIRECT
    nbytes = 0
    for i in range(1, 6):
        answer = fast_udp(T1, CLIENT, 9000, PORT, bytes(i))
        assert dp.run(answer, "b1").verdict == XDP_REDIRECT
        nbytes += len(answer) - 14
        conn = dp.connection(CLIENT, PORT, 53, abi.IPPROTO_UDP)
        assert conn is not None and (conn.packets_rev, conn.bytes_rev) == (i, nbytes)
        assert conn.state == "replied"


@pytest.mark.parametrize("by_target", [True, False])
def test_counts_survive_a_reset_and_reach_the_closed_event(dp: Harness, by_target: bool
                                                           ) -> None:
    nbytes = open_flow(dp)
    for i in range(5):
        frame = rev(ACK, payload=bytes(10 + i))
        dp.run(frame, "b1")
        nbytes += len(frame) - 14
    packets = 6
    if by_target:
        rst = rev(RST | ACK)
        assert dp.run(rst, "b1").verdict == XDP_REDIRECT
        packets, nbytes = packets + 1, nbytes + len(rst) - 14
    else:
        assert dp.run(fwd(RST | ACK)).verdict == XDP_REDIRECT
    assert reply_entry(dp) is None, "a reset flow's reply entry goes"
    f = forward_entry(dp)
    assert (f.packets_rev, f.bytes_rev) == (packets, nbytes), "folded into the flow"
    conn = dp.connection(CLIENT, PORT, 80)
    assert conn is not None and (conn.packets_rev, conn.bytes_rev) == (packets, nbytes)
    [closed] = dp.events()
    assert (closed.kind, closed.reason) == ("closed", "rst")
    assert (closed.packets_rev, closed.bytes_rev) == (packets, nbytes)


def test_a_close_the_client_completes_reports_the_reply_entrys_counts(dp: Harness) -> None:
    nbytes = open_flow(dp)
    fin = rev(FIN | ACK)
    dp.run(fin, "b1")
    dp.run(fwd(FIN | ACK))                    # the forward path looks the reply entry up
    [closed] = dp.events()
    assert (closed.reason, closed.packets_rev, closed.bytes_rev) == (
        "fin", 2, nbytes + len(fin) - 14)
    last_ack = rev(ACK)
    assert dp.run(last_ack, "b1").verdict == XDP_REDIRECT    # completes the close
    conn = dp.connection(CLIENT, PORT, 80)
    assert conn is not None and conn.packets_rev == 3


def test_a_reused_tuple_folds_the_old_reply_entry_and_starts_from_zero(dp: Harness) -> None:
    open_flow(dp)
    dp.run(rev(ACK), "b1")
    dp.run(fwd(FIN | ACK))
    dp.run(rev(FIN | ACK), "b1")
    dp.events()
    dp.listen(80, TargetGroup.single(T2, 8080), flags=abi.ROUTE_F_STATS)
    assert dp.run(fwd(SYN)).verdict == XDP_REDIRECT           # a new flow on the tuple
    assert reply_entry(dp) is None, "the old target's reply tuple is gone"
    conn = dp.connection(CLIENT, PORT, 80)
    assert conn is not None and conn.target_ip == T2
    assert (conn.packets_fwd, conn.packets_rev, conn.bytes_rev) == (1, 0, 0)


def test_a_stale_reply_entry_is_refused_once_its_tick_is_over(dp: Harness) -> None:
    """Deleting the forward entry alone (the LRU can, and the sweep races) leaves a reply
    entry validated this tick: it may translate, to its own flow's VIP, for the rest of
    the tick; the first reply of the next tick finds the flow gone."""
    open_flow(dp)
    assert dp.run(rev(ACK), "b1").verdict == XDP_REDIRECT
    assert bpfsys.delete(dp.maps.conntrack_map.fd,
                         M.FiveTuple(CLIENT, VIP, PORT, 80).key())
    r = dp.run(rev(ACK), "b1")
    if r.verdict == XDP_REDIRECT:
        assert decode(r.data)["IP"].src == VIP
    next_tick()
    frame = rev(ACK)
    r = dp.run(frame, "b1")
    assert (r.verdict, r.data) == (XDP_PASS, frame)
    assert reply_entry(dp) is None
    assert dp.reasons("b1").get("stale_reply", 0) >= 1


def put(dp: Harness, key: abi.CtKey, value: abi.CtValue) -> None:
    bpfsys.update(dp.maps.conntrack_map.fd, key, value)


def planted(dp: Harness, cport: int, fwd_rev: tuple[int, int], reply_rev: tuple[int, int],
            orig_port: int = 80) -> None:
    """A flow written as the datapath would, with reverse counts in both entries; the
    reply entry names VIP:``orig_port`` (another port: another listener's flow)."""
    k = M.FiveTuple(CLIENT, VIP, cport, 80).key()
    t = M.FiveTuple(T1, CLIENT, 8080, cport).key()
    v = abi.CtValue(orig_dst_ip=k.dst_ip, orig_dst_port=k.dst_port,
                    flags=abi.CT_F_SEEN_REPLY, nat_dst_ip=t.src_ip, nat_dst_port=t.src_port,
                    created_ns=1, last_seen_ns=1, packets_fwd=9, bytes_fwd=900,
                    packets_rev=fwd_rev[0], bytes_rev=fwd_rev[1])
    rv = abi.CtValue(orig_dst_ip=k.dst_ip,
                     orig_dst_port=M.FiveTuple(CLIENT, VIP, 1, orig_port).key().dst_port,
                     flags=abi.CT_F_REPLY | abi.CT_F_SEEN_REPLY, nat_dst_ip=t.src_ip,
                     nat_dst_port=t.src_port, created_ns=1, last_seen_ns=1,
                     packets_rev=reply_rev[0], bytes_rev=reply_rev[1])
    put(dp, t, rv)
    put(dp, k, v)


def test_readers_sum_a_flows_two_entries_and_only_its_own(dp: Harness) -> None:
    planted(dp, 41000, (5, 500), (3, 300))
    planted(dp, 41001, (0, 0), (7, 700))
    planted(dp, 41002, (2, 200), (4, 400), orig_port=81)   # not this flow's reply entry
    want = {41000: (8, 800), 41001: (7, 700), 41002: (2, 200)}
    got = {c.client_port: (c.packets_rev, c.bytes_rev)
           for c in M.list_connections(dp.maps.conntrack_map)}
    assert got == want
    for port, counts in want.items():
        c = dp.connection(CLIENT, port, 80)
        assert c is not None and (c.packets_rev, c.bytes_rev) == counts
    for chunk in (1, 2, 1024):                 # reply and forward in different batches
        dump = R.read_rows(R.open_reader(dp.maps.conntrack_map, chunk=chunk))
        rows = {int.from_bytes(r[R.KEY][8:10], "big"): (r[R.PKTS_REV], r[R.BYTES_REV])
                for r in dump.rows}
        assert rows == want
    removed = M.clear_stale_connections(dp.maps.conntrack_map, 10**18, 1)
    assert {c.client_port: (c.packets_rev, c.bytes_rev) for c in removed} == want
