"""The console against a real datapath: a namespace lab with backend servers, an Instance
started from a config file (XDP in the lab's LB namespace), the console driven by Pilot.
Every assertion is on the maps, the config file or real traffic, not on the UI alone."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import select
import socket
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from consolelab import http_get
from consolepilot import filter_by, type_into, type_text, until
from textual.pilot import Pilot

from lbtui import abi, bpfsys, netns
from lbtui import maps as M
from lbtui.console.app import ConsoleApp
from lbtui.console.data import conns as C
from lbtui.console.forms.base import FormScreen
from lbtui.console.forms.dialogs import ConfirmScreen, QuitScreen
from lbtui.console.forms.routes import SniRouteForm, WeightsForm
from lbtui.console.session import build_app
from lbtui.console.views.events import EventsView
from lbtui.console.views.routes import ROUTE_COLUMNS
from lbtui.console.widgets.linetable import LineTable
from lbtui.control.config import load_config
from lbtui.control.instance import Instance, pin_dir_of, teardown
from lbtui.datapath import loader
from lbtui.lab import topology as T
from lbtui.maps import flowrows as R
from lbtui.targets import TargetGroup

pytestmark = [pytest.mark.datapath, pytest.mark.netns]
SIZE = (150, 40)
_count = 0


def config_text(topo: T.Topology, name: str, settings: str = "") -> str:
    b = topo.backends
    return f"""\
# console test ({name})
[datapath]
instance = "{name}"
netns = "{topo.lb_ns}"
interfaces = ["c1", "c2"]
reply_interfaces = ["b1", "b2", "b3"]

[settings]
sweep_interval = 1.0
{settings}
# web: the weights the tests edit
[[listener]]
port = 80
protocol = "tcp"
targets = [
  {{ ip = "{b[0].ip}", port = 8080, weight = 50 }},
  {{ ip = "{b[1].ip}", port = 8080, weight = 30 }},
  {{ ip = "{b[2].ip}", port = 8080, weight = 20 }},
]

[[listener]]
port = 7000
protocol = "tcp"
targets = [{{ ip = "{b[0].ip}", port = 7000 }}]
"""


@pytest.fixture
def started(request: pytest.FixtureRequest, lab: T.Topology, state_dir: Path,
            tmp_path: Path) -> Iterator[tuple[Instance, Path]]:
    """An instance started from a config file, as `lbtui console --config` does; torn down
    after the test whatever happened. Indirect parameter: (settings, extra) text."""
    global _count
    _count += 1
    name = f"h3-{os.getpid() % 100000}-{_count}"
    path = tmp_path / "lbtui.toml"
    settings, extra = getattr(request, "param", ("", ""))
    path.write_text(config_text(lab, name, settings) + extra.format(b=lab.backends))
    inst = Instance.start(load_config(path), progress=lambda _m: None)
    try:
        yield inst, path
    finally:
        if inst.emit_fd >= 0:
            inst.close()
        teardown(name)


async def app_for(inst: Instance) -> ConsoleApp:
    """build_app reads XDP state with pyroute2's sync API, which refuses to run inside a
    running event loop (these tests are async): build it on a thread, as the CLI builds it
    before the app's loop starts."""
    return await asyncio.to_thread(build_app, inst, refresh_interval=0.2)


async def fresh(pilot: Pilot) -> None:
    """Wait for a snapshot taken after now."""
    app: ConsoleApp = pilot.app  # type: ignore[assignment]
    n = app.refreshes
    await until(pilot, lambda: app.refreshes >= n + 2, "two refreshes")


async def save(pilot: Pilot, form: FormScreen) -> None:
    """Press ctrl+s and wait until the form closed or shows why it did not."""
    await pilot.press("ctrl+s")
    await until(pilot, lambda: not form.saving and (
        form not in pilot.app.screen_stack or form.error_text), "the form to save or refuse")


