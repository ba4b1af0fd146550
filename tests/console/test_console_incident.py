"""The console in an incident, against a real ``lbtui serve`` on a namespace lab: every
viewer gets the same event stream; a backend whose server stops turns failing and leaves
the rotation in the Targets view while the traffic moves; targets two listeners share are
counted per group; a route added with ``ctl`` shows by its name; the Reasons view counts
packets that real traffic sent to the stack. Every UI assertion is checked against the
hub, the maps, ``ctl`` or the traffic itself."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from consolelab import EventsFollower, console_on, ctl, http_get, try_get
from consolepilot import until
from topologies.serving import serving

from lbtui import netns
from lbtui.console.app import ConsoleApp
from lbtui.console.data.hub import Notice
from lbtui.console.data.tables import TargetRow
from lbtui.console.views.events import EventsView
from lbtui.console.views.reasons import ReasonsView
from lbtui.console.views.routes import RoutesView
from lbtui.console.views.targets import TargetsView
from lbtui.control.eventhub import HEALTH_EVERY_S
from lbtui.lab import topology as T
from lbtui.maps.events import LbEvent

pytestmark = [pytest.mark.datapath, pytest.mark.netns]
SIZE = (160, 40)
REFRESH = 0.2
EXTRA = (8090, 7090, 9090)     # the ports of the server the tests stop (http, echo, udp)
CHECK = {"interval": 0.2, "timeout": 0.5, "fall": 2}
_count = 0


@pytest.fixture
def extra_server(lab: T.Topology) -> Iterator[subprocess.Popen[str]]:
    """A second server in backend3 (HTTP on 8090) that a test can stop, as an operator's
    backend dies; killed afterwards whatever happened."""
    http, echo, udp = EXTRA
    proc = lab.popen("backend3", T.python_argv(
        "lbtui.lab.servers", "--name", "backend3", "--http", str(http), "--echo", str(echo),
        "--udp", str(udp)), stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def instance() -> str:
    global _count
    _count += 1
    return f"h4-{os.getpid() % 100000}-{_count}"


def config(topo: T.Topology, name: str) -> str:
    """:80 over backend1..3 (backend3 on the stoppable 8090, actively checked), :82 over
    backend1/backend2 (shared with :80), echo on :7000."""
    b1, b2, b3 = (e.ip for e in topo.backends)
    return f"""\
[datapath]
instance = "{name}"
netns = "{topo.lb_ns}"
interfaces = {topo.client_ifnames!r}
reply_interfaces = {topo.backend_ifnames!r}

[settings]
sweep_interval = 0.5

[health]
window = 10
min_samples = 3
check_interval = {CHECK["interval"]}
check_timeout = {CHECK["timeout"]}
fall = {CHECK["fall"]}
rise = 2
check_targets = ["{b3}:{EXTRA[0]}"]

[[listener]]
port = 80
protocol = "tcp"
targets = [{{ ip = "{b1}", port = 8080, weight = 40 }},
           {{ ip = "{b2}", port = 8080, weight = 30 }},
           {{ ip = "{b3}", port = {EXTRA[0]}, weight = 30 }}]

[[listener]]
port = 82
protocol = "tcp"
targets = [{{ ip = "{b1}", port = 8080, weight = 50 }},
           {{ ip = "{b2}", port = 8080, weight = 50 }}]

