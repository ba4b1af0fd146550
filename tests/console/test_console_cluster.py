"""The console over a real 2-node cluster lab (``lab up --nodes 2``), driven by Pilot:
both nodes' flows and their totals after real connections through the router; a weight
edit in the form changes both nodes' maps and config files; with one node's serve stopped
the header and Targets say so, an edit is refused naming that node and the other node is
unchanged; when the node is back the console reads it again."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from clusterlab import (
    EchoConns,
    cluster_lab,
    file_hash,
    file_weights,
    map_hash,
    map_weights,
    nodes,
    snapshot_of,
    start_node,
    stop_node,
)
from consolepilot import type_into, until
from textual.pilot import Pilot

from lbtui import maps as M
from lbtui.console.app import ConsoleApp
from lbtui.console.data import conns as C
from lbtui.console.data.tables import ALL_NODES, UNREACHABLE
from lbtui.console.forms.base import FormScreen
from lbtui.console.forms.dialogs import ConfirmScreen
from lbtui.console.forms.routes import WeightsForm
from lbtui.console.session import build_cluster_app
from lbtui.console.views.targets import TargetsView
from lbtui.console.widgets.header import header_text
from lbtui.console.widgets.linetable import LineTable
from lbtui.control.cluster import ClusterController
from lbtui.control.clusterfile import Cluster
from lbtui.control.instance import Instance
from lbtui.lab import cluster as LC
from lbtui.lab import topology as T
from lbtui.model import GroupKey, GroupKind

pytestmark = [pytest.mark.datapath, pytest.mark.netns]
SIZE = (170, 40)
N_CONNS = 12


@pytest.fixture(scope="module")
def lab() -> Iterator[T.Topology]:
    with cluster_lab("c") as topo:
        yield topo


@contextlib.asynccontextmanager
async def console(topo: T.Topology) -> AsyncIterator[tuple[ConsoleApp, Pilot[str | None]]]:
    """The console as `lbtui console --cluster` opens it (built on a thread, as the CLI
    builds it before the app's loop starts), on its first snapshot of both nodes."""
    app, collector = await asyncio.to_thread(
        build_cluster_app, Cluster(topo.lab, tuple(nodes(topo))), refresh_interval=0.2)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.snapshot is not None and len(
                app.snapshot.node_snaps) == 2 and app.snapshot.hub.connected,
                "the first snapshot of both nodes")
            yield app, pilot
            await pilot.press("q")
    finally:
        await asyncio.to_thread(collector.close)


def echo_flows(topo: T.Topology, node: str) -> int:
    """Open flows to VIP:7000 in a node's conntrack map, read directly."""
    inst = Instance.attach(LC.node_instance(topo.lab, node))
    try:
        return sum(c.vip_port == LC.ECHO_LISTEN_PORT and c.state == "established"
                   for c in M.list_connections(inst.maps.conntrack_map))
    finally:
        inst.close()


async def test_both_nodes_flows_and_totals(lab: T.Topology) -> None:
    conns = EchoConns(lab, N_CONNS)
    try:
        per_node = {n: echo_flows(lab, n) for n in ("node1", "node2")}
        assert sum(per_node.values()) == N_CONNS and min(per_node.values()) > 0, per_node
        async with console(lab) as (app, pilot):
            def shown() -> dict[str, int]:
                view = app.conns_view.view
                names = app.collector.info.nodes
                out = {n: 0 for n in names}
                for r in view.rows if view else []:
                    if int.from_bytes(r[0][10:12], "big") == LC.ECHO_LISTEN_PORT:
                        out[names[r[C.NODE]]] += 1
                return out
            await until(pilot, lambda: shown() == per_node, "each node's flows, by node")
            head = header_text(app.snapshot).plain
            assert f"cluster {lab.lab}" in head and "2/2 nodes node1 node2" in head, head

            await pilot.press("3")
            view = app.query_one(TargetsView)

            def actives() -> dict[str, int]:
                out: dict[str, int] = {}
                for r in view.rows:
                    if r.group is not None and r.group.ref == "listener|7000":
                        out[r.node or ""] = out.get(r.node or "", 0) + r.active
                return out
            want = {ALL_NODES: N_CONNS, **per_node}
            await until(pilot, lambda: actives() == want, f"Targets active {want}")
            table = app.query_one("#targets-table", LineTable)
            assert "node" in [c.key for c in table.all_columns]
            # Every total row is the sum of its node rows.
            rows = [r for r in view.rows if r.group is not None]
            for total in (r for r in rows if r.node == ALL_NODES):
                parts = [r for r in rows if r.ref == total.ref and r.node != ALL_NODES]
                assert [p.node for p in parts] == ["node1", "node2"]
                assert total.active == sum(p.active for p in parts)
                assert total.traffic.total_bytes == sum(p.traffic.total_bytes
                                                        for p in parts)
    finally:
        conns.close()


