"""Maglev tables: build time, balance and disruption per table size, against theory.

    .venv/bin/python -m bench.maglev [--tuples 100000] [--quick] [--json out.json]

For each table size: the time to build a table (4 targets, 40/30/20/10, uncached), the
largest gap between a target's share of slots and its weight, and the kernel memory of a
group (two tables of one byte per slot). Then, for N = 2..8 equal targets, one target
(the middle one) is removed the way an operator does it (drained, the others rescaled by
the controller, then dropped) and the flows of ``--tuples`` distinct 5-tuples are looked up
before and after with the datapath's flow hash: "moved" is the share of flows whose target
changed, "theory" the removed target's share (what a perfect consistent hash moves: only
its own flows), "extra" the flows of other targets that moved anyway. The "weight 0"
columns take the target out of rotation instead (the others keep their weights, as active
health checks do), which isolates Maglev's own churn from the rescaling; the last column
is the same removal with the default weighted pick. Pure Python, no
privileges; the kernel picks exactly what these tables say (tests/datapath/test_dp_maglev).

``--kernel`` (root) also times a new flow's first packet through the real XDP program
(BPF_PROG_TEST_RUN, one run per syscall, every packet a new 5-tuple, in a namespace this
run creates and removes) for a weighted and a Maglev listener of the same 4 targets, in
interleaved rounds on one CPU, against the empty program's floor: what the Maglev pick
(one more array lookup) costs per new flow.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

from bench.common import REPO, emit, fmt, machine, machine_line, table
from lbtui import bpfsys, maglev
from lbtui.control import apply
from lbtui.control.controller import redistribute
from lbtui.model import Config, DatapathSettings, Listener
from lbtui.targets import TargetGroup

# 1021 is below the minimum table size: measured (built unchecked) to show why it is.
SIZES = (1021, 4093, 16381, 65537, 655373)
VIP = "198.18.0.10"


def flow_hashes(n: int, seed: int = 14) -> list[int]:
    rng = random.Random(seed)
    seen: set[tuple[str, int]] = set()
    while len(seen) < n:
        seen.add((f"198.18.{rng.randrange(1, 4)}.{rng.randrange(2, 255)}",
                  rng.randrange(1024, 65536)))
    return [maglev.flow_hash(ip, VIP, port, 80, 6) for ip, port in sorted(seen)]


def equal_group(n: int) -> TargetGroup:
    return TargetGroup.of([(f"198.18.101.{i + 2}", 8080, 100 // n + (i < 100 % n))
                           for i in range(n)])


def build(g: TargetGroup, size: int) -> bytes:
    if size < maglev.MIN_TABLE_SIZE:
        return maglev._build(tuple((t.ip, t.port, t.weight) for t in g.targets), size)
    return maglev.build_table(g.targets, size)


def lookups(g: TargetGroup, size: int, hashes: list[int]) -> list[str]:
    table = build(g, size)
    return [str(maglev.pick(table, g.targets, h)) for h in hashes]


def weighted_lookups(g: TargetGroup, hashes: list[int]) -> list[str]:
    """The default pick (lb_pick in lb_xdp.c): hash % total into the cumulative weights."""
    cums = g.cumulative_weights
    return [str(next(t for t, c in zip(g.targets, cums, strict=True) if h % cums[-1] < c))
            for h in hashes]


def removal(n: int, size: int, hashes: list[int]) -> dict[str, float]:
    g = equal_group(n)
    gone = g.targets[n // 2]
    drained = redistribute(g, gone.ip, gone.port, 0)
    after_group = TargetGroup(tuple(t for t in drained.targets if str(t) != str(gone)))
    before = lookups(g, size, hashes)
    out: dict[str, float] = {"n": n, "size": size, "theory_pct": gone.weight,
                             "bound_pct": 100 / n + 2}
    # Removed (the others rescaled to sum 100), and out of rotation (weight 0, the others
    # unchanged, as active health checks do): the difference is the rescaling's share.
    for name, new in (("", after_group), ("oor_", g.in_rotation({str(gone)}))):
        after = lookups(new, size, hashes)
        moved = sum(a != b for a, b in zip(before, after, strict=True))
        extra = sum(a != b and a != str(gone) for a, b in zip(before, after, strict=True))
        out[f"{name}moved_pct"] = 100 * moved / len(hashes)
        out[f"{name}extra_pct"] = 100 * extra / len(hashes)
    before, after = weighted_lookups(g, hashes), weighted_lookups(after_group, hashes)
    out["weighted_moved_pct"] = 100 * sum(a != b for a, b in zip(before, after, strict=True)
                                          ) / len(hashes)
    return out


def build_row(size: int) -> dict[str, float]:
    g = TargetGroup.of([(f"198.18.101.{i + 2}", 8080, w) for i, w in
                        enumerate((40, 30, 20, 10))])
    maglev._build.cache_clear()
    t0 = time.perf_counter()
    table = build(g, size)
    ms = 1000 * (time.perf_counter() - t0)
    err = max(abs(table.count(i) / size - t.weight / 100) for i, t in enumerate(g.targets))
    return {"size": size, "build_ms": ms, "share_error_pp": 100 * err,
            "group_kib": 2 * ((size + 7) // 8 * 8) / 1024}


def kernel_costs(rounds: int, per_round: int) -> list[dict[str, float]]:
    """Median ns per new flow's first packet: floor, weighted and Maglev listeners."""
    sys.path.insert(0, str(REPO / "tests" / "datapath"))
    from dp_harness import T1, T2, T3, T4, XDP_REDIRECT, standalone
    from dp_packets import fast_tcp

    vip = "198.18.0.10"
    group = TargetGroup.of([(T1, 8080, 40), (T2, 8080, 30), (T3, 8080, 20), (T4, 8080, 10)])
    cfg = Config(DatapathSettings(interfaces=["c1"]), [
        Listener(80, group, "tcp", stats=False, address=vip),
        Listener(81, group, "tcp", stats=False, address=vip, hash="maglev")])
    flows = 2 * rounds * per_round
    samples: dict[str, list[int]] = {"empty program (floor)": [], "new flow, weighted": [],
                                     "new flow, maglev": []}
    with standalone("mg", {"max_connections": 2 * flows + 1024}, vip_local=False) as (h, dp):
        apply.sync(h.maps, cfg, lambda names: [h.net.ifindex[n] for n in names])
        ifindex = h.net.ifindex["c1"]
        paths = list(zip(samples, ((dp.pass_fd, 80), (h.prog_fd, 80), (h.prog_fd, 81)),
                         strict=True))
        saved = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(saved)})
        try:
            n = 0
            for r in range(rounds):
                for name, (fd, port) in paths[r % 3:] + paths[:r % 3]:
                    for _ in range(per_round):
                        n += 1
                        pkt = fast_tcp(f"198.18.1.{2 + n % 250}", vip, 1024 + n // 250, port)
                        res = bpfsys.prog_test_run(fd, pkt, ingress_ifindex=ifindex)
                        if fd != dp.pass_fd and res.retval != XDP_REDIRECT:
                            raise RuntimeError(f"{name}: verdict {res.retval}, not REDIRECT")
                        samples[name].append(res.duration_ns)
        finally:
            os.sched_setaffinity(0, saved)
    floor = statistics.median(samples["empty program (floor)"])
    return [{"path": name, "samples": len(v), "median_ns": statistics.median(v),
             "above_floor_ns": statistics.median(v) - floor} for name, v in samples.items()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.maglev", description=__doc__.split("\n")[0])
    ap.add_argument("--tuples", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true", help="two table sizes, N = 2..4")
    ap.add_argument("--kernel", action="store_true",
                    help="also time the XDP pick per new flow (root; a namespace of its own)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    sizes = (4093, 65537) if a.quick else SIZES
    counts = range(2, 5) if a.quick else range(2, 9)
    hashes = flow_hashes(a.tuples)
    builds = [build_row(s) for s in sizes]
    removals = [removal(n, s, hashes) for s in sizes for n in counts]
    costs = kernel_costs(4 if a.quick else 20, 200 if a.quick else 1000) if a.kernel else []
    m = machine()
    sections = (["New flow through the XDP program (single runs, median ns)\n" + table(
        ["path", "samples", "median ns", "above floor ns"],
        [[r["path"], fmt(r["samples"]), fmt(r["median_ns"]), fmt(r["above_floor_ns"])]
         for r in costs])] if costs else [])
    text = "\n\n".join([
        machine_line(m),
        "Maglev table per size (4 targets 40/30/20/10)\n" + table(
            ["size", "build ms", "max share error pp", "KiB per group"],
            [[str(r["size"]), fmt(r["build_ms"], 1), fmt(r["share_error_pp"], 3),
              fmt(r["group_kib"], 1)] for r in builds]),
        f"Removing one of N equal targets, {a.tuples:,} flows\n" + table(
            ["size", "N", "theory %", "moved %", "extra %", "bound (1/N+2) %",
             "weight 0: moved %", "extra %", "weighted pick: moved %"],
            [[str(r["size"]), str(r["n"]), fmt(r["theory_pct"], 2), fmt(r["moved_pct"], 2),
              fmt(r["extra_pct"], 2), fmt(r["bound_pct"], 1), fmt(r["oor_moved_pct"], 2),
              fmt(r["oor_extra_pct"], 2), fmt(r["weighted_moved_pct"], 2)]
             for r in removals]),
        *sections,
    ])
    return emit(text, {"machine": m, "tuples": a.tuples, "builds": builds,
                       "removals": removals, "kernel": costs}, a.json)


if __name__ == "__main__":
    sys.exit(main())
