"""Seeded packet fuzzing of the real XDP program, judged by an independent oracle.

Packets are random bytes, or valid frames (new flows, segments of tracked flows, replies,
other protocols, VLAN, IP options) that are then mutated (bytes flipped, IHL / data offset /
fragment bits / total length set at random, cut short, extended) and, half of the time,
given correct checksums again. Before each run the oracle decides from the packet alone
(``dp_packets.parse``, written from the rules, not from the C) and the live conntrack entry
whether the datapath may touch it; after the run it checks:

- the verdict is XDP_PASS or XDP_REDIRECT (never ABORTED, DROP or TX);
- a packet that is not ours comes back byte-identical;
- a packet that is ours is rewritten, only in the bytes a NAT may change (MACs, TTL, IP
  checksum, addresses, ports, L4 checksum), to the address the flow says: a SYN (or any
  UDP datagram) on a listener opens a flow, a tracked flow keeps its target, a reply is
  rewritten while its flow lives;
- a rewritten packet whose checksums were valid has valid checksums; UDP 0 stays 0.
"""

from __future__ import annotations

import random
import struct
from collections import Counter
from dataclasses import dataclass, field

from dp_harness import (
    CLIENT,
    FAR,
    T1,
    T2,
    T3,
    VIP,
    XDP_PASS,
    XDP_REDIRECT,
    Harness,
)
from dp_packets import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    Parsed,
    fast_tcp,
    fast_udp,
    fix_checksums,
    ip_checksum_ok,
    l4_checksum_ok,
    parse,
)

from lbtui import abi, bpfsys
from lbtui import maps as M
from lbtui.addr import be_to_ip, be_to_port
from lbtui.targets import TargetGroup

SPREAD = TargetGroup.of([(T1, 8080, 50), (T2, 8080, 30), (T3, 8080, 20)])
DNS = TargetGroup.of([(T1, 9000, 60), (FAR, 9000, 40)])
ROUTED = TargetGroup.single(T3, 7000)
ROUTED_CIDR = ("198.18.1.128", 25)

# (iface, port) -> (group, route flags)
LISTENERS = {
    ("c1", 80): (SPREAD, 0),
    ("c1", 53): (DNS, abi.ROUTE_F_UDP | abi.ROUTE_F_STATS),
    ("c2", 80): (SPREAD, abi.ROUTE_F_TCP),
    ("c1", 443): (SPREAD, abi.ROUTE_F_SNI),
}
IFACES = ("c1", "c1", "c1", "c2", "b1", "b2")
CLIENTS = [(f"198.18.1.{h}", 40000 + h) for h in (2, 3, 7, 130, 200)] + [(CLIENT, 50000)]


def configure(h: Harness) -> None:
    for (iface, port), (group, flags) in LISTENERS.items():
        h.listen(port, group, iface=iface, flags=flags)
    h.source_route(f"{ROUTED_CIDR[0]}/{ROUTED_CIDR[1]}", ROUTED)


def _in_routed(ip: str) -> bool:
    a = struct.unpack("!I", bytes(map(int, ip.split("."))))[0]
    n = struct.unpack("!I", bytes(map(int, ROUTED_CIDR[0].split("."))))[0]
    return a >> (32 - ROUTED_CIDR[1]) == n >> (32 - ROUTED_CIDR[1])


@dataclass(frozen=True)
class Expect:
    """What the datapath must do with one packet."""

    ours: bool
    path: str = "untouched"                 # untouched | new | forward | reply
    # Allowed results for the rewritten endpoint: (ip, port) pairs.
    dst: frozenset[tuple[str, int]] = frozenset()
    src: tuple[str, int] | None = None
    # A new flow may be refused (passed untouched) when a candidate target already
    # answers this client port for a live flow to another address (a reply-tuple clash).
    may_refuse: bool = False


def _closed(flags: int) -> bool:
    return bool(flags & abi.CT_F_RST) or (
        flags & (abi.CT_F_FIN_FWD | abi.CT_F_FIN_REV)) == abi.CT_F_FIN_FWD | abi.CT_F_FIN_REV


