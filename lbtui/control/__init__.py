"""Control plane: the config file, a running instance, run-time edits, serve/down/ctl.

    from lbtui.control import Controller, Instance, load_config

Names are imported lazily, so ``import lbtui.control`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ConfigError": "config", "load_config": "config", "parse_config": "config",
    "save_config": "configfile",
    "Instance": "instance", "InstanceError": "instance", "PIN_ROOT": "instance",
    "Control": "controller", "Controller": "controller", "GroupRef": "controller",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"lbtui.control.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'lbtui.control' has no attribute {name!r}")
