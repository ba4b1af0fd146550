"""The load balancers compared, each switchable on and off on the same lab.

Every contender serves the same three services on the VIP (HTTP 80 -> backends' 8080,
UDP 9000, bulk TCP 5001) over the same backends with the same weights, and only one is
active at a time:

- ``direct``: no load balancer; clients talk to backend 1 (routed through the LB
  namespace by the kernel, with no NAT): the ceiling.
- ``lbtui``: the XDP datapath attached (native mode) to every LB interface, listen entries
  per client link; ``lbtui-generic`` is the same program in generic (skb) mode, which on
  veth avoids the copy into an XDP buffer and the extra NAPI hop that native mode costs.
  On a shape (``tests/topologies/shapes.py``) lbtui runs as operators run it instead:
  ``lbtui serve`` on the shape's interfaces, ``xdp_mode = "auto"`` (the default) for
  ``lbtui`` and ``"generic"`` for ``lbtui-generic``.
- ``nftables``: DNAT in the LB namespace's prerouting hook, ``numgen random`` over the same
  weights; conntrack un-NATs the replies.
- ``haproxy``: HAProxy in TCP mode bound on the VIP, weighted round robin. It has no UDP.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from lbtui import abi, netns
from lbtui import maps as M
from lbtui.datapath import egress
from lbtui.lab.topology import Topology, attach_datapath
from lbtui.targets import TargetGroup
from tests.topologies.serving import Served, serving, write_config
from tests.topologies.shapes import Shape

WEIGHTS = (50, 30, 20)
HTTP_VIP_PORT = 80
HTTP_PORT = 8080
UDP_PORT = 9000
BULK_PORT = 5001
NFT_TABLE = "lbtui_bench"


class ContenderError(RuntimeError):
    """A contender could not be switched on, or does not forward correctly."""


class Contender:
    name = "?"
    udp = True

    def __init__(self, topo: Topology) -> None:
        self.topo = topo

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def lb_pids(self) -> list[int]:
        """Processes that are the load balancer (for a CPU breakdown); none in-kernel."""
        return []

    def address(self) -> str:
        return self.topo.vip

    def http_target(self) -> tuple[str, int]:
        return self.address(), HTTP_VIP_PORT

    def udp_target(self) -> tuple[str, int]:
        return self.address(), UDP_PORT

    def bulk_target(self) -> tuple[str, int]:
        return self.address(), BULK_PORT


class Direct(Contender):
    name = "direct"

    def address(self) -> str:
        return self.topo.backends[0].ip

    def http_target(self) -> tuple[str, int]:
        return self.address(), HTTP_PORT


class Lbtui(Contender):
    """lbtui's XDP datapath; the program is loaded once, attached only while active."""

    name = "lbtui"

    def __init__(self, topo: Topology, datapath: object, stats: bool = False,
                 mode: str = "native") -> None:
        super().__init__(topo)
        self.datapath = datapath
        self.mode = mode
        if mode != "native":
            self.name = f"lbtui-{mode}"
        ms = datapath.maps  # type: ignore[attr-defined]
        targets = [b.ip for b in topo.backends]
        stat = abi.ROUTE_F_STATS if stats else 0
        for c in topo.clients:
            ifindex = topo.lb_ifindex(c.lb_ifname)
            for port, backend_port, proto in ((HTTP_VIP_PORT, HTTP_PORT, abi.ROUTE_F_TCP),
                                              (BULK_PORT, BULK_PORT, abi.ROUTE_F_TCP),
                                              (UDP_PORT, UDP_PORT, abi.ROUTE_F_UDP)):
                group = TargetGroup.of([(ip, backend_port, w)
                                        for ip, w in zip(targets, WEIGHTS, strict=False)])
                M.add_listen_port_weighted(ms.listen_map, ifindex, port, group, stat | proto)

    def start(self) -> None:
        attach_datapath(self.topo, self.datapath, mode=self.mode)
        with netns.inside(self.topo.lb_ns):     # what serve does: verified egress only
            egress.sync(self.datapath.maps, generic_only=self.mode == "generic")  # type: ignore[attr-defined]

    def stop(self) -> None:
        self.datapath.detach_all()  # type: ignore[attr-defined]


def listeners_toml(topo: Topology) -> str:
    """The three services as lbtui config listeners (same targets and weights as the other
    contenders)."""
    out = []
    for port, backend_port, proto in ((HTTP_VIP_PORT, HTTP_PORT, "tcp"),
                                      (BULK_PORT, BULK_PORT, "tcp"), (UDP_PORT, UDP_PORT, "udp")):
        targets = ", ".join(f'{{ ip = "{b.ip}", port = {backend_port}, weight = {w} }}'
                            for b, w in zip(topo.backends, WEIGHTS, strict=False))
        out.append(f'[[listener]]\nport = {port}\nprotocol = "{proto}"\n'
                   f"targets = [{targets}]\n")
    return "\n".join(out)


