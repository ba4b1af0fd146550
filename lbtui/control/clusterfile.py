"""Which instances make a cluster: ``--attach a,b`` or a cluster file.

A cluster file is TOML, one ``[[node]]`` table per node::

    # optional: how the console's header names the cluster
    name = "c"

    [[node]]
    name = "node1"              # how the operator calls the node (header, node columns)
    instance = "lab-c-node1"    # the lbtui instance on this host (`lbtui serve` runs it)

    [[node]]
    name = "node2"
    instance = "lab-c-node2"

``lbtui lab up --nodes N`` writes one for its nodes. Every error names the line of the
node's ``[[node]]`` header (or TOML's own line and column) and the key, so a typo is
found without guessing; nothing is opened before the whole file is valid.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lbtui.control.cluster import Node
from lbtui.files import read_capped
from lbtui.names import INSTANCE, BadName, NameRule, check_name

MAX_BYTES = 1 << 20
MAX_NODES = 32
NODE_NAME = NameRule("node name", INSTANCE.pattern, INSTANCE.rule)
NODE_KEYS = ("name", "instance")
_HEADER = re.compile(r"^\s*\[\[\s*node\s*\]\]")


class ClusterFileError(ValueError):
    """The cluster file is unusable; the message names the file, the line and the key."""


@dataclass(frozen=True)
class Cluster:
    name: str | None
    nodes: tuple[Node, ...]
    path: Path | None = None


def load_cluster(path: str | Path) -> Cluster:
    p = Path(path)
    try:
        data = read_capped(p, MAX_BYTES)
    except OSError as e:
        raise ClusterFileError(f"cluster file {p}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ClusterFileError(f"cluster file {p}: not UTF-8 text") from None
    c = parse_cluster(text, str(p))
    return Cluster(c.name, c.nodes, p)


def parse_cluster(text: str, where: str = "cluster file") -> Cluster:
    """The cluster ``text`` describes; ClusterFileError says what is wrong and where."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ClusterFileError(f"{where}: {e}") from None
    headers = [i for i, line in enumerate(text.splitlines(), 1) if _HEADER.match(line)]
    unknown = sorted(set(doc) - {"name", "node"})
    if unknown:
        raise ClusterFileError(f"{where}: unknown top-level key {unknown[0]!r} (allowed: "
                               "name, [[node]])")
    name = doc.get("name")
    if name is not None and not isinstance(name, str):
        raise ClusterFileError(f"{where}: name must be a string")
    raw = doc.get("node")
    if not isinstance(raw, list) or not raw:
        raise ClusterFileError(f"{where}: no nodes: add a [[node]] table with name and "
                               "instance for each node")
    if len(raw) > MAX_NODES:
        raise ClusterFileError(f"{where}: {len(raw)} nodes; at most {MAX_NODES}")
    nodes: list[Node] = []
    for i, entry in enumerate(raw):
        line = headers[i] if i < len(headers) else None
        at = f"{where}, line {line}" if line else where
        nodes.append(_node(entry, f"{at}, [[node]] #{i + 1}"))
    _no_duplicates(nodes, where)
    return Cluster(name, tuple(nodes))


def _node(entry: Any, at: str) -> Node:
    if not isinstance(entry, dict):
        raise ClusterFileError(f"{at}: expected a table with name and instance")
    extra = sorted(set(entry) - set(NODE_KEYS))
    if extra:
        raise ClusterFileError(f"{at}: unknown key {extra[0]!r} (allowed: "
                               f"{', '.join(NODE_KEYS)})")
    values = {}
    for key, rule in (("name", NODE_NAME), ("instance", INSTANCE)):
        if key not in entry:
            raise ClusterFileError(f"{at}: missing key {key!r}")
        try:
            values[key] = check_name(rule, entry[key])
        except BadName as e:
            raise ClusterFileError(f"{at}: key {key!r}: {e}") from None
    return Node(values["name"], values["instance"])


def _no_duplicates(nodes: list[Node], where: str) -> None:
    for attr in ("name", "instance"):
        seen: set[str] = set()
        for n in nodes:
            v = getattr(n, attr)
            if v in seen:
                raise ClusterFileError(f"{where}: two nodes with {attr} {v!r}")
            seen.add(v)


def parse_attach(text: str) -> Cluster:
    """``--attach a,b``: the nodes named by their instance names."""
    names = [s.strip() for s in text.split(",")]
    if any(not s for s in names):
        raise ClusterFileError(f"--attach {text!r}: an empty instance name (use a,b,c)")
    nodes = []
    for s in names:
        try:
            nodes.append(Node(s, check_name(INSTANCE, s)))
        except BadName as e:
            raise ClusterFileError(f"--attach: {e}") from None
    _no_duplicates(nodes, "--attach")
    return Cluster(None, tuple(nodes))


def cluster_file_text(nodes: list[Node], name: str | None = None, comment: str = "") -> str:
    """A cluster file for ``nodes`` (what ``lab up --nodes`` writes)."""
    out = [f"# {line}" for line in comment.splitlines()]
    if name is not None:
        out.append(f"name = {json.dumps(name)}")
    for n in nodes:
        out += ["", "[[node]]", f'name = "{check_name(NODE_NAME, n.name)}"',
                f'instance = "{check_name(INSTANCE, n.instance)}"']
    return "\n".join(out).lstrip("\n") + "\n"


__all__ = ["Cluster", "ClusterFileError", "cluster_file_text", "load_cluster",
           "parse_attach", "parse_cluster"]
