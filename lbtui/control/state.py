"""The state file of a running instance: /run/lbtui/<instance>.json (0600).

``serve`` records where its config file is and what it attached, so ``ctl``, an attached
console and ``down`` can find them without being told.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lbtui.control.lock import run_dir
from lbtui.files import atomic_write, remove_inside
from lbtui.names import instance_name


def state_path(instance: str) -> Path:
    return run_dir() / f"{instance_name(instance)}.json"


def read_state(instance: str) -> dict[str, Any] | None:
    try:
        return json.loads(state_path(instance).read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        return None


def write_state(instance: str, state: dict[str, Any]) -> None:
    atomic_write(state_path(instance), json.dumps(state, indent=1, sort_keys=True) + "\n")


def remove_state(instance: str) -> None:
    remove_inside(state_path(instance), run_dir())
