"""A watchdog that tears a lab down when the process owning it dies, however it dies.

The owner (``lbtui demo``) starts ``python -m lbtui.lab.supervisor --lab NAME`` with a
pipe on the watchdog's stdin and keeps the only write end. When the owner exits — quit,
Ctrl-C, an exception, SIGKILL, OOM — the kernel closes that end and the watchdog reads
EOF, then runs the same idempotent clean-up as ``lbtui lab down``. An owner that has
cleaned up itself says ``done`` first, and the watchdog just exits; ``keep`` hands the lab
over to a later ``lbtui lab down``.

The watchdog runs in its own session and ignores SIGINT/SIGHUP, so the Ctrl-C that stops
the owner (sent to the terminal's whole process group) or a closed terminal does not stop
the clean-up.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from lbtui.names import LAB, arg_type


class Watchdog:
    """The owner's handle on its watchdog process."""

    def __init__(self, lab: str) -> None:
        self.lab = lab
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lbtui.lab.supervisor", "--lab", lab],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
        assert self.proc.stdout is not None and self.proc.stdin is not None
        # Wait for the handshake, so a watchdog that failed to start is not trusted.
        if self.proc.stdout.readline().strip() != b"armed":
            raise RuntimeError("the lab watchdog did not start")
        self.proc.stdout.close()

    def _say(self, word: bytes) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(word + b"\n")
            self.proc.stdin.close()
        except (BrokenPipeError, ValueError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def done(self) -> None:
        """The owner cleaned up: stand down."""
        self._say(b"done")

    def keep(self) -> None:
        """Leave the lab running after the owner exits."""
        self._say(b"keep")


def _cleanup(lab: str) -> bool:
    """Clean up after a dead owner; False if a new owner took the lab over meanwhile
    (it removes the leftovers itself)."""
    from lbtui.lab.lifecycle import down
    from lbtui.lab.ownership import LabBusy

    try:
        down(lab, stop_owner=False, lock_wait=30.0)
    except LabBusy:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lab", required=True, type=arg_type(LAB))
    a = ap.parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    print("armed", flush=True)
    try:
        word = sys.stdin.buffer.readline().strip()
    except OSError:
        word = b""
    if word in (b"done", b"keep"):
        return 0
    t0 = time.monotonic()
    try:
        if not _cleanup(a.lab):
            return 0
    except Exception as e:  # report, there is nobody else left to do it
        print(f"lbtui: cleaning up lab {a.lab} after its owner exited failed: {e}; run "
              f"`lbtui lab down --lab {a.lab}`", file=sys.stderr)
        return 1
    print(f"lbtui: lab {a.lab} torn down after its owner exited "
          f"({time.monotonic() - t0:.1f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