[[listener]]
port = 7000
protocol = "tcp"
targets = [{{ ip = "{b1}", port = 7000 }}]
"""


def served(topo: T.Topology, tmp_path: Path) -> tuple[str, Path]:
    name = instance()
    path = tmp_path / "lbtui.toml"
    path.write_text(config(topo, name))
    return name, path


def until_seen(topo: T.Topology, answer: str, times: int, most: int) -> list[str]:
    """HTTP requests to the VIP (``try_get``) until ``answer`` came ``times`` times, or
    ``most`` requests were made."""
    answers: list[str] = []
    while answers.count(answer) < times and len(answers) < most:
        answers.append(try_get(topo))
    return answers


def flows(app: ConsoleApp) -> list[LbEvent]:
    return [e for e in app.query_one(EventsView).events if isinstance(e, LbEvent)]


def notices(app: ConsoleApp) -> list[Notice]:
    return [e for e in app.query_one(EventsView).events if isinstance(e, Notice)]


def key(e: LbEvent) -> tuple[str, int, int, str]:
    return e.kind, e.client_port, e.vip_port, e.target_ip


def target_row(app: ConsoleApp, group: str, target: str) -> TargetRow | None:
    return next((r for r in app.query_one(TargetsView).rows
                 if r.label == group and r.target == target), None)


# --- one stream for every viewer ------------------------------------------------------------


async def test_two_consoles_and_ctl_get_the_same_events_shared_targets_per_group_and_names(
        lab, state_dir, tmp_path, extra_server) -> None:
    name, path = served(lab, tmp_path)
    b1 = f"{lab.backends[0].ip}:8080"
    with serving(path, name):
        follower = EventsFollower(name)
        try:
            async with console_on(name, SIZE, REFRESH) as (one, p1), \
                    console_on(name, SIZE, REFRESH) as (two, p2):
                answers = await asyncio.to_thread(
                    lambda: [http_get(lab, port=80) for _ in range(20)]
                    + [http_get(lab, port=82) for _ in range(10)])
                assert set(answers) == {"backend1", "backend2", "backend3"}

                want = 60                                  # opened + closed per request
                for p, app in ((p1, one), (p2, two)):
                    await until(p, lambda a=app: len(flows(a)) >= want, "60 flow events")
                await until(p1, lambda: len(follower.of_type("event")) >= want,
                            "60 events from ctl events --follow")
                by_ctl = {key(LbEvent.from_dict(m)) for m in follower.of_type("event")}
                by_one = {key(e) for e in flows(one)}
                assert len(by_one) == want
                assert by_one == {key(e) for e in flows(two)} == by_ctl

                # backend1 serves both listeners: a row under each, counted apart.
                await p1.press("3")

                def counted() -> bool:
                    a, b = target_row(one, "listener :80", b1), target_row(one,
                                                                           "listener :82", b1)
                    return bool(a and b and a.health and b.health and a.health.closed
                                + b.health.closed == answers.count("backend1"))
                await until(p1, counted, "backend1 counted under :80 and :82")
                per_group = Counter()
                for r in one.query_one(TargetsView).rows:
                    if r.health is not None:
                        per_group[r.label] += r.health.opened
                assert per_group == {"listener :80": 20, "listener :82": 10}
                on80 = target_row(one, "listener :80", b1)
                on82 = target_row(one, "listener :82", b1)
                assert on80 and on82 and on80.health and on82.health
                assert on80.health.opened == answers[:20].count("backend1")
                assert on82.health.opened == answers[20:].count("backend1")
                assert on80.state == on82.state == "healthy"

                # A route added by ctl shows by its name in both consoles within a refresh
                # or two, and its edit (who, from where, old -> new) in both Events views.
                await asyncio.to_thread(ctl, name, "sni", "add", "shop.incident.test",
                                        f"{b1}=100")
                t0 = time.monotonic()
                for p, app in ((p1, one), (p2, two)):
                    await until(p, lambda a=app: "SNI shop.incident.test" in {
                        r.group.label for r in a.query_one(RoutesView).table.rows},
                        "the ctl-added SNI route by name", timeout=5)
                    await until(p, lambda a=app: any(
                        n.kind == "edit" and n.source == "ctl" and "shop.incident.test"
                        in n.what for n in notices(a)), "the edit in Events", timeout=5)
                    assert not any(r.group.label.startswith("SNI #")
                                   for r in app.query_one(RoutesView).table.rows)
                took = time.monotonic() - t0
                assert took < 2 * REFRESH + 1.5, f"the new route took {took:.1f}s to show"
                edit = next(n for n in notices(one) if n.kind == "edit")
                assert edit.who == "root" and "added SNI shop.incident.test" in edit.what
                assert edit in notices(two)
                await until(p1, lambda: any(m.get("change") == edit.what and m["source"] ==
                                            "ctl" for m in follower.of_type("edit")),
                            "the same edit from ctl events --follow")
                await p1.press("4")
        finally:
            follower.close()


# --- a backend stops ---------------------------------------------------------------------------


async def test_a_stopped_backend_turns_failing_leaves_the_rotation_and_traffic_moves(
        lab, state_dir, tmp_path, extra_server) -> None:
    name, path = served(lab, tmp_path)
    b3 = f"{lab.backends[2].ip}:{EXTRA[0]}"
    with serving(path, name):
        async with console_on(name, SIZE, REFRESH) as (app, pilot):
            await pilot.press("3")
            # Until backend3 answers once (30% of the weight: 60 requests all miss it with
            # odds of 5e-10). No more: its successes would outweigh the refusals below in
            # the traffic window, and it would read degraded, not failing.
            answers = await asyncio.to_thread(until_seen, lab, "backend3", 1, 60)
            assert "backend3" in answers
            await until(pilot, lambda: (r := target_row(app, "listener :80", b3))
                        is not None and r.rotation == "in" and r.state == "healthy",
                        "backend3 checked, in rotation and healthy")

            extra_server.kill()                  # its server stops
            extra_server.wait(10)
            t0 = time.monotonic()
            # Requests while the checks notice: those given backend3 are refused.
            during = Counter(await asyncio.to_thread(until_seen, lab, "refused", 3, 60))
            assert during["refused"] >= 3, during

            def out() -> bool:
                r = target_row(app, "listener :80", b3)
                return r is not None and r.rotation == "OUT" and r.state == "failing"
            limit = (CHECK["fall"] * CHECK["interval"] + CHECK["timeout"]
                     + HEALTH_EVERY_S + 2 * REFRESH + 0.5)
            await until(pilot, out, "backend3 failing and out of rotation", timeout=10)
            took = time.monotonic() - t0
            assert took < limit, f"failing after {took:.1f}s (limit {limit:.1f}s)"
            row = target_row(app, "listener :80", b3)
            assert row is not None and row.health is not None
            assert row.health.resets == during["refused"]      # every refusal counted
            assert row.weight == 0                 # the checks took it out of the map
            assert app.query_one("#targets-table").row_class(row) == "bad"
            assert "1 failing or out" in str(
                app.query_one("#targets-title").render())

            # The traffic moved: nothing refused, nothing to backend3.
            after = await asyncio.to_thread(lambda: Counter(try_get(lab)
                                                            for _ in range(20)))
            assert set(after) <= {"backend1", "backend2"}, after
            # Both changes of state are in Events, coloured.
            await until(pilot, lambda: {(n.kind, n.new) for n in notices(app)} >= {
                ("health", "failing"), ("check", "down")}, "the transitions in Events")


# --- reasons ----------------------------------------------------------------------------------


def echo_then_forgotten(topo: T.Topology, name: str) -> socket.socket:
    """An echo connection through the VIP whose flow the LB then forgets (``ctl
    connections delete``): the client's next segments are not SYNs and have no flow."""
    with netns.inside(topo.clients[0].ns):
        s = socket.create_connection((topo.vip, 7000), timeout=5)
    s.sendall(b"hello\n")
    assert s.recv(100)
    ip, port = s.getsockname()
    client = f"{ip}:{port}"
    ctl(name, "connections", "delete", client, f"{topo.vip}:7000")
    return s


async def test_reasons_view_counts_what_real_traffic_sent_to_the_stack(
        lab, state_dir, tmp_path) -> None:
    name, path = served(lab, tmp_path)
    ifname = lab.client_ifnames[0]
    with serving(path, name):
        async with console_on(name, SIZE, REFRESH) as (app, pilot):
            await pilot.press("6")
            view = app.query_one(ReasonsView)
            assert not [r for r in view.rows if r.reason == "no_flow"]
            for _ in range(3):
                s = await asyncio.to_thread(echo_then_forgotten, lab, name)
                # Passed to the stack, which knows no such connection: it resets it.
                s.sendall(b"more\n")
                with contextlib.suppress(OSError):
                    s.recv(100)
                s.close()

            def no_flow() -> bool:
                return any(r.reason == "no_flow" and r.interface == ifname and r.per_s > 0
                           for r in view.rows)
            await until(pilot, no_flow, "no_flow moving on the client interface")
            status = await asyncio.to_thread(ctl, name, "status", "--json")
            row = next(r for r in view.rows if r.reason == "no_flow")
            assert row.total >= 1 and "TCP non-SYN" in row.meaning
            assert "no_flow" in status
            header = str(app.query_one("#header").render())
            assert "no_flow" in header
