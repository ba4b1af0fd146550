"""Helpers for control-plane tests: configs for a lab, traffic, a real ``serve`` process,
``ctl`` runs and map dumps."""

from __future__ import annotations

import contextlib
import ctypes as ct
import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from viphttp import http_get

from lbtui import abi, bpfsys, netns
from lbtui import maps as M
from lbtui.control.instance import pin_dir_of, teardown
from lbtui.lab import topology as T

ROOT = Path(__file__).resolve().parents[2]
LBTUI = [sys.executable, "-m", "lbtui.cli"]
_names = 0


def instance_name() -> str:
    global _names
    _names += 1
    return f"h2-{os.getpid() % 100000}-{_names}"


def lab_config(topo: T.Topology, name: str, *, http_weights: tuple[int, ...] = (50, 50, 0),
               extra: str = "", settings: str = "sweep_interval = 0.5\n") -> str:
    """A config for ``topo``: XDP on every LB link, HTTP on VIP:80, echo on VIP:7000."""
    b = topo.backends
    http = "".join(f'  {{ ip = "{e.ip}", port = {T.HTTP_PORT}, weight = {w} }},  # {e.node}\n'
                   for e, w in zip(b, http_weights, strict=False))
    return f"""\
# control-plane test config ({name})
[datapath]
instance = "{name}"
netns = "{topo.lb_ns}"
interfaces = {[c.lb_ifname for c in topo.clients]!r}   # client side
reply_interfaces = {[e.lb_ifname for e in b]!r}

[settings]
{settings}
# web
[[listener]]
port = 80
protocol = "tcp"
targets = [
{http}]

# line echo, for long-lived connections
[[listener]]
port = 7000
protocol = "tcp"
targets = [{{ ip = "{b[0].ip}", port = {T.ECHO_PORT} }}]
{extra}""".replace("'", '"')


def spread(topo: T.Topology, n: int = 30, port: int = 80, client: int = 0) -> Counter[str]:
    return Counter(http_get(topo, port, client) for _ in range(n))


class EchoClient:
    """A long-lived TCP connection from a client namespace to VIP:7000."""

    def __init__(self, topo: T.Topology, client: int = 0) -> None:
        with netns.inside(topo.clients[client].ns):
            self.sock = socket.create_connection((topo.vip, 7000), timeout=5)
        self.file = self.sock.makefile("rb")
        self.n = 0

    def roundtrip(self) -> str:
        self.n += 1
        self.sock.sendall(f"ping {self.n}\n".encode())
        line = self.file.readline().decode().strip()
        name, _, rest = line.partition(" ")
        assert rest == f"ping {self.n}", line
        return name

    @property
    def local(self) -> tuple[str, int]:
        return self.sock.getsockname()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class Serve:
    """A real ``lbtui serve`` subprocess; ``wait_ready`` waits for its serving line."""

    def __init__(self, config: Path, *args: str, env: dict[str, str] | None = None,
                 argv: list[str] | None = None, cwd: Path | None = None) -> None:
        """``argv``: how to run lbtui (default: this checkout's); ``env``: added to the
        environment."""
        self.config = config
        self.lines: list[str] = []
        self.proc = subprocess.Popen([*(argv or LBTUI), "serve", "--config", str(config),
                                      *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, cwd=cwd,
                                     env={**os.environ, **(env or {})})
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if "serving instance" in line:
                self._ready.set()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self, timeout: float = 60) -> Serve:
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self._reader.join(2)
                raise AssertionError(f"serve not ready (rc {self.proc.poll()}):\n{self.output}")
        return self

    def mark(self) -> int:
        return len(self.lines)

    def wait_for(self, text: str, timeout: float = 10, since: int = 0) -> None:
        """Wait for a line containing ``text`` among the lines after ``since``."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines[since:]):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in serve output:\n{self.output}")
            time.sleep(0.05)

    def stop(self, sig: int = 15, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout)
        self._reader.join(2)
        return rc


class NotifySocket:
    """The service manager's end of NOTIFY_SOCKET: an abstract datagram socket."""

    def __init__(self) -> None:
        self.name = f"@lbtui-test-notify-{os.getpid()}-{time.monotonic_ns()}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])
        self.messages: list[list[str]] = []

    def wait_for(self, field: str, timeout: float, proc: subprocess.Popen[str]) -> None:
        deadline = time.monotonic() + timeout
        while not any(field in m for m in self.messages):
            left = deadline - time.monotonic()
            if left <= 0 or proc.poll() is not None:
                raise AssertionError(f"no {field} (rc {proc.poll()}): {self.messages}")
            self.sock.settimeout(min(left, 0.5))
            try:
                self.messages.append(self.sock.recv(4096).decode().split("\n"))
            except TimeoutError:
                continue

    def close(self) -> None:
        self.sock.close()


