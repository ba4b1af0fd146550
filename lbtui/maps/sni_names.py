"""Hostnames behind the SNI map's hashes, kept in a file beside the pins."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from lbtui.files import atomic_write


class SniNames:
    """Hostnames behind SNI hashes, kept in a JSON file (0600) when the maps are pinned."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.names: dict[int, str] = {}
        if path and path.exists():
            self.names = {int(k): v for k, v in json.loads(path.read_text()).items()}

    _deferring = 0
    _dirty = False

    def set(self, h: int, name: str) -> None:
        self.names[h] = name
        self._save()

    def drop(self, h: int) -> None:
        if self.names.pop(h, None) is not None:
            self._save()

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Write the file once at the end of a batch of changes, not once per change
        (loading a config with many SNI routes)."""
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1
            if not self._deferring and self._dirty:
                self._save()

    def _save(self) -> None:
        if self._deferring:
            self._dirty = True
            return
        self._dirty = False
        if self.path:
            atomic_write(self.path, json.dumps({str(k): v for k, v in sorted(
                self.names.items())}, indent=1))
