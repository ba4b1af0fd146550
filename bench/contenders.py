"""The load balancers compared, each switchable on and off on the same lab.

Every contender serves the same three services on the VIP (HTTP 80 -> backends' 8080,
UDP 9000, bulk TCP 5001) over the same backends with the same weights, and only one is
active at a time:

- ``direct``: no load balancer; clients talk to backend 1 (routed through the LB
  namespace by the kernel, with no NAT): the ceiling of kernel forwarding.
- ``direct-spread``: no load balancer either, over the three backends: every backend holds
  an address on its loopback that the LB namespace routes by a weighted multipath route
  (the balancers' weights, hashed on the 5-tuple), so each new connection or UDP flow goes
  to one backend by weight with plain forwarding, no NAT and no conntrack: the ceiling
  for the traffic the balancers carry, three backends sharing the machine, not one.
- ``xdp-redirect``: the same direct traffic, forwarded by an XDP program that does nothing
  but route and redirect (bpf_fib_lookup, MAC rewrite, bpf_redirect) on every LB interface
  in native mode: the ceiling of XDP forwarding on veth, i.e. what veth's XDP path costs
  before lbtui adds a parse, conntrack and NAT (lab only).
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

from lbtui import abi, bpfsys, netns
from lbtui import maps as M
from lbtui.datapath import egress, loader
from lbtui.lab.topology import Topology, attach_datapath
from lbtui.targets import TargetGroup
from tests.topologies.serving import Served, serving, write_config
from tests.topologies.shapes import Shape

WEIGHTS = (50, 30, 20)
HTTP_VIP_PORT = 80
HTTP_PORT = 8080
# Contenders without NAT reach backend 1 on its own port: a backend 4-tuple that a NAT
# contender's connection left in TIME_WAIT is then never met by a direct connection, whose
# SYN (a different client-side tuple, so an unrelated sequence number and timestamp) the
# backend would answer with an ACK, costing the client an RST and a SYN resent ~8 ms later:
# one contender's leftovers would show as another's latency tail.
DIRECT_HTTP_PORT = 8081
SINGLE_HTTP_PORT = 8082      # lbtui-single's target port (its own tuples, for the same reason)
SPREAD_HTTP_PORT = 8083      # direct-spread's port on every backend (no NAT, own tuples)
# direct-spread's address, on every backend's loopback (inside the lab's 198.18.0.0/15, which
# every namespace routes through the LB namespace; nothing else uses it)
SPREAD_IP = "198.18.0.20"
UDP_PORT = 9000
BULK_PORT = 5001
ECHO_PORT = 7000        # long-lived, mostly idle connections (bench.synflood)
# The balanced services: (VIP port, backend port, protocol); HTTP's backend port may differ
# per contender (see DIRECT_HTTP_PORT, SINGLE_HTTP_PORT).
TCP_SERVICES = ((BULK_PORT, BULK_PORT), (ECHO_PORT, ECHO_PORT))
NFT_TABLE = "lbtui_bench"


class ContenderError(RuntimeError):
    """A contender could not be switched on, or does not forward correctly."""


class Contender:
    name = "?"
    udp = True
    spreads = True          # spreads connections over the backends by weight

    def __init__(self, topo: Topology) -> None:
        self.topo = topo

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def lb_pids(self) -> list[int]:
        """Processes that are the load balancer (for a CPU breakdown); none in-kernel."""
        return []

    def close(self) -> None:
        """Release what the contender holds for the whole run (after its last stop)."""

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
    spreads = False

    def address(self) -> str:
        return self.topo.backends[0].ip

    def http_target(self) -> tuple[str, int]:
        return self.address(), DIRECT_HTTP_PORT


class DirectSpread(Contender):
    """No load balancer, three backends: ``SPREAD_IP`` on every backend's loopback, and in
    the LB namespace a multipath route to it with one nexthop per backend, weighted by
    WEIGHTS, hashed on the 5-tuple (``fib_multipath_hash_policy = 1``). Each new
    connection or UDP flow goes to one backend by weight, as a balancer would send it, but
    the kernel only routes it: no NAT, no conntrack. The clients run exactly what they run
    for every other contender (the same wrk, flood and probe processes), so the lab CPU
    and connections/s differ from the balancers' only by the balancing. A single stream
    (bulk) goes to one backend, as through a balancer. Lab only: a shape's backends are
    addressed and routed the shape's own way."""

    name = "direct-spread"

    def __init__(self, topo: Topology) -> None:
        super().__init__(topo)
        self._hash_policy = "0"

    def start(self) -> None:
        for b in self.topo.backends:
            self.topo.run(b.node, ["ip", "addr", "replace", f"{SPREAD_IP}/32", "dev", "lo"])
        key = "net.ipv4.fib_multipath_hash_policy"
        self._hash_policy = self.topo.run("lb", ["sysctl", "-n", key]).stdout.strip()
        self.topo.run("lb", ["sysctl", "-qw", f"{key}=1"])    # L4: per connection or flow
        hops = [arg for b, w in zip(self.topo.backends, WEIGHTS, strict=False)
                for arg in ("nexthop", "via", b.ip, "dev", b.lb_ifname, "weight", str(w))]
        self.topo.run("lb", ["ip", "route", "replace", f"{SPREAD_IP}/32", *hops])

    def stop(self) -> None:
        self.topo.run("lb", ["ip", "route", "del", f"{SPREAD_IP}/32"], check=False)
        self.topo.run("lb", ["sysctl", "-qw",
                             f"net.ipv4.fib_multipath_hash_policy={self._hash_policy}"],
                      check=False)
        for b in self.topo.backends:
            self.topo.run(b.node, ["ip", "addr", "del", f"{SPREAD_IP}/32", "dev", "lo"],
                          check=False)

    def address(self) -> str:
        return SPREAD_IP

    def http_target(self) -> tuple[str, int]:
        return SPREAD_IP, SPREAD_HTTP_PORT


