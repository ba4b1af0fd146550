"""Packets from local senders with checksum offload (veth's default) carry a partial L4
checksum: only the pseudo-header sum, the payload to be added at transmit. The datapath
recognises them by summing the segment (a finished checksum that happens to equal the
pseudo-header sum is told apart that way), updates them as partial checksums, and either
finishes them from that sum before an XDP redirect (native XDP: the frame loses the
kernel's "finish this checksum" mark) or hands them to the stack (generic XDP, an egress
that takes no XDP frames, a segment too long to sum)."""

from __future__ import annotations

import socket
import struct

import pytest
from dp_harness import CLIENT, CLIENT2, T1, VIP, XDP_PASS, XDP_REDIRECT, Harness
from dp_packets import (
    assert_checksums_valid,
    decode,
    eth_header,
    inet_checksum,
    inet_sum,
    ipv4_header,
)

from lbtui import abi
from lbtui import maps as M
from lbtui.targets import TargetGroup


def pseudo_sum(src: str, dst: str, proto: int, length: int) -> int:
    return inet_sum(socket.inet_aton(src) + socket.inet_aton(dst)
                    + struct.pack("!BBH", 0, proto, length))


def l4_segment(proto: int, sport: int, dport: int, payload: bytes, flags: int = 0x02
               ) -> bytes:
    if proto == 6:
        return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 8192, 0,
                           0) + payload
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def frame(src: str, dst: str, proto: int, sport: int, dport: int, payload: bytes,
          check: int, flags: int = 0x02) -> bytes:
    seg = bytearray(l4_segment(proto, sport, dport, payload, flags))
    off = 16 if proto == 6 else 6
    seg[off:off + 2] = struct.pack("!H", check)
    return eth_header() + ipv4_header(src, dst, proto, len(seg)) + bytes(seg)


def partial(src: str, dst: str, proto: int, sport: int, dport: int, payload: bytes,
            flags: int = 0x02) -> bytes:
    """What a local socket hands to a checksum-offloading veth (CHECKSUM_PARTIAL)."""
    seg_len = len(l4_segment(proto, sport, dport, payload))
    return frame(src, dst, proto, sport, dport, payload,
                 pseudo_sum(src, dst, proto, seg_len), flags)


def l4_field(out: bytes, proto: int) -> int:
    off = 14 + 20 + (16 if proto == 6 else 6)
    return struct.unpack("!H", out[off:off + 2])[0]


@pytest.mark.parametrize("length", [0, 1, 7, 301, 1400])
@pytest.mark.parametrize(("proto", "port"), [(6, 80), (17, 53)], ids=["tcp", "udp"])
def test_native_xdp_finishes_a_partial_checksum_and_redirects(
        dp: Harness, proto: int, port: int, length: int) -> None:
    """Under native XDP the program finishes the field from the segment's sum it took to
    verify it, so the packet leaves as an XDP frame with a checksum the receiver accepts,
    both ways."""
    dp.listen(port, TargetGroup.single(T1, 8080))
    payload = bytes((i * 7 + 3) & 0xFF for i in range(length))
    r = dp.run(partial(CLIENT, VIP, proto, 40000, port, payload))
    assert r.verdict == XDP_REDIRECT
    out = decode(r.data)
    assert (out["IP"].dst, out[out.payload.payload.name].dport) == (T1, 8080)
    assert_checksums_valid(r.data)

    reply = partial(T1, CLIENT, proto, 8080, 40000, payload[::-1], flags=0x12)  # SYN-ACK
    r = dp.run(reply, "b1")
    assert r.verdict == XDP_REDIRECT
    out = decode(r.data)
    assert (out["IP"].src, out[out.payload.payload.name].sport) == (VIP, port)
    assert_checksums_valid(r.data)
    assert dp.reasons("c1") == {} and dp.reasons("b1") == {}


