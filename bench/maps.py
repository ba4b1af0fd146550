"""Map-layer speed: reading a full conntrack table, and route updates per second.

    sudo .venv/bin/python -m bench.maps [--entries 100000] [--quick] [--json out.json]

Conntrack: a fresh conntrack map (sized so the LRU never evicts while it is filled) gets
``--entries`` entries, as the datapath writes them (forward + reply entry per flow), then
is read three ways, each repeated and the median taken:

- batched: ``BPF_MAP_LOOKUP_BATCH`` into fixed 4,096-entry buffers
  (``lbtui.maps.conntrack_reader``), no decoding: the kernel-crossing cost alone;
- ``list_connections``: the same batches decoded into ``Connection`` records (what the
  console and ``ctl`` pay for a full snapshot);
- per-key: ``get_next_key`` + ``lookup`` per entry, no decoding (the way BCC's
  ``Table.items()`` walks a map).

Routes: listen-entry weight edits (same key rewritten, what a console weight change
does), source-route inserts and deletes (distinct /32 prefixes into the LPM trie), and
SNI route adds (with the hostname sidecar file a running instance keeps). All maps are created by
this run and closed at the end; nothing is attached, no traffic is sent.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import emit, fmt, machine, machine_line, table
from lbtui import abi, bpfsys
from lbtui import maps as M
from lbtui.addr import ip_to_be, port_to_be
from lbtui.targets import TargetGroup


def fill_conntrack(m: M.BpfMap, entries: int) -> None:
    """``entries`` entries: flows 198.19.x.y:port -> VIP:80 -> 198.18.101.2:8080 and their
    reply entries, as the datapath writes them."""
    vip, vport = ip_to_be("198.18.0.10"), port_to_be(80)
    backend, bport = ip_to_be("198.18.101.2"), port_to_be(8080)
    now = time.monotonic_ns()
    v = abi.CtValue()
    v.orig_dst_ip, v.orig_dst_port, v.nat_dst_ip, v.nat_dst_port = vip, vport, backend, bport
    v.created_ns = v.last_seen_ns = now
    for i in range(entries // 2):
        client = ip_to_be(f"198.19.{(i >> 8) & 0xFF}.{i & 0xFF}")
        cport = port_to_be(1024 + (i >> 16))
        v.flags = abi.CT_F_SEEN_REPLY
        bpfsys.update(m.fd, abi.CtKey(client, vip, cport, vport, abi.IPPROTO_TCP), v)
        v.flags = abi.CT_F_SEEN_REPLY | abi.CT_F_REPLY
        bpfsys.update(m.fd, abi.CtKey(backend, client, bport, cport, abi.IPPROTO_TCP), v)


def _timed(fn: Callable[[], int], repeats: int) -> tuple[float, int]:
    """Median seconds of ``repeats`` calls, and what the last call returned."""
    times, got = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        got = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), got


def bench_conntrack(entries: int, repeats: int) -> list[dict]:
    m = M.create_conntrack_map(max(entries * 2, 1024))
    try:
        fill_conntrack(m, entries)
        reader = M.conntrack_reader(m)

        def batched() -> int:
            return sum(n for _k, _v, n in reader.chunks())

        def listed() -> int:
            return len(M.list_connections(m, reader=reader))

        def per_key() -> int:
            n = 0
            for k in bpfsys.keys(m.fd, abi.CtKey):
                if bpfsys.lookup(m.fd, k, abi.CtValue) is not None:
                    n += 1
            return n

        out = []
        for name, fn, expect, reps in (
                ("batched (BPF_MAP_LOOKUP_BATCH, 4096/chunk)", batched, entries, repeats),
                ("list_connections (batched + decode)", listed, entries // 2, repeats),
                ("per-key (get_next_key + lookup)", per_key, entries, max(1, repeats // 2))):
            secs, got = _timed(fn, reps)
            if got != expect:
                raise RuntimeError(f"{name}: read {got} records, expected {expect}")
            out.append({"method": name, "seconds": secs, "records": got,
                        "entries_per_s": entries / secs})
        return out
    finally:
        m.close()


def bench_routes(count: int, sni_count: int) -> list[dict]:
    out = []
    groups = [TargetGroup.of([("198.18.101.2", 8080, w), ("198.18.102.2", 8080, 100 - w)])
              for w in (10, 50, 90)]

    def record(op: str, n: int, secs: float) -> None:
        out.append({"operation": op, "count": n, "seconds": secs, "ops_per_s": n / secs})

    listen = M.create_listen_map()
    try:
        t0 = time.perf_counter()
        for i in range(count):
            M.add_listen_port_weighted(listen, 2, 80, groups[i % 3])
        record("listen entry weight edit", count, time.perf_counter() - t0)
    finally:
        listen.close()

    lpm = M.create_config_map(max_routes=count)
    try:
        cidrs = [f"198.{18 + (i >> 16)}.{(i >> 8) & 0xFF}.{i & 0xFF}/32" for i in range(count)]
        t0 = time.perf_counter()
        for i, c in enumerate(cidrs):
            M.add_source_route_weighted(lpm, c, groups[i % 3])
        record("source route insert (LPM /32)", count, time.perf_counter() - t0)
        t0 = time.perf_counter()
        for c in cidrs:
            M.remove_source_route(lpm, c)
        record("source route delete (LPM /32)", count, time.perf_counter() - t0)
    finally:
        lpm.close()

    state = Path(tempfile.mkdtemp(prefix="lbtui-bench-maps-"))
    sni = M.create_sni_map(max_sni_routes=sni_count)
    try:
        # a running instance keeps hostnames in a sidecar file, rewritten on every add
        sni.sni_names = M.SniNames(state / "sni-names.json")
        t0 = time.perf_counter()
        for i in range(sni_count):
            M.add_sni_route(sni, f"host{i}.bench.example", groups[i % 3])
        record("SNI route add (with hostname file)", sni_count, time.perf_counter() - t0)
    finally:
        sni.close()
        shutil.rmtree(state, ignore_errors=True)
    return out


QUICK = {"entries": 10_000, "repeats": 2, "routes": 2_000}
DEFAULT = {"entries": 100_000, "repeats": 5, "routes": 10_000}


def run(entries: int, repeats: int, routes: int) -> dict:
    """Every measurement; raw results as a JSON-able dict."""
    entries -= entries % 2  # forward + reply pairs
    t0 = time.perf_counter()
    res = {"machine": machine(), "entries": entries, "repeats": repeats,
           "conntrack": bench_conntrack(entries, repeats),
           "routes": bench_routes(routes, min(1000, routes))}
    res["elapsed_s"] = time.perf_counter() - t0
    return res


def render(res: dict) -> str:
    ct_rows = []
    per_key = next(r for r in res["conntrack"] if r["method"].startswith("per-key"))
    for r in res["conntrack"]:
        ct_rows.append([r["method"], fmt(r["seconds"] * 1000, 1), fmt(r["entries_per_s"]),
                        f"{per_key['seconds'] / r['seconds']:.1f}x"])
    rt_rows = [[r["operation"], fmt(r["count"]), fmt(r["ops_per_s"]),
                fmt(r["seconds"] / r["count"] * 1e6, 1)] for r in res["routes"]]
    return "\n".join([
        machine_line(res["machine"]), "",
        f"conntrack read, {res['entries']:,} entries (median of {res['repeats']})",
        table(["method", "ms", "entries/s", "speed-up vs per-key"], ct_rows), "",
        "route updates",
        table(["operation", "count", "ops/s", "us/op"], rt_rows),
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, help="conntrack entries (default 100000)")
    ap.add_argument("--repeats", type=int, help="reads per method (default 5)")
    ap.add_argument("--routes", type=int, help="route updates per operation (default 10000)")
    ap.add_argument("--quick", action="store_true", help="10k entries, 2 repeats, 2k routes")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    preset = QUICK if a.quick else DEFAULT
    entries = a.entries or preset["entries"]
    repeats = a.repeats or preset["repeats"]
    routes = a.routes or preset["routes"]
    if not 2 <= entries <= 1_000_000 or not 1 <= repeats <= 50 or not 1 <= routes <= 100_000:
        ap.error("--entries 2..1000000, --repeats 1..50, --routes 1..100000")
    if os.geteuid() != 0:
        ap.error("creating BPF maps needs root")
    res = run(entries, repeats, routes)
    res["command"] = " ".join(["python -m bench.maps", *(sys.argv[1:] if argv is None else argv)])
    return emit(render(res), res, a.json)


if __name__ == "__main__":
    sys.exit(main())
