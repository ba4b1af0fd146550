"""Per-instance locks (flock) under /run/lbtui.

Two locks per instance:
- the *manager* lock (``<instance>.lock``), held for its whole life by the one process that
  loaded the datapath (``serve``, or a standalone console); a second manager is refused
  with the holder's pid;
- the *edit* lock (``<instance>.edit.lock``), held briefly around each run-time change
  (map update + config file write) by whoever makes it (ctl, the console, serve on
  reload), so concurrent edits never interleave.

flock locks die with their process, so a ``kill -9`` never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from lbtui.files import FileLock, LockHeld
from lbtui.names import instance_name

__all__ = ["FileLock", "LockHeld", "edit_lock", "manager_lock", "run_dir"]


def run_dir() -> Path:
    """/run/lbtui (``$LBTUI_RUN_DIR``), created 0700."""
    d = Path(os.environ.get("LBTUI_RUN_DIR", "/run/lbtui"))
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    if d.stat().st_mode & 0o777 != 0o700:
        os.chmod(d, 0o700)
    return d


def manager_lock(instance: str) -> FileLock:
    return FileLock(run_dir() / f"{instance_name(instance)}.lock")


def edit_lock(instance: str) -> FileLock:
    return FileLock(run_dir() / f"{instance_name(instance)}.edit.lock")


@contextlib.contextmanager
def editing(instance: str, timeout: float = 10.0) -> Iterator[None]:
    """Hold the instance's edit lock for the block."""
    lock = edit_lock(instance)
    try:
        lock.acquire(timeout)
    except LockHeld as e:
        raise LockHeld(f"another edit of instance {instance!r} is in progress (pid "
                       f"{e.pid or '?'}) and did not finish within {timeout:g}s", e.pid
                       ) from None
    try:
        yield
    finally:
        lock.release()
