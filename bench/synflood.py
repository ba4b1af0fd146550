"""SYN flood: spoofed SYNs at increasing rates through the lab while a real client keeps
opening connections, for lbtui (without and with its SYN flood guard), nftables DNAT and
HAProxy side by side.

    sudo .venv/bin/python -m bench.synflood [--quick] [--rates 0,10000,...] [--json out.json]

The lab of ``bench.compare`` (2 client namespaces, the LB, 3 backends running HAProxy as
HTTP answerer and ``bench.servers``' echo). Per contender, one contender at a time, its
flow tables emptied first:

1. ``--established`` long-lived echo connections from client 1 to VIP:7000, checked to
   echo, then left idle: what a flood's conntrack churn can take from a running service.
2. Then, for each rate of ``--rates`` (SYN/s; "max" sends as fast as one process can), a
   step of ``--step-seconds``:
   - client 2 sends SYNs to VIP:80 from spoofed sources (198.18.128.0/17, a range nothing
     routes back to: no handshake ever completes, every SYN is a new 5-tuple), paced,
     from an AF_PACKET socket (``flood``);
   - client 1 opens real connections to VIP:80 at ``--probe-rate`` per second, one at a
     time, each a full HTTP request with a 1 s timeout;
   - afterwards every established connection is asked to echo (1.5 s for all).

Contenders: ``lbtui`` (``syn_flood_rate`` off, its default), ``lbtui-cap`` (the same
datapath with ``syn_flood_rate = --cap``), ``nftables``, ``haproxy``.

Reported per step: the SYN rate reached, the real connections that succeeded and their
p99, how many established connections still echo, and for lbtui its conntrack entries,
the flows it created and the SYNs it forwarded without tracking them. "Real connections
start failing" at the first step where fewer than 99% succeed; an established connection
that stops echoing is lost for good (counted once).
Rates are ratios to nothing but themselves: every contender gets the same steps, in the
same run.

Bounded: the flood stops after ``--step-seconds`` (and ``rate x seconds`` packets) per
step, the probe and the checks have timeouts. Everything stays in the lab's namespaces
(198.18.0.0/15, no route out), torn down at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from bench.common import emit, fmt, machine, machine_line, table
from bench.contenders import (
    ECHO_PORT,
    HTTP_VIP_PORT,
    Contender,
    Haproxy,
    Lbtui,
    Nftables,
    check_http,
    flush_netfilter_conntrack,
    nproc,
    workdir,
)
from lbtui import netns
from lbtui.lab import topology as T

CONTENDERS = ("lbtui", "lbtui-cap", "nftables", "haproxy")
SPOOF_NET = ipaddress.ip_network("198.18.128.0/17")
PORTS = 64512                   # source ports 1024..65535 per spoofed address
ETH_P_IP = 0x0800
FAIL_BELOW = 0.99               # a step "fails" when fewer real connections succeed


@dataclass
class Settings:
    rates: list[int | None] = field(
        default_factory=lambda: [0, 10_000, 30_000, 60_000, 120_000, None])  # None: max
    step_seconds: float = 3.0
    probe_rate: int = 100               # real connections per second
    established: int = 200
    max_connections: int = 100_000     # lbtui's conntrack (its default)
    cap: int = 1_000                    # lbtui-cap's syn_flood_rate (new TCP flows/s per CPU)
    contenders: list[str] = field(default_factory=lambda: list(CONTENDERS))
    lab: str = "h7-flood"


QUICK = Settings(rates=[0, 5_000, 40_000], step_seconds=1.0, probe_rate=50, established=20,
                 max_connections=20_000)


def _log(msg: str) -> None:
    print(f"[synflood] {msg}", file=sys.stderr, flush=True)


# --- the flood (runs in client 2's namespace) ---------------------------------------------


def _fold(s: int) -> int:
    s = (s & 0xFFFF) + (s >> 16)
    return (s & 0xFFFF) + (s >> 16)


def _sum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


class SynFrames:
    """SYNs to ``dst``:``dport`` from spoofed (address, port) pairs numbered from 0. Every
    field but the source address, port and the two checksums is fixed, so each frame
    costs a few integer operations: the checksums are the fixed part's sum plus the
    variable words."""

    def __init__(self, src_mac: bytes, dst_mac: bytes, dst: str, dport: int) -> None:
        self.dst = socket.inet_aton(dst)
        eth = dst_mac + src_mac + struct.pack("!H", ETH_P_IP)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0x4000, 64, 6, 0, bytes(4),
                         self.dst)
        tcp = struct.pack("!HHIIBBHHH", 0, dport, 0x12345678, 0, 5 << 4, 0x02, 64240, 0, 0)
        self.buf = bytearray(eth + ip + tcp)
        base = int(SPOOF_NET.network_address)
        self.hi = base >> 16                       # source address, high 16 bits: fixed
        self.lo0 = base & 0xFFFF
        self.ip_sum = _sum16(ip) + self.hi         # with the source's low word, sport 0
        self.tcp_sum = (_sum16(tcp) + self.hi + _sum16(self.dst) + 6 + 20)

    def frame(self, n: int) -> bytearray:
        lo = self.lo0 + n % SPOOF_NET.num_addresses
        sport = 1024 + (n // SPOOF_NET.num_addresses) % PORTS
        b = self.buf
        struct.pack_into("!HH", b, 26, self.hi, lo)                      # IP source
        struct.pack_into("!H", b, 24, ~_fold(self.ip_sum + lo) & 0xFFFF)
        struct.pack_into("!H", b, 34, sport)
        struct.pack_into("!H", b, 50, ~_fold(self.tcp_sum + lo + sport) & 0xFFFF)
        return b


def flood(ifname: str, dst_mac: str, dst: str, dport: int, rate: int | None,
          seconds: float, offset: int) -> tuple[int, float]:
    """Send SYNs numbered from ``offset`` at ``rate`` per second (None: as fast as this
    process can) for ``seconds``; returns (sent, seconds taken)."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((ifname, 0))
    src_mac = Path(f"/sys/class/net/{ifname}/address").read_text().strip()
    frames = SynFrames(bytes.fromhex(src_mac.replace(":", "")),
                       bytes.fromhex(dst_mac.replace(":", "")), dst, dport)
    limit = int(rate * seconds) if rate else sys.maxsize
    sent, start = 0, time.monotonic()
    end = start + seconds
    with s:
        while sent < limit and (now := time.monotonic()) < end:
            if rate and sent > (now - start) * rate:
                time.sleep(min(0.002, end - now))
                continue
            for _ in range(64):
                try:
                    s.send(frames.frame(offset + sent))
                except BlockingIOError:
                    break
                sent += 1
    return sent, time.monotonic() - start


