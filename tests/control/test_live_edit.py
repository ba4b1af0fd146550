"""Editing a listener under live traffic is one transaction: no connection is lost and the
port is never unbalanced, not even for the instant between two map writes (the listen
entry is sampled continuously while the edits run)."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from lbtui import maps as M
from lbtui.control.config import load_config
from lbtui.control.controller import Controller
from lbtui.control.instance import Instance
from lbtui.lab import topology as T
from lbtui.targets import TargetGroup

from .conftest import EchoClient, http_get, instance_name, lab_config

pytestmark = [pytest.mark.datapath, pytest.mark.netns]


class Sampler(threading.Thread):
    """Reads the port-80 listen entry of one interface as fast as it can."""

    def __init__(self, inst: Instance, ifindex: int) -> None:
        super().__init__(daemon=True)
        self.inst, self.ifindex = inst, ifindex
        self.samples = self.missing = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            if M.lookup_listen_port(self.inst.maps.listen_map, self.ifindex, 80) is None:
                self.missing += 1
            self.samples += 1


class Traffic(threading.Thread):
    """New HTTP connections to VIP:80, one after another, counting failures."""

    def __init__(self, topo: T.Topology) -> None:
        super().__init__(daemon=True)
        self.topo = topo
        self.ok = 0
        self.failed: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                http_get(self.topo)
                self.ok += 1
            except OSError as e:
                self.failed.append(repr(e))


def test_editing_a_listener_under_traffic_loses_nothing(make_lab, state_dir,
                                                         instance_cleanup, tmp_path: Path
                                                         ) -> None:
    topo = make_lab(1, 3)
    name = instance_name()
    instance_cleanup.append(name)
    path = tmp_path / "lbtui.toml"
    path.write_text(lab_config(topo, name, http_weights=(50, 50, 0)))
    inst = Instance.start(load_config(path), progress=lambda _m: None)
    try:
        ctl = Controller(inst)
        b = [e.ip for e in topo.backends]
        echo = EchoClient(topo)                     # a long-lived connection through it all
        assert echo.roundtrip() == "backend1"
        sampler = Sampler(inst, inst.ifindexes(["c1"])[0])
        traffic = Traffic(topo)
        sampler.start()
        traffic.start()
        time.sleep(0.3)
        edits = 0
        for protocol, weights in (("both", (40, 30, 30)), ("tcp", (0, 50, 50)),
                                  ("both", (100, 0, 0)), ("tcp", (50, 50, 0))):
            group = TargetGroup.of([(ip, T.HTTP_PORT, w) for ip, w in zip(b, weights,
                                                                            strict=True)])
            old = ctl.config.listener(80)
            assert old is not None
            ctl.update_listener(80, replace(old, protocol=protocol, group=group,
                                            stats=not old.stats))
            edits += 1
            assert echo.roundtrip() == "backend1"
            time.sleep(0.2)
        traffic.stop.set()
        sampler.stop.set()
        traffic.join(10)
        sampler.join(10)
        assert traffic.failed == [], traffic.failed[:5]
        assert traffic.ok > 20
        assert sampler.samples > 1000 and sampler.missing == 0, (sampler.samples,
                                                                  sampler.missing)
        final = load_config(path).listener(80)
        assert final is not None and final.protocol == "tcp" and edits == 4
        assert [t.weight for t in final.group.targets] == [50, 50, 0]
        echo.close()
    finally:
        inst.stop()
