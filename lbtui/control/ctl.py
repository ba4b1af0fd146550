"""``lbtui ctl``: scriptable control of a running instance.

Reads go straight to the pinned maps (``Instance.attach``); edits go through the
``Controller`` (edit lock, all-or-nothing map changes, config file written back). Every
listing takes ``--json`` and prints one ``lbtui.envelope`` document. Exit codes
(``lbtui.errors``): 0 ok, 1 runtime failure (a map update failed), 2 usage or validation
error, 3 instance not running, 4 not found (listener, route, target, connection), 5
``status`` found an interface that lost its XDP program.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import socket
import time
from collections.abc import Sequence
from typing import Any

import humanize

from lbtui import abi, envelope, errors, netns
from lbtui import maps as M
from lbtui.addr import parse_ipv4, parse_port, proto_number
from lbtui.control.cluster import ClusterController
from lbtui.control.controller import Controller, Edits, signal_serve
from lbtui.control.instance import Instance, lost_xdp_phrase
from lbtui.errors import NotFound
from lbtui.maps.maglev import group_capacity, table_size
from lbtui.model import GroupKey, Listener, SniRoute, SourceRoute
from lbtui.targets import TargetGroup

log = logging.getLogger(__name__)
SETTABLE = ("stats", "connection_timeout", "sweep_interval")


# --- argument parsing helpers ------------------------------------------------------------


def parse_target(text: str) -> tuple[str, int, int | None]:
    """"IP:PORT=WEIGHT" (or "IP:PORT" for a lone target) -> (ip, port, weight)."""
    addr, eq, w = text.partition("=")
    ip, colon, port = addr.rpartition(":")
    if not colon:
        raise ValueError(f"target {text!r}: expected IP:PORT=WEIGHT, e.g. "
                         "198.18.101.2:8080=50")
    weight: int | None = None
    if eq:
        if not w.strip().isdigit():
            raise ValueError(f"target {text!r}: weight {w!r} must be an integer 0..100")
        weight = int(w)
    return str(parse_ipv4(ip, f"target {text!r}")), parse_port(port, f"target {text!r}"), weight


def parse_group(texts: Sequence[str]) -> TargetGroup:
    return TargetGroup.of([parse_target(t) for t in texts])


def parse_endpoint(text: str, what: str) -> tuple[str, int]:
    ip, colon, port = text.rpartition(":")
    if not colon:
        raise ValueError(f"{what} {text!r}: expected IP:PORT")
    return str(parse_ipv4(ip, what)), parse_port(port, what)


def parse_key(kind: str, key: str) -> GroupKey:
    return GroupKey.of(kind, key)


# --- output ----------------------------------------------------------------------------


def emit(args: argparse.Namespace, data: Any, human: str) -> None:
    """The command's result: a JSON envelope with ``--json``, else ``human``."""
    if getattr(args, "json", False):
        print(envelope.dumps(envelope.ok(data)))
    else:
        print(human)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    if not rows:
        return "(none)"
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*headers).rstrip()] + [fmt.format(*r).rstrip() for r in cells])


# --- reads -----------------------------------------------------------------------------


def _ifname_of(inst: Instance) -> dict[int, str]:
    names: dict[int, str] = {}
    with netns.inside(inst.netns):
        for idx, name in socket.if_nameindex():
            names[idx] = name
    return names


def _protocol(flags: int) -> str:
    tcp, udp = flags & abi.ROUTE_F_TCP, flags & abi.ROUTE_F_UDP
    return "tcp" if tcp and not udp else "udp" if udp and not tcp else "both"


def listeners_data(inst: Instance) -> list[dict[str, Any]]:
    """Listeners as the maps hold them, one row per port (interfaces merged)."""
    names = _ifname_of(inst)
    by_port: dict[int, dict[str, Any]] = {}
    for rec in M.list_listen_ports(inst.maps.listen_map):
        row = by_port.setdefault(rec.port, {
            "port": rec.port, "protocol": _protocol(rec.route.flags), "interfaces": [],
            "stats": bool(rec.route.flags & abi.ROUTE_F_STATS),
            "sni": bool(rec.route.flags & abi.ROUTE_F_SNI), "hash": rec.route.hash,
            "targets": [vars_target(t) for t in rec.route.targets]})
        row["interfaces"].append(names.get(rec.ifindex, f"ifindex {rec.ifindex}"))
    return [by_port[p] for p in sorted(by_port)]


