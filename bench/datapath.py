"""Cost of each path through the XDP datapath, in ns per packet, against the floor of an
empty XDP program (lb_xdp_pass) measured in the same run, with every goal checked per
round, for each conntrack size asked for.

    sudo .venv/bin/python -m bench.datapath [--quick] [--rounds N] [--json out.json]
    sudo .venv/bin/python -m bench.datapath --sizes 100000 --lru per-cpu
    sudo .venv/bin/python -m bench.datapath --compare-src /tmp/before/bpf   # A/B a change
    sudo .venv/bin/python -m bench.datapath --no-reference   # without the reference LB

Everything runs through BPF_PROG_TEST_RUN on the real program, inside a network namespace
this script creates (lbt-h1-bn<pid>, removed on exit) so bpf_fib_lookup finds next hops
and every forwarded path ends in XDP_REDIRECT with a MAC rewrite, as in production. The
listen entry and the source route have stats on (the config default), so new flows also
emit their "opened" event; the ring buffer is consumed after every path (as lbtui's event
hub would: a full ring buffer would make the next path's events fail cheaply and be lost),
and the events lost while timing are reported (0 expected).

Conntrack. For each size (default 100,000 and 1,000,000 entries), the table is first
filled to 90% (``--fill``) with real flows opened through the program (SYNs to a listener
without stats, spread over the CPUs so per-CPU LRU lists fill alike), then two phases run:

- 90% full: every path, rounds interleaved; the new flows a round opens are deleted after
  it, so the table stays at 90%: the inserts find free entries (the LRU's own bookkeeping,
  moving free entries to this CPU's list and rotating its lists, is included).
- full: the table is topped up past its size, so every new flow evicts another entry (the
  LRU's shrink path); only new flows and the floor are timed.

Method. BPF_PROG_TEST_RUN with ``repeat`` runs the program on one buffer and reports the
mean time per run, but later runs see the buffer as the previous run left it: a DNATed
packet is no longer the packet we meant to time. So the primary measurement is one run
per syscall (repeat=1): every syscall copies the input afresh, so an established-flow
segment, a reply or a non-matching packet stays on its path however often it is sent, and
each new-flow packet is a distinct, never-seen 5-tuple. The kernel times only the program
call (plus one clock read), not the syscall or the copies; the empty program is timed the
same way, and its median is subtracted. Rounds interleave all paths (rotating their order)
so drift and neighbours' load hit every path alike. The process is pinned to one CPU while
it measures (prog_test_run runs on the caller's CPU; with per-CPU LRU lists the CPU
decides which list an insert uses).

"established, one-arm" is an established flow whose target is reached through the
interface the packet came in on (c1, as in a one-arm deployment), redirected back out of
it; the plain "established" row is two-arm (in on c1, out on b1), as in the lab. Single
runs only.

"new flow, reader caught up" consumes the events before every single run, so each SYN's
opened event is submitted to a ring buffer whose reader has read everything: the state of
an event reader that keeps up (lbtui's event hub, at any rate it can follow), where a
submit may wake the reader. The other new-flow paths consume the events only after each
path, so at most the first run of a block meets a caught-up reader.

Goals (ns above the floor, single runs): non-matching <= 20, established <= 60, reply
<= 80, every new-flow path <= 300. Each is checked per round (the round's median minus the
round's floor) and over all samples.

Cross-check ("hot loop"): where a path can survive repetition, repeat=250 gives the mean of
back-to-back runs with warm caches. The hot loops of a round run after every path's single
runs (the new-flow chain opens 2,000 flows, which would weigh on the next single runs).
Non-matching and the floor repeat as they are.
Established and reply use twin conntrack entries written for the purpose: the forward
packet client->VIP:80 is DNATed to T1:8080 and a second forward entry (client->T1:8080,
NAT to VIP:80) turns it back, so every run is an established-flow hit with rewrite, fib
lookup and redirect (the VIP is a routed neighbour in this namespace, not a local
address). Replies alternate the same way between two reply entries. New flows via a
listen entry use a chain of listen entries (port k -> target VIP:k+1, for k =
1000..1249): each run creates a new flow for the next port. TTL (255, one less per
redirect) bounds repeat to 250.

Reference (default on; ``--no-reference`` leaves it out): a minimal Katran-shaped balancer
(bench/reference_lb.c, written for the purpose: Katran itself is not available offline) is
timed in the same rounds, against the same floor, so the tables tell lbtui's own cost
apart from what any one-entry conntrack design costs on this machine. It has its own LRU
conntrack of the same size, key layout and LRU kind as lbtui's (a 16 B value: the target),
filled to the same level with real flows through its own program (one entry each, from
the prefill clients, spread over the CPUs) and topped up past full for the full phase the
same way. Its paths: non-matching (a VIP:port hash miss), established (a VIP hit and an LRU
hit, DNAT, XDP_TX), reply (its target-side program: an LRU hit on the reply tuple,
restoring the VIP; the flow was opened by the two-entry variant), new flow (LRU miss, a
ring slot by jhash, one insert) and "new flow, two entries" (the same plus the reply
tuple's insert, as lbtui does), each also with the table full, and a probe, "new flow, no
insert" (the miss, the pick and the rewrite without the insert; paired with lbtui's "over
syn_flood_rate", which does all but its inserts and event). It does no fib lookup
(XDP_TX, not a redirect), no checksum classification, no counters, clock or events.
"lbtui against the reference" pairs each of its rows with lbtui's (two-entry rows with
lbtui's new flow) and gives lbtui minus reference, overall and per round.

A/B (``--compare-src DIR``): the C sources in DIR (for example ``git archive main
lbtui/datapath/bpf | tar -x -C /tmp/main``) are compiled against the same maps and every
path is timed with both programs in the same rounds; a table gives the ns each path saved.
Both programs must share the map layout (LB_ABI_VERSION).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "datapath"))

from dp_harness import (  # noqa: E402
    CLIENT,
    ONE_ARM,
    T1,
    T2,
    T3,
    VIP,
    XDP_PASS,
    XDP_REDIRECT,
    XDP_TX,
    Harness,
    standalone,
)
from dp_packets import ACK, SYN, checksums_ok, fast_tcp, parse  # noqa: E402

from bench.common import fmt, machine, machine_line, table  # noqa: E402
from bench.reference_lb import ReferenceLB  # noqa: E402
from lbtui import abi, bpfsys  # noqa: E402
from lbtui import maps as M  # noqa: E402
from lbtui.addr import be_to_ip, ip_to_be  # noqa: E402
from lbtui.targets import TargetGroup  # noqa: E402

LISTEN_GROUP = TargetGroup.of([(T1, 8080, 50), (T2, 8080, 30), (T3, 8080, 20)])
ROUTED_GROUP = TargetGroup.of([(T1, 8080, 60), (T2, 8080, 40)])
ROUTED_CIDR = "198.18.1.128/25"
HOT_REPEAT = 250
CHAIN_START = 1000          # listen ports CHAIN_START .. CHAIN_START + HOT_REPEAT - 1
PREFILL_PORT = 79           # a listener without stats: filling emits no events
PREFILL_BASE = ip_to_be("198.18.128.0")   # prefill clients: 198.18.128.0/17
PORTS_PER_IP = 60000

FLOOR = "empty program (floor)"
NON_MATCHING = "non-matching"
ESTABLISHED = "established"
ESTABLISHED_ONE_ARM = "established, one-arm"
REPLY = "reply"
NEW = "new flow"
NEW_ROUTE = "new flow, source route"
NEW_FULL = "new flow, table full (evicts)"
NEW_ALL_CPUS = "new flow, every CPU at once"
NEW_FLOODED = "new flow, over syn_flood_rate"
NEW_CAUGHT = "new flow, reader caught up"
NEW_TWO = "new flow, two entries"                   # the reference only
NEW_FULL_TWO = "new flow, two entries, table full"  # the reference only
NEW_NO_INSERT = "new flow, no insert"               # the reference only (a probe)
GOALS = {NON_MATCHING: 20, ESTABLISHED: 60, ESTABLISHED_ONE_ARM: 60, REPLY: 80,
         NEW: 300, NEW_ROUTE: 300, NEW_FULL: 300, NEW_ALL_CPUS: 300, NEW_FLOODED: 300,
         NEW_CAUGHT: 300, NEW_TWO: 300, NEW_FULL_TWO: 300, NEW_NO_INSERT: 300}
REF = "ref"                     # the reference balancer's label (bench/reference_lb.c)
REF_PAIRS = {NEW_TWO: NEW, NEW_FULL_TWO: NEW_FULL,   # reference row -> lbtui row
             NEW_NO_INSERT: NEW_FLOODED}
LRU_KINDS = {"common": 0, "per-cpu": 1}


@dataclass
class BenchPath:
    name: str
    prog: str                               # "" for the program under test, else "before"
    prog_fd: int
    iface: str
    single: Callable[[int], bytes]          # sample index -> packet for a repeat=1 run
    hot: Callable[[int], bytes] | None = None   # call index -> packet for repeat=HOT_REPEAT
    new_flows: bool = False                 # single packets open flows to delete afterwards
    cpus: list[int] | None = None           # run each block on these CPUs at the same time
    flooded: bool = False                   # timed with the SYN flood guard on for every SYN
    reader_caught_up: bool = False          # the ring buffer is consumed before every run
    forget: Callable[[tuple[str, str, int, int]], None] | None = None  # else lbtui's flows
    used: int = 0                           # single packets sent so far
    deleted: int = 0                        # of those, flows deleted again
    rounds: list[list[int]] = field(default_factory=list)
    hot_samples: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.name} [{self.prog}]" if self.prog else self.name

    @property
    def samples(self) -> list[int]:
        return [x for r in self.rounds for x in r]


@contextmanager
def flood_guard(h: Harness, p: BenchPath) -> Iterator[None]:
    """For a ``flooded`` path: settings[SYN_FLOOD_RATE] = 1 (every SYN is over the rate)
    while it runs, off again afterwards (the guard is off by default)."""
    if not p.flooded:
        yield
        return
    M.set_setting(h.maps.settings_map, abi.SETTING_SYN_FLOOD_RATE, 1)
    try:
        yield
    finally:
        M.set_setting(h.maps.settings_map, abi.SETTING_SYN_FLOOD_RATE, 0)


def _ct(h: Harness, src: str, dst: str, sport: int, dport: int, *, orig: tuple[str, int],
        nat: tuple[str, int], flags: int = 0) -> None:
    key = M.FiveTuple(src, dst, sport, dport).key()
    o, n = M.FiveTuple(CLIENT, orig[0], 1, orig[1]).key(), M.FiveTuple(CLIENT, nat[0], 1,
                                                                       nat[1]).key()
    now = time.monotonic_ns()
    bpfsys.update(h.maps.conntrack_map.fd, key, abi.CtValue(
        orig_dst_ip=o.dst_ip, orig_dst_port=o.dst_port, flags=flags, nat_dst_ip=n.dst_ip,
        nat_dst_port=n.dst_port, created_ns=now, last_seen_ns=now))


def _install_twins(h: Harness, port: int) -> None:
    """Conntrack entries that make established and reply packets cycle (see docstring).
    The turned-back packets must pass the port prefilter too: 8080 as a destination, 80 as
    a reply source."""
    M.mark_ports(h.maps.ports_map, listen=[8080], targets=[80])
    _ct(h, CLIENT, VIP, port, 80, orig=(VIP, 80), nat=(T1, 8080))
    _ct(h, CLIENT, T1, port, 8080, orig=(T1, 8080), nat=(VIP, 80))
    _ct(h, T1, CLIENT, 8080, port, orig=(VIP, 80), nat=(T1, 8080), flags=abi.CT_F_REPLY)
    _ct(h, VIP, CLIENT, 80, port, orig=(T1, 8080), nat=(VIP, 80), flags=abi.CT_F_REPLY)


def _check(h: Harness, p: BenchPath, verdict: int, check: Callable[[bytes], bool]) -> None:
    """Refuse to time a path the packets do not actually take."""
    ifindex = h.net.ifindex[p.iface]
    with flood_guard(h, p):
        r = bpfsys.prog_test_run(p.prog_fd, p.single(p.used), ingress_ifindex=ifindex)
    if p.new_flows or p.flooded:
        p.used += 1
    if r.retval != verdict or not check(r.data):
        raise RuntimeError(f"{p.label}: not on the intended path (verdict {r.retval})")
    q = parse(p.single(p.used - 1))
    assert q is not None
    if p.flooded and M.lookup_connection(h.maps.conntrack_map, (q.src, q.dst, q.sport,
                                                                q.dport)) is not None:
        raise RuntimeError(f"{p.label}: a SYN over the flood rate created a flow")
    if p.hot is None:
        return
    pkt = p.hot(0)
    r = bpfsys.prog_test_run(p.prog_fd, pkt, ingress_ifindex=ifindex, repeat=2)
    a, b = parse(pkt), parse(r.data)
    assert a is not None and b is not None
    if p.name == NEW:
        ok = (b.dst, b.dport) == (VIP, CHAIN_START + 2)
    else:
        ok = (a.src, a.dst, a.sport, a.dport) == (b.src, b.dst, b.sport, b.dport)
    if not ok:
        raise RuntimeError(f"{p.label}: the hot-loop packet does not stay on its path")


def _dst(frame: bytes) -> str | None:
    q = parse(frame)
    return q.dst if q else None


def _chain_packet(j: int) -> bytes:
    """A SYN to the first chain port from a client port no other call used."""
    return fast_tcp(CLIENT, VIP, 20000 + j % 40000, CHAIN_START, SYN, ttl=255)


def _be(host_order: int) -> int:
    """A host-order IPv4 address as the network-order integer lbtui.addr works with."""
    return int.from_bytes(host_order.to_bytes(4, "big"), "little")


def _host(ip: str) -> int:
    return int.from_bytes(ip_to_be(ip).to_bytes(4, "little"), "big")


def syn_from(base_ip: str, offset: int = 0) -> Callable[[int], bytes]:
    """i -> a SYN to VIP:80 from the (offset + i)-th client tuple of a range: addresses from
    ``base_ip`` on, PORTS_PER_IP ports each. Offsets keep the ranges of several paths
    (and programs) apart."""
    base = _host(base_ip)

    def packet(i: int) -> bytes:
        n = offset + i
        return fast_tcp(be_to_ip(_be(base + n // PORTS_PER_IP)), VIP,
                        1024 + n % PORTS_PER_IP, 80, SYN)
    return packet


NEW_FLOW_CLIENTS = "198.18.2.2"       # up to 100 addresses: 6 ranges of 1,000,000 tuples
ROUTED_CLIENTS = "198.18.1.129"       # inside ROUTED_CIDR
FLOOD_CLIENTS = "198.18.3.2"          # SYNs over the flood rate: 2 ranges
CAUGHT_CLIENTS = "198.18.4.2"         # new flows with the reader caught up: 2 ranges
REF_CLIENTS = "198.18.5.2"            # the reference's new flows: 5 ranges
RANGE = 1_000_000                     # tuples per (program, path): far more than a run uses
ONE_ARM_PORT = 82                     # the listener of ONE_ARM, a target on the clients' c1


def configure(h: Harness) -> None:
    h.listen(80, LISTEN_GROUP, flags=abi.ROUTE_F_STATS)
    h.listen(ONE_ARM_PORT, TargetGroup.single(ONE_ARM, 8080), flags=abi.ROUTE_F_STATS)
    h.listen(PREFILL_PORT, LISTEN_GROUP)
    h.source_route(ROUTED_CIDR, ROUTED_GROUP, flags=abi.ROUTE_F_STATS)
    for k in range(CHAIN_START, CHAIN_START + HOT_REPEAT):
        h.listen(k, TargetGroup.single(VIP, k + 1), flags=abi.ROUTE_F_STATS)


def build_paths(h: Harness, progs: dict[str, int], pass_fd: int, cpus: list[int]
                ) -> list[BenchPath]:
    """The timed paths for each program (``progs``: label -> fd), checked to take the path
    they are named after."""
    main_fd = progs[""]
    c1 = h.net.ifindex["c1"]
    bpfsys.prog_test_run(main_fd, fast_tcp(CLIENT, VIP, 40000, 80, SYN), ingress_ifindex=c1)
    _install_twins(h, 40001)
    est = fast_tcp(CLIENT, VIP, 40000, 80, ACK, payload=bytes(64))
    target = parse(bpfsys.prog_test_run(main_fd, est, ingress_ifindex=c1).data)
    assert target is not None
    reply = fast_tcp(target.dst, CLIENT, target.dport, 40000, ACK, payload=bytes(64))
    other = fast_tcp(CLIENT, VIP, 40000, 81, ACK, payload=bytes(64))
    bpfsys.prog_test_run(main_fd, fast_tcp(CLIENT, VIP, 40002, ONE_ARM_PORT, SYN),
                         ingress_ifindex=c1)
    est_one_arm = fast_tcp(CLIENT, VIP, 40002, ONE_ARM_PORT, ACK, payload=bytes(64))
    est_twin = fast_tcp(CLIENT, VIP, 40001, 80, ACK, payload=bytes(64), ttl=255)
    reply_twin = fast_tcp(T1, CLIENT, 8080, 40001, ACK, payload=bytes(64), ttl=255)
    paths = [BenchPath(FLOOR, "", pass_fd, "c1", lambda i: est, hot=lambda j: est)]
    for k, (label, fd) in enumerate(progs.items()):
        paths += [
            BenchPath(NON_MATCHING, label, fd, "c1", lambda i: other, hot=lambda j: other),
            BenchPath(ESTABLISHED, label, fd, "c1", lambda i: est, hot=lambda j: est_twin),
            BenchPath(ESTABLISHED_ONE_ARM, label, fd, "c1", lambda i: est_one_arm),
            BenchPath(REPLY, label, fd, "b1", lambda i: reply, hot=lambda j: reply_twin),
            BenchPath(NEW, label, fd, "c1", syn_from(NEW_FLOW_CLIENTS, 3 * k * RANGE),
                      hot=_chain_packet if not label else None, new_flows=True),
            BenchPath(NEW_ROUTE, label, fd, "c1", syn_from(ROUTED_CLIENTS, k * RANGE),
                      new_flows=True),
            BenchPath(NEW_CAUGHT, label, fd, "c1", syn_from(CAUGHT_CLIENTS, k * RANGE),
                      new_flows=True, reader_caught_up=True),
            BenchPath(NEW_FULL, label, fd, "c1",
                      syn_from(NEW_FLOW_CLIENTS, (3 * k + 1) * RANGE), new_flows=True),
        ]
        if len(cpus) > 1:
            paths.append(BenchPath(NEW_ALL_CPUS, label, fd, "c1",
                                   syn_from(NEW_FLOW_CLIENTS, (3 * k + 2) * RANGE),
                                   new_flows=True, cpus=cpus))
        paths.append(BenchPath(NEW_FLOODED, label, fd, "c1",
                               syn_from(FLOOD_CLIENTS, k * RANGE), flooded=True))
    for p in paths:
        if p.name == FLOOR:
            _check(h, p, XDP_PASS, lambda d: d == est)
        elif p.name == NON_MATCHING:
            _check(h, p, XDP_PASS, lambda d: d == other)
        elif p.name == ESTABLISHED:
            _check(h, p, XDP_REDIRECT, lambda d: _dst(d) == target.dst)
        elif p.name == ESTABLISHED_ONE_ARM:
            _check(h, p, XDP_REDIRECT, lambda d: _dst(d) == ONE_ARM)
        elif p.name == REPLY:
            _check(h, p, XDP_REDIRECT, lambda d: (q := parse(d)) is not None and q.src == VIP)
        elif p.name == NEW_ROUTE:
            _check(h, p, XDP_REDIRECT, lambda d: _dst(d) in (T1, T2))
        else:
            _check(h, p, XDP_REDIRECT, lambda d: _dst(d) in (T1, T2, T3))
    forget_new_flows(h, paths, chain_calls=1)
    return paths


def reference_paths(h: Harness, ref: ReferenceLB) -> list[BenchPath]:
    """The reference's paths (its 90% phase and its full phase), with the same packets as
    lbtui's where the path allows, checked to take the path they are named after. Its flow
    for established and reply is opened by its two-entry program (a SYN), so both entries
    exist; new flows come from REF_CLIENTS."""
    c1 = h.net.ifindex["c1"]
    syn = bpfsys.prog_test_run(ref.two_fd, fast_tcp(CLIENT, VIP, 40000, 80, SYN),
                               ingress_ifindex=c1)
    target = parse(syn.data)
    assert syn.retval == XDP_TX and target is not None
    est = fast_tcp(CLIENT, VIP, 40000, 80, ACK, payload=bytes(64))
    reply = fast_tcp(target.dst, CLIENT, target.dport, 40000, ACK, payload=bytes(64))
    other = fast_tcp(CLIENT, VIP, 40000, 81, ACK, payload=bytes(64))
    new = {NEW: (ref.one_fd, 0), NEW_TWO: (ref.two_fd, 1),
           NEW_NO_INSERT: (ref.no_insert_fd, 2), NEW_FULL: (ref.one_fd, 3),
           NEW_FULL_TWO: (ref.two_fd, 4)}
    paths = [BenchPath(NON_MATCHING, REF, ref.one_fd, "c1", lambda i: other,
                       hot=lambda j: other),
             BenchPath(ESTABLISHED, REF, ref.one_fd, "c1", lambda i: est),
             BenchPath(REPLY, REF, ref.reply_fd, "b1", lambda i: reply)]
    paths += [BenchPath(name, REF, fd, "c1", syn_from(REF_CLIENTS, k * RANGE),
                        new_flows=True, forget=ref.forget) for name, (fd, k) in new.items()]
    targets = {T1, T2, T3}
    for p in paths:
        if p.name == NON_MATCHING:
            _check(h, p, XDP_PASS, lambda d: d == other)
        elif p.name == REPLY:
            _check(h, p, XDP_TX, lambda d: (q := parse(d)) is not None and q.src == VIP
                   and q.sport == 80 and checksums_ok(d))
        else:
            _check(h, p, XDP_TX, lambda d: (q := parse(d)) is not None and q.dst in targets
                   and q.dport == 8080 and checksums_ok(d))
    forget_new_flows(h, paths, chain_calls=0)
    return paths


def forget_new_flows(h: Harness, paths: list[BenchPath], chain_calls: int) -> None:
    """Delete the flows the single runs opened since the last call (and the hot loop's
    chain flows), so the table stays at its fill level."""
    for p in paths:
        if not p.new_flows:
            continue
        for i in range(p.deleted, p.used):
            q = parse(p.single(i))
            assert q is not None
            flow = (q.src, q.dst, q.sport, q.dport)
            if p.forget:
                p.forget(flow)
            else:
                M.delete_connection(h.maps.conntrack_map, flow)
        p.deleted = p.used
    fd = h.maps.conntrack_map.fd
    for j in range(chain_calls):
        q = parse(_chain_packet(j))
        assert q is not None
        for k in range(CHAIN_START, CHAIN_START + HOT_REPEAT):
            bpfsys.delete(fd, M.FiveTuple(CLIENT, VIP, q.sport, k).key())
            bpfsys.delete(fd, M.FiveTuple(VIP, CLIENT, k + 1, q.sport).key())


# --- filling the table -------------------------------------------------------------------


@contextmanager
def on_cpu(cpu: int) -> Iterator[None]:
    """Run on one CPU (prog_test_run runs the program on the caller's CPU)."""
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)