def listen_bytes(inst: Instance, port: int) -> dict[bytes, bytes]:
    m = inst.maps.listen_map
    return {bytes(k): bytes(bpfsys.lookup(m.fd, k, abi.Route))
            for k in bpfsys.keys(m.fd, abi.ListenKey) if socket.ntohs(k.port) == port}


def table_to(pilot: Pilot, table_id: str, ref: str, target: str | None = None) -> None:
    """Put a Routes or Targets cursor on the first row of group ``ref`` (e.g.
    "listener|80"), or on its ``target``."""
    t = pilot.app.query_one(table_id, LineTable)
    for i, row in enumerate(t.rows):
        if row.ref[0] == ref and target in (None, row.target if isinstance(
                row.target, str) else str(row.target)):
            t.move_to(i)
            return
    raise AssertionError(f"{ref} {target or ''} not in {table_id}")


def routes_view_to(pilot: Pilot, ref: str) -> None:
    table_to(pilot, "#routes-table", ref)


async def target_in_targets_view(pilot: Pilot, ref: str, target: str) -> None:
    await pilot.press("3")
    table_to(pilot, "#targets-table", ref, target)


# --- edits ---------------------------------------------------------------------------------


async def test_weights_form_changes_map_bytes_and_config_file(lab, started) -> None:
    inst, path = started
    app = await app_for(inst)
    async with app.run_test(size=SIZE) as pilot:
        await fresh(pilot)
        await pilot.press("2")
        routes_view_to(pilot, "listener|80")
        await pilot.press("w")
        form = app.screen
        assert isinstance(form, WeightsForm)
        rows = form.editor.rows
        for row, w in zip(rows, ("70", "30", "0"), strict=True):
            await type_into(pilot, row.weight_input, w)
        await save(pilot, form)
        assert not isinstance(app.screen, FormScreen), form.error_text
        b = lab.backends
        want = TargetGroup.of([(b[0].ip, 8080, 70), (b[1].ip, 8080, 30), (b[2].ip, 8080, 0)])
        entries = listen_bytes(inst, 80)
        assert len(entries) == 2   # c1 and c2
        flags = abi.ROUTE_F_STATS | abi.ROUTE_F_TCP | abi.ROUTE_F_LOCAL   # no address: local ones
        assert set(entries.values()) == {bytes(want.to_route(flags))}
        cfg = load_config(path)
        assert [(t.ip, t.weight) for t in cfg.listener(80).group.targets] == [
            (b[0].ip, 70), (b[1].ip, 30), (b[2].ip, 0)]
        assert "# web: the weights the tests edit" in path.read_text()   # comments kept
        # The drained backend gets no new connection.
        assert "backend3" not in {http_get(lab) for _ in range(20)}
        await pilot.press("q", "k")


async def test_invalid_weight_sum_shows_reason_and_changes_nothing(lab, started) -> None:
    inst, path = started
    before_map = listen_bytes(inst, 80)
    before_file = path.read_bytes()
    app = await app_for(inst)
    async with app.run_test(size=SIZE) as pilot:
        await fresh(pilot)
        await pilot.press("2")
        routes_view_to(pilot, "listener|80")
        await pilot.press("w")
        form = app.screen
        assert isinstance(form, WeightsForm)
        await type_into(pilot, form.editor.rows[0].weight_input, "40")
        assert "sum of weights: 90, must be 100" in str(
            form.query_one("#t-sum").render())
        await save(pilot, form)
        assert app.screen is form, "the form must stay open"
        assert "sum to 90, must sum to 100" in form.error_text
        assert form.editor.rows[0].weight_input.value == "40"   # input intact
        assert listen_bytes(inst, 80) == before_map
        assert path.read_bytes() == before_file
        await pilot.press("escape")
        await pilot.press("q", "k")


