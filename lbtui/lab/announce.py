"""The cluster lab's announce hook: a node announces the VIP exactly while its serve runs.

    python -m lbtui.lab.announce --netns NS --bird-config F --bird-socket S [--drain S]
                                 -- SERVE-ARGV...

Starts ``lbtui serve`` (SERVE-ARGV), and once it prints its "serving instance" line,
starts BIRD in the node's namespace (its config announces the VIP over BGP). When serve
exits, for whatever reason, BIRD is stopped: it closes the BGP session with a
notification and the router withdraws the node's path at once.

SIGTERM to this process is a planned stop, a drain: BIRD is stopped first (the path is
withdrawn while serve still balances whatever is on its way), then, ``--drain`` seconds
later, serve. New connections then never meet a node that stopped balancing, and the
node's established connections move to the other nodes, which adopt them (Maglev
groups). Output: serve's lines, then ``announcing``, ``withdrawn`` and, on a drain,
``draining``.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
import time
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--netns", required=True)
    ap.add_argument("--bird-config", required=True)
    ap.add_argument("--bird-socket", required=True)
    ap.add_argument("--drain", type=float, default=1.0, metavar="SECONDS",
                    help="on SIGTERM, how long serve runs on after the withdrawal")
    ap.add_argument("serve", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    serve_argv = a.serve[1:] if a.serve[:1] == ["--"] else a.serve
    serve = subprocess.Popen(serve_argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)

    bird: subprocess.Popen[str] | None = None
    lock = threading.Lock()
    draining = threading.Event()

    def withdraw() -> None:
        with lock:
            if bird is not None and bird.poll() is None:
                _stop(bird)
                print("withdrawn", flush=True)

    def drain() -> None:
        print("draining", flush=True)
        draining.set()
        withdraw()
        time.sleep(max(0.0, a.drain))
        serve.terminate()           # the loop below sees serve end

    def on_term(_sig: int, _frame: FrameType | None) -> None:
        threading.Thread(target=drain, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    assert serve.stdout is not None
    for line in serve.stdout:
        print(line, end="", flush=True)
        if bird is None and READY_LINE in line and not draining.is_set():
            argv_ = bird_argv(Path(a.bird_config), Path(a.bird_socket))
            with lock:
                bird = subprocess.Popen(["ip", "netns", "exec", a.netns, *argv_], text=True)
            print("announcing", flush=True)
    rc = serve.wait()
    withdraw()
    return rc


if __name__ == "__main__":
    sys.exit(main())
