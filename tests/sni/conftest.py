"""A namespace lab for SNI tests: the lab's TLS backends, each with a certificate naming it,
and bulk servers (tlstools.py); the real XDP
datapath with an SNI listener on VIP:443, SNI routes in the sni map, and a Splicer."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lbtui import abi, netns
from lbtui import maps as M
from lbtui.lab import topology as T
from lbtui.lab.tlscerts import make_backend_certs
from lbtui.lab.topology import TLS_PORT
from lbtui.splicer import Splicer
from lbtui.targets import TargetGroup

from .tlstools import SNI_DOMAIN, start_bulk_servers

SNI_PORT = 443
BULK_VIP_PORT = 8443
LAB_PREFIX = f"h5-{os.getpid() % 10000}"
_labs = 0


@dataclass
class SniLab:
    topo: T.Topology
    maps: M.MapSet
    datapath: object
    certs: Path
    splicers: list[Splicer] = field(default_factory=list)

    @property
    def vip(self) -> str:
        return self.topo.vip

    def backend(self, node: str) -> T.Endpoint:
        e = self.topo.node(node)
        assert e is not None
        return e

    def group(self, *weighted: tuple[str, int], port: int = TLS_PORT) -> TargetGroup:
        return TargetGroup.of([(self.backend(n).ip, port, w) for n, w in weighted])

    def listen(self, port: int, group: TargetGroup, stats: bool = True) -> None:
        flags = abi.ROUTE_F_SNI | abi.ROUTE_F_TCP | (abi.ROUTE_F_STATS if stats else 0)
        for c in self.topo.clients:
            M.add_listen_port_weighted(self.maps.listen_map, self.topo.lb_ifindex(c.lb_ifname),
                                       port, group, flags)

    def splicer(self, port: int, **kw: object) -> Splicer:
        sp = Splicer(self.maps, self.datapath.emit_fd, self.vip, port,  # type: ignore[attr-defined]
                     netns=self.topo.lb_ns, **kw)
        sp.start()
        self.splicers.append(sp)
        return sp

    def client_run(self, argv: list[str], client: int = 0, timeout: float = 60,
                   input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.topo.clients[client].ns, *argv],
                              text=True, capture_output=True, timeout=timeout, input=input)

    def in_client(self, client: int = 0):
        return netns.inside(self.topo.clients[client].ns)


def wait_for(cond: Callable[[], object], timeout: float = 10, what: str = "condition"
             ) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def splicer_diagnostics(lab: SniLab, sp: Splicer) -> str:
    """What a hung test needs to be understood: the splicer's counters, each open flow's
    TCP counts, and the LB namespace's sockets."""
    from lbtui.splicer.tcpinfo import tcp_counts

    lines = [f"stats: {sp.stats()}"]
    for f in {id(f): f for f in sp._flows.values()}.values():
        lines.append(f"flow {f.entry.client}: fin_c={f.fin_c} fin_b={f.fin_b} "
                     f"shut_b={f.shut_b} shut_c={f.shut_c} base={f.base_c_rcv},"
                     f"{f.base_c_wr},{f.base_b_rcv},{f.base_b_wr}")
        for name, s in (("client", f.client), ("backend", f.backend)):
            try:
                lines.append(f"  {name}: {tcp_counts(s)}")
            except OSError as e:
                lines.append(f"  {name}: {e}")
    lines.append(f"pending: {[(p.client, len(p.hello.data)) for p in sp._pending.values()]}")
    lines.append(subprocess.run(["ip", "netns", "exec", lab.topo.lb_ns, "ss", "-tnoie"],
                                capture_output=True, text=True).stdout[-4000:])
    return "\n".join(lines)


@pytest.fixture
def sni_lab(datapath, tmp_path: Path) -> Iterator[Callable[..., SniLab]]:
    """Factory: build(n_clients, n_backends) -> SniLab with XDP attached and TLS backends
    running. Splicers, the lab and its namespaces are removed afterwards, also on failure."""
    global _labs
    built: list[SniLab] = []
    names: list[str] = []

    def build(n_clients: int = 2, n_backends: int = 4) -> SniLab:
        global _labs
        _labs += 1
        name = f"{LAB_PREFIX}-{_labs}"
        names.append(name)
        topo = T.build(name, n_clients, n_backends)
        certs = make_backend_certs(tmp_path / f"certs-{_labs}", [e.node for e in topo.backends],
                                   dns=[f"*.{SNI_DOMAIN}"],
                                   ips=[topo.vip] + [e.ip for e in topo.backends])
        T.attach_datapath(topo, datapath)
        T.start_backend_servers(topo, tls=TLS_PORT, certs=certs)
        start_bulk_servers(topo)
        lab = SniLab(topo, datapath.maps, datapath, certs)
        built.append(lab)
        return lab

    try:
        yield build
    finally:
        for lab in built:
            for sp in lab.splicers:
                sp.stop()
        datapath.detach_all()
        for name in names:
            T.teardown(name)
