"""Namespace topologies for tests, the demo lab and benchmarks.

A topology is N client namespaces and M backend namespaces, each joined by its own veth pair
to one LB namespace (a router). Nothing connects to the root namespace, so no traffic can
leave the lab. Addresses (all inside 198.18.0.0/15):

    VIP                 198.18.0.10/32 on the LB's loopback
    client i (1..N)     198.18.<i>.2/24,     LB side 198.18.<i>.1     (LB ifname c<i>)
    backend j (1..M)    198.18.<100+j>.2/24, LB side 198.18.<100+j>.1 (LB ifname b<j>)

Every namespace is named ``lbt-<lab>-<node>``; a state file under /run/lbtui/labs records
what was built and which processes run in it, and ``teardown(lab)`` removes all of it,
idempotently, also after a crash (it falls back to the name prefix).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyroute2 import NetNS
from pyroute2 import netns as pr_netns

from lbtui.files import atomic_write, remove_inside
from lbtui.names import lab_name

if TYPE_CHECKING:
    from lbtui.datapath.loader import Attachment, Datapath

STATE_DIR = Path(os.environ.get("LBTUI_RUN_DIR", "/run/lbtui")) / "labs"
VIP = "198.18.0.10"
NS_PREFIX = "lbt-"

Progress = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


@dataclass
class Endpoint:
    """A client or backend namespace and its link to the LB."""

    node: str            # logical name: client1, backend2
    ns: str              # network namespace name
    ip: str              # the endpoint's address
    lb_ip: str           # the LB's address on that link (the endpoint's gateway)
    lb_ifname: str       # LB-side veth name
    subnet: str

    @property
    def cidr(self) -> str:
        return self.subnet


@dataclass
class Topology:
    lab: str
    vip: str
    lb_ns: str
    clients: list[Endpoint]
    backends: list[Endpoint]
    pids: list[int] = field(default_factory=list)
    # A cluster lab's LB nodes (lbtui.lab.cluster; lb_ns is then its router). Empty here.
    nodes: list[Endpoint] = field(default_factory=list)

    # --- lookups -------------------------------------------------------------------

    def node(self, name: str) -> Endpoint | None:
        return next((e for e in self.clients + self.backends + self.nodes
                     if e.node == name), None)

    def ns_of(self, node: str) -> str:
        """Namespace of a node name: lb, client<i>, backend<j>."""
        if node == "lb":
            return self.lb_ns
        e = self.node(node)
        if e is None:
            names = ["lb"] + [x.node for x in self.clients + self.backends + self.nodes]
            raise ValueError(f"unknown lab node {node!r}; nodes: {', '.join(names)}")
        return e.ns

    @property
    def namespaces(self) -> list[str]:
        return [self.lb_ns] + [e.ns for e in self.clients + self.backends + self.nodes]

    @property
    def client_ifnames(self) -> list[str]:
        return [e.lb_ifname for e in self.clients]

    @property
    def backend_ifnames(self) -> list[str]:
        return [e.lb_ifname for e in self.backends]

    def lb_ifindex(self, ifname: str) -> int:
        with NetNS(self.lb_ns) as ns:
            found: list[int] = ns.link_lookup(ifname=ifname)
        if not found:
            raise ValueError(f"no interface {ifname} in {self.lb_ns}")
        return found[0]

    # --- processes -------------------------------------------------------------------

    def popen(self, node: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start a process inside a node's namespace (``kw`` as for Popen: text mode or
        bytes); it is killed by teardown."""
        p: subprocess.Popen[Any] = subprocess.Popen(
            ["ip", "netns", "exec", self.ns_of(node), *argv], start_new_session=True, **kw)
        self.pids.append(p.pid)
        self.save()
        return p

    def run(self, node: str, argv: Sequence[str], timeout: float = 60,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.ns_of(node), *argv], text=True,
                              capture_output=True, timeout=timeout, check=check)

    # --- state -----------------------------------------------------------------------

    def save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(STATE_DIR / f"{self.lab}.json", json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, lab: str) -> Topology | None:
        path = STATE_DIR / f"{lab}.json"
        if not path.exists():
            return None
        d = json.loads(path.read_text())
        d["clients"] = [Endpoint(**e) for e in d["clients"]]
        d["backends"] = [Endpoint(**e) for e in d["backends"]]
        d["nodes"] = [Endpoint(**e) for e in d.get("nodes", [])]
        return cls(**d)


