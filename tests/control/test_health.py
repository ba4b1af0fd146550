"""One event stream for every viewer, per-(group, target) health from the traffic, and
active checks that take a refusing backend out of rotation and put it back: a real
``serve`` on a namespace lab, real HTTP, a backend made to refuse with nftables."""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hubviewer import HubViewer

from lbtui.lab import topology as T

from .conftest import LBTUI, ctl_json, ctl_ok, http_get, instance_name, lab_config, spread

pytestmark = [pytest.mark.datapath, pytest.mark.netns]

OUTAGE = "lbtui_test_outage"


def refuse(topo: T.Topology, node: str, port: int) -> None:
    """Make ``node`` answer SYNs to ``port`` with a reset, as when its server stopped."""
    topo.run(node, ["nft", f"add table ip {OUTAGE} {{ chain input {{ type filter hook input "
                           f"priority 0; tcp dport {port} reject with tcp reset; }}; }}"])


def mend(topo: T.Topology, node: str) -> None:
    topo.run(node, ["nft", "delete", "table", "ip", OUTAGE])


def try_get(topo: T.Topology, port: int = 80) -> str:
    try:
        return http_get(topo, port)
    except ConnectionRefusedError:
        return "refused"


def config(topo: T.Topology, name: str, health: str, extra: str = "") -> str:
    return lab_config(topo, name, http_weights=(50, 50), extra=extra) + f"\n[health]\n{health}"


def serving(make_lab, start_serve, tmp_path: Path, health: str,
            extra: Callable[[T.Topology], str] = lambda _t: ""
            ) -> tuple[T.Topology, str, Path, Any, HubViewer]:
    """A two-backend lab served by a real serve with ``[health]`` settings (``{b1}`` and
    ``{b2}``: the backends' HTTP targets) and ``extra`` config, and a viewer."""
    topo = make_lab(1, 2)
    name = instance_name()
    b1, b2 = (f"{e.ip}:{T.HTTP_PORT}" for e in topo.backends)
    path = tmp_path / "lbtui.toml"
    path.write_text(config(topo, name, health.format(b1=b1, b2=b2), extra(topo)))
    serve = start_serve(path)
    return topo, name, path, serve, HubViewer(name)


def listen_weights(name: str, port: int = 80) -> dict[str, int]:
    """What the datapath balances over for a listener (its map entry, not the file)."""
    entries = ctl_json(name, "listeners")
    entry = next(e for e in entries if e["port"] == port)
    return {f"{t['ip']}:{t['port']}": t["weight"] for t in entry["targets"]}


def test_every_viewer_sees_every_event_and_targets_are_counted_per_group(
        make_lab, state_dir, start_serve, tmp_path: Path) -> None:
    def extra(topo: T.Topology) -> str:
        b = [e.ip for e in topo.backends]
        return f"""
[[listener]]
port = 82
protocol = "tcp"
targets = [{{ ip = "{b[0]}", port = {T.HTTP_PORT}, weight = 50 }},
           {{ ip = "{b[1]}", port = {T.HTTP_PORT}, weight = 50 }}]
"""
    topo, name, _, serve, first = serving(make_lab, start_serve, tmp_path, "window = 30\n",
                                          extra)
    second = HubViewer(name)
    follower = subprocess.Popen([*LBTUI, "ctl", "-i", name, "events", "--follow", "--json"],
                                stdout=subprocess.PIPE, text=True)
    try:
        answers = [http_get(topo, 80) for _ in range(20)] + [http_get(topo, 82)
                                                              for _ in range(10)]
        assert Counter(answers).keys() == {"backend1", "backend2"}

        def key(e: dict) -> tuple:
            return (e["kind"], e["client_port"], e["vip_port"], e["target_ip"])

        want = 60                               # opened + closed per connection
        first.wait_for(lambda: len(first.events()) >= want, "60 events")
        second.wait_for(lambda: len(second.events()) >= want, "60 events")
        got: list[dict] = []
        assert follower.stdout is not None
        while len([m for m in got if m["type"] == "event"]) < want:
            got.append(json.loads(follower.stdout.readline()))
        by_ctl = {key(m) for m in got if m["type"] == "event"}
        by_first = {key(e.to_dict()) for e in first.events()}
        assert by_first == {key(e.to_dict()) for e in second.events()} == by_ctl
        assert len(by_first) == want

        # Shared targets, counted under the group that chose them.
        health = ctl_json(name, "health")["targets"]
        opened = Counter()
        for t in health:
            opened[t["group"]] += t["opened"]
        assert opened == {"listener :80": 20, "listener :82": 10}
        text = ctl_ok(name, "health")
        assert "listener :82" in text and "healthy" in text
        assert ctl_json(name, "status")["events_lost"] == 0
    finally:
        follower.kill()
        follower.wait()
        first.close()
        second.close()
        serve.stop()


