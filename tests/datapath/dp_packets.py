"""Packets for datapath tests: crafted with scapy, checked independently of the datapath.

Two kinds of helpers:
- scapy-based (``tcp``, ``udp``, ``checksum_report``): readable, used by the named tests;
  checksums are verified by deleting them and letting scapy rebuild, then comparing.
- struct-based (``fast_tcp``, ``fast_udp``, ``parse``, ``checksums_ok``): ~100x faster, for
  the 10,000-flow and fuzz tests; ``test_dp_packets.py`` proves they agree with scapy.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from dp_harness import CLIENT_MAC
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Packet, Raw

LB_MAC = "02:00:c6:12:01:01"     # what clients address frames to (not checked by XDP)
ETH_P_IP, ETH_P_8021Q, ETH_P_8021AD = 0x0800, 0x8100, 0x88A8
MF, OFFSET_MASK = 0x2000, 0x1FFF
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
# Options of a Linux SYN: MSS, SACK permitted, timestamps, window scale (20 bytes, doff 10).
LINUX_SYN_OPTIONS = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (123456, 0)),
                     ("NOP", None), ("WScale", 7)]


# --- scapy crafting ---------------------------------------------------------------------


def _l2(vlan: int | None, qinq: bool = False) -> Packet:
    if qinq:   # 802.1ad outer tag, 802.1Q inner tag
        return (Ether(src=CLIENT_MAC, dst=LB_MAC, type=ETH_P_8021AD) / Dot1Q(vlan=100)
                / Dot1Q(vlan=vlan or 7))
    eth = Ether(src=CLIENT_MAC, dst=LB_MAC)
    if vlan is not None:
        eth = eth / Dot1Q(vlan=vlan)
    return eth


def _ip(src: str, dst: str, ttl: int, ip_options: object, ip_flags: int, frag: int,
        ident: int) -> Packet:
    kw = {} if ip_options is None else {"options": ip_options}
    return IP(src=src, dst=dst, ttl=ttl, flags=ip_flags, frag=frag, id=ident, **kw)


def tcp(src: str, dst: str, sport: int, dport: int, flags: str = "S", *, seq: int = 1000,
        ack: int = 0, options: object = (), payload: bytes = b"", ttl: int = 64,
        vlan: int | None = None, qinq: bool = False, ip_options: object = None,
        ip_flags: int = 0, frag: int = 0, ident: int = 1) -> bytes:
    seg = TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, options=list(options))
    pkt = _l2(vlan, qinq) / _ip(src, dst, ttl, ip_options, ip_flags, frag, ident) / seg
    return bytes(pkt / Raw(payload) if payload else pkt)


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes = b"ping", *,
        chksum: int | None = None, ttl: int = 64, vlan: int | None = None,
        ip_options: object = None) -> bytes:
    dgram = UDP(sport=sport, dport=dport) if chksum is None else UDP(sport=sport, dport=dport,
                                                                    chksum=chksum)
    ip = _ip(src, dst, ttl, ip_options, 0, 0, 1)
    return bytes(_l2(vlan) / ip / dgram / Raw(payload))


def ip_proto(src: str, dst: str, proto: int, payload: bytes = bytes(8)) -> bytes:
    """An IPv4 packet of another protocol (e.g. 47, GRE)."""
    return bytes(_l2(None) / IP(src=src, dst=dst, proto=proto) / Raw(payload))


def icmp_echo(src: str, dst: str) -> bytes:
    return bytes(_l2(None) / IP(src=src, dst=dst) / ICMP(id=80, seq=80) / Raw(b"ping"))


def ipv6_tcp(dport: int) -> bytes:
    return bytes(Ether(src=CLIENT_MAC, dst=LB_MAC) / IPv6(src="2001:db8::2", dst="2001:db8::10")
                 / TCP(sport=40000, dport=dport, flags="S"))


def arp_request(target: str) -> bytes:
    return bytes(Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff")
                 / ARP(psrc="198.18.1.2", pdst=target, hwsrc=CLIENT_MAC))


def decode(frame: bytes) -> Ether:
    return Ether(frame)


def checksum_report(frame: bytes) -> dict[str, tuple[int, int]]:
    """{layer: (checksum in the frame, checksum scapy computes)} for IP and TCP/UDP.

    Independent of the datapath: scapy recomputes each checksum from scratch over the
    rewritten bytes (delete the field, rebuild)."""
    pkt = Ether(frame)
    out = {}
    for layer in (IP, TCP, UDP):
        if layer not in pkt:
            continue
        got = pkt[layer].chksum
        fresh = pkt.copy()
        del fresh[layer].chksum
        out[layer.__name__] = (got, Ether(bytes(fresh))[layer].chksum)
    return out


def assert_checksums_valid(frame: bytes, *, udp_zero: bool = False) -> None:
    """Every checksum in ``frame`` is what a from-scratch computation gives. A UDP checksum
    of 0 ("none") is accepted only when ``udp_zero``; then it must be exactly 0."""
    report = checksum_report(frame)
    assert "IP" in report, "not an IPv4 packet"
    for layer, (got, want) in report.items():
        if layer == "UDP" and udp_zero:
            assert got == 0, f"UDP checksum 0 must stay 0, got {got:#06x}"
            continue
        assert got == want, f"{layer} checksum {got:#06x}, recomputed {want:#06x}"


# --- struct-based helpers (fast, for bulk tests) ----------------------------------------


def inet_sum(data: bytes) -> int:
    """One's complement sum of 16-bit big-endian words (RFC 1071), folded."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def inet_checksum(data: bytes) -> int:
    return ~inet_sum(data) & 0xFFFF


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def _pseudo(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    return src + dst + struct.pack("!BBH", 0, proto, length)


def ipv4_header(src: str, dst: str, proto: int, l4_len: int, *, ttl: int = 64,
                ident: int = 1, flags_frag: int = 0, options: bytes = b"") -> bytes:
    ihl = 5 + len(options) // 4
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + l4_len, ident, flags_frag,
                      ttl, proto, 0, socket.inet_aton(src), socket.inet_aton(dst)) + options
    return hdr[:10] + struct.pack("!H", inet_checksum(hdr)) + hdr[12:]


