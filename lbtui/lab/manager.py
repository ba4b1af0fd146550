"""The background owner of a lab started by ``lbtui lab up``.

    python -m lbtui.lab.manager --lab NAME [traffic flags]

Runs the demo lab headless (``lbtui demo --headless`` without a time limit), logging to
the file ``lab up`` gave it, until SIGTERM (``lbtui lab down``); then removes everything.
Its watchdog removes the lab if it is killed outright.
"""

from __future__ import annotations

import argparse
import sys

from lbtui.lab.cli import add_traffic_flags, traffic_options
from lbtui.lab.demo import run_demo
from lbtui.lab.lifecycle import LabRun
from lbtui.lab.progress import Steps
from lbtui.names import LAB, arg_type

REPORT_EVERY = 30.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lab", required=True, type=arg_type(LAB))
    add_traffic_flags(ap)
    a = ap.parse_args(argv)
    run = LabRun(a.lab, traffic_options(a), Steps(color=False), role="lbtui lab up")
    return run_demo(run, headless=True, duration=None, report_every=REPORT_EVERY)


if __name__ == "__main__":
    sys.exit(main())
