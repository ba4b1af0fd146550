"""The sysctls a manager sets on the interfaces it serves, and puts back at teardown."""

from __future__ import annotations

from pathlib import Path

import pytest

from lbtui import netns
from lbtui.control.config import load_config
from lbtui.control.instance import Instance
from lbtui.lab import topology as T

from .conftest import instance_name, lab_config

pytestmark = [pytest.mark.datapath, pytest.mark.netns]


def conf(topo: T.Topology, ifname: str, key: str, value: int | None = None) -> int:
    path = Path("/proc/sys/net/ipv4/conf") / ifname / key
    with netns.inside(topo.lb_ns):
        if value is not None:
            path.write_text(f"{value}\n")
        return int(path.read_text())


def test_replies_pass_the_stack_and_no_redirects_leave_then_all_is_put_back(
        make_lab, state_dir, instance_cleanup, tmp_path: Path) -> None:
    topo = make_lab(1, 1)
    name = instance_name()
    instance_cleanup.append(name)
    before = {("c1", "accept_local"): 0, ("c1", "rp_filter"): 1, ("c1", "send_redirects"): 1,
              ("b1", "send_redirects"): 1, ("all", "send_redirects"): 1}
    for (ifname, key), value in before.items():
        conf(topo, ifname, key, value)
    path = tmp_path / "lbtui.toml"
    path.write_text(lab_config(topo, name, http_weights=(100,)))
    inst = Instance.start(load_config(path), progress=lambda _m: None)
    try:
        assert conf(topo, "c1", "accept_local") == 1       # VIP-sourced replies: not martians
        assert conf(topo, "c1", "rp_filter") == 2          # loose
        assert conf(topo, "c1", "send_redirects") == 0     # never route clients around us
        assert conf(topo, "b1", "send_redirects") == 0
        assert conf(topo, "all", "send_redirects") == 0    # ORed with each interface's
    finally:
        inst.stop()
    assert {k: conf(topo, *k) for k in before} == before
