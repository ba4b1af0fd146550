"""Instance and Controller in-process against the real datapath in a namespace lab."""

from __future__ import annotations

import ctypes as ct
import os
import stat
import time
from pathlib import Path

import pytest
from hubviewer import HubViewer

from lbtui import abi, bpfsys, netns
from lbtui import maps as M
from lbtui.control import controller as controller_mod
from lbtui.control.config import load_config
from lbtui.control.controller import Controller
from lbtui.control.instance import Instance, InstanceError, pin_dir_of
from lbtui.control.lock import run_dir
from lbtui.control.state import read_state
from lbtui.lab import topology as T
from lbtui.model import GroupKey, Listener, SniRoute, SourceRoute
from lbtui.targets import TargetGroup

from .conftest import http_get, instance_name, lab_config, spread

pytestmark = [pytest.mark.datapath, pytest.mark.netns]
HTTP = GroupKey.of("listener", 80)


def start(topo: T.Topology, tmp_path: Path, cleanup: list[str], **kw: object
          ) -> tuple[Instance, Path]:
    name = instance_name()
    cleanup.append(name)
    path = tmp_path / "lbtui.toml"
    path.write_text(lab_config(topo, name, **kw))  # type: ignore[arg-type]
    path.chmod(0o640)
    return Instance.start(load_config(path), progress=lambda _m: None), path


def xdp_prog(topo: T.Topology, ifname: str) -> int:
    from lbtui.control.instance import _xdp_state

    return _xdp_state(ifname, topo.lb_ns)[1]


def test_start_edit_stop(make_lab, state_dir, instance_cleanup, tmp_path: Path) -> None:
    topo = make_lab(1, 3)
    inst, path = start(topo, tmp_path, instance_cleanup)
    try:
        b1, b2, b3 = (e.ip for e in topo.backends)
        assert set(spread(topo, 30)) == {"backend1", "backend2"}
        prog = xdp_prog(topo, "c1")
        assert prog and all(xdp_prog(topo, i) == prog for i in ("b1", "b2", "b3"))

        ctl = Controller(inst)
        assert ctl.drain(HTTP, f"{b1}:{T.HTTP_PORT}") == 50          # drain backend1
        assert ctl.group(HTTP).to_list()[:2] == [
            {"ip": b1, "port": 8080, "weight": 0}, {"ip": b2, "port": 8080, "weight": 100}]
        assert set(spread(topo, 20)) == {"backend2"}
        ctl.set_weights(HTTP, TargetGroup.of([(b3, T.HTTP_PORT, 100)]))
        assert set(spread(topo, 10)) == {"backend3"}
        ctl.add_source_route(SourceRoute("198.18.1.0/24", TargetGroup.single(b2, T.HTTP_PORT)))
        assert set(spread(topo, 10)) == {"backend2"}
        ctl.remove_source_route("198.18.1.0/24")
        ctl.add_listener(Listener(81, TargetGroup.single(b1, T.HTTP_PORT), "tcp"))
        assert http_get(topo, 81) == "backend1"
        ctl.remove_listener(81)
        ctl.add_sni_route(SniRoute("API.example.com", TargetGroup.single(b1, 443)))
        assert M.list_sni_routes(inst.maps.sni_map)[0].hostname == "api.example.com"
        ctl.set_connection_timeout(42)
        ctl.set_stats(False)
        assert M.get_connection_timeout(inst.maps.settings_map) == 42
        assert not M.stats_enabled(inst.maps.settings_map)

        # The file says exactly what the maps hold, comments kept, its mode kept.
        text = path.read_text()
        assert "# control-plane test config" in text and "# line echo" in text
        c = load_config(path)
        assert [x.port for x in c.listeners] == [80, 7000]
        assert c.listeners[0].group == TargetGroup.single(b3, 8080)
        assert c.sni_routes[0].hostname == "api.example.com" and not c.source_routes
        assert (c.settings.connection_timeout, c.settings.stats) == (42, False)
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        st = read_state(inst.name)
        assert st and st["pid"] == os.getpid() and st["config_path"] == str(path)
        assert stat.S_IMODE((run_dir() / f"{inst.name}.json").stat().st_mode) == 0o600
        assert stat.S_IMODE(pin_dir_of(inst.name).stat().st_mode) == 0o700
    finally:
        inst.stop()
    assert not pin_dir_of(inst.name).exists()
    assert read_state(inst.name) is None
    assert all(xdp_prog(topo, i) == 0 for i in ("c1", "b1", "b2", "b3"))


