"""Logging as a journal, a file and a terminal see it: journald priorities, one line per
event off a terminal, colours only on a terminal and never with NO_COLOR (the demo's
progress lines included)."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from lbtui.lab.progress import Steps

LBTUI = [sys.executable, "-m", "lbtui"]


@pytest.fixture
def bad_config(tmp_path: Path) -> Path:
    p = tmp_path / "bad.toml"
    p.write_text('[datapath]\ninterfaces = ["eth0"]\nxdp_mode = "fast"\n'
                 '[[listener]]\nport = 0\ntargets = [{ ip = "10.0.0.1", port = 80 }]\n')
    return p


def run_with_stderr(argv: list[str], stderr: int, **env: str) -> int:
    return subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=stderr, timeout=60,
                          env={**os.environ, **env}).returncode


def test_journald_gets_priorities_one_line_per_event(bad_config: Path, tmp_path: Path
                                                     ) -> None:
    log = tmp_path / "journal"
    with open(log, "w") as f:
        st = os.fstat(f.fileno())
        rc = run_with_stderr([*LBTUI, "check", "--config", str(bad_config)], f.fileno(),
                             JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
    lines = log.read_text().splitlines()
    assert rc == 2 and len(lines) == 1, lines
    assert lines[0].startswith("<3>") and "2 problem(s)" in lines[0]
    assert "datapath.xdp_mode" in lines[0] and "listener[0].port" in lines[0]


def test_a_file_gets_one_plain_line_per_event(bad_config: Path, tmp_path: Path) -> None:
    log = tmp_path / "log"
    with open(log, "w") as f:      # JOURNAL_STREAM naming another file does not count
        rc = run_with_stderr([*LBTUI, "check", "--config", str(bad_config)], f.fileno(),
                             JOURNAL_STREAM="1:1")
    (line,) = log.read_text().splitlines()
    assert rc == 2 and line.startswith("lbtui check: error: ") and " | " in line
    assert "\033[" not in line


def _on_terminal(argv: list[str], **env: str) -> str:
    leader, follower = pty.openpty()
    try:
        run_with_stderr(argv, follower, **env)
        os.close(follower)
        out = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:           # EIO: the terminal's other end is closed
                break
            if not chunk:
                break
            out += chunk
        return out.decode()
    finally:
        os.close(leader)


def test_terminal_gets_colour_unless_no_color(bad_config: Path) -> None:
    argv = [*LBTUI, "check", "--config", str(bad_config)]
    coloured = _on_terminal(argv, NO_COLOR="")          # empty NO_COLOR means unset
    assert "\033[31merror:\033[0m" in coloured
    assert "\n" in coloured.strip()                     # problems on their own lines
    plain = _on_terminal(argv, NO_COLOR="1")
    assert "\033[" not in plain and "error: " in plain


def test_progress_lines_honour_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    out = Tty()
    with Steps(out=out).step("building"):
        pass
    assert "\033[" in out.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    out = Tty()
    with Steps(out=out).step("building"):
        pass
    assert out.getvalue().strip().startswith("✓ building") and "\033[" not in out.getvalue()
