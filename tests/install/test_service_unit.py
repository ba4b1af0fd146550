"""examples/lbtui.service: systemd accepts it, and serve started the way it says (its
ExecStartPre and ExecStart arguments, root restricted to its CapabilityBoundingSet, no new
privileges, NOTIFY_SOCKET) reports READY=1, forwards, listens for SNI on port 443, and
stops cleanly; without CAP_NET_BIND_SERVICE the SNI listener is refused.

There is no systemd as PID 1 here, so the sandboxing (ProtectSystem=...) is not run; its
one consequence for lbtui, a read-only config file, is tested in
tests/control/test_readonly_config.py."""

from __future__ import annotations

import configparser
import shlex
import signal
import subprocess
from pathlib import Path

import pytest
from control.conftest import NotifySocket, http_get, instance_name, lab_config

from lbtui.lab import topology as T

pytestmark = [pytest.mark.datapath, pytest.mark.netns]
REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "examples/lbtui.service"
LBTUI_BIN = REPO / ".venv/bin/lbtui"


def unit() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read(UNIT)
    return cp


def bounding_set(without: str = "") -> str:
    """The unit's CapabilityBoundingSet in setpriv's syntax (``-all,+sys_admin,...``)."""
    caps = [c for c in unit()["Service"]["CapabilityBoundingSet"].split() if c != without]
    return ",".join(["-all", *(f"+{c.removeprefix('CAP_').lower()}" for c in caps)])


def unit_argv(key: str, config: Path) -> list[str]:
    """An Exec line of the unit, run with this checkout's lbtui and ``config``."""
    argv = shlex.split(unit()["Service"][key])
    assert argv[0] == "/usr/local/bin/lbtui" and argv[1:3] in (["serve", "--config"],
                                                                ["check", "--config"])
    return [str(LBTUI_BIN), argv[1], "--config", str(config), *argv[4:]]


def sni_lab_config(topo: T.Topology, name: str) -> str:
    return lab_config(topo, name, http_weights=(100,)) + f"""
[[listener]]
port = 443
protocol = "tcp"
sni = true
address = "{topo.vip}"
targets = [{{ ip = "{topo.backends[0].ip}", port = 8443 }}]
"""


def test_systemd_accepts_the_unit() -> None:
    assert Path("/usr/local/bin/lbtui").exists(), "run scripts/setup.sh (it links lbtui)"
    p = subprocess.run(["systemd-analyze", "verify", str(UNIT)], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and not p.stderr.strip(), p.stderr
    s = unit()
    assert s["Service"]["Type"] == "notify"
    assert "network-online.target" in s["Unit"]["Wants"] + s["Unit"]["After"]


def test_serve_as_the_unit_runs_it(make_lab, state_dir, instance_cleanup, start_serve,
                                   tmp_path: Path) -> None:
    topo = make_lab(1, 1)
    name = instance_name()
    instance_cleanup.append(name)
    config = tmp_path / "lbtui.toml"
    config.write_text(sni_lab_config(topo, name))
    check = subprocess.run(unit_argv("ExecStartPre", config), capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stderr

    restricted = ["setpriv", f"--bounding-set={bounding_set()}", "--inh-caps=-all",
                  "--no-new-privs"]
    serve_args = unit_argv("ExecStart", config)
    assert serve_args[-1] == "--keep"
    notify = NotifySocket()
    try:
        serve = start_serve(config, *serve_args[4:], ready=False,
                            argv=[*restricted, serve_args[0]],
                            env={"NOTIFY_SOCKET": notify.name})
        notify.wait_for("READY=1", 90, serve.proc)
        serve.wait_ready()
        caps = Path(f"/proc/{serve.pid}/status").read_text()
        assert "NoNewPrivs:\t1" in caps
        assert f"SNI splicer listening on {topo.vip}:443" in serve.output
        assert http_get(topo) == "backend1"
        serve.proc.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1", 20, serve.proc)
        assert serve.stop() == 0
        assert "datapath left forwarding" in serve.output      # --keep, as the unit says
    finally:
        notify.close()

    # The capability is needed, not just allowed: without it port 443 is refused.
    no_bind = ["setpriv", f"--bounding-set={bounding_set('CAP_NET_BIND_SERVICE')}",
               "--inh-caps=-all", "--no-new-privs"]
    serve = start_serve(config, *serve_args[4:], ready=False, argv=[*no_bind, serve_args[0]])
    assert serve.proc.wait(90) != 0
    serve.stop()
    assert "cannot listen on" in serve.output and "443" in serve.output
