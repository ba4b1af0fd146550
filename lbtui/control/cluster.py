"""One edit over every node of a cluster, all or nothing.

A cluster here is a list of lbtui instances on this host (``lbtui.control.clusterfile``):
the nodes of ``lbtui lab up --nodes N``, or any instances an operator names. An edit runs
each node's own edit pipeline (``Controller.begin`` / ``PendingEdit``), in two phases:

1. every node is opened (its pinned maps), its edit lock taken (a short wait: a node
   another editor holds is refused, not waited for), its config file re-read, the change
   applied to a copy and validated. Any refusal here (unreachable, locked, no such route,
   invalid) changes nothing anywhere, and the message names the node.
2. node by node, the maps change and the config file is written. If a node fails, the
   nodes already changed are undone (map entries and file text as they were), so every
   node ends as it began; the message names the node that failed and says so.

The locks are held until every node has committed or been undone, so no other editor sees
a half-applied cluster edit. The audit trail of each node (its event hub, its log) says
what changed there, once the locks are gone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lbtui.control.controller import Controller, Edits, PendingEdit
from lbtui.control.instance import Instance
from lbtui.errors import NotRunning
from lbtui.files import LockHeld
from lbtui.model import Config

# How long a cluster edit waits for a node's edit lock before refusing (a single-node edit
# waits 10 s; an operator editing many nodes wants to hear about a busy node at once).
LOCK_WAIT_S = 2.0


@dataclass(frozen=True)
class Node:
    """A cluster member: ``name`` as the operator calls it, ``instance`` the local lbtui
    instance behind it."""

    name: str
    instance: str

    @property
    def label(self) -> str:
        return self.name if self.name == self.instance else f"{self.name} ({self.instance})"


class ClusterRefused(ValueError):
    """Phase one refused the edit on ``node``: nothing changed on any node."""

    def __init__(self, node: Node, why: str) -> None:
        super().__init__(f"{node.label}: {why}; nothing changed on any node")
        self.node = node
        self.why = why


class NodeUnreachable(ClusterRefused, NotRunning):
    """A node's instance is not running (exit 3): nothing changed on any node."""


class ClusterEditFailed(RuntimeError):
    """Phase two failed on ``node``; the nodes changed before it were undone
    (``stuck``: those whose undo failed too, which now differ from the others)."""

    def __init__(self, node: Node, why: str, undone: list[Node],
                 stuck: list[tuple[Node, str]]) -> None:
        if stuck:
            tail = "; UNDO FAILED on " + "; ".join(f"{n.label}: {e}" for n, e in stuck) + \
                " (those nodes keep the new config: check them)"
        elif undone:
            tail = (f"; undone on {', '.join(n.name for n in undone)}: nothing changed on "
                    "any node")
        else:
            tail = "; nothing changed on any node"
        super().__init__(f"{node.label} failed: {why}{tail}")
        self.node = node
        self.why = why
        self.undone = undone
        self.stuck = stuck


Opener = Callable[[str], Instance]


