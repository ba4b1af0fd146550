"""Build a console for an Instance: collector, controller, event feed, app."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lbtui.console.app import ConsoleApp
from lbtui.console.data.collector import Collector
from lbtui.console.data.eventfeed import EventFeed
from lbtui.console.data.names import AppliedNames
from lbtui.console.data.snapshot import InstanceInfo

if TYPE_CHECKING:
    from lbtui.console.data.cluster import ClusterCollector
    from lbtui.control.clusterfile import Cluster


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


def build_cluster_app(cluster: Cluster, *, refresh_interval: float | None = 1.0,
                      events: bool = True, start_view: str = "connections"
                      ) -> tuple[ConsoleApp, ClusterCollector]:
    """The console over a cluster's nodes (all instances on this host): one collector
    and event feed per node, edits through ``ClusterController`` (every node, all or
    nothing). Read-only, and saying why, when no node has a config file. The caller
    closes the collector (its event threads) after the app ran."""
    from lbtui.console.data.cluster import ClusterCollector, LiveNode
    from lbtui.control.cluster import ClusterController

    try:
        controller: ClusterController | None = ClusterController(cluster.nodes,
                                                                  source="console")
    except (ValueError, OSError, RuntimeError):
        controller = None
    label = cluster.name or ",".join(n.name for n in cluster.nodes)
    collector = ClusterCollector(label, [LiveNode(n, events) for n in cluster.nodes])
    app = ConsoleApp(collector, controller=controller, feed=None,
                     refresh_interval=refresh_interval, start_view=start_view)
    return app, collector
