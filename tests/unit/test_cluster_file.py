"""The cluster file and ``--attach a,b``: what they accept, and errors that name the file,
the line of the node's ``[[node]]`` header and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from lbtui.control.cluster import Node
from lbtui.control.clusterfile import (
    ClusterFileError,
    cluster_file_text,
    load_cluster,
    parse_attach,
    parse_cluster,
)

GOOD = """\
# the lab's nodes
name = "c"

[[node]]
name = "node1"
instance = "lab-c-node1"

[[node]]
name = "node2"
instance = "lab-c-node2"
"""


def test_a_good_file(tmp_path: Path) -> None:
    p = tmp_path / "cluster.toml"
    p.write_text(GOOD)
    c = load_cluster(p)
    assert c.name == "c" and c.path == p
    assert c.nodes == (Node("node1", "lab-c-node1"), Node("node2", "lab-c-node2"))


def test_written_files_read_back() -> None:
    nodes = [Node("a", "lab-x-node1"), Node("b", "lab-x-node2")]
    text = cluster_file_text(nodes, 'x "quoted"', "one\ntwo")
    assert text.startswith("# one\n# two\n")
    c = parse_cluster(text)
    assert c.nodes == tuple(nodes) and c.name == 'x "quoted"'


@pytest.mark.parametrize("text,error", [
    ("", "f.toml: no nodes: add a [[node]] table with name and instance for each node"),
    ("nodes = []", "f.toml: unknown top-level key 'nodes' (allowed: name, [[node]])"),
    ("name = 3\n[[node]]\nname='a'\ninstance='b'", "f.toml: name must be a string"),
    (GOOD.replace('instance = "lab-c-node2"', 'instanse = "lab-c-node2"'),
     "f.toml, line 8, [[node]] #2: unknown key 'instanse' (allowed: name, instance)"),
    (GOOD.replace('instance = "lab-c-node2"\n', ""),
     "f.toml, line 8, [[node]] #2: missing key 'instance'"),
    (GOOD.replace('"lab-c-node1"', '"../etc"'),
     "f.toml, line 4, [[node]] #1: key 'instance': instance name '../etc' is not allowed: "
     "1-32 ASCII letters, digits, '_' or '-', starting with a letter or digit"),
    (GOOD.replace('name = "node2"', 'name = "node 2"'),
     "f.toml, line 8, [[node]] #2: key 'name': node name 'node 2' is not allowed"),
    (GOOD.replace('"lab-c-node2"', '"lab-c-node1"'),
     "f.toml: two nodes with instance 'lab-c-node1'"),
    (GOOD.replace('name = "node2"', 'name = "node1"'), "f.toml: two nodes with name 'node1'"),
    ("node = 3", "f.toml: no nodes"),
    ("node = [3]", "f.toml, [[node]] #1: expected a table with name and instance"),
])
def test_errors_name_the_line_and_key(text: str, error: str) -> None:
    with pytest.raises(ClusterFileError) as e:
        parse_cluster(text, "f.toml")
    assert str(e.value).startswith(error), str(e.value)


def test_toml_syntax_errors_say_where() -> None:
    with pytest.raises(ClusterFileError) as e:
        parse_cluster('[[node]]\nname = "a"\ninstance = b\n', "f.toml")
    assert str(e.value).startswith("f.toml: ") and "line 3" in str(e.value), str(e.value)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ClusterFileError, match=r"cluster file .*missing\.toml: No such file"):
        load_cluster(tmp_path / "missing.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(ClusterFileError, match="not UTF-8"):
        load_cluster(tmp_path / "bin.toml")


def test_attach_lists() -> None:
    assert parse_attach("a, b").nodes == (Node("a", "a"), Node("b", "b"))
    for text, error in (("a,,b", "an empty instance name"), ("a,a", "two nodes with name"),
                        ("a,b/c", "instance name 'b/c' is not allowed")):
        with pytest.raises(ClusterFileError, match=error):
            parse_attach(text)


def test_the_console_refuses_a_bad_cluster_file_before_opening_anything(tmp_path: Path
                                                                         ) -> None:
    import subprocess
    import sys

    bad = tmp_path / "cluster.toml"
    bad.write_text('[[node]]\nname = "a"\n')
    for args, error in ((["--cluster", str(bad)], f"{bad}, line 1, [[node]] #1: missing "
                         "key 'instance'"),
                        (["--attach", "a,,b"], "instance name '' is not allowed")):
        r = subprocess.run([sys.executable, "-m", "lbtui.cli", "console", *args],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and error in r.stderr, (r.returncode, r.stderr)
