"""lbtui vs nftables DNAT vs HAProxy (TCP mode) vs direct forwarding, on one namespace lab.

    sudo .venv/bin/python -m bench.compare [--rounds 3] [--quick] [--json out.json]
    sudo .venv/bin/python -m bench.compare --shape bridge     # on an operator-shaped network

One lab (2 client namespaces, the LB namespace, 3 backends; ``lbtui.lab.topology``) and the
same clients for every contender (``bench.contenders``). With ``--shape``, one of the
networks of ``tests/topologies/shapes.py`` instead (endpoints with kernel defaults, no XDP
on the far ends; ``bridge``: backends behind a Linux bridge on the LB), where lbtui runs as
``lbtui serve`` with ``xdp_mode = "auto"`` (``lbtui``) and ``"generic"``. Rounds interleave
the contenders, rotating their order, so machine drift hits all alike; the table shows each
metric's median over rounds and its ratio to lbtui. Per contender and round:

1. new TCP connections/s: wrk in each client namespace (1 thread, N connections, every
   request ``Connection: close`` so each is a new connection), backends are HAProxy
   answering a 9-byte body (``bench.servers``);
2. UDP packets/s: one Python flood per client namespace (60-byte frames, 8 flows),
   counted where they arrive (the backends' UDP MIB); HAProxy has no UDP;
3. bulk TCP: one stream of zeros from a backend, received for a fixed time;
4. CPU per 1,000 requests at a fixed, unsaturated offered load (paced wrk): exact run time
   of every lab process plus ksoftirqd (``bench.cpu`` explains why that captures in-kernel
   forwarding), per request; "LB CPU" is that minus the direct run of the same round,
   and for the contenders that spread over the three backends also minus the
   direct-spread run (the same backends without a balancer), so the backends' own cost
   of spreading is not charged to the balancer;
5. connect+response latency: sequential new connections from a Python client, p50/p99,
   with connect() alone timed too and the TCP retransmissions (segments, SYNs) the client
   namespaces counted during those connections, so a tail can be told apart.

The ceiling: ``direct`` (clients talk to backend 1, the LB namespace's kernel routes) and,
on the lab, ``xdp-redirect`` (the same traffic, forwarded by an XDP program that only
routes and redirects): lbtui's cost is what it loses against ``xdp-redirect``, veth's XDP
cost what ``xdp-redirect`` loses against ``direct``. ``direct-spread`` is the ceiling for
what the balancers carry: an address on every backend that the LB namespace routes by a
weighted multipath route (the same weights, per 5-tuple), so the same clients' connections
and flows spread over the three backends with plain forwarding, no NAT; direct-spread vs
direct is what three backends sharing the machine cost against one, with no load balancer
at all.

Hygiene: the lab widens ip_local_port_range and enables tcp_tw_reuse in every namespace (so
does the benchmark on a shape); nf_conntrack's TIME_WAIT is cut to 1 s in the LB
namespace. Before each contender starts, the LB namespace's netfilter conntrack and
lbtui's conntrack are emptied, so no contender inherits another's flows (``served``
lbtui starts with new maps anyway). Retransmissions are counted per contender in the
client namespaces. All traffic stays in the network's namespaces (198.18.0.0/15), which
are torn down at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from bench import load
from bench.common import emit, fmt, machine, machine_line, median, table
from bench.contenders import (
    BULK_PORT,
    DIRECT_HTTP_PORT,
    ECHO_PORT,
    HTTP_PORT,
    SINGLE_HTTP_PORT,
    SPREAD_HTTP_PORT,
    UDP_PORT,
    Contender,
    Direct,
    DirectSpread,
    Haproxy,
    Lbtui,
    Nftables,
    ServedLbtui,
    XdpRedirect,
    check_http,
    flush_netfilter_conntrack,
    nproc,
    wait_listening,
    workdir,
)
from bench.cpu import CpuMeter
from bench.servers import http_server_config
from lbtui.lab import topology as T
from tests.topologies import shapes

CONTENDERS = ("lbtui", "lbtui-generic", "lbtui-single", "direct", "direct-spread",
              "xdp-redirect", "nftables", "haproxy")
# on the lab only: every endpoint has XDP; direct-spread's address and route are the lab's
LAB_ONLY = ("lbtui-single", "xdp-redirect", "direct-spread")
LBTUI = ("lbtui", "lbtui-generic")  # the goals are checked for each XDP mode
ONE_BACKEND = ("direct", "xdp-redirect", "lbtui-single")  # the others spread over three
# LB CPU columns: (key, the contender whose lab CPU of the same round is subtracted)
LB_CPU = (("lb_cpu_ms_per_1k", "direct"), ("lb_cpu_spread_ms_per_1k", "direct-spread"))


@dataclass
class Settings:
    rounds: int = 3
    conn_seconds: int = 3          # wrk -d (whole seconds)
    conn_connections: int = 32     # per client namespace
    udp_seconds: float = 2.0
    bulk_seconds: float = 1.5
    cpu_seconds: int = 3
    cpu_connections: int = 5       # per client namespace, paced:
    cpu_delay_ms: float = 5.0      # ~2 x 5 / 5.3 ms ~= 1,900 requests/s offered
    latency_count: int = 300
    contenders: list[str] = field(default_factory=lambda: list(CONTENDERS))
    lab: str = "h6-bench"
    lbtui_stats: bool = False
    shape: str | None = None       # a tests/topologies shape instead of the lab


QUICK = Settings(rounds=1, conn_seconds=1, udp_seconds=0.5, bulk_seconds=0.5, cpu_seconds=1,
                 latency_count=30)

# (key, label, higher is better, digits)
METRICS = [
    ("conns_per_s", "new TCP connections/s", True, 0),
    ("udp_pps", "UDP packets/s delivered", True, 0),
    ("bulk_gbps", "bulk TCP Gbit/s (1 stream)", True, 2),
    ("lat_p50_us", "connect+response p50 us", False, 0),
    ("lat_p99_us", "connect+response p99 us", False, 0),
    ("cpu_ms_per_1k", "lab CPU ms per 1k requests", False, 1),
    ("lb_cpu_ms_per_1k", "LB CPU ms per 1k req (minus direct)", False, 1),
    ("lb_cpu_spread_ms_per_1k", "LB CPU ms per 1k req (minus direct-spread)", False, 1),
]


def _log(msg: str) -> None:
    print(f"[compare] {msg}", file=sys.stderr, flush=True)


def preflight() -> None:
    missing = [t for t in ("wrk", "haproxy", "nft", "ethtool") if not shutil.which(t)]
    if missing:
        raise SystemExit(f"missing tools: {', '.join(missing)} (scripts/setup.sh installs "
                         "them)")
    if os.geteuid() != 0:
        raise SystemExit("the benchmark builds network namespaces and loads BPF: run as root")


def start_backends(topo: T.Topology, wd: Path) -> list[int]:
    """HAProxy HTTP answerers and the bulk/UDP sink in every backend; returns their pids."""
    pids = []
    for b in topo.backends:
        cfg = wd / f"{b.node}.cfg"
        ports = (HTTP_PORT, DIRECT_HTTP_PORT, SINGLE_HTTP_PORT, SPREAD_HTTP_PORT)
        cfg.write_text(http_server_config(b.node, ports, nproc()))
        http = topo.popen(b.node, ["haproxy", "-db", "-f", str(cfg)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        sink = topo.popen(b.node, [sys.executable, "-m", "bench.servers", "--bulk-port",
                                   str(BULK_PORT), "--udp-port", str(UDP_PORT),
                                   "--echo-port", str(ECHO_PORT)],
                          stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
        assert sink.stdout is not None
        if sink.stdout.readline().strip() != "ready":
            raise RuntimeError(f"bench.servers in {b.node} did not start")
        for port in ports:
            wait_listening(topo, topo.clients[0].node, b.ip, port, http)
        pids += [http.pid, sink.pid]
    return pids


def measure(topo: T.Topology, c: Contender, s: Settings, server_pids: list[int]
            ) -> dict[str, float | None]:
    """One round of every metric for the active contender."""
    clients = [e.node for e in topo.clients]
    client_ns = [e.ns for e in topo.clients]
    ip, port = c.http_target()
    url = f"http://{ip}:{port}/"
    r: dict[str, float | None] = {}
    client_ns = [*client_ns, topo.lb_ns]        # HAProxy's own connections start there
    resent = load.tcp_resent(client_ns)

    fwd = load.snmp(topo.lb_ns, "Ip")["ForwDatagrams"]
    opened = _passive_opens(topo)
    w = load.wrk(topo, clients, url, s.conn_seconds, s.conn_connections)
    r["conns_per_s"] = w.rate
    r["conn_errors"] = w.errors
    # connections each backend accepted (its own TCP MIB): where the load really went
    for j, n in enumerate(_passive_opens(topo), 1):
        r[f"conns_b{j}"] = n - opened[j - 1]
    # packets the LB namespace's IP stack forwarded: ~0 when XDP redirects everything
    r["kernel_fwd_per_conn"] = (load.snmp(topo.lb_ns, "Ip")["ForwDatagrams"] - fwd) / max(
        w.requests, 1)

    if c.udp:
        u = load.udp_flood(topo, clients, *c.udp_target(), s.udp_seconds)
        r["udp_pps"] = u.pps
        for j, n in enumerate(u.per_backend, 1):
            r[f"udp_b{j}"] = n
        r["udp_sent_pps"] = u.sent / u.seconds if u.seconds else 0.0
        r["udp_bad_checksums"] = u.bad_checksums
    else:
        r["udp_pps"] = r["udp_sent_pps"] = r["udp_bad_checksums"] = None

    r["bulk_gbps"] = load.bulk(topo, clients[0], *c.bulk_target(), s.bulk_seconds) / 1e9

    meter = CpuMeter({"servers": server_pids, "lb": c.lb_pids()})
    before = meter.snapshot()
    paced = load.wrk(topo, clients, url, s.cpu_seconds, s.cpu_connections, s.cpu_delay_ms)
    use = meter.usage(before, meter.snapshot())
    per_1k = 1000 / max(paced.requests, 1) / 1e6  # ns total -> ms per 1,000 requests
    r["cpu_rate"] = paced.rate
    r["cpu_ms_per_1k"] = use.lab_ns * per_1k
    r["lb_proc_ms_per_1k"] = use.groups["lb"] * per_1k if c.lb_pids() else None
    r["machine_ms_per_1k"] = use.machine_ns * per_1k
    for part in ("servers", "ksoftirqd", "children"):  # where the lab's CPU time went
        r[f"cpu_{part}_ms_per_1k"] = use.groups[part] * per_1k

    before_lat = load.tcp_resent(client_ns)
    lat = load.latency(topo, clients[0], ip, port, s.latency_count, 30)
    after = load.tcp_resent(client_ns)
    r["lat_p50_us"] = lat.percentile(lat.total_us, 0.5)
    r["lat_p99_us"] = lat.percentile(lat.total_us, 0.99)
    r["lat_max_us"] = max(lat.total_us, default=None)
    r["lat_connect_p99_us"] = lat.percentile(lat.connect_us, 0.99)
    r["lat_over_1ms"] = sum(t > 1000 for t in lat.total_us)
    r["lat_syn_retrans"] = after["TcpExtTCPSynRetrans"] - before_lat["TcpExtTCPSynRetrans"]
    r["lat_retrans"] = after["TcpRetransSegs"] - before_lat["TcpRetransSegs"]
    r["syn_retrans"] = after["TcpExtTCPSynRetrans"] - resent["TcpExtTCPSynRetrans"]
    r["retrans"] = after["TcpRetransSegs"] - resent["TcpRetransSegs"]
    return r


def _passive_opens(topo: T.Topology) -> list[int]:
    return [load.snmp(b.ns, "Tcp")["PassiveOpens"] for b in topo.backends]


def _round_order(names: list[str], r: int) -> list[str]:
    k = r % len(names)
    return names[k:] + names[:k]


def network_line(s: Settings) -> str:
    if s.shape is None:
        return "network: the lab (lbtui.lab.topology); lbtui = the datapath, XDP native"
    return (f"network: shape {s.shape} (tests/topologies/shapes.py); lbtui = lbtui serve, "
            "xdp_mode auto; lbtui-generic = xdp_mode generic")


@contextmanager
def network(s: Settings, progress: Callable[[str], None]
            ) -> Iterator[tuple[T.Topology, shapes.Shape | None]]:
    """The lab, or the shape asked for; torn down on exit (also on failure)."""
    if s.shape is None:
        with T.lab(s.lab, n_clients=2, n_backends=3, progress=progress) as topo:
            yield topo, None
    else:
        with shapes.built(s.shape, s.lab, progress) as shape:
            yield shape.topo, shape


def run(s: Settings, progress: Callable[[str], None] = _log) -> dict:
    """Build the network, run every round, tear everything down; returns the raw
    results."""
    from lbtui import maps as M
    from lbtui.datapath.loader import Datapath

    preflight()
    wd = workdir()
    os.environ.setdefault("LBTUI_STATE_DIR", str(wd / "state"))
    started = time.monotonic()
    info = machine()
    samples: dict[str, list[dict]] = {n: [] for n in s.contenders}
    with network(s, progress) as (topo, shape):
        topo.run("lb", ["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_timeout_time_wait=1"])
        progress("starting backend servers")
        server_pids = start_backends(topo, wd)
        pin = Path(f"/sys/fs/bpf/lbtui-bench-{s.lab}")
        shutil.rmtree(pin, ignore_errors=True)
        ms = M.create_all_maps()
        dp = None
        made: dict[str, Contender] = {}
        try:
            made.update({"direct": Direct(topo), "direct-spread": DirectSpread(topo),
                         "nftables": Nftables(topo, wd),
                         "haproxy": Haproxy(topo, wd, nproc())})
            if shape is None and "xdp-redirect" in s.contenders:
                made["xdp-redirect"] = XdpRedirect(topo)
            if shape is not None:
                made["lbtui"] = ServedLbtui(shape, wd, "auto")
                made["lbtui-generic"] = ServedLbtui(shape, wd, "generic")
            elif {*LBTUI, "lbtui-single"} & set(s.contenders):
                ms.pin_all(pin)
                progress("compiling and loading the XDP datapath")
                dp = Datapath.load(ms)
                made["lbtui"] = Lbtui(topo, dp, stats=s.lbtui_stats)
                made["lbtui-generic"] = Lbtui(topo, dp, stats=s.lbtui_stats, mode="generic")
                made["lbtui-single"] = Lbtui(topo, dp, stats=s.lbtui_stats, single=True)
            for r in range(s.rounds):
                for name in _round_order(s.contenders, r):
                    c = made[name]
                    progress(f"round {r + 1}/{s.rounds}: {name}")
                    flush_netfilter_conntrack(topo)
                    c.start()
                    try:
                        if r == 0:
                            check_http(topo, c)
                        samples[name].append(measure(topo, c, s, server_pids))
                    finally:
                        c.stop()
                    time.sleep(0.3)  # let TIME_WAIT sockets and softirq backlogs settle
        finally:
            for c in made.values():
                c.close()
            if dp is not None:
                dp.detach_all()
            M.close_all_maps(ms)
            shutil.rmtree(pin, ignore_errors=True)
    shutil.rmtree(wd, ignore_errors=True)
    return {"settings": asdict(s), "machine": info, "samples": samples,
            "elapsed_s": time.monotonic() - started,
            "command": " ".join(["python -m bench.compare", *sys.argv[1:]])}


def summarize(res: dict) -> dict[str, dict[str, float | None]]:
    """Median of each metric per contender; LB CPU is taken per round against direct and,
    for the contenders that spread over the three backends, against direct-spread."""
    samples = res["samples"]
    out: dict[str, dict[str, float | None]] = {}
    for name, rounds in samples.items():
        m: dict[str, float | None] = {}
        for key in {k for r in rounds for k in r}:
            m[key] = median([r[key] for r in rounds if r.get(key) is not None])
        for key, base in LB_CPU:
            m[key] = _lb_cpu(name, rounds, base, samples.get(base, []))
        out[name] = m
    return out


def _lb_cpu(name: str, rounds: list[dict], base: str, base_rounds: list[dict]
            ) -> float | None:
    """Median over rounds of the lab CPU above ``base``'s in the same round; 0 for the base
    itself; None without the base, or for a one-backend contender against a spreading
    base."""
    if name == base:
        return 0.0
    if not base_rounds or (base == "direct-spread" and name in ONE_BACKEND):
        return None
    return median([r["cpu_ms_per_1k"] - d["cpu_ms_per_1k"]
                   for r, d in zip(rounds, base_rounds, strict=False)])


def paired_ratios(samples: dict[str, list[dict]], a: str, b: str, key: str) -> list[float]:
    """a/b of ``key`` within each round (same drift), for the spread behind a ratio."""
    return [x[key] / y[key] for x, y in zip(samples.get(a, []), samples.get(b, []),
                                            strict=False)
            if x.get(key) is not None and y.get(key)]


def goals(summary: dict[str, dict[str, float | None]],
          samples: dict[str, list[dict]] | None = None
          ) -> list[tuple[str, str, bool | None]]:
    """(goal, measured, met) for the goals of issue 7, for each lbtui XDP mode measured.
    With ``samples``, ratio goals also show the range of the per-round ratios."""
    out: list[tuple[str, str, bool | None]] = []

    def get(name: str, key: str) -> float | None:
        return summary.get(name, {}).get(key)

    def spread(a: str, b: str, key: str, pct: bool) -> str:
        rs = paired_ratios(samples or {}, a, b, key)
        if len(rs) < 2:
            return ""
        lo, hi = min(rs), max(rs)
        return (f" (rounds {100 * lo:.0f}-{100 * hi:.0f}%)" if pct
                else f" (rounds {lo:.2f}-{hi:.2f}x)")

    for me in (n for n in LBTUI if n in summary):
        x = get(me, "conns_per_s")
        for base, label in (("direct", "direct"), ("direct-spread", "direct over the same "
                                                   "backends (direct-spread)")):
            d = get(base, "conns_per_s")
            if d and x is not None:
                out.append((f"{me} conns/s >= 90% of {label}",
                            f"{100 * x / d:.0f}%{spread(me, base, 'conns_per_s', True)}",
                            x >= 0.9 * d))
        for other in ("nftables", "haproxy"):
            for key, label in (("conns_per_s", "conns/s"), ("udp_pps", "UDP pps")):
                o, v = get(other, key), get(me, key)
                if o and v is not None:
                    out.append((f"{me} {label} above {other}",
                                f"{v / o:.2f}x{spread(me, other, key, False)}", v > o))
            if other == "haproxy":
                o, v = get(other, "lat_p99_us"), get(me, "lat_p99_us")
                if o and v is not None:
                    out.append((f"{me} connect+response p99 at or under haproxy's",
                                f"{v:,.0f} vs {o:,.0f} us", v <= o))
            o, v = get(other, "lb_cpu_ms_per_1k"), get(me, "lb_cpu_ms_per_1k")
            if o is not None and v is not None:
                wins = [x["cpu_ms_per_1k"] < y["cpu_ms_per_1k"] for x, y in zip(
                    (samples or {}).get(me, []), (samples or {}).get(other, []),
                    strict=False)]
                won = f" (lower in {sum(wins)} of {len(wins)} rounds)" if wins else ""
                os_, vs = (get(other, "lb_cpu_spread_ms_per_1k"),
                           get(me, "lb_cpu_spread_ms_per_1k"))
                also = (f"; minus direct-spread {vs:.0f} vs {os_:.0f} ms"
                        if os_ is not None and vs is not None else "")
                out.append((f"{me} LB CPU per 1k requests below {other}",
                            f"{v:.0f} vs {o:.0f} ms{also}{won}", v < o))
    return out


def ceiling(summary: dict[str, dict[str, float | None]], samples: dict[str, list[dict]]
            ) -> list[str]:
    """Connections/s against the forwarding ceilings of the same run: what veth's XDP path
    costs (xdp-redirect vs direct) and what lbtui costs on top (lbtui vs xdp-redirect)."""
    out = []
    pairs = [("xdp-redirect", "direct", "XDP redirect alone vs kernel forwarding"),
             ("lbtui-single", "xdp-redirect",
              "lbtui-single vs XDP redirect alone (same traffic: lbtui's own cost)"),
             ("lbtui", "lbtui-single", "lbtui vs lbtui-single (three backends vs one)"),
             ("direct-spread", "direct", "direct-spread vs direct (three backends vs one, "
              "no LB)"),
             *((n, "direct", f"{n} vs kernel forwarding") for n in LBTUI),
             *((n, "direct-spread", f"{n} vs direct-spread (same backends and weights)")
               for n in LBTUI)]
    for a, b, label in pairs:
        x, y = (summary.get(a, {}).get("conns_per_s"), summary.get(b, {}).get("conns_per_s"))
        if x is None or not y:
            continue
        rs = paired_ratios(samples, a, b, "conns_per_s")
        spread = f" (rounds {100 * min(rs):.0f}-{100 * max(rs):.0f}%)" if len(rs) > 1 else ""
        out.append(f"{label}: {100 * x / y:.0f}% of the connections/s{spread}")
    return out


def ordered(summary: dict) -> list[str]:
    return [n for n in CONTENDERS if n in summary]


def ratio_cell(key: str, name: str, v: float | None, base: float | None, digits: int,
               times: str = "x") -> str:
    """A metric's value, with its ratio to lbtui's. A ratio needs a positive base, and an
    LB CPU baseline's own LB CPU is zero by definition."""
    cell = fmt(v, digits)
    if name != "lbtui" and v is not None and base is not None and base > 0 and (
            key, name) not in LB_CPU:
        cell += f" ({v / base:.2f}{times})"
    return cell


