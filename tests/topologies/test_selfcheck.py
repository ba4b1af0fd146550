"""The start-up self-check on networks lbtui did not build: ``serve`` refuses (exit 2, the
reason and the fix, nothing attached) an interface list XDP cannot serve at all or not in
the mode asked for, and says, naming the interface, where packets will take the stack."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbtui.control.instance import pin_dir_of
from lbtui.control.instance import teardown as teardown_instance

from . import shapes as S
from .serving import LBTUI, serving

pytestmark = [pytest.mark.datapath, pytest.mark.netns]

TAG = f"k{os.getpid() % 100000}"
LISTENER = """
[[listener]]
port = 80
protocol = "tcp"
targets = [{ ip = "198.18.100.11", port = 8080 }]
"""


@pytest.fixture(scope="module")
def bridge() -> Iterator[S.Shape]:
    with S.built("bridge", TAG) as shape:
        yield shape


def _config(tmp_path: Path, shape: S.Shape, instance: str, *, interfaces: list[str],
            reply: list[str], mode: str) -> Path:
    path = tmp_path / f"{instance}.toml"
    path.write_text(f'[datapath]\ninstance = "{instance}"\nnetns = "{shape.topo.lb_ns}"\n'
                    f"interfaces = {interfaces!r}\nreply_interfaces = {reply!r}\n"
                    f'xdp_mode = "{mode}"\n{LISTENER}'.replace("'", '"'))
    return path


def _serve_refused(config: Path, instance: str) -> str:
    try:
        r = subprocess.run([*LBTUI, "serve", "--config", str(config)], capture_output=True,
                           text=True, timeout=60)
    finally:
        teardown_instance(instance)
    assert r.returncode == 2, r.stdout + r.stderr
    assert not pin_dir_of(instance).exists()
    return r.stderr


def _xdp_progs(ns: str) -> str:
    return subprocess.run(["ip", "-n", ns, "-d", "link", "show"], capture_output=True,
                          text=True, check=True, timeout=10).stdout


def test_native_xdp_on_a_bridge_is_refused_with_the_fix(bridge: S.Shape,
                                                        tmp_path: Path) -> None:
    instance = f"{TAG}-native-br"
    err = _serve_refused(_config(tmp_path, bridge, instance, interfaces=["c1", "c2"],
                                 reply=["br0"], mode="native"), instance)
    assert "br0: its driver (bridge) has no native XDP" in err
    assert 'datapath.xdp_mode = "auto"' in err
    assert "c1:" not in err and "c2:" not in err          # veths have native XDP
    assert "prog/xdp" not in _xdp_progs(bridge.topo.lb_ns)   # nothing left attached


def test_interfaces_that_cannot_be_served_at_all_are_all_named(bridge: S.Shape,
                                                               tmp_path: Path) -> None:
    instance = f"{TAG}-unusable"
    ns = bridge.topo.lb_ns
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                    "net.ipv4.conf.c2.forwarding=0"], check=True, timeout=10)
    try:
        err = _serve_refused(_config(tmp_path, bridge, instance, interfaces=["lo", "c2"],
                                     reply=["nosuch0"], mode="auto"), instance)
    finally:
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                        "net.ipv4.conf.c2.forwarding=1"], check=True, timeout=10)
    assert "lo: the loopback interface carries no traffic from clients" in err
    assert "c2: IPv4 forwarding is off" in err and "forwarding=1" in err
    assert "nosuch0: no such interface" in err


def test_auto_on_a_bridge_serves_and_names_where_packets_take_the_stack(
        bridge: S.Shape, tmp_path: Path) -> None:
    instance = f"{TAG}-auto-br"
    config = _config(tmp_path, bridge, instance, interfaces=["c1", "c2"], reply=["br0"],
                     mode="auto")
    with serving(config, instance) as served:
        assert served.xdp_modes() == {"c1": "native", "c2": "native", "br0": "generic"}
        out = "\n".join(served.lines)
    assert "packets leaving through br0 go through the kernel stack" in out, out
