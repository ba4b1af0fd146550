"""Packets from local senders with checksum offload (veth's default) carry a partial L4
checksum: only the pseudo-header sum, the payload to be added at transmit. The datapath
recognises them, updates them as partial checksums, and hands them to the stack (an XDP
redirect would lose the kernel's "finish this checksum" mark and deliver a corrupt packet).
A finished checksum that happens to equal the pseudo-header sum is told apart by summing
the segment."""

from __future__ import annotations

import socket
import struct

import pytest
from dp_harness import CLIENT, T1, VIP, XDP_PASS, XDP_REDIRECT, Harness
from dp_packets import (
    assert_checksums_valid,
    decode,
    eth_header,
    inet_checksum,
    inet_sum,
    ipv4_header,
)

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


@pytest.mark.parametrize(("proto", "port"), [(6, 80), (17, 53)], ids=["tcp", "udp"])
def test_partial_checksum_is_updated_as_partial_and_left_to_the_stack(
        dp: Harness, proto: int, port: int) -> None:
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
