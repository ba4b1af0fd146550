"""The cluster lab's announce hook: a node announces the VIP exactly while its serve runs
and its datapath is whole.

    python -m lbtui.lab.announce --netns NS --bird-config F --bird-socket S
                                 [--instance NAME] [--health-interval S] [--drain S]
                                 -- SERVE-ARGV...

Starts ``lbtui serve`` (SERVE-ARGV), and once it prints its "serving instance" line,
starts BIRD in the node's namespace (its config announces the VIP over BGP). When serve
exits, for whatever reason, BIRD is stopped: it closes the BGP session with a
notification and the router withdraws the node's path at once.

With ``--instance``, the hook also checks the instance every ``--health-interval``
seconds: while an interface has lost its XDP program (detached by hand, replaced by
another tool), serve runs but balances nothing there, so the path is withdrawn; it is
announced again once every interface runs the program (after a restart of serve, say).

SIGTERM to this process is a planned stop, a drain: BIRD is stopped first (the path is
withdrawn while serve still balances whatever is on its way), then, ``--drain`` seconds
later, serve. New connections then never meet a node that stopped balancing, and the
node's established connections move to the other nodes, which adopt them (Maglev
groups). Output: serve's lines, then ``announcing``, ``withdrawn`` (with the reason when
the health check withdrew) and, on a drain, ``draining``.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from lbtui.lab.bird import bird_argv

READY_LINE = "serving instance"


def _stop(proc: subprocess.Popen[str], wait: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Announcer:
    """The node's BIRD: running (the VIP announced) or not. Thread-safe; once ``close``d
    (a drain, or serve gone) it never announces again."""

    def __init__(self, netns: str, config: Path, socket: Path) -> None:
        self._argv = ["ip", "netns", "exec", netns, *bird_argv(config, socket)]
        self._bird: subprocess.Popen[str] | None = None
        self._closed = False
        self._lock = threading.Lock()

    def announce(self) -> None:
        with self._lock:
            if self._closed or (self._bird is not None and self._bird.poll() is None):
                return
            self._bird = subprocess.Popen(self._argv, text=True)
            print("announcing", flush=True)

    def withdraw(self, why: str = "") -> None:
        with self._lock:
            self._withdraw(why)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._withdraw("")

    def _withdraw(self, why: str) -> None:
        if self._bird is not None and self._bird.poll() is None:
            _stop(self._bird)
            print(f"withdrawn: {why}" if why else "withdrawn", flush=True)
        self._bird = None


def lost_interfaces(instance: str) -> Callable[[], list[str]]:
    """A check of ``instance``'s interfaces: what lost the XDP program, [] when whole."""
    from lbtui.control.instance import Instance

    inst: Instance | None = None

    def check() -> list[str]:
        nonlocal inst
        try:
            if inst is None:
                inst = Instance.attach(instance)
            return inst.lost_xdp()
        except Exception as e:        # not readable is not healthy; say why
            inst = None
            return [f"instance {instance} not readable ({e})"]
    return check


def watch_health(announcer: Announcer, check: Callable[[], list[str]], interval: float,
                 stop: threading.Event) -> None:
    """Announce while ``check`` finds nothing lost, withdraw (saying what) otherwise."""
    while not stop.is_set():
        lost = check()
        if lost:
            announcer.withdraw("; ".join(lost))
        else:
            announcer.announce()
        stop.wait(interval)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--netns", required=True)
    ap.add_argument("--bird-config", required=True)
    ap.add_argument("--bird-socket", required=True)
    ap.add_argument("--instance", help="check this instance's XDP programs (health)")
    ap.add_argument("--health-interval", type=float, default=1.0, metavar="SECONDS")
    ap.add_argument("--drain", type=float, default=1.0, metavar="SECONDS",
                    help="on SIGTERM, how long serve runs on after the withdrawal")
    ap.add_argument("serve", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    serve_argv = a.serve[1:] if a.serve[:1] == ["--"] else a.serve
    serve = subprocess.Popen(serve_argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    announcer = Announcer(a.netns, Path(a.bird_config), Path(a.bird_socket))
    stop = threading.Event()

    def drain() -> None:
        print("draining", flush=True)
        stop.set()
        announcer.close()
        time.sleep(max(0.0, a.drain))
        serve.terminate()           # the loop below sees serve end

    def on_term(_sig: int, _frame: FrameType | None) -> None:
        threading.Thread(target=drain, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    assert serve.stdout is not None
    started = False
    for line in serve.stdout:
        print(line, end="", flush=True)
        if not started and READY_LINE in line:
            started = True
            if a.instance:
                threading.Thread(target=watch_health, daemon=True, args=(
                    announcer, lost_interfaces(a.instance), a.health_interval, stop)).start()
            else:
                announcer.announce()
    rc = serve.wait()
    stop.set()
    announcer.close()
    return rc


if __name__ == "__main__":
    sys.exit(main())