def lab_dir(lab: str) -> Path:
    """The lab's working directory (config, certificates, traffic stats, logs); teardown
    removes it."""
    d = STATE_DIR / validate_lab_name(lab)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


def _sysctl(ns: str, key: str, value: str) -> None:
    path = Path("/proc/sys") / key.replace(".", "/")
    with _in_ns(ns):
        path.write_text(value)


@contextmanager
def _in_ns(ns: str) -> Iterator[None]:
    pr_netns.pushns(ns)
    try:
        yield
    finally:
        pr_netns.popns()


def _link_up(ns: NetNS, ifname: str) -> int:
    idx: int = ns.link_lookup(ifname=ifname)[0]
    ns.link("set", index=idx, state="up")
    return idx


def _ethtool_tx_off(ns: str, ifname: str) -> None:
    # veth checksum offload leaves CHECKSUM_PARTIAL packets whose L4 checksum a NAT in XDP
    # cannot fix up; the lab computes full checksums instead.
    subprocess.run(["ip", "netns", "exec", ns, "ethtool", "-K", ifname, "tx", "off"],
                   check=True, capture_output=True)


def validate_lab_name(lab: str) -> str:
    """``lab`` if it is a valid lab name (lbtui.names.LAB), else BadName with the rule."""
    return lab_name(lab)


def build(lab: str, n_clients: int = 2, n_backends: int = 3,
          progress: Progress = _quiet) -> Topology:
    """Create the namespaces, links, addresses, routes and sysctls. Tears down whatever
    was built if any step fails."""
    validate_lab_name(lab)
    if not 1 <= n_clients <= 50 or not 1 <= n_backends <= 50:
        raise ValueError("a lab has 1..50 clients and 1..50 backends")
    if Topology.load(lab) is not None or lab_namespaces(lab):
        raise RuntimeError(f"lab {lab!r} already exists: run `lbtui lab down --lab {lab}` "
                           "first")
    topo = Topology(lab=lab, vip=VIP, lb_ns=f"{NS_PREFIX}{lab}-lb", clients=[], backends=[])
    for i in range(1, n_clients + 1):
        topo.clients.append(Endpoint(f"client{i}", f"{NS_PREFIX}{lab}-client{i}",
                                     f"198.18.{i}.2", f"198.18.{i}.1", f"c{i}",
                                     f"198.18.{i}.0/24"))
    for j in range(1, n_backends + 1):
        topo.backends.append(Endpoint(f"backend{j}", f"{NS_PREFIX}{lab}-backend{j}",
                                      f"198.18.{100 + j}.2", f"198.18.{100 + j}.1", f"b{j}",
                                      f"198.18.{100 + j}.0/24"))
    topo.save()
    try:
        _build(topo, progress)
    except BaseException:
        teardown(lab)
        raise
    return topo


