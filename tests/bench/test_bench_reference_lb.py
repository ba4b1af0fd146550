"""The reference balancer bench.datapath times beside lbtui (bench/reference_lb.c): each of
its programs takes the path the benchmark names it after, through BPF_PROG_TEST_RUN."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "datapath"))

from dp_packets import ACK, SYN, checksums_ok, fast_tcp, parse

from bench.reference_lb import ReferenceLB
from lbtui import bpfsys

XDP_PASS, XDP_TX = 2, 3
VIP, CLIENT = "198.18.0.10", "198.18.1.2"
TARGETS = [("198.18.101.2", 8080, 50), ("198.18.101.3", 8080, 30), ("198.18.101.4", 8080, 20)]


@pytest.fixture
def ref() -> Iterator[ReferenceLB]:
    if os.geteuid() != 0:
        pytest.fail("needs root (BPF)", pytrace=False)
    r = ReferenceLB.load(1000, per_cpu_lru=False)
    r.serve(VIP, [80], TARGETS)
    try:
        yield r
    finally:
        r.close()


def run(fd: int, pkt: bytes) -> tuple[int, bytes]:
    res = bpfsys.prog_test_run(fd, pkt)
    return res.retval, res.data


def test_new_flow_established_and_reply(ref: ReferenceLB) -> None:
    verdict, out = run(ref.two_fd, fast_tcp(CLIENT, VIP, 40000, 80, SYN))
    q = parse(out)
    assert verdict == XDP_TX and q is not None and checksums_ok(out)
    assert (q.dst, q.dport) in {(ip, port) for ip, port, _w in TARGETS}
    assert ref.entries() == 2                        # the flow and its reply tuple
    verdict, out = run(ref.one_fd, fast_tcp(CLIENT, VIP, 40000, 80, ACK, payload=bytes(64)))
    e = parse(out)
    assert verdict == XDP_TX and e is not None and (e.dst, e.dport) == (q.dst, q.dport)
    assert checksums_ok(out) and ref.entries() == 2  # a hit inserts nothing
    verdict, out = run(ref.reply_fd, fast_tcp(q.dst, CLIENT, q.dport, 40000, ACK))
    r = parse(out)
    assert verdict == XDP_TX and r is not None and (r.src, r.sport) == (VIP, 80)
    assert checksums_ok(out)
    ref.forget((CLIENT, VIP, 40000, 80))
    assert ref.entries() == 0


def test_one_entry_per_flow_and_spread_over_targets(ref: ReferenceLB) -> None:
    seen = set()
    for port in range(1024, 1124):
        verdict, out = run(ref.one_fd, fast_tcp(CLIENT, VIP, port, 80, SYN))
        q = parse(out)
        assert verdict == XDP_TX and q is not None
        seen.add(q.dst)
    assert ref.entries() == 100
    assert seen == {ip for ip, _p, _w in TARGETS}
    verdict, out = run(ref.no_insert_fd, fast_tcp(CLIENT, VIP, 2000, 80, SYN))
    q = parse(out)
    assert verdict == XDP_TX and q is not None and q.dst in seen
    assert ref.entries() == 100                      # the probe inserts nothing


def test_not_a_vip_port_and_unknown_replies_pass(ref: ReferenceLB) -> None:
    other = fast_tcp(CLIENT, VIP, 40000, 81, ACK)
    assert run(ref.one_fd, other) == (XDP_PASS, other)
    stray = fast_tcp("198.18.101.2", CLIENT, 8080, 40000, ACK)
    assert run(ref.reply_fd, stray) == (XDP_PASS, stray)
    assert ref.entries() == 0
