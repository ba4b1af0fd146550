"""The SYN flood guard (settings[SYN_FLOOD_RATE]): above the rate a SYN is still balanced
but creates no conntrack entry (counted as flood_syns); the flow is created by the client's
ACK that acknowledges the target's SYN-ACK (counted as flood_flows), which a spoofed source
never sees; established flows are untouched.

Every test runs pinned to one CPU: the rate is counted per CPU."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from dp_harness import CLIENT, T1, T2, VIP, XDP_PASS, XDP_REDIRECT, Harness
from dp_packets import ACK, PSH, SYN, assert_checksums_valid, decode, fast_tcp

from lbtui import abi
from lbtui import maps as M
from lbtui.control import apply
from lbtui.datapath.loader import Datapath
from lbtui.model import Config, DatapathSettings, Listener
from lbtui.targets import TargetGroup

G1 = TargetGroup.single(T1, 8080)
SPOOFED = "198.18.9.{}"          # flood sources on the client side


@contextmanager
def guarded(h: Harness, datapath: Datapath) -> Iterator[Harness]:
    """``h`` with no flood left over from an earlier test, on one CPU; the guard is off
    again afterwards."""
    for name in (b"flood_until", b"flood_windows"):
        datapath.bpf[name].clear()  # type: ignore[index]
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    try:
        yield h
    finally:
        os.sched_setaffinity(0, cpus)
        rate(h, 0)


@pytest.fixture
def fdp(flood: Harness, flood_datapath: Datapath) -> Iterator[Harness]:
    with guarded(flood, flood_datapath) as h:
        yield h


@pytest.fixture
def small_fdp(small: Harness, small_datapath: Datapath) -> Iterator[Harness]:
    """64 conntrack entries: what a flood does to a full table."""
    with guarded(small, small_datapath) as h:
        yield h


def rate(h: Harness, per_s: int) -> None:
    M.set_setting(h.maps.settings_map, abi.SETTING_SYN_FLOOD_RATE, per_s)


def syns(n: int, port: int = 80) -> list[bytes]:
    """SYNs from ``n`` different sources (built before sending: the rate is per second)."""
    return [fast_tcp(SPOOFED.format(2 + i % 250), VIP, 10000 + i, port, SYN, seq=7)
            for i in range(n)]


def test_syns_under_the_rate_create_flows(fdp: Harness) -> None:
    fdp.listen(80, G1)
    rate(fdp, 10_000_000)
    for syn in syns(40):
        r = fdp.run(syn)
        assert r.verdict == XDP_REDIRECT and decode(r.data)["IP"].dst == T1
    c = fdp.counters()
    assert (c["flows_created"], c["flood_syns"]) == (40, 0)
    assert len(fdp.ct_entries()) == 80


def test_syns_above_the_rate_are_balanced_counted_and_not_tracked(fdp: Harness) -> None:
    group = TargetGroup.of([(T1, 8080, 50), (T2, 8080, 50)])
    fdp.listen(80, group)
    rate(fdp, 100)                  # 13 new flows per 134 ms window on this CPU
    frames = syns(120)
    tracked, targets = [], set()
    for i, syn in enumerate(frames):
        r = fdp.run(syn)
        out = decode(r.data)
        assert r.verdict == XDP_REDIRECT and out["TCP"].dport == 8080, "still balanced"
        assert_checksums_valid(r.data)
        targets.add(out["IP"].dst)
        tracked.append(fdp.connection(SPOOFED.format(2 + i % 250), 10000 + i, 80) is not None)
    created = sum(tracked)
    assert 1 <= created <= 2 * 14, "at most the rate's share of two windows is tracked"
    assert tracked == [True] * created + [False] * (120 - created), \
        "once over the rate, no SYN is tracked (for a second)"
    c = fdp.counters()
    assert (c["flows_created"], c["flood_syns"]) == (created, 120 - created)
    assert len(fdp.ct_entries()) == 2 * created
    assert targets == {T1, T2}, "untracked SYNs are balanced like tracked ones"


def test_the_guard_holds_for_as_long_as_the_flood_goes_on(fdp: Harness) -> None:
    """Past the first second: SYNs over the rate are counted too, so the state never
    lapses while they keep coming (no window's worth let in each second)."""
    fdp.listen(80, G1)
    rate(fdp, 100)
    tracked, i = [], 0
    end = time.monotonic() + 1.6
    while time.monotonic() < end and i < 40000:
        syn = fast_tcp(SPOOFED.format(2 + i % 250), VIP, 10000 + i, 80, SYN)
        assert fdp.run(syn).verdict == XDP_REDIRECT
        tracked.append(fdp.connection(SPOOFED.format(2 + i % 250), 10000 + i, 80) is not None)
        i += 1
    created = sum(tracked)
    assert i > 2000, "too few SYNs to keep over the rate (a loaded machine?)"
    assert 1 <= created <= 2 * 14
    assert tracked == [True] * created + [False] * (i - created)
    assert fdp.counters()["flood_syns"] == i - created


def test_flood_time_handshake_creates_the_flow_at_the_clients_ack(fdp: Harness) -> None:
    fdp.listen(80, G1, flags=abi.ROUTE_F_STATS)
    rate(fdp, 1)                    # every SYN takes the flood path
    r = fdp.run(fast_tcp(CLIENT, VIP, 40000, 80, SYN, seq=1000))
    out = decode(r.data)
    assert (r.verdict, out["IP"].dst, out["TCP"].dport) == (XDP_REDIRECT, T1, 8080)
    assert fdp.ct_entries() == {} and fdp.events() == []

    synack = fast_tcp(T1, CLIENT, 8080, 40000, SYN | ACK, seq=5000, ack=1001)
    r = fdp.run(synack, iface="b1")
    out = decode(r.data)
    assert (r.verdict, out["IP"].src, out["TCP"].sport) == (XDP_REDIRECT, VIP, 80)
    assert (out["TCP"].seq, out["TCP"].ack) == (5000, 1001)
    assert_checksums_valid(r.data)
    assert fdp.ct_entries() == {}

    ack = fast_tcp(CLIENT, VIP, 40000, 80, ACK, seq=1001, ack=5001)
    r = fdp.run(ack)
    out = decode(r.data)
    assert (r.verdict, out["IP"].dst, out["TCP"].dport) == (XDP_REDIRECT, T1, 8080)
    assert_checksums_valid(r.data)
    conn = fdp.connection(CLIENT, 40000, 80)
    assert conn is not None and conn.target_ip == T1 and conn.state == "established"
    [ev] = fdp.events()
    assert (ev.kind, ev.client, ev.target) == ("opened", f"{CLIENT}:40000", f"{T1}:8080")
    c = fdp.counters()
    assert (c["flood_syns"], c["flood_flows"], c["flows_created"]) == (1, 1, 1)

    # From here on an ordinary flow, both ways.
    data = fast_tcp(CLIENT, VIP, 40000, 80, PSH | ACK, seq=1001, ack=5001, payload=b"GET /")
    assert decode(fdp.run(data).data)["IP"].dst == T1
    answer = fast_tcp(T1, CLIENT, 8080, 40000, PSH | ACK, seq=5001, ack=1006, payload=b"ok")
    assert decode(fdp.run(answer, iface="b1").data)["IP"].src == VIP
    conn = fdp.connection(CLIENT, 40000, 80)
    assert conn is not None and (conn.packets_fwd, conn.packets_rev) == (2, 1)


@pytest.mark.parametrize("synack", [True, False], ids=["wrong-ack", "no-synack"])
def test_an_ack_that_does_not_complete_a_seen_handshake_creates_nothing(
        fdp: Harness, synack: bool) -> None:
    """A spoofed source never sees the target's SYN-ACK: its ACK cannot acknowledge it."""
    fdp.listen(80, G1)
    rate(fdp, 1)
    fdp.run(fast_tcp(CLIENT, VIP, 40001, 80, SYN, seq=1000))
    if synack:
        fdp.run(fast_tcp(T1, CLIENT, 8080, 40001, SYN | ACK, seq=5000, ack=1001), iface="b1")
    ack = fast_tcp(CLIENT, VIP, 40001, 80, ACK, seq=1001, ack=77777)
    r = fdp.run(ack)
    assert (r.verdict, r.data) == (XDP_PASS, ack)
    assert fdp.ct_entries() == {}
    assert fdp.reasons("c1") == {"no_flow": 1}
    assert fdp.counters()["flood_flows"] == 0


def test_established_flows_are_untouched_by_a_flood_over_the_rate(fdp: Harness) -> None:
    fdp.listen(80, G1)
    fdp.run(fast_tcp(CLIENT, VIP, 40002, 80, SYN, seq=1000))
    fdp.run(fast_tcp(T1, CLIENT, 8080, 40002, SYN | ACK, seq=5000, ack=1001), iface="b1")
    rate(fdp, 1)
    for syn in syns(200):
        assert fdp.run(syn).verdict == XDP_REDIRECT
    assert fdp.counters()["flood_syns"] == 200
    data = fast_tcp(CLIENT, VIP, 40002, 80, PSH | ACK, seq=1001, ack=5001, payload=b"x")
    r = fdp.run(data)
    assert (r.verdict, decode(r.data)["IP"].dst) == (XDP_REDIRECT, T1)
    back = fast_tcp(T1, CLIENT, 8080, 40002, ACK, seq=5001, ack=1002)
    r = fdp.run(back, iface="b1")
    assert (r.verdict, decode(r.data)["IP"].src) == (XDP_REDIRECT, VIP)
    conn = fdp.connection(CLIENT, 40002, 80)
    assert conn is not None and (conn.packets_fwd, conn.packets_rev) == (2, 2)
    assert len(fdp.ct_entries()) == 2, "the flood added no entry"


@pytest.mark.parametrize("guard", [0, 1], ids=["off", "on"])
def test_a_flood_evicts_an_idle_flow_from_a_full_table_only_without_the_guard(
        small_fdp: Harness, guard: int) -> None:
    """64 entries (32 flows) and 300 spoofed SYNs: the LRU makes room by evicting, so the
    idle flow goes, unless the SYNs create no entries."""
    small_fdp.listen(80, G1)
    small_fdp.run(fast_tcp(CLIENT, VIP, 40003, 80, SYN, seq=1000))
    rate(small_fdp, guard)
    for syn in syns(300):
        assert small_fdp.run(syn).verdict == XDP_REDIRECT
    kept = small_fdp.connection(CLIENT, 40003, 80) is not None
    assert kept == bool(guard)
    assert small_fdp.counters()["flood_syns"] == (300 if guard else 0)


def test_adopting_counts_as_a_new_flow_against_the_rate(fdp: Harness) -> None:
    """A Maglev group adopts mid-stream packets without a flow (test_dp_adopt.py); an ACK
    flood must not fill conntrack that way: above the rate they are passed, not adopted."""
    group = TargetGroup.of([(T1, 8080, 50), (T2, 8080, 50)])
    cfg = Config(DatapathSettings(interfaces=["c1"]),
                 [Listener(80, group, "tcp", address=VIP, hash="maglev")], [])
    apply.sync(fdp.maps, cfg, lambda names: [fdp.net.ifindex[n] for n in names])
    rate(fdp, 100)                  # 13 new flows per 134 ms window on this CPU
    acks = [fast_tcp(SPOOFED.format(2 + i % 250), VIP, 20000 + i, 80, ACK, seq=1, ack=1)
            for i in range(60)]
    verdicts = [fdp.run(a).verdict for a in acks]
    adopted = fdp.counters()["flows_adopted"]
    assert 1 <= adopted <= 26, adopted          # at most two windows' worth
    assert verdicts.count(XDP_PASS) == len(acks) - adopted
    assert len(fdp.ct_entries()) == 2 * adopted
