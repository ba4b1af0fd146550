"""Failover of a cluster lab, measured: stop one node's serve under load.

Before the stop, long-lived echo connections are opened (each round-trips once) and
every client opens new HTTP connections continuously, at a bounded rate. Then one node's
serve is stopped (its announce hook withdraws the node's BGP path) and the new
connections go on until ``settle`` seconds after the router's route has lost the node.
Then every echo connection tries one more round trip. The stop is either a failure
(serve stops; the hook withdraws the path after it) or a drain (the hook withdraws the
path first and stops serve a second later).

Which node a long-lived connection went through is read from the nodes' conntrack before
the stop. (``ip route get`` with the ports does not give the forwarding path's hash.)
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field

from lbtui import netns
from lbtui.lab import cluster as C
from lbtui.lab.topology import Endpoint, Topology, python_argv

MAX_RATE = 200.0        # new connections per second per client
MAX_ECHO = 200
MAX_SECONDS = 60.0


@dataclass
class Attempt:
    t: float            # seconds since the stop (negative: before it)
    ok: bool
    error: str = ""


@dataclass
class Result:
    nodes: int
    stopped: str
    drained: bool                          # planned stop (withdraw first), not a failure
    withdraw_s: float                      # serve stopped -> route without the node
    attempts: list[Attempt] = field(default_factory=list)
    echo_total: int = 0
    echo_stayed: int = 0                   # on a surviving node before the stop
    echo_stayed_ok: int = 0
    echo_moved: int = 0                    # on the stopped node: ECMP must move them
    echo_moved_ok: int = 0

    @property
    def failed(self) -> list[Attempt]:
        return [a for a in self.attempts if not a.ok]

    @property
    def failure_window(self) -> tuple[float, float] | None:
        f = self.failed
        return (min(a.t for a in f), max(a.t for a in f)) if f else None


def holders(topo: Topology, port: int) -> dict[tuple[str, int], str]:
    """(client ip, client port) -> the node whose datapath tracks that connection to
    VIP:``port`` (its conntrack: where the router's ECMP hash sent it)."""
    out: dict[tuple[str, int], str] = {}
    for n in topo.nodes:
        p = subprocess.run(python_argv("lbtui.cli", "ctl", "--json", "--instance",
                                       C.node_instance(topo.lab, n.node), "connections",
                                       "list"), capture_output=True, text=True, timeout=30)
        if p.returncode != 0:
            continue                        # a stopped node holds nothing
        for row in json.loads(p.stdout)["data"]:
            if row["vip_port"] == port:
                out[(row["client_ip"], row["client_port"])] = n.node
    return out


class _Echo:
    def __init__(self, topo: Topology, client: Endpoint) -> None:
        self.client = client
        with netns.inside(client.ns):
            self.sock = socket.create_connection((topo.vip, C.ECHO_LISTEN_PORT), timeout=3)
        self.file = self.sock.makefile("rb")
        self.n = 0
        self.sport = self.sock.getsockname()[1]

    def roundtrip(self) -> bool:
        self.n += 1
        try:
            self.sock.sendall(f"ping {self.n}\n".encode())
            return self.file.readline().decode().strip().endswith(f"ping {self.n}")
        except OSError:
            return False

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _http_once(vip: str, timeout: float) -> str:
    """One new connection to VIP:80, one request; '' if answered, else the error."""
    try:
        with socket.create_connection((vip, C.HTTP_LISTEN_PORT), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        return "" if b" 200 " in data.split(b"\r\n", 1)[0] else "bad answer"
    except OSError as e:
        return type(e).__name__


def _generate(topo: Topology, client: Endpoint, rate: float, t0: list[float],
              stop: threading.Event, out: list[Attempt], timeout: float) -> None:
    netns.enter(client.ns)
    period = 1.0 / rate
    nxt = time.monotonic()
    while not stop.is_set():
        start = time.monotonic()
        err = _http_once(topo.vip, timeout)
        out.append(Attempt(start - t0[0], not err, err))
        nxt += period
        time.sleep(max(0.0, nxt - time.monotonic()))


def measure(topo: Topology, stop_node: str = "node1", rate: float = 50.0,
            echo_conns: int = 40, warmup: float = 1.0, settle: float = 2.0,
            timeout: float = 1.0, drain: bool = False) -> Result:
    """Stop ``stop_node``'s serve under load and count what broke (see the module doc).
    ``rate``: new connections per second per client; ``timeout``: per attempt; ``drain``:
    a planned stop (the node's path withdrawn before its serve stops) instead of serve
    stopping as a failure would."""
    if not 0 < rate <= MAX_RATE or not 0 <= echo_conns <= MAX_ECHO:
        raise ValueError(f"rate 0..{MAX_RATE:g}/s per client, echo_conns 0..{MAX_ECHO}")
    if topo.node(stop_node) not in topo.nodes:
        raise ValueError(f"{stop_node!r} is not a node of lab {topo.lab}")
    survivors = [n.node for n in topo.nodes if n.node != stop_node]
    echoes = [_Echo(topo, topo.clients[i % len(topo.clients)]) for i in range(echo_conns)]
    try:
        alive = [e.roundtrip() for e in echoes]
        held = holders(topo, C.ECHO_LISTEN_PORT)
        before = [held.get((e.client.ip, e.sport), "?") for e in echoes]
        t0 = [time.monotonic() + warmup]   # the stop's time; attempts are relative to it
        attempts: list[Attempt] = []
        stop = threading.Event()
        threads = [threading.Thread(target=_generate, daemon=True, args=(
            topo, c, rate, t0, stop, attempts, timeout)) for c in topo.clients]
        for t in threads:
            t.start()
        time.sleep(warmup)
        t0[0] = time.monotonic()
        if not (C.drain_node if drain else C.stop_serve)(topo, stop_node):
            raise RuntimeError(f"{stop_node}'s serve is not running")
        withdraw = C.wait_paths(topo, survivors, timeout=15)
        time.sleep(settle)
        stop.set()
        for t in threads:
            t.join(timeout + 2)
        result = Result(len(topo.nodes), stop_node, drain, withdraw,
                        sorted(attempts, key=lambda a: a.t))
        for e, was, ok in zip(echoes, before, alive, strict=True):
            if not ok or was == "?":
                continue           # never worked, or no node tracks it: not counted
            result.echo_total += 1
            survived = e.roundtrip()
            if was != stop_node:
                result.echo_stayed += 1
                result.echo_stayed_ok += survived
            else:
                result.echo_moved += 1
                result.echo_moved_ok += survived
        return result
    finally:
        for e in echoes:
            e.close()