def test_bad_input_changes_nothing(make_lab, state_dir, instance_cleanup, tmp_path: Path
                                   ) -> None:
    topo = make_lab(1, 2)
    inst, path = start(topo, tmp_path, instance_cleanup, http_weights=(50, 50))
    try:
        ctl = Controller(inst)
        b1 = topo.backends[0].ip
        before_file, before_maps = path.read_bytes(), M.list_listen_ports(inst.maps.listen_map)
        bad = [
            (lambda: ctl.add_listener(Listener(81, TargetGroup.single(b1, 1), "tcp",
                                               ["zz"])), "not in datapath.interfaces"),
            (lambda: ctl.add_listener(Listener(80, TargetGroup.single(b1, 1))),
             "a listener on port 80 exists; edit it instead"),
            (lambda: ctl.update_listener(7000, Listener(80, TargetGroup.single(b1, 1))),
             "a listener on port 80 exists$"),
            (lambda: ctl.update_listener(99, Listener(99, TargetGroup.single(b1, 1))),
             "no listener on port 99"),
            (lambda: ctl.set_weight(HTTP, "198.18.9.9:1", 0), "not in this group"),
            (lambda: ctl.set_weight(GroupKey.of("listener", 7000), f"{b1}:{T.ECHO_PORT}", 0),
             "only target"),
            (lambda: ctl.set_weight(HTTP, f"{b1}:{T.HTTP_PORT}", 101), "0..100"),
            (lambda: ctl.set_weights(GroupKey.of("pool", 80), TargetGroup.single(b1, 1)),
             "kind 'pool'"),
            (lambda: ctl.remove_listener(99), "no listener on port 99"),
            (lambda: ctl.remove_source_route("198.18.1.0/24"), "no source route"),
            (lambda: ctl.remove_sni_route("a.example.com"), "no SNI route"),
            (lambda: ctl.add_source_route(SourceRoute("198.18.1.1/24",
                                                      TargetGroup.single(b1, 1))),
             "host bits"),
            (lambda: ctl.add_sni_route(SniRoute("bad_host", TargetGroup.single(b1, 1))),
             "invalid"),
            (lambda: ctl.set_connection_timeout(-1), "connection_timeout: must be 0..604800"),
        ]
        for call, message in bad:
            with pytest.raises(ValueError, match=message):
                call()
        assert path.read_bytes() == before_file
        assert M.list_listen_ports(inst.maps.listen_map) == before_maps
    finally:
        inst.stop()


def test_failed_map_update_rolls_back_every_map(make_lab, state_dir, instance_cleanup,
                                                 tmp_path: Path) -> None:
    """A listener on two interfaces needs two listen entries; with room for one, the
    first is undone and the file is untouched."""
    topo = make_lab(2, 2)
    inst, path = start(topo, tmp_path, instance_cleanup, http_weights=(50, 50))
    try:
        ms = inst.maps
        lm = ms.listen_map
        filler = TargetGroup.single(topo.backends[0].ip, 1).to_route()
        n = len(list(bpfsys.keys(lm.fd, abi.ListenKey)))
        for i in range(lm.max_entries - n - 1):     # leave exactly one free slot
            bpfsys.update(lm.fd, abi.ListenKey(10000 + i, 1, 0), filler)
        before = {bytes(k): bytes(bpfsys.lookup(lm.fd, k, abi.Route))
                  for k in bpfsys.keys(lm.fd, abi.ListenKey)}
        before_file = path.read_bytes()
        ctl = Controller(inst)
        with pytest.raises(OSError):
            ctl.add_listener(Listener(81, TargetGroup.single(topo.backends[1].ip, 8080)))
        after = {bytes(k): bytes(bpfsys.lookup(lm.fd, k, abi.Route))
                 for k in bpfsys.keys(lm.fd, abi.ListenKey)}
        assert after == before
        assert path.read_bytes() == before_file
        assert http_get(topo, 80) in ("backend1", "backend2")

        # A failed file write rolls the maps back too (SNI names included).
        for k in list(bpfsys.keys(lm.fd, abi.ListenKey)):
            if k.ifindex >= 10000:
                bpfsys.delete(lm.fd, k)
        snapshot = ({bytes(k) for k in bpfsys.keys(ms.sni_map.fd, ct.c_uint64)},
                    dict(ms.sni_map.sni_names.names))

        def disk_full(*_a: object, **_k: object) -> None:
            raise OSError(28, "No space left on device")

        orig = controller_mod.save_config
        controller_mod.save_config = disk_full  # type: ignore[assignment]
        try:
            with pytest.raises(OSError, match="No space"):
                ctl.add_sni_route(SniRoute("api.example.com",
                                           TargetGroup.single("198.18.101.2", 443)))
        finally:
            controller_mod.save_config = orig
        assert ({bytes(k) for k in bpfsys.keys(ms.sni_map.fd, ct.c_uint64)},
                dict(ms.sni_map.sni_names.names)) == snapshot
        assert path.read_bytes() == before_file
    finally:
        inst.stop()