class Oracle:
    def __init__(self, h: Harness) -> None:
        self.h = h

    def _reply_is_ours(self, key: abi.CtKey, rct: abi.CtValue, p: Parsed) -> bool:
        """A reply tuple is only an index into its flow. It rewrites a packet only while
        the flow exists and still names this target; a live flow's reply is rewritten
        unless it is a SYN without ACK (the target opening a connection); a finished
        flow's only for the TCP segment that completes its close (no handshake, no UDP)."""
        fkey = abi.CtKey(key.dst_ip, rct.orig_dst_ip, key.dst_port, rct.orig_dst_port,
                         key.proto)
        fct = bpfsys.lookup(self.h.maps.conntrack_map.fd, fkey, abi.CtValue)
        if fct is None or fct.flags & (abi.CT_F_REPLY | abi.CT_F_LOCAL) or (
                fct.nat_dst_ip, fct.nat_dst_port) != (key.src_ip, key.src_port):
            return False
        syn = p.tcp_flags is not None and bool(p.tcp_flags & SYN)
        if _closed(fct.flags):
            return p.proto == 6 and not syn
        return not (syn and not p.tcp_flags & ACK)  # type: ignore[operator]

    def expect(self, frame: bytes, iface: str) -> tuple[Expect, Parsed | None]:
        p = parse(frame)
        if p is None:
            return Expect(False), None
        key = abi.CtKey(*(int.from_bytes(frame[p.l3 + o:p.l3 + o + 4], "little")
                          for o in (12, 16)),
                        int.from_bytes(frame[p.l4:p.l4 + 2], "little"),
                        int.from_bytes(frame[p.l4 + 2:p.l4 + 4], "little"), p.proto)
        ct = bpfsys.lookup(self.h.maps.conntrack_map.fd, key, abi.CtValue)
        if ct is not None:
            if ct.flags & abi.CT_F_LOCAL:
                return Expect(False), p
            if ct.flags & abi.CT_F_REPLY:
                if not self._reply_is_ours(key, ct, p):
                    return Expect(False), p
                return Expect(True, "reply", src=(be_to_ip(ct.orig_dst_ip),
                                                  be_to_port(ct.orig_dst_port))), p
            if not (p.syn_only and _closed(ct.flags)):
                return Expect(True, "forward", dst=frozenset(
                    {(be_to_ip(ct.nat_dst_ip), be_to_port(ct.nat_dst_port))})), p
        listener = LISTENERS.get((iface, p.dport))
        if listener is None:
            return Expect(False), p
        group, flags = listener
        proto_bit = abi.ROUTE_F_TCP if p.proto == 6 else abi.ROUTE_F_UDP
        if flags & (abi.ROUTE_F_TCP | abi.ROUTE_F_UDP) and not flags & proto_bit:
            return Expect(False), p
        if flags & abi.ROUTE_F_SNI:
            return Expect(False), p
        if p.proto == 6 and not p.syn_only:
            return Expect(False), p                      # only a SYN opens a TCP flow
        if _in_routed(p.src):
            group = ROUTED
        dst = frozenset((t.ip, t.port) for t in group.targets if t.weight)
        return Expect(True, "new", dst=dst, may_refuse=any(
            self._reply_tuple_taken(ip, port, key) for ip, port in dst)), p

    def _reply_tuple_taken(self, ip: str, port: int, key: abi.CtKey) -> bool:
        """Does a live flow to another address answer from (ip, port) to this client?"""
        rkey = abi.CtKey(M.FiveTuple(ip, "0.0.0.0", port, 1).key().src_ip, key.src_ip,
                         M.FiveTuple(ip, "0.0.0.0", port, 1).key().src_port, key.src_port,
                         key.proto)
        rct = bpfsys.lookup(self.h.maps.conntrack_map.fd, rkey, abi.CtValue)
        if rct is None or not rct.flags & abi.CT_F_REPLY:
            return False
        if (rct.orig_dst_ip, rct.orig_dst_port) == (key.dst_ip, key.dst_port):
            return False
        fkey = abi.CtKey(key.src_ip, rct.orig_dst_ip, key.src_port, rct.orig_dst_port,
                         key.proto)
        fct = bpfsys.lookup(self.h.maps.conntrack_map.fd, fkey, abi.CtValue)
        return fct is not None and not _closed(fct.flags) and (
            fct.nat_dst_ip, fct.nat_dst_port) == (rkey.src_ip, rkey.src_port)


