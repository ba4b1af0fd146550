"""Reload never tears down: a SIGHUP with a broken config (any kind of broken, including
one that fails only while starting a splicer) leaves the maps and the splicers exactly as
they were, under live connections, none lost. Reload reads the file under the edit lock,
and ``ctl reload`` signals the manager lock's holder, never a pid from a stale state file.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from control.conftest import EchoClient, ctl, spread

from lbtui import netns
from lbtui.control.lock import edit_lock
from lbtui.control.state import state_path

from .conftest import Live

pytestmark = [pytest.mark.datapath, pytest.mark.netns, pytest.mark.timeout(600)]


def _tls_open(live: Live, hostname: str) -> ssl.SSLSocket:
    """A spliced TLS connection, handshake done, request not sent yet."""
    ctx = ssl.create_default_context(cafile=str(live.tls.ca))
    with netns.inside(live.topo.clients[0].ns):
        raw = socket.create_connection((live.topo.vip, 443), timeout=10)
    return ctx.wrap_socket(raw, server_hostname=hostname)


def _tls_finish(s: ssl.SSLSocket, hostname: str) -> str:
    s.sendall(f"GET / HTTP/1.0\r\nHost: {hostname}\r\n\r\n".encode())
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    s.close()
    return data.split(b"\r\n\r\n", 1)[1].decode().split()[0]   # "backend2 sni=..."


def _without_config(snap: dict) -> dict:
    return {k: v for k, v in snap.items() if k != "config"}


def _broken(live: Live) -> dict[str, Callable[[Path, str], None]]:
    """Ways to break the config file in place (path, the good text)."""
    vip = live.topo.vip

    def write(text: str) -> Callable[[Path, str], None]:
        return lambda p, _good: p.write_text(text)

    return {
        "syntax": lambda p, good: p.write_text(good + "\n[[listener\n"),
        "loopback-target": lambda p, good: p.write_text(good.replace(
            live.topo.backends[0].ip, "127.0.0.1", 1)),
        "not-utf8": lambda p, good: p.write_bytes(good.encode() + b"\n# \xff\n"),
        "vanished": lambda p, _good: p.unlink(),
        "fifo": lambda p, _good: (p.unlink(), os.mkfifo(p)),
        "empty": write(""),
        # Valid, but its new SNI listener cannot bind (the address is not on the LB): the
        # listen entries it added are rolled back, the running splicer keeps serving.
        "splicer-cannot-bind": lambda p, good: p.write_text(good + f"""
[[listener]]
port = 4443
protocol = "tcp"
sni = true
address = "198.18.0.99"
targets = [{{ ip = "{live.topo.backends[2].ip}", port = 8443 }}]
"""),
        "sni-listener-moves-to-foreign-address": lambda p, good: p.write_text(good.replace(
            f'address = "{vip}"', 'address = "198.18.0.98"')),
    }


def test_sighup_with_broken_config_loses_no_connection(live: Live) -> None:
    good = live.config.read_bytes()
    echoes = [EchoClient(live.topo) for _ in range(4)]
    spliced = [_tls_open(live, "api.safety.test") for _ in range(2)]
    try:
        for what, breaks in _broken(live).items():
            before = _without_config(live.snapshot())
            breaks(live.config, good.decode())
            mark = live.serve.mark()
            os.kill(live.serve.pid, signal.SIGHUP)
            live.serve.wait_for("reload refused, still running the previous config",
                                since=mark)
            live.config.unlink(missing_ok=True)
            live.config.write_bytes(good)
            assert _without_config(live.snapshot()) == before, what
            for e in echoes:
                e.roundtrip()                                  # XDP flows: still there
            live.assert_serving()
        assert [_tls_finish(s, "api.safety.test") for s in spliced] == ["backend2"] * 2
        assert live.serve.proc.poll() is None
        # A good file reloads as usual.
        mark = live.serve.mark()
        os.kill(live.serve.pid, signal.SIGHUP)
        live.serve.wait_for("reloaded", since=mark)
        for e in echoes:
            e.roundtrip()
    finally:
        for e in echoes:
            e.close()
        live.config.write_bytes(good)


def test_reload_reads_the_file_under_the_edit_lock(live: Live) -> None:
    """A reload that arrives during an edit waits for it and applies what the edit wrote,
    never what the file said before the edit finished."""
    good = live.config.read_text()

    def only(node: str) -> str:
        """The config with port 80's whole weight on ``node``."""
        text = good
        for e in live.topo.backends:
            text = re.sub(rf'(ip = "{re.escape(e.ip)}", port = 8080, weight = )\d+',
                          rf"\g<1>{100 if e.node == node else 0}", text)
        return text

    lock = edit_lock(live.name)
    lock.acquire(10)
    try:
        live.config.write_text(only("backend1"))      # what the file says mid-edit
        mark = live.serve.mark()
        os.kill(live.serve.pid, signal.SIGHUP)
        time.sleep(1.0)                               # serve is waiting for the lock
        assert "reloaded" not in "\n".join(live.serve.lines[mark:])
        live.config.write_text(only("backend2"))      # the edit's final word
    finally:
        lock.release()
    try:
        live.serve.wait_for("reloaded", since=mark)
        assert set(spread(live.topo, 10)) == {"backend2"}
    finally:
        live.config.write_text(good)
        mark = live.serve.mark()
        os.kill(live.serve.pid, signal.SIGHUP)
        live.serve.wait_for("reloaded", since=mark)


def test_ctl_reload_signals_the_lock_holder_not_a_stale_pid(live: Live) -> None:
    state = state_path(live.name)
    saved = state.read_bytes()
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        # A state file naming another process (stale, or tampered with): never signalled.
        data = json.loads(saved)
        data["pid"] = bystander.pid
        state.write_text(json.dumps(data))
        r = ctl(live.name, "reload")
        assert r.returncode == 3 and "no running serve" in r.stderr, r.stderr   # not running
        time.sleep(0.2)
        assert bystander.poll() is None               # SIGHUP would have killed it
        state.write_bytes(saved)
        mark = live.serve.mark()
        r = ctl(live.name, "reload")
        assert r.returncode == 0 and f"pid {live.serve.pid}" in r.stdout, r.stderr
        live.serve.wait_for("reloaded", since=mark)
    finally:
        state.write_bytes(saved)
        bystander.kill()
        bystander.wait()
