"""Writing the config file back: minimal tomlkit edits, written atomically.

``save_config`` turns the file into ``config`` by changing only what differs: a weight edit
rewrites one number, a removed listener removes its table, a new route is appended. The
operator's comments, ordering and formatting elsewhere stay as they were. The file is
written to a temporary file created exclusively in the same directory, fsynced and
renamed over the original, so a crash leaves either the old or the new file, never a torn
one. The file keeps its owner and mode (a new file is 0600). A config path that is a
symbolic link is written through: the file it points to is replaced, the link stays.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.container import Container
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import AoT, Array, Comment, InlineTable, Item, Table, Whitespace

from lbtui.control.config import ConfigError, parse_config, read_config_text, to_dict
from lbtui.files import atomic_write  # re-exported: callers import it from here
from lbtui.model import (
    Config,
    DatapathSettings,
    GroupKey,
    GroupKind,
    HealthSettings,
    MetricsSettings,
    Settings,
)

_MISSING = object()
_DATAPATH_DEFAULTS = {k: v for k, v in vars(DatapathSettings()).items()
                      if k != "interfaces"}
_LISTENER_DEFAULTS = {"protocol": "both", "stats": True, "sni": False, "interfaces": None,
                      "address": None}
_SOURCE_DEFAULTS = {"stats": True}


def render_config(config: Config, base_text: str | None = None) -> str:
    """The TOML text of ``config``: ``base_text`` minimally edited, or a fresh document."""
    return _render(config, base_text)[0]


def _render(config: Config, base_text: str | None, doc: tomlkit.TOMLDocument | None = None,
            old: Config | None = None) -> tuple[str, tomlkit.TOMLDocument, bool]:
    """(text, the edited document, whether the text is exactly the document's dump).
    ``doc``: ``base_text`` already parsed (edited in place); ``old``: what it means."""
    if base_text and old is None:
        with contextlib.suppress(ValueError):
            old = parse_config(base_text)    # fast (tomllib): tells which tables changed
    if doc is None:
        doc = tomlkit.parse(base_text) if base_text else tomlkit.document()
    merge(doc, config, old)
    raw = text = tomlkit.dumps(doc)
    if '"""' not in text and "'''" not in text:
        # Removing and appending tables can leave runs of blank lines; a file without
        # multi-line strings can safely have them collapsed.
        text = re.sub(r"\n{3,}", "\n\n", text).rstrip("\n") + "\n"
    return text, doc, text == raw


# tomlkit parses slowly (about 1 s per 2000 tables): a process that edits the same file
# repeatedly (the console) keeps the parsed document of what it last wrote, and reuses it
# while the file on disk is still exactly that (same inode, size and mtime).
_DocKey = tuple[int, int, int, int]
_docs: dict[Path, tuple[_DocKey, str, tomlkit.TOMLDocument]] = {}


def _stat_key(path: Path) -> _DocKey:
    st = path.stat()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def save_config(config: Config, path: str | Path | None = None,
                old: Config | None = None) -> Path:
    """Write ``config`` to ``path`` (default ``config.path``), keeping the existing file's
    comments and order. What is written is re-parsed first and must mean ``config``.
    ``old``: what the file holds now, if the caller has just parsed it (saves a parse)."""
    target = Path(path) if path is not None else config.path
    if target is None:
        raise ValueError("save_config: no path given and the config has none")
    target = target.absolute()
    if target.is_symlink():
        target = target.resolve()           # written through: the link stays a link
    try:
        base: str | None = read_config_text(target)
    except ConfigError:
        if os.path.lexists(target):
            raise                           # unreadable, too big, not UTF-8...: not ours
        base = None                         # a new file
    cached = _docs.pop(target, None)        # dropped for good if anything below fails
    doc = None
    if cached is not None and base is not None and cached[1] == base and (
            cached[0] == _stat_key(target)):
        doc = cached[2]
    try:
        text, doc, exact = _render(config, base, doc, old)
    except (TOMLKitError, RecursionError) as e:
        raise ConfigError([f"the file changed on disk and cannot be edited ({e}); fix it "
                           "and retry"], target) from None
    check = parse_config(text, target)
    check.path = config.path
    if to_dict(check) != to_dict(config):
        raise RuntimeError(f"{target}: the edited document does not round-trip; not written")
    atomic_write(target, text, follow_symlinks=True)
    if exact and len(_docs) < 8:
        _docs[target] = (_stat_key(target), text, doc)
    return target


# --- document edits --------------------------------------------------------------------


def merge(doc: tomlkit.TOMLDocument, config: Config, old: Config | None = None) -> None:
    """Edit ``doc`` to mean ``config``. ``old``: what ``doc`` means now (its tables in
    order), so unchanged tables are skipped without being read."""
    new = to_dict(config)
    was = to_dict(old) if old is not None else {}
    _sync_section(doc, "datapath", new["datapath"], _DATAPATH_DEFAULTS)
    _sync_section(doc, "settings", new["settings"], vars(Settings()))
    _sync_section(doc, "health", dict(vars(config.health)), vars(HealthSettings()))
    _sync_section(doc, "metrics", dict(vars(config.metrics)), vars(MetricsSettings()))
    _sync_aot(doc, "listener", new.get("listener", []), lambda t: t.get("port"),
              _LISTENER_DEFAULTS, was.get("listener") if old else None)
    _sync_aot(doc, "source_route", new.get("source_route", []),
              lambda t: _group_key(GroupKind.SOURCE, t.get("cidr")), _SOURCE_DEFAULTS,
              was.get("source_route") if old else None)
    _sync_aot(doc, "sni_route", new.get("sni_route", []),
              lambda t: _group_key(GroupKind.SNI, t.get("hostname")), {},
              was.get("sni_route") if old else None)


def _group_key(kind: GroupKind, raw: Any) -> Any:
    """A route table's identity (canonical prefix or hostname; as written if invalid)."""
    try:
        return GroupKey.of(kind, raw).key
    except ValueError:
        return raw


def _plain(item: Any) -> Any:
    return item.unwrap() if hasattr(item, "unwrap") else item


def _sync_section(doc: tomlkit.TOMLDocument, name: str, new: dict[str, Any],
                  defaults: dict[str, Any]) -> None:
    if name not in doc:
        if all(defaults.get(k, _MISSING) == v for k, v in new.items()):
            return
        doc.add(name, tomlkit.table())
    _sync_table(doc[name], new, defaults)


def _sync_table(table: Table, new: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Make ``table`` mean ``new``: change differing values, add non-default new keys,
    drop keys whose value went back to absent (unless the file spells out the default)."""
    for k, v in new.items():
        if k == "targets":
            _sync_targets(table, v)
        elif k in table:
            if _plain(table[k]) != v:
                table[k] = v
        elif defaults.get(k, _MISSING) != v:
            _add_key(table, k, v)
    for k in list(table.keys()):
        if k not in new and _plain(table[k]) != defaults.get(k, _MISSING):
            del table[k]


def _add_key(table: Table, key: str, value: Any) -> None:
    """Add a key after the table's last key, before its trailing comments (which belong
    to the next table)."""
    body = table.value.body
    cut = _trailing(table.value)
    tail = body[cut:]
    del body[cut:]
    table[key] = value
    body.extend(tail)


def _sync_aot(doc: tomlkit.TOMLDocument, name: str, new_items: list[dict[str, Any]],
              key: Callable[[dict[str, Any]], Any], defaults: dict[str, Any],
              old_items: list[dict[str, Any]] | None = None) -> None:
    aot = doc.get(name)
    by_key = {key(item): item for item in new_items}
    kept: set[Any] = set()
    if isinstance(aot, AoT):
        known = old_items if old_items is not None and len(old_items) == len(aot) else None
        for i in reversed(range(len(aot))):
            k = key(known[i] if known else _plain(aot[i]))
            if k in by_key and k not in kept:
                kept.add(k)
                if known is None or known[i] != by_key[k]:
                    _sync_table(aot[i], by_key[k], defaults)
            else:
                _remove_table(doc, name, aot, i)
    added = [item for item in new_items if key(item) not in kept]
    if not added and isinstance(aot, AoT) and len(aot) == 0:
        del doc[name]
        return
    if not added:
        return
    if not isinstance(aot, AoT):
        if name in doc:
            del doc[name]
        _end_with_blank_line(_last_container(doc))
        aot = tomlkit.aot()
        doc.add(name, aot)
    for item in added:
        if len(aot):
            _end_with_blank_line(aot[-1].value)
        t = tomlkit.table()
        for k, v in item.items():
            if k == "targets":
                t.add("targets", _render_targets(v))
            elif defaults.get(k, _MISSING) != v:
                t.add(k, v)
        aot.append(t)


# Comments above a table belong, in tomlkit's model, to the end of the table before it.
# Removing a table therefore moves its trailing comments (which describe the next table)
# to its predecessor, and drops its own heading comment from there.


def _trailing(c: Container) -> int:
    """Index where the trailing comments/blank lines of a container's body start."""
    n = len(c.body)
    while n and c.body[n - 1][0] is None and isinstance(c.body[n - 1][1], Comment | Whitespace):
        n -= 1
    return n


def _previous_container(doc: tomlkit.TOMLDocument, name: str, aot: AoT, i: int
                        ) -> Container | None:
    if i > 0:
        return aot[i - 1].value
    keys = [k.key if k is not None else None for k, _ in doc.body]
    at = keys.index(name)
    if at > 0:
        prev = doc.body[at - 1][1]
        if isinstance(prev, Table):
            return prev.value
        if isinstance(prev, AoT) and len(prev):
            return prev[-1].value
    return None


def _remove_table(doc: tomlkit.TOMLDocument, name: str, aot: AoT, i: int) -> None:
    table = aot[i].value
    moved: list[Item] = [item for _, item in table.body[_trailing(table):]]
    prev = _previous_container(doc, name, aot, i)
    del aot[i]
    if prev is None:
        return
    # Drop the removed table's heading comment (the comment block right above it).
    start = _trailing(prev)
    n = len(prev.body)
    while n > start and isinstance(prev.body[n - 1][1], Comment):
        n -= 1
    del prev.body[n:]
    for item in moved:
        prev.body.append((None, item))


def _last_container(doc: tomlkit.TOMLDocument) -> Container:
    if doc.body:
        last = doc.body[-1][1]
        if isinstance(last, Table):
            return last.value
        if isinstance(last, AoT) and len(last):
            return last[-1].value
    return doc


def _end_with_blank_line(c: Container) -> None:
    """A blank line before a table appended after ``c`` (as a person would write it)."""
    if not c.body:
        return
    text = c.as_string()
    if not text.endswith("\n\n"):
        c.body.append((None, Whitespace("\n" if text.endswith("\n") else "\n\n")))


def _sync_targets(table: Table, targets: list[dict[str, Any]]) -> None:
    """Edit the targets array in place where possible: drop removed targets, change
    weights, append new ones, so the comments beside kept targets survive. A reordering
    rewrites the array."""
    cur = table.get("targets")
    new_keys = [(t["ip"], t["port"]) for t in targets]
    if not isinstance(cur, Array) or not all(isinstance(c, InlineTable) for c in cur):
        table["targets"] = _render_targets(targets)
        return
    cur_keys = [(c.get("ip"), c.get("port")) for c in cur]
    kept = [k for k in cur_keys if k in new_keys]
    if new_keys[:len(kept)] != kept:
        table["targets"] = _render_targets(targets)
        return
    for i in reversed(range(len(cur_keys))):
        if cur_keys[i] not in new_keys:
            del cur[i]
    for i, t in enumerate(targets[:len(kept)]):
        have = cur[i].get("weight")
        if have is None:
            if len(targets) > 1 or t["weight"] != 100:  # a lone target may omit it
                cur[i] = _inline_target(t)
        elif have != t["weight"]:
            cur[i]["weight"] = t["weight"]
    for t in targets[len(kept):]:
        cur.append(_inline_target(t))


def _inline_target(t: dict[str, Any]) -> InlineTable:
    line = f'x = {{ ip = "{t["ip"]}", port = {t["port"]}, weight = {t["weight"]} }}\n'
    item = tomlkit.parse(line)["x"]
    assert isinstance(item, InlineTable)   # the line above spells one
    return item


def _render_targets(targets: list[dict[str, Any]]) -> Array:
    lines = "".join(f'  {{ ip = "{t["ip"]}", port = {t["port"]}, weight = {t["weight"]} }},\n'
                    for t in targets)
    item = tomlkit.parse(f"targets = [\n{lines}]\n")["targets"]
    assert isinstance(item, Array)         # the text above spells one
    return item
