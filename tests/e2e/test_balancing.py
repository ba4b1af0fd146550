"""End to end: real clients and servers in namespaces, the real XDP program in between.

Topology (lbtui.lab.topology): 2 client namespaces -> LB namespace (XDP on every link)
-> 3 backend namespaces whose HTTP/echo/UDP servers answer with their name.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections import Counter

import pytest

from lbtui import abi, netns
from lbtui import maps as M
from lbtui.datapath.loader import Datapath
from lbtui.lab import topology as T
from lbtui.maps.events import EventReader, LbEvent
from lbtui.targets import TargetGroup

HTTP, ECHO, UDP = T.HTTP_PORT, T.ECHO_PORT, T.UDP_PORT
VIP_PORT, VIP_ECHO, VIP_UDP = 80, 7000, 53


def http_get(vip: str, port: int = VIP_PORT) -> str:
    with socket.create_connection((vip, port), timeout=5) as s:
        assert s.getpeername() == (vip, port)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data.split(b"\r\n\r\n", 1)[1].decode().strip()


def within_bounds(counts: Counter, weights: dict[str, int], n: int, sigmas: float = 5) -> None:
    for name, w in weights.items():
        p = w / 100
        expected = n * p
        sd = math.sqrt(n * p * (1 - p)) or 1
        assert abs(counts[name] - expected) <= sigmas * sd, (name, counts, weights)


def group(topo: T.Topology, weights: list[int], port: int = HTTP) -> TargetGroup:
    return TargetGroup.of([(b.ip, port, w) for b, w in zip(topo.backends, weights, strict=True)])


def listen_everywhere(ms: M.MapSet, topo: T.Topology, port: int, g: TargetGroup,
                      flags: int = 0) -> None:
    for c in topo.clients:
        M.add_listen_port_weighted(ms.listen_map, topo.lb_ifindex(c.lb_ifname), port, g, flags)


@pytest.fixture
def lab(make_lab, datapath: Datapath):
    topo = make_lab(2, 3)
    T.attach_datapath(topo, datapath)
    return topo


def test_tcp_connections_split_by_weight_and_replies_come_from_vip(lab, datapath) -> None:
    ms = datapath.maps
    listen_everywhere(ms, lab, VIP_PORT, group(lab, [50, 30, 20]))
    counts: Counter[str] = Counter()
    for c in lab.clients:
        with netns.inside(c.ns):
            for _ in range(400):
                counts[http_get(lab.vip)] += 1
    assert sum(counts.values()) == 800
    within_bounds(counts, {"backend1": 50, "backend2": 30, "backend3": 20}, 800)
    c = M.read_counters(ms.counters_map)
    assert c["flows_created"] == 800
    assert c["flows_closed"] == 800          # FIN from both sides seen for every flow


def test_udp_datagrams_balanced_and_answered_from_vip(lab, datapath) -> None:
    ms = datapath.maps
    listen_everywhere(ms, lab, VIP_UDP, group(lab, [0, 50, 50], UDP))
    counts: Counter[str] = Counter()
    with netns.inside(lab.clients[0].ns):
        for _ in range(300):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(3)
                s.sendto(b"ping", (lab.vip, VIP_UDP))
                data, src = s.recvfrom(100)
                assert src == (lab.vip, VIP_UDP)   # the reply was rewritten back to the VIP
                counts[data.decode()] += 1
    assert counts["backend1"] == 0                 # weight 0 gets nothing
    within_bounds(counts, {"backend2": 50, "backend3": 50}, 300)


def test_source_route_sends_one_client_subnet_to_another_group(lab, datapath) -> None:
    ms = datapath.maps
    listen_everywhere(ms, lab, VIP_PORT, group(lab, [100, 0, 0]))
    M.add_source_route_weighted(ms.config_map, lab.clients[1].subnet, group(lab, [0, 0, 100]))
    with netns.inside(lab.clients[0].ns):
        first = Counter(http_get(lab.vip) for _ in range(50))
    with netns.inside(lab.clients[1].ns):
        second = Counter(http_get(lab.vip) for _ in range(50))
    assert first == Counter({"backend1": 50})
    assert second == Counter({"backend3": 50})


def test_long_lived_connections_survive_weight_edit_new_ones_follow(lab, datapath) -> None:
    ms = datapath.maps
    listen_everywhere(ms, lab, VIP_ECHO, group(lab, [100, 0, 0], ECHO))
    with netns.inside(lab.clients[0].ns):
        held = [socket.create_connection((lab.vip, VIP_ECHO), timeout=5) for _ in range(20)]
    try:
        for s in held:
            s.sendall(b"hello\n")
            assert s.recv(100) == b"backend1 hello\n"
        listen_everywhere(ms, lab, VIP_ECHO, group(lab, [0, 100, 0], ECHO))
        with netns.inside(lab.clients[0].ns):
            fresh = socket.create_connection((lab.vip, VIP_ECHO), timeout=5)
        with fresh:
            fresh.sendall(b"new\n")
            assert fresh.recv(100) == b"backend2 new\n"
        for s in held:  # established flows keep their target after the edit
            s.sendall(b"again\n")
            assert s.recv(100) == b"backend1 again\n"
    finally:
        for s in held:
            s.close()


def test_removing_the_listener_stops_balancing(lab, datapath) -> None:
    ms = datapath.maps
    listen_everywhere(ms, lab, VIP_PORT, group(lab, [34, 33, 33]))
    with netns.inside(lab.clients[0].ns):
        assert http_get(lab.vip).startswith("backend")
        for c in lab.clients:
            assert M.remove_listen_port(ms.listen_map, lab.lb_ifindex(c.lb_ifname), VIP_PORT)
        # The packet now reaches the LB's own stack, which has nothing on port 80.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((lab.vip, VIP_PORT), timeout=5)


def test_open_and_close_events_name_the_chosen_target(lab, datapath) -> None:
    ms = datapath.maps
    listen_everywhere(ms, lab, VIP_PORT, group(lab, [0, 0, 100]), flags=abi.ROUTE_F_STATS)
    events: list[LbEvent] = []
    reader = EventReader(ms.stats_ringbuf, events.append)
    stop = threading.Event()

    def pump() -> None:
        while not stop.is_set():
            reader.poll(50)

    t = threading.Thread(target=pump)
    t.start()
    try:
        with netns.inside(lab.clients[0].ns):
            assert http_get(lab.vip) == "backend3"
        deadline = time.monotonic() + 5
        while len(events) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        t.join()
        reader.close()
    opened = [e for e in events if e.kind == "opened"]
    closed = [e for e in events if e.kind == "closed"]
    assert len(opened) == 1 and len(closed) == 1, events
    backend3 = lab.backends[2].ip
    assert opened[0].target == closed[0].target == f"{backend3}:{HTTP}"
    assert opened[0].client_ip == lab.clients[0].ip
    assert (opened[0].vip_ip, opened[0].vip_port) == (lab.vip, VIP_PORT)
    assert closed[0].reason == "fin"
    assert closed[0].packets_fwd >= 4 and closed[0].packets_rev >= 3
    assert closed[0].bytes_rev > closed[0].bytes_fwd   # the response is the bigger side
