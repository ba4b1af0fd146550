"""Subcommands of the control plane: ``serve``, ``check``, ``down``, ``ctl``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lbtui import logs
from lbtui.control import ctl, watch
from lbtui.maglev import HASHES
from lbtui.names import INSTANCE, arg_type, arg_type_list

if TYPE_CHECKING:
    from lbtui.cli import Subparsers

DEFAULT_INSTANCE = "default"


def register(sub: Subparsers) -> None:
    p = sub.add_parser("serve", help="run an instance headless (service)",
                       description="Load the datapath, apply the config file, sweep aged "
                                   "flows; SIGINT/SIGTERM stop it, SIGHUP reloads the file.")
    p.add_argument("--config", "-c", required=True, type=Path, metavar="FILE",
                   help="TOML config file (see examples/lbtui.toml)")
    p.add_argument("--keep", action="store_true",
                   help="leave the datapath forwarding after exit (a later serve re-adopts "
                        "it without dropping connections)")
    logs.add_log_level_option(p)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("check", help="validate a config file and exit (0 valid, 2 not)",
                       description="Validate a config file with the rules serve applies, "
                                   "loading nothing: exit 0 if it is valid, 2 with every "
                                   "problem and its location if not.")
    p.add_argument("--config", "-c", required=True, type=Path, metavar="FILE",
                   help="TOML config file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("down", help="detach and unpin an instance (idempotent)")
    _instance_option(p, default=DEFAULT_INSTANCE)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=cmd_down)

    register_ctl(sub)


def _instance_option(p: argparse.ArgumentParser, several: bool = False, **kw: Any) -> None:
    """``--instance NAME`` (``several``: or NAME,NAME...), validated, and completed from
    the instances present."""
    action = p.add_argument("--instance", "-i", metavar="NAME",
                            type=arg_type_list(INSTANCE) if several else arg_type(INSTANCE),
                            **kw)
    # argcomplete reads this attribute; argparse.Action does not declare it.
    action.completer = complete_instance  # type: ignore[attr-defined]


def complete_instance(**_kw: object) -> list[str]:
    """Shell completion (argcomplete) of ``--instance``: the instances present."""
    from lbtui.control.state import instance_names

    return instance_names()


def cmd_serve(args: argparse.Namespace) -> int:
    from lbtui.control.service import serve

    return serve(args.config, keep=args.keep)


def cmd_check(args: argparse.Namespace) -> int:
    from lbtui.control.config import load_config

    c = load_config(args.config)      # ConfigError (exit 2) lists every problem
    dp = c.datapath
    summary = {"config": str(args.config), "instance": dp.instance,
               "interfaces": list(dp.interfaces), "reply_interfaces": list(dp.reply_interfaces),
               "netns": dp.netns, "listeners": len(c.listeners),
               "source_routes": len(c.source_routes), "sni_routes": len(c.sni_routes)}
    ctl.emit(args, summary,
             f"{args.config}: valid (instance {dp.instance}: {len(c.listeners)} listener(s), "
             f"{len(c.source_routes)} source route(s), {len(c.sni_routes)} SNI route(s); "
             f"XDP on {', '.join([*dp.interfaces, *dp.reply_interfaces])}"
             + (f" in netns {dp.netns})" if dp.netns else ")"))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from lbtui.control.instance import teardown
    from lbtui.control.lock import manager_lock

    lock = manager_lock(args.instance)
    if not lock.try_acquire():
        raise RuntimeError(f"instance {args.instance!r} is managed by pid "
                           f"{lock.holder() or '?'}; stop that process first (SIGTERM "
                           "stops serve cleanly)")
    try:
        done = teardown(args.instance, held=lock)
    finally:
        lock.release()
    print("\n".join(done) if done else f"instance {args.instance!r}: nothing to remove")
    return 0


def register_ctl(sub: Subparsers) -> None:
    # --json/--instance/--config are accepted before or after the command words.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output")
    _instance_option(common, default=argparse.SUPPRESS, several=True,
                     help=f"instance name (default {DEFAULT_INSTANCE}); edits take several, "
                     "comma-separated: every one changes, or none")
    common.add_argument("--config", "-c", type=Path, default=argparse.SUPPRESS,
                        metavar="FILE", help="config file to edit (default: the one serve "
                                             "recorded)")

    p = sub.add_parser("ctl", help="control a running instance", parents=[common],
                       description="List and edit listeners, routes, weights, connections "
                                   "and settings of a running instance. Exit codes: 0 ok, "
                                   "1 runtime failure, 2 usage/validation error.")
    # No set_defaults for the shared options: parents share action objects, so a default
    # set here would also reset a value given before the command words. ctl_main fills in.
    p.set_defaults(func=ctl_main, debug=False)
    cs = p.add_subparsers(dest="ctl_command", metavar="COMMAND", required=True)

    def leaf(parent: Subparsers, name: str, fn: object, help: str
             ) -> argparse.ArgumentParser:
        q = parent.add_parser(name, help=help, parents=[common])
        q.set_defaults(ctl_func=fn)
        return q

    leaf(cs, "status", ctl.cmd_status, "interfaces, XDP mode, prog ids, map fill, counters")

    def section(name: str, help: str, list_fn: object
                ) -> tuple[argparse.ArgumentParser, Subparsers]:
        """A command group; without an action it lists (``ctl listeners``)."""
        q = cs.add_parser(name, help=help, parents=[common])
        q.set_defaults(ctl_func=list_fn)
        return q, q.add_subparsers(dest=f"{name}_command", metavar="ACTION")

    target_help = "targets as IP:PORT=WEIGHT (weights sum to 100; one target may omit it)"
    hash_help = ("how new connections pick a target: weighted (default) or maglev (the same "
                 "target on every balancer with this config; see docs/scale-out.md)")

    def routes(name: str, plural: str, one: str, key: str, add_help: str,
               fns: tuple[object, object, object]) -> argparse.ArgumentParser:
        """``ctl NAME [list | add KEY TARGET... | remove KEY]``; returns the add parser."""
        list_fn, add_fn, remove_fn = fns
        _, acts = section(name, f"list/add/remove {plural}", list_fn)
        leaf(acts, "list", list_fn, f"list {plural}")
        add = leaf(acts, "add", add_fn, add_help)
        add.add_argument(key)
        add.add_argument("targets", nargs="+", metavar="TARGET", help=target_help)
        add.add_argument("--hash", choices=HASHES, help=hash_help)
        leaf(acts, "remove", remove_fn, f"remove {one}").add_argument(key)
        return add

    q = routes("listeners", "listeners", "a listener", "port", "add a listener",
               (ctl.cmd_listeners_list, ctl.cmd_listeners_add, ctl.cmd_listeners_remove))
    q.add_argument("--protocol", choices=("tcp", "udp", "both"), default="both")
    q.add_argument("--interface", action="append", metavar="IFNAME",
                   help="limit to these interfaces (repeat; default: datapath.interfaces)")
    q.add_argument("--no-stats", action="store_true", help="emit no connection events")
    q.add_argument("--sni", action="store_true", help="hand connections to the SNI splicer")
    q.add_argument("--address", metavar="IP",
                   help="the VIP it serves (SNI listeners: where the splicer listens); "
                        "default: every address local to the balancer")
    q = routes("sources", "source routes", "a source route", "cidr",
               "route clients in CIDR to targets",
               (ctl.cmd_sources_list, ctl.cmd_sources_add, ctl.cmd_sources_remove))
    q.add_argument("--no-stats", action="store_true", help="emit no connection events")
    routes("sni", "SNI routes", "an SNI route", "hostname", "route a TLS hostname to targets",
           (ctl.cmd_sni_list, ctl.cmd_sni_add, ctl.cmd_sni_remove))

    kinds = ("listener", "source", "sni")
    q = leaf(cs, "targets", ctl.cmd_targets, "replace a group's targets and weights")
    q.add_argument("kind", choices=kinds)
    q.add_argument("key", help="listener port, source CIDR or SNI hostname")
    q.add_argument("targets", nargs="+", metavar="TARGET", help=target_help)
    q = leaf(cs, "weight", ctl.cmd_weight,
             "set one target's weight (0 drains it); the others are rescaled to sum 100")
    q.add_argument("kind", choices=kinds)
    q.add_argument("key", help="listener port, source CIDR or SNI hostname")
    q.add_argument("target", metavar="IP:PORT")
    q.add_argument("weight")
    q = leaf(cs, "hash", ctl.cmd_hash,
             "set how a group picks targets for new connections (established ones stay)")
    q.add_argument("kind", choices=kinds)
    q.add_argument("key", help="listener port, source CIDR or SNI hostname")
    q.add_argument("hash", choices=HASHES, help=hash_help)

    xp, xs = section("connections", "list/look up/delete tracked connections",
                     ctl.cmd_connections_list)
    _conn_list_args(xp)
    _conn_list_args(leaf(xs, "list", ctl.cmd_connections_list, "list tracked connections"))
    for name, fn, help in (("lookup", ctl.cmd_connections_lookup, "show one connection"),
                           ("delete", ctl.cmd_connections_delete,
                            "forget a connection (its next packet picks a target anew)")):
        q = leaf(xs, name, fn, help)
        q.add_argument("client", metavar="CLIENT_IP:PORT")
        q.add_argument("vip", metavar="VIP:PORT")
        q.add_argument("--proto", choices=("tcp", "udp"), default="tcp")

    gp, gs = section("settings", "get/set settings", ctl.cmd_settings_get)
    gp.set_defaults(name=None)
    q = leaf(gs, "get", ctl.cmd_settings_get, "show settings")
    q.add_argument("name", nargs="?")
    q = leaf(gs, "set", ctl.cmd_settings_set,
             f"change a setting ({', '.join(ctl.SETTABLE)})")
    q.add_argument("name")
    q.add_argument("value")

    leaf(cs, "reload", ctl.cmd_reload, "ask serve to re-read its config file (SIGHUP)")

    q = leaf(cs, "events", watch.cmd_events,
             "recent connection events, edits and health transitions (--follow: live)")
    q.add_argument("--follow", "-f", action="store_true", help="keep printing live ones")
    leaf(cs, "health", watch.cmd_health,
         "per (group, target) health from the traffic, and the active checks")


def _conn_list_args(q: argparse.ArgumentParser) -> None:
    q.add_argument("--limit", type=int, default=argparse.SUPPRESS, metavar="N",
                   help="show at most N (oldest first)")
    q.add_argument("--target", default=argparse.SUPPRESS, metavar="IP:PORT",
                   help="only connections to this target")
    q.add_argument("--client", default=argparse.SUPPRESS, metavar="IP",
                   help="only connections from this client")
    q.set_defaults(limit=None, target=None, client=None)


def ctl_main(args: argparse.Namespace) -> int:
    for name, default in (("json", False), ("instance", DEFAULT_INSTANCE), ("config", None)):
        if not hasattr(args, name):
            setattr(args, name, default)
    return ctl.run(args)
