"""``lbtui demo`` and ``lbtui lab up | down | status | exec``."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from lbtui import envelope, errors
from lbtui.lab.lifecycle import DEFAULT_LAB, TrafficOptions
from lbtui.names import LAB, arg_type

if TYPE_CHECKING:
    from lbtui.cli import Subparsers

_TRAFFIC_FLAGS = {  # flag -> (TrafficOptions field, type, help)
    "--http-rate": ("http_rate", float, "new HTTP connections per second (client1; "
                    "client2 sends half)"),
    "--echo-conns": ("echo_conns", int, "long-lived TCP connections (echo, port 7000)"),
    "--udp-rate": ("udp_rate", float, "UDP datagrams per second (port 9000)"),
    "--tls-rate": ("tls_rate", float, "TLS handshakes per second (port 443, with SNI)"),
    "--traffic-duration": ("duration", float, "seconds until the generators stop"),
}


def add_traffic_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("traffic (bounded: see lbtui.lab.traffic.LIMITS)")
    g.add_argument("--no-traffic", action="store_true", help="start no traffic generator")
    defaults = TrafficOptions()
    for flag, (name, typ, text) in _TRAFFIC_FLAGS.items():
        g.add_argument(flag, type=typ, default=getattr(defaults, name), metavar="N",
                       help=f"{text} (default: %(default)s)")


def traffic_options(args: argparse.Namespace) -> TrafficOptions:
    """Traffic options from the flags, validated (ValueError names the flag)."""
    from lbtui.lab.traffic import TrafficSpec

    opts = TrafficOptions(enabled=not args.no_traffic, **{
        name: getattr(args, flag[2:].replace("-", "_")) for flag, (name, _t, _h)
        in _TRAFFIC_FLAGS.items()})
    TrafficSpec(http_rate=opts.http_rate, echo_conns=opts.echo_conns,
                udp_rate=opts.udp_rate, tls_rate=opts.tls_rate, tls_hosts=["x"],
                duration=opts.duration).validate()
    return opts


def traffic_argv(args: argparse.Namespace) -> list[str]:
    out = ["--no-traffic"] if args.no_traffic else []
    for flag in _TRAFFIC_FLAGS:
        out += [flag, str(getattr(args, flag[2:].replace("-", "_")))]
    return out


def require_root(what: str) -> None:
    """The lab creates network namespaces and loads BPF programs: root only."""
    if os.geteuid() != 0:
        raise PermissionError(f"{what} needs root (it creates network namespaces and loads "
                              "BPF programs): run it with sudo")


def _lab_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lab", default=DEFAULT_LAB, metavar="NAME", type=arg_type(LAB),
                   help="lab name: namespaces are lbt-NAME-* (default: %(default)s)")


def register(sub: Subparsers) -> None:
    d = sub.add_parser(
        "demo", help="the built-in demo lab with the console (nothing outside namespaces)",
        description="Build a namespace lab (2 clients, an LB, 4 backends), load the "
        "datapath with a demo config, start background traffic and open the console. "
        "Quitting removes everything.")
    _lab_arg(d)
    d.add_argument("--headless", action="store_true",
                   help="no console: print a traffic summary every few seconds")
    d.add_argument("--duration", type=float, metavar="SECONDS",
                   help="headless: stop after this long (default: until Ctrl-C)")
    d.add_argument("--report-every", type=float, default=5.0, metavar="SECONDS",
                   help="headless: summary period (default: %(default)s)")
    add_traffic_flags(d)
    d.add_argument("--debug", action="store_true", help="show tracebacks")
    d.set_defaults(func=cmd_demo)

    lab = sub.add_parser("lab", help="the demo lab without the console: up, down, status, "
                         "exec", description="The demo's namespace lab, for experiments "
                         "and tests.")
    ls = lab.add_subparsers(dest="lab_command", metavar="ACTION", required=True)
    p = ls.add_parser("up", help="build the lab, load the datapath, start traffic; returns "
                      "once it is ready (a background manager keeps it running)")
    _lab_arg(p)
    add_traffic_flags(p)
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                   help="give up if not ready by then (default: %(default)s)")
    p.add_argument("--nodes", type=int, default=1, metavar="N",
                   help="1: the demo lab (default); 2 or 3: a cluster lab, N lbtui nodes "
                   "behind a BGP router with ECMP (docs/scale-out.md; no traffic generator)")
    p.set_defaults(func=cmd_up)
    p = ls.add_parser("down", help="remove the lab: processes, XDP, pins, namespaces "
                      "(idempotent)")
    _lab_arg(p)
    p.set_defaults(func=cmd_down)
    p = ls.add_parser("status", help="namespaces, processes, XDP, datapath, traffic")
    _lab_arg(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)
    p = ls.add_parser("exec", help="run a command in a node's namespace: lb, client1..2, "
                      "backend1..4", usage="lbtui lab exec [--lab NAME] NODE -- CMD [ARG...]")
    _lab_arg(p)
    p.add_argument("node")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_exec)
    p = ls.add_parser("node", help="a cluster lab's node: drain (withdraw its path, then "
                      "stop serve), stop (serve stops as in a failure), start",
                      usage="lbtui lab node [--lab NAME] NODE drain|stop|start")
    _lab_arg(p)
    p.add_argument("node", help="node1, node2, ...")
    p.add_argument("action", choices=NODE_ACTIONS)
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="how long to wait for the router's route to change "
                   "(default: %(default)s)")
    p.set_defaults(func=cmd_node)
    for q in ls.choices.values():
        q.add_argument("--debug", action="store_true", help="show tracebacks")


# --- demo --------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from lbtui.cli import UsageError
    from lbtui.lab.demo import run_demo
    from lbtui.lab.lifecycle import LabRun
    from lbtui.lab.topology import validate_lab_name

    require_root("lbtui demo")
    validate_lab_name(args.lab)
    if args.duration is not None and args.duration <= 0:
        raise UsageError("--duration must be a positive number of seconds")
    if args.report_every <= 0:
        raise UsageError("--report-every must be a positive number of seconds")
    if not args.headless and not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("the console needs a terminal; use --headless to run without it")
    run = LabRun(args.lab, traffic_options(args))
    return run_demo(run, args.headless, args.duration, args.report_every)


# --- lab up: a background manager, with its progress relayed --------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    from lbtui.lab import topology as T
    from lbtui.lab.ownership import LabLock, pid_alive, read_meta

    require_root("lbtui lab up")
    lab = T.validate_lab_name(args.lab)
    traffic_options(args)
    if args.nodes != 1:
        return cmd_up_cluster(lab, args.nodes, args.timeout)
    holder = LabLock(lab).holder()
    if holder:
        print(f"lbtui: lab {lab} is already up (owned by pid {holder}); `lbtui lab status "
              f"--lab {lab}` shows it, `lbtui lab down --lab {lab}` removes it",
              file=sys.stderr)
        return 1
    T.STATE_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_path = T.STATE_DIR / f"{lab}.log"
    argv = [sys.executable, "-m", "lbtui.lab.manager", "--lab", lab, *traffic_argv(args)]
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(log_path, "rb") as log:  # kept open: the manager may remove the path
        proc = subprocess.Popen(argv, stdout=fd, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        os.close(fd)
        deadline = time.monotonic() + args.timeout
        try:
            while True:
                sys.stdout.write(log.read().decode(errors="replace"))
                sys.stdout.flush()
                meta = read_meta(lab)
                if meta.get("ready") and meta.get("owner_pid") == proc.pid:
                    break
                if proc.poll() is not None:
                    sys.stdout.write(log.read().decode(errors="replace"))
                    print(f"lbtui: lab {lab} did not come up (manager exited with "
                          f"{proc.returncode})", file=sys.stderr)
                    return 1
                if time.monotonic() > deadline:
                    print(f"lbtui: lab {lab} not ready after {args.timeout:g} s; removing it",
                          file=sys.stderr)
                    _stop(proc)
                    return 1
                time.sleep(0.1)
        except KeyboardInterrupt:
            _stop(proc)
            return 130
    alive = pid_alive(proc.pid)
    print(f"lab {lab} is up (manager pid {proc.pid}{'' if alive else ', exited?'}; log "
          f"{log_path}).\n"
          f"  lbtui lab status --lab {lab}                  namespaces, XDP, traffic rates\n"
          f"  lbtui console --attach lab-{lab}               the console on it\n"
          f"  lbtui lab exec --lab {lab} client1 -- curl -s http://198.18.0.10/\n"
          f"  lbtui lab down --lab {lab}                    remove everything")
    return 0


def cmd_up_cluster(lab: str, nodes: int, timeout: float) -> int:
    """``lab up --nodes N``: build the cluster lab in the foreground; its processes keep
    running in their own sessions until ``lab down``."""
    from lbtui.cli import UsageError
    from lbtui.lab import cluster as C
    from lbtui.lab.ownership import LabLock

    if not 2 <= nodes <= C.MAX_NODES:
        raise UsageError(f"--nodes must be 1 (the demo lab) or 2..{C.MAX_NODES} (a cluster)")
    lock = LabLock(lab)
    lock.acquire()               # LabBusy (exit 1, with the owner) if someone builds it
    try:
        topo = C.up(lab, nodes, progress=lambda m: print(f"  {m}", flush=True),
                    timeout=min(timeout, 120))
    except (RuntimeError, TimeoutError, OSError) as e:
        print(f"lbtui: cluster lab {lab} did not come up: {e}", file=sys.stderr)
        return 1
    finally:
        lock.release()
    names = ", ".join(n.node for n in topo.nodes)
    print(f"cluster lab {lab} is up: router (BIRD, ECMP), nodes {names} (serve + BIRD "
          f"each), {len(topo.clients)} clients, {len(topo.backends)} backends.\n"
          f"  lbtui lab exec --lab {lab} client1 -- curl -s http://{topo.vip}/\n"
          f"  lbtui lab exec --lab {lab} lb -- ip route show {topo.vip}      the ECMP route\n"
          f"  lbtui lab exec --lab {lab} lb -- birdc -s {C.bird_socket(lab, 'router')} "
          "show protocols\n"
          f"  lbtui ctl --instance {C.node_instance(lab, topo.nodes[0].node)} status"
          "          one node's datapath\n"
          f"  lbtui console --cluster {C.cluster_file(lab)}   every node in one console\n"
          f"  lbtui lab down --lab {lab}                    remove everything")
    return 0


NODE_ACTIONS = ("drain", "stop", "start")


def cmd_node(args: argparse.Namespace) -> int:
    """``lab node NODE drain|stop|start``: take a cluster node out or bring it back, and
    wait until the router's ECMP route shows it."""
    from lbtui.cli import UsageError
    from lbtui.lab import cluster as C
    from lbtui.lab.topology import Topology, validate_lab_name

    require_root("lbtui lab node")
    lab = validate_lab_name(args.lab)
    topo = Topology.load(lab)
    if topo is None or not topo.nodes:
        print(f"lbtui: no cluster lab {lab} (`lbtui lab up --lab {lab} --nodes 2`)",
              file=sys.stderr)
        return errors.NOT_RUNNING
    names = [n.node for n in topo.nodes]
    if args.node not in names:
        raise UsageError(f"lab node: {args.node!r} is not a node of lab {lab} "
                         f"({', '.join(names)})")
    running = [n for n in names if C.serve_pid(topo, n)]
    t0 = time.monotonic()
    if args.action == "start":
        if args.node in running:
            print(f"{args.node} is already running")
            return errors.OK
        C.start_node(topo, args.node)
        want = sorted({*running, args.node})
    else:
        if args.node not in running:
            print(f"{args.node} is not running (`lbtui lab node --lab {lab} {args.node} "
                  "start`)")
            return errors.OK
        (C.drain_node if args.action == "drain" else C.stop_serve)(topo, args.node)
        want = [n for n in running if n != args.node]
    try:
        C.wait_paths(topo, want, timeout=args.timeout)
        if args.action != "start":
            C.wait_stopped(topo, args.node, timeout=args.timeout)
    except TimeoutError as e:
        print(f"lbtui: {e}", file=sys.stderr)
        return 1
    print(f"{args.node}: {args.action} done in {time.monotonic() - t0:.1f} s; the router's "
          f"route to {topo.vip} goes through {', '.join(want) or 'no node'}")
    return errors.OK