def vars_target(t: Any) -> dict[str, Any]:
    return {"ip": t.ip, "port": t.port, "weight": t.weight}


def sources_data(inst: Instance) -> list[dict[str, Any]]:
    return [{"cidr": r.cidr, "stats": bool(r.route.flags & abi.ROUTE_F_STATS),
             "hash": r.route.hash, "targets": [vars_target(t) for t in r.route.targets]}
            for r in M.list_source_routes(inst.maps.config_map)]


def sni_data(inst: Instance) -> list[dict[str, Any]]:
    return [{"hostname": r.hostname, "hash": f"{r.hostname_hash:016x}",
             "pick": r.route.hash, "targets": [vars_target(t) for t in r.route.targets]}
            for r in M.list_sni_routes(inst.maps.sni_map)]


def _targets_str(ts: list[dict[str, Any]]) -> str:
    return ", ".join(f"{t['ip']}:{t['port']} w{t['weight']}" for t in ts)


def cmd_listeners_list(args: argparse.Namespace, inst: Instance) -> int:
    data = listeners_data(inst)
    emit(args, data, table(
        ["PORT", "PROTO", "INTERFACES", "FLAGS", "HASH", "TARGETS"],
        [[d["port"], d["protocol"], ",".join(d["interfaces"]),
          ",".join(f for f in ("stats" if d["stats"] else "", "sni" if d["sni"] else "") if f)
          or "-", d["hash"], _targets_str(d["targets"])] for d in data]))
    return 0


def cmd_sources_list(args: argparse.Namespace, inst: Instance) -> int:
    data = sources_data(inst)
    emit(args, data, table(["CIDR", "FLAGS", "HASH", "TARGETS"],
                           [[d["cidr"], "stats" if d["stats"] else "-", d["hash"],
                             _targets_str(d["targets"])] for d in data]))
    return 0


def cmd_sni_list(args: argparse.Namespace, inst: Instance) -> int:
    data = sni_data(inst)
    emit(args, data, table(["HOSTNAME", "HASH", "PICK", "TARGETS"],
                           [[d["hostname"] or "?", d["hash"], d["pick"],
                             _targets_str(d["targets"])] for d in data]))
    return 0


def _conn_row(c: M.Connection, now: int) -> dict[str, Any]:
    d = c.to_dict()
    d["age_s"] = round(max(0, now - c.created_ns) / 1e9, 3)
    d["idle_s"] = round(max(0, now - c.last_seen_ns) / 1e9, 3)
    return d


def cmd_connections_list(args: argparse.Namespace, inst: Instance) -> int:
    now = time.monotonic_ns()
    conns = M.list_connections(inst.maps.conntrack_map)
    if args.target:
        ip, port = parse_endpoint(args.target, "--target")
        conns = [c for c in conns if (c.target_ip, c.target_port) == (ip, port)]
    if args.client:
        ip = str(parse_ipv4(args.client, "--client"))
        conns = [c for c in conns if c.client_ip == ip]
    conns.sort(key=lambda c: c.created_ns)
    total = len(conns)
    if args.limit is not None:
        conns = conns[:args.limit]
    rows = [_conn_row(c, now) for c in conns]
    human = table(
        ["PROTO", "CLIENT", "VIP", "TARGET", "STATE", "AGE", "IDLE", "PKTS", "BYTES"],
        [[r["proto"], f"{r['client_ip']}:{r['client_port']}",
          f"{r['vip_ip']}:{r['vip_port']}", f"{r['target_ip']}:{r['target_port']}",
          r["state"], f"{r['age_s']:.0f}s", f"{r['idle_s']:.0f}s",
          f"{r['packets_fwd']}/{r['packets_rev']}",
          f"{humanize.naturalsize(r['bytes_fwd'], binary=True)}/"
          f"{humanize.naturalsize(r['bytes_rev'], binary=True)}"] for r in rows])
    if len(rows) < total:
        human += f"\n({len(rows)} of {total} shown; --limit to change)"
    emit(args, rows, human)
    return 0


