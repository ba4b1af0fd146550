"""Merging nodes' snapshots (``lbtui.console.data.merge``): totals are sums, rows keep
their node, a target's health is its worst node's, interfaces stay apart per node, and
nodes whose routes differ are named. No BPF."""

from __future__ import annotations

from dataclasses import replace

import console_data as D
import pytest
from test_console_cluster_snapshots import DownNode, FakeNode

from lbtui.console.data import conns as C
from lbtui.console.data.cluster import ClusterCollector, NodeDown
from lbtui.console.data.hub import FAILING, HEALTHY
from lbtui.console.data.merge import IFINDEX_SPAN, merge_hub
from lbtui.console.data.snapshot import NodeState


def test_totals_are_the_nodes_sums() -> None:
    a, b = FakeNode("node1", 13), FakeNode("node2", 9)
    one, two = a.collect(), b.collect()
    s = ClusterCollector("c", [FakeNode("node1", 13), FakeNode("node2", 9),
                               DownNode("node3", 1)]).collect()
    assert [(n.name, n.reachable) for n in s.nodes] == [
        ("node1", True), ("node2", True), ("node3", False)]
    assert "serve stopped" in s.nodes[2].problem
    assert list(s.node_snaps) == ["node1", "node2"]
    assert s.conns.total == one.conns.total + two.conns.total
    assert len(s.conns.rows) == len(one.conns.rows) + len(two.conns.rows)
    assert {r[C.NODE] for r in s.conns.rows} == {0, 1}
    assert s.active == one.active + two.active
    assert s.rates.new_conns == pytest.approx(one.rates.new_conns + two.rates.new_conns)
    assert s.counters["flows_created"] == (one.counters["flows_created"]
                                           + two.counters["flows_created"])
    for key, t in s.group_traffic.items():
        assert t.active == sum(x.group_traffic[key].active for x in (one, two)
                               if key in x.group_traffic)
        assert t.total_bytes == sum(x.group_traffic[key].total_bytes for x in (one, two)
                                    if key in x.group_traffic)
    # Interfaces of different nodes never share a key.
    assert set(s.info.ifnames.values()) == {f"{n}:{i}" for n in ("node1", "node2")
                                            for i in D.IFINDEX}
    assert all(k // IFINDEX_SPAN in (0, 1) for k in s.reasons)
    assert s.info.nodes == ("node1", "node2", "node3") and s.drift == []


def test_no_node_reachable_says_so() -> None:
    with pytest.raises(NodeDown, match="no node is reachable: node3: not running"):
        ClusterCollector("c", [DownNode("node3", 1)]).collect()


def test_health_is_the_worst_nodes_and_drift_is_named() -> None:
    a, b = FakeNode("node1", 13).collect(), FakeNode("node2", 13).collect()
    h = a.hub.health[0]
    a.hub.health = [replace(h, state=HEALTHY, opened=10)]
    b.hub.health = [replace(h, state=FAILING, opened=5)]
    merged = merge_hub([("node1", a.hub), ("node2", b.hub)])
    assert [(x.state, x.opened) for x in merged.health] == [(FAILING, 15)]
    assert {n.source.split()[0] for n in merged.notices} == {"node1", "node2"}

    from lbtui.console.data.merge import merge
    b.listeners = b.listeners[:-1]
    states = [NodeState("node1", "i1", True), NodeState("node2", "i2", True)]
    s = merge("c", states, {"node1": a, "node2": b}, 1, {"node1": 0, "node2": 1})
    assert s.drift == ["node2"]
