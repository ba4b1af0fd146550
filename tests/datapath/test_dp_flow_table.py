"""The flow table cannot be poisoned and never rewrites another connection's packets:
only a SYN opens a TCP flow; a finished or aged flow's reply tuple answers no new
connection; two flows never share a reply tuple; listeners serve only their addresses."""

from __future__ import annotations

import ctypes as ct

import pytest
from dp_harness import CLIENT, T1, T2, VIP, XDP_PASS, XDP_REDIRECT, Harness
from dp_packets import ACK, FIN, RST, SYN, assert_checksums_valid, decode, fast_tcp, fast_udp

from lbtui import abi, bpfsys
from lbtui import maps as M
from lbtui.targets import TargetGroup

G1 = TargetGroup.single(T1, 8080)
S = 1_000_000_000


def fwd(flags: int, port: int = 40000, vport: int = 80) -> bytes:
    return fast_tcp(CLIENT, VIP, port, vport, flags)


def rev(flags: int, port: int = 40000, target: str = T1) -> bytes:
    return fast_tcp(target, CLIENT, 8080, port, flags)


def reply_entries(dp: Harness) -> list[abi.CtValue]:
    return [v for v in dp.ct_entries().values() if v.flags & abi.CT_F_REPLY]


@pytest.mark.parametrize("flags", [ACK, FIN | ACK, RST, ACK | 0x08], ids=["ack", "fin",
                                                                         "rst", "psh"])
def test_only_a_syn_opens_a_tcp_flow(dp: Harness, flags: int) -> None:
    dp.listen(80, G1, flags=abi.ROUTE_F_STATS)
    frame = fwd(flags)
    r = dp.run(frame)
    assert (r.verdict, r.data) == (XDP_PASS, frame)
    assert dp.ct_entries() == {} and dp.events() == []
    assert dp.counters()["flows_created"] == 0
    assert dp.reasons("c1") == {"no_flow": 1}


def test_two_listeners_sharing_a_target_never_share_a_reply_tuple(dp: Harness) -> None:
    """A client that uses one port towards :80 and :82, both balanced to T1:8080: the
    target would see one connection. The second flow is refused (the client gets a reset
    from the stack and retries on another port); the first keeps working."""
    dp.listen(80, G1)
    dp.listen(82, G1)
    assert dp.run(fwd(SYN)).verdict == XDP_REDIRECT
    clash = fwd(SYN, vport=82)
    r = dp.run(clash)
    assert (r.verdict, r.data) == (XDP_PASS, clash)
    assert dp.reasons("c1") == {"reply_clash": 1}
    assert dp.connection(CLIENT, 40000, 82) is None
    out = decode(dp.run(rev(SYN | ACK), "b1").data)
    assert (out["IP"].src, out["TCP"].sport) == (VIP, 80), "the first flow keeps its replies"

    # Once the first flow has finished, the tuple is free for the second listener.
    dp.run(fwd(RST))
    assert dp.run(fwd(SYN, vport=82)).verdict == XDP_REDIRECT
    out = decode(dp.run(rev(SYN | ACK), "b1").data)
    assert (out["IP"].src, out["TCP"].sport) == (VIP, 82)


def direct_syn(port: int = 40000, target: str = T1) -> bytes:
    """The client opening a connection straight to the target (no VIP) on that port."""
    return fast_tcp(CLIENT, target, port, 8080, SYN)


def test_target_closing_first_gets_its_last_acks_through(dp: Harness) -> None:
    dp.listen(80, G1)
    dp.run(fwd(SYN))
    dp.run(rev(SYN | ACK), "b1")
    dp.run(fwd(ACK))
    assert decode(dp.run(rev(FIN | ACK), "b1").data)["IP"].src == VIP     # target first
    dp.run(fwd(FIN | ACK))                                                # flow finished
    for _ in range(2):                  # its last ACK, and again for a repeated FIN
        last = dp.run(rev(ACK), "b1")
        assert decode(last.data)["IP"].src == VIP, "the target's last ACKs are the flow's"
        assert_checksums_valid(last.data)
    direct = rev(SYN | ACK)             # the client now talks to T1 directly on that port
    assert dp.run(direct, "b1").data == direct
    assert reply_entries(dp) == [], "a handshake on the tuple ends the finished flow's"


