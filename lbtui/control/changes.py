"""What a configuration change changed, one line per group or setting: the audit trail
(``old -> new``) every edit leaves in the log and in every console's Events view."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from lbtui.control.eventhub import announce
from lbtui.maglev import DEFAULT_HASH
from lbtui.model import Config, Listener, Route

if TYPE_CHECKING:
    from lbtui.control.instance import Instance

log = logging.getLogger("lbtui.control")


def _options(r: Route) -> dict[str, Any]:
    hash_name = r.hash or DEFAULT_HASH
    if isinstance(r, Listener):
        return {"protocol": r.protocol, "interfaces": r.interfaces, "stats": r.stats,
                "sni": r.sni, "address": r.address, "hash": hash_name}
    return {"stats": getattr(r, "stats", True), "hash": hash_name}


def describe(old: Config, new: Config) -> list[str]:
    """Human lines for what differs between two configs (empty: nothing)."""
    out: list[str] = []
    before = {r.key: r for r in old.routes()}
    after = {r.key: r for r in new.routes()}
    for key in sorted(before.keys() | after.keys()):
        a, b = before.get(key), after.get(key)
        if a is None and b is not None:
            out.append(f"added {key}: {b.group}")
        elif b is None and a is not None:
            out.append(f"removed {key} (was {a.group})")
        elif a is not None and b is not None:
            if a.group != b.group:
                out.append(f"{key}: {a.group} -> {b.group}")
            oa, ob = _options(a), _options(b)
            out += [f"{key} {k}: {oa[k]} -> {ob[k]}" for k in oa if oa[k] != ob[k]]
    for section in ("settings", "health"):
        va, vb = vars(getattr(old, section)), vars(getattr(new, section))
        out += [f"{section}.{k}: {va[k]} -> {vb[k]}" for k in va if va[k] != vb[k]]
    return out


def audit(instance: Instance, source: str, old: Config, new: Config) -> None:
    """Log a change, one line per group or setting, and show it to every viewer (through
    the hub when another process manages the instance)."""
    user = _user()
    for line in describe(old, new):
        if instance.hub is not None:
            instance.hub.announce_edit({"source": source, "user": user, "change": line})
        else:
            log.info("config change by %s (%s): %s", source, user, line)
            announce(instance.name, source, user, line)


def _user() -> str:
    """Who is editing: the login behind sudo, else the process's user."""
    import getpass

    try:
        return os.environ.get("SUDO_USER") or getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
