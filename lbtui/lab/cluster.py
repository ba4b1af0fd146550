"""The cluster lab: N lbtui nodes behind a BGP router with ECMP (``lbtui lab up --nodes N``).

Namespaces ``lbt-<lab>-<node>``: a router, LB nodes node1..N, clients behind the router,
backends linked to every node. Addresses, all inside 198.18.0.0/15 (nothing is routed
anywhere else, and nothing connects to the root namespace):

    VIP                      198.18.0.10 (on each node's loopback)
    client i                 198.18.<i>.2/24,        router side .1     (router ifname c<i>)
    router - node k          198.18.<60+k>.1/24 - .2 (router ifname n<k>, node ifname up)
    backend j (service)      198.18.<100+j>.2/32 on its loopback, the same from every node
    node k - backend j       198.19.<k>.<4j+1>/30 - .<4j+2> (node ifname b<j>, backend n<k>)

The router runs BIRD 2 and installs the VIP over every node whose BGP session is up (a
multipath route; the kernel hashes each connection's 4-tuple onto one path). Each node
runs its own ``lbtui serve`` (same config but its instance name: hash = "maglev", so every
node picks the same backend for a connection) under lbtui.lab.announce, which runs the
node's BIRD, announcing the VIP, exactly while serve runs.

The datapath rewrites the destination only (no source NAT), so a backend's reply must go
back through the node that forwarded the request, where the connection's state is: each
backend marks a connection with the link it arrived on (nftables conntrack mark) and routes
its replies by that mark.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from pyroute2 import NetNS
from pyroute2 import netns as pr_netns

from lbtui.lab import bird
from lbtui.lab import demo_config as D
from lbtui.lab import topology as T
from lbtui.lab.topology import Endpoint, Topology

MAX_NODES = 3
ECHO_LISTEN_PORT = 7000
HTTP_LISTEN_PORT = 80


def node_instance(lab: str, node: str) -> str:
    return f"{D.instance_name(lab)}-{node}"


def bird_socket(lab: str, node: str) -> Path:
    return T.lab_dir(lab) / f"bird-{node}.ctl"


# --- building ------------------------------------------------------------------------------


def _veth(a_ns: str, a_if: str, a_ip: str, b_ns: str, b_if: str, b_ip: str,
          prefix: int) -> None:
    """A veth between two namespaces, addressed, up, checksums computed in software, and
    permanent neighbour entries both ways (XDP's fib lookup finds the next hop at once)."""
    with NetNS(a_ns) as a:
        a.link("add", ifname=a_if, kind="veth", peer={"ifname": b_if, "net_ns_fd": b_ns})
    macs = {}
    for ns, ifname, ip in ((a_ns, a_if, a_ip), (b_ns, b_if, b_ip)):
        with NetNS(ns) as n:
            idx = T._link_up(n, ifname)
            n.addr("add", index=idx, address=ip, prefixlen=prefix)
            macs[ns] = (idx, n.get_links(idx)[0].get_attr("IFLA_ADDRESS"))
        T._ethtool_tx_off(ns, ifname)
    for ns, peer_ns, peer_ip in ((a_ns, b_ns, b_ip), (b_ns, a_ns, a_ip)):
        with NetNS(ns) as n:
            n.neigh("add", dst=peer_ip, lladdr=macs[peer_ns][1], ifindex=macs[ns][0],
                    state="permanent")


def _layout(lab: str, n_nodes: int, n_clients: int, n_backends: int) -> Topology:
    p = T.NS_PREFIX + lab
    topo = Topology(lab=lab, vip=T.VIP, lb_ns=f"{p}-router", clients=[], backends=[])
    for i in range(1, n_clients + 1):
        topo.clients.append(Endpoint(f"client{i}", f"{p}-client{i}", f"198.18.{i}.2",
                                     f"198.18.{i}.1", f"c{i}", f"198.18.{i}.0/24"))
    for k in range(1, n_nodes + 1):
        topo.nodes.append(Endpoint(f"node{k}", f"{p}-node{k}", f"198.18.{60 + k}.2",
                                   f"198.18.{60 + k}.1", f"n{k}", f"198.18.{60 + k}.0/24"))
    for j in range(1, n_backends + 1):
        # lb_ip: node1's side of the backend's first link; lb_ifname: each node's name for
        # its link to this backend.
        topo.backends.append(Endpoint(f"backend{j}", f"{p}-backend{j}", f"198.18.{100 + j}.2",
                                      f"198.19.1.{4 * j + 1}", f"b{j}",
                                      f"198.18.{100 + j}.2/32"))
    return topo


def build(lab: str, n_nodes: int = 2, n_clients: int = 2, n_backends: int = 3,
          progress: T.Progress = T._quiet) -> Topology:
    """Create the cluster's namespaces, links, routes and sysctls (not its processes).
    Tears down whatever was built if a step fails."""
    T.validate_lab_name(lab)
    if not 2 <= n_nodes <= MAX_NODES:
        raise ValueError(f"a cluster lab has 2..{MAX_NODES} nodes (got {n_nodes})")
    if not 1 <= n_clients <= 20 or not 1 <= n_backends <= 8:
        raise ValueError("a cluster lab has 1..20 clients and 1..8 backends")
    if Topology.load(lab) is not None or T.lab_namespaces(lab):
        raise RuntimeError(f"lab {lab!r} already exists: run `lbtui lab down --lab {lab}` "
                           "first")
    topo = _layout(lab, n_nodes, n_clients, n_backends)
    topo.save()
    try:
        _build(topo, progress)
    except BaseException:
        T.teardown(lab)
        raise
    return topo


def _build(topo: Topology, progress: T.Progress) -> None:
    progress(f"creating {len(topo.namespaces)} network namespaces")
    for ns in topo.namespaces:
        pr_netns.create(ns)
        with NetNS(ns) as n:
            T._link_up(n, "lo")
    progress("linking clients and nodes to the router, backends to every node")
    for c in topo.clients:
        _veth(topo.lb_ns, c.lb_ifname, c.lb_ip, c.ns, "eth0", c.ip, 24)
        with NetNS(c.ns) as n:
            n.route("add", dst="198.18.0.0/15", gateway=c.lb_ip)
    for k, node in enumerate(topo.nodes, 1):
        _veth(topo.lb_ns, node.lb_ifname, node.lb_ip, node.ns, "up", node.ip, 24)
        with NetNS(node.ns) as n:
            n.addr("add", index=n.link_lookup(ifname="lo")[0], address=topo.vip,
                   prefixlen=32)
            n.route("add", dst="198.18.0.0/15", gateway=node.lb_ip)
        for j, b in enumerate(topo.backends, 1):
            node_ip, b_ip = f"198.19.{k}.{4 * j + 1}", f"198.19.{k}.{4 * j + 2}"
            _veth(node.ns, f"b{j}", node_ip, b.ns, f"n{k}", b_ip, 30)
            with NetNS(node.ns) as n:
                n.route("add", dst=f"{b.ip}/32", gateway=b_ip)
            with NetNS(b.ns) as n:
                # Replies of connections that came from node k go back to node k.
                n.route("add", dst="198.18.0.0/15", gateway=node_ip, table=100 + k)
                n.rule("add", fwmark=k, table=100 + k, priority=100 + k)
                if k == 1:
                    n.route("add", dst="198.18.0.0/15", gateway=node_ip)
    for b in topo.backends:
        with NetNS(b.ns) as n:
            n.addr("add", index=n.link_lookup(ifname="lo")[0], address=b.ip, prefixlen=32)
        _mark_by_link(b.ns, len(topo.nodes))
    progress("sysctls: forwarding, ECMP hashing on ports, reverse-path filter off")
    for ns in topo.namespaces:
        T._sysctl(ns, "net.ipv4.tcp_tw_reuse", "1")
        T._sysctl(ns, "net.ipv4.ip_local_port_range", "10000 65000")
        for key in ("all", "default"):
            T._sysctl(ns, f"net.ipv4.conf.{key}.rp_filter", "0")
    for ns in [topo.lb_ns] + [n.ns for n in topo.nodes]:
        T._sysctl(ns, "net.ipv4.ip_forward", "1")
    # Hash each connection's 4-tuple (not only the addresses) onto the router's paths.
    T._sysctl(topo.lb_ns, "net.ipv4.fib_multipath_hash_policy", "1")
    for node in topo.nodes:
        for ifname in ["up", *topo.backend_ifnames]:
            T._sysctl(node.ns, f"net.ipv4.conf.{ifname}.rp_filter", "0")
            T._sysctl(node.ns, f"net.ipv4.conf.{ifname}.accept_local", "1")
    for b in topo.backends:
        for k in range(1, len(topo.nodes) + 1):
            T._sysctl(b.ns, f"net.ipv4.conf.n{k}.rp_filter", "0")
    # XDP on a node redirects into the router's and the backends' ends of its links.
    T.attach_xdp_pass([(topo.lb_ns, n.lb_ifname) for n in topo.nodes]
                      + [(b.ns, f"n{k}") for b in topo.backends
                         for k in range(1, len(topo.nodes) + 1)])
    progress("cluster network ready")


def _mark_by_link(ns: str, n_nodes: int) -> None:
    """nftables in a backend: a connection's mark is the node link it arrived on, and
    locally sent packets (the replies) carry it, so the fwmark rules route them back."""
    marks = " ".join(f'iifname "n{k}" ct mark set {k};' for k in range(1, n_nodes + 1))
    rules = ("table ip lbtlab {\n"
             f"  chain pre {{ type filter hook prerouting priority -150; {marks} }}\n"
             "  chain out { type route hook output priority -150; meta mark set ct mark; }\n"
             "}\n")
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=rules, text=True,
                   check=True, capture_output=True)