class ServedLbtui(Contender):
    """lbtui as an operator runs it: ``lbtui serve`` on a shape's interfaces
    (``tests/topologies/shapes.py``), in ``mode``; started and stopped with each round."""

    def __init__(self, shape: Shape, workdir: Path, mode: str = "auto") -> None:
        super().__init__(shape.topo)
        self.name = "lbtui" if mode == "auto" else f"lbtui-{mode}"
        self.instance = f"{shape.lab}-{mode}"
        self.config = write_config(shape, workdir, self.instance, mode,
                                   listeners_toml(shape.topo))
        self._running = ExitStack()
        self.served: Served | None = None

    def start(self) -> None:
        self.served = self._running.enter_context(serving(self.config, self.instance))

    def stop(self) -> None:
        self._running.close()
        self.served = None

    def lb_pids(self) -> list[int]:
        return [self.served.proc.pid] if self.served else []


def _numgen_map(topo: Topology) -> str:
    lo, parts = 0, []
    for b, w in zip(topo.backends, WEIGHTS, strict=False):
        parts.append(f"{lo}-{lo + w - 1} : {b.ip}")
        lo += w
    return f"numgen random mod {lo} map {{ {', '.join(parts)} }}"


def nft_ruleset(topo: Topology) -> str:
    m = _numgen_map(topo)
    return f"""table ip {NFT_TABLE} {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr {topo.vip} tcp dport {HTTP_VIP_PORT} dnat to {m} : {HTTP_PORT}
    ip daddr {topo.vip} tcp dport {BULK_PORT} dnat to {m} : {BULK_PORT}
    ip daddr {topo.vip} udp dport {UDP_PORT} dnat to {m} : {UDP_PORT}
  }}
}}
"""


class Nftables(Contender):
    name = "nftables"

    def __init__(self, topo: Topology, workdir: Path) -> None:
        super().__init__(topo)
        self.rules = workdir / "nftables.conf"
        self.rules.write_text(nft_ruleset(topo))

    def start(self) -> None:
        self.topo.run("lb", ["nft", "-f", str(self.rules)])

    def stop(self) -> None:
        self.topo.run("lb", ["nft", "delete", "table", "ip", NFT_TABLE], check=False)


def haproxy_config(topo: Topology, threads: int) -> str:
    def servers(port: int) -> str:
        return "\n".join(f"  server b{i} {b.ip}:{port} weight {w}"
                         for i, (b, w) in enumerate(zip(topo.backends, WEIGHTS,
                                                        strict=False), 1))

    return f"""global
  nbthread {threads}
  maxconn 4000
defaults
  mode tcp
  balance roundrobin
  timeout connect 2s
  timeout client 10s
  timeout server 10s
listen http
  bind {topo.vip}:{HTTP_VIP_PORT}
{servers(HTTP_PORT)}
listen bulk
  bind {topo.vip}:{BULK_PORT}
{servers(BULK_PORT)}
"""


class Haproxy(Contender):
    name = "haproxy"
    udp = False

    def __init__(self, topo: Topology, workdir: Path, threads: int) -> None:
        super().__init__(topo)
        self.cfg = workdir / "haproxy-lb.cfg"
        self.cfg.write_text(haproxy_config(topo, threads))
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = self.topo.popen("lb", ["haproxy", "-db", "-f", str(self.cfg)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_listening(self.topo, self.topo.clients[0].node, *self.http_target(), self.proc)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.pid in self.topo.pids:
            self.topo.pids.remove(self.proc.pid)
            self.topo.save()
        self.proc = None

    def lb_pids(self) -> list[int]:
        return [self.proc.pid] if self.proc else []


def wait_listening(topo: Topology, node: str, ip: str, port: int,
                   proc: subprocess.Popen | None = None, timeout: float = 10) -> None:
    """Wait until ``ip:port`` accepts a connection from ``node``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with netns.inside(topo.ns_of(node)):
                socket.create_connection((ip, port), timeout=1).close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise ContenderError(f"{proc.args} exited with {proc.returncode}: "
                                     f"{err.strip()[:300]}") from None
            if time.monotonic() > deadline:
                raise ContenderError(f"{ip}:{port} not reachable from {node} after "
                                     f"{timeout:.0f}s") from None
            time.sleep(0.05)


def check_http(topo: Topology, c: Contender, requests: int = 20) -> dict[str, int]:
    """Fetch through the contender; every answer must name a backend, and a load balancer
    must have spread ``requests`` new connections over more than one backend."""
    ip, port = c.http_target()
    seen: dict[str, int] = {}
    names = {b.node for b in topo.backends}
    with netns.inside(topo.clients[0].ns):
        for _ in range(requests):
            with socket.create_connection((ip, port), timeout=2) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: check\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
            body = data.partition(b"\r\n\r\n")[2].decode(errors="replace").strip()
            if body not in names:
                raise ContenderError(f"{c.name}: unexpected answer {data[:120]!r}")
            seen[body] = seen.get(body, 0) + 1
    if not isinstance(c, Direct) and len(seen) < 2:
        raise ContenderError(f"{c.name}: {requests} connections all went to {seen}")
    return seen


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="lbtui-bench-"))


def nproc() -> int:
    return os.cpu_count() or 1
