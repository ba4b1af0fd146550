"""The state file of a running instance: /run/lbtui/<instance>.json (0600).

``serve`` records where its config file is and what it attached, so ``ctl``, an attached
console and ``down`` can find them without being told.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lbtui.control.lock import run_dir
from lbtui.files import atomic_write, read_json_object, remove_inside
from lbtui.names import instance_name


def instance_names() -> list[str]:
    """Instances that have a state file (serving, or kept forwarding): what shell
    completion offers for ``--instance``."""
    try:
        return sorted(p.stem for p in run_dir().glob("*.json"))
    except OSError:   # not root: /run/lbtui is not ours to read
        return []


def state_path(instance: str) -> Path:
    return run_dir() / f"{instance_name(instance)}.json"


def read_state(instance: str) -> dict[str, Any] | None:
    return read_json_object(state_path(instance))


def write_state(instance: str, state: dict[str, Any]) -> None:
    atomic_write(state_path(instance), json.dumps(state, indent=1, sort_keys=True) + "\n")


def remove_state(instance: str) -> bool:
    """Remove the state and applied-config files; True if there was a state file (read
    or damaged)."""
    removed = remove_inside(state_path(instance), run_dir())
    remove_inside(applied_path(instance), run_dir())
    return removed


def applied_path(instance: str) -> Path:
    return run_dir() / f"{instance_name(instance)}.applied.json"


def write_applied(instance: str, config: dict[str, Any]) -> None:
    """Record the config the maps now hold (whoever applied it: serve, ctl, a console), so
    a reload can say what it changes."""
    atomic_write(applied_path(instance), json.dumps(config, indent=1) + "\n")


def read_applied(instance: str) -> dict[str, Any] | None:
    return read_json_object(applied_path(instance))


def update_state(instance: str, **fields: Any) -> None:
    """Change some fields of the state file (the caller holds the edit lock)."""
    write_state(instance, {**(read_state(instance) or {}), **fields})