async def test_sni_route_added_through_the_form(lab, started) -> None:
    inst, path = started
    b = lab.backends
    app = await app_for(inst)
    async with app.run_test(size=SIZE) as pilot:
        await fresh(pilot)
        await pilot.press("2", "n")
        form = app.screen
        assert isinstance(form, SniRouteForm)
        await type_into(pilot, form.query_one("#hostname"), "API.Example.test")
        row = form.query_one("#targets").rows[0]
        await type_into(pilot, row.ip_input, b[1].ip)
        await type_into(pilot, row.port_input, "8443")
        await save(pilot, form)
        assert not isinstance(app.screen, FormScreen), form.error_text
        rec = M.lookup_sni_route(inst.maps.sni_map, "api.example.test")
        assert rec is not None
        assert [(t.ip, t.port, t.weight) for t in rec.targets] == [(b[1].ip, 8443, 100)]
        assert [r.hostname for r in load_config(path).sni_routes] == ["api.example.test"]
        await fresh(pilot)
        assert any(g.ref == "sni|api.example.test" for g in app.groups)   # shown by name
        await pilot.press("q", "k")


@pytest.mark.parametrize("started", [("max_sni_routes = 1\n", """
[[sni_route]]
hostname = "one.example.test"
targets = [{{ ip = "{b[0].ip}", port = 8443 }}]
""")], indirect=True)
async def test_failed_map_update_keeps_the_form_and_its_input(lab, started) -> None:
    """The SNI map was created with room for one route; the file is then edited to allow
    eight, so validation passes and the kernel refuses the second entry (E2BIG)."""
    inst, path = started
    b = lab.backends
    path.write_text(path.read_text().replace("max_sni_routes = 1", "max_sni_routes = 8"))
    before_file = path.read_bytes()
    app = await app_for(inst)
    async with app.run_test(size=SIZE) as pilot:
        await fresh(pilot)
        await pilot.press("2", "n")
        form = app.screen
        assert isinstance(form, SniRouteForm)
        await type_into(pilot, form.query_one("#hostname"), "two.example.test")
        row = form.query_one("#targets").rows[0]
        await type_into(pilot, row.ip_input, b[1].ip)
        await type_into(pilot, row.port_input, "8443")
        await save(pilot, form)
        assert app.screen is form
        assert "map update failed" in form.error_text, form.error_text
        assert form.query_one("#hostname").value == "two.example.test"
        assert row.ip_input.value == b[1].ip
        assert M.lookup_sni_route(inst.maps.sni_map, "two.example.test") is None
        assert M.lookup_sni_route(inst.maps.sni_map, "one.example.test") is not None
        assert path.read_bytes() == before_file
        await pilot.press("escape", "q", "k")


async def test_palette_drains_a_target_from_live_data(lab, started) -> None:
    inst, path = started
    b3 = lab.backends[2].ip
    app = await app_for(inst)
    async with app.run_test(size=SIZE) as pilot:
        await fresh(pilot)
        await pilot.press("ctrl+p")
        await type_text(pilot, f"drain {b3}:8080")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        await pilot.press("y")
        ifindex = inst.ifindexes(["c1"])[0]

        def weight() -> int:
            r = M.lookup_listen_port(inst.maps.listen_map, ifindex, 80)
            return {t.ip: t.weight for t in r.targets}[b3]
        await until(pilot, lambda: weight() == 0, "the drain to reach the map")
        rec = M.lookup_listen_port(inst.maps.listen_map, inst.ifindexes(["c1"])[0], 80)
        assert {t.ip: t.weight for t in rec.targets}[b3] == 0
        assert sum(t.weight for t in rec.targets) == 100
        assert {t.ip: t.weight for t in load_config(path).listener(80).group.targets}[b3] == 0
        await pilot.press("q", "k")


