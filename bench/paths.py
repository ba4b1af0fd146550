"""Which path each operator-shaped network gets (XDP redirect or the kernel stack), and what
it costs against no load balancer.

    sudo .venv/bin/python -m bench.paths [--shapes veth,bridge] [--modes native,auto]
        [--senders offload,full] [--connections 200] [--udp 100] [--rounds 5] [--rate-seconds 1]
        [--no-events] [--quick] [--json out.json]

Every shape of ``tests/topologies/shapes.py`` (endpoints with the kernel's defaults, no XDP
on the far ends) in every XDP mode it allows, with two kinds of senders: ``offload``, the
endpoints as built (tx checksum offload on: their TCP and UDP packets carry
CHECKSUM_PARTIAL, as packets from local containers do), and ``full``, tx checksum offload
off at every endpoint (full checksums, as packets arriving from a physical NIC have). Each
shape is built once, with HAProxy HTTP answerers (``bench.servers``) on 8080 and the lab's
UDP answerer on 9001 in every backend. Per cell (shape x senders x mode):

1. ``lbtui serve`` in the mode, fresh (every counter starts at zero), listeners
   VIP:80/tcp -> the backends' 8080 and VIP:9000/udp -> their 9001 (weights 25 each), and
   VIP:81/tcp -> backend1:8080 alone;
2. a bounded burst: ``--connections`` curl connections from each client to VIP:80 and
   ``--udp`` datagrams from each client to VIP:9000 (each a new flow, each answered);
3. ``lbtui ctl status --json`` and ``lbtui ctl connections list --json``: the XDP mode
   each interface runs in (what ``auto`` chose), the egress interfaces XDP may redirect
   into, the packets of the burst's flows (forward and reply), and the packets lbtui
   handed to the stack, by reason;
4. the rate: wrk (``Connection: close``, so every request is a new connection) from both
   clients through VIP:81 for ``--rate-seconds``; then serve stops and the same wrk runs
   straight to backend1:8080 (routed by the LB namespace's kernel, no NAT, no XDP).
   ``--rounds`` times, each with a fresh serve (the burst only in the first), after one
   direct run before the first cell: each round's ratio is lbtui's rate over the mean of
   the direct runs on either side. Both load the same one server: through VIP:80 four
   HAProxy processes would share the 2 CPUs instead of one, which costs more than the path.

"redirect" is the flows' packets minus those handed to the stack after translation (the
reasons fib_miss, no_neigh, mtu, egress_not_xdp, vlan, ttl, ip_options, csum_partial):
what XDP forwarded itself. "kernel fwd" is the LB namespace's own count of packets its IP
stack forwarded during the burst (IpForwDatagrams), an independent check of "stack".
"serve CPU" is the serve process's CPU time during the rate run: connection events (on by
default, ``--no-events`` turns them off) are read and accounted there, in Python.

Hygiene: the LB namespace sends no ICMP redirects (``send_redirects = 0`` everywhere, as
serve sets it on its interfaces; otherwise one-arm direct traffic would be taught to bypass
the LB host); the backends keep no TIME_WAIT sockets (``tcp_max_tw_buckets = 0``), so a
run's connections never meet the 4-tuples the previous run left behind (``bench.hijack``
measures that effect). Bounded: fixed counts, wrk ``-d``, curl and UDP time-outs; all of
it in the shapes' namespaces (198.18.0.0/15, no route out), torn down at the end, also on
failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import load
from bench.common import emit, fmt, machine, machine_line, median, table
from bench.compare import start_backends
from bench.contenders import HTTP_PORT, HTTP_VIP_PORT, workdir
from bench.cpu import task_runtime_ns
from lbtui.lab import topology as T
from tests.topologies import probes, shapes
from tests.topologies.serving import LBTUI, Served, serving

UDP_VIP_PORT = 9000
RATE_VIP_PORT = 81               # the rate run's listener: backend1 alone, as direct
UDP_PORT = 9001                  # the lab's UDP answerer (bench.servers' sink holds 9000)
SPARE_HTTP, SPARE_ECHO = 8090, 7001   # the lab servers' other ports, unused here
WRK_CONNECTIONS = 32             # per client namespace, as bench.compare
# Reasons for packets of balanced flows that were translated, then forwarded by the stack.
TRANSLATED = ("fib_miss", "no_neigh", "mtu", "egress_not_xdp", "vlan", "ttl", "ip_options",
              "csum_partial")
SENDERS = ("offload", "full")
# Shapes whose endpoints already send full checksums with "full" (tx offload off at the
# endpoints), or become another shape: "gro" with tx off is "redirect".
FULL_SKIPPED = {"redirect": "its endpoints already send full checksums",
                "gro": "with full checksums it is the redirect shape"}
COLUMNS = ["shape", "senders", "mode", "XDP runs as", "redirect into", "flow pkts",
           "redirect", "stack", "kernel fwd", "stack reasons (top 3)", "direct conns/s",
           "lbtui conns/s", "vs direct", "serve CPU"]


@dataclass
class Settings:
    shapes: list[str] = field(default_factory=lambda: list(shapes.SHAPES))
    modes: list[str] = field(default_factory=lambda: list(shapes.ALL_MODES))
    senders: list[str] = field(default_factory=lambda: list(SENDERS))
    connections: int = 200       # curl connections per client in the burst
    udp: int = 100               # UDP flows per client in the burst
    rate_seconds: int = 1        # each wrk run
    rounds: int = 5              # of lbtui's rate and direct's, alternating
    events: bool = True          # [settings] stats: connection events (the default)
    tag: str = "pb"


QUICK = {"connections": 40, "udp": 20, "rate_seconds": 1, "rounds": 1}


def _log(msg: str) -> None:
    print(f"[paths] {msg}", file=sys.stderr, flush=True)


def listeners_toml(topo: T.Topology) -> str:
    """VIP:80/tcp and VIP:9000/udp over every backend (25 each) for the burst; VIP:81/tcp
    to backend1 alone for the rate run, so that it and direct load the same one server."""
    def group(port: int) -> str:
        return ", ".join(f'{{ ip = "{b.ip}", port = {port}, weight = 25 }}'
                         for b in topo.backends)

    one = f'{{ ip = "{topo.backends[0].ip}", port = {HTTP_PORT} }}'
    return (f'[[listener]]\nport = {HTTP_VIP_PORT}\nprotocol = "tcp"\n'
            f"targets = [{group(HTTP_PORT)}]\n\n"
            f'[[listener]]\nport = {UDP_VIP_PORT}\nprotocol = "udp"\n'
            f"targets = [{group(UDP_PORT)}]\n\n"
            f'[[listener]]\nport = {RATE_VIP_PORT}\nprotocol = "tcp"\ntargets = [{one}]\n')


def write_config(shape: shapes.Shape, directory: Path, instance: str, mode: str,
                 events: bool) -> Path:
    """A config for ``mode`` whose sweep never runs during a cell: every flow of the burst
    is still in the conntrack map, with its packet counts, when they are read."""
    path = directory / f"{instance}.toml"
    path.write_text(f"{shape.datapath_toml(instance, mode)}\n[settings]\n"
                    f"sweep_interval = 3600.0\nstats = {str(events).lower()}\n\n"
                    f"{listeners_toml(shape.topo)}")
    return path


def prepare(shape: shapes.Shape) -> None:
    """No ICMP redirects from the LB namespace (the kernel ORs ``all`` with each
    interface's setting), no TIME_WAIT in the backends (see the module docstring)."""
    shapes.no_icmp_redirects(shape.topo.lb_ns)
    for b in shape.topo.backends:
        shapes.sysctl(b.ns, "net.ipv4.tcp_max_tw_buckets", "0")


def set_senders(shape: shapes.Shape, senders: str) -> None:
    """``full``: transmit checksum offload off at every endpoint, so their packets reach
    the LB with full checksums, as packets from a physical NIC do. ``offload``: as built."""
    if senders == "full":
        for e in shape.topo.clients + shape.topo.backends:
            shapes.ethtool(e.ns, "eth0", "tx", "off")


def connections(instance: str) -> list[dict[str, Any]]:
    """``lbtui ctl connections list --json`` of the instance (the envelope's data)."""
    r = subprocess.run([*LBTUI, "ctl", "--instance", instance, "--json", "connections",
                        "list"], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"lbtui ctl connections failed ({r.returncode}): {r.stderr}")
    return json.loads(r.stdout)["data"]


@dataclass
class Burst:
    tcp_ok: int
    tcp_failed: int
    udp_ok: int
    udp_lost: int
    kernel_fwd: int              # IpForwDatagrams of the LB namespace during the burst


def burst(topo: T.Topology, s: Settings) -> Burst:
    """``s.connections`` HTTP connections and ``s.udp`` UDP flows from each client."""
    fwd = load.snmp(topo.lb_ns, "Ip")["ForwDatagrams"]
    url = f"http://{topo.vip}:{HTTP_VIP_PORT}/"
    runs = probes.curl_many({c.ns: probes.curl_argv(c.ns, [url] * s.connections)
                             for c in topo.clients})
    ok = sum(len(r.answers) for r in runs.values())
    udp_ok = udp_lost = 0
    for c in topo.clients:
        u = probes.udp_exchanges(c.ns, topo.vip, UDP_VIP_PORT, s.udp)
        udp_ok += sum(u.answers.values())
        udp_lost += s.udp - sum(u.answers.values()) + len(u.wrong_source)
    time.sleep(0.3)   # the last FINs and ACKs through the LB
    kernel = load.snmp(topo.lb_ns, "Ip")["ForwDatagrams"] - fwd
    return Burst(ok, s.connections * len(topo.clients) - ok, udp_ok, udp_lost, kernel)


@dataclass
class Cell:
    shape: str
    senders: str
    mode: str
    xdp: dict[str, str | None]            # interface -> the mode XDP runs in
    egress: dict[str, bool]               # interface -> XDP may redirect into it
    flows: int
    flow_packets: int
    reasons: dict[str, int]               # summed over the interfaces
    burst: dict[str, int]
    direct_rates: list[float] = field(default_factory=list)   # before, after each round
    lbtui_rates: list[float] = field(default_factory=list)    # one per round
    serve_cpu: list[float] = field(default_factory=list)      # CPU s per s, per round
    wrk_errors: int = 0

    @property
    def ratios(self) -> list[float]:
        """lbtui's rate in each round over the mean of the direct runs either side."""
        d = self.direct_rates
        return [x / ((d[i] + d[i + 1]) / 2) for i, x in enumerate(self.lbtui_rates)
                if i + 1 < len(d) and d[i] + d[i + 1] > 0]

    @property
    def stack(self) -> int:
        return sum(self.reasons.get(r, 0) for r in TRANSLATED)

    @property
    def redirect(self) -> int:
        return max(self.flow_packets - self.stack, 0)


def summarize_reasons(status: dict) -> dict[str, int]:
    total: Counter[str] = Counter()
    for i in status["interfaces"]:
        total.update(i.get("reasons", {}))
    return dict(total)


def wrk_rate(topo: T.Topology, url: str, s: Settings) -> load.WrkResult:
    return load.wrk(topo, [c.node for c in topo.clients], url, s.rate_seconds,
                    WRK_CONNECTIONS)


def observe(served: Served, shape: shapes.Shape, senders: str, mode: str,
            s: Settings) -> Cell:
    """The burst, and what status and the flows say about it."""
    b = burst(shape.topo, s)
    status = served.status()
    conns = connections(served.instance)
    return Cell(shape.name, senders, mode,
                xdp={i["ifname"]: i["xdp_mode"] for i in status["interfaces"]},
                egress={e["ifname"]: e["redirect"] for e in status["egress"]},
                flows=len(conns),
                flow_packets=sum(c["packets_fwd"] + c["packets_rev"] for c in conns),
                reasons=summarize_reasons(status), burst=asdict(b))


def run_cell(shape: shapes.Shape, senders: str, mode: str, s: Settings, wd: Path,
             direct: load.WrkResult) -> tuple[Cell, load.WrkResult]:
    """``s.rounds`` rounds of a fresh serve in ``mode`` (the first also runs the burst)
    and its rate through lbtui, each followed by a direct run (``direct``: the run before
    the first). Returns the cell and the last direct run."""
    topo = shape.topo
    instance = f"{shape.lab}-{mode}"
    config = write_config(shape, wd, instance, mode, s.events)
    cell: Cell | None = None
    rates, cpus, directs, errors = [], [], [direct.rate], direct.errors
    for _ in range(s.rounds):
        with serving(config, instance) as served:
            cell = cell or observe(served, shape, senders, mode, s)
            cpu = task_runtime_ns(served.proc.pid)
            mine = wrk_rate(topo, f"http://{topo.vip}:{RATE_VIP_PORT}/", s)
            cpu = task_runtime_ns(served.proc.pid) - cpu
        direct = wrk_rate(topo, f"http://{topo.backends[0].ip}:{HTTP_PORT}/", s)
        rates.append(mine.rate)
        cpus.append(cpu / 1e9 / mine.seconds if mine.seconds else 0.0)
        directs.append(direct.rate)
        errors += mine.errors + direct.errors
    assert cell is not None
    cell.lbtui_rates, cell.serve_cpu, cell.direct_rates = rates, cpus, directs
    cell.wrk_errors = errors
    return cell, direct


def run_senders(shape: shapes.Shape, senders: str, modes: list[str], s: Settings, wd: Path,
                progress: Callable[[str], None]) -> list[Cell]:
    """Every mode's cell; direct runs alternate with lbtui's, so the same drift hits
    both."""
    set_senders(shape, senders)
    direct = wrk_rate(shape.topo, f"http://{shape.topo.backends[0].ip}:{HTTP_PORT}/", s)
    cells = []
    for mode in modes:
        what = f"{shape.name}/{senders}/{mode}"
        progress(f"{what}: {s.rounds} round(s) of lbtui serve and direct")
        cell, direct = run_cell(shape, senders, mode, s, wd, direct)
        progress(f"{what}: {cell.redirect} redirected, {cell.stack} to the stack; "
                 f"lbtui/direct {', '.join(f'{100 * r:.0f}%' for r in cell.ratios)}")
        cells.append(cell)
    return cells


def planned(s: Settings) -> list[tuple[str, str, list[str]]]:
    """(shape, senders, modes) to run, in order."""
    out = []
    for name in s.shapes:
        modes = [m for m in s.modes if m in shapes.SHAPES[name].modes]
        out += [(name, x, modes) for x in s.senders
                if modes and not (x == "full" and name in FULL_SKIPPED)]
    return out


def run(s: Settings, progress: Callable[[str], None] = _log) -> dict:
    if os.geteuid() != 0:
        raise SystemExit("the benchmark builds network namespaces and loads BPF: run as root")
    missing = [t for t in ("wrk", "haproxy", "curl", "ethtool") if not shutil.which(t)]
    if missing:
        raise SystemExit(f"missing tools: {', '.join(missing)} (scripts/setup.sh installs "
                         "them)")
    wd = workdir()
    os.environ.setdefault("LBTUI_STATE_DIR", str(wd / "state"))
    started = time.monotonic()
    info = machine()
    cells: list[Cell] = []
    plan = planned(s)
    skipped = [f"{n} with full checksums: {why}" for n, why in FULL_SKIPPED.items()
               if n in s.shapes and "full" in s.senders]
    try:
        for name in dict.fromkeys(n for n, _, _ in plan):
            with shapes.built(name, s.tag, progress) as shape:
                progress("starting backend servers")
                start_backends(shape.topo, wd)
                T.start_backend_servers(shape.topo, http=SPARE_HTTP, echo=SPARE_ECHO,
                                        udp=UDP_PORT)
                prepare(shape)
                # in SENDERS order: "full" changes the endpoints for good
                for _, senders, modes in (p for p in plan if p[0] == name):
                    cells += run_senders(shape, senders, modes, s, wd, progress)
    finally:
        shutil.rmtree(wd, ignore_errors=True)
    return {"settings": asdict(s), "machine": info, "cells": [asdict(c) for c in cells],
            "skipped": skipped, "elapsed_s": time.monotonic() - started,
            "command": " ".join(["python -m bench.paths", *sys.argv[1:]])}


def xdp_summary(xdp: dict[str, str | None]) -> str:
    """"native", or "generic", or per interface where the modes differ."""
    modes = set(xdp.values())
    if len(modes) == 1:
        return str(next(iter(modes)))
    by_mode: dict[str | None, list[str]] = {}
    for ifname, mode in xdp.items():
        by_mode.setdefault(mode, []).append(ifname)
    return "; ".join(f"{','.join(names)} {mode}" for mode, names in by_mode.items())


def egress_summary(egress: dict[str, bool]) -> str:
    """The interfaces XDP may redirect into: "all", "none" or their names."""
    yes = [n for n, ok in egress.items() if ok]
    return "all" if len(yes) == len(egress) else ",".join(yes) or "none"


def _pct(part: int, whole: int) -> str:
    return f"{part:,} ({100 * part / whole:.0f}%)" if whole else f"{part:,}"


def ratio_cell(ratios: list[float]) -> str:
    """The median ratio, and the range over rounds when there are several."""
    m = median(ratios)
    if m is None:
        return "n/a"
    spread = f" ({100 * min(ratios):.0f}-{100 * max(ratios):.0f})" if len(ratios) > 1 else ""
    return f"{100 * m:.0f}%{spread}"


def row(c: Cell) -> list[str]:
    top = sorted(((n, v) for n, v in c.reasons.items() if v), key=lambda x: -x[1])[:3]
    cpu = median(c.serve_cpu)
    return [c.shape, c.senders, c.mode, xdp_summary(c.xdp), egress_summary(c.egress),
            fmt(c.flow_packets), _pct(c.redirect, c.flow_packets),
            _pct(c.stack, c.flow_packets), fmt(c.burst["kernel_fwd"]),
            ", ".join(f"{n} {v}" for n, v in top) or "-",
            fmt(median(c.direct_rates)), fmt(median(c.lbtui_rates)), ratio_cell(c.ratios),
            f"{100 * cpu:.0f}%" if cpu is not None else "n/a"]


def render(res: dict) -> str:
    s = res["settings"]
    cells = [Cell(**c) for c in res["cells"]]
    failed = [f"{c.shape}/{c.senders}/{c.mode}: {c.burst['tcp_failed']} TCP failed, "
              f"{c.burst['udp_lost']} UDP unanswered, {c.wrk_errors} wrk errors"
              for c in cells if c.burst["tcp_failed"] or c.burst["udp_lost"] or c.wrk_errors]
    lines = [machine_line(res["machine"]),
             f"burst per client: {s['connections']} HTTP connections + {s['udp']} UDP flows; "
             f"rates: {s['rounds']} round(s) of wrk {s['rate_seconds']} s x "
             f"{WRK_CONNECTIONS} connections per client to backend1, through lbtui (a fresh "
             f"serve each) then direct; connection events {'on' if s['events'] else 'off'}; "
             f"run took {res['elapsed_s']:.0f}s", "",
             table(COLUMNS, [row(c) for c in cells]), "",
             "senders: offload = endpoints with the kernel's default tx checksum offload "
             "(CHECKSUM_PARTIAL packets), full = offload off (full checksums, as from a NIC)",
             "redirect: the burst's flow packets XDP forwarded itself; stack: those it handed "
             "to the kernel after translation (by reason: lbtui ctl status); kernel fwd: "
             "the LB namespace's IpForwDatagrams during the burst",
             "conns/s: medians over rounds; vs direct: median (range) of each round's lbtui "
             "rate over the mean of the direct runs either side of it",
             "serve CPU: the serve process's CPU time during lbtui's rate runs, in % of one "
             "CPU (median)"]
    lines += [f"skipped {x}" for x in res.get("skipped", [])]
    lines += [f"FAILED {f}" for f in failed] or ["every connection and datagram answered, "
                                                 "no wrk errors"]
    return "\n".join(lines)


def _names(text: str, allowed: list[str] | tuple[str, ...], what: str,
           ap: argparse.ArgumentParser) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in allowed]
    if bad or not names or len(set(names)) != len(names):
        ap.error(f"{what}: unknown or repeated {bad or names}; choose from "
                 f"{', '.join(allowed)}")
    return names


