"""Live helpers for console tests: HTTP through a lab's VIP, a real ``lbtui serve`` in a
subprocess, consoles attached to it and a ``ctl events --follow`` reader."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lbtui import netns
from lbtui.console.app import ConsoleApp
from lbtui.console.session import build_app
from lbtui.control.eventhub import socket_path
from lbtui.control.instance import Instance, teardown
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


@contextlib.contextmanager
def serving(config: Path, name: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``lbtui serve`` of ``config`` (output in ``log``), ready once its event hub
    answers; stopped and its instance torn down afterwards, also on failure."""
    with log.open("wb") as out:
        proc = subprocess.Popen([*LBTUI, "serve", "--config", str(config)], stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not _answers(socket_path(name)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"serve not ready (rc {proc.poll()}):\n"
                                     f"{log.read_text()}")
            time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        teardown(name)


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


async def attached_console(name: str, refresh: float = 0.2) -> tuple[ConsoleApp, Instance]:
    """A console attached to a running instance, as `lbtui console --attach` opens it
    (built on a thread: pyroute2's sync API refuses to run inside an event loop)."""
    inst = await asyncio.to_thread(Instance.attach, name)
    return await asyncio.to_thread(build_app, inst, refresh_interval=refresh), inst


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
