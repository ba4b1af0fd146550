"""ICMP errors about balanced flows travel translated like the flow: "fragmentation
needed" from a target (or a router on its side) reaches the client as coming from the VIP
and quoting the packet the client sent to the VIP (PMTU discovery works through the
balancer); an error the client sends about a reply reaches the target about its own
packet. Errors about anything else pass untouched."""

from __future__ import annotations

import struct

import pytest
from dp_harness import CLIENT, T1, VIP, XDP_PASS, XDP_REDIRECT, Harness
from dp_packets import decode, eth_header, fast_tcp, fast_udp, inet_checksum, ipv4_header

from lbtui.targets import TargetGroup

ROUTER = "198.18.101.1"      # the balancer's own address on b1: a hop on the target's side


def icmp_error(src: str, dst: str, quoted_ip: bytes, icmp_type: int = 3, code: int = 4,
               mtu: int = 1400) -> bytes:
    body = struct.pack("!BBHHH", icmp_type, code, 0, 0, mtu) + quoted_ip
    body = body[:2] + struct.pack("!H", inet_checksum(body)) + body[4:]
    return eth_header() + ipv4_header(src, dst, 1, len(body)) + body


def quote(frame: bytes, length: int) -> bytes:
    """The first ``length`` bytes of a frame's IP packet, as an ICMP error quotes it."""
    return frame[14:14 + length]


def assert_icmp_consistent(out: bytes) -> None:
    ip_hdr = out[14:34]
    assert inet_checksum(ip_hdr) == 0, "outer IP checksum"
    icmp = out[34:]
    assert inet_checksum(icmp) == 0, "ICMP checksum over the translated quote"
    inner = icmp[8:28]
    assert inet_checksum(inner) == 0, "quoted IP header checksum"


@pytest.mark.parametrize(("sender", "quoted_len"), [
    (T1, 20 + 8),        # the minimum an ICMP error quotes
    (T1, 20 + 20),       # the whole TCP header, checksum included
    (ROUTER, 20 + 8),    # a router between the balancer and the target
], ids=["target-short", "target-full", "router"])
def test_fragmentation_needed_reaches_the_client_as_about_the_vip(
        dp: Harness, sender: str, quoted_len: int) -> None:
    dp.listen(80, TargetGroup.single(T1, 8080))
    dp.run(fast_tcp(CLIENT, VIP, 40000, 80))
    sent_to_target = fast_tcp(CLIENT, T1, 40000, 8080, 0x10, payload=b"z" * 1400)
    r = dp.run(icmp_error(sender, CLIENT, quote(sent_to_target, quoted_len)), "b1")
    assert r.verdict == XDP_REDIRECT
    out = decode(r.data)
    assert out["IP"].src == (VIP if sender == T1 else ROUTER)
    inner = out["IPerror"]
    assert (inner.src, inner.dst, inner["TCPerror"].sport, inner["TCPerror"].dport) == (
        CLIENT, VIP, 40000, 80)
    assert (out["ICMP"].type, out["ICMP"].code, out["ICMP"].nexthopmtu) == (3, 4, 1400)
    assert_icmp_consistent(r.data)
    if quoted_len == 40:
        full = bytearray(quote(fast_tcp(CLIENT, VIP, 40000, 80, 0x10, payload=b"z" * 1400),
                               40))
        assert bytes(r.data[42 + 36:42 + 38]) == bytes(full[36:38]), \
            "the quoted TCP checksum matches the packet the client sent to the VIP"
    assert dp.reasons("b1") == {"icmp_translated": 1}


def test_port_unreachable_from_the_client_reaches_the_target(dp: Harness) -> None:
    dp.listen(53, TargetGroup.single(T1, 9000))
    dp.run(fast_udp(CLIENT, VIP, 40000, 53))
    reply_as_client_saw_it = fast_udp(VIP, CLIENT, 53, 40000, b"answer")
    err = icmp_error(CLIENT, VIP, quote(reply_as_client_saw_it, 28 + 6), code=3, mtu=0)
    r = dp.run(err)
    assert r.verdict == XDP_REDIRECT
    out = decode(r.data)
    assert (out["IP"].src, out["IP"].dst) == (CLIENT, T1)
    inner = out["IPerror"]
    assert (inner.src, inner["UDPerror"].sport, inner.dst, inner["UDPerror"].dport) == (
        T1, 9000, CLIENT, 40000)
    assert_icmp_consistent(r.data)


def test_errors_about_flows_we_do_not_know_pass_untouched(dp: Harness) -> None:
    dp.listen(80, TargetGroup.single(T1, 8080))
    other = fast_tcp(CLIENT, T1, 41000, 8080, 0x10)
    err = icmp_error(T1, CLIENT, quote(other, 28))
    r = dp.run(err, "b1")
    assert (r.verdict, r.data) == (XDP_PASS, err)
    truncated = icmp_error(T1, CLIENT, quote(other, 24))       # no room for the ports
    r = dp.run(truncated, "b1")
    assert (r.verdict, r.data) == (XDP_PASS, truncated)
