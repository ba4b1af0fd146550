"""serve as a system service: sd_notify readiness (READY=1 only once XDP is attached and
the config applied), STOPPING=1, `ctl status` exit 5 when an interface lost its XDP
program, and `lbtui check`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from lbtui.control.instance import _xdp_state, pin_dir_of
from lbtui.control.state import read_state

from .conftest import LBTUI, NotifySocket, ctl, http_get, instance_name, lab_config

pytestmark = [pytest.mark.datapath, pytest.mark.netns]


def test_ready_only_once_the_datapath_is_live_then_stopping(
        make_lab, state_dir, instance_cleanup, start_serve, tmp_path: Path) -> None:
    topo = make_lab(1, 2)
    name = instance_name()
    instance_cleanup.append(name)
    path = tmp_path / "lbtui.toml"
    path.write_text(lab_config(topo, name, http_weights=(50, 50)))
    links = [*topo.client_ifnames, *topo.backend_ifnames]
    notify = NotifySocket()
    try:
        serve = start_serve(path, ready=False, env={"NOTIFY_SOCKET": notify.name})
        notify.wait_for("READY=1", 90, serve.proc)
        # Freeze serve the moment READY arrives: whatever is live now was live when it
        # told systemd it was ready.
        os.kill(serve.pid, signal.SIGSTOP)
        try:
            ready_msg = next(m for m in notify.messages if "READY=1" in m)
            assert any(f.startswith("STATUS=serving instance") for f in ready_msg)
            states = [_xdp_state(i, topo.lb_ns) for i in links]
            assert all(prog_id for _mode, prog_id in states), states   # XDP attached
            assert len({prog_id for _mode, prog_id in states}) == 1
            # The config is applied: the VIP answers through the XDP program.
            assert http_get(topo) in {"backend1", "backend2"}
        finally:
            os.kill(serve.pid, signal.SIGCONT)
        serve.wait_ready()
        assert ctl(name, "status").returncode == 0

        # An interface loses its XDP program behind lbtui's back: status exits 5.
        subprocess.run(["ip", "-n", topo.lb_ns, "link", "set", "dev", "b2", "xdp", "off"],
                       check=True)
        r = ctl(name, "status")
        assert r.returncode == 5, (r.stdout, r.stderr)
        assert "degraded: b2 has no XDP program" in r.stderr
        assert "b2" in r.stdout                                  # the status still prints
        r = ctl(name, "status", json_out=True)
        doc = json.loads(r.stdout)
        assert r.returncode == 5 and doc["ok"] is False and doc["version"] == 1
        assert doc["error"]["kind"] == "degraded" and doc["error"]["exit_code"] == 5
        lost = [i["ifname"] for i in doc["data"]["interfaces"] if not i["ours"]]
        assert lost == ["b2"]

        serve.proc.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1", 20, serve.proc)
        assert serve.stop() == 0
        assert all(_xdp_state(i, topo.lb_ns) == (None, 0) for i in links)
    finally:
        notify.close()


def test_check_validates_only(state_dir, tmp_path: Path) -> None:
    name = instance_name()
    example = (Path(__file__).resolve().parents[2] / "examples/lbtui.toml").read_text()
    good = tmp_path / "good.toml"
    good.write_text(example.replace('instance = "default"', f'instance = "{name}"'))
    r = subprocess.run([*LBTUI, "check", "--config", str(good)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and f"valid (instance {name}: 3 listener(s)" in r.stdout, r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(good.read_text().replace('xdp_mode = "auto"', 'xdp_mode = "fast"'))
    r = subprocess.run([*LBTUI, "check", "--config", str(bad)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "datapath.xdp_mode: must be one of" in r.stderr
    r = subprocess.run([*LBTUI, "check", "--config", str(bad), "--json"],
                       capture_output=True, text=True, timeout=60)
    doc = json.loads(r.stdout)
    assert r.returncode == 2 and doc["ok"] is False and doc["error"]["kind"] == "usage"
    assert "datapath.xdp_mode" in doc["error"]["message"]
    assert not pin_dir_of(name).exists() and read_state(name) is None   # nothing loaded
