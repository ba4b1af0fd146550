"""One HTTP request through a lab's VIP, for tests (a plain module: several test
directories have a conftest of their own)."""

from __future__ import annotations

import socket

from lbtui import netns
from lbtui.lab import topology as T


def http_get(topo: T.Topology, port: int = 80, client: int = 0) -> str:
    """GET / from client ``client``'s namespace to VIP:``port``: the answering backend's
    body (its name)."""
    with netns.inside(topo.clients[client].ns), socket.create_connection(
            (topo.vip, port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data.split(b"\r\n\r\n", 1)[1].decode().strip()
