"""Path MTU discovery through the load balancer, end to end, on a network lbtui did not
build (the ``routed`` shape: backends one router away), in every XDP mode.

A narrow link on either side of the LB must not black-hole a balanced connection:

- upload: the router's link to backend1 is narrower (1280) than the backend's own (1500),
  so the client's full-sized segments (it learnt MSS 1460 from the backend) need
  "fragmentation needed" from the router. That ICMP is about client -> backend1:8091; the
  client only knows client -> VIP:80, so the LB must translate it on the way back.
- download: the LB's own link to client2 is narrower (1280) than the client's (1500), so
  the backend's full-sized replies need "fragmentation needed" from the LB's kernel, sent
  to the backend about backend -> client (not about VIP -> client: the VIP is the LB's
  own address, and an error sent there is lost).

Both are real TCP transfers between real sockets; without PMTU discovery they stall (Linux
does no MTU probing by default) and the test fails on its timeout with the counters.
Known limit, kept as a strict xfail: the download under generic XDP (see the test).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from lbtui import netns
from lbtui.lab import topology as T

from . import shapes as S
from .serving import Served, serving, write_config

pytestmark = [pytest.mark.datapath, pytest.mark.netns]

TAG = f"p{os.getpid() % 100000}"
NARROW = 1280
SINK_PORT = 8091
UPLOAD = 400_000
DOWNLOAD = 400_000
TRANSFER_TIMEOUT = 15.0
# A stall the test expects (the generic cell's xfail) shows within this: without the LB's
# "fragmentation needed" the backend's full-size segments never get through, however long
# it retransmits them.
EXPECTED_STALL_TIMEOUT = 3.0

# Reads until the peer's FIN and answers with the number of bytes read: an upload whose
# answer is tiny, so nothing crosses the narrow link towards the client side.
SINK = f"""
import socket
s = socket.create_server(("0.0.0.0", {SINK_PORT}), backlog=16)
while True:
    c, _ = s.accept()
    with c:
        n = 0
        while chunk := c.recv(65536):
            n += len(chunk)
        c.sendall(str(n).encode())
"""


def router_ns(shape: S.Shape) -> str:
    return f"{T.NS_PREFIX}{shape.lab}-router"


def _ip(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True,
                          text=True, timeout=10).stdout


@pytest.fixture(scope="module")
def shape() -> Iterator[S.Shape]:
    with S.built("routed", TAG) as built:
        topo = built.topo
        backend1, client2 = topo.backends[0], topo.clients[1]
        # The router's end of backend1's link and the LB's end of client2's link are
        # narrower than the far ends: only a router in the path knows. Client1 uploads,
        # client2 downloads: each learns its own path's MTU, and nothing learnt in one test
        # narrows the other's segments from the start.
        _ip(router_ns(built), "link", "set", "dev", "b1", "mtu", str(NARROW))
        _ip(topo.lb_ns, "link", "set", "dev", client2.lb_ifname, "mtu", str(NARROW))
        T.start_backend_servers(topo)
        sink = subprocess.Popen(["ip", "netns", "exec", backend1.ns, sys.executable, "-c",
                                 SINK], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait_listening(backend1.ns, SINK_PORT)
            yield built
        finally:
            sink.kill()
            sink.wait(10)


def _wait_listening(ns: str, port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while f":{port} " not in subprocess.run(
            ["ip", "netns", "exec", ns, "ss", "-Hltn"], capture_output=True, text=True,
            timeout=10).stdout:
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on {port} in {ns}")
        time.sleep(0.1)


def _config(shape: S.Shape) -> str:
    b1 = shape.topo.backends[0].ip
    return f"""\
[[listener]]
port = 80
protocol = "tcp"
targets = [{{ ip = "{b1}", port = {T.HTTP_PORT} }}]

[[listener]]
port = {SINK_PORT}
protocol = "tcp"
targets = [{{ ip = "{b1}", port = {SINK_PORT} }}]
"""


@pytest.fixture(scope="module", params=S.SHAPES["routed"].modes)
def served(request: pytest.FixtureRequest, shape: S.Shape,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    mode = request.param
    topo = shape.topo
    for ns in [e.ns for e in topo.clients + topo.backends] + [topo.lb_ns, router_ns(shape)]:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "route", "flush", "cache"],
                       check=True, capture_output=True, timeout=10)  # nothing learnt before
    instance = f"{TAG}-pmtu-{mode}"
    config = write_config(shape, tmp_path_factory.mktemp("pmtu"), instance, mode,
                          _config(shape))
    with serving(config, instance) as s:
        yield s


def _diagnosis(served: Served) -> str:
    st = served.status()
    counters = {k: v for k, v in st["counters"].items() if v}
    return f"counters {counters}; XDP {served.xdp_modes()}"


def _route_mtu(ns: str, dst: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "ip", "route", "get", dst],
                          capture_output=True, text=True, timeout=10).stdout


def test_upload_learns_the_path_mtu_from_a_router_behind_the_lb(shape: S.Shape,
                                                                served: Served) -> None:
    client = shape.topo.clients[0]
    with netns.inside(client.ns), socket.create_connection(
            (shape.topo.vip, SINK_PORT), timeout=TRANSFER_TIMEOUT) as s:
        s.settimeout(TRANSFER_TIMEOUT)
        try:
            s.sendall(b"u" * UPLOAD)
            s.shutdown(socket.SHUT_WR)
            answer = s.recv(64)
        except TimeoutError:
            pytest.fail(f"upload stalled: the router's 'fragmentation needed' never reached "
                        f"the client as about the VIP; {_diagnosis(served)}")
    assert answer == str(UPLOAD).encode()
    # The client learnt the narrow link's MTU for the VIP (not for the backend it never
    # heard of).
    assert f"mtu {NARROW}" in _route_mtu(client.ns, shape.topo.vip), _diagnosis(served)


def test_download_learns_the_path_mtu_from_the_lb_itself(
        shape: S.Shape, served: Served, request: pytest.FixtureRequest) -> None:
    if request.node.callspec.params["served"] == "generic":
        # Generic XDP hands a reply with a partial checksum to the stack translated (the
        # device would finish the field twice otherwise); the stack's "fragmentation
        # needed" then quotes VIP -> client and goes to the VIP, a local address: lost.
        request.applymarker(pytest.mark.xfail(
            strict=True, reason="generic XDP: translated replies the stack must fragment"))
        timeout = EXPECTED_STALL_TIMEOUT
    else:
        timeout = TRANSFER_TIMEOUT
    client, backend = shape.topo.clients[1], shape.topo.backends[0]
    with netns.inside(client.ns), socket.create_connection(
            (shape.topo.vip, 80), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(f"GET /bytes/{DOWNLOAD} HTTP/1.0\r\n\r\n".encode())
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except TimeoutError:
            pytest.fail(f"download stalled after {len(data)} bytes: the LB's 'fragmentation "
                        f"needed' never reached the backend about its own flow; "
                        f"{_diagnosis(served)}")
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"X-Backend: backend1" in head and len(body) == DOWNLOAD
    assert f"mtu {NARROW}" in _route_mtu(backend.ns, client.ip), _diagnosis(served)
