"""``lbtui console``: open the console on a new (``--config``) or running (``--attach``)
instance, or on several running instances at once (``--attach a,b``, ``--cluster FILE``)."""

from __future__ import annotations

import argparse

from lbtui.names import INSTANCE, arg_type_list


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "console", help="the operator console (loads the datapath, or attaches)",
        description="Open the operator console. With --config it loads the datapath like "
        "`serve` and asks on quit whether to keep it running; with --attach it opens an "
        "instance that is already running and changes nothing on its own. With several "
        "instances (--attach a,b or --cluster FILE) it shows each node's and the total "
        "traffic, and every edit goes to every node, all or nothing.")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--config", metavar="FILE", help="config file: start the datapath")
    g.add_argument("--attach", metavar="INSTANCE[,INSTANCE...]", nargs="?",
                   const="default", type=arg_type_list(INSTANCE),
                   help="attach to a running instance (default: %(const)s), or to several: "
                   "a comma-separated list")
    g.add_argument("--cluster", metavar="FILE",
                   help="attach to the nodes a cluster file names (TOML, [[node]] tables "
                   "with name and instance; `lbtui lab up --nodes N` writes one)")
    p.add_argument("--refresh", type=float, default=1.0, metavar="SECONDS",
                   help="refresh period (default: %(default)s)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.cluster or (args.attach and "," in args.attach):
        return run_cluster(args)
    return run_single(args)


def run_cluster(args: argparse.Namespace) -> int:
    """The console over several instances of this host."""
    from lbtui.cli import UsageError
    from lbtui.console.session import build_cluster_app
    from lbtui.control.clusterfile import load_cluster, parse_attach
    from lbtui.control.instance import pin_dir_of, pins_complete
    from lbtui.errors import NotRunning

    if args.refresh <= 0:
        raise UsageError("--refresh must be a positive number of seconds")
    cluster = load_cluster(args.cluster) if args.cluster else parse_attach(args.attach)
    pinned = [n for n in cluster.nodes if pins_complete(pin_dir_of(n.instance))]
    if not pinned:
        raise NotRunning("no node of the cluster is running: " + ", ".join(
            n.label for n in cluster.nodes) + " (start them with `lbtui serve`)")
    app, collector = build_cluster_app(cluster, refresh_interval=args.refresh)
    try:
        app.run()
    finally:
        collector.close()
    return 0


def run_single(args: argparse.Namespace) -> int:
    from lbtui.cli import UsageError
    from lbtui.console.session import build_app
    from lbtui.control.config import load_config
    from lbtui.control.instance import Instance

    if args.refresh <= 0:
        raise UsageError("--refresh must be a positive number of seconds")
    if args.config:
        config = load_config(args.config)   # ConfigError is a ValueError: exit 2
        inst = Instance.start(config, progress=lambda m: print(f"lbtui console: {m}"))
    else:
        inst = Instance.attach(args.attach)
    app = None
    try:
        app = build_app(inst, refresh_interval=args.refresh)
        app.run()
    finally:
        if app is None or app.stopped is None:
            # Not released through the quit dialog (an error, or an attached console).
            keep = bool(inst.config and inst.config.datapath.keep) if inst.managed else True
            inst.stop(keep=keep)
    if app.stopped == "keep":
        print(f"lbtui console: instance {inst.name} keeps forwarding; `lbtui console "
              f"--attach {inst.name}` reopens it, `lbtui down --instance {inst.name}` "
              "stops it")
    return 0
