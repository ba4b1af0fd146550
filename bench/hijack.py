"""Direct client->backend connections through the LB host: without lbtui, and with lbtui
after balanced load from the same client (issue: balanced flows must never hijack others).

    sudo .venv/bin/python -m bench.hijack [--shape veth] [--mode auto] [--load-seconds 30]
        [--direct-seconds 5] [--quick] [--json out.json]

One shape (``tests/topologies/shapes.py``: endpoints with kernel defaults), HAProxy HTTP
answerers in the backends (``bench.servers``). client1 opens new connections (wrk,
``Connection: close``) straight to backend1:8080 for ``--direct-seconds``, in three phases
(the balanced load is paced, ``--load-rate``):

1. no load balancer: the rate to beat;
2. nftables DNAT: ``--load-seconds`` of balanced load from client1 to VIP:80 first, then
   the direct run with the DNAT still loaded (kernel NAT, for reference);
3. lbtui: ``lbtui serve`` in ``--mode``, the same balanced load, then the direct run.

The kernel picks the direct connections' client ports, so they reuse the ports of balanced
flows that just ended, towards the same backend: a load balancer that keeps translating
packets of finished flows turns the backend's answers into packets from the VIP that the
new connection never sees (its SYN then waits out a 1 s retransmission timeout).

Even a perfect load balancer costs something here: the backend closed the balanced
connections, so it holds their 4-tuples in TIME_WAIT, and the client's new SYN on the same
4-tuple carries a timestamp and sequence number drawn for another destination (the VIP). A
SYN the backend does not take as newer gets an ACK, the client resets the TIME_WAIT and
resends its SYN a few milliseconds later (counted as a retransmitted SYN). Any load
balancer that keeps the client's address and port (nftables DNAT too) pays that; phase 2
measures it. So the table shows each phase's direct rate against phase 1 (the issue's goal:
>= 95%) and against phase 2 (what lbtui itself adds, if anything).
Bounded: every run has a fixed duration; all of it in the shape's namespaces, torn down at
the end (also on failure or Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import load
from bench.common import emit, fmt, machine, machine_line, table
from bench.compare import start_backends
from bench.contenders import HTTP_PORT, HTTP_VIP_PORT, Nftables, ServedLbtui, workdir
from tests.topologies import probes, shapes

GOAL = 0.95
CONNECTIONS = 16          # wrk connections (one thread) per run


@dataclass
class Settings:
    shape: str = "veth"
    mode: str = "auto"
    load_seconds: int = 30
    load_rate: int = 3000          # balanced connections/s (paced)
    direct_seconds: int = 5
    tag: str = "hj"


QUICK = {"load_seconds": 3, "direct_seconds": 1}


@dataclass
class Phase:
    name: str
    balanced_rate: float | None    # conns/s of the balanced load before the direct run
    balanced_errors: int | None
    direct_rate: float
    direct_errors: int
    syn_retransmits: int


def _log(msg: str) -> None:
    print(f"[hijack] {msg}", file=sys.stderr, flush=True)


def _wrk(topo: object, node: str, url: str, seconds: int, what: str,
         progress: Callable[[str], None], rate: int | None = None) -> load.WrkResult:
    """One wrk run (paced to about ``rate`` connections/s if given), with a progress line
    every 10 s of a long one."""
    done = threading.Event()

    def tick() -> None:
        start = time.monotonic()
        while not done.wait(10):
            progress(f"  {what}: {time.monotonic() - start:.0f}/{seconds} s")

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        delay_ms = 1000 * CONNECTIONS / rate if rate else 0
        return load.wrk(topo, [node], url, seconds, CONNECTIONS,  # type: ignore[arg-type]
                        delay_ms)
    finally:
        done.set()
        ticker.join()


def run_phase(shape: shapes.Shape, name: str, s: Settings, balanced: bool,
              progress: Callable[[str], None]) -> Phase:
    """Optionally the balanced load to VIP:80, then the direct run to backend1."""
    topo = shape.topo
    client = topo.clients[0]
    bal = None
    if balanced:
        progress(f"{name}: balanced load from {client.node} to VIP:80 for "
                 f"{s.load_seconds} s, about {s.load_rate} connections/s")
        bal = _wrk(topo, client.node, f"http://{topo.vip}:{HTTP_VIP_PORT}/", s.load_seconds,
                   "balanced load", progress, s.load_rate)
    target = topo.backends[0]
    progress(f"{name}: direct connections {client.node} -> {target.node}:{HTTP_PORT} for "
             f"{s.direct_seconds} s")
    before = probes.tcp_counters(client.ns)
    direct = _wrk(topo, client.node, f"http://{target.ip}:{HTTP_PORT}/", s.direct_seconds,
                  "direct", progress)
    resent = probes.counters_delta(client.ns, before)["TcpExtTCPSynRetrans"]
    progress(f"{name}: {direct.rate:,.0f} direct connections/s, {resent} SYNs retransmitted")
    return Phase(name, bal.rate if bal else None, bal.errors if bal else None, direct.rate,
                 direct.errors, resent)


def run(s: Settings, progress: Callable[[str], None] = _log) -> dict:
    if os.geteuid() != 0:
        raise SystemExit("the benchmark builds network namespaces and loads BPF: run as root")
    missing = [t for t in ("wrk", "haproxy", "nft") if not shutil.which(t)]
    if missing:
        raise SystemExit(f"missing tools: {', '.join(missing)} (scripts/setup.sh installs "
                         "them)")
    wd = workdir()
    os.environ.setdefault("LBTUI_STATE_DIR", str(wd / "state"))
    started = time.monotonic()
    info = machine()
    phases: list[Phase] = []
    try:
        with shapes.built(s.shape, s.tag, progress) as shape:
            # Every phase as serve runs: a one-arm LB host that sends ICMP redirects teaches
            # client1 to bypass it, and the balanced phases would measure nothing.
            shapes.no_icmp_redirects(shape.topo.lb_ns)
            progress("starting backend servers")
            start_backends(shape.topo, wd)
            phases.append(run_phase(shape, "no load balancer", s, False, progress))
            nft = Nftables(shape.topo, wd)
            nft.start()
            try:
                phases.append(run_phase(shape, "nftables DNAT", s, True, progress))
            finally:
                nft.stop()
            lbtui = ServedLbtui(shape, wd, s.mode)
            progress(f"starting lbtui serve (xdp_mode {s.mode})")
            lbtui.start()
            try:
                phases.append(run_phase(shape, f"lbtui ({s.mode})", s, True, progress))
            finally:
                lbtui.stop()
    finally:
        shutil.rmtree(wd, ignore_errors=True)
    return {"settings": asdict(s), "machine": info, "phases": [asdict(p) for p in phases],
            "elapsed_s": time.monotonic() - started}


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"


def _goal(what: str, mine: Phase, base: Phase) -> str:
    ratio = mine.direct_rate / base.direct_rate if base.direct_rate else 0.0
    return (f"goal: direct conns/s with {mine.name} >= {GOAL:.0%} of {what}".ljust(78)
            + f"{ratio:>5.0%}  {'met' if ratio >= GOAL else 'NOT met'}")


def render(res: dict) -> str:
    s, phases = res["settings"], [Phase(**p) for p in res["phases"]]
    none, nft, mine = phases
    rows = [[p.name, fmt(p.balanced_rate), fmt(p.balanced_errors), fmt(p.direct_rate),
             fmt(p.direct_errors), fmt(p.syn_retransmits),
             _ratio(p.direct_rate, none.direct_rate), _ratio(p.direct_rate, nft.direct_rate)]
            for p in phases]
    lines = [machine_line(res["machine"]),
             f"shape {s['shape']}, {s['load_seconds']} s of balanced load paced at "
             f"{s['load_rate']}/s, {s['direct_seconds']} s direct runs, wrk 1 thread x "
             f"{CONNECTIONS} connections; run took {res['elapsed_s']:.0f}s", "",
             table(["phase", "balanced conns/s", "errors", "direct conns/s", "errors",
                    "SYN retransmits", "vs no LB", "vs nftables"], rows), "",
             _goal("no load balancer", mine, none),
             _goal("nftables DNAT after the same load", mine, nft)]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="veth", choices=list(shapes.SHAPES))
    ap.add_argument("--mode", default="auto", choices=list(shapes.ALL_MODES),
                    help="lbtui's xdp_mode (default auto)")
    ap.add_argument("--load-seconds", type=int, help="balanced load before the direct run "
                    "(1..120, default 30)")
    ap.add_argument("--load-rate", type=int, help="balanced connections/s (100..10000, "
                    "default 3000; the clients keep the default port range, which a faster "
                    "load fills with TIME_WAIT sockets within a minute)")
    ap.add_argument("--direct-seconds", type=int, help="each direct run (1..30, default 5)")
    ap.add_argument("--quick", action="store_true", help="3 s of load, 1 s runs (smoke)")
    ap.add_argument("--tag", default="hj", help="namespace prefix (lbt-<tag><shape>-*)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    a = ap.parse_args(argv)
    s = Settings(shape=a.shape, mode=a.mode, tag=a.tag)
    if a.quick:
        s = Settings(**{**asdict(s), **QUICK})
    if a.load_seconds is not None:
        if not 1 <= a.load_seconds <= 120:
            ap.error("--load-seconds must be 1..120")
        s.load_seconds = a.load_seconds
    if a.load_rate is not None:
        if not 100 <= a.load_rate <= 10000:
            ap.error("--load-rate must be 100..10000")
        s.load_rate = a.load_rate
    if a.direct_seconds is not None:
        if not 1 <= a.direct_seconds <= 30:
            ap.error("--direct-seconds must be 1..30")
        s.direct_seconds = a.direct_seconds
    if s.mode not in shapes.SHAPES[s.shape].modes:
        ap.error(f"--mode {s.mode} is impossible on shape {s.shape} (possible: "
                 f"{', '.join(shapes.SHAPES[s.shape].modes)})")
    try:
        shapes.lab_name(s.shape, s.tag)
    except ValueError as e:
        ap.error(f"--tag: {e}")
    return s, a


def main(argv: list[str] | None = None) -> int:
    s, a = parse_args(argv)
    res = run(s)
    return emit(render(res), res, a.json)


if __name__ == "__main__":
    sys.exit(main())
