"""Real clients for the shapes: curl and Python sockets in client namespaces, each answer
naming the backend that produced it (``lbtui.lab.servers``), and the TCP counters that show
a lost SYN or SYN-ACK (a retransmitted SYN)."""

from __future__ import annotations

import math
import socket
import ssl
import subprocess
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from lbtui import netns

CONNECT_TIMEOUT = 2.0
SLOW_CONNECT = 0.5      # a retransmitted SYN costs at least 1 s: anything this slow lost one


@dataclass
class CurlRun:
    """Sequential HTTP requests by one curl process, one new connection each."""

    answers: list[tuple[str, int]]   # (backend named in the body, client port)
    returncode: int
    stderr: str


def curl_argv(ns: str, urls: Sequence[str], *extra: str) -> list[str]:
    """curl in ``ns`` fetching every URL on a connection of its own (``Connection: close``);
    after each body it prints ``|<client port>|<status>``; it stops at the first failure."""
    return ["ip", "netns", "exec", ns, "curl", "-sS", "--fail-early",
            "--connect-timeout", f"{CONNECT_TIMEOUT:g}", "--max-time", "5",
            "-H", "Connection: close", "-w", "|%{local_port}|%{http_code}\n", *extra, *urls]


def parse_curl(out: str) -> list[tuple[str, int]]:
    answers, body = [], ""
    for line in out.splitlines():
        if line.startswith("|"):
            _, port, status = line.split("|")
            answers.append((body if status == "200" else f"HTTP {status}", int(port)))
        else:
            body = line.strip()
    return answers


def curl_many(runs: Mapping[str, list[str]], timeout: float = 120) -> dict[str, CurlRun]:
    """Run one curl per namespace (argv from ``curl_argv``) concurrently."""
    procs = {ns: subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for ns, argv in runs.items()}
    out = {}
    for ns, p in procs.items():
        try:
            stdout, stderr = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            stdout, stderr = p.communicate()
        out[ns] = CurlRun(parse_curl(stdout), p.returncode, stderr.strip())
    return out


def body_of(response: bytes) -> str:
    head, _, body = response.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        return f"unexpected response {response[:60]!r}"
    return body.decode(errors="replace").strip()


def _read_response(s: socket.socket) -> bytes:
    """One HTTP/1.1 response with a Content-Length (the lab servers always send one)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length and (chunk := s.recv(4096)):
        body += chunk
    return head + b"\r\n\r\n" + body


@dataclass
class Connection:
    """One HTTP exchange on a connection of its own."""

    backend: str
    port: int            # the client's port
    connect_s: float     # connect() until established


def http_exchange(dst: str, port: int, *, client_closes: bool,
                  src: tuple[str, int] | None = None,
                  timeout: float = CONNECT_TIMEOUT) -> Connection:
    """GET / on a new connection. ``client_closes``: HTTP/1.1 keep-alive, then the client
    closes first, so the backend keeps no TIME_WAIT for the 4-tuple; otherwise
    ``Connection: close`` and the backend closes first (and keeps the TIME_WAIT). ``src``:
    bind there first (SO_REUSEADDR: the port may be in the client's TIME_WAIT towards
    another address). Call inside the client's namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.settimeout(timeout)
        if src is not None:
            s.bind(src)
        t0 = time.perf_counter()
        s.connect((dst, port))
        connect_s = time.perf_counter() - t0
        close = b"" if client_closes else b"Connection: close\r\n"
        s.sendall(b"GET / HTTP/1.1\r\nHost: probe\r\n" + close + b"\r\n")
        response = _read_response(s)
        if not client_closes:
            while s.recv(4096):   # until the backend's FIN
                pass
        return Connection(body_of(response), s.getsockname()[1], connect_s)


@dataclass
class UdpRun:
    answers: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    wrong_source: list[tuple[str, int]] = field(default_factory=list)


def udp_exchanges(ns: str, dst: str, port: int, count: int, timeout: float = 1.0,
                  max_lost: int = 3) -> UdpRun:
    """``count`` datagrams, each from a fresh socket (a new flow); the answer must come
    from ``dst:port``. Stops after ``max_lost`` unanswered ones (a black hole). Every
    socket stays open until the end: a closed one's port may be handed out again, and
    two datagrams from one port are one flow, not two."""
    run = UdpRun()
    with netns.inside(ns), ExitStack() as sockets:
        for i in range(count):
            s = sockets.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            s.settimeout(timeout)
            s.sendto(b"probe %d" % i, (dst, port))
            try:
                data, src = s.recvfrom(512)
            except TimeoutError:
                run.lost += 1
                if run.lost >= max_lost:
                    break
                continue
            if src != (dst, port):
                run.wrong_source.append(src)
            run.answers[data.decode(errors="replace")] += 1
    return run


def tls_get(ns: str, dst: str, hostname: str, cafile: Path, port: int = 443,
            timeout: float = CONNECT_TIMEOUT) -> str:
    """One HTTPS exchange with SNI ``hostname`` (certificate verified); the backend's
    name."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    with netns.inside(ns):
        raw = socket.create_connection((dst, port), timeout=timeout)
    with ctx.wrap_socket(raw, server_hostname=hostname) as s:
        s.sendall(f"GET / HTTP/1.1\r\nHost: {hostname}\r\nConnection: close\r\n\r\n"
                  .encode())
        return body_of(_read_response(s))


def nstat(ns: str, *names: str) -> dict[str, int]:
    """Kernel counters of namespace ``ns`` by nstat name (absolute; nstat's history file
    is left alone)."""
    out = subprocess.run(["ip", "netns", "exec", ns, "nstat", "-asz", *names],
                         capture_output=True, text=True, check=True, timeout=10).stdout
    return {f[0]: int(f[1]) for f in (line.split() for line in out.splitlines())
            if len(f) >= 2 and not f[0].startswith("#")}


TCP_RESENT = ("TcpRetransSegs", "TcpExtTCPSynRetrans")


def tcp_counters(ns: str) -> dict[str, int]:
    """Retransmitted segments and SYNs in ``ns``."""
    return nstat(ns, *TCP_RESENT)


def counters_delta(ns: str, before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in nstat(ns, *before).items()}


CLOSING_STATES = ("fin-wait-1", "closing", "last-ack")


def unfinished_closes(ns: str, peer: str) -> list[str]:
    """Sockets in ``ns`` still waiting for ``peer`` to acknowledge their FIN: a close the
    path lost (the FIN is being retransmitted)."""
    argv = ["ip", "netns", "exec", ns, "ss", "-Htan"]
    for state in CLOSING_STATES:
        argv += ["state", state]
    out = subprocess.run([*argv, "dst", peer], capture_output=True, text=True, check=True,
                         timeout=10).stdout
    return [" ".join(line.split()) for line in out.splitlines() if line.strip()]


def split_problems(counts: Counter[str], weights: Mapping[str, int],
                   sigmas: float = 4.5) -> list[str]:
    """Where ``counts`` strays from ``weights`` (percent) by more than ``sigmas`` binomial
    standard deviations; a weight of 0 must get nothing."""
    n = sum(counts.values())
    out = []
    for name, w in weights.items():
        p = w / 100
        expected = n * p
        bound = sigmas * math.sqrt(n * p * (1 - p))
        if abs(counts[name] - expected) > bound or (w == 0 and counts[name]):
            out.append(f"{name}: {counts[name]} of {n}, expected {expected:.0f} "
                       f"+- {bound:.0f}")
    strays = set(counts) - set(weights)
    if strays:
        out.append(f"answers from outside the group: {sorted(strays)}")
    return out