def _five_tuple(args: argparse.Namespace) -> M.FiveTuple:
    cip, cport = parse_endpoint(args.client, "client")
    vip, vport = parse_endpoint(args.vip, "vip")
    return M.FiveTuple(cip, vip, cport, vport, proto_number(args.proto))


def cmd_connections_lookup(args: argparse.Namespace, inst: Instance) -> int:
    t = _five_tuple(args)
    c = M.lookup_connection(inst.maps.conntrack_map, t)
    if c is None:
        raise NotFound(f"no tracked connection {t}")
    r = _conn_row(c, time.monotonic_ns())
    emit(args, r, "\n".join(f"{k}: {v}" for k, v in r.items()))
    return 0


def cmd_connections_delete(args: argparse.Namespace, inst: Instance) -> int:
    t = _five_tuple(args)
    # The conntrack map alone: deleting a flow needs no config file.
    if not M.delete_connection(inst.maps.conntrack_map, t):
        raise NotFound(f"no tracked connection {t}")
    emit(args, {"deleted": str(t)}, f"deleted {t}")
    return 0


def settings_data(inst: Instance) -> dict[str, Any]:
    st = inst.config.settings if inst.config else None
    return {"stats": M.stats_enabled(inst.maps.settings_map),
            "connection_timeout": M.get_connection_timeout(inst.maps.settings_map),
            "sweep_interval": st.sweep_interval if st else None,
            "max_connections": inst.maps.conntrack_map.max_entries,
            "max_routes": inst.maps.config_map.max_entries,
            "max_sni_routes": inst.maps.sni_map.max_entries,
            "ringbuf_size": inst.maps.stats_ringbuf.max_entries,
            "maglev_table_size": table_size(inst.maps.maglev_map),
            "max_maglev_groups": group_capacity(inst.maps.maglev_map)}


def cmd_settings_get(args: argparse.Namespace, inst: Instance) -> int:
    data = settings_data(inst)
    if args.name:
        if args.name not in data:
            raise ValueError(f"unknown setting {args.name!r}; known: {', '.join(data)}")
        emit(args, {args.name: data[args.name]}, str(data[args.name]))
    else:
        emit(args, data, "\n".join(f"{k} = {v}" for k, v in data.items()))
    return 0


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "on", "yes"):
        return True
    if low in ("0", "false", "off", "no"):
        return False
    raise ValueError(f"{text!r}: expected true or false")


def cmd_settings_set(args: argparse.Namespace, inst: Instance) -> int:
    ctl = controller(args, inst)
    name, value = args.name, args.value
    if name == "stats":
        ctl.set_stats(_bool(value))
    elif name == "connection_timeout":
        if not value.strip().isdigit():
            raise ValueError(f"connection_timeout {value!r}: an integer number of seconds")
        ctl.set_connection_timeout(int(value))
    elif name == "sweep_interval":
        try:
            seconds = float(value)
        except ValueError:
            raise ValueError(f"sweep_interval {value!r}: a number of seconds") from None
        ctl.set_sweep_interval(seconds)            # the controller signals serve
    else:
        raise ValueError(f"setting {name!r} cannot be changed at run time; settable: "
                         f"{', '.join(SETTABLE)} (map sizes: edit the file, then "
                         "`lbtui down` and serve again)")
    emit(args, {name: settings_data(inst)[name]}, f"{name} = {settings_data(inst)[name]}")
    return 0


