"""The per-CPU next-hop cache: used within its lifetime, dropped by a generation bump,
off when its lifetime is 0; one-arm hops (out through the ingress) alike; hits on a hop
into a verified egress skip the devmap (native XDP only), so every change of the
verdicts drops the cache."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest
from dp_harness import (
    CLIENT,
    CLIENT2,
    ONE_ARM,
    ONE_ARM_MAC,
    T1,
    VIP,
    XDP_PASS,
    XDP_REDIRECT,
    Harness,
)
from dp_packets import ACK, assert_checksums_valid, decode, fast_tcp
from pyroute2 import IPRoute, NetNS

from lbtui import abi
from lbtui import maps as M
from lbtui.datapath import egress
from lbtui.targets import TargetGroup


def _drop_neighbour(dp: Harness, ip: str) -> None:
    with NetNS(dp.net.ns) as ns:
        ns.neigh("del", dst=ip, ifindex=dp.net.ifindex["b1"])


def _restore_neighbour(dp: Harness, ip: str, mac: str) -> None:
    with NetNS(dp.net.ns) as ns:
        ns.neigh("replace", dst=ip, lladdr=mac, ifindex=dp.net.ifindex["b1"],
                 state="permanent")


def _flow(dp: Harness, sport: int) -> int:
    return dp.run(fast_tcp(CLIENT, VIP, sport, 80)).verdict


@pytest.fixture
def one_cpu() -> Iterator[None]:
    """The cache is per CPU: run the test's packets on one."""
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, cpus)


def test_cached_next_hop_is_used_until_the_generation_is_bumped(dp: Harness, one_cpu: None
                                                                 ) -> None:
    from dp_harness import BACKEND_MACS

    dp.listen(80, TargetGroup.single(T1, 8080))
    try:
        assert _flow(dp, 40000) == XDP_REDIRECT       # fills the cache for T1 via b1
        _drop_neighbour(dp, T1)
        assert _flow(dp, 40001) == XDP_REDIRECT       # served from the cache
        M.flush_nexthop_cache(dp.maps.settings_map)
        assert _flow(dp, 40002) == XDP_PASS           # fib: no neighbour -> the stack
    finally:
        _restore_neighbour(dp, T1, BACKEND_MACS[T1])


def test_cache_lifetime_zero_always_asks_the_fib(dp: Harness) -> None:
    from dp_harness import BACKEND_MACS

    M.set_setting(dp.maps.settings_map, abi.SETTING_NH_CACHE_MS, 0)
    dp.listen(80, TargetGroup.single(T1, 8080))
    assert _flow(dp, 41000) == XDP_REDIRECT
    _drop_neighbour(dp, T1)
    try:
        assert _flow(dp, 41001) == XDP_PASS
    finally:
        _restore_neighbour(dp, T1, BACKEND_MACS[T1])


# --- one-arm: the egress is the ingress -----------------------------------------------------

BEHIND_C2 = "198.18.2.50"              # a client on c2, which cannot take XDP frames


def test_one_arm_is_redirected_back_out_of_the_ingress_cached_or_not(dp: Harness,
                                                                      one_cpu: None) -> None:
    """A target reached through the interface the packet came in on leaves through the
    devmap like any other, on a cache miss and on a hit. Not XDP_TX, though it would save
    the helper call: sent with XDP_TX towards a veth whose far end takes XDP frames
    through GRO alone, packets were lost or held back (the ``onearmxdp`` cell of the
    topology matrix: unanswered datagrams, retransmitted SYNs), where the redirect into
    the same interface loses none, and the kernel reports XDP_TX support for every veth
    alike."""
    dp.listen(80, TargetGroup.single(ONE_ARM, 8080))
    runs = [dp.run(fast_tcp(CLIENT, VIP, sport, 80)) for sport in (42000, 42001)]
    runs.append(dp.run(fast_tcp(CLIENT, VIP, 42000, 80, ACK)))
    assert [r.verdict for r in runs] == [XDP_REDIRECT] * 3
    for r in runs:
        out = decode(r.data)
        assert (out.src, out.dst) == (dp.net.mac["c1"], ONE_ARM_MAC)
        assert (out["IP"].dst, out["IP"].ttl, out["TCP"].dport) == (ONE_ARM, 63, 8080)
        assert_checksums_valid(r.data)
    assert dp.reasons("c1") == {}


def test_one_arm_on_an_interface_without_xdp_frames_goes_to_the_stack(dp: Harness,
                                                                       one_cpu: None) -> None:
    """c2 is not in tx_ports (its far end takes no XDP frames): a target reached back
    through c2 goes to the stack, cached or not, counted."""
    dp.listen(80, TargetGroup.single(CLIENT2, 8080), iface="c2")
    runs = [dp.run(fast_tcp(BEHIND_C2, VIP, sport, 80), "c2") for sport in range(43000, 43003)]
    assert [r.verdict for r in runs] == [XDP_PASS] * 3
    assert dp.reasons("c2") == {"egress_not_xdp": 3}


# --- hits into a verified egress skip the devmap --------------------------------------------


def _behind_the_control_planes_back(dp: Harness, ifname: str) -> None:
    """Take an interface out of tx_ports without the generation bump sync() would make."""
    gone = dp.net.ifindex[ifname]
    M.set_tx_ports(dp.maps.tx_ports_map,
                   [i for i in M.tx_ports(dp.maps.tx_ports_map) if i != gone])