# --- the real client and the established connections --------------------------------------


@dataclass
class Probe:
    ok: int = 0
    failed: int = 0
    latencies_us: list[float] = field(default_factory=list)

    @property
    def ok_ratio(self) -> float | None:
        n = self.ok + self.failed
        return self.ok / n if n else None

    @property
    def p99_us(self) -> float | None:
        s = sorted(self.latencies_us)
        return s[min(len(s) - 1, int(len(s) * 0.99))] if s else None


_REQUEST = b"GET / HTTP/1.1\r\nHost: synflood\r\nConnection: close\r\n\r\n"


def probe(ns: str, dst: str, port: int, rate: int, seconds: float, out: Probe) -> None:
    """Real connections, one at a time, ``rate`` per second for ``seconds``: each must
    connect and get a full HTTP answer within 1 s."""
    end = time.monotonic() + seconds
    interval = 1 / rate
    with netns.inside(ns):
        nxt = time.monotonic()
        while (now := time.monotonic()) < end:
            if now < nxt:
                time.sleep(nxt - now)
            nxt += interval
            t0 = time.perf_counter()
            try:
                with socket.create_connection((dst, port), timeout=1) as s:
                    s.settimeout(1)
                    s.sendall(_REQUEST)
                    data = b""
                    while chunk := s.recv(4096):
                        data += chunk
                if not data.startswith(b"HTTP/1.1 200"):
                    raise OSError(f"unexpected answer {data[:40]!r}")
            except OSError:
                out.failed += 1
                continue
            out.ok += 1
            out.latencies_us.append((time.perf_counter() - t0) * 1e6)


def open_established(ns: str, dst: str, port: int, count: int) -> list[socket.socket]:
    socks = []
    with netns.inside(ns):
        for _ in range(count):
            socks.append(socket.create_connection((dst, port), timeout=2))
    if alive(socks) != count:
        raise RuntimeError(f"not every one of {count} echo connections to {dst}:{port} "
                           "echoed before the flood")
    return socks


