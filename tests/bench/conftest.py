"""Benchmark smoke tests: each bench script runs in its tiny mode, for real (root, BPF,
namespaces), and prints its table. The bench package lives at the repository root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))



def run_module(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


@dataclass
class CompareRun:
    proc: subprocess.CompletedProcess[str]
    result: dict
    json_path: Path
    lab: str


@pytest.fixture(scope="session")
def compare_quick(tmp_path_factory: pytest.TempPathFactory) -> CompareRun:
    """One real ``bench.compare --quick`` run shared by the tests that inspect it."""
    if os.geteuid() != 0:
        pytest.fail("benchmark tests need root (namespaces, BPF)", pytrace=False)
    lab = f"h6t{os.getpid() % 100000}"
    out = tmp_path_factory.mktemp("bench") / "compare.json"
    p = run_module(["bench.compare", "--quick", "--lab", lab, "--json", str(out)], 150)
    assert p.returncode == 0, f"bench.compare failed:\n{p.stdout}\n{p.stderr[-3000:]}"
    return CompareRun(p, json.loads(out.read_text()), out, lab)
