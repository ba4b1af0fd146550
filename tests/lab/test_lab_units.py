"""The lab's parts without a lab: traffic spec and stats, demo config, progress output,
summaries, the lab lock, the watchdog handshake, and CLI input errors (exit 2, nothing
built)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time

import pytest
from labcheck import REPO, lab_name, lbtui, leftovers

from lbtui.control.config import parse_config
from lbtui.lab import demo_config as D
from lbtui.lab import traffic as TR
from lbtui.lab.lifecycle import TrafficOptions, traffic_summary
from lbtui.lab.ownership import LabLock, meta_path, read_meta
from lbtui.lab.progress import StepFailed, Steps
from lbtui.lab.status_view import render_status
from lbtui.lab.topology import VIP, Endpoint, Topology

# --- traffic -----------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "message"), [
    ({"http_rate": 501}, "http-rate: 501 must be 0..500"),
    ({"udp_rate": -1}, "udp-rate"),
    ({"echo_conns": 101}, "echo-conns"),
    ({"duration": 0}, "duration"),
    ({"duration": 90000}, "duration"),
    ({"http_port": 0}, "http-port"),
    ({"tls_rate": 1}, "needs --tls-hosts"),
    ({"echo_interval": 0.0}, "echo"),
])
def test_traffic_spec_rejects_bad_values(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TR.TrafficSpec().with_(**change).validate()


def test_traffic_spec_round_trips_through_its_command_line() -> None:
    spec = TR.TrafficSpec(http_rate=7.5, echo_conns=2, udp_rate=3, tls_rate=1,
                          tls_hosts=["a.test", "b.test"], duration=9, http_port=8080)
    parsed, client, path = TR.parse_args(["--client", "c9", *spec.argv()])
    assert parsed == spec and client == "c9" and path is None


def test_traffic_command_line_rejects_over_the_cap(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        TR.parse_args(["--udp-rate", "5000"])
    assert e.value.code == 2 and "udp-rate: 5000.0 must be 0..1000" in capsys.readouterr().err


def test_stats_count_per_backend_and_recent_window() -> None:
    st = TR.Stats("client1", TR.TrafficSpec())
    st.success("http", "backend1")
    st.tick()
    for _ in range(3):
        st.success("http", "backend2")
    st.failure("udp", TimeoutError())
    st.tick()
    snap = st.snapshot()
    http = snap["kinds"]["http"]
    assert http["ok"] == 4 and http["by_backend"] == {"backend1": 1, "backend2": 3}
    assert http["recent_by_backend"] == {"backend2": 3}       # since the oldest tick
    assert http["rate"] > 0
    assert snap["kinds"]["udp"] == {**snap["kinds"]["udp"], "errors": 1,
                                    "last_error": "TimeoutError"}


def test_backend_from_http_reads_the_header_or_refuses() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nX-Backend: backend3\r\n\r\nbackend3\n"
    assert TR.backend_from_http(ok) == "backend3"
    with pytest.raises(ConnectionError):
        TR.backend_from_http(b"HTTP/1.1 503 Busy\r\n\r\n")


def test_traffic_options_split_between_the_clients() -> None:
    specs = TrafficOptions(http_rate=20, echo_conns=3, udp_rate=10, tls_rate=4).specs(
        _topology("x"), sni=True)
    assert specs["client1"].http_rate == 20 and specs["client1"].tls_rate == 4
    assert specs["client1"].echo_conns == 3 and specs["client1"].udp_rate == 10
    # client2 is source-routed to HTTP backends whatever the port: HTTP only.
    c2 = specs["client2"]
    assert (c2.http_rate, c2.echo_conns, c2.udp_rate, c2.tls_rate) == (10, 0, 0, 0)
    no_sni = TrafficOptions(tls_rate=4).specs(_topology("x"), sni=False)
    assert no_sni["client1"].tls_rate == 0


# --- demo config -----------------------------------------------------------------------------


def _topology(lab: str, clients: int = 2, backends: int = 4) -> Topology:
    return Topology(lab, VIP, f"lbt-{lab}-lb",
                    [Endpoint(f"client{i}", f"lbt-{lab}-client{i}", f"198.18.{i}.2",
                              f"198.18.{i}.1", f"c{i}", f"198.18.{i}.0/24")
                     for i in range(1, clients + 1)],
                    [Endpoint(f"backend{j}", f"lbt-{lab}-backend{j}", f"198.18.{100 + j}.2",
                              f"198.18.{100 + j}.1", f"b{j}", f"198.18.{100 + j}.0/24")
                     for j in range(1, backends + 1)])


@pytest.mark.parametrize("sni", [True, False])
def test_demo_config_is_valid_and_says_what_the_demo_promises(sni: bool) -> None:
    cfg = parse_config(D.render(_topology("demo"), sni_listener=sni))
    assert cfg.datapath.instance == "lab-demo" and cfg.datapath.netns == "lbt-demo-lb"
    assert cfg.datapath.interfaces == ["c1", "c2"]
    assert cfg.datapath.reply_interfaces == ["b1", "b2", "b3", "b4"]
    ports = {x.port: x for x in cfg.listeners}
    assert set(ports) == ({80, 7000, 9000, 443} if sni else {80, 7000, 9000})
    assert [t.weight for t in ports[80].group.targets] == [40, 30, 20, 10]
    assert ports[9000].protocol == "udp" and ports[80].protocol == "tcp"
    if sni:
        assert ports[443].sni and {t.port for t in ports[443].group.targets} == {8443}
    assert [r.cidr for r in cfg.source_routes] == ["198.18.2.0/24"]
    assert {(t.ip, t.port) for t in cfg.source_routes[0].group.targets} == {
        ("198.18.103.2", 8081), ("198.18.104.2", 8081)}
    assert {r.hostname for r in cfg.sni_routes} == {"www.demo.test", "api.demo.test"}


def test_demo_config_needs_the_demo_shape() -> None:
    with pytest.raises(ValueError, match="2 clients and 4 backends"):
        D.render(_topology("demo", backends=3), sni_listener=False)


# --- progress and summaries ------------------------------------------------------------------


def test_steps_report_outcome_duration_error_and_fix() -> None:
    out = io.StringIO()
    steps = Steps(out, color=False)
    with steps.step("first"):
        steps.note("detail")
    with pytest.raises(StepFailed, match=re.escape("second: boom (do this)")), steps.step(
            "second", hint="do this"):
        raise RuntimeError("boom")
    lines = out.getvalue().splitlines()
    assert lines[0] == "      detail"
    assert lines[1].startswith("  ✓ first  ") and lines[1].endswith(" s")
    assert lines[2].startswith("  ✗ second  ")
    assert lines[3:] == ["      error: boom", "      fix: do this"]


def test_traffic_summary_gives_rates_errors_and_http_shares() -> None:
    def client(name: str, http: dict[str, int], rate: float, errors: int = 0) -> dict:
        kinds = {k: {"ok": 0, "errors": 0, "rate": 0.0, "by_backend": {},
                     "recent_by_backend": {}, "last_error": ""} for k in TR.KINDS}
        kinds["http"].update(ok=sum(http.values()), rate=rate, errors=errors,
                             recent_by_backend=http)
        return {"client": name, "kinds": kinds}
    line = traffic_summary({"client1": client("client1", {"backend1": 3, "backend2": 1}, 4.0),
                            "client2": client("client2", {"backend3": 50}, 2.0, errors=2)})
    # client2 is source-routed: its answers are not the listener's shares.
    assert line == "http 6.0/s; errors 2; new HTTP on port 80: backend1 75% backend2 25%"
    assert traffic_summary({}) == "no traffic"


def test_status_of_a_missing_lab_says_how_to_start_it() -> None:
    text = render_status({"lab": "zz", "exists": False})
    assert "not up" in text and "lbtui lab up --lab zz" in text


# --- ownership ---------------------------------------------------------------------------------


def test_lab_lock_is_exclusive_and_survives_removal_races() -> None:
    name = lab_name("l")
    a, b = LabLock(name), LabLock(name)
    assert a.try_acquire() and a.holder() == os.getpid()
    assert not b.try_acquire()
    a.release(remove=True)
    assert not a.path.exists()
    assert b.try_acquire() and b.path.exists()
    b.release(remove=True)


@pytest.mark.parametrize("text", ["[]", '{"owner_pid": "1"}', '{"owner_pid": ', "7"])
def test_lab_down_takes_a_damaged_meta_file_for_no_owner(text: str) -> None:
    """The lab's meta file cut short, or not the object lab up writes (a pid as a string),
    names no owner: ``lab down`` stops nobody, removes the lab and exits 0."""
    name = lab_name("m")
    path = meta_path(name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(text)
    assert read_meta(name) == ({"owner_pid": "1"} if "1" in text else {})
    p = lbtui("lab", "down", "--lab", name, check=False, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert "stopped the lab's owner" not in p.stdout and not path.exists()
    assert not leftovers(name)


def test_watchdog_stands_down_on_done_and_cleans_up_when_its_owner_dies() -> None:
    name = lab_name("w")
    owner = (f"import os, sys; from lbtui.lab.supervisor import Watchdog; "
             f"w = Watchdog({name!r}); print('watching', flush=True); "
             f"w.done() if sys.argv[1] == 'done' else os._exit(9)")
    for how in ("done", "die"):
        t0 = time.monotonic()
        p = subprocess.run([sys.executable, "-c", owner, how], cwd=REPO, capture_output=True,
                           text=True, timeout=60)
        assert "watching" in p.stdout, p.stderr
        # stderr is shared with the watchdog: reading to EOF waits for it to finish.
        if how == "done":
            assert p.returncode == 0 and "torn down" not in p.stderr, p.stderr
        else:
            assert p.returncode == 9
            assert f"lab {name} torn down after its owner exited" in p.stderr, p.stderr
        assert time.monotonic() - t0 < 30
    assert not leftovers(name)


# --- command line: bad input is refused and builds nothing ----------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (["demo", "--headless", "--http-rate", "100000"], "http-rate"),
    (["demo", "--headless", "--lab", "no/slash"], "lab name"),
    (["demo", "--headless", "--duration", "-1"], "--duration"),
    (["demo"], "needs a terminal"),
    (["lab", "down", "--lab", "../etc"], "lab name"),
    (["lab", "up", "--lab", "h4x", "--traffic-duration", "0"], "duration"),
])
def test_cli_refuses_bad_input(args: list[str], message: str) -> None:
    p = lbtui(*args, check=False, stdin=subprocess.DEVNULL)
    assert p.returncode == 2 and message in p.stderr, (p.stdout, p.stderr)
    assert not leftovers("h4x") and not leftovers("demo")
