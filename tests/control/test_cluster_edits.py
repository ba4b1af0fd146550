"""Edits over every node of a real 2-node cluster lab (``lab up --nodes 2``), all or
nothing: an edit changes every node's maps and config file (and survives a restart); a
node that is locked by another editor or unreachable refuses the edit with its name and
nothing changes on any node; a failure after the first node applied undoes that node, maps
and file. ``lbtui ctl --instance a,b`` runs the same transaction."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from clusterlab import (
    cluster_lab,
    config_path,
    file_weights,
    map_weights,
    nodes,
    run_lbtui,
    snapshot_of,
    start_node,
    stop_node,
)

from lbtui.control import controller as CT
from lbtui.control.cluster import (
    ClusterController,
    ClusterEditFailed,
    ClusterRefused,
    NodeUnreachable,
)
from lbtui.lab import cluster as C
from lbtui.lab import topology as T
from lbtui.model import GroupKey, GroupKind

pytestmark = [pytest.mark.datapath, pytest.mark.netns]

KEY = GroupKey.of(GroupKind.LISTENER, 80)


@pytest.fixture(scope="module")
def lab() -> Iterator[T.Topology]:
    with cluster_lab("e") as topo:
        yield topo


def b(topo: T.Topology, j: int) -> str:
    return topo.backends[j].ip


def test_an_edit_changes_every_node_maps_and_file(lab: T.Topology) -> None:
    c = ClusterController(nodes(lab), source="test")
    c.set_weight(KEY, f"{b(lab, 0)}:{T.HTTP_PORT}", 60)
    want = {b(lab, 0): 60, b(lab, 1): 20, b(lab, 2): 20}
    for n in ("node1", "node2"):
        assert map_weights(lab, n) == want, n
        assert file_weights(lab, n) == want, n
        assert "# backend1" in config_path(lab, n).read_text()     # comments kept
    assert c.last_edit_ms > 0
    # The same transaction from the command line, over both instances.
    names = ",".join(n.instance for n in nodes(lab))
    r = run_lbtui("ctl", "--instance", names, "weight", "listener", "80",
                  f"{b(lab, 0)}:{T.HTTP_PORT}", "34")
    assert "on 2 nodes" in r.stdout, r.stdout
    for n in ("node1", "node2"):
        assert map_weights(lab, n)[b(lab, 0)] == 34
        assert file_weights(lab, n)[b(lab, 0)] == 34


def test_a_node_locked_by_another_editor_refuses_everywhere(lab: T.Topology) -> None:
    before = snapshot_of(lab)
    inst2 = C.node_instance(lab.lab, "node2")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from lbtui.control.lock import edit_lock\n"
         f"lock = edit_lock({inst2!r}); lock.acquire()\n"
         "print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        c = ClusterController(nodes(lab), source="test", lock_wait=0.3)
        with pytest.raises(ClusterRefused) as e:
            c.set_weight(KEY, f"{b(lab, 1)}:{T.HTTP_PORT}", 0)
        msg = str(e.value)
        assert msg.startswith(f"node2 ({inst2}): locked") and str(holder.pid) in msg, msg
        assert msg.endswith("nothing changed on any node"), msg
        assert snapshot_of(lab) == before
    finally:
        holder.kill()
        holder.wait(10)


def test_a_refusal_by_one_node_config_changes_nothing(lab: T.Topology) -> None:
    before = snapshot_of(lab)
    c = ClusterController(nodes(lab), source="test")
    with pytest.raises(ClusterRefused, match=r"^node1 .*: no listener on port 81"):
        c.set_weight(GroupKey.of(GroupKind.LISTENER, 81), f"{b(lab, 0)}:8080", 50)
    assert snapshot_of(lab) == before


@pytest.mark.parametrize("where", ["maps", "file"])
def test_a_failure_on_the_second_node_undoes_the_first(lab: T.Topology, where: str,
                                                       monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    """node1 applies (maps and file), then node2 fails: its map update (``maps``) or its
    file write after its maps changed (``file``). Every node ends as it began."""
    before = snapshot_of(lab)
    inst2 = C.node_instance(lab.lab, "node2")
    if where == "maps":
        real_apply = CT.Instance.apply

        def apply(self, config):   # type: ignore[no-untyped-def]
            if self.name == inst2:
                raise RuntimeError("injected: map update failed")
            return real_apply(self, config)
        monkeypatch.setattr(CT.Instance, "apply", apply)
    else:
        real_save = CT.save_config

        def save(config, path, old=None):   # type: ignore[no-untyped-def]
            if path == config_path(lab, "node2"):
                raise OSError(28, "injected: no space left on device")
            return real_save(config, path, old=old)
        monkeypatch.setattr(CT, "save_config", save)
    c = ClusterController(nodes(lab), source="test")
    with pytest.raises(ClusterEditFailed) as e:
        c.set_weight(KEY, f"{b(lab, 2)}:{T.HTTP_PORT}", 0)
    msg = str(e.value)
    assert msg.startswith(f"node2 ({inst2}) failed: ") and "injected" in msg, msg
    assert msg.endswith("undone on node1: nothing changed on any node"), msg
    assert snapshot_of(lab) == before


def test_an_unreachable_node_refuses_and_edits_survive_a_restart(lab: T.Topology) -> None:
    c = ClusterController(nodes(lab), source="test")
    c.set_weight(KEY, f"{b(lab, 1)}:{T.HTTP_PORT}", 50)
    edited = map_weights(lab, "node2")
    stop_node(lab, "node2")
    try:
        before = snapshot_of(lab)
        assert list(before) == ["node1"]
        with pytest.raises(NodeUnreachable) as e:
            c.set_weight(KEY, f"{b(lab, 1)}:{T.HTTP_PORT}", 10)
        msg = str(e.value)
        assert msg.startswith("node2 (") and "unreachable" in msg, msg
        assert msg.endswith("nothing changed on any node"), msg
        assert snapshot_of(lab) == before
        r = run_lbtui("ctl", "--instance", ",".join(n.instance for n in nodes(lab)),
                      "weight", "listener", "80", f"{b(lab, 1)}:{T.HTTP_PORT}", "10",
                      check=False)
        assert r.returncode == 3 and "node2" in r.stderr, (r.returncode, r.stderr)
    finally:
        start_node(lab, "node2")
    assert map_weights(lab, "node2") == edited      # the file's weights, after a restart
