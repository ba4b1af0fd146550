"""A real 2-node cluster lab (``lbtui lab up --nodes 2``: a BIRD router with ECMP, two
nodes each running its own ``serve``) for the tests of a console and edits over many
nodes, and what those tests read from each node: its maps, its config file."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from lbtui import maps as M
from lbtui import netns
from lbtui.control.cluster import Node
from lbtui.control.config import load_config
from lbtui.control.instance import Instance, pin_dir_of, pins_complete
from lbtui.lab import cluster as C
from lbtui.lab import topology as T
from lbtui.model import Listener
from lbtui.targets import RouteRecord

LBTUI = [sys.executable, "-m", "lbtui.cli"]
REPO = Path(__file__).resolve().parents[1]


def run_lbtui(*args: str, timeout: float = 120, check: bool = True
              ) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([*LBTUI, *args], capture_output=True, text=True, timeout=timeout,
                       cwd=REPO)
    if check and p.returncode != 0:
        raise AssertionError(f"lbtui {' '.join(args)} exited {p.returncode}\n{p.stdout}\n"
                             f"{p.stderr}")
    return p


@contextlib.contextmanager
def cluster_lab(tag: str) -> Iterator[T.Topology]:
    """``lab up --nodes 2`` for the block; ``lab down`` afterwards, also on failure."""
    name = f"h5{tag}{os.getpid() % 10000}"
    try:
        out = run_lbtui("lab", "up", "--lab", name, "--nodes", "2").stdout
        assert f"cluster lab {name} is up" in out, out
        topo = T.Topology.load(name)
        assert topo is not None
        yield topo
    finally:
        run_lbtui("lab", "down", "--lab", name, check=False)


def nodes(topo: T.Topology) -> list[Node]:
    return [Node(n.node, C.node_instance(topo.lab, n.node)) for n in topo.nodes]


def config_path(topo: T.Topology, node: str) -> Path:
    return T.lab_dir(topo.lab) / f"{node}.toml"


def file_listener(topo: T.Topology, node: str, port: int = 80) -> Listener:
    """The listener on ``port`` as node's config file holds it."""
    lst = load_config(config_path(topo, node)).listener(port)
    assert lst is not None
    return lst


def file_weights(topo: T.Topology, node: str, port: int = 80) -> dict[str, int]:
    return {t.ip: t.weight for t in file_listener(topo, node, port).group.targets}


def file_hash(topo: T.Topology, node: str, port: int = 80) -> str | None:
    return file_listener(topo, node, port).hash


def map_route(topo: T.Topology, node: str, port: int = 80) -> RouteRecord:
    """The route node's listen map holds for ``port`` (on its client-side link)."""
    inst = Instance.attach(C.node_instance(topo.lab, node))
    try:
        rec = M.lookup_listen_port(inst.maps.listen_map, inst.ifindexes(["up"])[0], port)
        assert rec is not None
        return rec
    finally:
        inst.close()


def map_hash(topo: T.Topology, node: str, port: int = 80) -> str:
    """How node's listen map picks for ``port``: "maglev" or "weighted"."""
    return map_route(topo, node, port).hash


def map_weights(topo: T.Topology, node: str, port: int = 80) -> dict[str, int]:
    return {t.ip: t.weight for t in map_route(topo, node, port).targets}


def snapshot_of(topo: T.Topology) -> dict[str, tuple[dict[str, int], bytes]]:
    """Every running node's map weights for port 80 and its config file's bytes."""
    return {n.node: (map_weights(topo, n.node), config_path(topo, n.node).read_bytes())
            for n in topo.nodes if running(topo, n.node)}


def running(topo: T.Topology, node: str) -> bool:
    return pins_complete(pin_dir_of(C.node_instance(topo.lab, node)))


def stop_node(topo: T.Topology, node: str, timeout: float = 20) -> None:
    """Stop a node's serve and wait until its instance is gone (unpinned)."""
    assert C.stop_serve(topo, node)
    deadline = time.monotonic() + timeout
    while running(topo, node) or C.serve_pid(topo, node):
        assert time.monotonic() < deadline, f"{node} did not stop"
        time.sleep(0.1)


def start_node(topo: T.Topology, node: str, timeout: float = 60) -> None:
    """Start a node's serve again and wait until the router routes over every node."""
    C.start_node(topo, node)
    C.wait_paths(topo, [n.node for n in topo.nodes], timeout)


class EchoConns:
    """Long-lived connections to VIP:7000 from the clients, through the router (ECMP
    spreads them over the nodes); each said hello once, so its flow is established."""

    def __init__(self, topo: T.Topology, n: int) -> None:
        self.socks: list[socket.socket] = []
        for i in range(n):
            with netns.inside(topo.clients[i % len(topo.clients)].ns):
                s = socket.create_connection((topo.vip, C.ECHO_LISTEN_PORT), timeout=5)
            s.sendall(b"hello\n")
            assert s.recv(4096)
            self.socks.append(s)

    def close(self) -> None:
        for s in self.socks:
            s.close()
