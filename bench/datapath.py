"""Cost of each path through the XDP datapath, in ns per packet, against the floor of an
empty XDP program (lb_xdp_pass) measured in the same run.

    sudo .venv/bin/python -m bench.datapath [--quick] [--rounds N] [--json out.json]

Everything runs through BPF_PROG_TEST_RUN on the real program, inside a network namespace
this script creates (lbt-h1-bn<pid>, removed on exit) so bpf_fib_lookup finds next hops
and every forwarded path ends in XDP_REDIRECT with a MAC rewrite, as in production. The
listen entry and the source route have stats on (the config default), so new flows also
emit their "opened" event; the ring buffer is drained between rounds.

Method. BPF_PROG_TEST_RUN with ``repeat`` runs the program on one buffer and reports the
mean time per run, but later runs see the buffer as the previous run left it: a DNATed
packet is no longer the packet we meant to time (the forward packet becomes
client -> target, which matches nothing). So the primary measurement is one run per
syscall (repeat=1): every syscall copies the input afresh, so an established-flow segment,
a reply or a non-matching packet stays on its path however often it is sent, and each
new-flow packet is a distinct, never-seen 5-tuple (pre-generated; the flows are deleted
after each round). The kernel times only the program call (plus one clock read), not the
syscall or the copies; the empty program is timed the same way, and its median is
subtracted. Rounds interleave all paths (rotating their order) so drift and neighbours'
load hit every path alike; the table shows the median over all samples and the range of
the per-round medians.

Cross-check ("hot loop"): where a path can survive repetition, repeat=250 gives the mean
of back-to-back runs with warm caches. Non-matching and the floor repeat as they are.
Established and reply use twin conntrack entries written for the purpose: the forward
packet client->VIP:80 is DNATed to T1:8080 and a second forward entry (client->T1:8080,
NAT to VIP:80) turns it back, so every run is an established-flow hit with rewrite, fib
lookup and redirect (the VIP is a routed neighbour in this namespace, not a local
address). Replies alternate the same way between two reply entries. New flows via a listen entry
use a chain of listen entries (port k -> target VIP:k+1, for k = 1000..1249): each run
creates a new flow for the next port, so all 250 runs of a call are new flows. TTL (255,
one less per redirect) bounds repeat to 250. A source route picks the same target for any
port, so it cannot chain: n/a.

Conntrack has lbtui's default 100,000 entries (--max-connections) and is kept below full
(the flows a round created are deleted after it): new flows are timed without eviction.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "datapath"))

from dp_harness import (  # noqa: E402
    CLIENT,
    T1,
    T2,
    T3,
    VIP,
    XDP_PASS,
    XDP_REDIRECT,
    Harness,
    standalone,
)
from dp_packets import ACK, SYN, fast_tcp, parse  # noqa: E402

from bench.common import fmt, machine, machine_line, table  # noqa: E402
from lbtui import abi, bpfsys  # noqa: E402
from lbtui import maps as M  # noqa: E402
from lbtui.targets import TargetGroup  # noqa: E402

LISTEN_GROUP = TargetGroup.of([(T1, 8080, 50), (T2, 8080, 30), (T3, 8080, 20)])
ROUTED_GROUP = TargetGroup.of([(T1, 8080, 60), (T2, 8080, 40)])
ROUTED_CIDR = "198.18.1.128/25"
HOT_REPEAT = 250
CHAIN_START = 1000          # listen ports CHAIN_START .. CHAIN_START + HOT_REPEAT - 1
GOALS = {"established": 60, "new via listen": 150, "new via source route": 150}
PATHS = ["empty program (floor)", "non-matching", "established", "reply", "new via listen",
         "new via source route"]


@dataclass
class BenchPath:
    name: str
    prog_fd: int
    iface: str
    single: Callable[[int], bytes]          # sample index -> packet for a repeat=1 run
    hot: Callable[[int], bytes] | None = None   # call index -> packet for repeat=HOT_REPEAT
    samples: list[int] = field(default_factory=list)
    round_medians: list[float] = field(default_factory=list)
    hot_samples: list[float] = field(default_factory=list)


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
    r = bpfsys.prog_test_run(p.prog_fd, p.single(0), ingress_ifindex=ifindex)
    if r.retval != verdict or not check(r.data):
        raise RuntimeError(f"{p.name}: not on the intended path (verdict {r.retval})")
    if p.hot is None:
        return
    pkt = p.hot(0)
    r = bpfsys.prog_test_run(p.prog_fd, pkt, ingress_ifindex=ifindex, repeat=2)
    a, b = parse(pkt), parse(r.data)
    assert a is not None and b is not None
    if p.name == "new via listen":
        ok = (b.dst, b.dport) == (VIP, CHAIN_START + 2)
    else:
        ok = (a.src, a.dst, a.sport, a.dport) == (b.src, b.dst, b.sport, b.dport)
    if not ok:
        raise RuntimeError(f"{p.name}: the hot-loop packet does not stay on its path")


def build_paths(h: Harness, pass_fd: int, per_round: int, rounds: int) -> list[BenchPath]:
    h.listen(80, LISTEN_GROUP, flags=abi.ROUTE_F_STATS)
    h.source_route(ROUTED_CIDR, ROUTED_GROUP, flags=abi.ROUTE_F_STATS)
    for k in range(CHAIN_START, CHAIN_START + HOT_REPEAT):
        h.listen(k, TargetGroup.single(VIP, k + 1), flags=abi.ROUTE_F_STATS)
    c1 = h.net.ifindex["c1"]
    bpfsys.prog_test_run(h.prog_fd, fast_tcp(CLIENT, VIP, 40000, 80, SYN), ingress_ifindex=c1)
    _install_twins(h, 40001)
    est = fast_tcp(CLIENT, VIP, 40000, 80, ACK, payload=bytes(64))
    target = parse(bpfsys.prog_test_run(h.prog_fd, est, ingress_ifindex=c1).data)
    assert target is not None
    reply = fast_tcp(target.dst, CLIENT, target.dport, 40000, ACK, payload=bytes(64))
    other = fast_tcp(CLIENT, VIP, 40000, 81, ACK, payload=bytes(64))
    n = per_round * rounds
    via_listen = [fast_tcp(f"198.18.{2 + i // 60000}.{2 + (i // 250) % 250}", VIP,
                           1024 + i % 60000, 80, SYN) for i in range(n)]
    via_route = [fast_tcp(f"198.18.1.{128 + (i // 60000) % 126}", VIP, 1024 + i % 60000, 80,
                          SYN) for i in range(n)]
    est_twin = fast_tcp(CLIENT, VIP, 40001, 80, ACK, payload=bytes(64), ttl=255)
    reply_twin = fast_tcp(T1, CLIENT, 8080, 40001, ACK, payload=bytes(64), ttl=255)
    paths = [
        BenchPath(PATHS[0], pass_fd, "c1", lambda i: est, hot=lambda j: est),
        BenchPath(PATHS[1], h.prog_fd, "c1", lambda i: other, hot=lambda j: other),
        BenchPath(PATHS[2], h.prog_fd, "c1", lambda i: est, hot=lambda j: est_twin),
        BenchPath(PATHS[3], h.prog_fd, "b1", lambda i: reply, hot=lambda j: reply_twin),
        BenchPath(PATHS[4], h.prog_fd, "c1", lambda i: via_listen[i], hot=_chain_packet),
        BenchPath(PATHS[5], h.prog_fd, "c1", lambda i: via_route[i]),
    ]
    _check(h, paths[0], XDP_PASS, lambda d: d == est)
    _check(h, paths[1], XDP_PASS, lambda d: d == other)
    _check(h, paths[2], XDP_REDIRECT, lambda d: _dst(d) in (target.dst,))
    _check(h, paths[3], XDP_REDIRECT, lambda d: (q := parse(d)) is not None and q.src == VIP)
    _check(h, paths[4], XDP_REDIRECT, lambda d: _dst(d) in (T1, T2, T3))
    _check(h, paths[5], XDP_REDIRECT, lambda d: _dst(d) in (T1, T2))
    _forget_new_flows(h, paths, 0, 1, chain_calls=1)
    return paths


def _dst(frame: bytes) -> str | None:
    q = parse(frame)
    return q.dst if q else None


def _chain_packet(j: int) -> bytes:
    """A SYN to the first chain port from a client port no other call used."""
    return fast_tcp(CLIENT, VIP, 20000 + j % 40000, CHAIN_START, SYN, ttl=255)


def _single_block(h: Harness, p: BenchPath, start: int, count: int) -> list[int]:
    ifindex = h.net.ifindex[p.iface]
    return [bpfsys.prog_test_run(p.prog_fd, p.single(i), ingress_ifindex=ifindex
                                 ).duration_ns for i in range(start, start + count)]


def _forget_new_flows(h: Harness, paths: list[BenchPath], start: int, count: int,
                      chain_calls: int) -> None:
    """Delete the flows a round created, so the table never fills (no LRU eviction)."""
    for p in paths[4:]:
        for i in range(start, start + count):
            q = parse(p.single(i))
            assert q is not None
            M.delete_connection(h.maps.conntrack_map, (q.src, q.dst, q.sport, q.dport))
    fd = h.maps.conntrack_map.fd
    for j in range(chain_calls):
        q = parse(_chain_packet(j))
        assert q is not None
        for k in range(CHAIN_START, CHAIN_START + HOT_REPEAT):
            bpfsys.delete(fd, M.FiveTuple(CLIENT, VIP, q.sport, k).key())
            bpfsys.delete(fd, M.FiveTuple(VIP, CLIENT, k + 1, q.sport).key())


def measure(h: Harness, pass_fd: int, rounds: int, per_round: int, hot_calls: int
            ) -> list[BenchPath]:
    paths = build_paths(h, pass_fd, per_round, rounds)
    for r in range(rounds):
        order = paths[r % len(paths):] + paths[:r % len(paths)]
        start = r * per_round
        for p in order:
            block = _single_block(h, p, start, per_round)
            p.samples += block
            p.round_medians.append(statistics.median(block))
            if p.hot is not None:
                ifindex = h.net.ifindex[p.iface]
                p.hot_samples += [bpfsys.prog_test_run(
                    p.prog_fd, p.hot(j), ingress_ifindex=ifindex, repeat=HOT_REPEAT
                ).duration_ns for j in range(hot_calls)]
        _forget_new_flows(h, paths, start, per_round, hot_calls)
        h.events()
    return paths


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
    """What two helpers every forwarded packet calls cost on their own here (hot loop,
    minus an empty program): the context for the per-path numbers."""
    from bcc import BPF

    from lbtui.addr import ip_to_be

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


def summarize(paths: list[BenchPath]) -> list[dict[str, object]]:
    floor = statistics.median(paths[0].samples)
    hot_floor = statistics.median(paths[0].hot_samples)
    rows = []
    for p in paths:
        single = statistics.median(p.samples)
        hot = statistics.median(p.hot_samples) if p.hot_samples else None
        goal = GOALS.get(p.name)
        minus = single - floor if p is not paths[0] else None
        rows.append({
            "path": p.name, "single_ns": single, "single_minus_floor_ns": minus,
            "round_median_min": min(p.round_medians), "round_median_max": max(p.round_medians),
            "hot_ns": hot, "hot_minus_floor_ns": (hot - hot_floor) if hot is not None
            and p is not paths[0] else None,
            "goal_minus_floor_ns": goal,
            "meets_goal": None if goal is None or minus is None else minus <= goal,
            "samples": len(p.samples)})
    return rows


def print_table(rows: list[dict[str, object]]) -> None:
    out = []
    for r in rows:
        goal = r["goal_minus_floor_ns"]
        ok = "" if r["meets_goal"] is None else ("met" if r["meets_goal"] else "MISSED")
        out.append([r["path"], fmt(r["single_ns"]),  # type: ignore[arg-type]
                    f"{fmt(r['round_median_min'])}-{fmt(r['round_median_max'])}",  # type: ignore[arg-type]
                    fmt(r["single_minus_floor_ns"]),  # type: ignore[arg-type]
                    fmt(r["hot_ns"], 1), fmt(r["hot_minus_floor_ns"], 1),  # type: ignore[arg-type]
                    f"<= {goal}" if goal else "", ok])
    print(table(["path", "ns/pkt", "round medians", "- floor", "hot loop", "- floor",
                 "goal (- floor)", ""], out))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--per-round", type=int, default=300,
                    help="single runs per path per round")
    ap.add_argument("--hot-calls", type=int, default=8,
                    help=f"repeat={HOT_REPEAT} calls per repeatable path per round")
    ap.add_argument("--max-connections", type=int, default=100_000,
                    help="conntrack size (default: lbtui's); new-flow cost grows with it")
    ap.add_argument("--quick", action="store_true", help="a few seconds (smoke test)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.per_round, args.hot_calls = 4, 50, 2
    if min(args.rounds, args.per_round, args.hot_calls) <= 0:
        ap.error("--rounds, --per-round and --hot-calls must be positive")
    if args.rounds * args.per_round > 250 * 60000:
        ap.error("too many distinct new flows requested")

    m = machine()
    print(machine_line(m))
    print(f"{args.rounds} rounds x {args.per_round} single runs per path, "
          f"{args.hot_calls} x repeat={HOT_REPEAT} hot-loop calls; compiling the datapath")
    t0 = time.monotonic()
    # The chain needs 250 listen entries; a round's flows must fit in the conntrack.
    opts = {"max_listen_ports": 512, "max_connections": args.max_connections}
    if args.max_connections < 4 * (args.per_round + HOT_REPEAT * args.hot_calls):
        ap.error("--max-connections is too small for one round's flows")
    with standalone("bn", opts, vip_local=False) as (h, dp):
        paths = measure(h, dp.pass_fd, args.rounds, args.per_round, args.hot_calls)
        helpers = helper_costs(h, max(args.hot_calls, 5))
    rows = summarize(paths)
    print()
    print_table(rows)
    print("\nhelpers alone (hot loop, minus an empty program): " + ", ".join(
        f"{n} {v:.0f} ns" for n, v in helpers.items())
        + "; a forwarded packet calls both, a new flow also inserts two conntrack entries")
    command = " ".join(["sudo .venv/bin/python -m bench.datapath",
                        *(sys.argv[1:] if argv is None else argv)])
    print(f"\nns/pkt: median kernel-timed single run (repeat=1, fresh packet each); - floor: "
          f"minus the empty program's median.\nhot loop: mean of repeat={HOT_REPEAT} "
          f"back-to-back runs (n/a where the path cannot repeat). Took "
          f"{time.monotonic() - t0:.1f} s.\nreproduce: {command}")
    if args.json:
        args.json.write_text(json.dumps({"machine": m, "rows": rows, "helpers_ns": helpers,
                                         "command": command,
                                         "rounds": args.rounds, "per_round": args.per_round,
                                         "hot_repeat": HOT_REPEAT}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