def prefill_packet(n: int) -> bytes:
    return fast_tcp(be_to_ip(_be(_host("198.18.128.0") + n // PORTS_PER_IP)), VIP,
                    1024 + n % PORTS_PER_IP, PREFILL_PORT, SYN)


def fill(h: Harness, prog_fd: int, start: int, flows: int, cpus: list[int]) -> int:
    """Open ``flows`` flows (two entries each) through the program, an equal share on each
    CPU; returns the next unused prefill index."""
    c1 = h.net.ifindex["c1"]
    share = -(-flows // len(cpus))
    n = start
    for cpu in cpus:
        with on_cpu(cpu):
            for _ in range(min(share, start + flows - n)):
                bpfsys.prog_test_run(prog_fd, prefill_packet(n), ingress_ifindex=c1)
                n += 1
    return n


def count_entries(h: Harness) -> int:
    return sum(n for _k, _v, n in M.conntrack_reader(h.maps.conntrack_map).chunks())


# --- measuring ---------------------------------------------------------------------------


def measure(h: Harness, paths: list[BenchPath], rounds: int, per_round: int,
            hot_calls: int, keep_new_flows: bool = False) -> None:
    """Rounds interleaving ``paths`` (rotating their order). New flows are deleted after
    each round unless ``keep_new_flows``."""
    for r in range(rounds):
        order = paths[r % len(paths):] + paths[:r % len(paths)]
        for p in order:
            ifindex = h.net.ifindex[p.iface]
            if p.cpus:
                p.rounds.append(concurrent_block(p, ifindex, per_round))
                h.events()
                continue
            block = []
            with flood_guard(h, p):
                for _ in range(per_round):
                    if p.reader_caught_up:
                        h.events()      # outside the timing: the reader has read it all
                    block.append(bpfsys.prog_test_run(p.prog_fd, p.single(p.used),
                                                      ingress_ifindex=ifindex).duration_ns)
                    if p.new_flows or p.flooded:
                        p.used += 1
            p.rounds.append(block)
            # Consume the events this path produced, as lbtui's event hub would: a full
            # ring buffer would make the next path's events fail cheaply (and be lost).
            h.events()
        # The hot loops after every path's single runs: the new-flow chain opens 2,000
        # flows (and events), which would weigh on whichever single runs came next.
        for p in order:
            if p.hot is None:
                continue
            ifindex = h.net.ifindex[p.iface]
            p.hot_samples += [bpfsys.prog_test_run(
                p.prog_fd, p.hot(j), ingress_ifindex=ifindex, repeat=HOT_REPEAT
            ).duration_ns for j in range(hot_calls)]
            h.events()
        if not keep_new_flows:
            forget_new_flows(h, paths, hot_calls)
        h.events()


def concurrent_block(p: BenchPath, ifindex: int, per_cpu: int) -> list[int]:
    """``per_cpu`` single runs on each of ``p.cpus`` at the same time (one thread pinned to
    each CPU; ctypes releases the GIL for the syscall), so inserts contend for the LRU's
    locks as under RSS; returns every run's time."""
    assert p.cpus
    n = len(p.cpus)
    packets = [[p.single(p.used + i * n + t) for i in range(per_cpu)] for t in range(n)]
    p.used += per_cpu * n
    times: list[list[int]] = [[] for _ in range(n)]
    start = threading.Barrier(n)

    def worker(t: int) -> None:
        os.sched_setaffinity(0, {p.cpus[t]})       # this thread only
        start.wait()
        times[t] = [bpfsys.prog_test_run(p.prog_fd, pkt, ingress_ifindex=ifindex
                                         ).duration_ns for pkt in packets[t]]

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [x for ts in times for x in ts]


HELPERS_SRC = b"""
#include <uapi/linux/bpf.h>
int h_nop(struct xdp_md *ctx) { return XDP_PASS; }
int h_ktime(struct xdp_md *ctx) { return bpf_ktime_get_ns() ? XDP_PASS : XDP_DROP; }
int h_fib(struct xdp_md *ctx) {
    struct bpf_fib_lookup f = {};
    f.family = 2;                       /* AF_INET */
    f.l4_protocol = 6;
    f.tot_len = 104;
    f.ipv4_src = FIB_SRC;
    f.ipv4_dst = FIB_DST;
    f.ifindex = ctx->ingress_ifindex;
    return bpf_fib_lookup(ctx, &f, sizeof(f), 0) == BPF_FIB_LKUP_RET_SUCCESS ? XDP_PASS
                                                                             : XDP_DROP;
}
"""


def helper_costs(h: Harness, calls: int) -> dict[str, float]:
    """What two helpers every forwarded packet may call cost on their own here (hot loop,
    minus an empty program): the context for the per-path numbers."""
    from bcc import BPF

    b = BPF(text=HELPERS_SRC, cflags=[f"-DFIB_SRC={ip_to_be(CLIENT)}U",
                                      f"-DFIB_DST={ip_to_be(T1)}U"])
    try:
        fds = {n: b.load_func(n.encode(), BPF.XDP).fd for n in ("h_nop", "h_ktime", "h_fib")}
        pkt = fast_tcp(CLIENT, VIP, 40000, 81, ACK)
        ifindex = h.net.ifindex["c1"]
        if bpfsys.prog_test_run(fds["h_fib"], pkt, ingress_ifindex=ifindex).retval != XDP_PASS:
            raise RuntimeError("bpf_fib_lookup did not resolve T1 in the bench namespace")
        med = {n: statistics.median(bpfsys.prog_test_run(
            fd, pkt, ingress_ifindex=ifindex, repeat=1000).duration_ns for _ in range(calls))
            for n, fd in fds.items()}
    finally:
        b.cleanup()
    return {"bpf_fib_lookup": med["h_fib"] - med["h_nop"],
            "bpf_ktime_get_ns": med["h_ktime"] - med["h_nop"]}


# --- results -----------------------------------------------------------------------------


def summarize(paths: list[BenchPath]) -> list[dict[str, object]]:
    """One row per path: medians over all samples and per round, minus the floor of the
    same samples (the floor path is the first), and the goal checked per round."""
    floor_p = paths[0]
    floor = statistics.median(floor_p.samples)
    hot_floor = statistics.median(floor_p.hot_samples) if floor_p.hot_samples else None
    rows = []
    for p in paths:
        single = statistics.median(p.samples)
        per_round = [statistics.median(b) - statistics.median(f)
                     for b, f in zip(p.rounds, floor_p.rounds, strict=True)]
        hot = statistics.median(p.hot_samples) if p.hot_samples else None
        goal = GOALS.get(p.name)
        minus = single - floor if p is not floor_p else None
        rows.append({
            "path": p.label, "name": p.name, "prog": p.prog, "single_ns": single,
            "single_minus_floor_ns": minus,
            "round_minus_floor_ns": per_round if p is not floor_p else None,
            "round_median_min": min(statistics.median(b) for b in p.rounds),
            "round_median_max": max(statistics.median(b) for b in p.rounds),
            "hot_ns": hot, "hot_minus_floor_ns": (hot - hot_floor) if hot is not None
            and hot_floor is not None and p is not floor_p else None,
            "goal_minus_floor_ns": goal,
            "meets_goal": None if goal is None or minus is None else minus <= goal,
            "rounds_meeting_goal": None if goal is None or p is floor_p
            else sum(x <= goal for x in per_round),
            "samples": len(p.samples)})
    return rows


def path_table(rows: list[dict]) -> str:
    out = []
    for r in rows:
        goal = r["goal_minus_floor_ns"]
        ok = "" if r["meets_goal"] is None else ("met" if r["meets_goal"] else "MISSED")
        met = ("" if r["rounds_meeting_goal"] is None
               else f"{r['rounds_meeting_goal']}/{len(r['round_minus_floor_ns'])}")
        out.append([r["path"], fmt(r["single_ns"]),
                    f"{fmt(r['round_median_min'])}-{fmt(r['round_median_max'])}",
                    fmt(r["single_minus_floor_ns"]), fmt(r["hot_ns"], 1),
                    fmt(r["hot_minus_floor_ns"], 1), f"<= {goal}" if goal else "", ok, met])
    return table(["path", "ns/pkt", "round medians", "- floor", "hot loop", "- floor",
                  "goal (- floor)", "", "rounds met"], out)


def rounds_table(rows: list[dict]) -> str:
    """Every goal in every round: the round's median minus the round's floor."""
    goal_rows = [r for r in rows if r["goal_minus_floor_ns"] is not None and not r["prog"]]
    n = max(len(r["round_minus_floor_ns"]) for r in goal_rows)
    out = []
    for i in range(n):
        cells = [str(i + 1)]
        for r in goal_rows:
            vals = r["round_minus_floor_ns"]
            if i >= len(vals):
                cells.append("")
                continue
            mark = "" if vals[i] <= r["goal_minus_floor_ns"] else " x"
            cells.append(f"{vals[i]:,.0f}{mark}")
        out.append(cells)
    out.append(["met"] + [f"{r['rounds_meeting_goal']}/{len(r['round_minus_floor_ns'])}"
                          for r in goal_rows])
    heads = ["round"] + [f"{r['name']} (<= {r['goal_minus_floor_ns']})" for r in goal_rows]
    return table(heads, out)


def savings_table(rows: list[dict]) -> str:
    """--compare-src: ns each path saved against the other build, overall and per round."""
    by = {(r["name"], r["prog"]): r for r in rows}
    out = []
    for (name, prog), after in by.items():
        before = by.get((name, "before"))
        if prog or before is None or after["single_minus_floor_ns"] is None:
            continue
        paired = [b - a for b, a in zip(before["round_minus_floor_ns"],
                                        after["round_minus_floor_ns"], strict=True)]
        out.append([name, fmt(before["single_minus_floor_ns"]),
                    fmt(after["single_minus_floor_ns"]),
                    fmt(before["single_minus_floor_ns"] - after["single_minus_floor_ns"]),
                    f"{sum(x > 0 for x in paired)}/{len(paired)}",
                    f"{fmt(min(paired))}..{fmt(max(paired))}"])
    return table(["path", "before - floor", "this - floor", "saved ns",
                  "rounds faster", "saved per round"], out)


def reference_table(rows: list[dict]) -> str:
    """lbtui beside the reference balancer, path by path: both minus the floor of the same
    rounds, the difference overall and per round, and the goal checked on the reference."""
    by = {(r["name"], r["prog"]): r for r in rows}
    out = []
    for r in rows:
        lb = by.get((REF_PAIRS.get(r["name"], r["name"]), ""))
        if r["prog"] != REF or lb is None:
            continue
        paired = [x - y for x, y in zip(lb["round_minus_floor_ns"], r["round_minus_floor_ns"],
                                        strict=True)]
        goal = r["goal_minus_floor_ns"]
        out.append([r["name"], lb["name"], fmt(lb["single_minus_floor_ns"]),
                    fmt(r["single_minus_floor_ns"]),
                    fmt(lb["single_minus_floor_ns"] - r["single_minus_floor_ns"]),
                    f"{fmt(min(paired))}..{fmt(max(paired))}", f"<= {goal}",
                    f"{r['rounds_meeting_goal']}/{len(paired)}"])
    return table(["reference path", "lbtui path", "lbtui - floor", "reference - floor",
                  "lbtui - reference", "per round", "goal", "reference met"], out)


@dataclass
class SizeResult:
    size: int
    lru: str
    entries_90: int
    entries_full: int
    rows_90: list[dict]
    rows_full: list[dict]
    events_lost: int = 0
    ref_entries_90: int = 0         # the reference's conntrack (0: not run)
    ref_entries_full: int = 0

    def to_json(self) -> dict:
        return self.__dict__


def run_size(size: int, lru: str, a: argparse.Namespace, cpus: list[int]
             ) -> tuple[SizeResult, dict[str, float]]:
    opts = {"max_listen_ports": 512, "max_connections": size,
            "conntrack_per_cpu_lru": LRU_KINDS[lru]}
    with standalone("bn", opts, vip_local=False) as (h, dp), reference(a, size, lru) as ref:
        progs = {"": h.prog_fd}
        if a.compare_src:
            progs["before"] = load_other(h, a.compare_src)
        configure(h)
        used = fill(h, dp.prog_fd, 0, int(size * a.fill) // 2, cpus)
        ref_used = fill(h, ref.one_fd, 0, int(size * a.fill), cpus) if ref else 0
        lost = M.read_counters(h.maps.counters_map)["events_lost"]
        with on_cpu(cpus[0]):
            paths = build_paths(h, progs, dp.pass_fd, cpus)
            paths += reference_paths(h, ref) if ref else []
            entries_90 = count_entries(h)
            ref_90 = ref.entries() if ref else 0
            full_names = (NEW_FULL, NEW_FULL_TWO)
            phase1 = [p for p in paths if p.name not in full_names]
            measure(h, phase1, a.rounds, a.per_round, a.hot_calls)
            helpers = helper_costs(h, max(a.hot_calls, 5))
        # Past full: every later insert has to evict (the margin covers free entries parked
        # in the CPUs' local lists).
        fill(h, dp.prog_fd, used, size // 2 - count_entries(h) // 2 + size // 100 + 2048,
             cpus)
        if ref:
            fill(h, ref.one_fd, ref_used, size - ref.entries() + size // 100 + 2048, cpus)
        with on_cpu(cpus[0]):
            entries_full = count_entries(h)
            ref_full = ref.entries() if ref else 0
            floor2 = BenchPath(FLOOR, "", dp.pass_fd, "c1", paths[0].single)
            phase2 = [floor2] + [p for p in paths if p.name in full_names]
            measure(h, phase2, a.rounds, a.per_round, 0, keep_new_flows=True)
        lost = M.read_counters(h.maps.counters_map)["events_lost"] - lost
    return SizeResult(size, lru, entries_90, entries_full, summarize(phase1),
                      summarize(phase2), lost, ref_90, ref_full), helpers


@contextmanager
def reference(a: argparse.Namespace, size: int, lru: str) -> Iterator[ReferenceLB | None]:
    """The reference balancer with a conntrack of ``size`` entries and the same LRU kind
    (None with --no-reference)."""
    if not a.reference:
        yield None
        return
    ref = ReferenceLB.load(size, per_cpu_lru=bool(LRU_KINDS[lru]))
    try:
        ref.serve(VIP, [80, PREFILL_PORT], [(T1, 8080, 50), (T2, 8080, 30), (T3, 8080, 20)])
        yield ref
    finally:
        ref.close()


def load_other(h: Harness, src: Path) -> int:
    """Compile the datapath sources in ``src`` against the same maps."""
    from lbtui.datapath import loader

    saved = loader.BPF_DIR
    loader.BPF_DIR = src
    try:
        return loader.Datapath.load(h.maps).prog_fd
    finally:
        loader.BPF_DIR = saved


def report(res: SizeResult) -> str:
    lines = [f"conntrack {res.size:,} entries, {res.lru} LRU lists",
             "",
             f"90% full ({res.entries_90:,} entries when timing began; a round's new flows "
             "are deleted after it):",
             path_table(res.rows_90),
             "",
             f"full ({res.entries_full:,} entries; every new flow evicts one):",
             path_table(res.rows_full[1:]),
             "",
             "every goal per round (that round's median minus that round's floor; x: "
             "missed):",
             rounds_table(res.rows_90 + res.rows_full[1:]),
             "",
             f"opened events lost while timing (ring buffer full): {res.events_lost:,} "
             "(the events are consumed after every path, as the event hub would)"]
    if res.ref_entries_90:
        lines += ["", f"lbtui against the reference balancer (bench/reference_lb.c; same "
                  f"rounds, its own conntrack of {res.size:,} entries: "
                  f"{res.ref_entries_90:,} at 90%, {res.ref_entries_full:,} full; ns above "
                  "the floor):",
                  reference_table(res.rows_90 + res.rows_full[1:])]
    if any(r["prog"] == "before" for r in res.rows_90):
        lines += ["", "A/B against --compare-src (same rounds, same maps):",
                  savings_table(res.rows_90 + res.rows_full[1:])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--per-round", type=int, default=300,
                    help="single runs per path per round")
    ap.add_argument("--hot-calls", type=int, default=8,
                    help=f"repeat={HOT_REPEAT} calls per repeatable path per round")
    ap.add_argument("--sizes", default="100000,1000000",
                    help="conntrack sizes (entries) to measure, comma-separated")
    ap.add_argument("--fill", type=float, default=0.9,
                    help="how full the table is for the first phase (0..0.95)")
    ap.add_argument("--lru", choices=[*LRU_KINDS, "both"], default="common",
                    help="conntrack LRU lists: common (lbtui's default), per-cpu "
                         "(BPF_F_NO_COMMON_LRU), or both")
    ap.add_argument("--compare-src", type=Path,
                    help="also time the datapath C sources in this directory, same rounds")
    ap.add_argument("--no-reference", dest="reference", action="store_false",
                    help="leave out the reference balancer (bench/reference_lb.c)")
    ap.add_argument("--quick", action="store_true", help="a few seconds (smoke test)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.per_round, args.hot_calls = 3, 50, 2
        if args.sizes == ap.get_default("sizes"):
            args.sizes = "20000"
    try:
        sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--sizes: {args.sizes!r} is not a comma-separated list of integers")
    if min(args.rounds, args.per_round, args.hot_calls) <= 0:
        ap.error("--rounds, --per-round and --hot-calls must be positive")
    if not sizes or min(sizes) < 20 * (args.per_round + HOT_REPEAT * args.hot_calls):
        ap.error("--sizes: each size must hold at least 20 rounds' worth of flows "
                 f"({20 * (args.per_round + HOT_REPEAT * args.hot_calls):,} entries)")
    if not 0 <= args.fill <= 0.95:
        ap.error("--fill must be within 0..0.95")
    if args.rounds * args.per_round > RANGE:
        ap.error("too many distinct new flows requested")
    if args.compare_src and not (args.compare_src / "lb_xdp.c").is_file():
        ap.error(f"--compare-src: no lb_xdp.c in {args.compare_src}")
    cpus = sorted(os.sched_getaffinity(0))
    lrus = list(LRU_KINDS) if args.lru == "both" else [args.lru]

    m = machine()
    print(machine_line(m))
    print(f"{args.rounds} rounds x {args.per_round} single runs per path, {args.hot_calls} x "
          f"repeat={HOT_REPEAT} hot-loop calls; timing on CPU {cpus[0]}, filling on CPUs "
          f"{','.join(map(str, cpus))}")
    t0 = time.monotonic()
    results, helpers = [], {}
    for lru in lrus:
        for size in sizes:
            res, helpers = run_size(size, lru, args, cpus)
            results.append(res)
            print()
            print(report(res))
    print("\nhelpers alone (hot loop, minus an empty program): " + ", ".join(
        f"{n} {v:.0f} ns" for n, v in helpers.items())
        + "; a forwarded packet calls bpf_fib_lookup only on a next-hop cache miss")
    command = " ".join(["sudo .venv/bin/python -m bench.datapath",
                        *(sys.argv[1:] if argv is None else argv)])
    print(f"\nns/pkt: median kernel-timed single run (repeat=1, fresh packet each); - floor: "
          f"minus the empty program's median.\nhot loop: mean of repeat={HOT_REPEAT} "
          f"back-to-back runs (n/a where the path cannot repeat). Took "
          f"{time.monotonic() - t0:.1f} s.\nreproduce: {command}")
    if args.json:
        args.json.write_text(json.dumps({
            "machine": m, "sizes": [r.to_json() for r in results], "helpers_ns": helpers,
            "command": command, "rounds": args.rounds, "per_round": args.per_round,
            "hot_repeat": HOT_REPEAT, "fill": args.fill}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
