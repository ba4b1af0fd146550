"""``lbtui demo``: the built-in demo lab with the console on top.

Builds the lab (``LabRun.start``, each step shown with its outcome), then opens the console
on the running instance, so edits (drain a backend, change weights, SNI routes) go through
the same Controller as always and persist in the lab's config file. Quitting the console
(or Ctrl-C, or a crash) tears everything down; answering "keep" in the quit dialog leaves
the lab running for ``lbtui console --attach lab-demo`` and ``lbtui lab down``. A watchdog
process removes the lab if this process dies without cleaning up (even ``kill -9``).

``--headless`` runs the same lab without the console, printing a traffic summary every few
seconds, for ``--duration`` seconds or until Ctrl-C/SIGTERM (the background manager of
``lbtui lab up`` is this mode too).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from types import FrameType
from typing import TextIO

from lbtui.lab.lifecycle import LabRun
from lbtui.lab.ownership import LabBusy
from lbtui.lab.progress import StepFailed

_owner_pid = 0


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    if os.getpid() != _owner_pid:
        # A forked helper (pyroute2 forks to create namespaces, and stops the child with
        # SIGTERM) inherits this handler: it must die, not unwind into the owner's code.
        os._exit(128 + signum)
    raise KeyboardInterrupt


def install_stop_signals() -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so the lab is torn down in order."""
    global _owner_pid
    _owner_pid = os.getpid()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)


def ignore_stop_signals() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


def run_headless(run: LabRun, duration: float | None, every: float,
                 out: TextIO = sys.stdout) -> None:
    """Keep the lab running (sweeping aged flows) and print a summary every ``every`` s."""
    t0 = time.monotonic()
    next_report = t0 + every
    while duration is None or time.monotonic() - t0 < duration:
        time.sleep(0.2)
        run.sweep_if_due()
        if time.monotonic() >= next_report:
            next_report += every
            print(f"[{time.monotonic() - t0:5.0f} s] {run.summary()}", file=out, flush=True)


def open_console(run: LabRun) -> bool:
    """Run the console on the lab's instance; True if the operator chose to keep it."""
    from lbtui.console.session import build_app

    app = build_app(run.inst, config_path=run.config_path)

    def exit_app(signum: int, frame: FrameType | None) -> None:
        # Leave the console cleanly (terminal restored); the caller then tears down.
        if os.getpid() != _owner_pid:
            _interrupt(signum, frame)
        loop = getattr(app, "_loop", None)
        if loop is None:
            raise KeyboardInterrupt
        loop.call_soon_threadsafe(app.exit)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, exit_app)
    try:
        app.run()
    finally:
        install_stop_signals()
        run.instance_released = app.stopped is not None
    return app.stopped == "keep"


def run_demo(run: LabRun, headless: bool, duration: float | None,
             report_every: float = 5.0, out: TextIO = sys.stdout) -> int:
    """Set up, run (console or headless), tear down. Returns the exit code."""
    print(f"{run.role}: lab {run.lab!r}, all of it inside network namespaces "
          "(the root namespace is not touched)", file=out, flush=True)
    install_stop_signals()
    keep = False
    t0 = time.monotonic()
    try:
        run.start()
        print(f"  ready in {time.monotonic() - t0:.1f} s; config {run.config_path}",
              file=out, flush=True)
        if headless:
            run_headless(run, duration, report_every, out)
        else:
            keep = open_console(run)
        rc = 0
    except LabBusy as e:
        print(f"lbtui: {e}", file=sys.stderr)
        return 1
    except StepFailed:
        rc = 1        # the failed step printed its error and what to do
    except KeyboardInterrupt:
        rc = 130
    finally:
        ignore_stop_signals()  # the clean-up itself must not be interrupted
    t1 = time.monotonic()
    run.close(keep=keep)
    if keep:
        print(f"lab {run.lab} keeps running: `lbtui console --attach {run.instance_name}` "
              f"reopens the console, `lbtui lab down --lab {run.lab}` removes it. Idle flows "
              "are no longer aged out and the SNI listener (port 443) stopped with this "
              "process.", file=out)
    else:
        print(f"lab {run.lab} removed ({time.monotonic() - t1:.1f} s)", file=out, flush=True)
    return rc