# --- configs and processes -----------------------------------------------------------------


def node_config(topo: Topology, node: str) -> str:
    """The serve config of one node: the same listeners and Maglev groups on every node."""
    ns = topo.ns_of(node)
    replies = ", ".join(f'"{n}"' for n in topo.backend_ifnames)

    n = len(topo.backends)
    weights = [100 // n + (1 if j < 100 % n else 0) for j in range(n)]   # sum 100

    def targets(port: int) -> str:
        return "".join(f'  {{ ip = "{b.ip}", port = {port}, weight = {w} }},  # {b.node}\n'
                       for b, w in zip(topo.backends, weights, strict=True))

    return f"""\
# lbtui cluster lab "{topo.lab}", {node}: written by `lbtui lab up --nodes`.
[datapath]
instance = "{node_instance(topo.lab, node)}"
netns = "{ns}"
interfaces = ["up"]
reply_interfaces = [{replies}]
xdp_mode = "native"

[settings]
stats = true

[[listener]]
port = {HTTP_LISTEN_PORT}
protocol = "tcp"
hash = "maglev"
targets = [
{targets(T.HTTP_PORT)}]

[[listener]]
port = {ECHO_LISTEN_PORT}
protocol = "tcp"
hash = "maglev"
targets = [
{targets(T.ECHO_PORT)}]
"""


def cluster_file(lab: str) -> Path:
    """The lab's cluster file: ``lbtui console --cluster`` opens every node."""
    return T.lab_dir(lab) / "cluster.toml"


def write_cluster_file(topo: Topology) -> Path:
    from lbtui.control.cluster import Node
    from lbtui.control.clusterfile import cluster_file_text

    nodes = [Node(n.node, node_instance(topo.lab, n.node)) for n in topo.nodes]
    path = cluster_file(topo.lab)
    bird.write_config(path, cluster_file_text(
        nodes, topo.lab, f'lbtui cluster lab "{topo.lab}": written by `lbtui lab up '
        f"--nodes`.\nlbtui console --cluster {path}"))
    return path


def write_configs(topo: Topology) -> None:
    """Each node's serve config and BIRD config, the router's BIRD config, and the cluster
    file naming the nodes."""
    d = T.lab_dir(topo.lab)
    write_cluster_file(topo)
    peers = [(n.node, n.lb_ip, n.ip) for n in topo.nodes]
    bird.write_config(d / "bird-router.conf",
                      bird.router_config(topo.nodes[0].lb_ip, peers, topo.vip))
    for k, n in enumerate(topo.nodes, 1):
        bird.write_config(d / f"{n.node}.toml", node_config(topo, n.node))
        bird.write_config(d / f"bird-{n.node}.conf",
                          bird.node_config(n.ip, bird.ROUTER_AS + k, n.lb_ip, topo.vip))


def start_router(topo: Topology) -> None:
    d = T.lab_dir(topo.lab)
    topo.popen("lb", bird.bird_argv(d / "bird-router.conf", bird_socket(topo.lab, "router")),
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_node(topo: Topology, node: str) -> subprocess.Popen[str]:
    """``serve`` for a node under the announce hook (run from the root namespace: serve
    finds its interfaces through the config's netns). Its output goes to <node>.log."""
    d = T.lab_dir(topo.lab)
    argv = T.python_argv("lbtui.lab.announce", "--netns", topo.ns_of(node),
                         "--bird-config", str(d / f"bird-{node}.conf"),
                         "--bird-socket", str(bird_socket(topo.lab, node)),
                         "--instance", node_instance(topo.lab, node), "--",
                         *T.python_argv("lbtui.cli", "serve", "--config",
                                        str(d / f"{node}.toml")))
    with open(d / f"{node}.log", "w") as log:   # the child keeps its own copy
        p: subprocess.Popen[str] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, text=True)
    topo.pids.append(p.pid)
    topo.save()
    return p


def _node_pid(topo: Topology, node: str, hook: bool) -> int | None:
    """The pid of a node's announce hook (``hook``) or of its serve (the hook's child)."""
    # Not lab_dir(): asking about a removed lab must not create its directory again.
    config = str(T.STATE_DIR / topo.lab / f"{node}.toml").encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if b"serve" in argv and config in argv and \
                    (b"lbtui.lab.announce" in argv) == hook:
                return int(entry.name)
    return None


def serve_pid(topo: Topology, node: str) -> int | None:
    """The pid of a node's serve (the announce hook's child), if it runs."""
    return _node_pid(topo, node, hook=False)


def stop_serve(topo: Topology, node: str) -> bool:
    """Stop one node's serve (SIGTERM), as a failure would: its hook then stops BIRD and
    the path is withdrawn after serve stopped balancing. False if it was not running."""
    pid = serve_pid(topo, node)
    if pid is None:
        return False
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    return True


def wait_stopped(topo: Topology, node: str, timeout: float = 30) -> None:
    """Wait until a node's serve has exited (detached XDP, unpinned); TimeoutError if not."""
    deadline = time.monotonic() + timeout
    while serve_pid(topo, node) is not None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{node}'s serve still runs after {timeout:g} s; see "
                               f"{T.lab_dir(topo.lab) / f'{node}.log'}")
        time.sleep(0.1)


