"""Live helpers for console tests: HTTP through a lab's VIP, ``ctl`` runs, consoles
attached to a running instance and a ``ctl events --follow`` reader."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from typing import Any

from consolepilot import until
from textual.pilot import Pilot

from lbtui import netns
from lbtui.console.app import ConsoleApp
from lbtui.console.session import build_app
from lbtui.control.instance import Instance
from lbtui.lab import topology as T

LBTUI = [sys.executable, "-m", "lbtui.cli"]


def http_get(topo: T.Topology, client: int = 0, port: int = 80) -> str:
    """One HTTP request through the VIP from a client namespace: the backend's name."""
    with netns.inside(topo.clients[client].ns), socket.create_connection(
            (topo.vip, port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data.split(b"\r\n\r\n", 1)[1].decode().strip()


def try_get(topo: T.Topology, port: int = 80) -> str:
    """The backend's name, or "refused" when the chosen backend refused."""
    try:
        return http_get(topo, port=port)
    except ConnectionRefusedError:
        return "refused"


def ctl(name: str, *args: str) -> str:
    r = subprocess.run([*LBTUI, "ctl", "--instance", name, *args], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


@contextlib.asynccontextmanager
async def console_on(name: str, size: tuple[int, int], refresh: float = 0.2
                     ) -> AsyncIterator[tuple[ConsoleApp, Pilot[str | None]]]:
    """A console attached to a running instance, as `lbtui console --attach` opens it,
    driven by Pilot from its first snapshot on the instance's event hub; the instance is
    let go (kept running) afterwards."""
    # build_app reads XDP state with pyroute2's sync API, which refuses to run inside an
    # event loop: attach and build on a thread, as the CLI does before its loop starts.
    inst = await asyncio.to_thread(Instance.attach, name)
    try:
        app = await asyncio.to_thread(build_app, inst, refresh_interval=refresh)
        async with app.run_test(size=size) as pilot:
            await until(pilot, lambda: app.snapshot is not None and app.snapshot.hub.connected,
                        "the console on the event hub")
            yield app, pilot
    finally:
        await asyncio.to_thread(inst.stop, True)


class EventsFollower:
    """``lbtui ctl events --follow --json``, its messages collected by a thread."""

    def __init__(self, name: str) -> None:
        self.messages: list[dict[str, Any]] = []
        self.proc = subprocess.Popen([*LBTUI, "ctl", "-i", name, "events", "--follow",
                                      "--json"], stdout=subprocess.PIPE, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.messages.append(json.loads(line))

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in list(self.messages) if m.get("type") == kind]

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._thread.join(2)