XDP_REDIRECT_SRC = b"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>

int xdp_redirect_only(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
        return XDP_PASS;
    struct iphdr *iph = (void *)(eth + 1);
    if ((void *)(iph + 1) > end || iph->ttl <= 1)
        return XDP_PASS;
    struct bpf_fib_lookup fib = {};
    fib.family = 2;                     /* AF_INET */
    fib.tos = iph->tos;
    fib.l4_protocol = iph->protocol;
    fib.tot_len = bpf_ntohs(iph->tot_len);
    fib.ipv4_src = iph->saddr;
    fib.ipv4_dst = iph->daddr;
    fib.ifindex = ctx->ingress_ifindex;
    if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
        return XDP_PASS;
    __u32 check = iph->check;
    check += bpf_htons(0x0100);
    iph->check = (__u16)(check + (check >= 0xFFFF));
    iph->ttl--;
    __builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
    __builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
    return bpf_redirect(fib.ifindex, 0);
}
"""


class XdpRedirect(Direct):
    """Direct traffic forwarded by an XDP program that only routes and redirects: the
    XDP ceiling on veth (every lab endpoint carries an XDP program, so veth takes the
    frames)."""

    name = "xdp-redirect"

    def __init__(self, topo: Topology) -> None:
        super().__init__(topo)
        from bcc import BPF

        self._bpf = BPF(text=XDP_REDIRECT_SRC)
        self.fd = self._bpf.load_func(b"xdp_redirect_only", BPF.XDP).fd
        self.prog_id = bpfsys.prog_info(self.fd).id

    def _ifnames(self) -> list[str]:
        return [e.lb_ifname for e in self.topo.clients + self.topo.backends]

    def start(self) -> None:
        from bcc.libbcc import lib

        with netns.inside(self.topo.lb_ns):
            for ifname in self._ifnames():
                if lib.bpf_attach_xdp(ifname.encode(), self.fd, loader.MODES["native"]) != 0:
                    raise ContenderError(f"attaching the redirect program to {ifname} failed")

    def stop(self) -> None:
        for ifname in self._ifnames():
            loader.detach(ifname, ns=self.topo.lb_ns, only_prog_id=self.prog_id)

    def close(self) -> None:
        self._bpf.cleanup()


def flush_netfilter_conntrack(topo: Topology) -> int:
    """Empty the LB namespace's netfilter conntrack table (DNAT state a contender left
    behind would still translate a later contender's packets); returns how many entries
    there were."""
    from pyroute2 import Conntrack

    with netns.inside(topo.lb_ns), Conntrack() as ct:
        n = ct.count()
        ct.flush()
    return n


class Lbtui(Contender):
    """lbtui's XDP datapath; the program is loaded once, attached only while active. Its
    listen entries are written and its conntrack emptied at each start, so no contender
    inherits another's flows. ``single``: every service goes to backend 1 alone (weight
    100), the traffic ``xdp-redirect`` carries, so the two differ only by lbtui's work."""

    name = "lbtui"

    def __init__(self, topo: Topology, datapath: object, stats: bool = False,
                 mode: str = "native", single: bool = False) -> None:
        super().__init__(topo)
        self.datapath = datapath
        self.mode = mode
        self.single = single
        self.stats = stats
        if mode != "native":
            self.name = f"lbtui-{mode}"
        if single:
            self.name = "lbtui-single"
            self.spreads = False

    def _listen(self) -> None:
        ms = self.datapath.maps  # type: ignore[attr-defined]
        stat = abi.ROUTE_F_STATS if self.stats else 0
        http_port = SINGLE_HTTP_PORT if self.single else HTTP_PORT
        backends = self.topo.backends[:1] if self.single else self.topo.backends
        weights = (100,) if self.single else WEIGHTS
        for c in self.topo.clients:
            ifindex = self.topo.lb_ifindex(c.lb_ifname)
            for port, backend_port, proto in (
                    (HTTP_VIP_PORT, http_port, abi.ROUTE_F_TCP),
                    *((p, bp, abi.ROUTE_F_TCP) for p, bp in TCP_SERVICES),
                    (UDP_PORT, UDP_PORT, abi.ROUTE_F_UDP)):
                group = TargetGroup.of([(b.ip, backend_port, w)
                                        for b, w in zip(backends, weights, strict=False)])
                M.add_listen_port_weighted(ms.listen_map, ifindex, port, group, stat | proto)

    def start(self) -> None:
        ms = self.datapath.maps  # type: ignore[attr-defined]
        self._listen()
        for k in list(bpfsys.keys(ms.conntrack_map.fd, ms.conntrack_map.key_type)):
            bpfsys.delete(ms.conntrack_map.fd, k)
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
                                      *((p, bp, "tcp") for p, bp in TCP_SERVICES),
                                      (UDP_PORT, UDP_PORT, "udp")):
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
    ip daddr {topo.vip} tcp dport {ECHO_PORT} dnat to {m} : {ECHO_PORT}
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
listen echo
  bind {topo.vip}:{ECHO_PORT}
  timeout client 120s
  timeout server 120s
{servers(ECHO_PORT)}
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
    if c.spreads and len(seen) < 2:
        raise ContenderError(f"{c.name}: {requests} connections all went to {seen}")
    return seen


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="lbtui-bench-"))


def nproc() -> int:
    return os.cpu_count() or 1