@pytest.fixture
def b1_far_end_gro(dp: Harness) -> Iterator[None]:
    """b1's far end takes XDP frames through GRO; the test may turn it off. Afterwards GRO
    is back on and tx_ports says so again."""
    try:
        yield
    finally:
        subprocess.run(["ethtool", "-K", "b1p", "gro", "on"], check=True, capture_output=True)
        egress.sync(dp.maps, generic_only=False)


def test_hits_into_a_verified_egress_skip_the_devmap_until_its_verdict_changes(
        dp: Harness, one_cpu: None, b1_far_end_gro: None) -> None:
    """The packet that fills a slot asks tx_ports; hits then redirect without asking again
    (an entry removed behind the control plane's back goes unseen), so the control
    plane's own change of the verdict must drop the slot: when b1's far end stops taking
    XDP frames, the next packet goes to the stack."""
    dp.listen(80, TargetGroup.single(T1, 8080))
    assert _flow(dp, 44000) == XDP_REDIRECT             # fills the slot: b1 verified
    _behind_the_control_planes_back(dp, "b1")
    r = dp.run(fast_tcp(CLIENT, VIP, 44001, 80))
    assert r.verdict == XDP_REDIRECT                    # the slot's verdict, not the devmap
    out = decode(r.data)
    assert (out.src, out["IP"].dst, out["IP"].ttl) == (dp.net.mac["b1"], T1, 63)
    assert_checksums_valid(r.data)

    egress.sync(dp.maps, generic_only=False)             # b1 back in, the slot dropped
    subprocess.run(["ethtool", "-K", "b1p", "gro", "off"], check=True, capture_output=True)
    _, changed = egress.sync(dp.maps, generic_only=False)
    assert changed and dp.net.ifindex["b1"] not in M.tx_ports(dp.maps.tx_ports_map)
    assert _flow(dp, 44002) == XDP_PASS
    assert dp.reasons("c1") == {"egress_not_xdp": 1}


def test_under_generic_xdp_every_hit_asks_the_devmap(dp: Harness, one_cpu: None) -> None:
    """Switching an attachment to generic XDP drops the cache (tx_ports unchanged), and
    slots filled under it keep asking the devmap: a removed entry sends the hit to the
    stack."""
    dp.listen(80, TargetGroup.single(T1, 8080))
    try:
        assert _flow(dp, 45000) == XDP_REDIRECT         # a native slot: direct
        _, changed = egress.sync(dp.maps, generic_only=False, any_generic=True)
        assert not changed                              # the same devmap, another mode
        _behind_the_control_planes_back(dp, "b1")
        assert _flow(dp, 45001) == XDP_PASS             # the native slot went with the mode
        egress.sync(dp.maps, generic_only=False, any_generic=True)   # b1 back, mode kept
        assert _flow(dp, 45002) == XDP_REDIRECT         # fills a generic slot
        _behind_the_control_planes_back(dp, "b1")
        assert _flow(dp, 45003) == XDP_PASS             # a hit, and the devmap says no
        assert dp.reasons("c1") == {"egress_not_xdp": 2}
    finally:
        egress.sync(dp.maps, generic_only=False)


GONE_TARGET = "198.18.109.2"           # behind b9, an egress the test deletes


def test_an_egress_deleted_from_the_host_is_trusted_for_at_most_the_cache_lifetime(
        dp: Harness, one_cpu: None) -> None:
    """The price of skipping the devmap on hits: when an egress interface disappears, the
    kernel drops it from the devmap at once, but a slot that verified it keeps
    redirecting there (frames the kernel then drops) until the slot expires. After that
    the fib decides again (here: no route left, so the stack)."""
    before = M.get_setting(dp.maps.settings_map, abi.SETTING_NH_CACHE_MS)
    M.set_setting(dp.maps.settings_map, abi.SETTING_NH_CACHE_MS, 200)
    with IPRoute() as ipr:
        ipr.link("add", ifname="b9", kind="veth", peer={"ifname": "b9p"})
        b9 = ipr.link_lookup(ifname="b9")[0]
        try:
            for name in ("b9", "b9p"):
                ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
            ipr.addr("add", index=b9, address="198.18.109.1", prefixlen=24)
            ipr.neigh("add", dst=GONE_TARGET, lladdr="02:00:00:00:09:02", ifindex=b9,
                      state="permanent")
            subprocess.run(["ethtool", "-K", "b9p", "gro", "on"], check=True,
                           capture_output=True)
            egress.sync(dp.maps, generic_only=False)
            assert b9 in M.tx_ports(dp.maps.tx_ports_map)
            dp.listen(80, TargetGroup.single(GONE_TARGET, 8080))
            assert _flow(dp, 46000) == XDP_REDIRECT     # fills the slot: b9 verified
            ipr.link("del", index=b9)
            assert b9 not in M.tx_ports(dp.maps.tx_ports_map)   # the kernel's doing
            filled = time.monotonic()
            assert _flow(dp, 46001) == XDP_REDIRECT     # the slot still answers
            time.sleep(max(0.0, filled + 0.25 - time.monotonic()))
            assert _flow(dp, 46002) == XDP_PASS         # expired: the fib has no route
            assert dp.reasons("c1") == {"fib_miss": 1}
        finally:
            if ipr.link_lookup(ifname="b9"):
                ipr.link("del", ifname="b9")
            M.set_setting(dp.maps.settings_map, abi.SETTING_NH_CACHE_MS, before)
            egress.sync(dp.maps, generic_only=False)