async def test_palette_switches_a_hash(lab, started) -> None:
    """The palette offers the switch of a group's hash, asks first, and y switches it in
    the map and the file; it is then offered the other way."""
    inst, path = started
    app = await app_for(inst)

    def map_hash() -> str:
        rec = M.lookup_listen_port(inst.maps.listen_map, inst.ifindexes(["c1"])[0], 80)
        return rec.hash

    async with app.run_test(size=SIZE) as pilot:
        await fresh(pilot)
        assert map_hash() == "weighted"
        titles = [c.title for c in app.live_commands()]
        assert "Switch hash of listener :80 to maglev" in titles
        await pilot.press("ctrl+p")
        await type_text(pilot, "switch hash of listener :80")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        assert "established" in str(app.screen.query_one("#question").render())
        await pilot.press("y")
        await until(pilot, lambda: map_hash() == "maglev", "maglev in the map")
        assert load_config(path).listener(80).hash == "maglev"
        await until(pilot, lambda: "Switch hash of listener :80 to weighted"
                    in [c.title for c in app.live_commands()], "the way back offered")
        await pilot.press("q", "k")


async def test_drain_asks_then_u_puts_the_weight_back(lab, started) -> None:
    """d on a target asks first (n changes nothing); y drains it in the map and the file;
    u restores the weight it had, and the map is as before the drain."""
    inst, path = started
    b = lab.backends
    before_map, before_file = listen_bytes(inst, 80), path.read_bytes()
    app = await app_for(inst)
    async with app.run_test(size=SIZE) as pilot:
        await fresh(pilot)
        await target_in_targets_view(pilot, "listener|80", f"{b[1].ip}:8080")
        await pilot.press("d")
        assert isinstance(app.screen, ConfirmScreen)
        assert "weight 30 goes to the others" in str(app.screen.query_one("#question").render())
        await pilot.press("n")
        await fresh(pilot)
        assert listen_bytes(inst, 80) == before_map and path.read_bytes() == before_file
        assert not app.undo

        await pilot.press("d", "y")

        def weights() -> dict[str, int]:
            rec = M.lookup_listen_port(inst.maps.listen_map, inst.ifindexes(["c1"])[0], 80)
            return {t.ip: t.weight for t in rec.targets}
        await until(pilot, lambda: weights()[b[1].ip] == 0, "the drain in the map")
        assert sum(weights().values()) == 100
        assert {t.ip: t.weight for t in load_config(path).listener(80).group.targets}[
            b[1].ip] == 0
        assert "backend2" not in {http_get(lab) for _ in range(12)}
        await until(pilot, lambda: app.undo, "the undo entry")

        await pilot.press("u")
        await until(pilot, lambda: listen_bytes(inst, 80) == before_map,
                    "the map back as it was")
        assert [(t.ip, t.weight) for t in load_config(path).listener(80).group.targets] == [
            (b[0].ip, 50), (b[1].ip, 30), (b[2].ip, 20)]
        assert not app.undo
        await pilot.press("q", "k")


async def test_h_switches_a_group_between_weighted_and_maglev(lab, started) -> None:
    """h on a route asks first (n changes nothing); y switches its group's pick in the
    maps and the config file, the Routes view shows it, traffic goes on; h again switches
    back."""
    inst, path = started
    before_map, before_file = listen_bytes(inst, 80), path.read_bytes()
    app = await app_for(inst)

    def map_hash() -> str:
        rec = M.lookup_listen_port(inst.maps.listen_map, inst.ifindexes(["c1"])[0], 80)
        return rec.hash

    def shown_hash() -> str:
        t = app.query_one("#routes-table", LineTable)
        col = next(c for c in ROUTE_COLUMNS if c.key == "hash")
        return next(str(col.value(r, None)) for r in t.rows if r.ref[0] == "listener|80")

    async with app.run_test(size=SIZE) as pilot:
        await fresh(pilot)
        await pilot.press("2")
        routes_view_to(pilot, "listener|80")
        assert shown_hash() == "weighted"
        await pilot.press("h")
        assert isinstance(app.screen, ConfirmScreen)
        question = str(app.screen.query_one("#question").render())
        assert "from weighted to maglev" in question and "established" in question
        await pilot.press("n")
        await fresh(pilot)
        assert listen_bytes(inst, 80) == before_map and path.read_bytes() == before_file

        routes_view_to(pilot, "listener|80")
        await pilot.press("h", "y")
        await until(pilot, lambda: map_hash() == "maglev", "maglev in the map")
        assert load_config(path).listener(80).hash == "maglev"
        assert "# web: the weights the tests edit" in path.read_text()   # comments kept
        await until(pilot, lambda: shown_hash() == "maglev", "the Routes view to show it")
        assert {http_get(lab) for _ in range(12)} <= {"backend1", "backend2", "backend3"}

        routes_view_to(pilot, "listener|80")
        await pilot.press("h")
        assert "from maglev to weighted" in str(app.screen.query_one("#question").render())
        await pilot.press("y")
        await until(pilot, lambda: map_hash() == "weighted", "weighted in the map")
        assert load_config(path).listener(80).hash == "weighted"
        await pilot.press("q", "k")