def parse_args(argv: list[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", help="comma list of " + ",".join(shapes.SHAPES))
    ap.add_argument("--modes", help="comma list of " + ",".join(shapes.ALL_MODES) +
                    " (each shape runs those it allows)")
    ap.add_argument("--senders", help="comma list of offload (the endpoints' default tx "
                    "checksum offload), full (offload off: full checksums); default both")
    ap.add_argument("--connections", type=int, help="HTTP connections per client in the "
                    "burst (1..2000, default 200)")
    ap.add_argument("--udp", type=int, help="UDP flows per client in the burst (0..1000, "
                    "default 100)")
    ap.add_argument("--rate-seconds", type=int, help="each wrk run (1..30, default 1)")
    ap.add_argument("--rounds", type=int, help="rate runs of lbtui (each with a fresh serve) "
                    "and of direct, alternating (1..10, default 5)")
    ap.add_argument("--no-events", action="store_true", help="serve with connection events "
                    "off ([settings] stats = false; default on, as in a fresh config)")
    ap.add_argument("--quick", action="store_true", help="a small burst, 1 s wrk runs")
    ap.add_argument("--tag", default="pb", help="namespace prefix (lbt-<tag><shape>-*)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    a = ap.parse_args(argv)
    s = Settings(tag=a.tag, events=not a.no_events)
    if a.quick:
        s = Settings(**{**asdict(s), **QUICK})
    if a.shapes:
        s.shapes = _names(a.shapes, list(shapes.SHAPES), "--shapes", ap)
    if a.modes:
        s.modes = _names(a.modes, shapes.ALL_MODES, "--modes", ap)
    if a.senders:
        s.senders = [x for x in SENDERS
                     if x in _names(a.senders, SENDERS, "--senders", ap)]
    for attr, lo, hi in (("connections", 1, 2000), ("udp", 0, 1000), ("rate_seconds", 1, 30),
                         ("rounds", 1, 10)):
        value = getattr(a, attr)
        if value is not None:
            if not lo <= value <= hi:
                ap.error(f"--{attr.replace('_', '-')} must be {lo}..{hi}")
            setattr(s, attr, value)
    if not planned(s):
        ap.error("nothing to run: no shape allows these modes (bridge has no native XDP), "
                 "or takes these senders (" +
                 "; ".join(f"{k}: {v}" for k, v in FULL_SKIPPED.items()) + ")")
    try:
        for n in s.shapes:
            shapes.lab_name(n, s.tag)
    except ValueError as e:
        ap.error(f"--tag: {e}")
    return s, a


def main(argv: list[str] | None = None) -> int:
    s, a = parse_args(argv)
    res = run(s)
    return emit(render(res), res, a.json)


if __name__ == "__main__":
    sys.exit(main())