def drain_node(topo: Topology, node: str) -> bool:
    """Stop one node the planned way (SIGTERM to its announce hook): the path is withdrawn
    first and serve stops a second later. False if the node was not running."""
    pid = _node_pid(topo, node, hook=True)
    if pid is None or serve_pid(topo, node) is None:
        return False
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    return True


# --- state ---------------------------------------------------------------------------------


def sessions(topo: Topology) -> dict[str, bool]:
    """The router's BGP sessions: node -> established."""
    return bird.established(topo.lb_ns, bird_socket(topo.lab, "router"))


def vip_paths(topo: Topology) -> list[str]:
    """The nodes the router's route to the VIP goes through (several: ECMP)."""
    out = subprocess.run(["ip", "netns", "exec", topo.lb_ns, "ip", "-j", "route",
                          "show", f"{topo.vip}/32"], capture_output=True, text=True,
                         timeout=10).stdout
    by_ip = {n.ip: n.node for n in topo.nodes}
    hops: list[str] = []
    for r in json.loads(out or "[]"):
        gws = [h.get("gateway") for h in r.get("nexthops", [])] or [r.get("gateway")]
        hops += [by_ip.get(g, str(g)) for g in gws if g]
    return sorted(hops)


def wait_paths(topo: Topology, want: list[str], timeout: float = 30) -> float:
    """Wait until the router's VIP route goes through exactly ``want``; returns seconds
    waited. TimeoutError names what the route and the sessions are."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if vip_paths(topo) == sorted(want):
            return time.monotonic() - t0
        time.sleep(0.05)
    raise TimeoutError(f"the router's route to {topo.vip} goes through {vip_paths(topo)}, "
                       f"not {sorted(want)} after {timeout:g} s; BGP sessions: "
                       f"{sessions(topo)}; see the node logs in {T.lab_dir(topo.lab)}")


def up(lab: str, n_nodes: int = 2, n_clients: int = 2, n_backends: int = 3,
       progress: T.Progress = T._quiet, timeout: float = 60) -> Topology:
    """Build the cluster, start backends, the router and every node; return once the
    router has a path over every node. Tears everything down if a step fails."""
    topo = build(lab, n_nodes, n_clients, n_backends, progress)
    try:
        progress("starting backend servers (HTTP :8080, echo :7000, UDP :9000)")
        with _stderr_to(T.lab_dir(lab) / "backends.log"):
            T.start_backend_servers(topo)
        write_configs(topo)
        progress("starting BIRD on the router and serve + BIRD on every node")
        start_router(topo)
        for n in topo.nodes:
            start_node(topo, n.node)
        waited = wait_paths(topo, [n.node for n in topo.nodes], timeout)
        progress(f"router: ECMP route to {topo.vip} over {len(topo.nodes)} nodes "
                 f"({waited:.1f} s)")
    except BaseException:
        teardown(lab)
        raise
    return topo


@contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Children started in the block write their stderr to ``path``, not to ours: they
    outlive ``lab up``, and must not hold its caller's pipe open."""
    saved = os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.dup2(fd, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)