def status_text(s: dict[str, Any]) -> str:
    lines = [f"instance   {s['instance']}",
             "manager    " + (f"pid {s['manager_pid']}" if s["manager_pid"] else
                              "none (kept: forwarding without a manager)" if s["kept"]
                              else "none"),
             f"config     {s['config_path'] or '-'}",
             f"pins       {s['pin_dir']}",
             f"netns      {s['netns'] or '-'}",
             f"prog id    {s['prog_id']}",
             "interfaces"]
    for i in s["interfaces"]:
        mark = "" if i["ours"] else "  (NOT ours)" if i["prog_id"] else "  (detached)"
        lines.append(f"  {i['ifname']:<12} {i['role']:<7} {i['xdp_mode'] or '-':<8} "
                     f"prog {i['prog_id']}{mark}")
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(i["reasons"].items()))
        lines.append(f"    {'to the stack:':<14} {reasons or 'nothing'}")
    lines.append("egress (where XDP may redirect)")
    for e in s["egress"]:
        lines.append(f"  {e['ifname']:<12} {'redirect' if e['redirect'] else 'stack':<9}"
                     f"{e['why']}")
    lines.append(f"local addresses {', '.join(s['local_addresses']) or '-'}")
    lines.append("maps")
    for name, m in s["maps"].items():
        pct = 100 * m["entries"] / m["max_entries"] if m["max_entries"] else 0
        extra = f" ({m['flows']} flows)" if "flows" in m else ""
        lines.append(f"  {name:<14} {m['entries']:>7} / {m['max_entries']:<7} "
                     f"{pct:5.1f}%{extra}")
    lines.append(f"settings   stats={'on' if s['settings']['stats'] else 'off'} "
                 f"connection_timeout={s['settings']['connection_timeout']}s "
                 f"syn_flood_rate={s['settings'].get('syn_flood_rate') or 'off'}")
    lines.append(f"events lost {s['events_lost']}")
    lines.append("counters   " + " ".join(f"{k}={v}" for k, v in s["counters"].items()))
    return "\n".join(lines)


def lost_xdp(s: dict[str, Any]) -> list[str]:
    """Interfaces of a status document that no longer run this instance's program, each
    as a phrase ("b2 has no XDP program")."""
    return [lost_xdp_phrase(i["ifname"], i["prog_id"]) for i in s["interfaces"]
            if not i["ours"]]


def cmd_status(args: argparse.Namespace, inst: Instance) -> int:
    """The instance's state; exit 5 (degraded) when an interface lost our XDP program."""
    s = inst.status()
    lost = lost_xdp(s)
    if not lost:
        emit(args, s, status_text(s))
        return errors.OK
    message = (f"instance {inst.name} is degraded: {'; '.join(lost)}. Restart serve to "
               "attach its program again (a kept instance re-adopts its maps and "
               "connections).")
    if getattr(args, "json", False):
        print(envelope.dumps(envelope.error("degraded", errors.DEGRADED, message, data=s)))
    else:
        print(status_text(s), flush=True)
        log.error(message)
    return errors.DEGRADED


# --- edits -----------------------------------------------------------------------------


def controller(args: argparse.Namespace, inst: Instance) -> Edits:
    """The instance's Controller, or, with several instances, the cluster's (``run``)."""
    cluster = getattr(args, "cluster", None)
    if isinstance(cluster, ClusterController):
        return cluster
    path = getattr(args, "config", None)
    if path is None and inst.config_path is None:
        raise RuntimeError(f"instance {inst.name!r} has no recorded config file; pass "
                           "--config FILE")
    return Controller(inst, path)


def _done(args: argparse.Namespace, verb: str, key: str | int, what: str,
          group: TargetGroup | None = None) -> int:
    """Report an added or removed listener or route (``what`` names it)."""
    emit(args, {verb: key}, f"{what} {verb}" + (f" ({group})" if group is not None else ""))
    return 0


def cmd_listeners_add(args: argparse.Namespace, inst: Instance) -> int:
    group = parse_group(args.targets)
    lst = Listener(parse_port(args.port, "port"), group, args.protocol,
                   args.interface or None, not args.no_stats, args.sni, args.address,
                   args.hash)
    controller(args, inst).add_listener(lst)
    return _done(args, "added", lst.port, f"listener :{lst.port}", group)


def cmd_listeners_remove(args: argparse.Namespace, inst: Instance) -> int:
    port = parse_port(args.port, "port")
    controller(args, inst).remove_listener(port)
    return _done(args, "removed", port, f"listener :{port}")


def cmd_sources_add(args: argparse.Namespace, inst: Instance) -> int:
    group = parse_group(args.targets)
    controller(args, inst).add_source_route(SourceRoute(args.cidr, group,
                                                        stats=not args.no_stats,
                                                        hash=args.hash))
    return _done(args, "added", args.cidr, f"source route {args.cidr}", group)