def _allowed_offsets(p: Parsed) -> set[int]:
    c = p.l4_check_off
    return {*range(12), p.l3 + 8, p.l3 + 10, p.l3 + 11, *range(p.l3 + 12, p.l3 + 20),
            *range(p.l4, p.l4 + 4), c, c + 1}


@dataclass
class Summary:
    packets: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    paths: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    checked_checksums: int = 0
    failures: list[str] = field(default_factory=list)

    def fail(self, msg: str, frame: bytes, iface: str) -> None:
        if len(self.failures) < 20:
            self.failures.append(f"{msg} [iface {iface}, frame {frame.hex()}]")


class Fuzzer:
    """Reproducible stream of (kind, frame, iface) from ``seed``."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def _tcp_flags(self) -> int:
        r = self.rng
        return r.choice([SYN, SYN, ACK, ACK | PSH, FIN | ACK, RST, RST | ACK, SYN | ACK,
                         r.randrange(256)])

    def _valid(self) -> tuple[str, bytes, str]:
        r = self.rng
        src, sport = r.choice(CLIENTS)
        kind = r.choice(["to-vip-tcp", "to-vip-tcp", "to-vip-udp", "reply", "reply",
                         "sni", "other-port", "random-client"])
        opts = r.choice([b"", b"", b"\x01" * 4, b"\x01" * 40])
        vlan = r.choice([None, None, None, 5])
        if kind == "to-vip-tcp":
            return kind, fast_tcp(src, VIP, sport, 80, self._tcp_flags(), ip_options=opts,
                                  vlan=vlan, payload=r.randbytes(r.randrange(0, 20)),
                                  options=r.choice([b"", b"\x02\x04\x05\xb4"])), \
                r.choice(("c1", "c1", "c2"))
        if kind == "to-vip-udp":
            return kind, fast_udp(src, VIP, sport, 53, r.randbytes(r.randrange(0, 30)),
                                  zero_checksum=r.random() < 0.2, ip_options=opts,
                                  vlan=vlan), "c1"
        if kind == "reply":
            tgt, tport = r.choice([(T1, 8080), (T2, 8080), (T3, 8080), (T1, 9000),
                                   (FAR, 9000), (T3, 7000)])
            if tport == 9000:
                return kind, fast_udp(tgt, src, tport, sport, b"answer", ip_options=opts,
                                      vlan=vlan), "b1"
            return kind, fast_tcp(tgt, src, tport, sport, self._tcp_flags(),
                                  ip_options=opts, vlan=vlan), r.choice(("b1", "b2"))
        if kind == "sni":
            return kind, fast_tcp(src, VIP, sport, 443, SYN), "c1"
        if kind == "other-port":
            return kind, fast_tcp(src, VIP, sport, r.randrange(1, 65536)), "c1"
        client = f"198.18.{r.randrange(0, 4)}.{r.randrange(1, 255)}"
        return kind, fast_tcp(client, VIP, r.randrange(1024, 65536), 80, SYN), "c1"

    def _mutate(self, frame: bytearray) -> None:
        r = self.rng
        p = parse(bytes(frame))
        l3 = p.l3 if p else 14
        for _ in range(r.randrange(1, 3)):
            m = r.randrange(9)
            if m == 0:
                for _ in range(r.randrange(1, 4)):
                    frame[r.randrange(len(frame))] = r.randrange(256)
            elif m == 1 and len(frame) > l3:
                frame[l3] = (frame[l3] & 0xF0) | r.randrange(16)              # IHL
            elif m == 2 and p and p.proto == 6 and len(frame) > p.l4 + 12:
                frame[p.l4 + 12] = r.randrange(16) << 4                       # data offset
            elif m == 3 and len(frame) > l3 + 7:
                struct.pack_into("!H", frame, l3 + 6, r.choice(
                    [0x2000, 0x0001, 0x00B9, 0x4000, r.randrange(65536)]))   # fragments
            elif m == 4 and len(frame) > l3 + 3:
                struct.pack_into("!H", frame, l3 + 2, r.randrange(65536))     # total length
            elif m == 5 and len(frame) > 15:
                del frame[r.randrange(14, len(frame)):]                       # cut short
            elif m == 6:
                frame += r.randbytes(r.randrange(1, 32))                      # trailer
            elif m == 7 and len(frame) > l3 + 9:
                frame[l3 + 9] = r.choice([1, 6, 17, 47, 58, r.randrange(256)])  # protocol
            elif m == 8 and len(frame) > 13:
                struct.pack_into("!H", frame, 12, r.choice(
                    [0x8100, 0x88A8, 0x86DD, 0x0806, 0x0800]))                # ethertype

    def packet(self) -> tuple[str, bytes, str]:
        r = self.rng
        if r.random() < 0.1:
            frame = bytearray(r.randbytes(r.randrange(14, 160)))
            if r.random() < 0.7:
                frame[12:15] = b"\x08\x00\x45"
            return "random", bytes(frame), r.choice(IFACES)
        kind, frame_b, iface = self._valid()
        frame = bytearray(frame_b)
        if r.random() < 0.5:
            self._mutate(frame)
            kind = f"{kind}+mutated"
            p = parse(bytes(frame))
            if p is not None and r.random() < 0.5:
                fix_checksums(frame, p)
        return kind, bytes(frame), iface


def check_one(h: Harness, oracle: Oracle, s: Summary, kind: str, frame: bytes, iface: str
              ) -> None:
    exp, p = oracle.expect(frame, iface)
    r = h.run(frame, iface)
    s.packets += 1
    s.kinds[kind] += 1
    s.verdicts[r.name] += 1
    s.paths[exp.path] += 1
    if r.verdict not in (XDP_PASS, XDP_REDIRECT):
        s.fail(f"verdict {r.name}", frame, iface)
        return
    if not exp.ours:
        if r.data != frame:
            s.fail("not ours but rewritten", frame, iface)
        return
    assert p is not None
    out = r.data
    if len(out) != len(frame):
        s.fail("length changed", frame, iface)
        return
    changed = {i for i in range(len(frame)) if out[i] != frame[i]}
    if not changed:
        if exp.may_refuse and r.verdict == XDP_PASS:
            s.paths["refused"] += 1
            return
        s.fail(f"ours ({exp.path}) but untouched", frame, iface)
        return
    if changed - _allowed_offsets(p):
        s.fail(f"bytes {sorted(changed - _allowed_offsets(p))} changed", frame, iface)
        return
    q = parse(out)
    if q is None:
        s.fail("rewritten packet no longer parses", frame, iface)
        return
    if exp.src is not None:
        if ((q.src, q.sport) != exp.src or (q.dst, q.dport) != (p.dst, p.dport)):
            s.fail(f"reply rewritten to {q.src}:{q.sport}, want {exp.src}", frame, iface)
    elif (q.dst, q.dport) not in exp.dst or (q.src, q.sport) != (p.src, p.sport):
        s.fail(f"{exp.path} rewritten to {q.dst}:{q.dport}, want one of {set(exp.dst)}",
               frame, iface)
    ttl_drop = frame[p.l3 + 8] - out[p.l3 + 8]
    if ttl_drop != (1 if r.verdict == XDP_REDIRECT else 0):
        s.fail(f"TTL dropped by {ttl_drop} on {r.name}", frame, iface)
    if r.verdict == XDP_PASS and out[:12] != frame[:12]:
        s.fail("MACs changed on XDP_PASS", frame, iface)
    c = p.l4_check_off
    if p.proto == 17 and frame[c:c + 2] == b"\0\0" and out[c:c + 2] != b"\0\0":
        s.fail("UDP checksum 0 did not stay 0", frame, iface)
    if ip_checksum_ok(frame, p) and not ip_checksum_ok(out, q):
        s.fail("valid IP checksum became invalid", frame, iface)
    if l4_checksum_ok(frame, p):
        s.checked_checksums += 1
        if not l4_checksum_ok(out, q):
            s.fail("valid L4 checksum became invalid", frame, iface)


def run_fuzz(h: Harness, packets: int, seed: int) -> Summary:
    """Configure ``h`` and run ``packets`` fuzz packets through it."""
    configure(h)
    fz, oracle, s = Fuzzer(seed), Oracle(h), Summary()
    for _ in range(packets):
        kind, frame, iface = fz.packet()
        check_one(h, oracle, s, kind, frame, iface)
    return s
