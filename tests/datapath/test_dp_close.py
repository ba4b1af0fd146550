"""TCP FIN from both sides, or an RST from either, closes a flow: flags, the closed counter,
one "closed" event with the final counters; a new SYN on a closed tuple picks again."""

from __future__ import annotations

import pytest
from dp_harness import CLIENT, T1, T2, VIP, XDP_REDIRECT, Harness
from dp_packets import ACK, FIN, RST, SYN, assert_checksums_valid, decode, fast_tcp

from lbtui import abi
from lbtui.targets import TargetGroup

G1 = TargetGroup.single(T1, 8080)
G2 = TargetGroup.single(T2, 8080)
PORT = 40000


def fwd(flags: int, payload: bytes = b"") -> bytes:
    return fast_tcp(CLIENT, VIP, PORT, 80, flags, payload=payload)


def rev(flags: int, target: str = T1) -> bytes:
    return fast_tcp(target, CLIENT, 8080, PORT, flags)


def open_flow(dp: Harness) -> None:
    dp.listen(80, G1, flags=abi.ROUTE_F_STATS)
    for frame, iface in ((fwd(SYN), "c1"), (rev(SYN | ACK), "b1"), (fwd(ACK), "c1")):
        assert dp.run(frame, iface).verdict == XDP_REDIRECT
    [opened] = dp.events()
    assert opened.kind == "opened" and opened.target == f"{T1}:8080"


def flags_now(dp: Harness) -> int:
    conn = dp.connection(CLIENT, PORT, 80)
    assert conn is not None
    return conn.flags


def test_fin_from_both_sides_closes_the_flow_once_with_final_counters(dp: Harness) -> None:
    open_flow(dp)
    for _ in range(2):                     # a retransmitted FIN is still half a close
        r = dp.run(fwd(FIN | ACK))
        assert decode(r.data)["IP"].dst == T1
        assert_checksums_valid(r.data)
    assert flags_now(dp) & (abi.CT_F_FIN_FWD | abi.CT_F_FIN_REV) == abi.CT_F_FIN_FWD
    assert dp.connection(CLIENT, PORT, 80).state == "closing"
    assert dp.counters()["flows_closed"] == 0 and dp.events() == []

    r = dp.run(rev(FIN | ACK), "b1")
    assert decode(r.data)["IP"].src == VIP
    assert_checksums_valid(r.data)
    conn = dp.connection(CLIENT, PORT, 80)
    assert conn is not None and conn.state == "closed"
    assert conn.flags & abi.CT_F_CLOSE_SENT
    assert dp.counters()["flows_closed"] == 1
    [closed] = dp.events()
    assert (closed.kind, closed.reason, closed.proto) == ("closed", "fin", "tcp")
    assert (closed.client, closed.target, closed.vip_ip, closed.vip_port) == (
        f"{CLIENT}:{PORT}", f"{T1}:8080", VIP, 80)
    assert (closed.packets_fwd, closed.packets_rev) == (4, 2)
    assert (closed.bytes_fwd, closed.bytes_rev) == (4 * 40, 2 * 40)
    assert closed.created_ns == conn.created_ns and closed.ts_ns >= closed.created_ns

    last_ack = dp.run(fwd(ACK))                   # the flow is still tracked
    assert decode(last_ack.data)["IP"].dst == T1
    assert dp.counters()["flows_closed"] == 1 and dp.events() == []


@pytest.mark.parametrize("side", ["client", "target"])
def test_rst_from_either_side_closes_the_flow(dp: Harness, side: str) -> None:
    open_flow(dp)
    first = dp.run(fwd(RST | ACK)) if side == "client" else dp.run(rev(RST | ACK), "b1")
    assert_checksums_valid(first.data)
    assert flags_now(dp) & abi.CT_F_RST
    assert dp.connection(CLIENT, PORT, 80).state == "reset"
    [closed] = dp.events()
    assert (closed.kind, closed.reason) == ("closed", "rst")
    assert (closed.packets_fwd, closed.packets_rev) == (
        (3, 1) if side == "client" else (2, 2))
    dp.run(rev(RST), "b1") if side == "client" else dp.run(fwd(RST))
    assert dp.counters()["flows_closed"] == 1 and dp.events() == []


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_new_syn_on_a_closed_tuple_picks_a_target_again(dp: Harness, how: str) -> None:
    open_flow(dp)
    if how == "fin":
        dp.run(fwd(FIN | ACK))
        dp.run(rev(FIN | ACK), "b1")
    else:
        dp.run(fwd(RST))
    dp.events()
    dp.listen(80, G2, flags=abi.ROUTE_F_STATS)

    r = dp.run(fwd(SYN))
    assert decode(r.data)["IP"].dst == T2
    assert_checksums_valid(r.data)
    conn = dp.connection(CLIENT, PORT, 80)
    assert conn is not None and conn.target_ip == T2
    assert conn.flags == abi.CT_F_STATS and conn.packets_fwd == 1 and conn.packets_rev == 0
    assert dp.raw_ct(T2, CLIENT, 8080, PORT) is not None
    assert dp.counters()["flows_created"] == 2
    [opened] = dp.events()
    assert opened.kind == "opened" and opened.target == f"{T2}:8080"
    reply = dp.run(rev(SYN | ACK, target=T2), "b1")
    assert decode(reply.data)["IP"].src == VIP


def test_syn_on_a_half_closed_flow_keeps_its_target(dp: Harness) -> None:
    open_flow(dp)
    dp.run(fwd(FIN | ACK))
    dp.listen(80, G2)
    assert decode(dp.run(fwd(SYN)).data)["IP"].dst == T1
    assert dp.counters()["flows_created"] == 1


def test_closing_without_stats_emits_nothing_but_is_counted(dp: Harness) -> None:
    dp.listen(80, G1)                          # route flags 0: no events for its flows
    dp.run(fwd(SYN))
    dp.run(fwd(RST))
    assert dp.events() == []
    assert dp.counters()["flows_closed"] == 1


@pytest.mark.parametrize("late", [RST, FIN | ACK, ACK])
def test_late_packet_from_the_previous_target_of_a_reused_tuple_leaves_the_new_flow_alone(
        dp: Harness, late: int) -> None:
    """After a closed tuple was re-picked to another target, a straggler from the old target
    must not be counted on, half-close or reset the new flow."""
    open_flow(dp)
    dp.run(fwd(RST))
    dp.listen(80, G2, flags=abi.ROUTE_F_STATS)
    dp.run(fwd(SYN))
    dp.run(rev(SYN | ACK, target=T2), "b1")
    dp.events()
    before = dp.connection(CLIENT, PORT, 80)
    assert before is not None and before.target_ip == T2

    dp.run(rev(late, target=T1), "b1")
    after = dp.connection(CLIENT, PORT, 80)
    assert after is not None
    assert (after.flags, after.packets_rev, after.bytes_rev) == (
        before.flags, before.packets_rev, before.bytes_rev)
    assert dp.counters()["flows_closed"] == 1 and dp.events() == []
    assert dp.raw_ct(T1, CLIENT, 8080, PORT) is None, "the old reply tuple is gone"
