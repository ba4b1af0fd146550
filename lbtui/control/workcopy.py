"""Run-time edits of a config file that serve cannot write (a read-only /etc).

Under systemd's ``ProtectSystem=strict`` serve sees ``/etc`` read-only, yet ``ctl`` and
the console write every edit back into the config file. So serve works on a *working
copy* when the file (or its directory) is not writable:

- ``/var/lib/lbtui/<instance>.toml`` (``$LBTUI_STATE_DIR``) starts as a copy of the file
  and takes the run-time edits; ``<instance>.toml.source`` records the file it was copied
  from and that file's SHA-256.
- The operator's file stays the source of truth: when it changes (its hash differs from
  the recorded one), the next start or reload copies it again and the edits made since are
  dropped; the dropped copy is kept as ``<instance>.toml.replaced``.
- When the file is writable again, a copy that is still current is written back into it
  and removed, so no edit is lost or left behind.

``lbtui down`` removes the datapath, never the working copy: edits outlive restarts, as
they do when the file itself is writable.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from lbtui.control.config import MAX_CONFIG_BYTES
from lbtui.files import atomic_write, read_capped, remove_inside, state_root
from lbtui.names import instance_name


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def writable(path: Path) -> bool:
    """True if ``path`` can be replaced in place (atomic writes need its directory too);
    False on a read-only mount (EROFS) as well as for missing permissions."""
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


@dataclass
class WorkCopy:
    """Where serve reads and edits go for the config ``source`` of ``instance``."""

    source: Path
    instance: str
    notes: list[str] = field(default_factory=list)      # what the last resolve() did
    warnings: list[str] = field(default_factory=list)   # ... that dropped run-time edits

    @property
    def copy(self) -> Path:
        return state_root() / f"{instance_name(self.instance)}.toml"

    @property
    def record(self) -> Path:
        return self.copy.with_name(self.copy.name + ".source")

    def _current_copy(self, source_hash: str) -> bool:
        """A copy exists, made from this source, which has not changed since."""
        try:
            rec = json.loads(self.record.read_text())
        except (OSError, ValueError):
            return False
        return (self.copy.exists() and rec.get("source") == str(self.source.resolve())
                and rec.get("sha256") == source_hash)

    def resolve(self) -> Path:
        """The file to load and edit now: ``source`` when it is writable, else the working
        copy, made or refreshed as needed. ``notes`` and ``warnings`` say what was done."""
        self.notes, self.warnings = [], []
        # Capped, regular files only: a FIFO or device swapped in must not block serve.
        data = read_capped(self.source, MAX_CONFIG_BYTES)
        digest = _sha256(data)
        current = self._current_copy(digest)
        if writable(self.source):
            if current:
                atomic_write(self.source, self.copy.read_text(encoding="utf-8"),
                             follow_symlinks=True)
                self._remove(self.copy, self.record)
                self.notes.append(f"run-time edits kept in {self.copy} written back into "
                                  f"{self.source}")
            return self.source
        if current:
            self.notes.append(f"{self.source} is read-only: run-time edits are in {self.copy}")
            return self.copy
        root = state_root()
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.copy.exists():
            os.replace(self.copy, self.copy.with_name(self.copy.name + ".replaced"))
            self.warnings.append(f"{self.source} changed: run-time edits in {self.copy} "
                                 "replaced by it (the old copy is kept as "
                                 f"{self.copy.name}.replaced)")
        atomic_write(self.copy, data.decode("utf-8"))
        atomic_write(self.record, json.dumps({"source": str(self.source.resolve()),
                                              "sha256": digest}) + "\n")
        self.notes.append(f"{self.source} is read-only: copied to {self.copy}, where run-time "
                          "edits go")
        return self.copy

    @staticmethod
    def _remove(*paths: Path) -> None:
        for p in paths:
            remove_inside(p, state_root())