def alive(socks: list[socket.socket], timeout: float = 1.5) -> int:
    """How many connections still echo: one line to each, then wait for all at once.
    A connection that fails is closed and stays counted as lost."""
    sel = selectors.DefaultSelector()
    waiting = {}
    for s in socks:
        if s.fileno() < 0:
            continue
        try:
            s.setblocking(False)
            s.send(b"ping\n")
        except OSError:
            s.close()
            continue
        sel.register(s, selectors.EVENT_READ)
        waiting[s] = b""
    ok = 0
    deadline = time.monotonic() + timeout
    while waiting and (left := deadline - time.monotonic()) > 0:
        for key, _ in sel.select(left):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            try:
                data = s.recv(64)
            except OSError:
                data = b""
            if not data:
                sel.unregister(s)
                s.close()
                waiting.pop(s)
                continue
            waiting[s] += data
            if waiting[s].endswith(b"ping\n"):
                sel.unregister(s)
                waiting.pop(s)
                ok += 1
    for s in waiting:               # no answer in time: lost
        sel.unregister(s)
        s.close()
    sel.close()
    return ok


# --- a run --------------------------------------------------------------------------------


def lb_mac(topo: T.Topology, ifname: str) -> str:
    from pyroute2 import NetNS

    with NetNS(topo.lb_ns) as ns:
        return ns.get_links(ns.link_lookup(ifname=ifname)[0])[0].get_attr("IFLA_ADDRESS")


def flood_step(topo: T.Topology, rate: int | None, seconds: float, offset: int
               ) -> subprocess.Popen | None:
    if rate == 0:
        return None
    flooder = topo.clients[1]
    argv = [sys.executable, "-m", "bench.synflood", "--flood-worker",
            "--gateway-mac", lb_mac(topo, flooder.lb_ifname), "--dst", topo.vip,
            "--dport", str(HTTP_VIP_PORT), "--rate", str(rate or 0),
            "--seconds", str(seconds), "--offset", str(offset)]
    return topo.popen(flooder.node, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                      text=True, cwd=T.__file__.rsplit("/lbtui/", 1)[0])


class CappedLbtui(Lbtui):
    """lbtui with the SYN flood guard on: settings[SYN_FLOOD_RATE] = ``cap`` while it is
    the active contender (off again at stop, as for plain ``lbtui``)."""

    def __init__(self, topo: T.Topology, datapath: object, cap: int) -> None:
        super().__init__(topo, datapath)
        self.name = "lbtui-cap"
        self.cap = cap

    def _guard(self, rate: int) -> None:
        from lbtui import abi
        from lbtui import maps as M

        M.set_setting(self.datapath.maps.settings_map,  # type: ignore[attr-defined]
                      abi.SETTING_SYN_FLOOD_RATE, rate)

    def start(self) -> None:
        self._guard(self.cap)
        super().start()

    def stop(self) -> None:
        super().stop()
        self._guard(0)


def lbtui_state(c: Contender) -> dict[str, int]:
    if not isinstance(c, Lbtui):
        return {}
    from lbtui import maps as M

    ms = c.datapath.maps  # type: ignore[attr-defined]
    entries = sum(n for _k, _v, n in M.conntrack_reader(ms.conntrack_map).chunks())
    counters = M.read_counters(ms.counters_map)
    return {"entries": entries, "flows_created": counters["flows_created"],
            "flood_syns": counters["flood_syns"]}