def test_second_manager_and_foreign_program_are_refused(make_lab, state_dir, instance_cleanup,
                                                        tmp_path: Path) -> None:
    topo = make_lab(1, 1)
    inst, path = start(topo, tmp_path, instance_cleanup, http_weights=(100,))
    try:
        with pytest.raises(InstanceError, match=f"already managed by pid {os.getpid()}"):
            Instance.start(load_config(path), progress=lambda _m: None)
    finally:
        inst.stop()

    # Another tool's XDP program on an interface: refused, nothing left behind.
    from bcc import BPF
    from bcc.libbcc import lib

    b = BPF(text=b"int other_tool(struct xdp_md *ctx) { return XDP_PASS; }")
    fd = b.load_func(b"other_tool", BPF.XDP).fd
    with netns.inside(topo.lb_ns):
        assert lib.bpf_attach_xdp(b"b1", fd, 1 << 2) == 0
    foreign = xdp_prog(topo, "b1")
    try:
        with pytest.raises(InstanceError, match=r"another XDP program is attached to b1"):
            Instance.start(load_config(path), progress=lambda _m: None)
        assert xdp_prog(topo, "b1") == foreign and xdp_prog(topo, "c1") == 0
        assert not pin_dir_of(inst.name).exists()
        # The failed start released the lock: a later start works once b1 is free.
        with netns.inside(topo.lb_ns):
            lib.bpf_attach_xdp(b"b1", -1, 1 << 2)
        again = Instance.start(load_config(path), progress=lambda _m: None)
        again.stop()
    finally:
        b.cleanup()


def test_sweep_removes_aged_flows_and_emits_aged_events(make_lab, state_dir, instance_cleanup,
                                                         tmp_path: Path) -> None:
    topo = make_lab(1, 1)
    inst, _ = start(topo, tmp_path, instance_cleanup, http_weights=(100,),
                    settings="connection_timeout = 1\n")
    viewer = HubViewer(inst.name)
    try:
        assert http_get(topo) == "backend1"
        flows = M.list_connections(inst.maps.conntrack_map)
        assert len(flows) == 1
        assert inst.sweep() == []                           # not idle long enough yet
        later = time.monotonic_ns() + 2_000_000_000
        removed = inst.sweep(now_ns=later)
        assert [c.five_tuple for c in removed] == [flows[0].five_tuple]
        assert M.list_connections(inst.maps.conntrack_map) == []
        assert len(list(M.conntrack_reader(inst.maps.conntrack_map).items())) == 0
        viewer.wait_for(lambda: any(e.kind == "closed" for e in viewer.events()), "closed")
        events = viewer.events()
        aged = [e for e in events if e.reason == "aged"]
        # An HTTP flow closes with FINs, whose closed event the kernel already sent; only
        # flows that went idle get an aged event. Make one: an open, idle echo connection.
        assert not aged and any(e.kind == "closed" and e.reason == "fin" for e in events)
        from .conftest import EchoClient

        echo = EchoClient(topo)
        assert echo.roundtrip() == "backend1"
        removed = inst.sweep(now_ns=time.monotonic_ns() + 2_000_000_000)
        assert [c.client_port for c in removed] == [echo.local[1]]
        viewer.wait_for(lambda: any(e.reason == "aged" for e in viewer.events()), "aged")
        aged = [e for e in viewer.events() if e.reason == "aged"]
        assert len(aged) == 1 and aged[0].client_port == echo.local[1]
        assert aged[0].target == f"{topo.backends[0].ip}:{T.ECHO_PORT}"
        assert aged[0].packets_fwd >= 3
        echo.close()
    finally:
        viewer.close()
        inst.stop()


def test_readoption_recovers_from_a_half_done_start(make_lab, state_dir, instance_cleanup,
                                                     tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep, then a restart whose attach fails half-way (new program on some interfaces),
    then a restart that succeeds and drops an interface the config no longer lists."""
    from lbtui.datapath import loader

    topo = make_lab(1, 3)
    inst, path = start(topo, tmp_path, instance_cleanup)
    first = xdp_prog(topo, "c1")
    inst.stop(keep=True)
    assert all(xdp_prog(topo, i) == first for i in ("c1", "b1", "b2", "b3"))
    assert set(spread(topo, 10)) <= {"backend1", "backend2"}

    real_attach = loader.Datapath.attach

    def flaky(self: loader.Datapath, ifname: str, **kw: object) -> object:
        if ifname == "b2":
            raise loader.DatapathError("attaching XDP to b2 failed (test)")
        return real_attach(self, ifname, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(loader.Datapath, "attach", flaky)
    with pytest.raises(loader.DatapathError, match="b2 failed"):
        Instance.start(load_config(path), progress=lambda _m: None)
    monkeypatch.setattr(loader.Datapath, "attach", real_attach)
    half = xdp_prog(topo, "c1")
    assert half != first and xdp_prog(topo, "b2") == first     # mixed, still forwarding
    assert set(spread(topo, 10)) <= {"backend1", "backend2"}

    path.write_text(path.read_text().replace('["b1", "b2", "b3"]', '["b1", "b2"]'))
    msgs: list[str] = []
    again = Instance.start(load_config(path), progress=msgs.append)
    try:
        assert again.adopted
        new = xdp_prog(topo, "c1")
        assert new not in (first, half)
        assert [xdp_prog(topo, i) for i in ("b1", "b2")] == [new, new]
        assert xdp_prog(topo, "b3") == 0
        assert "XDP detached from b3 (no longer in the config)" in msgs
        assert set(spread(topo, 10)) <= {"backend1", "backend2"}
    finally:
        again.stop()
    assert all(xdp_prog(topo, i) == 0 for i in ("c1", "b1", "b2", "b3"))
