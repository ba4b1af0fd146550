"""Who owns a lab: a lock held for the owner's whole life, and a small metadata file.

The owner (a ``lbtui demo`` process or the background manager of ``lbtui lab up``) holds
``/run/lbtui/labs/<lab>.lock`` (flock: it dies with the process, so a ``kill -9`` never
leaves a stale lock). Whoever cleans a lab up (the owner itself, its watchdog, ``lbtui lab
down``) takes the same lock first, so a clean-up never runs while a new owner builds.
``<lab dir>/lab.json`` records the owner's pid, the instance and the config path for
``lab status`` and ``lab down``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from lbtui.lab import topology as T


class LabBusy(RuntimeError):
    """Another live process owns the lab."""

    def __init__(self, message: str, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


class LabLock:
    """An exclusive flock on ``<STATE_DIR>/<lab>.lock`` (the file is removed on release
    by a clean-up, so acquiring re-checks that the locked file is still the one on disk)."""

    def __init__(self, lab: str) -> None:
        self.lab = T.validate_lab_name(lab)
        self.path = T.STATE_DIR / f"{lab}.lock"
        self.fd: int | None = None

    def try_acquire(self) -> bool:
        if self.fd is not None:
            return True
        T.STATE_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                         0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                self.fd = fd
                return True
            os.close(fd)  # removed by the previous holder: lock the new file instead

    def acquire(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                pid = self.holder()
                raise LabBusy(f"lab {self.lab} is owned by pid {pid or '?'}", pid)
            time.sleep(0.05)

    def holder(self) -> int | None:
        if self.fd is not None:
            return os.getpid()
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.pread(fd, 32, 0).decode(errors="replace").strip()
                return int(text) if text.isdigit() else -1
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def release(self, remove: bool = False) -> None:
        if self.fd is None:
            return
        if remove:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        os.close(self.fd)
        self.fd = None


# --- metadata ------------------------------------------------------------------------


def meta_path(lab: str) -> Path:
    return T.STATE_DIR / T.validate_lab_name(lab) / "lab.json"


def write_meta(lab: str, **fields: Any) -> None:
    path = meta_path(lab)
    data = read_meta(lab) | fields
    tmp = path.with_name("lab.json.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def read_meta(lab: str) -> dict[str, Any]:
    try:
        return json.loads(meta_path(lab).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def pid_alive(pid: int | None) -> bool:
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not alive for our purposes.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True
