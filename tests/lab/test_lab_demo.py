"""`lbtui demo`: headless and with the console (in a pseudo-terminal). The lab it builds
carries traffic; quitting removes everything; so does the watchdog when the demo process
is killed with SIGKILL (nothing else cleans up in that test)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from labcheck import (
    LBTUI,
    REPO,
    lab_name,
    lab_resources,
    lbtui,
    status,
    wait_for,
    wait_gone,
    wait_ready,
)

from lbtui import maps as M
from lbtui.control.instance import Instance
from lbtui.lab import demo_config as D

pytestmark = [pytest.mark.datapath, pytest.mark.netns]


def _flows(lab: str) -> int:
    inst = Instance.attach(D.instance_name(lab))
    try:
        return len(M.list_connections(inst.maps.conntrack_map))
    finally:
        inst.close()


_ANSI = re.compile(r"\x1b(\[[0-9;?<>=]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")


class Terminal:
    """lbtui running in a pseudo-terminal, its screen output collected by a thread."""

    def __init__(self, *args: str) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))
        env = dict(os.environ, TERM="xterm-256color", COLUMNS="140", LINES="40")
        self.proc = subprocess.Popen([*LBTUI, *args], stdin=slave, stdout=slave,
                                     stderr=slave, cwd=REPO, env=env,
                                     start_new_session=True)
        os.close(slave)
        self.master = master
        self.output = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.output += data

    @property
    def text(self) -> str:
        """The output without escape sequences (styles and cursor moves)."""
        return _ANSI.sub("", self.output.decode(errors="replace"))

    def send(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(5)
        os.close(self.master)


@pytest.fixture
def cleanup() -> Iterator[list[str]]:
    """Labs to remove after the test whatever happened (a failing test leaves none)."""
    labs: list[str] = []
    yield labs
    for lab in labs:
        lbtui("lab", "down", "--lab", lab, check=False)


def test_killed_headless_demo_is_cleaned_up_by_its_watchdog(cleanup: list[str],
                                                            tmp_path: Path) -> None:
    lab = lab_name("k")
    cleanup.append(lab)
    log = (tmp_path / "demo.log").open("w")
    proc = subprocess.Popen([*LBTUI, "demo", "--headless", "--lab", lab], stdout=log,
                            stderr=subprocess.STDOUT, cwd=REPO, text=True)
    try:
        wait_ready(lab, proc=proc)
        wait_for(lambda: _flows(lab) > 10, 20, "generated flows in conntrack")
        progs, pids = lab_resources(status(lab))
        assert progs and proc.pid in pids
        proc.kill()                     # SIGKILL: no finally, no handler, no atexit
        proc.wait(10)
        wait_gone(lab, progs, pids, timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert f"lab {lab} torn down after its owner exited" in (tmp_path / "demo.log").read_text()


def test_console_demo_quit_removes_everything(cleanup: list[str]) -> None:
    lab = lab_name("q")
    cleanup.append(lab)
    term = Terminal("demo", "--lab", lab, "--http-rate", "10")
    try:
        wait_ready(lab, proc=term.proc)
        wait_for(lambda: D.instance_name(lab) in term.text and "Quit" in term.text, 30,
                 "the console (header and footer)")
        progs, pids = lab_resources(status(lab))
        time.sleep(1)
        term.send(b"q")                 # the quit dialog: keep or stop?
        wait_for(lambda: "Keep running" in term.text, 10, "the quit dialog")
        term.send(b"s")                 # stop: the demo then removes the lab
        assert term.proc.wait(60) == 0
        wait_for(lambda: f"lab {lab} removed" in term.text, 5, "the removal message")
        wait_gone(lab, progs, pids - {term.proc.pid}, timeout=10)
    finally:
        term.close()


def test_killed_console_demo_is_cleaned_up_by_its_watchdog(cleanup: list[str]) -> None:
    lab = lab_name("c")
    cleanup.append(lab)
    term = Terminal("demo", "--lab", lab, "--http-rate", "10")
    try:
        wait_ready(lab, proc=term.proc)
        wait_for(lambda: D.instance_name(lab) in term.text and "Quit" in term.text, 30,
                 "the console (header and footer)")
        progs, pids = lab_resources(status(lab))
        os.kill(term.proc.pid, signal.SIGKILL)
        term.proc.wait(10)
        wait_gone(lab, progs, pids, timeout=40)
    finally:
        term.close()