def _build(topo: Topology, progress: Progress) -> None:
    progress(f"creating {len(topo.namespaces)} network namespaces")
    for ns in topo.namespaces:
        pr_netns.create(ns)
    with NetNS(topo.lb_ns) as lb:
        lo = _link_up(lb, "lo")
        lb.addr("add", index=lo, address=topo.vip, prefixlen=32)
        for e in topo.clients + topo.backends:
            lb.link("add", ifname=e.lb_ifname, kind="veth",
                    peer={"ifname": "eth0", "net_ns_fd": e.ns})
            idx = _link_up(lb, e.lb_ifname)
            lb.addr("add", index=idx, address=e.lb_ip, prefixlen=24)
    progress("configuring addresses and routes")
    for e in topo.clients + topo.backends:
        with NetNS(e.ns) as ns:
            _link_up(ns, "lo")
            idx = _link_up(ns, "eth0")
            ns.addr("add", index=idx, address=e.ip, prefixlen=24)
            # Only the lab's own range is routed: nothing here can reach outside.
            ns.route("add", dst="198.18.0.0/15", gateway=e.lb_ip)
        _ethtool_tx_off(e.ns, "eth0")
        _ethtool_tx_off(topo.lb_ns, e.lb_ifname)
    for ns in topo.namespaces:
        _sysctl(ns, "net.ipv4.tcp_tw_reuse", "1")
        _sysctl(ns, "net.ipv4.ip_local_port_range", "10000 65000")
    _sysctl(topo.lb_ns, "net.ipv4.ip_forward", "1")
    for key in ("all", "default", *[e.lb_ifname for e in topo.clients + topo.backends]):
        _sysctl(topo.lb_ns, f"net.ipv4.conf.{key}.rp_filter", "0")
        # Replies rewritten to come from the VIP may reach the stack (XDP_PASS); the VIP is
        # local here, so accept packets whose source is a local address.
        _sysctl(topo.lb_ns, f"net.ipv4.conf.{key}.accept_local", "1")
    _prime_neighbours(topo)
    attach_peer_pass(topo)
    progress("lab network ready")


def _prime_neighbours(topo: Topology) -> None:
    """Permanent neighbour entries on both sides of every link, so bpf_fib_lookup finds the
    next hop from the first packet (no ARP round before XDP can redirect)."""
    macs: dict[str, str] = {}
    for e in topo.clients + topo.backends:
        with NetNS(e.ns) as ns:
            macs[e.node] = ns.get_links(ns.link_lookup(ifname="eth0")[0])[0].get_attr(
                "IFLA_ADDRESS")
    with NetNS(topo.lb_ns) as lb:
        for e in topo.clients + topo.backends:
            idx = lb.link_lookup(ifname=e.lb_ifname)[0]
            lb_mac = lb.get_links(idx)[0].get_attr("IFLA_ADDRESS")
            lb.neigh("add", dst=e.ip, lladdr=macs[e.node], ifindex=idx, state="permanent")
            with NetNS(e.ns) as ns:
                ns.neigh("add", dst=e.lb_ip, lladdr=lb_mac,
                         ifindex=ns.link_lookup(ifname="eth0")[0], state="permanent")


def attach_datapath(topo: Topology, datapath: Datapath, mode: str = "native"
                    ) -> list[Attachment]:
    """Attach lbtui's XDP program to every LB interface (client side: balancing; backend
    side: the reply path)."""
    return [datapath.attach(e.lb_ifname, mode=mode, ns=topo.lb_ns)
            for e in topo.clients + topo.backends]


_PASS_SRC = b"int lb_peer_pass(struct xdp_md *ctx) { return XDP_PASS; }"


def attach_peer_pass(topo: Topology) -> None:
    """Put an XDP pass program on every endpoint's eth0: veth delivers XDP_REDIRECTed
    frames only to a peer that has an XDP program. The attachment outlives this process
    and goes away with the namespace."""
    attach_xdp_pass([(e.ns, "eth0") for e in topo.clients + topo.backends])


def attach_xdp_pass(links: Sequence[tuple[str, str]]) -> None:
    """The XDP pass program on each (namespace, ifname): the peer of a veth that XDP
    redirects into (see attach_peer_pass)."""
    from bcc import BPF
    from bcc.libbcc import lib

    b = BPF(text=_PASS_SRC)
    fd = b.load_func(b"lb_peer_pass", BPF.XDP).fd
    for ns, ifname in links:
        with _in_ns(ns):
            if lib.bpf_attach_xdp(ifname.encode(), fd, 1 << 2) != 0:  # native mode
                raise RuntimeError(f"attaching the XDP pass program to {ifname} in {ns} "
                                   "failed")
    b.cleanup()


