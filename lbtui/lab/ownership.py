"""Who owns a lab: a lock held for the owner's whole life, and a small metadata file.

The owner (a ``lbtui demo`` process or the background manager of ``lbtui lab up``) holds
``/run/lbtui/labs/<lab>.lock`` (flock: it dies with the process, so a ``kill -9`` never
leaves a stale lock). Whoever cleans a lab up (the owner itself, its watchdog, ``lbtui lab
down``) takes the same lock first, so a clean-up never runs while a new owner builds.
``<lab dir>/lab.json`` records the owner's pid, the instance and the config path for
``lab status`` and ``lab down``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lbtui.files import FileLock, LockHeld, atomic_write, pid_alive, read_json_object
from lbtui.lab import topology as T

__all__ = ["LabBusy", "LabLock", "meta_path", "pid_alive", "read_meta", "write_meta"]


class LabBusy(LockHeld):
    """Another live process owns the lab."""


class LabLock(FileLock):
    """The exclusive flock on ``<STATE_DIR>/<lab>.lock``. A clean-up removes the file on
    release; FileLock re-checks that the file it locked is still the one on disk."""

    def __init__(self, lab: str) -> None:
        self.lab = T.validate_lab_name(lab)
        super().__init__(T.STATE_DIR / f"{lab}.lock")

    def try_acquire(self) -> bool:
        T.STATE_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
        return super().try_acquire()

    def acquire(self, timeout: float = 0.0) -> None:
        try:
            super().acquire(timeout)
        except LockHeld as e:
            raise LabBusy(f"lab {self.lab} is owned by pid {e.pid or '?'}", e.pid) from None


# --- metadata ------------------------------------------------------------------------


def meta_path(lab: str) -> Path:
    return T.STATE_DIR / T.validate_lab_name(lab) / "lab.json"


def write_meta(lab: str, **fields: Any) -> None:
    atomic_write(meta_path(lab), json.dumps(read_meta(lab) | fields, indent=1))


def read_meta(lab: str) -> dict[str, Any]:
    return read_json_object(meta_path(lab)) or {}


