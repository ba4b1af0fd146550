"""Failover of the cluster lab: one of N lbtui nodes stops under load.

    sudo .venv/bin/python -m bench.failover [--nodes 2,3] [--stop crash,drain] [--runs 3]
                                            [--rate 50] [--echo 60] [--json out.json]

Per node count and run, a fresh cluster lab (``lbtui lab up --nodes N``: a BIRD 2 router
with ECMP over N nodes, each running ``serve`` with the same Maglev config). Both clients
open new HTTP connections at ``--rate`` per second each (one at a time, 1 s timeout),
``--echo`` long-lived echo connections are open; then node1 is stopped (lbtui.lab.failover),
as a failure would stop it (``crash``: serve stops, the path is withdrawn after) or the
planned way (``drain``: the path is withdrawn first, serve stops a second later).
Reported per run: the time from the stop to the router's route losing node1, the new
connections that failed and when, and the long-lived connections that survived, split by
where they were (a surviving node, or node1: their packets reach a node without their
conntrack entry, which a Maglev group adopts).

Bounded: at most 3 nodes, 200 new connections/s per client, 200 echo connections, each
run about ``warmup + withdrawal + settle`` seconds. Everything stays in the lab's
namespaces (198.18.0.0/15, no route out), torn down after each run, also on failure.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bench.common import emit, fmt, machine, machine_line, table
from lbtui.lab import cluster as C
from lbtui.lab import failover as F

STOPS = ("crash", "drain")


def one_run(lab: str, nodes: int, stop: str, rate: float, echo: int) -> dict[str, object]:
    try:
        topo = C.up(lab, nodes)
        r = F.measure(topo, rate=rate, echo_conns=echo, drain=stop == "drain")
    finally:
        C.teardown(lab)
    window = r.failure_window
    return {"nodes": nodes, "stop": stop, "withdraw_s": r.withdraw_s, "new": len(r.attempts),
            "new_failed": len(r.failed), "errors": sorted({a.error for a in r.failed}),
            "fail_from_s": window[0] if window else None,
            "fail_to_s": window[1] if window else None,
            "echo": r.echo_total, "echo_stayed": r.echo_stayed,
            "echo_stayed_ok": r.echo_stayed_ok, "echo_moved": r.echo_moved,
            "echo_moved_ok": r.echo_moved_ok}


def pct(n: int, d: int) -> str:
    return f"{n}/{d} ({100 * n / d:.0f} %)" if d else "0/0"


def render(runs: list[dict]) -> str:
    rows = []
    for r in runs:
        window = ("-" if r["fail_from_s"] is None else
                  f"{fmt(r['fail_from_s'], 2)}..{fmt(r['fail_to_s'], 2)} s")
        rows.append([str(r["nodes"]), str(r["stop"]), f"{fmt(r['withdraw_s'], 2)} s",
                     f"{r['new_failed']}/{r['new']}", window,
                     pct(r["echo_stayed_ok"], r["echo_stayed"]),
                     pct(r["echo_moved_ok"], r["echo_moved"]),
                     pct(r["echo_stayed_ok"] + r["echo_moved_ok"], r["echo"])])
    return table(["nodes", "stop", "withdrawn after", "new failed", "failures (since stop)",
                  "long-lived on survivors kept", "on stopped node kept", "all kept"], rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", default="2,3", help="node counts, comma-separated (2..3)")
    ap.add_argument("--stop", default=",".join(STOPS),
                    help="how node1 stops, comma-separated: crash (serve stops, then the "
                    "path goes) and/or drain (the path goes, then serve stops)")
    ap.add_argument("--runs", type=int, default=3, help="runs per node count (1..10)")
    ap.add_argument("--rate", type=float, default=50.0,
                    help=f"new connections per second per client (..{F.MAX_RATE:g})")
    ap.add_argument("--echo", type=int, default=60,
                    help=f"long-lived echo connections (..{F.MAX_ECHO})")
    ap.add_argument("--lab", default=f"bfo{os.getpid() % 100000}", help="lab name")
    ap.add_argument("--json", type=Path, help="write the raw results here")
    a = ap.parse_args(argv)
    try:
        counts = [int(x) for x in a.nodes.split(",")]
    except ValueError:
        ap.error("--nodes: comma-separated numbers, e.g. 2,3")
    stops = a.stop.split(",")
    if not stops or not set(stops) <= set(STOPS):
        ap.error(f"--stop: some of {','.join(STOPS)}")
    if not all(2 <= n <= C.MAX_NODES for n in counts) or not 1 <= a.runs <= 10:
        ap.error(f"--nodes in 2..{C.MAX_NODES}, --runs in 1..10")
    if os.geteuid() != 0:
        print("bench.failover builds namespace labs and loads BPF: run it with sudo",
              file=sys.stderr)
        return 2
    m = machine()
    runs = []
    for n in counts:
        for stop in stops:
            for i in range(a.runs):
                print(f"  {n} nodes, {stop}, run {i + 1}/{a.runs}", file=sys.stderr,
                      flush=True)
                runs.append(one_run(a.lab, n, stop, a.rate, a.echo))
    text = (f"{machine_line(m)}\nnode1 stopped under load: {a.rate:g} new "
            f"connections/s per client (2 clients), {a.echo} long-lived echo connections\n"
            + render(runs))
    return emit(text, {"machine": m, "rate": a.rate, "echo": a.echo, "runs": runs}, a.json)


if __name__ == "__main__":
    sys.exit(main())
