"""Helpers for the lab tests: run lbtui, wait for a lab, list what a lab left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns

from lbtui.control.instance import PIN_ROOT
from lbtui.control.lock import run_dir
from lbtui.lab import topology as T
from lbtui.lab.ownership import read_meta

REPO = Path(__file__).resolve().parents[2]
LBTUI = [sys.executable, "-c", "import sys; from lbtui.cli import main; "
         "sys.exit(main(sys.argv[1:]))"]


def lab_name(tag: str) -> str:
    """A lab name unique to this test run (namespaces lbt-<name>-*)."""
    return f"h4{tag}{os.getpid() % 10000}"


def lbtui(*args: str, timeout: float = 120, check: bool = True,
          **kw: Any) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([*LBTUI, *args], capture_output=True, text=True, timeout=timeout,
                       cwd=REPO, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"lbtui {' '.join(args)} exited {p.returncode}\n"
                             f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def wait_for(cond: Callable[[], Any], timeout: float, what: str, step: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def wait_ready(lab: str, timeout: float = 120, proc: subprocess.Popen[Any] | None = None,
               ) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"lab {lab}'s owner exited with {proc.returncode} before "
                                 "it was ready")
        meta = read_meta(lab)
        return meta if meta.get("ready") else None
    return wait_for(ready, timeout, f"lab {lab} to be ready")


def status(lab: str) -> dict[str, Any]:
    return json.loads(lbtui("lab", "status", "--lab", lab, "--json").stdout)["data"]


def root_links() -> set[str]:
    with IPRoute() as ipr:
        return {link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}


def prog_exists(prog_id: int) -> bool:
    return subprocess.run(["bpftool", "prog", "show", "id", str(prog_id)],
                          capture_output=True).returncode == 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def leftovers(lab: str, prog_ids: set[int] = frozenset(), pids: set[int] = frozenset(),
              ) -> list[str]:
    """Everything of ``lab`` still present: namespaces, pins, state/lock/lab files, the
    XDP programs and processes it had."""
    out = []
    ns = sorted(n for n in pr_netns.listnetns() if n.startswith(f"lbt-{lab}-"))
    if ns:
        out.append(f"namespaces {ns}")
    inst = f"lab-{lab}"
    for p in (PIN_ROOT / inst, run_dir() / f"{inst}.json", run_dir() / f"{inst}.lock",
              run_dir() / f"{inst}.edit.lock", T.STATE_DIR / lab,
              T.STATE_DIR / f"{lab}.json", T.STATE_DIR / f"{lab}.lock",
              T.STATE_DIR / f"{lab}.log"):
        if p.exists():
            out.append(str(p))
    out += [f"XDP program {i}" for i in sorted(prog_ids) if prog_exists(i)]
    out += [f"process {p}" for p in sorted(pids) if pid_alive(p)]
    return out


def wait_gone(lab: str, prog_ids: set[int], pids: set[int], timeout: float = 30) -> None:
    """Programs are freed asynchronously once the last reference goes: poll briefly."""
    deadline = time.monotonic() + timeout
    left = leftovers(lab, prog_ids, pids)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = leftovers(lab, prog_ids, pids)
    assert not left, f"lab {lab} left behind: {left}"


def lab_resources(st: dict[str, Any]) -> tuple[set[int], set[int]]:
    """(XDP prog ids, lab process pids) from a `lab status --json` document."""
    progs = {x["prog_id"] for x in st["xdp"] if x["prog_id"]}
    pids = {p["pid"] for p in st["processes"]}
    if st["owner"]["pid"]:
        pids.add(st["owner"]["pid"])
    return progs, pids