async def test_drill_down_from_a_target_to_its_live_connections(lab, started) -> None:
    inst, _path = started
    answers = [http_get(lab) for _ in range(12)]
    b1 = lab.backends[0].ip
    app = await app_for(inst)
    async with app.run_test(size=SIZE) as pilot:
        await fresh(pilot)
        await target_in_targets_view(pilot, "listener|80", f"{b1}:8080")
        await pilot.press("c")
        view = app.conns_view
        await until(pilot, lambda: view.view is not None and view.filter
                    and view.view.spec.filter == view.filter, "the drilled-down view")
        assert view.filter_text == f"target:{b1}:8080"
        await pilot.press("c")                       # the HTTP flows are closed by now
        await until(pilot, lambda: view.view.spec.show_closed, "closed shown")
        await fresh(pilot)
        assert {R.target_of(r) for r in view.view.rows} == {f"{b1}:8080"}
        assert len(view.view.rows) == answers.count("backend1") > 0
        await pilot.press("q", "k")


# --- connections -----------------------------------------------------------------------


class Echo:
    """A long-lived connection through VIP:7000."""

    def __init__(self, topo: T.Topology) -> None:
        with netns.inside(topo.clients[0].ns):
            self.sock = socket.create_connection((topo.vip, 7000), timeout=5)
        self.sock.sendall(b"hello\n")
        assert self.sock.recv(100).endswith(b"hello\n")

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]


async def test_delete_connection_removes_it_from_the_map(lab, started) -> None:
    inst, _path = started
    echo = Echo(lab)
    five = M.FiveTuple(lab.clients[0].ip, lab.vip, echo.port, 7000)
    try:
        assert M.lookup_connection(inst.maps.conntrack_map, five) is not None
        app = await app_for(inst)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("slash", *f"{lab.clients[0].ip}:{echo.port}", "enter")
            view = app.conns_view
            await until(pilot, lambda: view.view is not None and len(view.view.rows) == 1,
                        "the echo flow alone in the filtered table")
            assert R.five_tuple(view.table.selected) == five
            await pilot.press("d")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            await until(pilot, lambda: M.lookup_connection(inst.maps.conntrack_map, five)
                        is None, "the flow to leave the conntrack map")
            await until(pilot, lambda: view.view is not None and not view.view.rows,
                        "the deleted flow to leave the table")
            await pilot.press("q", "k")
    finally:
        echo.sock.close()


