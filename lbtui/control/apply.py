"""Make the maps hold exactly what a Config says, all or nothing.

``desired_entries`` turns a config into the map entries it wants (listen, source-route,
SNI, settings and listener-address maps, built by ``lbtui.maps``, the one place that knows
their bytes); ``sync`` plans the difference against the maps and applies it as one
transaction (``lbtui.maps.transaction``), after marking the datapath's port prefilter.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from lbtui import abi
from lbtui.maps import MapSet, mark_ports
from lbtui.maps.maglev import TablePlanner, group_id
from lbtui.maps.routes import (
    listen_entry,
    listener_flags,
    sni_route_entry,
    source_route_entry,
    vip_entry,
)
from lbtui.maps.settings import setting_entry
from lbtui.maps.transaction import Entries, Transaction, current_entries, empty, plan, put
from lbtui.model import Config, Route, uses_maglev

IfindexOf = Callable[[Sequence[str]], list[int]]


def desired_entries(config: Config, ifindex_of: IfindexOf,
                    out_of_rotation: Collection[str] = (),
                    tables: TablePlanner | None = None) -> Entries:
    """The entries ``config`` wants; targets in ``out_of_rotation`` ("ip:port", taken out
    by active health checks) get weight 0 in the maps (``TargetGroup.in_rotation``).
    ``tables`` places the lookup tables of Maglev groups (required if there are any)."""
    out = empty()
    down = frozenset(out_of_rotation)

    def table(route: Route) -> int | None:
        if not uses_maglev(route):
            return None
        if tables is None:
            raise ValueError(f"{route.key}: a Maglev group needs the maglev map")
        return tables.table_for(group_id(route.key), route.group.in_rotation(down))

    for lst in config.listeners:
        flags = listener_flags(stats=lst.stats, sni=lst.sni, protocol=lst.protocol,
                               address=lst.address)
        for ifindex in ifindex_of(config.listener_interfaces(lst)):
            put(out, "listen", *listen_entry(ifindex, lst.port, lst.group.in_rotation(down),
                                             flags, table(lst)))
        if lst.address:
            put(out, "vips", *vip_entry(lst.address, lst.port))
    for src in config.source_routes:
        flags = abi.ROUTE_F_STATS if src.stats else 0
        put(out, "config", *source_route_entry(src.cidr, src.group.in_rotation(down),
                                                 flags, table(src)))
    for sni in config.sni_routes:
        put(out, "sni", *sni_route_entry(sni.hostname, sni.group.in_rotation(down),
                                         table=table(sni)), sni.hostname)
    if tables is not None:
        for key, value in tables.entries():
            put(out, "maglev", key, value)
    st = config.settings
    put(out, "settings", *setting_entry(abi.SETTING_STATS_ENABLED, int(st.stats)))
    put(out, "settings", *setting_entry(abi.SETTING_CONN_TIMEOUT_S, st.connection_timeout))
    put(out, "settings", *setting_entry(abi.SETTING_SYN_FLOOD_RATE, st.syn_flood_rate))
    return out


def mark_config_ports(maps: MapSet, config: Config) -> None:
    """Set the datapath's port prefilter for every listener port and every port a target
    answers from (bits are only ever added: a route never lacks its bits)."""
    targets = [t.port for x in config.listeners if not x.sni for t in x.group.targets]
    targets += [t.port for r in config.source_routes for t in r.group.targets]
    mark_ports(maps.ports_map, listen=[x.port for x in config.listeners], targets=targets)


def sync(maps: MapSet, config: Config, ifindex_of: IfindexOf,
         out_of_rotation: Collection[str] = ()) -> Transaction:
    """Make the maps match ``config``; returns the applied transaction (for rollback if a
    later step fails). Raises (after rolling back) if a map update fails."""
    current = current_entries(maps)
    staying = {group_id(r.key) for r in config.routes() if uses_maglev(r)}
    tables = TablePlanner.of(maps.maglev_map, current, staying)
    changes = plan(maps, desired_entries(config, ifindex_of, out_of_rotation, tables), current)
    mark_config_ports(maps, config)
    txn = Transaction()
    txn.apply(changes)
    return txn