def eth_header(vlan: int | None = None, dst: str = LB_MAC, src: str = CLIENT_MAC) -> bytes:
    tag = b"" if vlan is None else struct.pack("!HH", ETH_P_8021Q, vlan)
    return mac_bytes(dst) + mac_bytes(src) + tag + struct.pack("!H", ETH_P_IP)


def fast_tcp(src: str, dst: str, sport: int, dport: int, flags: int = SYN, *, seq: int = 0,
             ack: int = 0, options: bytes = b"", payload: bytes = b"", window: int = 8192,
             ttl: int = 64, vlan: int | None = None, ip_options: bytes = b"") -> bytes:
    """Same bytes as scapy's Ether()/IP()/TCP() with these fields (scapy's defaults)."""
    doff = 5 + len(options) // 4
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, window, 0,
                      0) + options + payload
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    csum = inet_checksum(_pseudo(s, d, 6, len(seg)) + seg)
    seg = seg[:16] + struct.pack("!H", csum) + seg[18:]
    return eth_header(vlan) + ipv4_header(src, dst, 6, len(seg), ttl=ttl,
                                          options=ip_options) + seg


def fast_udp(src: str, dst: str, sport: int, dport: int, payload: bytes = b"ping", *,
             zero_checksum: bool = False, ttl: int = 64, vlan: int | None = None,
             ip_options: bytes = b"") -> bytes:
    dgram = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    if not zero_checksum:
        s, d = socket.inet_aton(src), socket.inet_aton(dst)
        csum = inet_checksum(_pseudo(s, d, 17, len(dgram)) + dgram) or 0xFFFF
        dgram = dgram[:6] + struct.pack("!H", csum) + dgram[8:]
    return eth_header(vlan) + ipv4_header(src, dst, 17, len(dgram), ttl=ttl,
                                          options=ip_options) + dgram