def test_traffic_health_turns_failing_when_a_backend_refuses(
        make_lab, state_dir, start_serve, tmp_path: Path) -> None:
    topo, name, _, serve, viewer = serving(make_lab, start_serve, tmp_path,
                                           "window = 10\nmin_samples = 3\n")
    b2 = f"{topo.backends[1].ip}:{T.HTTP_PORT}"
    try:
        refuse(topo, "backend2", T.HTTP_PORT)
        answers = Counter(try_get(topo) for _ in range(30))
        assert answers["refused"] >= 5 and answers["backend1"] >= 5, answers

        def failing() -> bool:
            return any(m["target"] == b2 and m["to"] == "failing"
                       for m in viewer.of_type("transition"))
        viewer.wait_for(failing, "backend2 failing")
        b1 = f"{topo.backends[0].ip}:{T.HTTP_PORT}"
        seen: dict[str, dict] = {}

        def all_counted() -> bool:
            # The transition comes with the min_samples-th refusal; later outcomes reach
            # the instance's counts a poll of the event stream later.
            seen.update({t["target"]: t for t in ctl_json(name, "health")["targets"]})
            return (seen[b2]["resets"], seen[b1]["closed"]) == (answers["refused"],
                                                               answers["backend1"])
        try:
            viewer.wait_for(all_counted, "every outcome counted")
        except AssertionError:
            raise AssertionError(f"counts never matched {answers}: {seen}") from None
        assert seen[b2]["state"] == "failing"
        assert seen[b1]["state"] == "healthy" and seen[b1]["resets"] == 0
        serve.wait_for(f"target {b2} of listener :80: healthy -> failing")
    finally:
        mend_quietly(topo)
        viewer.close()
        serve.stop()


def test_active_checks_take_a_refusing_backend_out_of_rotation_and_back(
        make_lab, state_dir, start_serve, tmp_path: Path) -> None:
    topo, name, path, serve, viewer = serving(
        make_lab, start_serve, tmp_path, "check_interval = 0.2\ncheck_timeout = 0.5\n"
        'fall = 2\nrise = 2\ncheck_targets = ["{b2}"]\n')
    b1, b2 = (f"{e.ip}:{T.HTTP_PORT}" for e in topo.backends)
    try:
        assert listen_weights(name) == {b1: 50, b2: 50}
        refuse(topo, "backend2", T.HTTP_PORT)
        t0 = time.monotonic()

        def moved(to: str) -> bool:
            return any(m.get("source") == "check" and m["target"] == b2 and m["to"] == to
                       for m in viewer.of_type("transition"))
        viewer.wait_for(lambda: moved("down"), "backend2 out of rotation", timeout=5)
        took = time.monotonic() - t0
        assert took < 2.0, f"out of rotation after {took:.1f}s (2 checks 0.2s apart)"
        assert listen_weights(name) == {b1: 50, b2: 0}
        assert set(spread(topo, 20)) == {"backend1"}         # nothing refused any more
        assert 'weight = 50' in path.read_text()             # the file keeps what we wrote
        serve.wait_for(f"target {b2} taken out of rotation")

        # An edit by another process while it is out keeps it out.
        ctl_ok(name, "weight", "listener", "80", b1, "60")
        assert listen_weights(name) == {b1: 60, b2: 0}
        assert "OUT of rotation" in ctl_ok(name, "health")

        mend(topo, "backend2")
        viewer.wait_for(lambda: moved("up"), "backend2 back in rotation", timeout=5)
        assert listen_weights(name) == {b1: 60, b2: 40}
        assert set(spread(topo, 30)) == {"backend1", "backend2"}
        serve.wait_for(f"target {b2} back in rotation")
        serve.wait_for(f"config change by ctl (root): listener :80: {b1} w50, {b2} w50 -> "
                       f"{b1} w60, {b2} w40")
    finally:
        mend_quietly(topo)
        viewer.close()
        serve.stop()


def mend_quietly(topo: T.Topology) -> None:
    try:
        mend(topo, "backend2")
    except subprocess.CalledProcessError:
        pass
