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
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path


def run_dir() -> Path:
    """/run/lbtui (``$LBTUI_RUN_DIR``), created 0700."""
    d = Path(os.environ.get("LBTUI_RUN_DIR", "/run/lbtui"))
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    if d.stat().st_mode & 0o777 != 0o700:
        os.chmod(d, 0o700)
    return d


class LockHeld(RuntimeError):
    """Another process holds the lock; ``pid`` is its recorded pid (None if unknown)."""

    def __init__(self, message: str, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


class FileLock:
    """An exclusive flock on ``path``; the holder's pid is written into the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def try_acquire(self) -> bool:
        if self.fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.fchmod(fd, 0o600)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return True

    def acquire(self, timeout: float = 0.0) -> None:
        """Take the lock, waiting up to ``timeout`` seconds; LockHeld names the holder."""
        deadline = time.monotonic() + timeout
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                pid = self.holder()
                raise LockHeld(f"{self.path} is held by pid {pid or '?'}", pid)
            time.sleep(0.02)

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing drops the flock
            self.fd = None

    def holder(self) -> int | None:
        """The pid of the process holding the lock, or None if nobody holds it."""
        if self.fd is not None:
            return os.getpid()
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
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

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def manager_lock(instance: str) -> FileLock:
    return FileLock(run_dir() / f"{instance}.lock")


def edit_lock(instance: str) -> FileLock:
    return FileLock(run_dir() / f"{instance}.edit.lock")


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
