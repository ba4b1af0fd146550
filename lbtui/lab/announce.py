"""The cluster lab's announce hook: a node announces the VIP exactly while its serve runs.

    python -m lbtui.lab.announce --netns NS --bird-config F --bird-socket S -- SERVE-ARGV...

Starts ``lbtui serve`` (SERVE-ARGV), and once it prints its "serving instance" line,
starts BIRD in the node's namespace (its config announces the VIP over BGP). When serve
exits, for whatever reason, BIRD is stopped: it closes the BGP session with a
notification and the router withdraws the node's path at once. SIGTERM to this process
stops serve first (and so BIRD). Output: serve's lines, then ``announcing`` and
``withdrawn``.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
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
    ap.add_argument("serve", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    serve_argv = a.serve[1:] if a.serve[:1] == ["--"] else a.serve
    serve = subprocess.Popen(serve_argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)

    def on_term(_sig: int, _frame: FrameType | None) -> None:
        serve.terminate()           # the loop below sees serve end and withdraws

    signal.signal(signal.SIGTERM, on_term)
    bird: subprocess.Popen[str] | None = None
    assert serve.stdout is not None
    for line in serve.stdout:
        print(line, end="", flush=True)
        if bird is None and READY_LINE in line:
            argv_ = bird_argv(Path(a.bird_config), Path(a.bird_socket))
            bird = subprocess.Popen(["ip", "netns", "exec", a.netns, *argv_], text=True)
            print("announcing", flush=True)
    rc = serve.wait()
    if bird is not None:
        _stop(bird)
        print("withdrawn", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
