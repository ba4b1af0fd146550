"""Small file and process primitives shared by the control plane and the labs: atomic
writes, flock-based locks that name their holder, and a liveness check for pids."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Any


def state_root() -> Path:
    """Where lbtui keeps state that outlives a run: /var/lib/lbtui (``$LBTUI_STATE_DIR``)."""
    return Path(os.environ.get("LBTUI_STATE_DIR", "/var/lib/lbtui"))


def atomic_write(path: Path, text: str, mode: int = 0o600, *,
                 follow_symlinks: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` via a temporary file + fsync + rename, so a
    crash leaves the old or the new file, never a torn one. Returns the path written.

    The temporary file is created exclusively (``mkstemp``: O_EXCL, mode 0600) beside the
    file it replaces, so nobody can plant or pre-open it. An existing file keeps its owner,
    group and mode; ``mode`` applies to a file this creates. ``follow_symlinks``: a
    symbolic link at ``path`` is written through (its target is replaced and the link
    kept); otherwise the link itself is replaced by the file."""
    path = Path(path)
    if follow_symlinks and path.is_symlink():
        path = path.resolve()
    try:
        st: os.stat_result | None = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        raise IsADirectoryError(errno.EISDIR, f"{path} is not a regular file; not written")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            if st is not None and stat.S_ISREG(st.st_mode):
                os.fchown(f.fileno(), st.st_uid, st.st_gid)
                os.fchmod(f.fileno(), stat.S_IMODE(st.st_mode))
            else:
                os.fchmod(f.fileno(), mode)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


class FileRefused(ValueError):
    """A file lbtui will not read: not a regular file, or larger than the cap."""


def read_capped(path: Path, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` (FileRefused above
    that, or for a FIFO, device or directory: reading those could block or never end)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(f"{path}: not a regular file")
        too_big = FileRefused(f"{path}: larger than {max_bytes} bytes (the limit); "
                              "refusing to read it")
        if st.st_size > max_bytes:
            raise too_big
        chunks, total = [], 0
        while chunk := os.read(fd, max_bytes + 1 - total):
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise too_big
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in the state file ``path``; None when it is missing, is not JSON or
    holds something other than an object (a file cut short or edited by hand must read as
    no state, not crash whoever looks at it)."""
    try:
        value = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return value if isinstance(value, dict) else None


class OutsideOwnDir(RuntimeError):
    """A removal that would reach outside lbtui's own directory: refused."""


def remove_inside(path: Path, root: Path) -> bool:
    """Remove the file or directory tree ``path`` only if it lies strictly inside
    ``root``, both resolved (``..`` and symbolic links followed), and is not itself a
    symbolic link (lbtui makes none in its directories). True if something was removed.
    Raises OutsideOwnDir, touching nothing, otherwise."""
    path, root = Path(path), Path(root).resolve()
    if not os.path.lexists(path):
        return False
    if path.is_symlink():
        raise OutsideOwnDir(f"refusing to remove {path}: it is a symbolic link, which lbtui "
                            f"never makes in {root}")
    real = path.resolve()
    if real == root or not real.is_relative_to(root):
        raise OutsideOwnDir(f"refusing to remove {path}: it resolves to {real}, outside "
                            f"lbtui's directory {root}")
    if real.is_dir():
        shutil.rmtree(real)
    else:
        real.unlink(missing_ok=True)
    return True


def pid_alive(pid: int | None) -> bool:
    """True if ``pid`` runs (a zombie, exited but not yet reaped, does not count)."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def flock_holder(fd: int) -> int | None:
    """The pid holding a flock on the file open at ``fd``, as the kernel reports it in
    /proc/locks (never a pid written down earlier, which may be stale); None if no flock
    on it is listed or the holder is not visible from here."""
    st = os.fstat(fd)
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return None
    for line in lines:
        # "12: FLOCK  ADVISORY  WRITE 4242 00:1a:5678 0 EOF"; waiters read "12: -> FLOCK".
        parts = line.split()
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == dev:
            pid = int(parts[4]) if parts[4].isdigit() else 0
            return pid or None
    return None


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
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
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
                break
            os.close(fd)  # removed by the previous holder: lock the file now on disk
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

    def release(self, remove: bool = False) -> None:
        """Drop the lock; ``remove`` also deletes the file (a later taker re-checks that
        the file it locked is still the one on disk)."""
        if self.fd is None:
            return
        if remove:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        else:
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
                pid = flock_holder(fd)
                if pid is not None:
                    return pid
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