def test_a_simultaneous_close_translates_every_packet_of_the_target(dp: Harness) -> None:
    """Both FINs cross: the target's FIN finishes the flow, and its ACK of the client's
    FIN comes after; it must still come from the VIP (else the client resets and keeps
    resending its FIN)."""
    dp.listen(80, G1)
    dp.run(fwd(SYN))
    dp.run(rev(SYN | ACK), "b1")
    dp.run(fwd(ACK))
    dp.run(fwd(FIN | ACK))
    assert decode(dp.run(rev(FIN | ACK), "b1").data)["IP"].src == VIP     # flow finished
    ack = dp.run(rev(ACK), "b1")
    assert decode(ack.data)["IP"].src == VIP
    assert_checksums_valid(ack.data)
    assert dp.reasons("b1") == {}


def test_a_direct_syn_on_a_finished_tuple_ends_its_reply_path(dp: Harness) -> None:
    """A client reusing the port of a finished balanced flow to reach the target itself:
    whatever the target answers (a SYN-ACK, or the ACK of a socket still in TIME_WAIT)
    must reach the client untouched, from the target."""
    dp.listen(80, G1)
    M.mark_ports(dp.maps.ports_map, listen=[80], targets=[8080])
    dp.run(fwd(SYN))
    dp.run(rev(SYN | ACK), "b1")
    dp.run(fwd(FIN | ACK))
    dp.run(rev(FIN | ACK), "b1")                                           # finished
    syn = direct_syn()
    r = dp.run(syn)
    assert (r.verdict, r.data) == (XDP_PASS, syn)
    assert reply_entries(dp) == []
    challenge = rev(ACK)                # TIME_WAIT's answer to the SYN: no SYN flag
    assert dp.run(challenge, "b1").data == challenge


def test_a_direct_syn_leaves_a_live_flow_alone(dp: Harness) -> None:
    dp.listen(80, G1)
    M.mark_ports(dp.maps.ports_map, listen=[80], targets=[8080])
    dp.run(fwd(SYN))
    dp.run(rev(SYN | ACK), "b1")
    syn = direct_syn()
    assert dp.run(syn).data == syn
    assert len(reply_entries(dp)) == 1
    assert decode(dp.run(rev(ACK), "b1").data)["IP"].src == VIP


@pytest.mark.parametrize("side", ["client", "target"])
def test_a_reset_frees_the_tuple_at_once(dp: Harness, side: str) -> None:
    dp.listen(80, G1)
    dp.run(fwd(SYN))
    dp.run(rev(SYN | ACK), "b1")
    if side == "client":
        dp.run(fwd(RST))
    else:
        assert decode(dp.run(rev(RST), "b1").data)["IP"].src == VIP
    assert reply_entries(dp) == []
    late = rev(ACK)
    assert dp.run(late, "b1").data == late


def test_a_target_opening_a_connection_is_not_a_reply(dp: Harness) -> None:
    dp.listen(80, G1)
    dp.run(fwd(SYN))
    syn = rev(SYN)                                   # SYN without ACK from the target
    assert dp.run(syn, "b1").data == syn
    assert len(reply_entries(dp)) == 1, "the live flow keeps its tuple"
    assert decode(dp.run(rev(SYN | ACK), "b1").data)["IP"].src == VIP


def test_an_aged_udp_flow_answers_no_datagram(dp: Harness) -> None:
    """A datagram from the target after the flow timed out belongs to a new exchange
    (the client may talk to the target directly on that port now)."""
    dp.listen(53, TargetGroup.single(T1, 9000))
    M.set_connection_timeout(dp.maps.settings_map, 1)
    dp.run(fast_udp(CLIENT, VIP, 40000, 53))
    key = M.FiveTuple(CLIENT, VIP, 40000, 53, abi.IPPROTO_UDP).key()
    v = bpfsys.lookup(dp.maps.conntrack_map.fd, key, abi.CtValue)
    v.last_seen_ns -= 5 * S
    bpfsys.update(dp.maps.conntrack_map.fd, key, v)
    answer = fast_udp(T1, CLIENT, 9000, 40000, b"answer")
    r = dp.run(answer, "b1")
    assert (r.verdict, r.data) == (XDP_PASS, answer)
    assert reply_entries(dp) == [] and dp.reasons("b1") == {"stale_reply": 1}


