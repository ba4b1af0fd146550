"""The 2-node cluster lab for real: BIRD on the router peers with both nodes, the router's
route to the VIP has a path over each, new connections through the router succeed and land
on both nodes, and when one node's serve stops its path is withdrawn and new connections
keep succeeding; the long-lived connections it held move to the other node, whose Maglev
group adopts them. A drained node (path withdrawn before serve stops) fails no new
connection. ``lbtui lab up --nodes 2`` / ``lab down`` leave nothing behind."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from labcheck import lab_name, lbtui, root_links, wait_for

from lbtui import netns
from lbtui.lab import cluster as C
from lbtui.lab import failover as F
from lbtui.lab import topology as T
from lbtui.lab.topology import Topology, lab_namespaces

pytestmark = [pytest.mark.datapath, pytest.mark.netns]

N_NEW = 40


@pytest.fixture
def cluster() -> Iterator[Topology]:
    name = lab_name("cl")
    links_before = root_links()
    try:
        out = lbtui("lab", "up", "--lab", name, "--nodes", "2", timeout=120).stdout
        assert f"cluster lab {name} is up" in out
        topo = Topology.load(name)
        assert topo is not None
        yield topo
    finally:
        lbtui("lab", "down", "--lab", name, check=False)
    assert lab_namespaces(name) == []
    assert root_links() == links_before, "the root namespace's links changed"
    assert [n for n in ("node1", "node2") if C.serve_pid(topo, n)] == []
    assert not (T.STATE_DIR / name).exists(), "the lab's directory outlived lab down"


def new_connections(topo: Topology, n: int) -> list[str]:
    """``n`` new HTTP connections from the clients in turn; the errors ('' = answered)."""
    errors = []
    for i in range(n):
        with netns.inside(topo.clients[i % len(topo.clients)].ns):
            errors.append(F._http_once(topo.vip, timeout=2))
    return errors


def test_two_nodes_share_new_connections_and_survive_one_stopping(cluster: Topology) -> None:
    topo = cluster
    assert C.sessions(topo) == {"node1": True, "node2": True}
    assert C.vip_paths(topo) == ["node1", "node2"]           # one ECMP route, both nodes
    before = {n.node: C.flows_created(topo, n.node) for n in topo.nodes}
    assert new_connections(topo, N_NEW) == [""] * N_NEW
    spread = {n.node: C.flows_created(topo, n.node) - before[n.node] for n in topo.nodes}
    assert sum(spread.values()) == N_NEW, spread
    assert min(spread.values()) >= N_NEW // 5, f"ECMP did not spread: {spread}"

    assert C.stop_serve(topo, "node1")
    C.wait_paths(topo, ["node2"], timeout=15)                 # withdrawn
    assert C.sessions(topo) == {"node1": False, "node2": True}
    after = C.flows_created(topo, "node2")
    assert new_connections(topo, N_NEW) == [""] * N_NEW
    assert C.flows_created(topo, "node2") - after == N_NEW


def test_failover_under_load_keeps_every_long_lived_connection(cluster: Topology) -> None:
    """A small run of the failover benchmark, node1's serve stopping as a failure would:
    long-lived connections on the surviving node survive, and so do node1's, adopted by
    node2 (the same Maglev table picks the same backend); new connections fail at most
    while the stopped node's path is still up."""
    before = C.adopted(cluster, "node2")
    r = F.measure(cluster, rate=20, echo_conns=12, warmup=0.5, settle=1.0)
    assert r.echo_total == 12 and r.echo_stayed > 0 and r.echo_moved > 0, r
    assert r.echo_stayed_ok == r.echo_stayed, r
    assert r.echo_moved_ok == r.echo_moved, r
    assert C.adopted(cluster, "node2") - before >= r.echo_moved
    # Failures only between the stop and the withdrawal (plus one attempt's timeout).
    assert all(0 <= a.t <= r.withdraw_s + 1.0 for a in r.failed), r.failed
    assert len(r.attempts) > 20 and len(r.failed) <= len(r.attempts) // 4, r.failed
    assert all(a.ok for a in r.attempts if a.t > r.withdraw_s + 1.0)


def test_a_drained_node_fails_no_connection(cluster: Topology) -> None:
    r = F.measure(cluster, rate=20, echo_conns=12, warmup=0.5, settle=1.5, drain=True)
    assert r.drained and r.echo_total == 12 and r.echo_moved > 0, r
    assert r.failed == [], r.failed
    assert r.echo_stayed_ok + r.echo_moved_ok == r.echo_total, r
    wait_for(lambda: C.serve_pid(cluster, "node1") is None, 15,
             "node1's serve to stop after the withdrawal")


def test_lab_node_drains_and_starts_a_node(cluster: Topology) -> None:
    lab = cluster.lab
    out = lbtui("lab", "node", "--lab", lab, "node1", "drain").stdout
    assert f"route to {cluster.vip} goes through node2" in out, out
    assert C.vip_paths(cluster) == ["node2"]
    wait_for(lambda: C.serve_pid(cluster, "node1") is None, 15, "node1's serve to stop")
    assert new_connections(cluster, 10) == [""] * 10

    out = lbtui("lab", "node", "--lab", lab, "node1", "start").stdout
    assert f"route to {cluster.vip} goes through node1, node2" in out, out
    assert C.sessions(cluster) == {"node1": True, "node2": True}
    before = C.flows_created(cluster, "node1")
    assert new_connections(cluster, N_NEW) == [""] * N_NEW
    assert C.flows_created(cluster, "node1") > before, "the restarted node takes connections"

    bad = lbtui("lab", "node", "--lab", lab, "node7", "drain", check=False)
    assert bad.returncode == 2 and "node1, node2" in bad.stderr, bad.stderr


def test_a_node_whose_datapath_breaks_withdraws_its_path(cluster: Topology) -> None:
    """serve still runs, but its uplink lost the XDP program (detached by hand): the
    announce hook's health check withdraws the node, and new connections go to node2;
    a restarted serve attaches again and the node is announced again."""
    node1 = cluster.node("node1")
    subprocess.run(["ip", "-n", node1.ns, "link", "set", "dev", "up", "xdp", "off"],
                   check=True)
    waited = C.wait_paths(cluster, ["node2"], timeout=10)
    assert waited < 5, waited
    assert C.serve_pid(cluster, "node1") is not None, "serve itself keeps running"
    # The router may see BIRD's notification before the hook logs why it stopped BIRD.
    log = T.STATE_DIR / cluster.lab / "node1.log"
    wait_for(lambda: "withdrawn: up has no XDP program" in log.read_text(), 5,
             "the hook to log why it withdrew node1")
    assert new_connections(cluster, N_NEW) == [""] * N_NEW

    lbtui("lab", "node", "--lab", cluster.lab, "node1", "stop")
    out = lbtui("lab", "node", "--lab", cluster.lab, "node1", "start").stdout
    assert f"route to {cluster.vip} goes through node1, node2" in out, out
