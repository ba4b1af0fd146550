"""The per-CPU next-hop cache: used within its lifetime, dropped by a generation bump,
off when its lifetime is 0."""

from __future__ import annotations

import os

from dp_harness import CLIENT, T1, VIP, XDP_PASS, XDP_REDIRECT, Harness
from dp_packets import fast_tcp
from pyroute2 import NetNS

from lbtui import abi
from lbtui import maps as M
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


def test_cached_next_hop_is_used_until_the_generation_is_bumped(dp: Harness) -> None:
    from dp_harness import BACKEND_MACS

    dp.listen(80, TargetGroup.single(T1, 8080))
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})  # the cache is per CPU: stay on one
    try:
        assert _flow(dp, 40000) == XDP_REDIRECT       # fills the cache for T1 via b1
        _drop_neighbour(dp, T1)
        assert _flow(dp, 40001) == XDP_REDIRECT       # served from the cache
        M.flush_nexthop_cache(dp.maps.settings_map)
        assert _flow(dp, 40002) == XDP_PASS           # fib: no neighbour -> the stack
    finally:
        os.sched_setaffinity(0, cpus)
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