def test_a_flow_created_meanwhile_by_another_cpu_is_followed(dp: Harness) -> None:
    """Creation uses BPF_NOEXIST: a forward entry that appeared between the lookup and
    the insert (a SYN retransmitted on another CPU) is followed, never overwritten."""
    dp.listen(80, TargetGroup.of([(T1, 8080, 50), (T2, 8080, 50)]))
    picked = decode(dp.run(fwd(SYN)).data)["IP"].dst
    before = dp.ct_entries()
    again = decode(dp.run(fwd(SYN)).data)
    assert again["IP"].dst == picked
    assert dp.ct_entries().keys() == before.keys()
    assert dp.counters()["flows_created"] == 1


@pytest.mark.parametrize(("flag", "served", "other"), [
    (abi.ROUTE_F_LOCAL, VIP, "198.18.9.9"),
    (abi.ROUTE_F_ADDRESS, VIP, "198.18.0.11"),
], ids=["local-addresses", "own-address"])
def test_listeners_serve_only_their_addresses(dp: Harness, flag: int, served: str,
                                              other: str) -> None:
    """Traffic through the balancer to another host on a listener's port (a client talking
    to a backend directly, or anything routed through) is not hijacked."""
    dp.listen(80, G1, flags=flag)
    if flag == abi.ROUTE_F_LOCAL:
        M.set_local_addresses(dp.maps.local_addrs_map, [VIP])
    else:
        k = M.vip_key(VIP, 80)
        bpfsys.update(dp.maps.vips_map.fd, k, ct.c_uint32(1))
    transit = fast_tcp(CLIENT, other, 40000, 80)
    r = dp.run(transit)
    assert (r.verdict, r.data) == (XDP_PASS, transit)
    assert dp.reasons("c1") == {"not_vip": 1}
    assert decode(dp.run(fast_tcp(CLIENT, served, 40000, 80)).data)["IP"].dst == T1


def test_sweep_keeps_a_flow_alive_on_either_half(dp: Harness) -> None:
    """Forward and reply traffic each refresh the flow: the sweep removes a flow only
    when both halves are idle, and then both; an orphaned reply tuple goes."""
    dp.listen(53, TargetGroup.single(T1, 9000))
    dp.run(fast_udp(CLIENT, VIP, 40000, 53))
    dp.run(fast_udp(T1, CLIENT, 9000, 40000), "b1")
    fd = dp.maps.conntrack_map.fd
    fkey = M.FiveTuple(CLIENT, VIP, 40000, 53, abi.IPPROTO_UDP).key()
    rkey = M.FiveTuple(T1, CLIENT, 9000, 40000, abi.IPPROTO_UDP).key()
    f = bpfsys.lookup(fd, fkey, abi.CtValue)
    now = f.last_seen_ns
    f.last_seen_ns = now - 400 * S                 # the client has been quiet...
    bpfsys.update(fd, fkey, f)
    ct_map = dp.maps.conntrack_map
    assert M.clear_stale_connections(ct_map, now + S, 300 * S, 10 * S) == []
    assert bpfsys.lookup(fd, rkey, abi.CtValue) is not None   # ...the target has not

    removed = M.clear_stale_connections(ct_map, now + 301 * S, 300 * S, 10 * S)
    assert [c.client_port for c in removed] == [40000] and dp.ct_entries() == {}

    dp.run(fast_udp(CLIENT, VIP, 40001, 53))
    assert bpfsys.delete(fd, M.FiveTuple(CLIENT, VIP, 40001, 53, abi.IPPROTO_UDP).key())
    assert len(reply_entries(dp)) == 1
    assert M.clear_stale_connections(ct_map, now + 20 * S, 300 * S, 10 * S) == []
    assert dp.ct_entries() == {}, "the orphaned reply tuple is gone"