def _stop(proc: subprocess.Popen[Any]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


# --- down / status / exec -------------------------------------------------------------------


def cmd_down(args: argparse.Namespace) -> int:
    from lbtui.lab.lifecycle import down
    from lbtui.lab.topology import validate_lab_name

    require_root("lbtui lab down")
    lab = validate_lab_name(args.lab)
    t0 = time.monotonic()
    done = down(lab, progress=lambda m: print(f"  {m}"))
    if done:
        print(f"lab {lab} removed ({time.monotonic() - t0:.1f} s)")
    else:
        print(f"lab {lab}: nothing to remove")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from lbtui.lab.lifecycle import status
    from lbtui.lab.status_view import render_status
    from lbtui.lab.topology import list_labs, validate_lab_name

    require_root("lbtui lab status")
    st = status(validate_lab_name(args.lab))
    if args.json:
        print(envelope.dumps(envelope.ok(st) if st["exists"] else envelope.error(
            "not_running", errors.NOT_RUNNING, f"lab {args.lab} is not up", data=st)))
    else:
        print(render_status(st))
        if not st["exists"]:
            others = [x for x in list_labs() if x != args.lab]
            if others:
                print(f"labs present: {', '.join(others)} (use --lab NAME)")
    return errors.OK if st["exists"] else errors.NOT_RUNNING


def cmd_exec(args: argparse.Namespace) -> int:
    from lbtui.cli import UsageError
    from lbtui.lab.topology import Topology, validate_lab_name

    require_root("lbtui lab exec")
    lab = validate_lab_name(args.lab)
    cmd = list(args.cmd)
    if cmd[:1] == ["--"]:
        cmd = cmd[1:]
    if not cmd:
        raise UsageError("lab exec: no command given (lbtui lab exec NODE -- CMD [ARG...])")
    topo = Topology.load(lab)
    if topo is None:
        print(f"lbtui: lab {lab} is not up (`lbtui lab up --lab {lab}`)", file=sys.stderr)
        return errors.NOT_RUNNING
    ns = topo.ns_of(args.node)          # ValueError lists the nodes: exit 2
    sys.stdout.flush()
    os.execvp("ip", ["ip", "netns", "exec", ns, *cmd])
