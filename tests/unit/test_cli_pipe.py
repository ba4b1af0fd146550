"""A reader that goes away early (`lbtui ctl connections | head`) ends lbtui quietly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples/lbtui.toml"


def test_closed_stdout_exits_quietly() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)                       # nobody will read: every write is EPIPE
    try:
        p = subprocess.run([sys.executable, "-m", "lbtui", "check", "--config", str(EXAMPLE),
                            "--json"], stdout=write_end, stderr=subprocess.PIPE, text=True,
                           timeout=60)
    finally:
        os.close(write_end)
    assert p.returncode == 141 and p.stderr == "", p.stderr