def backend_split(m: dict[str, float | None], prefix: str) -> str:
    """Each backend's share of what arrived (medians of ``<prefix>1``, ``2``, ...), in %:
    "50/30/20"."""
    counts = []
    while (v := m.get(f"{prefix}{len(counts) + 1}")) is not None:
        counts.append(v)
    total = sum(counts)
    return "/".join(f"{100 * v / total:.0f}" for v in counts) if total else "-"


def render(res: dict) -> str:
    summary = summarize(res)
    names = ordered(summary)
    base = summary.get("lbtui", {})
    rows = []
    for key, label, _higher, digits in METRICS:
        row = [label]
        for n in names:
            row.append(ratio_cell(key, n, summary[n].get(key), base.get(key), digits))
        rows.append(row)
    s = res["settings"]
    lines = [
        machine_line(res["machine"]),
        network_line(Settings(**s)),
        f"{s['rounds']} round(s), medians; (ratio to lbtui); run took {res['elapsed_s']:.0f}s",
        "",
        table(["metric", *names], rows),
        "",
    ]
    extra = []
    for n in names:
        m = summary[n]
        lbp = m.get("lb_proc_ms_per_1k")
        extra.append([n, fmt(m.get("conn_errors")), fmt(m.get("kernel_fwd_per_conn"), 1),
                      fmt(m.get("udp_sent_pps")),
                      fmt(m.get("udp_bad_checksums")), fmt(m.get("cpu_rate")),
                      fmt(lbp, 1) if lbp is not None else "-",
                      fmt(m.get("machine_ms_per_1k"), 1), backend_split(m, "conns_b"),
                      backend_split(m, "udp_b")])
    lines += [table(["contender", "conn errors", "stack-fwd pkts/conn", "UDP sent/s",
                     "UDP bad csum",
                     "paced req/s", "LB process ms/1k", "whole machine ms/1k",
                     "conns b1/b2/b3 %", "UDP b1/b2/b3 %"], extra), ""]
    tail = []
    for n in names:
        m = summary[n]
        tail.append([n, fmt(m.get("lat_p50_us")), fmt(m.get("lat_p99_us")),
                     fmt(m.get("lat_max_us")), fmt(m.get("lat_connect_p99_us")),
                     fmt(m.get("lat_over_1ms")), fmt(m.get("lat_syn_retrans")),
                     fmt(m.get("lat_retrans")), fmt(m.get("syn_retrans")),
                     fmt(m.get("retrans"))])
    lines += [f"latency tail ({s['latency_count']} sequential connections per round, medians "
              "over rounds) and TCP retransmissions counted in the client and LB namespaces:",
              table(["contender", "p50 us", "p99 us", "max us", "connect p99 us",
                     "conns > 1 ms", "SYN resent (latency)", "segs resent (latency)",
                     "SYN resent (round)", "segs resent (round)"], tail), ""]
    lines += [f"ceiling: {line}" for line in ceiling(summary, res["samples"])]
    lines += [""]
    checked = goals(summary, res["samples"])
    width = max((len(goal) for goal, _, _ in checked), default=0)
    for goal, measured, met in checked:
        mark = {True: "met", False: "NOT met", None: "?"}[met]
        lines.append(f"goal: {goal:<{width}}  {measured}  {mark}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one short round (tests, smoke)")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--contenders", help="comma list of " + ",".join(CONTENDERS))
    ap.add_argument("--lab", default="h6-bench", help="lab name (namespaces lbt-<lab>-*); "
                    "with --shape, the prefix of the shape's lab name")
    ap.add_argument("--shape", choices=list(shapes.SHAPES),
                    help="run on this operator-shaped network instead of the lab "
                         "(tests/topologies/shapes.py; bridge: backends behind a Linux "
                         "bridge)")
    ap.add_argument("--lbtui-stats", action="store_true",
                    help="set the stats flag on lbtui's listen entries (events per flow)")
    ap.add_argument("--json", type=Path, help="also write raw samples and medians here")
    a = ap.parse_args(argv)
    s = replace(QUICK) if a.quick else Settings()
    if a.rounds is not None:
        if not 1 <= a.rounds <= 20:
            ap.error("--rounds must be 1..20")
        s.rounds = a.rounds
    if a.contenders:
        names = [n.strip() for n in a.contenders.split(",") if n.strip()]
        bad = [n for n in names if n not in CONTENDERS]
        if bad or not names or len(set(names)) != len(names):
            ap.error(f"--contenders: unknown or repeated {bad or names}; choose from "
                     f"{', '.join(CONTENDERS)}")
        if a.shape and set(names) & set(LAB_ONLY):
            ap.error(f"--contenders: {', '.join(LAB_ONLY)} run on the lab only (an XDP "
                     "program on every endpoint; direct-spread: the lab's addressing), not "
                     "with --shape")
        s.contenders = names
    elif a.shape:
        s.contenders = [n for n in s.contenders if n not in LAB_ONLY]
    try:
        s.lab = T.validate_lab_name(a.lab)
    except ValueError as e:
        ap.error(str(e))
    s.lbtui_stats = a.lbtui_stats
    if a.shape:
        if a.lbtui_stats:
            ap.error("--lbtui-stats applies to the lab; on a shape, lbtui serve keeps its "
                     "config's stats setting")
        try:
            shapes.lab_name(a.shape, s.lab)
        except ValueError as e:
            ap.error(f"--lab with --shape: {e}")
        s.shape = a.shape
    return s, a


def main(argv: list[str] | None = None) -> int:
    s, a = parse_args(argv)
    res = run(s)
    res["summary"] = summarize(res)
    return emit(render(res), res, a.json)


if __name__ == "__main__":
    sys.exit(main())