def cmd_sources_remove(args: argparse.Namespace, inst: Instance) -> int:
    controller(args, inst).remove_source_route(args.cidr)
    return _done(args, "removed", args.cidr, f"source route {args.cidr}")


def cmd_sni_add(args: argparse.Namespace, inst: Instance) -> int:
    group = parse_group(args.targets)
    controller(args, inst).add_sni_route(SniRoute(args.hostname, group, args.hash))
    return _done(args, "added", args.hostname, f"SNI route {args.hostname}", group)


def cmd_sni_remove(args: argparse.Namespace, inst: Instance) -> int:
    controller(args, inst).remove_sni_route(args.hostname)
    return _done(args, "removed", args.hostname, f"SNI route {args.hostname}")


def cmd_targets(args: argparse.Namespace, inst: Instance) -> int:
    ctl = controller(args, inst)
    key = parse_key(args.kind, args.key)
    group = parse_group(args.targets)
    ctl.set_weights(key, group)
    emit(args, {"kind": key.kind.value, "key": key.key, "targets": group.to_list()},
         f"{key}: {group}")
    return 0


def cmd_weight(args: argparse.Namespace, inst: Instance) -> int:
    ctl = controller(args, inst)
    key = parse_key(args.kind, args.key)
    ip, port = parse_endpoint(args.target, "target")
    if not args.weight.strip().isdigit():
        raise ValueError(f"weight {args.weight!r} must be an integer 0..100")
    ctl.set_weight(key, f"{ip}:{port}", int(args.weight))
    group = ctl.group(key)
    emit(args, {"kind": key.kind.value, "key": key.key, "targets": group.to_list()},
         f"{key}: {group}")
    return 0


def cmd_hash(args: argparse.Namespace, inst: Instance) -> int:
    key = parse_key(args.kind, args.key)
    controller(args, inst).set_hash(key, args.hash)
    emit(args, {"kind": key.kind.value, "key": key.key, "hash": args.hash},
         f"{key}: hash {args.hash} (new connections; established ones keep their target)")
    return 0


def cmd_reload(args: argparse.Namespace, inst: Instance) -> int:
    pid = signal_serve(inst.name)
    if pid is None:
        raise errors.NotRunning(f"instance {inst.name!r} has no running serve to reload")
    emit(args, {"signalled": pid}, f"asked serve (pid {pid}) to reload its config file")
    return 0


# --- entry -----------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    if "," in args.instance:
        return run_cluster(args)
    inst = Instance.attach(args.instance)
    try:
        return int(args.ctl_func(args, inst) or 0)
    finally:
        inst.close()


# What several instances take: edits, each one transaction over all of them.
CLUSTER_EDITS = (cmd_listeners_add, cmd_listeners_remove, cmd_sources_add,
                 cmd_sources_remove, cmd_sni_add, cmd_sni_remove, cmd_targets, cmd_weight,
                 cmd_hash, cmd_settings_set)


def run_cluster(args: argparse.Namespace) -> int:
    """An edit over several instances (``--instance a,b``), all or nothing
    (``lbtui.control.cluster``); what it prints is read from the first node."""
    from lbtui.control.clusterfile import parse_attach

    if args.ctl_func not in CLUSTER_EDITS:
        raise errors.UsageError(
            f"--instance {args.instance}: several instances take edits only (listeners, "
            "sources and sni add/remove, targets, weight, hash, settings set); read one "
            "node with --instance NAME")
    if getattr(args, "config", None) is not None:
        raise errors.UsageError("--config names one file; with several instances each "
                                "node's recorded config file is edited")
    cluster = ClusterController(parse_attach(args.instance).nodes, source="ctl")
    args.cluster = cluster
    inst: Instance | None = None
    for node in cluster.nodes:
        with contextlib.suppress(errors.NotRunning):
            inst = Instance.attach(node.instance)
            break
    if inst is None:
        raise errors.NotRunning(f"none of {args.instance} is running")
    try:
        code = int(args.ctl_func(args, inst) or 0)
    finally:
        inst.close()
    if not getattr(args, "json", False):
        print(f"(on {len(cluster.nodes)} nodes: "
              f"{', '.join(n.name for n in cluster.nodes)}; {cluster.last_edit_ms:.0f} ms)")
    return code
