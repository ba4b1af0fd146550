"""Load generators and what they measure, run from client namespaces of a lab.

Every function is bounded by time (and by count where it counts): wrk by ``-d``, the UDP
flood by ``--seconds``, bulk and latency by a deadline in this process.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.common import REPO
from lbtui import netns
from lbtui.lab.topology import Topology
from tests.topologies import probes as P

WRK_SCRIPT = REPO / "bench" / "wrk_close.lua"
_BENCH_LINE = re.compile(r"^BENCH (.*)$", re.M)


class LoadError(RuntimeError):
    """A load generator failed or the path under test did not carry traffic."""


@dataclass
class WrkResult:
    requests: int
    seconds: float
    errors: int
    p50_us: float
    p99_us: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def _finish(p: subprocess.Popen, timeout: float, what: str) -> str:
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise LoadError(f"{what} did not finish within {timeout:.0f}s") from None
    if p.returncode != 0:
        raise LoadError(f"{what} exited with {p.returncode}: {(err or out).strip()[:300]}")
    return out


def wrk(topo: Topology, nodes: Sequence[str], url: str, seconds: int, connections: int,
        delay_ms: float = 0) -> WrkResult:
    """New-connection HTTP load with wrk (one thread per client namespace, each
    ``connections`` concurrent connections, ``Connection: close`` on every request).
    With ``delay_ms`` each connection waits that long before its next request."""
    env = {**os.environ, "BENCH_DELAY_MS": str(delay_ms)}
    procs = [topo.popen(n, ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout",
                            "2s", "-s", str(WRK_SCRIPT), url],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for n in nodes]
    total = WrkResult(0, 0.0, 0, 0.0, 0.0)
    p50s, p99s = [], []
    for n, p in zip(nodes, procs, strict=True):
        out = _finish(p, seconds + 15, f"wrk in {n}")
        m = _BENCH_LINE.search(out)
        if not m:
            raise LoadError(f"wrk in {n} printed no summary: {out.strip()[:300]}")
        f = {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
        total.requests += f["requests"]
        total.seconds = max(total.seconds, f["duration_us"] / 1e6)
        total.errors += f["connect"] + f["read"] + f["write"] + f["status"] + f["timeout"]
        p50s.append(f["p50_us"])
        p99s.append(f["p99_us"])
    # rate = sum of per-client rates; the clients ran concurrently for ~the same time
    total.p50_us = max(p50s)
    total.p99_us = max(p99s)
    return total


# --- UDP -------------------------------------------------------------------------------


def snmp(ns: str, group: str) -> dict[str, int]:
    """One group ("Ip", "Udp", ...) of the SNMP MIB of namespace ``ns``."""
    with netns.inside(ns), open("/proc/thread-self/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith(f"{group}:")]
    return dict(zip(rows[0][1:], map(int, rows[1][1:]), strict=True))


def _udp_counters(ns: str) -> tuple[int, int]:
    """(datagrams that reached a UDP socket, datagrams with a bad checksum) in ``ns``."""
    u = snmp(ns, "Udp")
    # The sink never reads: datagrams land in RcvbufErrors once its buffer is full.
    return u["InDatagrams"] + u["RcvbufErrors"], u["InCsumErrors"]


@dataclass
class UdpResult:
    sent: int
    delivered: int
    seconds: float
    bad_checksums: int
    per_backend: list[int] = field(default_factory=list)  # delivered, by topo.backends

    @property
    def pps(self) -> float:
        return self.delivered / self.seconds if self.seconds else 0.0


def udp_flood(topo: Topology, nodes: Sequence[str], dst: str, port: int,
              seconds: float) -> UdpResult:
    """One UDP flood process per client namespace; counts what reached the backends."""
    backends = [b.ns for b in topo.backends]
    before = [_udp_counters(ns) for ns in backends]
    argv = [sys.executable, "-m", "bench.udpflood", "--dst", dst, "--port", str(port),
            "--seconds", str(seconds)]
    procs = [topo.popen(n, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                        cwd=REPO) for n in nodes]
    sent, longest = 0, 0.0
    for n, p in zip(nodes, procs, strict=True):
        out = _finish(p, seconds + 15, f"UDP flood in {n}")
        f = dict(kv.split("=") for kv in out.split())
        sent += int(f["sent"])
        longest = max(longest, float(f["seconds"]))
    time.sleep(0.05)  # let the last datagrams drain through the backlog queues
    after = [_udp_counters(ns) for ns in backends]
    per_backend = [a[0] - b[0] for a, b in zip(after, before, strict=True)]
    bad = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
    return UdpResult(sent, sum(per_backend), longest, bad, per_backend)


# --- bulk TCP ----------------------------------------------------------------------------


def bulk(topo: Topology, node: str, dst: str, port: int, seconds: float) -> float:
    """Receive one TCP stream for ``seconds``; returns bits per second."""
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    with netns.inside(topo.ns_of(node)):
        s = socket.create_connection((dst, port), timeout=2)
    with s:
        got = 0
        start = time.perf_counter()
        deadline = start + seconds
        while (now := time.perf_counter()) < deadline:
            n = s.recv_into(view)
            if n == 0:
                raise LoadError(f"bulk stream from {dst}:{port} closed early")
            got += n
    return got * 8 / (now - start)


# --- latency -----------------------------------------------------------------------------

_REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"


@dataclass
class Latency:
    """Sequential connections: each one's connect() time (SYN to SYN-ACK, as the client
    sees it) and its total (connect + request + response + close), in microseconds."""

    connect_us: list[float]
    total_us: list[float]

    @staticmethod
    def percentile(values: Sequence[float], q: float) -> float | None:
        s = sorted(values)
        return s[min(len(s) - 1, int(len(s) * q))] if s else None


def latency(topo: Topology, node: str, dst: str, port: int, count: int,
            max_seconds: float) -> Latency:
    """Sequential new connections, one at a time: microseconds from connect() to the
    server's close after a full response (connect + request + response), and of connect()
    alone, so a tail can be placed in the handshake or after it."""
    out = Latency([], [])
    deadline = time.monotonic() + max_seconds
    with netns.inside(topo.ns_of(node)):
        while len(out.total_us) < count and time.monotonic() < deadline:
            t0 = time.perf_counter_ns()
            with socket.create_connection((dst, port), timeout=2) as s:
                t_conn = time.perf_counter_ns()
                s.sendall(_REQUEST)
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
            t1 = time.perf_counter_ns()
            if not data.startswith(b"HTTP/1.1 200"):
                raise LoadError(f"unexpected response from {dst}:{port}: {data[:80]!r}")
            out.connect_us.append((t_conn - t0) / 1000)
            out.total_us.append((t1 - t0) / 1000)
    return out



def tcp_resent(namespaces: Sequence[str]) -> dict[str, int]:
    """Retransmitted segments and SYNs, summed over ``namespaces`` (absolute counters)."""
    total = dict.fromkeys(P.TCP_RESENT, 0)
    for ns in namespaces:
        for k, v in P.tcp_counters(ns).items():
            total[k] += v
    return total
