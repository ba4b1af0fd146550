"""The hostnames behind SNI hashes, as every process that edits the instance leaves them.

The maps hold an SNI route under the hash of its hostname. Whoever applies a config to
the instance (``serve``, a reload, ``lbtui ctl``, any console) writes the applied record
(``<instance>.applied.json``, ``lbtui.control.state``); it names every SNI route. The
console reads it (again only when it changed) once per refresh and names routes, health
rows and events from it, so a route added elsewhere shows by its hostname within one
refresh, in every view.
"""

from __future__ import annotations

from typing import Any

from lbtui.control.state import applied_path, read_applied
from lbtui.sni import fnv1a64, normalize_hostname


def sni_names(applied: dict[str, Any] | None) -> dict[int, str]:
    """hash -> hostname for the SNI routes of an applied config (its TOML data model)."""
    out: dict[int, str] = {}
    for r in (applied or {}).get("sni_route", []):
        host = r.get("hostname") if isinstance(r, dict) else None
        if isinstance(host, str):
            try:
                name = normalize_hostname(host)
            except ValueError:
                continue
            out[fnv1a64(name)] = name.decode()
    return out


class AppliedNames:
    """``names()``: the SNI names of the instance's applied record, re-read when the file
    changed (its mtime and size)."""

    def __init__(self, instance: str) -> None:
        self.instance = instance
        self._seen: tuple[int, int] | None = None
        self._names: dict[int, str] = {}

    def __call__(self) -> dict[int, str]:
        try:
            st = applied_path(self.instance).stat()
        except OSError:
            return self._names
        if (st.st_mtime_ns, st.st_size) != self._seen:
            self._seen = (st.st_mtime_ns, st.st_size)
            self._names = sni_names(read_applied(self.instance))
        return self._names
