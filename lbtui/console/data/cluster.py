"""The collector of a console over many nodes: one ``Collector`` and event feed per node,
their snapshots merged (``merge``) into totals with the per-node snapshots beside them.

A node is read only while it is reachable: its instance's pins exist and its program is
the one we opened. A node whose serve stopped is reported as unreachable (the header says
so, its figures leave the totals, and the views say whose figures they show) and is tried
again on every refresh; a node that restarted (a new program, new maps) is opened again,
so the console never reads maps nobody forwards with any more.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Protocol

from lbtui.console.data.collector import Collector
from lbtui.console.data.eventfeed import EventFeed
from lbtui.console.data.hub import OpenedTracker
from lbtui.console.data.merge import merge
from lbtui.console.data.names import AppliedNames
from lbtui.console.data.snapshot import InstanceInfo, NodeState, Snapshot
from lbtui.control.cluster import Node
from lbtui.control.instance import Instance, _pinned_prog_id, pin_dir_of, pins_complete
from lbtui.maps.events import LbEvent


class NodeDown(Exception):
    """A node could not be read; ``problem`` says why, for the header."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


class NodeSource(Protocol):
    """One node's snapshots (``LiveNode``, or a test's fake)."""

    @property
    def node(self) -> Node: ...

    def collect(self) -> Snapshot: ...

    def close(self) -> None: ...


class LiveNode:
    """A node's instance on this host, attached on demand and re-attached when its serve
    restarted; its event hub followed by a thread of its own."""

    def __init__(self, node: Node, events: bool = True) -> None:
        self._node = node
        self.inst: Instance | None = None
        self.collector: Collector | None = None
        self.prog_id: int | None = None
        self.feed = EventFeed() if events else None
        self.opened = OpenedTracker()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def node(self) -> Node:
        return self._node

    def _attach(self) -> Collector:
        from lbtui.console.session import instance_info  # session builds apps: no cycle

        inst = Instance.attach(self.node.instance)
        try:
            self.collector = Collector(inst.maps, instance_info(inst),
                                       names=AppliedNames(inst.name))
        except BaseException:
            inst.close()
            raise
        self.inst = inst
        self.prog_id = _pinned_prog_id(inst.pin_dir)
        self.opened = OpenedTracker()
        return self.collector

    def _detach(self) -> None:
        inst, self.inst, self.collector = self.inst, None, None
        if inst is not None:
            inst.close()

    def _current(self) -> Collector:
        """The collector over the node's live maps (NodeDown if it has none)."""
        pin_dir = pin_dir_of(self.node.instance)
        if not pins_complete(pin_dir):
            self._detach()
            raise NodeDown("not running: nothing pinned (its serve stopped?)")
        if self.collector is not None and _pinned_prog_id(pin_dir) != self.prog_id:
            self._detach()                        # restarted: new maps
        if self.collector is None:
            try:
                return self._attach()
            except (OSError, RuntimeError, ValueError) as e:
                raise NodeDown(f"cannot attach: {e}") from None
        return self.collector

    def collect(self) -> Snapshot:
        collector = self._current()
        self._follow()
        events = self.feed.take() if self.feed else []
        try:
            snap = collector.collect(events)
        except OSError as e:
            self._detach()
            raise NodeDown(f"read failed: {e}") from None
        if self.feed is not None:
            snap.hub = self.feed.take_hub().rename(snap.sni_names)
            snap.group_new = self.opened.update(snap.hub.health, snap.now_ns)
        return snap

    def _follow(self) -> None:
        if self.feed is None or self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self.feed.run, args=(self.node.instance, self._stop.is_set),
            name=f"events-{self.node.name}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None
        self._detach()


class ClusterCollector:
    """``collect`` reads every node (in order) and merges the reachable ones."""

    def __init__(self, label: str, sources: Sequence[NodeSource]) -> None:
        if not sources:
            raise ValueError("a cluster console needs at least one node")
        self.sources = list(sources)
        self.index = {s.node.name: i for i, s in enumerate(self.sources)}
        self._info = InstanceInfo(name=label, nodes=tuple(self.index))
        self._seq = 0
        self.states: list[NodeState] = []

    @property
    def info(self) -> InstanceInfo:
        return self._info

    def collect(self, events: list[LbEvent] | None = None) -> Snapshot:
        """``events`` is unused: each node's come from its own hub."""
        t0 = time.perf_counter()
        states, snaps = [], {}
        for src in self.sources:
            n = src.node
            try:
                snaps[n.name] = src.collect()
                states.append(NodeState(n.name, n.instance, True))
            except NodeDown as e:
                states.append(NodeState(n.name, n.instance, False, e.problem))
        self.states = states
        if not snaps:
            raise NodeDown("no node is reachable: " + "; ".join(
                f"{s.name}: {s.problem}" for s in states))
        self._seq += 1
        snap = merge(self._info.name, states, snaps, self._seq, self.index)
        snap.total_ms = (time.perf_counter() - t0) * 1000
        return snap

    def close(self) -> None:
        for src in self.sources:
            src.close()


__all__ = ["ClusterCollector", "LiveNode", "NodeDown", "NodeSource"]
