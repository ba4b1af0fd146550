"""UDP flows (checksum updated, 0 stays 0, a result of 0 is sent as 0xffff), the listener's
protocol filter, and the connection timeout from the settings map."""

from __future__ import annotations

import socket
import struct
import time

import pytest
from dp_harness import CLIENT, T1, T2, VIP, XDP_PASS, XDP_REDIRECT, Harness
from dp_packets import (
    ACK,
    SYN,
    assert_checksums_valid,
    decode,
    fast_tcp,
    inet_checksum,
    tcp,
    udp,
)

from lbtui import abi, bpfsys
from lbtui import maps as M
from lbtui.targets import TargetGroup

G1 = TargetGroup.single(T1, 9000)
G2 = TargetGroup.single(T2, 9000)
UDP = abi.IPPROTO_UDP


def test_udp_flow_is_dnated_with_its_checksum_updated(dp: Harness) -> None:
    dp.listen(53, G1)
    r = dp.run(udp(CLIENT, VIP, 40000, 53, b"query" * 7))
    assert r.verdict == XDP_REDIRECT
    out = decode(r.data)
    assert (out["IP"].dst, out["UDP"].dport, out["UDP"].sport) == (T1, 9000, 40000)
    assert bytes(out["UDP"].payload) == b"query" * 7
    assert_checksums_valid(r.data)
    conn = dp.connection(CLIENT, 40000, 53, UDP)
    assert conn is not None and conn.target == f"{T1}:9000" and conn.state == "new"


def test_udp_checksum_zero_stays_zero_both_ways(dp: Harness) -> None:
    dp.listen(53, G1)
    r = dp.run(udp(CLIENT, VIP, 40000, 53, b"no checksum", chksum=0))
    out = decode(r.data)
    assert (out["IP"].dst, out["UDP"].dport) == (T1, 9000)
    assert_checksums_valid(r.data, udp_zero=True)
    back = dp.run(udp(T1, CLIENT, 9000, 40000, b"none either", chksum=0), "b1")
    assert decode(back.data)["IP"].src == VIP
    assert_checksums_valid(back.data, udp_zero=True)


def test_udp_checksum_that_becomes_zero_is_sent_as_ffff(dp: Harness) -> None:
    """RFC 768: a computed 0 is transmitted as all ones (0 would mean "no checksum"). The
    payload's first word is chosen so the rewritten datagram's checksum computes to 0."""
    dp.listen(53, G1)
    tail = b"zero-sum"
    blank = struct.pack("!HHHH", 40000, 9000, 8 + 2 + len(tail), 0) + b"\0\0" + tail
    pseudo = (socket.inet_aton(CLIENT) + socket.inet_aton(T1)
              + struct.pack("!BBH", 0, 17, len(blank)))
    word = inet_checksum(pseudo + blank)
    payload = struct.pack("!H", word) + tail
    dgram = blank[:8] + payload
    assert inet_checksum(pseudo + dgram) == 0, "test construction"

    r = dp.run(udp(CLIENT, VIP, 40000, 53, payload))
    out = decode(r.data)
    assert out["IP"].dst == T1 and out["UDP"].chksum == 0xFFFF
    assert_checksums_valid(r.data)


@pytest.mark.parametrize(("flags", "tcp_ours", "udp_ours"), [
    (0, True, True),
    (abi.ROUTE_F_TCP, True, False),
    (abi.ROUTE_F_UDP, False, True),
    (abi.ROUTE_F_TCP | abi.ROUTE_F_UDP, True, True),
], ids=["both-implicit", "tcp-only", "udp-only", "both-explicit"])
def test_listener_protocol_filter(dp: Harness, flags: int, tcp_ours: bool, udp_ours: bool
                                  ) -> None:
    dp.listen(53, G1, flags=flags)
    for frame, ours in ((tcp(CLIENT, VIP, 40000, 53), tcp_ours),
                        (udp(CLIENT, VIP, 40000, 53), udp_ours)):
        r = dp.run(frame)
        if ours:
            assert decode(r.data)["IP"].dst == T1
            assert_checksums_valid(r.data)
        else:
            assert (r.verdict, r.data) == (XDP_PASS, frame)
    assert len(M.list_connections(dp.maps.conntrack_map)) == tcp_ours + udp_ours


def age(dp: Harness, proto: int, port: int, seconds: float) -> None:
    """Make a flow look idle for ``seconds`` (last_seen_ns is CLOCK_MONOTONIC, the clock of
    bpf_ktime_get_ns)."""
    key = M.FiveTuple(CLIENT, VIP, 40000, port, proto).key()
    v = bpfsys.lookup(dp.maps.conntrack_map.fd, key, abi.CtValue)
    assert v is not None
    v.last_seen_ns = time.monotonic_ns() - int(seconds * 1e9)
    bpfsys.update(dp.maps.conntrack_map.fd, key, v)


def target_of(dp: Harness, frame: bytes) -> str:
    return decode(dp.run(frame).data)["IP"].dst


def test_expired_udp_flow_picks_again_and_a_live_one_does_not(dp: Harness) -> None:
    M.set_connection_timeout(dp.maps.settings_map, 30)
    dp.listen(53, G1)
    dgram = udp(CLIENT, VIP, 40000, 53)
    assert target_of(dp, dgram) == T1
    dp.listen(53, G2)
    age(dp, UDP, 53, 29)
    assert target_of(dp, dgram) == T1, "29 s idle < 30 s timeout: same flow"
    age(dp, UDP, 53, 31)
    assert target_of(dp, dgram) == T2, "31 s idle: a new flow"
    conn = dp.connection(CLIENT, 40000, 53, UDP)
    assert conn is not None and conn.target_ip == T2 and conn.packets_fwd == 1
    assert time.monotonic_ns() - conn.created_ns < 10e9
    assert dp.counters()["flows_created"] == 2


def test_timeout_zero_disables_ageing_in_the_kernel(dp: Harness) -> None:
    M.set_connection_timeout(dp.maps.settings_map, 0)
    dp.listen(53, G1)
    dgram = udp(CLIENT, VIP, 40000, 53)
    target_of(dp, dgram)
    dp.listen(53, G2)
    age(dp, UDP, 53, 3600)
    assert target_of(dp, dgram) == T1


def test_expired_tcp_flow_keeps_its_target_until_a_new_syn(dp: Harness) -> None:
    M.set_connection_timeout(dp.maps.settings_map, 30)
    dp.listen(80, G1)
    assert target_of(dp, fast_tcp(CLIENT, VIP, 40000, 80, SYN)) == T1
    dp.listen(80, G2)
    age(dp, abi.IPPROTO_TCP, 80, 60)
    assert target_of(dp, fast_tcp(CLIENT, VIP, 40000, 80, ACK)) == T1, \
        "a late segment of a live connection must not be moved"
    age(dp, abi.IPPROTO_TCP, 80, 60)
    assert target_of(dp, fast_tcp(CLIENT, VIP, 40000, 80, SYN)) == T2
