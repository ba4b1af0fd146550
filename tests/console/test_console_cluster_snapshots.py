"""Snapshot tests of the console over many nodes, from fake nodes (``console_data``'s
scenario, at two different moments, so the nodes' figures differ) and a third node that
is unreachable: the header with the nodes, Targets with totals and a row per node,
Connections with a node column. No BPF, no root.

Update after an intended change with ``pytest tests/console --snapshot-update``."""

from __future__ import annotations

import console_data as D
import pytest
from consolepilot import loaded

from lbtui.console.app import ConsoleApp
from lbtui.console.data.cluster import ClusterCollector, NodeDown
from lbtui.console.data.snapshot import Snapshot
from lbtui.control.cluster import Node

SIZE = (170, 40)


class FakeNode:
    """A reachable node: the scenario after ``steps`` refreshes, with the hub's word."""

    def __init__(self, name: str, steps: int) -> None:
        self._node = Node(name, f"lab-demo-{name}")
        self.fake = D.FakeCollector(steps=steps)
        self.feed = D.event_feed()

    @property
    def node(self) -> Node:
        return self._node

    def collect(self) -> Snapshot:
        snap = self.fake.collect(self.feed.take())
        snap.hub = self.feed.take_hub().rename(snap.sni_names)
        return snap

    def close(self) -> None:
        pass


class DownNode(FakeNode):
    def collect(self) -> Snapshot:
        raise NodeDown("not running: nothing pinned (its serve stopped?)")


def cluster_app() -> ConsoleApp:
    collector = ClusterCollector("demo", [FakeNode("node1", 13), FakeNode("node2", 9),
                                          DownNode("node3", 1)])
    return ConsoleApp(collector, refresh_interval=None, poll_ringbuf=False)


pytestmark = pytest.mark.usefixtures("utc")


def test_cluster_targets(snap_compare) -> None:
    """Header: 2 of 3 nodes, node3 unreachable and why. Targets: every (group, target)
    for all nodes, then node1's, node2's and node3's (unreachable) rows."""
    assert snap_compare(cluster_app(), press=["3"], terminal_size=SIZE, run_before=loaded)


def test_cluster_connections(snap_compare) -> None:
    """Both reachable nodes' flows, with a node column, sorted by node."""
    assert snap_compare(cluster_app(), press=["less_than_sign"] * 6, terminal_size=SIZE,
                        run_before=loaded)