class ClusterController(Edits):
    """Every ``Edits`` call over all ``nodes`` (see the module docstring). ``config`` is
    the first reachable node's config (what forms start from); each node's own file is
    what its change is applied to."""

    def __init__(self, nodes: Sequence[Node], *, source: str = "ctl",
                 lock_wait: float = LOCK_WAIT_S, opener: Opener = Instance.attach) -> None:
        if not nodes:
            raise ValueError("a cluster needs at least one node")
        self.nodes = list(nodes)
        self.source = source
        self.lock_wait = lock_wait
        self.opener = opener
        self.last_edit_ms = 0.0         # how long the last edit took, all nodes
        self.config = self.refresh()

    # --- reading -------------------------------------------------------------------------

    def refresh(self) -> Config:
        """The first reachable node's config file, re-read (ValueError if none is)."""
        problems = []
        for node in self.nodes:
            try:
                with self._opened(node) as ctl:
                    self.config = ctl.refresh()
                    return self.config
            except (ClusterRefused, OSError, RuntimeError) as e:
                problems.append(str(e))
        raise NotRunning("no node of the cluster is reachable: " + "; ".join(problems))

    def _opened(self, node: Node) -> _OpenNode:
        return _OpenNode(self, node)

    # --- the transaction -----------------------------------------------------------------

    def _edit(self, change: Callable[[Config], None]) -> None:
        t0 = time.perf_counter()
        opened: list[_OpenNode] = []
        pending: list[tuple[Node, PendingEdit]] = []
        committed: list[tuple[Node, PendingEdit]] = []
        try:
            for node in self.nodes:                       # phase one: all or refuse
                o = _OpenNode(self, node)
                ctl = o.__enter__()
                opened.append(o)
                pending.append((node, _begin(node, ctl, change, self.lock_wait)))
            for node, p in pending:                       # phase two: node by node
                try:
                    p.commit()
                except BaseException as e:
                    failed = _undo(node, e, committed)
                    if isinstance(e, Exception):
                        raise failed from e
                    raise                         # Ctrl-C: undone, and still a Ctrl-C
                committed.append((node, p))
            self.config = pending[0][1].new
        finally:
            for _, p in pending:
                p.release()
            for _, p in committed:
                p.announce()
            for o in opened:
                o.__exit__(None, None, None)
            self.last_edit_ms = (time.perf_counter() - t0) * 1000

    # --- connections ---------------------------------------------------------------------

    def delete_connection(self, five_tuple: Any) -> bool:
        """Delete the flow on whichever nodes track it (a flow lives on one node); nodes
        that cannot be reached are skipped."""
        found = False
        for node in self.nodes:
            try:
                with self._opened(node) as ctl:
                    found = ctl.delete_connection(five_tuple) or found
            except (ClusterRefused, OSError):
                continue
        return found


class _OpenNode:
    """A node's instance attached and its Controller, for one edit (a fresh attach each
    time: a node that restarted has new maps, and old descriptors would edit the dead
    ones)."""

    def __init__(self, cluster: ClusterController, node: Node) -> None:
        self.cluster = cluster
        self.node = node
        self.inst: Instance | None = None

    def __enter__(self) -> Controller:
        try:
            self.inst = self.cluster.opener(self.node.instance)
        except (OSError, ValueError, RuntimeError) as e:
            raise NodeUnreachable(self.node, f"unreachable ({e})") from None
        try:
            return Controller(self.inst, source=self.cluster.source)
        except (ValueError, OSError) as e:
            self.__exit__(None, None, None)
            raise ClusterRefused(self.node, str(e)) from None

    def __exit__(self, *_exc: object) -> None:
        if self.inst is not None:
            self.inst.close()
            self.inst = None


def _begin(node: Node, ctl: Controller, change: Callable[[Config], None],
           lock_wait: float) -> PendingEdit:
    """Phase one on one node; every refusal names it."""
    try:
        return ctl.begin(change, lock_wait)
    except LockHeld as e:
        raise ClusterRefused(node, f"locked: {e}") from None
    except (ValueError, OSError) as e:
        raise ClusterRefused(node, str(e)) from None


def _undo(node: Node, error: BaseException, committed: list[tuple[Node, PendingEdit]]
          ) -> ClusterEditFailed:
    """Undo the nodes already changed, newest first; the error to raise says how it went."""
    undone: list[Node] = []
    stuck: list[tuple[Node, str]] = []
    for n, p in reversed(committed):
        try:
            p.undo()
            undone.append(n)
        except (RuntimeError, OSError) as e:
            stuck.append((n, str(e)))
    committed.clear()           # nothing left to announce: every node is as it was
    return ClusterEditFailed(node, str(error) or type(error).__name__, undone[::-1], stuck)


__all__ = ["ClusterController", "ClusterEditFailed", "ClusterRefused", "Node",
           "NodeUnreachable"]
