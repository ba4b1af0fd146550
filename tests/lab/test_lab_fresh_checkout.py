"""The README's first command from a fresh clone: `scripts/demo.sh` (set-up, then the demo)
run headless succeeds and leaves nothing behind.

The clone reuses this checkout's venv (a symlink named .venv), which scripts/setup.sh must
accept as is (it is idempotent): it finds the apt packages, the headers, bpffs and a venv
whose packages match pyproject.toml, and installs nothing. The demo then runs the clone's
own code (scripts/demo.sh puts the checkout first on sys.path)."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from labcheck import REPO, lab_name, lbtui, wait_gone

pytestmark = [pytest.mark.datapath, pytest.mark.netns]


def test_demo_script_from_a_fresh_clone(tmp_path: Path) -> None:
    clone = tmp_path / "lbtui"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=60)
    venv = REPO / ".venv"
    digest = hashlib.sha1((clone / "pyproject.toml").read_bytes()).hexdigest()[:12]
    stamp = venv / f".installed-{digest}"
    # Without it setup.sh would pip-install the clone into the shared venv: refuse.
    assert stamp.exists(), (f"{venv} does not match the committed pyproject.toml: run "
                            "scripts/setup.sh in the repository first")
    (clone / ".venv").symlink_to(venv)
    # demo.sh starts Python with the checkout first on sys.path: the clone's code runs.
    where = subprocess.run([".venv/bin/python", "-c", "import lbtui; print(lbtui.__file__)"],
                           cwd=clone, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(clone)), where
    lab = lab_name("f")
    try:
        p = subprocess.run(
            ["bash", "scripts/demo.sh", "--headless", "--lab", lab, "--duration", "4",
             "--report-every", "1"], cwd=clone, capture_output=True, text=True, timeout=240)
        out = p.stdout + p.stderr
        assert p.returncode == 0, out
        assert "apt packages present" in out and "Python packages present" in out
        for step in ("checking prerequisites", "building the lab network",
                     "starting backend servers", "loading the datapath", "checking the path",
                     "starting traffic"):
            assert f"✓ {step}" in out, out
        assert "compiling the XDP datapath (BCC)" in out      # the loader's own progress
        reports = [line for line in out.splitlines() if line.startswith("[ ")]
        assert len(reports) >= 3 and "backend" in reports[-1], out
        assert f"lab {lab} removed" in out
    finally:
        lbtui("lab", "down", "--lab", lab, check=False)
    wait_gone(lab, set(), set(), timeout=10)
