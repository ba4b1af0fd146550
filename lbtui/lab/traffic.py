"""Background traffic for labs: short HTTP requests, long-lived TCP connections and UDP.

One generator process runs in each client namespace (``start_traffic`` starts them; they
are lab processes, so ``teardown`` kills them):

    python -m lbtui.lab.traffic --vip 198.18.0.10 --http-rate 20 --echo-conns 4 \\
        --udp-rate 10 --duration 600 --stats FILE

Every reply names the backend that produced it (``lbtui.lab.servers``), so the generator
counts answers per backend: a drain or a weight change shows up as a shift in those
counts. Mix:

- HTTP: ``--http-rate`` short requests per second to VIP:``--http-port``, one connection
  each (``Connection: close``), so each is a new flow that the weights decide.
- Echo: ``--echo-conns`` long-lived connections to VIP:``--echo-port``, one line every
  ``--echo-interval`` s; each lives about ``--echo-life`` s, then reconnects (a drained
  backend keeps its established connections until they end: that is the point).
- UDP: ``--udp-rate`` datagrams per second to VIP:``--udp-port`` in flows of
  ``UDP_FLOW_LEN`` datagrams (one source port per flow), answered by the backend.
- TLS (optional): ``--tls-rate`` handshakes per second to VIP:``--tls-port`` with SNI
  names from ``--tls-hosts``; the backend answers with its name.

Everything is bounded: rates and connection counts are capped (``LIMITS``), in-flight
work is capped, and the process stops after ``--duration`` seconds. Stats (totals, errors,
rates over the last few seconds, answers per backend) are written as JSON once a second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from lbtui.files import atomic_write

KINDS = ("http", "echo", "udp", "tls")
UDP_FLOW_LEN = 5          # datagrams per UDP flow (one source port each)
TIMEOUT = 2.0             # per connect / reply
MAX_INFLIGHT = 64         # concurrent HTTP requests / UDP flows / TLS handshakes
RATE_WINDOW = 5           # seconds over which rates and recent shares are computed

# Upper bounds: the lab shares the machine with everything else on it.
LIMITS = {"http_rate": 500.0, "udp_rate": 1000.0, "tls_rate": 100.0, "echo_conns": 100,
          "duration": 86400.0}


@dataclass
class TrafficSpec:
    """What one generator sends. Rates are per second; 0 turns a kind off."""

    vip: str = "198.18.0.10"
    http_rate: float = 20.0
    http_port: int = 80
    echo_conns: int = 4
    echo_port: int = 7000
    echo_interval: float = 0.5
    echo_life: float = 20.0
    udp_rate: float = 10.0
    udp_port: int = 9000
    tls_rate: float = 0.0
    tls_port: int = 443
    tls_hosts: list[str] = field(default_factory=list)
    duration: float = 600.0

    def validate(self) -> TrafficSpec:
        for name, cap in LIMITS.items():
            v = getattr(self, name)
            if not 0 <= v <= cap:
                raise ValueError(f"traffic {name.replace('_', '-')}: {v} must be 0..{cap:g}")
        if self.duration <= 0:
            raise ValueError("traffic duration: must be > 0 seconds")
        for name in ("http_port", "echo_port", "udp_port", "tls_port"):
            if not 1 <= getattr(self, name) <= 65535:
                raise ValueError(f"traffic {name.replace('_', '-')}: must be 1..65535")
        if not 0.05 <= self.echo_interval <= 60 or not 1 <= self.echo_life <= 3600:
            raise ValueError("traffic echo: interval 0.05..60 s, life 1..3600 s")
        if self.tls_rate and not self.tls_hosts:
            raise ValueError("traffic tls-rate > 0 needs --tls-hosts")
        return self

    def argv(self) -> list[str]:
        """Command-line flags that reproduce this spec."""
        out: list[str] = []
        for f in fields(self):
            v = getattr(self, f.name)
            flag = "--" + f.name.replace("_", "-")
            out += [flag, ",".join(v) if isinstance(v, list) else str(v)]
        return out

    def with_(self, **changes: Any) -> TrafficSpec:
        return TrafficSpec(**{**asdict(self), **changes})


class Stats:
    """Counters per kind and backend, and a short history for rates and recent shares."""

    def __init__(self, client: str, spec: TrafficSpec) -> None:
        self.client = client
        self.spec = spec
        self.started = time.time()
        self.ok: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.by_backend: dict[str, Counter[str]] = {k: Counter() for k in KINDS}
        self.last_error: dict[str, str] = {}
        self.echo_open: Counter[str] = Counter()
        self.done = False
        self._history: deque[tuple[float, dict[str, int], dict[str, Counter[str]]]] = deque(
            maxlen=RATE_WINDOW + 1)

    def success(self, kind: str, backend: str) -> None:
        self.ok[kind] += 1
        self.by_backend[kind][backend] += 1

    def failure(self, kind: str, err: BaseException | str) -> None:
        self.errors[kind] += 1
        self.last_error[kind] = err if isinstance(err, str) else (
            f"{type(err).__name__}: {err}".rstrip(": "))

    def tick(self) -> None:
        self._history.append((time.monotonic(), dict(self.ok),
                              {k: Counter(c) for k, c in self.by_backend.items()}))

    def snapshot(self) -> dict[str, Any]:
        first = self._history[0] if self._history else (time.monotonic(), {}, {})
        span = max(time.monotonic() - first[0], 1e-9)
        kinds = {}
        for k in KINDS:
            recent = self.by_backend[k] - first[2].get(k, Counter())
            kinds[k] = {"ok": self.ok[k], "errors": self.errors[k],
                        "rate": round((self.ok[k] - first[1].get(k, 0)) / span, 2)
                        if len(self._history) > 1 else 0.0,
                        "by_backend": dict(sorted(self.by_backend[k].items())),
                        "recent_by_backend": dict(sorted(recent.items())),
                        "last_error": self.last_error.get(k, "")}
        return {"client": self.client, "pid": os.getpid(), "started": self.started,
                "updated": time.time(), "ends": self.started + self.spec.duration,
                "done": self.done, "spec": asdict(self.spec), "kinds": kinds,
                "echo_open": dict(sorted((b, n) for b, n in self.echo_open.items() if n))}


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    atomic_write(path, json.dumps(data, indent=1))


def backend_from_http(resp: bytes) -> str:
    """The backend named by a lab HTTP reply (X-Backend header, else the body)."""
    head, _, body = resp.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(f"unexpected reply {head[:40]!r}")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"x-backend":
            return value.strip().decode()
    return body.split()[0].decode() if body.split() else "?"


class Generator:
    def __init__(self, spec: TrafficSpec, stats: Stats) -> None:
        self.spec = spec
        self.stats = stats
        self.stop = asyncio.Event()
        self.inflight = asyncio.Semaphore(MAX_INFLIGHT)
        self.tasks: set[asyncio.Task[None]] = set()
        self.tls_ctx = ssl.create_default_context()
        # The demo's backends use a throwaway CA; the point is routing by SNI, not trust.
        self.tls_ctx.check_hostname = False
        self.tls_ctx.verify_mode = ssl.CERT_NONE

    # --- scheduling ----------------------------------------------------------------

    async def _paced(self, rate: float, kind: str, make: Any) -> None:
        """Start ``make()`` ``rate`` times a second; skip (and count) when saturated."""
        if rate <= 0:
            return
        loop = asyncio.get_running_loop()
        period, next_t = 1.0 / rate, loop.time()
        while not self.stop.is_set():
            if self.inflight.locked():
                self.stats.failure(kind, "skipped: too many requests in flight")
            else:
                self._spawn(self._guarded(make))
            next_t = max(next_t + period, loop.time() - 1.0)  # no burst after a stall
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), max(0.0, next_t - loop.time()))

    async def _guarded(self, make: Any) -> None:
        async with self.inflight:
            await make()

    def _spawn(self, coro: Any) -> None:
        t = asyncio.create_task(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    # --- kinds -----------------------------------------------------------------------

    async def http_once(self) -> None:
        w = None
        try:
            r, w = await asyncio.wait_for(
                asyncio.open_connection(self.spec.vip, self.spec.http_port), TIMEOUT)
            w.write(b"GET / HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n")
            resp = await asyncio.wait_for(r.read(4096), TIMEOUT)
            self.stats.success("http", backend_from_http(resp))
        except (OSError, TimeoutError, ConnectionError, ValueError) as e:
            self.stats.failure("http", e)
        finally:
            if w:
                w.close()

    async def echo_conn(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.stop.is_set():
            w, backend = None, ""
            try:
                r, w = await asyncio.wait_for(
                    asyncio.open_connection(self.spec.vip, self.spec.echo_port), TIMEOUT)
                ends = loop.time() + self.spec.echo_life * random.uniform(0.5, 1.5)
                n = 0
                while not self.stop.is_set() and loop.time() < ends:
                    w.write(b"ping %d\n" % n)
                    await w.drain()
                    line = await asyncio.wait_for(r.readline(), TIMEOUT)
                    if not line.endswith(b"\n"):
                        raise ConnectionError("connection closed by the peer")
                    name = line.split(b" ", 1)[0].decode()
                    if not backend:
                        backend = name
                        self.stats.echo_open[backend] += 1
                    self.stats.success("echo", name)
                    n += 1
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), self.spec.echo_interval)
            except (OSError, TimeoutError, ConnectionError, UnicodeError) as e:
                self.stats.failure("echo", e)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), 1.0)
            finally:
                if backend:
                    self.stats.echo_open[backend] -= 1
                if w:
                    w.close()

    async def udp_flow(self) -> None:
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            # Connected: only replies from VIP:port are accepted, which checks the SNAT.
            s.connect((self.spec.vip, self.spec.udp_port))
            for i in range(UDP_FLOW_LEN):
                if self.stop.is_set():
                    return
                t0 = loop.time()
                try:
                    await loop.sock_sendall(s, b"ping %d" % i)
                    data = await asyncio.wait_for(loop.sock_recv(s, 512), TIMEOUT)
                    self.stats.success("udp", data.split()[0].decode() if data else "?")
                except (OSError, TimeoutError, UnicodeError) as e:
                    self.stats.failure("udp", e)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), max(0.0, 1.0 - (loop.time() - t0)))

    async def tls_once(self) -> None:
        host = random.choice(self.spec.tls_hosts)
        w = None
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(
                self.spec.vip, self.spec.tls_port, ssl=self.tls_ctx, server_hostname=host),
                TIMEOUT)
            w.write(b"GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host.encode())
            resp = await asyncio.wait_for(r.read(4096), TIMEOUT)
            self.stats.success("tls", backend_from_http(resp))
        except (OSError, TimeoutError, ConnectionError, ValueError, ssl.SSLError) as e:
            self.stats.failure("tls", e)
        finally:
            if w:
                w.close()

    # --- run -------------------------------------------------------------------------

    async def run(self) -> None:
        s = self.spec
        jobs = [self._paced(s.http_rate, "http", self.http_once),
                self._paced(s.udp_rate / UDP_FLOW_LEN, "udp", self.udp_flow),
                self._paced(s.tls_rate, "tls", self.tls_once)]
        jobs += [self.echo_conn() for _ in range(s.echo_conns)]
        runners = [asyncio.create_task(j) for j in jobs]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), s.duration)
        self.stop.set()
        await asyncio.wait(runners + list(self.tasks), timeout=TIMEOUT + 1)
        for t in runners + list(self.tasks):
            t.cancel()


async def _report(stats: Stats, path: Path | None, stop: asyncio.Event) -> None:
    while True:
        stats.tick()
        if path:
            write_json(path, stats.snapshot())
        if stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def run(spec: TrafficSpec, client: str, stats_path: Path | None) -> Stats:
    stats = Stats(client, spec.validate())
    gen = Generator(spec, stats)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, gen.stop.set)
    reporter = asyncio.create_task(_report(stats, stats_path, gen.stop))
    await gen.run()
    stats.done = True
    await reporter
    if stats_path:
        write_json(stats_path, stats.snapshot())
    return stats


# --- starting generators in a lab (the parent side) -------------------------------------


def stats_path(lab_dir: Path, node: str) -> Path:
    return lab_dir / f"traffic-{node}.json"


def start_traffic(topo: Any, specs: Mapping[str, TrafficSpec], lab_dir: Path) -> list[Any]:
    """Start one generator per client node in ``specs`` (node -> spec) inside the lab."""
    from lbtui.lab.topology import python_argv

    procs = []
    for node, spec in specs.items():
        spec.validate()
        path = stats_path(lab_dir, node)
        path.unlink(missing_ok=True)
        log = (lab_dir / f"traffic-{node}.log").open("wb")
        procs.append(topo.popen(node, python_argv(
            "lbtui.lab.traffic", "--client", node, "--stats", str(path), *spec.argv()),
            stdout=subprocess.DEVNULL, stderr=log))
        log.close()
    return procs


def read_traffic(lab_dir: Path) -> dict[str, dict[str, Any]]:
    """The latest stats of every generator of a lab, by client node."""
    out = {}
    for p in sorted(lab_dir.glob("traffic-*.json")) if lab_dir.exists() else []:
        with contextlib.suppress(OSError, ValueError):
            d = json.loads(p.read_text())
            out[d["client"]] = d
    return out


def parse_args(argv: list[str] | None = None) -> tuple[TrafficSpec, str, Path | None]:
    """(spec, client name, stats path) from the command line; bad values exit 2."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--client", default=socket.gethostname(), help="name used in stats")
    ap.add_argument("--stats", type=Path, help="JSON stats file, rewritten every second")
    defaults = TrafficSpec()
    for f in fields(TrafficSpec):
        default = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        if f.name == "tls_hosts":
            ap.add_argument(flag, default="", help="comma-separated SNI names")
        else:
            ap.add_argument(flag, type=type(default), default=default)
    a = ap.parse_args(argv)
    kw = {f.name: getattr(a, f.name) for f in fields(TrafficSpec)}
    kw["tls_hosts"] = [h for h in a.tls_hosts.split(",") if h]
    try:
        spec = TrafficSpec(**kw).validate()
    except ValueError as e:
        ap.error(str(e))
    return spec, a.client, a.stats


def main(argv: list[str] | None = None) -> None:
    spec, client, path = parse_args(argv)
    asyncio.run(run(spec, client, path))


if __name__ == "__main__":
    main()
