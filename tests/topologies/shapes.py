"""Namespace networks that ``lbtui lab`` does not build, shaped like operators' hosts.

Used by the test matrix (``tests/topologies/test_matrix.py``) and the benchmarks
(``bench.compare --shape``, ``bench.hijack``). Unlike the lab, the endpoints keep the
kernel's defaults (tx checksum offload on, GRO off, no XDP program, neighbours learnt by
ARP), except where a variant below says otherwise. Only the LB namespace (and a router)
forwards (``ip_forward = 1``), as any router must. Each shape has 2 clients and 4
backends, the VIP 198.18.0.10 on the LB's loopback, addresses in 198.18.0.0/15 and no
route out.

Which interfaces lbtui attaches to (``interfaces`` / ``reply_interfaces``), and why:

``veth``    clients and backends each on their own veth, far ends without XDP.
            c1, c2 / b1..b4: the LB's own ends of those links. Every mode.
``gro``     ``veth`` with GRO on at every far end: veth then takes redirected XDP frames,
            so native XDP may redirect while the endpoints send with default offloads,
            i.e. CHECKSUM_PARTIAL packets, whose checksum state a redirected frame loses.
            Every mode.
``redirect`` ``gro`` with tx checksum offload off at the endpoints too, so their packets
            carry full checksums: the one veth shape where native XDP can forward every
            packet itself, so a broken redirect (into an interface verified to take XDP
            frames) shows here. Every mode.
``txoff``   ``veth`` with tx checksum offload off on the LB's ends: the LB's egress
            finalises checksums as a physical NIC would, so a NAT that mishandles a partial
            checksum shows as a bad checksum at the far end instead of being carried along
            unchecked by veth. Every mode.
``bridge``  backends' veths enslaved to a Linux bridge br0 on the LB (a container host).
            c1, c2 / br0: br0 holds the address the backends route through, and replies
            reach the LB's IP layer on it. A bridge has no native XDP, so ``native`` is
            impossible here (generic and auto only); the bridge ports carry no address and
            are not what an operator names.
``onearm``  clients and backends (in different subnets) on one switch (a bridge in its own
            namespace), reached through the LB's single link lb0; backends route to the
            clients through the LB. lb0 / none: requests and replies both arrive on lb0,
            where the client-facing program also handles replies. Every mode.
``onearmxdp`` ``onearm`` with GRO on at lb0's far end (so lb0 takes XDP frames) and tx
            checksum offload off at the endpoints: native XDP sends requests and replies
            back out of lb0 itself (a devmap redirect into the ingress), so a broken
            one-arm fast path shows here (XDP_TX, tried, lost packets on this shape).
            lb0 / none. Native only (auto is native on veth; generic XDP never depends on
            the far end).
``routed``  backends one routed hop away (a router namespace between the LB and them).
            c1, c2 / r0: the LB's link to the router. Every mode.
``asym``    backends on a switch reached through the LB's bf, but routing back to the
            clients through a router that returns to the LB on a second link rb: requests
            leave on bf, replies arrive on rb. c1, c2 / rb. Every mode.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pyroute2 import NetNS
from pyroute2 import netns as pr_netns

from lbtui import netns
from lbtui.lab import topology as T

VIP = T.VIP
LAB_RANGE = "198.18.0.0/15"
ALL_MODES = ("native", "generic", "auto")
N_CLIENTS = 2
N_BACKENDS = 4


@dataclass
class Shape:
    """A built shape: its endpoints as a lab ``Topology`` (``Endpoint.lb_ifname`` is the LB
    interface that reaches the endpoint, ``lb_ip`` the endpoint's gateway) and the
    interfaces lbtui attaches to."""

    name: str
    topo: T.Topology
    interfaces: list[str]
    reply_interfaces: list[str]
    modes: tuple[str, ...]

    @property
    def lab(self) -> str:
        return self.topo.lab

    @property
    def xdp_interfaces(self) -> list[str]:
        return [*self.interfaces, *self.reply_interfaces]

    def datapath_toml(self, instance: str, mode: str) -> str:
        """The ``[datapath]`` table of a config serving this shape."""
        if mode not in self.modes:
            raise ValueError(f"shape {self.name}: XDP mode {mode!r} impossible here "
                             f"(possible: {', '.join(self.modes)})")
        return (f'[datapath]\ninstance = "{instance}"\nnetns = "{self.topo.lb_ns}"\n'
                f"interfaces = {_toml_list(self.interfaces)}\n"
                f"reply_interfaces = {_toml_list(self.reply_interfaces)}\n"
                f'xdp_mode = "{mode}"\n')


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


# --- wiring ------------------------------------------------------------------------------


@dataclass
class _Wiring:
    """Namespaces, links, addresses and routes of one shape (pyroute2)."""

    lab: str
    _handles: dict[str, NetNS] = field(default_factory=dict)

    def ns(self, node: str) -> str:
        return f"{T.NS_PREFIX}{self.lab}-{node}"

    def nl(self, ns: str) -> NetNS:
        if ns not in self._handles:
            self._handles[ns] = NetNS(ns)
        return self._handles[ns]

    def create(self, node: str) -> str:
        ns = self.ns(node)
        pr_netns.create(ns)
        self.up(ns, "lo")
        return ns

    def up(self, ns: str, ifname: str) -> int:
        nl = self.nl(ns)
        idx = nl.link_lookup(ifname=ifname)[0]
        nl.link("set", index=idx, state="up")
        return idx

    def veth(self, a_ns: str, a_if: str, b_ns: str, b_if: str) -> None:
        self.nl(a_ns).link("add", ifname=a_if, kind="veth",
                           peer={"ifname": b_if, "net_ns_fd": b_ns})
        self.up(a_ns, a_if)
        self.up(b_ns, b_if)

    def addr(self, ns: str, ifname: str, cidr: str) -> None:
        ip, plen = cidr.split("/")
        nl = self.nl(ns)
        nl.addr("add", index=nl.link_lookup(ifname=ifname)[0], address=ip,
                prefixlen=int(plen))

    def route(self, ns: str, dst: str, gateway: str) -> None:
        self.nl(ns).route("add", dst=dst, gateway=gateway)

    def bridge(self, ns: str, name: str, ports: list[str]) -> None:
        nl = self.nl(ns)
        nl.link("add", ifname=name, kind="bridge")
        br = self.up(ns, name)
        for port in ports:
            nl.link("set", index=nl.link_lookup(ifname=port)[0], master=br)

    def close(self) -> None:
        for h in self._handles.values():
            h.close()
        self._handles.clear()


def sysctl(ns: str, key: str, value: str) -> str:
    """Set ``key`` in namespace ``ns``; returns the value it had."""
    path = Path("/proc/sys") / key.replace(".", "/")
    with netns.inside(ns):
        old = path.read_text().strip()
        path.write_text(value)
    return old


def no_icmp_redirects(ns: str) -> None:
    """No ICMP redirects from namespace ``ns``, on every interface and ``all`` (which the
    kernel ORs with each interface's), as ``lbtui serve`` sets on the interfaces it
    serves: for benchmarks whose phases without lbtui must not teach one-arm endpoints to
    route around the LB host."""
    with netns.inside(ns):
        ifnames = [p.name for p in Path("/proc/sys/net/ipv4/conf").iterdir()]
    for ifname in ifnames:
        sysctl(ns, f"net.ipv4.conf.{ifname}.send_redirects", "0")


def ethtool(ns: str, ifname: str, *features: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "ethtool", "-K", ifname, *features],
                   check=True, capture_output=True, timeout=10)


def _endpoint(w: _Wiring, node: str, ip: str, gateway: str, lb_ifname: str,
              subnet: str) -> T.Endpoint:
    return T.Endpoint(node, w.ns(node), ip, gateway, lb_ifname, subnet)


def _routed_endpoint(w: _Wiring, e: T.Endpoint, plen: int) -> None:
    """Address on the endpoint's eth0 and its only route: the lab range via its gateway."""
    w.addr(e.ns, "eth0", f"{e.ip}/{plen}")
    w.route(e.ns, LAB_RANGE, e.lb_ip)


def _veth_clients(w: _Wiring, topo: T.Topology) -> list[str]:
    """Client i at 198.18.<i>.2/24 on its own veth to the LB (LB end c<i>)."""
    for i in range(1, N_CLIENTS + 1):
        e = _endpoint(w, f"client{i}", f"198.18.{i}.2", f"198.18.{i}.1", f"c{i}",
                      f"198.18.{i}.0/24")
        w.create(e.node)
        w.veth(topo.lb_ns, e.lb_ifname, e.ns, "eth0")
        w.addr(topo.lb_ns, e.lb_ifname, f"{e.lb_ip}/24")
        _routed_endpoint(w, e, 24)
        topo.clients.append(e)
    return [e.lb_ifname for e in topo.clients]


def _veth_backends(w: _Wiring, topo: T.Topology, near_ns: str, near_prefix: str,
                   lb_ifname: str | None = None) -> None:
    """Backend j at 198.18.<100+j>.2/24 on its own veth to ``near_ns`` (end
    <near_prefix><j>, address .1: the backend's gateway)."""
    for j in range(1, N_BACKENDS + 1):
        near = f"{near_prefix}{j}"
        e = _endpoint(w, f"backend{j}", f"198.18.{100 + j}.2", f"198.18.{100 + j}.1",
                      lb_ifname or near, f"198.18.{100 + j}.0/24")
        w.create(e.node)
        w.veth(near_ns, near, e.ns, "eth0")
        w.addr(near_ns, near, f"{e.lb_ip}/24")
        _routed_endpoint(w, e, 24)
        topo.backends.append(e)


def _on_switch(w: _Wiring, switch_ns: str, endpoints: list[T.Endpoint],
               port_prefix: str) -> list[str]:
    """Each endpoint on a veth whose far end (<port_prefix><n>) is in ``switch_ns``;
    returns those port names for the caller's bridge."""
    ports = []
    for n, e in enumerate(endpoints, 1):
        w.create(e.node)
        w.veth(switch_ns, f"{port_prefix}{n}", e.ns, "eth0")
        _routed_endpoint(w, e, 24)
        ports.append(f"{port_prefix}{n}")
    return ports


def _switched_backends(w: _Wiring, topo: T.Topology, switch_ns: str, gateway: str,
                       lb_ifname: str) -> list[str]:
    """Backend j at 198.18.100.<10+j>/24 on a port b<j> in ``switch_ns``."""
    topo.backends += [_endpoint(w, f"backend{j}", f"198.18.100.{10 + j}", gateway, lb_ifname,
                                "198.18.100.0/24") for j in range(1, N_BACKENDS + 1)]
    return _on_switch(w, switch_ns, topo.backends, "b")


def _router(w: _Wiring) -> str:
    ns = w.create("router")
    sysctl(ns, "net.ipv4.ip_forward", "1")
    return ns


Wire = Callable[[_Wiring, T.Topology], tuple[list[str], list[str]]]


def _wire_veth(w: _Wiring, topo: T.Topology) -> tuple[list[str], list[str]]:
    clients = _veth_clients(w, topo)
    _veth_backends(w, topo, topo.lb_ns, "b")
    return clients, [e.lb_ifname for e in topo.backends]


def _wire_gro(w: _Wiring, topo: T.Topology) -> tuple[list[str], list[str]]:
    ifaces = _wire_veth(w, topo)
    for e in topo.clients + topo.backends:
        ethtool(e.ns, "eth0", "gro", "on")
    return ifaces


def _wire_redirect(w: _Wiring, topo: T.Topology) -> tuple[list[str], list[str]]:
    ifaces = _wire_gro(w, topo)
    for e in topo.clients + topo.backends:
        ethtool(e.ns, "eth0", "tx", "off")
    return ifaces


def _wire_txoff(w: _Wiring, topo: T.Topology) -> tuple[list[str], list[str]]:
    ifaces = _wire_veth(w, topo)
    for e in topo.clients + topo.backends:
        ethtool(topo.lb_ns, e.lb_ifname, "tx", "off")
    return ifaces


def _wire_bridge(w: _Wiring, topo: T.Topology) -> tuple[list[str], list[str]]:
    clients = _veth_clients(w, topo)
    ports = _switched_backends(w, topo, topo.lb_ns, "198.18.100.1", "br0")
    w.bridge(topo.lb_ns, "br0", ports)
    w.addr(topo.lb_ns, "br0", "198.18.100.1/24")
    return clients, ["br0"]


def _wire_onearm(w: _Wiring, topo: T.Topology) -> tuple[list[str], list[str]]:
    sw = w.create("switch")
    w.veth(topo.lb_ns, "lb0", sw, "lb")
    w.addr(topo.lb_ns, "lb0", "198.18.1.1/24")
    w.addr(topo.lb_ns, "lb0", "198.18.101.1/24")
    topo.clients += [_endpoint(w, f"client{i}", f"198.18.1.{1 + i}", "198.18.1.1", "lb0",
                               "198.18.1.0/24") for i in range(1, N_CLIENTS + 1)]
    topo.backends += [_endpoint(w, f"backend{j}", f"198.18.101.{1 + j}", "198.18.101.1",
                                "lb0", "198.18.101.0/24") for j in range(1, N_BACKENDS + 1)]
    ports = [*_on_switch(w, sw, topo.clients, "c"), *_on_switch(w, sw, topo.backends, "b")]
    w.bridge(sw, "sw0", ["lb", *ports])
    return ["lb0"], []


def _wire_onearmxdp(w: _Wiring, topo: T.Topology) -> tuple[list[str], list[str]]:
    ifaces = _wire_onearm(w, topo)
    ethtool(w.ns("switch"), "lb", "gro", "on")
    for e in topo.clients + topo.backends:
        ethtool(e.ns, "eth0", "tx", "off")
    return ifaces


def _wire_routed(w: _Wiring, topo: T.Topology) -> tuple[list[str], list[str]]:
    clients = _veth_clients(w, topo)
    rt = _router(w)
    w.veth(topo.lb_ns, "r0", rt, "up0")
    w.addr(topo.lb_ns, "r0", "198.18.200.1/24")
    w.addr(rt, "up0", "198.18.200.2/24")
    w.route(rt, LAB_RANGE, "198.18.200.1")
    _veth_backends(w, topo, rt, "b", lb_ifname="r0")
    for e in topo.backends:
        w.route(topo.lb_ns, e.subnet, "198.18.200.2")
    return clients, ["r0"]


def _wire_asym(w: _Wiring, topo: T.Topology) -> tuple[list[str], list[str]]:
    clients = _veth_clients(w, topo)
    sw, rt = w.create("switch"), _router(w)
    w.veth(topo.lb_ns, "bf", sw, "lb")
    w.addr(topo.lb_ns, "bf", "198.18.100.1/24")
    w.veth(rt, "down0", sw, "rt")
    w.addr(rt, "down0", "198.18.100.254/24")
    w.veth(topo.lb_ns, "rb", rt, "up0")
    w.addr(topo.lb_ns, "rb", "198.18.250.1/24")
    w.addr(rt, "up0", "198.18.250.2/24")
    w.route(rt, LAB_RANGE, "198.18.250.1")
    ports = _switched_backends(w, topo, sw, "198.18.100.254", "bf")
    w.bridge(sw, "sw0", ["lb", "rt", *ports])
    return clients, ["rb"]


@dataclass(frozen=True)
class _Spec:
    wire: Wire
    modes: tuple[str, ...]


SHAPES: dict[str, _Spec] = {
    "veth": _Spec(_wire_veth, ALL_MODES),
    "gro": _Spec(_wire_gro, ALL_MODES),
    "redirect": _Spec(_wire_redirect, ALL_MODES),
    "txoff": _Spec(_wire_txoff, ALL_MODES),
    # A bridge has no native XDP (no driver hook): native is impossible on br0.
    "bridge": _Spec(_wire_bridge, ("generic", "auto")),
    "onearm": _Spec(_wire_onearm, ALL_MODES),
    "onearmxdp": _Spec(_wire_onearmxdp, ("native",)),
    "routed": _Spec(_wire_routed, ALL_MODES),
    "asym": _Spec(_wire_asym, ALL_MODES),
}


def lab_name(shape: str, tag: str) -> str:
    """The lab name of ``shape`` built under ``tag`` (namespaces lbt-<tag><shape>-*); shape
    names hold no '-', so one shape's namespace prefix never covers another's."""
    return T.validate_lab_name(f"{tag}{shape}")


def build(shape: str, tag: str, progress: T.Progress | None = None) -> Shape:
    """Create ``shape``'s namespaces and links. Whatever was built is removed again if a
    step fails; ``teardown`` (or ``lbtui lab down --lab <lab>``) removes a built shape."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; shapes: {', '.join(SHAPES)}")
    lab = lab_name(shape, tag)
    if T.Topology.load(lab) is not None or any(
            n.startswith(f"{T.NS_PREFIX}{lab}-") for n in pr_netns.listnetns()):
        raise RuntimeError(f"shape {lab!r} already exists: run `lbtui lab down --lab {lab}`")
    w = _Wiring(lab)
    topo = T.Topology(lab=lab, vip=VIP, lb_ns=w.ns("lb"), clients=[], backends=[])
    topo.save()  # before the first namespace: teardown finds a half-built shape
    try:
        if progress:
            progress(f"building shape {shape} (lab {lab})")
        w.create("lb")
        lb = w.nl(topo.lb_ns)
        lb.addr("add", index=lb.link_lookup(ifname="lo")[0], address=VIP, prefixlen=32)
        sysctl(topo.lb_ns, "net.ipv4.ip_forward", "1")
        interfaces, reply = SHAPES[shape].wire(w, topo)
        topo.save()
    except BaseException:
        w.close()
        T.teardown(lab)
        raise
    w.close()
    return Shape(shape, topo, interfaces, reply, SHAPES[shape].modes)


def teardown(shape: Shape) -> None:
    """Kill the shape's processes and delete its namespaces (idempotent)."""
    T.teardown(shape.lab)


@contextmanager
def built(shape: str, tag: str, progress: T.Progress | None = None) -> Iterator[Shape]:
    """A shape for the duration of a block, torn down on exit (also on failure)."""
    s = build(shape, tag, progress)
    try:
        yield s
    finally:
        teardown(s)
