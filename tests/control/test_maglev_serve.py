"""hash = "maglev" end to end: two real ``serve`` processes on two labs with the same config
send every connection of a sample to the same backend (the one the Python table predicts);
``ctl`` shows and changes the option; edits that do not mention it keep it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from lbtui import abi, maglev, netns
from lbtui.control.config import load_config
from lbtui.control.controller import Controller
from lbtui.control.instance import Instance
from lbtui.lab import topology as T
from lbtui.model import GroupKey, Listener
from lbtui.targets import TargetGroup

from .conftest import ctl, ctl_json, instance_name, lab_config

pytestmark = [pytest.mark.datapath, pytest.mark.netns]

WEIGHTS = (50, 30, 20)


def maglev_config(topo: T.Topology, name: str) -> str:
    text = lab_config(topo, name, http_weights=WEIGHTS)
    return text.replace('port = 80\nprotocol = "tcp"\n',
                        'port = 80\nprotocol = "tcp"\nhash = "maglev"\n', 1)


def backend_from_port(topo: T.Topology, sport: int) -> str:
    """The backend answering an HTTP request to VIP:80 sent from client1:``sport``."""
    client = topo.clients[0]
    with netns.inside(client.ns), socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((client.ip, sport))
        s.settimeout(5)
        s.connect((topo.vip, 80))
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data.split(b"\r\n\r\n", 1)[1].decode().strip()


def predicted(topo: T.Topology, sport: int) -> str:
    group = TargetGroup.of([(e.ip, T.HTTP_PORT, w) for e, w in zip(topo.backends, WEIGHTS,
                                                                    strict=True)])
    table = maglev.build_table(group.targets)
    fh = maglev.flow_hash(topo.clients[0].ip, topo.vip, sport, 80, abi.IPPROTO_TCP)
    target = maglev.pick(table, group.targets, fh)
    assert target is not None
    return next(e.node for e in topo.backends if e.ip == target.ip)


def test_two_serves_with_the_same_config_pick_the_same_backend(
        make_lab, state_dir, start_serve, instance_cleanup, tmp_path: Path) -> None:
    labs = [make_lab(1, 3), make_lab(1, 3)]
    assert [e.ip for e in labs[0].backends] == [e.ip for e in labs[1].backends]
    names = [instance_name(), instance_name()]
    instance_cleanup.extend(names)
    for topo, name in zip(labs, names, strict=True):
        path = tmp_path / f"{name}.toml"
        path.write_text(maglev_config(topo, name))
        start_serve(path)
    [row] = [r for r in ctl_json(names[0], "listeners") if r["port"] == 80]
    assert row["hash"] == "maglev"
    ports = range(42000, 42060)
    for sport in ports:
        want = predicted(labs[0], sport)
        assert [backend_from_port(topo, sport) for topo in labs] == [want, want], sport
    assert len({predicted(labs[0], p) for p in ports}) == 3      # the sample spans them all


def test_ctl_and_edits_keep_or_change_the_hash(make_lab, state_dir, instance_cleanup,
                                               tmp_path: Path) -> None:
    topo = make_lab(1, 3)
    name = instance_name()
    instance_cleanup.append(name)
    path = tmp_path / "lbtui.toml"
    path.write_text(maglev_config(topo, name))
    inst = Instance.start(load_config(path), progress=lambda _m: None)
    try:
        c = Controller(inst, source="test")
        key = GroupKey.of("listener", 80)
        old = c.config.listener(80)
        assert old is not None and old.hash == "maglev"
        # An editor that does not show the option (the console's listener form) keeps it.
        c.update_listener(80, Listener(80, old.group.with_weight(topo.backends[0].ip,
                                                                 T.HTTP_PORT, 50),
                                       "tcp", address=old.address))
        assert c.config.listener(80).hash == "maglev"
        c.set_weight(key, f"{topo.backends[2].ip}:{T.HTTP_PORT}", 0)   # drain: still maglev
        assert load_config(path).listener(80).hash == "maglev"
        r = ctl(name, "hash", "listener", "80", "weighted")
        assert r.returncode == 0, r.stderr
        assert 'hash = "weighted"' in path.read_text()
        [row] = [x for x in ctl_json(name, "listeners") if x["port"] == 80]
        assert row["hash"] == "weighted"
        r = ctl(name, "hash", "listener", "80", "ring")
        assert r.returncode == 2 and "invalid choice: 'ring'" in r.stderr
        r = ctl(name, "listeners", "add", "8081", f"{topo.backends[0].ip}:8081",
                "--hash", "maglev")
        assert r.returncode == 0, r.stderr
        assert {x["port"]: x["hash"] for x in ctl_json(name, "listeners")} == {
            80: "weighted", 7000: "weighted", 8081: "maglev"}
        status = ctl_json(name, "status")
        assert status["maps"]["maglev_groups"] == {"entries": 1, "max_entries": 64}
        assert ctl_json(name, "settings")["maglev_table_size"] == maglev.DEFAULT_TABLE_SIZE
    finally:
        inst.stop()