@dataclass(frozen=True)
class Parsed:
    """An IPv4 TCP/UDP packet the way the datapath must see it (offsets into the frame)."""

    l3: int
    ihl: int                # bytes
    tot_len: int
    proto: int
    l4: int
    src: str
    dst: str
    sport: int
    dport: int
    tcp_flags: int | None   # None for UDP

    @property
    def l4_check_off(self) -> int:
        return self.l4 + (16 if self.proto == 6 else 6)

    @property
    def syn_only(self) -> bool:
        return self.tcp_flags is not None and self.tcp_flags & (SYN | ACK) == SYN


def parse(frame: bytes) -> Parsed | None:
    """The acceptance rules of the packet parser, written independently of lb_parse.h: one
    optional 802.1Q/802.1ad tag, IPv4 with IHL >= 5 whose total length fits the frame, not a
    fragment, TCP with a data offset >= 5 inside the total length, or UDP. None: not a
    packet the datapath may touch."""
    if len(frame) < 14:
        return None
    off, etype = 14, struct.unpack_from("!H", frame, 12)[0]
    if etype in (ETH_P_8021Q, ETH_P_8021AD):
        if len(frame) < 18:
            return None
        etype, off = struct.unpack_from("!H", frame, 16)[0], 18
    if etype != ETH_P_IP or len(frame) < off + 20:
        return None
    vihl, _, tot_len, _, frag, _, proto = struct.unpack_from("!BBHHHBB", frame, off)
    ihl = (vihl & 0xF) * 4
    if vihl >> 4 != 4 or ihl < 20 or tot_len < ihl or off + tot_len > len(frame):
        return None
    if frag & (MF | OFFSET_MASK):
        return None
    l4 = off + ihl
    src = socket.inet_ntoa(frame[off + 12:off + 16])
    dst = socket.inet_ntoa(frame[off + 16:off + 20])
    if proto == 6:
        if len(frame) < l4 + 20:
            return None
        doff = (frame[l4 + 12] >> 4) * 4
        if doff < 20 or ihl + doff > tot_len:
            return None
        flags = frame[l4 + 13]
    elif proto == 17:
        if len(frame) < l4 + 8 or ihl + 8 > tot_len:
            return None
        flags = None
    else:
        return None
    sport, dport = struct.unpack_from("!HH", frame, l4)
    return Parsed(off, ihl, tot_len, proto, l4, src, dst, sport, dport, flags)


def ip_checksum_ok(frame: bytes, p: Parsed) -> bool:
    return inet_sum(frame[p.l3:p.l3 + p.ihl]) == 0xFFFF


def l4_checksum_ok(frame: bytes, p: Parsed) -> bool:
    """TCP/UDP checksum over the pseudo header and the segment (total length bounds it).
    A UDP checksum of 0 means "none" and counts as valid."""
    seg = frame[p.l4:p.l3 + p.tot_len]
    if p.proto == 17 and frame[p.l4_check_off:p.l4_check_off + 2] == b"\0\0":
        return True
    pseudo = _pseudo(frame[p.l3 + 12:p.l3 + 16], frame[p.l3 + 16:p.l3 + 20], p.proto, len(seg))
    return inet_sum(pseudo + seg) == 0xFFFF


def checksums_ok(frame: bytes) -> bool:
    p = parse(frame)
    return p is not None and ip_checksum_ok(frame, p) and l4_checksum_ok(frame, p)


def fix_checksums(frame: bytearray, p: Parsed) -> None:
    """Recompute the IP and L4 checksums in place (UDP 0 is left as "none")."""
    frame[p.l3 + 10:p.l3 + 12] = b"\0\0"
    frame[p.l3 + 10:p.l3 + 12] = struct.pack("!H", inet_checksum(bytes(frame[p.l3:p.l3 + p.ihl])))
    c = p.l4_check_off
    if p.proto == 17 and frame[c:c + 2] == b"\0\0":
        return
    frame[c:c + 2] = b"\0\0"
    seg = bytes(frame[p.l4:p.l3 + p.tot_len])
    pseudo = _pseudo(bytes(frame[p.l3 + 12:p.l3 + 16]), bytes(frame[p.l3 + 16:p.l3 + 20]),
                     p.proto, len(seg))
    value = inet_checksum(pseudo + seg)
    if p.proto == 17 and value == 0:
        value = 0xFFFF
    frame[c:c + 2] = struct.pack("!H", value)