def cli_main(argv: list[str]) -> int:
    """``lbtui ARGV`` in this process: the command's own code, without a Python start-up."""
    from lbtui.cli import main

    try:
        return main(argv)
    except SystemExit as e:          # argparse usage errors
        return int(e.code or 0)


def ctl(name: str, *args: str, json_out: bool = False) -> subprocess.CompletedProcess[str]:
    """``lbtui ctl`` against instance ``name``, run in this process (a subprocess costs a
    0.4 s start-up per call; tests that need the command line itself run it)."""
    argv = ["ctl", "--instance", name, *args] + (["--json"] if json_out else [])
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(argv)
    return subprocess.CompletedProcess([*LBTUI, *argv], code, out.getvalue(), err.getvalue())


def ctl_ok(name: str, *args: str) -> str:
    r = ctl(name, *args)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def ctl_json(name: str, *args: str) -> Any:
    import json

    r = ctl(name, *args, json_out=True)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    doc = json.loads(r.stdout)
    assert doc["version"] == 1 and doc["ok"] is True, doc     # the --json envelope
    return doc["data"]


def dump_maps(name: str, conntrack: bool = True) -> dict[str, Any]:
    """Every entry of the instance's pinned maps (raw bytes), SNI names, and the
    conntrack NAT state (keys and targets, not the moving counters)."""
    ms = M.MapSet.open_pinned(pin_dir_of(name))
    try:
        out: dict[str, Any] = {}
        for pin, m in (("listen", ms.listen_map), ("config", ms.config_map),
                       ("sni", ms.sni_map)):
            out[pin] = {bytes(k): bytes(bpfsys.lookup(m.fd, k, m.value_type))
                        for k in bpfsys.keys(m.fd, m.key_type)}
        out["settings"] = [bpfsys.lookup(ms.settings_map.fd, ct.c_uint32(i), ct.c_uint32).value
                           for i in range(2)]
        out["sni_names"] = dict(ms.sni_map.sni_names.names) if ms.sni_map.sni_names else {}
        if conntrack:
            out["conntrack"] = {
                bytes(k): (v.orig_dst_ip, v.orig_dst_port, v.nat_dst_ip, v.nat_dst_port,
                           v.flags & abi.CT_F_REPLY, v.created_ns)
                for k, v in M.conntrack_reader(ms.conntrack_map).items()}
        return out
    finally:
        M.close_all_maps(ms)


@pytest.fixture
def instance_cleanup() -> Iterator[list[str]]:
    """Instances named here are torn down after the test (also when it fails)."""
    names: list[str] = []
    yield names
    for n in names:
        teardown(n)


@pytest.fixture
def start_serve(instance_cleanup: list[str]) -> Iterator[Any]:
    """Factory for serve processes; all are killed at the end, before instances are torn
    down (request it after make_lab)."""
    procs: list[Serve] = []

    def _start(config: Path, *args: str, ready: bool = True, **kw: Any) -> Serve:
        s = Serve(config, *args, **kw)
        procs.append(s)
        return s.wait_ready() if ready else s

    yield _start
    for s in procs:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait(10)