async def test_sort_and_filter_over_real_flows(lab, started) -> None:
    inst, _path = started
    answers = [http_get(lab, client=i % 2) for i in range(24)]
    flows = [c for c in M.list_connections(inst.maps.conntrack_map) if c.vip_port == 80]
    assert len(flows) == 24
    b2 = lab.backends[1].ip
    c1 = lab.clients[0].ip
    app = await app_for(inst)
    async with app.run_test(size=SIZE) as pilot:
        view = app.conns_view
        # HTTP/1.0: each flow closed (FIN both ways), so hidden until c shows them.
        await until(pilot, lambda: view.view is not None and view.view.total == 24,
                    "24 flows read")
        assert not view.view.rows and view.view.closed_hidden == 24
        await pilot.press("c")
        await until(pilot, lambda: view.view.spec.show_closed and len(view.view.rows) == 24,
                    "24 flows shown")
        # Sort by target (age -> state -> proto -> target), then reverse.
        await pilot.press("less_than_sign", "less_than_sign", "less_than_sign")
        await until(pilot, lambda: view.view.spec.sort == "target", "sorted by target")
        got = [R.target_of(r) for r in view.view.rows]
        key = [socket.inet_aton(t.split(":")[0]) for t in got]
        assert key == sorted(key) and len(set(got)) > 1
        await pilot.press("r")
        await until(pilot, lambda: view.view.spec.reverse, "reversed")
        key = [socket.inet_aton(R.target_of(r).split(":")[0]) for r in view.view.rows]
        assert key == sorted(key, reverse=True)
        # Filter on one backend's address: exactly its flows remain.
        await pilot.press("slash", *b2, "enter")
        await until(pilot, lambda: view.view.spec.filter == view.filter == C.parse(b2),
                    "filtered")
        await fresh(pilot)
        shown = {R.target_of(r) for r in view.view.rows}
        assert shown == {f"{b2}:8080"}
        assert len(view.view.rows) == sum(c.target_ip == b2 for c in flows) == answers.count(
            "backend2")
        title = str(view.query_one(".view-title").render())
        assert f"{len(view.view.rows)} shown / 24 total" in title
        # The field language: a negated target, one client's prefix.
        await filter_by(pilot, f"!target:{b2} client:{c1}", "escape")
        await until(pilot, lambda: view.view.spec.filter == view.filter and view.filter,
                    "the negated filter")
        want = {(c.client_ip, c.client_port) for c in flows
                if c.target_ip != b2 and c.client_ip == c1}
        assert want and {(t.src_ip, t.src_port) for t in map(R.five_tuple, view.view.rows)
                        } == want
        # Events from the ring buffer reached the events view, with their targets, and
        # the same language filters them.
        events = app.query_one(EventsView)
        opened = {e.target for e in events.events if e.kind == "opened" and e.vip_port == 80}
        assert opened == {c.target for c in flows}
        await filter_by(pilot, f"event:opened target:{b2} !udp", "4")
        await until(pilot, lambda: events.filter_text, "events filtered")
        shown = list(events.table.rows)
        assert {(e.kind, e.target_ip) for e in shown} == {("opened", b2)}
        assert len(shown) == sum(e.kind == "opened" and e.target_ip == b2
                                 for e in events.events)
        await pilot.press("q", "k")


# --- quitting --------------------------------------------------------------------------


def _xdp_prog_id(topo: T.Topology, ifname: str) -> int:
    with netns.inside(topo.lb_ns):
        return loader.xdp_state(socket.if_nametoindex(ifname))[1]


async def xdp_prog_id(topo: T.Topology, ifname: str) -> int:
    return await asyncio.to_thread(_xdp_prog_id, topo, ifname)   # pyroute2: not in a loop


async def test_quit_keep_leaves_the_instance_forwarding(lab, started) -> None:
    inst, _path = started
    prog = await xdp_prog_id(lab, "c1")
    assert prog
    app = await app_for(inst)
    async with app.run_test(size=SIZE) as pilot:
        await fresh(pilot)
        await pilot.press("q")
        assert isinstance(app.screen, QuitScreen)
        await pilot.press("k")
        await pilot.pause()
    assert app.stopped == "keep" and app.return_value == "keep"
    assert inst.emit_fd < 0           # this process let go of the instance
    assert await xdp_prog_id(lab, "c1") == prog
    # Still balancing, by XDP over the pinned maps: the new flow is in conntrack.
    assert http_get(lab).startswith("backend")
    ms = M.MapSet.open_pinned(pin_dir_of(inst.name))
    try:
        assert any(c.vip_port == 80 for c in M.list_connections(ms.conntrack_map))
        counters = M.read_counters(ms.counters_map)
        assert counters["flows_created"] >= 1
    finally:
        M.close_all_maps(ms)
    # An attached console works on the kept instance and quits without asking.
    attached = Instance.attach(inst.name)
    app2 = await app_for(attached)
    async with app2.run_test(size=SIZE) as pilot:
        await fresh(pilot)
        assert app2.snapshot is not None and app2.snapshot.conns.total >= 1
        await pilot.press("q")
        await pilot.pause()
    assert app2.stopped is None
    attached.close()
    assert await xdp_prog_id(lab, "c1") == prog