def run_contender(topo: T.Topology, c: Contender, s: Settings,
                  progress: T.Progress) -> list[dict]:
    flush_netfilter_conntrack(topo)
    c.start()
    steps = []
    try:
        check_http(topo, c)
        client = topo.clients[0]
        socks = open_established(client.ns, topo.vip, ECHO_PORT, s.established)
        offset, before = 0, lbtui_state(c)
        for rate in s.rates:
            progress(f"{c.name}: flood {'max' if rate is None else f'{rate:,}'} SYN/s for "
                     f"{s.step_seconds:g} s")
            result = Probe()
            t = threading.Thread(target=probe, args=(client.ns, topo.vip, HTTP_VIP_PORT,
                                                     s.probe_rate, s.step_seconds, result))
            p = flood_step(topo, rate, s.step_seconds, offset)
            t.start()
            sent, took = 0, s.step_seconds
            if p is not None:
                out, err = p.communicate(timeout=s.step_seconds + 30)
                if p.returncode != 0:
                    raise RuntimeError(f"flood worker failed: {err.strip()[-300:]}")
                f = dict(kv.split("=") for kv in out.split())
                sent, took = int(f["sent"]), float(f["seconds"])
            t.join(timeout=s.step_seconds + 30)
            offset += sent
            after = lbtui_state(c)
            steps.append({
                "rate": rate, "syn_per_s": sent / took if took else 0.0, "sent": sent,
                "probe_ok": result.ok, "probe_failed": result.failed,
                "probe_ok_ratio": result.ok_ratio, "probe_p99_us": result.p99_us,
                "established_alive": alive(socks), "established": s.established,
                "ct_entries": after.get("entries"),
                "flows_created": (after["flows_created"] - before["flows_created"]
                                  if after else None),
                "flood_syns": (after["flood_syns"] - before["flood_syns"]
                               if after else None)})
            before = after
        for sk in socks:
            sk.close()
    finally:
        c.stop()
    return steps


def run(s: Settings, progress: T.Progress = _log) -> dict:
    from bench.compare import preflight, start_backends
    from lbtui import maps as M
    from lbtui.datapath.loader import Datapath

    preflight()
    wd = workdir()
    os.environ.setdefault("LBTUI_STATE_DIR", str(wd / "state"))
    started = time.monotonic()
    info = machine()
    results: dict[str, list[dict]] = {}
    with T.lab(s.lab, n_clients=2, n_backends=3, progress=progress) as topo:
        topo.run("lb", ["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_timeout_time_wait=1"])
        progress("starting backend servers")
        start_backends(topo, wd)
        pin = Path(f"/sys/fs/bpf/lbtui-bench-{s.lab}")
        shutil.rmtree(pin, ignore_errors=True)
        ms = M.create_all_maps({"max_connections": s.max_connections})
        dp = None
        made: dict[str, Contender] = {}
        try:
            if {"lbtui", "lbtui-cap"} & set(s.contenders):
                ms.pin_all(pin)
                progress("compiling and loading the XDP datapath")
                dp = Datapath.load(ms)
                made["lbtui"] = Lbtui(topo, dp)
                made["lbtui-cap"] = CappedLbtui(topo, dp, s.cap)
            made["nftables"] = Nftables(topo, wd)
            made["haproxy"] = Haproxy(topo, wd, nproc())
            for name in s.contenders:
                results[name] = run_contender(topo, made[name], s, progress)
                time.sleep(1)       # the backends' half-open connections time out
        finally:
            for c in made.values():
                c.close()
            if dp is not None:
                dp.detach_all()
            M.close_all_maps(ms)
            shutil.rmtree(pin, ignore_errors=True)
    shutil.rmtree(wd, ignore_errors=True)
    return {"settings": asdict(s), "machine": info, "results": results,
            "elapsed_s": time.monotonic() - started,
            "command": " ".join(["python -m bench.synflood", *sys.argv[1:]])}


# --- report -------------------------------------------------------------------------------


def first_failing(steps: list[dict]) -> dict | None:
    return next((x for x in steps if (x["probe_ok_ratio"] or 0) < FAIL_BELOW), None)


def first_losing(steps: list[dict]) -> dict | None:
    return next((x for x in steps if x["established_alive"] < x["established"]), None)


def _rate(x: dict) -> str:
    asked = "max" if x["rate"] is None else f"asked {x['rate']:,}"
    return f"{x['syn_per_s']:,.0f} SYN/s ({asked})"