def stop_nodes(topo: Topology, wait: float = 15) -> None:
    """Stop every node's hook and serve (SIGTERM, so serve detaches XDP and unpins), then
    remove what a serve that did not finish left (its instance's pins)."""
    from lbtui.control import instance as I

    for pid in topo.pids:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and any(
            serve_pid(topo, n.node) for n in topo.nodes):
        time.sleep(0.1)
    for n in topo.nodes:
        with suppress(Exception):
            I.teardown(node_instance(topo.lab, n.node))


def teardown(lab: str) -> None:
    topo = Topology.load(lab)
    if topo is not None and topo.nodes:
        stop_nodes(topo)
    T.teardown(lab)


def is_cluster(lab: str) -> bool:
    topo = Topology.load(lab)
    return topo is not None and bool(topo.nodes)



def counter(topo: Topology, node: str, name: str) -> int:
    """One of a node's datapath counters (``lbtui ctl status``) since its serve started."""
    from lbtui.control.instance import Instance

    inst = Instance.attach(node_instance(topo.lab, node))
    try:
        return int(inst.status()["counters"].get(name, 0))
    finally:
        inst.close()


def flows_created(topo: Topology, node: str) -> int:
    """New connections a node's datapath has balanced since its serve started."""
    return counter(topo, node, "flows_created")


def adopted(topo: Topology, node: str) -> int:
    """Connections a node's datapath adopted mid-stream (moved from another node)."""
    return counter(topo, node, "flows_adopted")
