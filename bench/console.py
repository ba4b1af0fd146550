"""Console refresh cost at 10k, 100k and 1M connections in a real conntrack map.

    sudo .venv/bin/python -m bench.console [--sizes 10000,100000,1000000] [--refreshes 5]
                                           [--json out.json]

For each size a fresh conntrack map (LRU hash, sized so nothing is evicted while filling)
gets that many flows (a forward entry and a reply entry each, as the datapath writes them:
the console shows forward entries with the reply entry's counts joined in), spread over
three targets. Then, repeated ``--refreshes`` times
with every flow's counters grown in between, medians reported:

- map read: one batched read (BPF_MAP_LOOKUP_BATCH, fixed buffers) decoded into rows
  (``lbtui.console.data.conns.read_rows``); worker thread;
- collect: the whole snapshot (map read, per-target traffic deltas, routes, counters);
  worker thread;
- sort / filter: ordering the rows for the table (sort by bytes←) and a text filter;
  worker thread;
- UI handler: what the UI thread spends on one snapshot (``ConsoleApp.on_collected``:
  header, the virtual table taking the new rows, the other views);
- UI cycle: CPU time of the UI thread from posting the snapshot until it was handled and
  the screen repainted (headless, 160x50): everything the UI thread does per refresh.

Above 250,000 flows the console keeps a sample (the first 250,000 flows read, in hash
order) and says so in its title and header; the 1M row measures that mode. Goal: UI
thread <= 100 ms per refresh at 100k. Nothing is attached and no traffic is sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time

from bench.common import fmt, machine, machine_line, table
from lbtui import abi, bpfsys
from lbtui import maps as M
from lbtui.addr import ip_to_be, port_to_be
from lbtui.console.app import ConsoleApp
from lbtui.console.data import conns as C
from lbtui.console.data.collector import MAX_ROWS, Collector
from lbtui.console.data.snapshot import InstanceInfo
from lbtui.console.messages import Collected
from lbtui.maps import flowrows as R
from lbtui.targets import TargetGroup

TARGETS = [("198.18.101.2", 8080), ("198.18.102.2", 8080), ("198.18.103.2", 8080)]


def make_maps(flows: int) -> M.MapSet:
    # LRU hash maps evict before they are full (per-CPU free lists): leave headroom.
    return M.create_all_maps({"max_connections": int(flows * 2.5) + 4096})


def fill(ms: M.MapSet, flows: int, step: int) -> None:
    """``flows`` flows 198.18.(1+i//60000).(2+i%250):port -> VIP:80 -> one of three
    targets (5:3:2), each a forward entry and a reply entry as the datapath writes them
    (the reply entry counts the reply direction, the rows join it in); counters grow with
    ``step``."""
    fd = ms.conntrack_map.fd
    vip, vport = ip_to_be("198.18.0.10"), port_to_be(80)
    tgts = [(ip_to_be(ip), port_to_be(p)) for ip, p in TARGETS]
    now = time.monotonic_ns()
    k, rk = abi.CtKey(), abi.CtKey()
    v, rv = abi.CtValue(), abi.CtValue()
    rk.proto = abi.IPPROTO_TCP
    rv.orig_dst_ip, rv.orig_dst_port = vip, vport
    rv.flags = abi.CT_F_REPLY | abi.CT_F_SEEN_REPLY | abi.CT_F_STATS
    k.dst_ip, k.dst_port, k.proto = vip, vport, abi.IPPROTO_TCP
    v.orig_dst_ip, v.orig_dst_port = vip, vport
    v.flags = abi.CT_F_SEEN_REPLY | abi.CT_F_STATS
    for i in range(flows):
        k.src_ip = ip_to_be(f"198.18.{1 + i // 60000}.{2 + i % 250}")
        k.src_port = port_to_be(1024 + i % 60000)
        v.nat_dst_ip, v.nat_dst_port = tgts[0 if i % 10 < 5 else 1 if i % 10 < 8 else 2]
        v.created_ns = now - (i % 3600) * 1_000_000_000
        v.last_seen_ns = now
        g = step + 1
        v.packets_fwd, rv.packets_rev = 10 * g + i % 7, 8 * g
        v.bytes_fwd, rv.bytes_rev = 900 * g + i % 1000, 40_000 * g + i % 5000
        rk.src_ip, rk.src_port = v.nat_dst_ip, v.nat_dst_port
        rk.dst_ip, rk.dst_port = k.src_ip, k.src_port
        rv.nat_dst_ip, rv.nat_dst_port = v.nat_dst_ip, v.nat_dst_port
        rv.created_ns, rv.last_seen_ns = v.created_ns, now
        bpfsys.update(fd, rk, rv)
        bpfsys.update(fd, k, v)


def routes(ms: M.MapSet) -> None:
    M.add_listen_port_weighted(ms.listen_map, 2, 80, TargetGroup.of(
        [(ip, p, w) for (ip, p), w in zip(TARGETS, (50, 30, 20), strict=True)]))


def ms_of(f, *args) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = f(*args)
    return (time.perf_counter() - t0) * 1000, out


async def ui_times(col: Collector, ms: M.MapSet, flows: int, refreshes: int
                   ) -> tuple[list[float], list[float], int]:
    """(handler ms, cycle ms, rows shown) for ``refreshes`` snapshots handed to the app.
    The cycle is the CPU time of the thread running the app's event loop (this one, under
    run_test) from posting the snapshot until it was handled and the screen repainted:
    UI-thread work, without the time it spent waiting."""
    app = ConsoleApp(col, refresh_interval=None)
    cycles: list[float] = []
    async with app.run_test(size=(160, 50)) as pilot:
        while app.refreshes < 1:        # the app's own first snapshot
            await pilot.pause(0.05)
        app.ui_ms.clear()
        spec = C.ViewSpec("bytes←", True)
        app.conns_view.sort_by("bytes←", True)
        await pilot.pause(0.2)
        while app.conns_view.view is None or app.conns_view.view.spec != spec:
            await pilot.pause(0.05)
        for step in range(refreshes):
            fill(ms, flows, step + 1)
            snap = col.collect([])
            view = C.apply_view(snap.conns, spec)
            n = app.refreshes
            t0 = time.thread_time()
            app.post_message(Collected(snap, view))
            while app.refreshes == n:
                await pilot.pause(0)
            await pilot.pause(0.05)     # the repaint that follows (next frame)
            cycles.append((time.thread_time() - t0) * 1000)
        shown = len(app.conns_view.table.rows)
    return list(app.ui_ms), cycles, shown


def run(sizes: list[int], refreshes: int) -> list[dict[str, object]]:
    results = []
    for n in sizes:
        print(f"[console] {n:,} flows: filling the conntrack map", file=sys.stderr)
        ms = make_maps(n)
        try:
            routes(ms)
            fill(ms, n, 0)
            info = InstanceInfo(name="bench", interfaces=("c1",), xdp_mode="native",
                                started_wall=time.time(), ifnames={2: "c1"})
            col = Collector(ms, info)
            reader = R.open_reader(ms.conntrack_map)
            read, collect, sort, filt = [], [], [], []
            for step in range(refreshes):
                fill(ms, n, step + 1)
                t, dump = ms_of(R.read_rows, reader, MAX_ROWS)
                read.append(t)
                t, snap = ms_of(col.collect, [])
                collect.append(t)
                t, _ = ms_of(C.apply_view, snap.conns, C.ViewSpec("bytes←", True))
                sort.append(t)
                spec = C.ViewSpec("age", False, C.parse("198.18.1.7"))
                t, _ = ms_of(C.apply_view, snap.conns, spec)
                filt.append(t)
            print(f"[console] {n:,} flows: driving the app", file=sys.stderr)
            handler, cycle, shown = asyncio.run(ui_times(col, ms, n, refreshes))
            results.append({
                "flows": n, "total": dump.total, "rows": len(dump.rows),
                "sampled": dump.sampled, "shown": shown,
                "read_ms": statistics.median(read), "collect_ms": statistics.median(collect),
                "sort_ms": statistics.median(sort), "filter_ms": statistics.median(filt),
                "ui_handler_ms": statistics.median(handler),
                "ui_cycle_ms": statistics.median(cycle),
                "ui_handler_max_ms": max(handler), "ui_cycle_max_ms": max(cycle)})
        finally:
            M.close_all_maps(ms)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.console", description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="10000,100000,1000000",
                   help="flow counts, comma separated (default: %(default)s)")
    p.add_argument("--refreshes", type=int, default=5, help="refreshes per size")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    a = p.parse_args(argv)
    sizes = [int(s) for s in a.sizes.split(",") if s]
    m = machine()
    res = run(sizes, a.refreshes)
    print(f"\nConsole refresh cost (medians of {a.refreshes} refreshes; rows above "
          f"{MAX_ROWS:,} flows are a sample, marked *)")
    print(machine_line(m))
    rows = [[f"{r['flows']:,}", f"{r['rows']:,}{'*' if r['sampled'] else ''}",
             fmt(r["read_ms"], 1), fmt(r["collect_ms"], 1), fmt(r["sort_ms"], 1),
             fmt(r["filter_ms"], 1), fmt(r["ui_handler_ms"], 1),
             f"{fmt(r['ui_cycle_ms'], 1)} (max {fmt(r['ui_cycle_max_ms'], 1)})"]
            for r in res]
    print(table(["flows", "rows kept", "map read ms", "collect ms", "sort ms", "filter ms",
                 "UI handler ms", "UI cycle ms"], rows))
    print("map read, collect, sort and filter run on worker threads; the UI columns are "
          "the UI thread (goal: <= 100 ms at 100k).")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": m, "results": res}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
