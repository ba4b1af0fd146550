"""lbtui never drops a packet it could not deliver itself: it redirects only into interfaces
the control plane verified can take XDP frames (the egress devmap) and hands everything else
to the kernel stack, counted per ingress interface and reason."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from dp_harness import (
    CLIENT,
    CLIENT2,
    CLIENT_MAC,
    FAR,
    T1,
    VIP,
    XDP_PASS,
    XDP_REDIRECT,
    Harness,
)
from dp_packets import assert_checksums_valid, decode, fast_tcp, tcp
from pyroute2 import IPRoute

from lbtui.datapath import egress
from lbtui.targets import TargetGroup


def verdicts() -> dict[str, egress.Egress]:
    return {e.ifname: e for e in egress.assess(generic_only=False)}


def test_the_assessment_follows_the_kernel_xdp_features(dp: Harness) -> None:
    """c1 and b1 have GRO on their far ends (veth then takes XDP frames); c2 and b2 do
    not. The devmap holds exactly the capable ones; the reasons name the fix."""
    v = verdicts()
    assert {n for n, e in v.items() if e.redirect} == {"c1", "b1"}
    assert "GRO" in v["c2"].why
    assert not v["b2"].redirect
    assert set(egress.M.tx_ports(dp.maps.tx_ports_map)) == {
        e.ifindex for e in v.values() if e.redirect}


@pytest.fixture
def gro_on_c2p(dp: Harness) -> Iterator[None]:
    subprocess.run(["ethtool", "-K", "c2p", "gro", "on"], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["ethtool", "-K", "c2p", "gro", "off"], check=True,
                       capture_output=True)
        egress.sync(dp.maps, generic_only=False)


def test_the_devmap_follows_a_far_end_that_changes(dp: Harness, gro_on_c2p: None) -> None:
    _, changed = egress.sync(dp.maps, generic_only=False)
    assert changed and dp.net.ifindex["c2"] in egress.M.tx_ports(dp.maps.tx_ports_map)
    assert egress.sync(dp.maps, generic_only=False)[1] is False     # nothing new


def test_generic_attachments_may_redirect_anywhere(dp: Harness) -> None:
    try:
        assert all(e.redirect for e in egress.assess(generic_only=True)
                   if e.ifname in ("c1", "c2", "b1", "b2"))
    finally:
        egress.sync(dp.maps, generic_only=False)


def reply_to_client2(dp: Harness) -> bytes:
    """A flow from CLIENT2 (behind c2, which cannot take XDP frames), and its reply."""
    dp.listen(80, TargetGroup.single(T1, 8080), iface="c2")
    dp.run(fast_tcp(CLIENT2, VIP, 40000, 80), "c2")
    return fast_tcp(T1, CLIENT2, 8080, 40000, 0x12)


def test_egress_that_cannot_take_xdp_frames_gets_the_packet_through_the_stack(
        dp: Harness) -> None:
    synack = reply_to_client2(dp)
    r = dp.run(synack, "b1")
    assert r.verdict == XDP_PASS
    out, sent = decode(r.data), decode(synack)
    assert (out["IP"].src, out["TCP"].sport, out["IP"].dst) == (VIP, 80, CLIENT2)
    assert (out.src, out.dst, out["IP"].ttl) == (sent.src, sent.dst, sent["IP"].ttl), \
        "a passed packet keeps its link header and TTL: the stack forwards it"
    assert_checksums_valid(r.data)
    assert dp.reasons("b1") == {"egress_not_xdp": 1}


def test_forward_to_a_capable_egress_is_redirected(dp: Harness) -> None:
    dp.listen(80, TargetGroup.single(T1, 8080))
    r = dp.run(fast_tcp(CLIENT, VIP, 40000, 80))
    out = decode(r.data)
    assert r.verdict == XDP_REDIRECT
    assert (out.src, out.dst) == (dp.net.mac["b1"], "02:00:c6:12:65:02")
    assert out["IP"].ttl == 63
    r = dp.run(fast_tcp(T1, CLIENT, 8080, 40000, 0x12), "b1")
    assert r.verdict == XDP_REDIRECT and decode(r.data).dst == CLIENT_MAC
    assert dp.reasons("c1") == {} and dp.reasons("b1") == {}


@pytest.mark.parametrize(("target", "reason"), [
    ("198.19.0.9", "fib_miss"),         # no route at all
    (FAR, "no_neigh"),                  # on b2, whose neighbour is not known
])
def test_route_problems_go_to_the_stack_counted(dp: Harness, target: str, reason: str
                                                ) -> None:
    dp.listen(80, TargetGroup.single(target, 8080))
    r = dp.run(fast_tcp(CLIENT, VIP, 40000, 80))
    assert r.verdict == XDP_PASS and decode(r.data)["IP"].dst == target
    assert dp.reasons("c1") == {reason: 1}


@pytest.fixture
def small_mtu_on_b1(dp: Harness) -> Iterator[None]:
    with IPRoute() as ipr:
        idx = dp.net.ifindex["b1"]
        ipr.link("set", index=idx, mtu=1280)
        try:
            yield
        finally:
            ipr.link("set", index=idx, mtu=1500)


def test_larger_than_the_egress_mtu_goes_to_the_stack(dp: Harness, small_mtu_on_b1: None
                                                      ) -> None:
    """The stack answers "fragmentation needed" (with the DF bit) or fragments."""
    dp.listen(80, TargetGroup.single(T1, 8080))
    dp.run(fast_tcp(CLIENT, VIP, 40000, 80))
    r = dp.run(tcp(CLIENT, VIP, 40000, 80, "A", payload=b"x" * 1400, ip_flags=2))
    assert r.verdict == XDP_PASS and decode(r.data)["IP"].dst == T1
    assert dp.reasons("c1") == {"mtu": 1}


def test_vlan_and_expiring_ttl_go_to_the_stack_translated(dp: Harness) -> None:
    dp.listen(80, TargetGroup.single(T1, 8080))
    r = dp.run(tcp(CLIENT, VIP, 40000, 80, vlan=7))
    assert r.verdict == XDP_PASS and decode(r.data)["IP"].dst == T1
    r = dp.run(tcp(CLIENT, VIP, 40001, 80, ttl=1))
    assert r.verdict == XDP_PASS and decode(r.data)["IP"].dst == T1
    assert dp.reasons("c1") == {"vlan": 1, "ttl": 1}
