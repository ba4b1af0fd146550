"""Build a console for an Instance: collector, controller, event feed, app."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lbtui.console.app import ConsoleApp
from lbtui.console.data.collector import Collector
from lbtui.console.data.eventfeed import EventFeed
from lbtui.console.data.names import AppliedNames
from lbtui.console.data.snapshot import InstanceInfo


def instance_info(inst: Any) -> InstanceInfo:
    """Header facts from the instance's attachments and state file (no map reads)."""
    from lbtui.control.state import read_state

    state = read_state(inst.name) or {}
    cfg = inst.config
    atts = inst.attachments()
    clients = state.get("interfaces") or (list(cfg.datapath.interfaces) if cfg else [])
    replies = state.get("reply_interfaces") or (
        list(cfg.datapath.reply_interfaces) if cfg else [])
    modes = sorted({a.get("mode") or "?" for a in atts}) or ["not attached"]
    return InstanceInfo(
        name=inst.name, interfaces=tuple(clients), reply_interfaces=tuple(replies),
        xdp_mode="/".join(modes), netns=inst.netns, started_wall=state.get("started"),
        ifnames={a["ifindex"]: a["ifname"] for a in atts if a.get("ifindex")},
        owned=bool(getattr(inst, "managed", False)))


def build_app(inst: Any, *, config_path: Path | None = None,
              refresh_interval: float | None = 1.0, events: bool = True,
              start_view: str = "connections") -> ConsoleApp:
    """The console for ``inst``. Edits need a config file (the Controller persists every
    change); without one the console is read-only and says so."""
    from lbtui.control.controller import Controller

    try:
        controller: Controller | None = Controller(inst, config_path, source="console")
    except (ValueError, OSError):
        controller = None
    info = instance_info(inst)
    sweep_interval = inst.config.settings.sweep_interval if inst.config else 5.0
    collector = Collector(inst.maps, info, sweep=inst.sweep if info.owned else None,
                          sweep_interval=sweep_interval, names=AppliedNames(inst.name))
    return ConsoleApp(collector, controller=controller, instance=inst,
                      feed=EventFeed() if events else None,
                      refresh_interval=refresh_interval, start_view=start_view)
