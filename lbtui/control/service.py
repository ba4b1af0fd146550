"""``lbtui serve``: run an instance headless until SIGINT/SIGTERM.

Loads the datapath (``Instance.start``), then loops: every ``settings.sweep_interval``
seconds it removes aged flows (emitting their "closed/aged" events). SIGHUP re-reads the
config file and makes the maps match it (under the edit lock, like any edit). On SIGINT or
SIGTERM it detaches and unpins, unless ``--keep`` / ``datapath.keep`` asks to leave the
datapath forwarding for a later ``serve`` to re-adopt. Serve opens no network sockets.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from lbtui.control import apply
from lbtui.control.config import Config, load_config
from lbtui.control.instance import Instance
from lbtui.control.lock import editing

Log = Callable[[str], None]


def log(msg: str) -> None:
    print(f"lbtui serve: {msg}", flush=True)


def log_error(msg: str) -> None:
    print(f"lbtui serve: {msg}", file=sys.stderr, flush=True)


class Service:
    def __init__(self, config_path: Path, keep: bool = False, log: Log = log) -> None:
        self.config_path = Path(config_path)
        self.keep_flag = keep
        self.log = log
        self._wake = threading.Event()
        self._stop = False
        self._reload = False
        self.instance: Instance | None = None

    # Signal handlers only set flags; the loop does the work (never inside a handler).
    def _on_stop(self, signum: int, _frame: FrameType | None) -> None:
        self.log(f"{signal.Signals(signum).name}: stopping")
        self._stop = True
        self._wake.set()

    def _on_reload(self, _signum: int, _frame: FrameType | None) -> None:
        self._reload = True
        self._wake.set()

    def install_signals(self) -> None:
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)

    def run(self) -> int:
        config = load_config(self.config_path)   # ConfigError (exit 2): nothing started
        self.install_signals()                   # a signal during start stops right after
        inst = self.instance = Instance.start(config, progress=self.log)
        try:
            inst.write_state(manager="serve")     # ctl may signal us (SIGHUP) to reload
            dp = config.datapath
            ifaces = ", ".join([*dp.interfaces, *dp.reply_interfaces])
            where = f" in netns {dp.netns}" if dp.netns else ""
            self.log(f"serving instance {inst.name} on {ifaces}{where}; "
                     f"sweep every {config.settings.sweep_interval:g}s (pid "
                     f"{os.getpid()})")
            self._loop()
        finally:
            assert inst.config is not None
            keep = self.keep_flag or inst.config.datapath.keep
            inst.stop(keep=keep)
            self.log("stopped; datapath left forwarding (pins kept; `lbtui down` removes "
                     "them)" if keep else "stopped; XDP detached and pins removed")
        return 0

    def _loop(self) -> None:
        inst = self.instance
        assert inst is not None and inst.config is not None
        next_sweep = time.monotonic() + inst.config.settings.sweep_interval
        while not self._stop:
            self._wake.wait(max(0.0, next_sweep - time.monotonic()))
            self._wake.clear()
            if self._stop:
                break
            if self._reload:
                self._reload = False
                self.reload()
            if time.monotonic() >= next_sweep:
                self.sweep()
                next_sweep = time.monotonic() + inst.config.settings.sweep_interval

    def sweep(self) -> None:
        assert self.instance is not None
        try:
            removed = self.instance.sweep()
        except OSError as e:   # keep serving; the next sweep retries
            log_error(f"sweep failed: {e}")
            return
        if removed:
            self.log(f"sweep: {len(removed)} idle flow(s) aged out")

    def reload(self) -> None:
        """Re-read the file under the edit lock (as ctl does, so a concurrent edit is never
        overwritten by a stale read) and apply it: maps all or nothing, then the SNI
        splicers. Any failure, of any kind, leaves the maps and the splicers exactly as
        they were; serve logs why and keeps serving."""
        inst = self.instance
        assert inst is not None and inst.config is not None
        try:
            with editing(inst.name):
                new = load_config(self.config_path)
                txn = self._apply(inst, new)
        except Exception as e:  # whatever it was, keep serving as before
            log_error(f"reload refused, still running the previous config: {e}")
            return
        self.log(f"reloaded {self.config_path} ({txn.changed} map entries changed)")

    def _apply(self, inst: Instance, new: Config) -> apply.Transaction:
        old = inst.config
        assert old is not None
        if new.datapath != old.datapath:
            self.log("reload: [datapath] changes (interfaces, netns, mode, keep...) take "
                     "effect at the next start; keep applies now")
        txn = apply.sync(inst.maps, new, inst.ifindexes)
        new.datapath = dataclasses.replace(old.datapath, keep=new.datapath.keep)
        inst.config = new
        try:
            inst.sync_splicers(self.log)
        except BaseException:
            inst.config = old
            txn.rollback()
            raise
        return txn


def serve(config_path: str | Path, keep: bool = False) -> int:
    return Service(Path(config_path), keep).run()
