"""The test helpers themselves: the fast builders and parser agree with scapy, and the
checksum checks catch a single wrong bit (otherwise the datapath tests could not fail)."""

from __future__ import annotations

import random

import pytest
from dp_harness import CLIENT, VIP
from dp_packets import (
    ACK,
    SYN,
    assert_checksums_valid,
    checksums_ok,
    fast_tcp,
    fast_udp,
    fix_checksums,
    parse,
    tcp,
    udp,
)
from scapy.layers.inet import IPOption_NOP


@pytest.mark.parametrize("seed", range(20))
def test_fast_builders_produce_scapys_bytes(seed: int) -> None:
    rng = random.Random(seed)
    sport, dport = rng.randrange(1, 65536), rng.randrange(1, 65536)
    src = f"198.18.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    payload = rng.randbytes(rng.randrange(0, 40))
    assert fast_tcp(src, VIP, sport, dport, SYN | ACK, seq=7, ack=9, payload=payload) == tcp(
        src, VIP, sport, dport, "SA", seq=7, ack=9, payload=payload)
    assert fast_udp(src, VIP, sport, dport, payload) == udp(src, VIP, sport, dport, payload)
    nops = [IPOption_NOP()] * 4
    assert fast_tcp(src, VIP, sport, dport, seq=1000, vlan=9, ip_options=b"\x01" * 4) == tcp(
        src, VIP, sport, dport, vlan=9, ip_options=nops)
    assert fast_udp(src, VIP, sport, dport, payload, vlan=9, ip_options=b"\x01" * 4) == udp(
        src, VIP, sport, dport, payload, vlan=9, ip_options=nops)


def test_parse_reads_ports_flags_and_offsets() -> None:
    p = parse(tcp(CLIENT, VIP, 40000, 80, "S", options=[("MSS", 1460)], vlan=5,
                  ip_options=b"\x01\x01\x01\x00"))
    assert p is not None
    assert (p.l3, p.ihl, p.l4, p.src, p.dst, p.sport, p.dport) == (18, 24, 42, CLIENT, VIP,
                                                                 40000, 80)
    assert p.syn_only and p.tcp_flags == SYN


@pytest.mark.parametrize("frame", [
    tcp(CLIENT, VIP, 40000, 80, "PA", payload=b"hello"),
    udp(CLIENT, VIP, 40000, 53, b"x" * 33),
])
def test_checksum_checks_catch_every_single_bit_flip_in_covered_bytes(frame: bytes) -> None:
    assert checksums_ok(frame)
    assert_checksums_valid(frame)
    p = parse(frame)
    assert p is not None
    for i in range(p.l3, len(frame)):
        if i in (p.l3 + 2, p.l3 + 3):        # the total length changes what parses
            continue
        for bit in (0x01, 0x80):
            broken = bytearray(frame)
            broken[i] ^= bit
            if parse(bytes(broken)) is None:
                continue
            assert not checksums_ok(bytes(broken)), (i, bit)
            with pytest.raises(AssertionError):
                assert_checksums_valid(bytes(broken))


def test_fix_checksums_leaves_a_valid_packet_as_it_is() -> None:
    frame = bytearray(tcp(CLIENT, VIP, 40000, 80, payload=b"abc"))
    p = parse(bytes(frame))
    assert p is not None
    fix_checksums(frame, p)
    assert bytes(frame) == tcp(CLIENT, VIP, 40000, 80, payload=b"abc")


def test_fix_checksums_repairs_a_mutated_packet() -> None:
    frame = bytearray(tcp(CLIENT, VIP, 40000, 80, "PA", payload=b"hello"))
    frame[-1] ^= 0xFF
    p = parse(bytes(frame))
    assert p is not None and not checksums_ok(bytes(frame))
    fix_checksums(frame, p)
    assert checksums_ok(bytes(frame))
    assert_checksums_valid(bytes(frame))


def test_udp_zero_checksum_means_none() -> None:
    frame = udp(CLIENT, VIP, 40000, 53, chksum=0)
    assert checksums_ok(frame)
    assert_checksums_valid(frame, udp_zero=True)
    with pytest.raises(AssertionError):
        assert_checksums_valid(udp(CLIENT, VIP, 40000, 53), udp_zero=True)
