"""What the datapath may touch: traffic that is not for a listen entry or a tracked flow
passes byte-identical; malformed, truncated and fragmented packets pass untouched; IP and
TCP options, VLAN tags and Ethernet padding are handled, not misparsed."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from dp_harness import CLIENT, T1, VIP, XDP_PASS, XDP_REDIRECT, Harness
from dp_packets import (
    LINUX_SYN_OPTIONS,
    arp_request,
    assert_checksums_valid,
    decode,
    icmp_echo,
    inet_checksum,
    ip_proto,
    ipv6_tcp,
    parse,
    tcp,
    udp,
)
from scapy.layers.inet import IPOption_NOP, IPOption_RR

from lbtui import abi, bpfsys
from lbtui import maps as M
from lbtui.targets import TargetGroup

G1 = TargetGroup.single(T1, 8080)


@pytest.fixture
def ours(dp: Harness) -> Harness:
    """Listeners on c1 for TCP 80 and UDP 53; nothing else."""
    dp.listen(80, G1)
    dp.listen(53, TargetGroup.single(T1, 9000))
    return dp


def assert_untouched(dp: Harness, frame: bytes, iface: str = "c1") -> None:
    r = dp.run(frame, iface)
    assert r.verdict == XDP_PASS, r.name
    assert r.data == frame, "must pass byte-identical"
    assert M.list_connections(dp.maps.conntrack_map) == []
    assert dp.counters()["flows_created"] == 0


def assert_dnated(dp: Harness, frame: bytes, iface: str = "c1") -> bytes:
    r = dp.run(frame, iface)
    assert r.verdict in (XDP_PASS, XDP_REDIRECT)
    p, q = parse(frame), parse(r.data)
    assert p is not None and q is not None
    assert (q.dst, q.dport) == (T1, 8080 if p.proto == 6 else 9000)
    assert (q.src, q.sport, q.tot_len, len(r.data)) == (p.src, p.sport, p.tot_len, len(frame))
    assert_checksums_valid(r.data)
    return r.data


NOT_OURS: dict[str, Callable[[], tuple[bytes, str]]] = {
    "other port": lambda: (tcp(CLIENT, VIP, 40000, 81), "c1"),
    "other ifindex": lambda: (tcp(CLIENT, VIP, 40000, 80), "c2"),
    "backend side": lambda: (tcp(CLIENT, VIP, 40000, 80), "b1"),
    "icmp echo": lambda: (icmp_echo(CLIENT, VIP), "c1"),
    "ipv6 tcp": lambda: (ipv6_tcp(80), "c1"),
    "arp": lambda: (arp_request(VIP), "c1"),
    "gre to vip": lambda: (ip_proto(CLIENT, VIP, 47), "c1"),
    "qinq": lambda: (tcp(CLIENT, VIP, 40000, 80, qinq=True), "c1"),
    "udp to other port": lambda: (udp(CLIENT, VIP, 40000, 54), "c1"),
}


@pytest.mark.parametrize("make", NOT_OURS.values(), ids=NOT_OURS.keys())
def test_traffic_for_no_listen_entry_passes_byte_identical(
        ours: Harness, make: Callable[[], tuple[bytes, str]]) -> None:
    frame, iface = make()
    assert_untouched(ours, frame, iface)


def test_sni_listener_is_left_to_the_splicer_and_counted(dp: Harness) -> None:
    dp.listen(443, G1, flags=abi.ROUTE_F_SNI)
    assert_untouched(dp, tcp(CLIENT, VIP, 40000, 443))
    assert dp.counters()["sni_passed"] == 1


def test_flow_marked_local_is_left_to_the_splicer(ours: Harness) -> None:
    key = M.FiveTuple(CLIENT, VIP, 40000, 80).key()
    bpfsys.update(ours.maps.conntrack_map.fd, key, abi.CtValue(flags=abi.CT_F_LOCAL))
    frame = tcp(CLIENT, VIP, 40000, 80, "A")
    r = ours.run(frame)
    assert (r.verdict, r.data) == (XDP_PASS, frame)


@pytest.mark.parametrize(("ip_flags", "frag"), [(1, 0), (1, 185), (0, 185), (0, 1)],
                         ids=["first-fragment", "middle-fragment", "last-fragment", "offset-8"])
@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_ip_fragments_pass_untouched(ours: Harness, ip_flags: int, frag: int, proto: str
                                     ) -> None:
    pkt = decode(tcp(CLIENT, VIP, 40000, 80, payload=b"x" * 64) if proto == "tcp"
                 else udp(CLIENT, VIP, 40000, 53, b"x" * 64))
    pkt["IP"].flags, pkt["IP"].frag = ip_flags, frag
    del pkt["IP"].chksum
    assert_untouched(ours, bytes(pkt))
    assert ours.reasons("c1") == {"fragment": 1}


def test_dont_fragment_is_not_a_fragment(ours: Harness) -> None:
    frame = tcp(CLIENT, VIP, 40000, 80, ip_flags=2)       # DF, as Linux sends
    out = assert_dnated(ours, frame)
    assert decode(out)["IP"].flags == 2


@pytest.mark.parametrize("options", [
    [IPOption_NOP(), IPOption_NOP(), IPOption_NOP(), IPOption_NOP()],   # IHL 6
    [IPOption_RR(routers=["198.18.1.1"] * 9)],                          # IHL 15, 40 bytes
], ids=["ihl6", "ihl15"])
@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_ip_options_are_skipped_using_ihl(ours: Harness, options: list, proto: str) -> None:
    frame = (tcp(CLIENT, VIP, 40000, 80, options=LINUX_SYN_OPTIONS, ip_options=options,
                 payload=b"payload") if proto == "tcp"
             else udp(CLIENT, VIP, 40000, 53, b"payload", ip_options=options))
    sent = decode(frame)
    assert sent["IP"].ihl > 5
    r = ours.run(frame)
    assert r.verdict == XDP_PASS, "a router processes options: the stack forwards it"
    assert ours.reasons("c1") == {"ip_options": 1}
    out = decode(assert_dnated(ours, frame))
    assert out["IP"].options == sent["IP"].options
    assert bytes(out[proto.upper()].payload) == b"payload"


def test_reply_with_ip_options_is_rewritten(ours: Harness) -> None:
    ours.run(tcp(CLIENT, VIP, 40000, 80))
    r = ours.run(tcp(T1, CLIENT, 8080, 40000, "SA", ip_options=[IPOption_NOP()] * 8), "b1")
    out = decode(r.data)
    assert out["IP"].ihl == 7 and (out["IP"].src, out["TCP"].sport) == (VIP, 80)
    assert_checksums_valid(r.data)


def test_tcp_options_up_to_40_bytes_are_carried_and_checksummed(ours: Harness) -> None:
    assert_dnated(ours, tcp(CLIENT, VIP, 40000, 80))          # the SYN opens the flow
    opts = [*LINUX_SYN_OPTIONS, ("SAck", (1, 2, 3, 4)), ("NOP", None), ("NOP", None)]
    frame = tcp(CLIENT, VIP, 40000, 80, "PA", options=opts, payload=b"data after options")
    sent = decode(frame)
    assert sent["TCP"].dataofs == 15
    out = decode(assert_dnated(ours, frame))
    assert out["TCP"].options == sent["TCP"].options
    assert bytes(out["TCP"].payload) == b"data after options"


@pytest.mark.parametrize("doff", [0, 4, 15])
def test_tcp_data_offset_out_of_bounds_passes_untouched(ours: Harness, doff: int) -> None:
    """doff < 5 is invalid; doff 15 claims 60 header bytes in a 20-byte segment."""
    frame = bytearray(tcp(CLIENT, VIP, 40000, 80))
    frame[14 + 20 + 12] = doff << 4
    assert_untouched(ours, bytes(frame))


@pytest.mark.parametrize("ihl", [0, 4])
def test_ihl_below_5_passes_untouched(ours: Harness, ihl: int) -> None:
    frame = bytearray(tcp(CLIENT, VIP, 40000, 80))
    frame[14] = 0x40 | ihl
    assert_untouched(ours, bytes(frame))


def test_ip_version_other_than_4_passes_untouched(ours: Harness) -> None:
    frame = bytearray(tcp(CLIENT, VIP, 40000, 80))
    frame[14] = 0x65
    assert_untouched(ours, bytes(frame))


TRUNCATABLE = {
    "tcp-syn-options": lambda: tcp(CLIENT, VIP, 40000, 80, options=LINUX_SYN_OPTIONS),
    "udp": lambda: udp(CLIENT, VIP, 40000, 53, b"abcdef"),
    "vlan-tcp": lambda: tcp(CLIENT, VIP, 40000, 80, vlan=7),
    "ip-options-tcp": lambda: tcp(CLIENT, VIP, 40000, 80, ip_options=[IPOption_NOP()] * 8),
}


@pytest.mark.parametrize("make", TRUNCATABLE.values(), ids=TRUNCATABLE.keys())
def test_truncated_at_every_length_passes_untouched(ours: Harness,
                                                    make: Callable[[], bytes]) -> None:
    """Cut anywhere (the IP total length then lies about the frame), from just the
    Ethernet header (the test-run minimum) to one byte short."""
    frame = make()
    for n in range(14, len(frame)):
        r = ours.run(frame[:n])
        assert (r.verdict, r.data) == (XDP_PASS, frame[:n]), n
    assert ours.ct_entries() == {} and ours.counters()["flows_created"] == 0
    assert_dnated(ours, frame)                 # while the whole packet is ours


@pytest.mark.parametrize("make", TRUNCATABLE.values(), ids=TRUNCATABLE.keys())
def test_honestly_short_l4_header_passes_untouched(ours: Harness, make: Callable[[], bytes]
                                                   ) -> None:
    """Cut the L4 header and make the IP total length (and checksum) agree with the cut."""
    frame = make()
    p = parse(frame)
    assert p is not None
    header = (frame[p.l4 + 12] >> 4) * 4 if p.proto == 6 else 8
    for cut in range(0, header):
        short = bytearray(frame[:p.l4 + cut])
        struct.pack_into("!H", short, p.l3 + 2, p.ihl + cut)
        short[p.l3 + 10:p.l3 + 12] = b"\0\0"
        struct.pack_into("!H", short, p.l3 + 10, inet_checksum(bytes(short[p.l3:p.l4])))
        assert_untouched(ours, bytes(short))


@pytest.mark.parametrize("tot_len", [0, 19, 20, 39, 41, 100, 0xFFFF])
def test_ip_total_length_lies_pass_untouched(ours: Harness, tot_len: int) -> None:
    """40 bytes is the truth for this SYN; shorter cuts into the headers, longer runs past
    the frame."""
    frame = bytearray(tcp(CLIENT, VIP, 40000, 80))
    struct.pack_into("!H", frame, 16, tot_len)
    assert parse(bytes(frame)) is None, "test construction"
    assert_untouched(ours, bytes(frame))


def test_ethernet_padding_after_the_ip_packet_is_kept_and_not_counted(ours: Harness) -> None:
    frame = tcp(CLIENT, VIP, 40000, 80) + bytes(6)         # padded to the 60-byte minimum
    assert len(frame) == 60
    out = assert_dnated(ours, frame)
    assert out[-6:] == bytes(6)
    conn = ours.connection(CLIENT, 40000, 80)
    assert conn is not None and conn.bytes_fwd == 40


def test_vlan_tagged_flow_is_dnated_and_left_to_the_stack_to_forward(ours: Harness) -> None:
    frame = tcp(CLIENT, VIP, 40000, 80, vlan=42, options=LINUX_SYN_OPTIONS)
    r = ours.run(frame)
    assert r.verdict == XDP_PASS, "no XDP redirect of tagged frames"
    out = decode(r.data)
    assert out["Dot1Q"].vlan == 42 and (out["IP"].dst, out["TCP"].dport) == (T1, 8080)
    assert out["IP"].ttl == 64 and r.data[:16] == frame[:16]
    assert_checksums_valid(r.data)
    reply = ours.run(tcp(T1, CLIENT, 8080, 40000, "SA", vlan=42), "b1")
    back = decode(reply.data)
    assert back["Dot1Q"].vlan == 42 and (back["IP"].src, back["TCP"].sport) == (VIP, 80)
    assert_checksums_valid(reply.data)