async def test_quit_stop_detaches(lab, started) -> None:
    inst, _path = started
    app = await app_for(inst)
    async with app.run_test(size=SIZE) as pilot:
        await fresh(pilot)
        await pilot.press("q", "s")
        await pilot.pause()
    assert app.stopped == "stop"
    assert await xdp_prog_id(lab, "c1") == 0
    assert not pin_dir_of(inst.name).exists()


# --- the command line ------------------------------------------------------------------

LBTUI = [sys.executable, "-m", "lbtui.cli"]


class PtyRun:
    """``lbtui ...`` in a pseudo-terminal (Textual needs one), output collected."""

    def __init__(self, *args: str, size: tuple[int, int] = (140, 40)) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
        self.proc = subprocess.Popen([*LBTUI, *args], stdin=slave, stdout=slave,
                                     stderr=slave, start_new_session=True,
                                     env=dict(os.environ, TERM="xterm-256color"))
        os.close(slave)
        self.master = master
        self.out = b""

    def read(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:
                    return
                if not data:
                    return
                self.out += data

    def wait_for(self, text: bytes, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while text not in self.out:
            assert self.proc.poll() is None, self.out[-2000:]
            assert time.monotonic() < end, f"{text!r} not shown: {self.out[-2000:]!r}"
            self.read(0.2)

    def send(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def finish(self, timeout: float = 30) -> int:
        end = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < end:
            self.read(0.2)
        self.read(0.3)
        if self.proc.poll() is None:
            self.proc.kill()
        rc = self.proc.wait(10)
        os.close(self.master)
        return rc


def test_cli_console_config_then_quit_keep(lab, state_dir, tmp_path) -> None:
    """`lbtui console --config` loads the datapath, shows it, and on q + k exits leaving
    XDP forwarding; `lbtui down` then removes it."""
    name = f"h3-{os.getpid() % 100000}-cli"
    path = tmp_path / "cli.toml"
    path.write_text(config_text(lab, name))
    run = PtyRun("console", "--config", str(path), "--refresh", "0.3")
    try:
        run.wait_for(b"Connections")
        run.wait_for(b"conntrack")
        assert _xdp_prog_id(lab, "c1") != 0
        run.send(b"q")
        run.wait_for(b"Keep running")
        run.send(b"k")
        assert run.finish() == 0, run.out[-2000:]
        assert b"keeps forwarding" in run.out
        assert _xdp_prog_id(lab, "c1") != 0
        assert http_get(lab).startswith("backend")
        down = subprocess.run([*LBTUI, "down", "--instance", name], capture_output=True,
                              text=True, timeout=60)
        assert down.returncode == 0, down.stderr
        assert _xdp_prog_id(lab, "c1") == 0
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
        teardown(name)


def test_cli_refuses_bad_input_and_starts_nothing(lab, state_dir, tmp_path) -> None:
    name = f"h3-{os.getpid() % 100000}-bad"
    path = tmp_path / "bad.toml"
    path.write_text(config_text(lab, name).replace("weight = 20", "weight = 25"))
    r = subprocess.run([*LBTUI, "console", "--config", str(path)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "sum" in r.stderr, r.stderr
    assert not pin_dir_of(name).exists()
    r = subprocess.run([*LBTUI, "console"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--config" in r.stderr
    r = subprocess.run([*LBTUI, "console", "--attach", f"{name}-none"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and "is not running" in r.stderr
