"""``lbtui serve``: run an instance headless until SIGINT/SIGTERM.

Loads the datapath (``Instance.start``), then loops: every ``settings.sweep_interval``
seconds it removes aged flows (emitting their "closed/aged" events). SIGHUP re-reads the
config file and makes the maps match it (under the edit lock, like any edit). On SIGINT or
SIGTERM it detaches and unpins, unless ``--keep`` / ``datapath.keep`` asks to leave the
datapath forwarding for a later ``serve`` to re-adopt. Serve opens no network sockets.

It logs through ``logging`` (``lbtui.logs``: one line per event, journald-friendly),
tells systemd when it is ready, reloading and stopping (``sdnotify``), and keeps run-time
edits in a working copy when its config file is read-only (``workcopy``).
"""

from __future__ import annotations

import copy
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from lbtui.control.changes import audit
from lbtui.control.config import load_config, to_dict
from lbtui.control.instance import Instance
from lbtui.control.lock import editing
from lbtui.control.metrics import MetricsExporter
from lbtui.control.sdnotify import notify
from lbtui.control.state import read_applied, write_applied
from lbtui.control.workcopy import WorkCopy
from lbtui.maps.transaction import Transaction
from lbtui.model import Config

Log = Callable[[str], None]
_log = logging.getLogger(__name__)


def log(msg: str) -> None:
    _log.info(msg)


def log_error(msg: str) -> None:
    _log.error(msg)


class Service:
    def __init__(self, config_path: Path, keep: bool = False, log: Log = log) -> None:
        self.config_path = Path(config_path)   # the file serve loads (see workcopy)
        self.work: WorkCopy | None = None
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
        self.work = WorkCopy(self.config_path, config.datapath.instance)
        if self._resolve_config_path() != config.path or self.work.notes or self.work.warnings:
            config = load_config(self.config_path)    # the working copy, or edits folded in
        self.install_signals()                   # a signal during start stops right after
        inst = self.instance = Instance.start(config, progress=self.log)
        metrics: MetricsExporter | None = None
        try:
            inst.write_state(manager="serve")     # ctl may signal us (SIGHUP) to reload
            metrics = MetricsExporter(inst, config.metrics)
            metrics.start()
            dp = config.datapath
            ifaces = ", ".join([*dp.interfaces, *dp.reply_interfaces])
            where = f" in netns {dp.netns}" if dp.netns else ""
            self.log(f"serving instance {inst.name} on {ifaces}{where}; "
                     f"sweep every {config.settings.sweep_interval:g}s (pid "
                     f"{os.getpid()})")
            # XDP is attached and the config applied: only now is the service up.
            notify("READY=1", f"STATUS=serving instance {inst.name} on {ifaces}")
            self._loop()
        finally:
            notify("STOPPING=1")
            if metrics is not None:
                metrics.stop()
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
                # mypy keeps the loop test's narrowing, but _on_stop (a signal handler)
                # sets _stop during the wait.
                break  # type: ignore[unreachable]
            if self._reload:
                self._reload = False
                notify("RELOADING=1", "STATUS=reloading the config file")
                try:
                    self._resolve_config_path()
                except (OSError, ValueError) as e:   # reload() then reports the file itself
                    log_error(f"reload: {e}")
                self.reload()
                notify("READY=1", f"STATUS=serving instance {inst.name}")
            if time.monotonic() >= next_sweep:
                self.sweep()
                next_sweep = time.monotonic() + inst.config.settings.sweep_interval

    def _resolve_config_path(self) -> Path:
        """Point ``config_path`` at the file to load and edit (the working copy when the
        given file is read-only) and log what that took."""
        assert self.work is not None
        self.config_path = self.work.resolve()
        for note in self.work.notes:
            _log.info(note)
        for warning in self.work.warnings:
            _log.warning(warning)
        return self.config_path

    def sweep(self) -> None:
        assert self.instance is not None
        try:
            removed = self.instance.sweep()
        except OSError as e:   # keep serving; the next sweep retries
            log_error(f"sweep failed: {e}")
            return
        if removed:   # routine: debug only, so a busy instance does not flood the journal
            _log.debug(f"sweep: {len(removed)} idle flow(s) aged out")

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
                old = inst.applied_config() or inst.config
                txn = self._apply(inst, new)
        except Exception as e:  # whatever it was, keep serving as before
            log_error(f"reload refused, still running the previous config: {e}")
            return
        audit(inst, "reload", old, new)
        self.log(f"reloaded {self.config_path} ({txn.changed} map entries changed)")

    def _apply(self, inst: Instance, new: Config) -> Transaction:
        """Maps, then splicers; if the splicers fail, the maps (and the record of what
        they hold) go back to what they were."""
        running = inst.config
        assert running is not None
        applied = read_applied(inst.name)
        if new.datapath != running.datapath:
            self.log("reload: [datapath] changes (interfaces, netns, mode, keep...) take "
                     "effect at the next start; keep applies now")
        txn = inst.apply(new)
        keep = new.datapath.keep
        new.datapath = copy.copy(running.datapath)
        new.datapath.keep = keep
        inst.config = new
        try:
            inst.sync_splicers(self.log)
        except BaseException:
            inst.config = running
            txn.rollback()
            write_applied(inst.name, applied if applied is not None else to_dict(running))
            raise
        return txn


def serve(config_path: str | Path, keep: bool = False) -> int:
    return Service(Path(config_path), keep).run()