def _kill_ns_processes(ns: str) -> None:
    try:
        out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return
    for pid in {int(p) for p in out.split() if p.isdigit()}:
        if pid != os.getpid():
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def teardown(lab: str, progress: Progress = _quiet) -> bool:
    """Kill the lab's processes and delete its namespaces and state. Idempotent; returns
    True if anything was there."""
    validate_lab_name(lab)
    topo = Topology.load(lab)
    found = topo is not None
    for pid in topo.pids if topo else []:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    names = set(lab_namespaces(lab))
    if topo:
        names |= set(topo.namespaces) & set(pr_netns.listnetns())
    if names:
        progress(f"removing {len(names)} namespaces of lab {lab}")
    for ns in sorted(names):
        _kill_ns_processes(ns)
        with suppress(OSError):
            pr_netns.remove(ns)
    remove_inside(STATE_DIR / f"{lab}.json", STATE_DIR)
    if remove_inside(STATE_DIR / lab, STATE_DIR):
        found = True
    # Deleting a namespace destroys its veths; wait until the kernel has done so, so a
    # rebuild with the same name does not race it.
    deadline = time.monotonic() + 5
    while names & set(pr_netns.listnetns()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found or bool(names)


# A lab's namespaces: lbt-<lab>-<node>, and node names (lb, client1, switch...) never
# contain '-', so lab "a" never claims "lbt-a-b-client1", which belongs to lab "a-b".
_LAB_NS = re.compile(rf"{NS_PREFIX}(?P<lab>.+)-[A-Za-z0-9_]+")


def lab_namespaces(lab: str) -> list[str]:
    """The namespaces present that belong to ``lab`` (exactly: its name, then one node)."""
    out = []
    for n in pr_netns.listnetns():
        m = _LAB_NS.fullmatch(n)
        if m and m["lab"] == lab:
            out.append(n)
    return sorted(out)


def list_labs() -> list[str]:
    labs = {p.stem for p in STATE_DIR.glob("*.json")} if STATE_DIR.exists() else set()
    labs |= {p.name for p in STATE_DIR.iterdir() if p.is_dir()} if STATE_DIR.exists() else set()
    for n in pr_netns.listnetns():
        m = _LAB_NS.fullmatch(n)
        if m:
            labs.add(m["lab"])
    return sorted(labs)


@contextmanager
def lab(name: str, n_clients: int = 2, n_backends: int = 3,
        progress: Progress = _quiet) -> Iterator[Topology]:
    """A topology for the duration of a block, torn down on exit (also on failure)."""
    topo = build(name, n_clients, n_backends, progress)
    try:
        yield topo
    finally:
        teardown(name)


def python_argv(module: str, *args: str) -> list[str]:
    """argv that runs ``python -m module`` with this interpreter (the project venv)."""
    return [sys.executable, "-m", module, *args]


HTTP_PORT = 8080
ECHO_PORT = 7000
UDP_PORT = 9000
TLS_PORT = 8443


def start_backend_servers(topo: Topology, http: int = HTTP_PORT, echo: int = ECHO_PORT,
                          udp: int = UDP_PORT, timeout: float = 20, tls: int | None = None,
                          cert: str | Path | None = None, key: str | Path | None = None,
                          also_http: Sequence[int] = (), certs: Path | None = None) -> None:
    """Start lbtui.lab.servers in every backend and wait until each has bound its ports.
    With ``tls``, each also serves HTTPS on that port, with ``cert``/``key`` or its own
    ``<name>.pem`` from ``certs`` (``tlscerts.make_backend_certs``); ``also_http``: more
    HTTP ports."""
    procs = []
    tls_args = (["--tls", str(tls)] + (["--certs", str(certs)] if certs else
                                       ["--cert", str(cert), "--key", str(key)])
                if tls else [])
    tls_args += [a for p in also_http for a in ("--also-http", str(p))]
    for e in topo.backends:
        procs.append((e, topo.popen(e.node, python_argv(
            "lbtui.lab.servers", "--name", e.node, "--http", str(http), "--echo", str(echo),
            "--udp", str(udp), *tls_args), stdout=subprocess.PIPE, text=True)))
    deadline = time.monotonic() + timeout
    for e, p in procs:
        assert p.stdout is not None
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if line.strip() == "ready":
                break
            if not line and p.poll() is not None:
                raise RuntimeError(f"backend server in {e.node} exited with {p.returncode}")
        else:
            raise RuntimeError(f"backend server in {e.node} not ready after {timeout}s")
