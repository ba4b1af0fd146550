"""New flows: the first packet picks a target (source route before the listen entry's
group, weighted on cumulative weights), is DNATed with valid checksums, and both conntrack
tuples are recorded."""

from __future__ import annotations

import pytest
from dp_harness import (
    BACKEND_MACS,
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
from dp_packets import LINUX_SYN_OPTIONS, assert_checksums_valid, decode, fast_tcp, tcp

from lbtui import abi, bpfsys
from lbtui import maps as M
from lbtui.targets import TargetGroup

G1 = TargetGroup.single(T1, 8080)
G2 = TargetGroup.single(T2, 8080)
G3 = TargetGroup.single(T3, 8080)


def test_new_tcp_flow_via_listen_entry_is_dnated_and_redirected(dp: Harness) -> None:
    dp.listen(80, G1, flags=abi.ROUTE_F_STATS)
    syn = tcp(CLIENT, VIP, 40000, 80, "S", options=LINUX_SYN_OPTIONS)
    r = dp.run(syn)

    assert r.name == "REDIRECT"
    out, sent = decode(r.data), decode(syn)
    assert (out["IP"].src, out["IP"].dst, out["TCP"].sport, out["TCP"].dport) == (
        CLIENT, T1, 40000, 8080)
    assert out["IP"].ttl == sent["IP"].ttl - 1                  # we forwarded it
    assert out.dst == BACKEND_MACS[T1] and out.src == dp.net.mac["b1"]
    assert bytes(out["TCP"].payload) == bytes(sent["TCP"].payload)
    assert out["TCP"].options == sent["TCP"].options and out["TCP"].seq == sent["TCP"].seq
    assert_checksums_valid(r.data)

    conn = dp.connection(CLIENT, 40000, 80)
    assert conn is not None
    assert (conn.vip_ip, conn.vip_port, conn.target_ip, conn.target_port) == (VIP, 80, T1, 8080)
    assert (conn.packets_fwd, conn.bytes_fwd, conn.packets_rev) == (1, sent["IP"].len, 0)
    assert conn.flags == abi.CT_F_STATS and conn.state == "syn-sent"
    assert conn.created_ns == conn.last_seen_ns > 0
    reply = dp.raw_ct(T1, CLIENT, 8080, 40000)
    assert reply is not None and reply.flags == abi.CT_F_STATS | abi.CT_F_REPLY
    assert len(dp.ct_entries()) == 2
    assert dp.counters()["flows_created"] == 1

    [ev] = dp.events()
    assert (ev.kind, ev.proto, ev.client, ev.target, ev.vip_ip, ev.vip_port) == (
        "opened", "tcp", f"{CLIENT}:40000", f"{T1}:8080", VIP, 80)


def test_new_flow_without_known_next_hop_is_dnated_and_passed_to_the_stack(dp: Harness
                                                                          ) -> None:
    dp.listen(80, TargetGroup.single(FAR, 9000))
    syn = tcp(CLIENT, VIP, 40001, 80)
    r = dp.run(syn)
    assert r.verdict == XDP_PASS
    out = decode(r.data)
    assert (out["IP"].dst, out["TCP"].dport, out["IP"].ttl) == (FAR, 9000, 64)
    assert r.data[:12] == syn[:12], "MACs are the stack's business on XDP_PASS"
    assert_checksums_valid(r.data)
    assert dp.connection(CLIENT, 40001, 80) is not None


def test_source_route_beats_the_listen_entry_and_longest_prefix_wins(dp: Harness) -> None:
    dp.listen(80, G1)
    dp.source_route("198.18.1.0/24", G2)
    dp.source_route("198.18.1.9/32", G3)
    cases = {"198.18.1.2": T2, "198.18.1.9": T3, "198.18.1.200": T2, "198.18.3.4": T1,
             "198.18.0.1": T1}
    for port, (client, want) in enumerate(cases.items(), start=41000):
        r = dp.run(fast_tcp(client, VIP, port, 80))
        assert r.verdict == XDP_REDIRECT
        assert decode(r.data)["IP"].dst == want, client
        conn = dp.connection(client, port, 80)
        assert conn is not None and conn.target_ip == want
    assert dp.counters()["flows_created"] == len(cases)


def test_source_route_alone_does_not_make_traffic_ours(dp: Harness) -> None:
    dp.source_route("198.18.1.0/24", G2)
    syn = fast_tcp(CLIENT, VIP, 40000, 80)
    r = dp.run(syn)
    assert (r.verdict, r.data) == (XDP_PASS, syn)
    assert dp.ct_entries() == {}


def test_established_flow_keeps_its_target_after_a_weight_change(dp: Harness) -> None:
    dp.listen(80, TargetGroup.of([(T1, 8080, 100), (T2, 8080, 0)]))
    assert decode(dp.run(fast_tcp(CLIENT, VIP, 40000, 80)).data)["IP"].dst == T1
    dp.listen(80, TargetGroup.of([(T1, 8080, 0), (T2, 8080, 100)]))   # drain T1

    ack = fast_tcp(CLIENT, VIP, 40000, 80, 0x18, seq=1001, ack=5001, payload=b"GET /\r\n")
    r = dp.run(ack)
    out = decode(r.data)
    assert (r.verdict, out["IP"].dst, out["TCP"].dport) == (XDP_REDIRECT, T1, 8080)
    assert_checksums_valid(r.data)
    retransmitted_syn = dp.run(fast_tcp(CLIENT, VIP, 40000, 80))
    assert decode(retransmitted_syn.data)["IP"].dst == T1, "a SYN of a live flow keeps it"
    conn = dp.connection(CLIENT, 40000, 80)
    assert conn is not None and conn.target_ip == T1 and conn.packets_fwd == 3
    assert conn.bytes_fwd == 40 + 47 + 40
    assert dp.counters()["flows_created"] == 1

    new = dp.run(fast_tcp(CLIENT, VIP, 40002, 80))
    assert decode(new.data)["IP"].dst == T2, "new flows follow the edit"


def test_weight_zero_targets_are_never_chosen(dp: Harness) -> None:
    dp.listen(80, TargetGroup.of([(T1, 8080, 0), (T2, 8080, 100), (T3, 8080, 0)]))
    dsts = {decode(dp.run(fast_tcp(f"198.18.1.{i % 250 + 2}", VIP, 20000 + i, 80)).data)[
        "IP"].dst for i in range(300)}
    assert dsts == {T2}


@pytest.mark.parametrize(("count", "cumulative"), [
    (2, (0, 0)),              # every target drained
    (0, ()),                  # no targets at all
    (9, (10,) * 9),           # more slots than exist
], ids=["all-zero", "empty", "count-9"])
def test_route_without_a_usable_target_passes_untouched_and_counts_no_target(
        dp: Harness, count: int, cumulative: tuple[int, ...]) -> None:
    route = abi.Route(target_count=count)
    for i, cum in enumerate(cumulative[:abi.MAX_TARGETS]):
        route.targets[i] = abi.Target(0x0265_12C6 + i, 0x901F, cum)   # 198.18.101.2+i:8080
    M.mark_ports(dp.maps.ports_map, listen=[80])   # raw map writers mark the prefilter
    bpfsys.update(dp.maps.listen_map.fd, abi.ListenKey(dp.net.ifindex["c1"], 0x5000, 0),
                  route)
    syn = fast_tcp(CLIENT, VIP, 40000, 80)
    r = dp.run(syn)
    assert (r.verdict, r.data) == (XDP_PASS, syn)
    assert dp.ct_entries() == {}
    assert dp.counters()["no_target"] == 1 and dp.counters()["flows_created"] == 0
    assert dp.reasons("c1") == {"no_target": 1}


@pytest.mark.parametrize("heavy", [0, 7], ids=["first-slot", "last-slot"])
def test_eight_target_group_reaches_its_first_and_last_slot(dp: Harness, heavy: int) -> None:
    targets = [(f"198.18.101.{2 + i}", 8080 + i, 100 if i == heavy else 0) for i in range(8)]
    dp.listen(80, TargetGroup.of(targets))
    want = (targets[heavy][0], targets[heavy][1])
    for port in range(41000, 41050):
        out = decode(dp.run(fast_tcp(CLIENT, VIP, port, 80)).data)
        assert (out["IP"].dst, out["TCP"].dport) == want


def test_last_hop_ttl_is_dnated_but_left_to_the_stack(dp: Harness) -> None:
    """TTL 1 cannot be forwarded: the stack must answer with ICMP time exceeded."""
    dp.listen(80, G1)
    r = dp.run(tcp(CLIENT, VIP, 40000, 80, ttl=1))
    out = decode(r.data)
    assert r.verdict == XDP_PASS and (out["IP"].dst, out["IP"].ttl) == (T1, 1)
    assert_checksums_valid(r.data)
