"""All-or-nothing changes to the route and settings maps.

A desired state is a set of entries per map (built with ``routes.*_entry`` and
``settings.setting_entry``); ``plan`` compares it with what the maps hold and returns the
changes, puts before deletes, so traffic moving from one entry to another never meets a
gap. ``Transaction`` applies them, remembering each entry's previous value (and, for SNI
routes, the hostname beside the hash), and ``rollback`` restores them when a later step
(another map, the config file write) fails. Conntrack is never touched here.

Maglev tables (``lbtui.maps.maglev``) come first: a table is written before the routes that
switch to it. Only tables to write are desired entries (a table is never deleted, and the
ones routes name now are not read back: they are never rewritten in place).
"""

from __future__ import annotations

import contextlib
import ctypes as ct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lbtui import bpfsys
from lbtui.maps.settings import CONFIG_SETTINGS
from lbtui.maps.sni_names import SniNames

if TYPE_CHECKING:
    from lbtui.maps.mapset import BpfMap, MapSet

# The maps a config describes, by pin name. Settings hold only the slots a config sets.
MAP_NAMES = ("maglev", "listen", "config", "sni", "settings", "vips")


@dataclass
class Entry:
    key: Any
    value: Any
    hostname: str | None = None   # SNI entries: the name behind the hash


# map name -> bytes(key) -> Entry
Entries = dict[str, dict[bytes, Entry]]


def empty() -> Entries:
    return {name: {} for name in MAP_NAMES}


def put(entries: Entries, map_name: str, key: Any, value: Any,
        hostname: str | None = None) -> None:
    entries[map_name][bytes(key)] = Entry(key, value, hostname)


def current_entries(maps: MapSet) -> Entries:
    out = empty()
    by_name = maps.by_pin_name()
    for name in ("listen", "config", "sni", "vips"):
        m = by_name[name]
        for k in bpfsys.keys(m.fd, m.key_type):
            v = bpfsys.lookup(m.fd, k, m.value_type)
            if v is not None:
                put(out, name, k, v)
    for idx in CONFIG_SETTINGS:
        k = ct.c_uint32(idx)
        v = bpfsys.lookup(maps.settings_map.fd, k, ct.c_uint32)
        put(out, "settings", k, v if v is not None else ct.c_uint32(0))
    return out


@dataclass
class Change:
    map: BpfMap
    key: Any
    value: Any | None          # None: delete
    hostname: str | None = None


def plan(maps: MapSet, desired: Entries, current: Entries | None = None) -> list[Change]:
    """The changes that turn ``current`` (default: read from the maps) into ``desired``."""
    cur = current if current is not None else current_entries(maps)
    _reload_sni_names(maps)
    by_name = maps.by_pin_name()
    puts: list[Change] = []
    deletes: list[Change] = []
    for name in MAP_NAMES:
        m = by_name[name]
        want, have = desired[name], cur[name]
        for kb, e in want.items():
            old = have.get(kb)
            if old is None or bytes(old.value) != bytes(e.value) or (
                    name == "sni" and _sni_name(maps, e.key) != e.hostname):
                puts.append(Change(m, e.key, e.value, e.hostname))
        if name not in ("settings", "maglev"):
            deletes.extend(Change(m, e.key, None) for kb, e in have.items() if kb not in want)
    return puts + deletes


def _reload_sni_names(maps: MapSet) -> None:
    """Another process (ctl, a console) may have changed the names file since we read it."""
    names = maps.sni_map.sni_names
    if names is not None and names.path is not None and names.path.exists():
        names.names = SniNames(names.path).names


def _sni_name(maps: MapSet, key: ct.c_uint64) -> str | None:
    names = maps.sni_map.sni_names
    return names.names.get(key.value) if names else None


class Transaction:
    """Applies changes one by one; ``rollback`` undoes every applied change."""

    def __init__(self) -> None:
        self._undo: list[tuple[BpfMap, Any, Any | None, str | None]] = []

    def apply(self, changes: Sequence[Change]) -> None:
        """Apply all, or (on the first failure) undo what was applied and re-raise."""
        try:
            with contextlib.ExitStack() as stack:
                for names in {id(n): n for c in changes if (n := c.map.sni_names)}.values():
                    stack.enter_context(names.deferred())
                for c in changes:
                    self._apply_one(c)
        except BaseException as e:
            try:
                self.rollback()
            except RuntimeError as r:
                raise RuntimeError(f"{e}; then {r}") from e
            raise

    def _apply_one(self, c: Change) -> None:
        prev = bpfsys.lookup(c.map.fd, c.key, c.map.value_type)
        names = c.map.sni_names
        prev_name = names.names.get(c.key.value) if names is not None else None
        if c.value is None:
            bpfsys.delete(c.map.fd, c.key)
        else:
            bpfsys.update(c.map.fd, c.key, c.value)
        self._undo.append((c.map, c.key, prev, prev_name))
        if names is not None:
            if c.value is None:
                names.drop(c.key.value)
            elif c.hostname:
                names.set(c.key.value, c.hostname)

    def rollback(self) -> None:
        errors = []
        while self._undo:
            m, key, prev, prev_name = self._undo.pop()
            try:
                if prev is None:
                    bpfsys.delete(m.fd, key)
                else:
                    bpfsys.update(m.fd, key, prev)
                if m.sni_names is not None:
                    if prev_name is None:
                        m.sni_names.drop(key.value)
                    else:
                        m.sni_names.set(key.value, prev_name)
            except OSError as e:  # keep undoing the rest; report at the end
                errors.append(str(e))
        if errors:
            raise RuntimeError("rollback incomplete: " + "; ".join(errors))

    @property
    def changed(self) -> int:
        return len(self._undo)