async def weights_form(app: ConsoleApp, pilot: Pilot, weights: tuple[str, ...]
                       ) -> WeightsForm:
    """Routes view, listener :80, w, the weights typed, ctrl+s; returns the form once it
    closed or said why not."""
    await pilot.press("2")
    t = app.query_one("#routes-table", LineTable)
    t.move_to(next(i for i, r in enumerate(t.rows) if r.ref[0] == "listener|80"))
    await pilot.press("w")
    form = app.screen
    assert isinstance(form, WeightsForm)
    for row, w in zip(form.editor.rows, weights, strict=True):
        await type_into(pilot, row.weight_input, w)
    await pilot.press("ctrl+s")
    await until(pilot, lambda: not form.saving and (
        form not in app.screen_stack or form.error_text), "the form to save or refuse")
    return form


async def test_weight_edit_changes_both_nodes(lab: T.Topology) -> None:
    b = [e.ip for e in lab.backends]
    async with console(lab) as (app, pilot):
        t0 = time.perf_counter()
        form = await weights_form(app, pilot, ("60", "30", "10"))
        assert not isinstance(app.screen, FormScreen), form.error_text
        elapsed = time.perf_counter() - t0
        want = {b[0]: 60, b[1]: 30, b[2]: 10}
        for n in ("node1", "node2"):
            assert map_weights(lab, n) == want, n
            assert file_weights(lab, n) == want, n
        assert elapsed < 10
    ClusterController(nodes(lab)).set_weights(
        GroupKey.of(GroupKind.LISTENER, 80),
        load_group(lab))                                   # back as the lab wrote it


async def test_hash_switch_changes_both_nodes(lab: T.Topology) -> None:
    """h in Routes switches the group's pick on every node, maps and config files."""
    key = GroupKey.of(GroupKind.LISTENER, 80)
    assert {map_hash(lab, n) for n in ("node1", "node2")} == {"maglev"}
    try:
        async with console(lab) as (app, pilot):
            await pilot.press("2")
            t = app.query_one("#routes-table", LineTable)
            t.move_to(next(i for i, r in enumerate(t.rows) if r.ref[0] == "listener|80"))
            await pilot.press("h")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            await until(pilot, lambda: all(map_hash(lab, n) == "weighted"
                                           for n in ("node1", "node2")), "both nodes")
            for n in ("node1", "node2"):
                assert file_hash(lab, n) == "weighted", n
    finally:
        ClusterController(nodes(lab)).set_hash(key, "maglev")    # as the lab wrote it
    assert {map_hash(lab, n) for n in ("node1", "node2")} == {"maglev"}


def load_group(topo: T.Topology):   # type: ignore[no-untyped-def]
    from lbtui.targets import TargetGroup

    return TargetGroup.of([(e.ip, T.HTTP_PORT, w) for e, w in zip(topo.backends,
                                                                  (34, 33, 33), strict=True)])


async def test_stopped_node_is_shown_and_refuses_edits(lab: T.Topology) -> None:
    async with console(lab) as (app, pilot):
        stop_node(lab, "node2")
        try:
            await until(pilot, lambda: [n.reachable for n in app.snapshot.nodes]
                        == [True, False], "node2 shown unreachable", timeout=15)
            head = header_text(app.snapshot).plain
            assert "1/2 nodes" in head and "node2 unreachable (not running" in head, head
            await pilot.press("3")
            view = app.query_one(TargetsView)
            await until(pilot, lambda: any(r.node == "node2" and r.state == UNREACHABLE
                                           for r in view.rows), "node2's rows unreachable")
            assert all(r.state == UNREACHABLE for r in view.rows if r.node == "node2")

            before = snapshot_of(lab)
            assert list(before) == ["node1"]
            form = await weights_form(app, pilot, ("50", "50", "0"))
            assert app.screen is form, "the refused form stays open"
            assert "node2 (" in form.error_text and "unreachable" in form.error_text
            assert "nothing changed on any node" in form.error_text
            assert snapshot_of(lab) == before                 # node1: maps and file
            await pilot.press("escape")

            await pilot.press("2")                            # h is refused the same way
            t = app.query_one("#routes-table", LineTable)
            t.move_to(next(i for i, r in enumerate(t.rows) if r.ref[0] == "listener|80"))
            await pilot.press("h")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            await until(pilot, lambda: any("node2" in str(n.message) for n in app._notifications
                                           if n.title == "not changed"), "the refusal")
            assert snapshot_of(lab) == before and map_hash(lab, "node1") == "maglev"
            assert file_hash(lab, "node1") == "maglev"
        finally:
            start_node(lab, "node2")
        await until(pilot, lambda: all(n.reachable for n in app.snapshot.nodes),
                    "node2 read again after its restart", timeout=20)
