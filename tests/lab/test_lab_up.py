"""`lbtui lab up | status | exec | down` on a real lab: the datapath carries the generated
traffic (conntrack, event stream, answers per backend), a drain through `lbtui ctl` shifts
new connections away, and `lab down` leaves nothing behind."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from hubviewer import HubViewer
from labcheck import lab_name, lab_resources, lbtui, root_links, status, wait_for, wait_gone

from lbtui import abi
from lbtui import maps as M
from lbtui.control.config import load_config
from lbtui.control.instance import Instance
from lbtui.lab import demo_config as D
from lbtui.lab.lifecycle import sni_available
from lbtui.lab.traffic import read_traffic

pytestmark = [pytest.mark.datapath, pytest.mark.netns]

BACKEND_IPS = {f"198.18.{100 + j}.2" for j in range(1, 5)}


@pytest.fixture(scope="module")
def lab() -> Iterator[str]:
    name = lab_name("u")
    links_before = root_links()
    try:
        p = lbtui("lab", "up", "--lab", name, "--http-rate", "40", "--udp-rate", "20",
                  "--traffic-duration", "120", timeout=240)
        assert "✓ loading the datapath" in p.stdout
        assert f"lab {name} is up" in p.stdout
        yield name
    finally:
        lbtui("lab", "down", "--lab", name, check=False)
    assert root_links() == links_before, "the root namespace's links changed"


def _traffic(name: str) -> dict:
    from lbtui.lab import topology as T

    return read_traffic(T.STATE_DIR / name)


def test_status_shows_namespaces_processes_xdp_and_traffic(lab: str) -> None:
    sni = sni_available()
    def flowing() -> bool:
        t = _traffic(lab)
        return set(t) == {"client1", "client2"} and all(
            c["kinds"]["http"]["ok"] > 20 for c in t.values()) and (
            not sni or t["client1"]["kinds"]["tls"]["ok"] > 0)
    wait_for(flowing, 30, "HTTP answers from both clients (and TLS from client1)")
    st = status(lab)
    assert st["exists"] and st["ready"] and st["owner"]["alive"]
    assert len(st["namespaces"]) == 7 and all(n["present"] for n in st["namespaces"])
    roles = sorted((p["role"], p["node"]) for p in st["processes"] if p["alive"])
    assert roles == [("servers", f"backend{j}") for j in range(1, 5)] + [
        ("traffic", "client1"), ("traffic", "client2")]
    prog = st["datapath"]["prog_id"]
    assert prog and [(x["ifname"], x["mode"], x["prog_id"]) for x in st["xdp"]] == [
        (i, "native", prog) for i in ("c1", "c2", "b1", "b2", "b3", "b4")]
    assert st["datapath"]["maps"]["source_routes"]["entries"] == 1
    assert st["datapath"]["maps"]["sni_routes"]["entries"] == 2
    c1 = st["traffic"]["client1"]["kinds"]
    assert c1["http"]["rate"] > 10 and c1["udp"]["ok"] > 0 and c1["echo"]["ok"] > 0
    assert c1["http"]["errors"] == 0, c1["http"]["last_error"]
    if sni:
        assert c1["tls"]["errors"] == 0, c1["tls"]["last_error"]
    # The source route pins client2 to backend3/backend4.
    assert set(st["traffic"]["client2"]["kinds"]["http"]["by_backend"]) <= {
        "backend3", "backend4"}
    text = lbtui("lab", "status", "--lab", lab).stdout
    assert "namespaces  7/7 present" in text and "traffic     client1" in text


def test_traffic_is_in_conntrack_and_the_event_stream(lab: str) -> None:
    inst = Instance.attach(D.instance_name(lab))
    viewer = HubViewer(inst.name)      # the lab's manager reads the ring buffer
    try:
        conns = M.list_connections(inst.maps.conntrack_map)
        by_port = {c.vip_port for c in conns if c.vip_ip == "198.18.0.10"}
        assert {80, 7000, 9000} <= by_port, by_port
        assert {c.target_ip for c in conns} <= BACKEND_IPS
        assert any(c.proto == abi.IPPROTO_UDP and c.vip_port == 9000 for c in conns)
        # Spliced TLS flows (short-lived here) show in the same event stream.
        sni = sni_available()

        def complete() -> bool:
            events = viewer.events()
            return {e.kind for e in events} >= {"opened", "closed"} and (
                not sni or any(e.vip_port == 443 for e in events))
        viewer.wait_for(complete, "opened and closed events")
        events = viewer.events()
        opened = [e for e in events if e.kind == "opened"]
        closed = [e for e in events if e.kind == "closed"]
        assert opened and closed
        assert {e.vip_port for e in opened} & {80, 9000}
        assert all(e.target_ip in BACKEND_IPS for e in opened)
        assert any(e.reason == "fin" and e.packets_fwd > 0 for e in closed)
        if sni:
            assert any(e.vip_port == 443 and e.target_port == D.TLS_BACKEND_PORT
                       for e in opened)
    finally:
        viewer.close()
        inst.close()


def test_drain_through_ctl_shifts_new_connections(lab: str) -> None:
    drained = "198.18.101.2"
    lbtui("ctl", "--instance", D.instance_name(lab), "weight", "listener", "80",
          f"{drained}:8080", "0")
    time.sleep(1.5)   # requests already in flight may still finish on backend1
    before = _traffic(lab)["client1"]["kinds"]["http"]["by_backend"]
    time.sleep(3)
    after = _traffic(lab)["client1"]["kinds"]["http"]["by_backend"]
    assert after.get("backend1", 0) == before.get("backend1", 0), (before, after)
    assert sum(after.values()) - sum(before.values()) > 30
    # The edit persisted in the lab's config file (what the console edits too).
    cfg = load_config(status(lab)["config_path"])
    weights = {t.ip: t.weight for t in cfg.listener(80).group.targets}
    assert weights[drained] == 0 and sum(weights.values()) == 100


def test_exec_runs_in_a_node_namespace(lab: str) -> None:
    p = lbtui("lab", "exec", "--lab", lab, "client2", "--", "curl", "-s", "--max-time", "5",
              "http://198.18.0.10/")
    assert p.stdout.strip() in {"backend3", "backend4"}     # client2 is source-routed
    p = lbtui("lab", "exec", "--lab", lab, "backend2", "--", "ip", "-4", "-o", "addr", "show",
              "eth0")
    assert "198.18.102.2/24" in p.stdout
    p = lbtui("lab", "exec", "--lab", lab, "nosuchnode", "--", "true", check=False)
    assert p.returncode == 2 and "nodes: lb, client1" in p.stderr
    p = lbtui("lab", "exec", "--lab", lab, "lb", check=False)
    assert p.returncode == 2 and "no command" in p.stderr


def test_up_twice_is_refused(lab: str) -> None:
    p = lbtui("lab", "up", "--lab", lab, check=False)
    assert p.returncode == 1 and "already up" in p.stderr


def test_down_leaves_nothing_and_is_idempotent(lab: str) -> None:
    progs, pids = lab_resources(status(lab))
    assert progs and len(pids) >= 7
    p = lbtui("lab", "down", "--lab", lab)
    assert f"lab {lab} removed" in p.stdout
    wait_gone(lab, progs, pids, timeout=20)
    p = lbtui("lab", "down", "--lab", lab)
    assert "nothing to remove" in p.stdout
    p = lbtui("lab", "status", "--lab", lab, check=False)
    assert p.returncode == 3 and "not up" in p.stdout      # 3: not running