@pytest.mark.parametrize(("proto", "port"), [(6, 80), (17, 53)], ids=["tcp", "udp"])
def test_under_generic_xdp_a_partial_checksum_is_updated_as_partial_for_the_stack(
        dp: Harness, proto: int, port: int) -> None:
    """Generic XDP keeps the skb and its "finish this checksum" mark: the field stays
    partial (over the new addresses) and the stack forwards the packet."""
    M.set_setting(dp.maps.settings_map, abi.SETTING_XDP_GENERIC, 1)
    dp.listen(port, TargetGroup.single(T1, 8080))
    payload = b"x" * 301
    r = dp.run(partial(CLIENT, VIP, proto, 40000, port, payload))
    assert r.verdict == XDP_PASS
    out = decode(r.data)
    assert (out["IP"].dst, out[out.payload.payload.name].dport) == (T1, 8080)
    seg_len = len(l4_segment(proto, 0, 0, payload))
    assert l4_field(r.data, proto) == pseudo_sum(CLIENT, T1, proto, seg_len), \
        "still a partial checksum, now over the new addresses"
    assert dp.reasons("c1") == {"csum_partial": 1}

    reply = partial(T1, CLIENT, proto, 8080, 40000, b"answer", flags=0x12)   # SYN-ACK
    r = dp.run(reply, "b1")
    assert r.verdict == XDP_PASS
    assert l4_field(r.data, proto) == pseudo_sum(VIP, CLIENT, proto,
                                                 len(l4_segment(proto, 0, 0, b"answer")))


def test_a_partial_checksum_stays_partial_when_the_egress_takes_no_xdp_frames(
        dp: Harness) -> None:
    """The field is finished only once the redirect is certain: a packet the stack
    forwards keeps its skb's mark, so its field must stay partial."""
    dp.listen(80, TargetGroup.single(T1, 8080), iface="c2")
    assert dp.run(partial(CLIENT2, VIP, 6, 40000, 80, b"hello"), "c2").verdict == XDP_REDIRECT
    reply = partial(T1, CLIENT2, 6, 8080, 40000, b"answer", flags=0x12)
    r = dp.run(reply, "b1")                       # back out through c2: not in tx_ports
    assert r.verdict == XDP_PASS
    assert decode(r.data)["IP"].src == VIP
    assert l4_field(r.data, 6) == pseudo_sum(VIP, CLIENT2, 6,
                                             len(l4_segment(6, 0, 0, b"answer")))
    assert dp.reasons("b1") == {"egress_not_xdp": 1}


def test_a_finished_checksum_equal_to_the_pseudo_sum_is_not_taken_for_partial(
        dp: Harness) -> None:
    """Choose two payload bytes so that the real checksum equals the pseudo-header sum:
    the datapath must sum the segment, see a valid checksum and treat it as finished."""
    dp.listen(80, TargetGroup.single(T1, 8080))
    seg_len = len(l4_segment(6, 40000, 80, bytes(32)))
    want = pseudo_sum(CLIENT, VIP, 6, seg_len)
    for fill in range(0x10000):
        payload = struct.pack("!H", fill) + bytes(30)
        seg = l4_segment(6, 40000, 80, payload)
        pseudo = socket.inet_aton(CLIENT) + socket.inet_aton(VIP) + struct.pack(
            "!BBH", 0, 6, seg_len)
        if inet_checksum(pseudo + seg) == want:
            break
    else:
        pytest.fail("no payload gives that checksum")
    colliding = frame(CLIENT, VIP, 6, 40000, 80, payload, want)
    assert_checksums_valid(colliding)
    r = dp.run(colliding)
    assert r.verdict == XDP_REDIRECT and decode(r.data)["IP"].dst == T1
    assert_checksums_valid(r.data)
    assert dp.reasons("c1") == {}


def test_a_partial_segment_too_long_to_verify_is_taken_for_partial(dp: Harness) -> None:
    """A segmentation-offload packet longer than the program verifies is always partial."""
    dp.listen(80, TargetGroup.single(T1, 8080))
    r = dp.run(partial(CLIENT, VIP, 6, 40000, 80, b"y" * 2500))
    assert r.verdict == XDP_PASS
    assert dp.reasons("c1") == {"csum_partial": 1}