def render(res: dict) -> str:
    s = res["settings"]
    lines = [machine_line(res["machine"]),
             f"steps of {s['step_seconds']:g} s; real client {s['probe_rate']} connections/s "
             f"(1 s timeout); {s['established']} idle established echo connections; lbtui "
             f"conntrack {s['max_connections']:,} entries; lbtui-cap: syn_flood_rate = "
             f"{s.get('cap', 0):,} new TCP flows/s per CPU; run took {res['elapsed_s']:.0f} s",
             ""]
    for name, steps in res["results"].items():
        rows = []
        for x in steps:
            ratio = x["probe_ok_ratio"]
            rows.append([
                "max" if x["rate"] is None else f"{x['rate']:,}", fmt(x["syn_per_s"]),
                f"{x['probe_ok']}/{x['probe_ok'] + x['probe_failed']}"
                + ("" if ratio is None else f" ({100 * ratio:.0f}%)"),
                fmt(x["probe_p99_us"] / 1000 if x["probe_p99_us"] else None, 1),
                f"{x['established_alive']}/{x['established']}",
                fmt(x["ct_entries"]), fmt(x["flows_created"]), fmt(x.get("flood_syns"))])
        lines += [f"{name}:", table(["SYN/s asked", "SYN/s sent", "real conns ok",
                                     "real p99 ms", "established alive", "lbtui ct entries",
                                     "lbtui flows created", "lbtui SYNs untracked"], rows),
                  ""]
    for name, steps in res["results"].items():
        fail, lose, last = first_failing(steps), first_losing(steps), steps[-1]
        top = max(x["syn_per_s"] for x in steps)
        real = (f"start failing at {_rate(fail)}" if fail
                else f"never failed (up to {top:,.0f} SYN/s)")
        lost = last["established"] - last["established_alive"]
        est = (f"lost from {_rate(lose)} on ({lost} of {last['established']} by the end)"
               if lose else "all kept")
        lines.append(f"{name}: real connections {real}; established connections {est}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="three short steps (smoke test)")
    ap.add_argument("--rates", help="SYN/s per step, comma-separated; 'max' = unpaced")
    ap.add_argument("--step-seconds", type=float)
    ap.add_argument("--probe-rate", type=int, help="real connections per second")
    ap.add_argument("--established", type=int, help="idle echo connections kept open")
    ap.add_argument("--max-connections", type=int, help="lbtui's conntrack size")
    ap.add_argument("--cap", type=int, help="lbtui-cap's syn_flood_rate (new TCP flows/s "
                    "per CPU; default 1,000: above the real client's, below the flood's)")
    ap.add_argument("--contenders", help="comma list of " + ",".join(CONTENDERS))
    ap.add_argument("--lab", default="h7-flood", help="lab name (namespaces lbt-<lab>-*)")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    # the flood worker (started by the benchmark in client 2's namespace)
    ap.add_argument("--flood-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--gateway-mac", help=argparse.SUPPRESS)
    ap.add_argument("--dst", help=argparse.SUPPRESS)
    ap.add_argument("--dport", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--rate", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--offset", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    s = replace(QUICK) if a.quick else Settings()
    if a.rates:
        try:
            s.rates = [None if r.strip() == "max" else int(r) for r in a.rates.split(",")]
        except ValueError:
            ap.error(f"--rates: {a.rates!r}: use integers (SYN/s) or 'max', comma-separated")
        if any(r is not None and not 0 <= r <= 10_000_000 for r in s.rates):
            ap.error("--rates: each rate must be 0..10,000,000 SYN/s or 'max'")
    for name, lo, hi in (("step_seconds", 0.5, 30), ("probe_rate", 1, 1000),
                         ("established", 1, 2000), ("max_connections", 1000, 10_000_000),
                         ("cap", 1, 100_000_000)):
        v = getattr(a, name)
        if v is not None:
            if not lo <= v <= hi:
                ap.error(f"--{name.replace('_', '-')} must be within {lo}..{hi:,}")
            setattr(s, name, v)
    if a.contenders:
        names = [n.strip() for n in a.contenders.split(",") if n.strip()]
        if not names or any(n not in CONTENDERS for n in names) or len(set(names)) < len(names):
            ap.error(f"--contenders: choose from {', '.join(CONTENDERS)}")
        s.contenders = names
    try:
        s.lab = T.validate_lab_name(a.lab)
    except ValueError as e:
        ap.error(str(e))
    return s, a


def main(argv: list[str] | None = None) -> int:
    s, a = parse_args(argv)
    if a.flood_worker:
        sent, took = flood("eth0", a.gateway_mac, a.dst, a.dport, a.rate or None, a.seconds,
                           a.offset)
        print(f"sent={sent} seconds={took:.3f}")
        return 0
    res = run(s)
    return emit(render(res), res, a.json)


if __name__ == "__main__":
    sys.exit(main())
