"""Active health checks: a TCP connect to each checked target, from the balancer's own
network namespace, every ``[health] check_interval`` seconds.

After ``fall`` failed checks in a row a target is taken out of rotation: every group that
lists it balances over the others (its weight is 0 in the maps only; the config file keeps
what the operator wrote, and a group whose every target is out keeps them all). After
``rise`` good checks in a row it is put back. Each transition is logged, sent to every
viewer of the event stream, and written to the instance's state file, so that an edit by
another process (``ctl``) applies the same out-of-rotation set.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from lbtui import netns
from lbtui.control.config import ConfigError, load_config
from lbtui.model import Config, HealthSettings

log = logging.getLogger("lbtui.health")

UP, DOWN = "up", "down"
MAX_PARALLEL = 32


@dataclass
class CheckState:
    target: str
    state: str = UP
    good: int = 0              # consecutive successes / failures
    bad: int = 0
    last_error: str = ""
    checked: int = 0


def checked_targets(config: Config) -> list[str]:
    """The "ip:port" targets to check: ``check_targets``, or every target of every group
    when that is empty (none while checks are off)."""
    h = config.health
    if h.check_interval <= 0:
        return []
    if h.check_targets:
        return list(dict.fromkeys(h.check_targets))
    return list(dict.fromkeys(str(t) for r in config.routes() for t in r.group.targets))


def tcp_check(target: str, timeout: float, ns: str | None) -> str:
    """"" when ``target`` accepts a TCP connection within ``timeout``, else why not."""
    ip, _, port = target.rpartition(":")
    with netns.inside(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect((ip, int(port)))
        return ""
    except TimeoutError:
        return f"no answer within {timeout:g}s"
    except OSError as e:
        return e.strerror or str(e)
    finally:
        s.close()


class HealthChecker:
    """Runs the checks in a thread (``start``/``stop``). ``config()`` gives the current
    config (re-read as it changes); ``on_change(out_of_rotation, target, old, new, why)``
    is called, from the checker's thread, whenever a target goes down or comes back."""

    def __init__(self, config: Callable[[], Config], ns: str | None,
                 on_change: Callable[[frozenset[str], str, str, str, str], None]) -> None:
        self.config = config
        self.ns = ns
        self.on_change = on_change
        self.states: dict[str, CheckState] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def out_of_rotation(self) -> frozenset[str]:
        return frozenset(t for t, s in self.states.items() if s.state == DOWN)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="lbtui-checks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        with ThreadPoolExecutor(MAX_PARALLEL, thread_name_prefix="lbtui-check") as pool:
            while not self._stop.is_set():
                started = time.monotonic()
                interval = 1.0
                try:
                    config = self.config()
                    interval = config.health.check_interval or 1.0
                    self.round(config, pool)
                except Exception:      # keep checking; one bad round must not end it
                    log.exception("health checks")
                self._stop.wait(max(0.1, interval - (time.monotonic() - started)))

    def round(self, config: Config, pool: ThreadPoolExecutor) -> None:
        """Check every target once and apply the transitions."""
        targets = checked_targets(config)
        for gone in set(self.states) - set(targets):     # no longer checked: back in
            st = self.states.pop(gone)
            if st.state == DOWN:
                self.on_change(self.out_of_rotation, gone, DOWN, UP, "no longer checked")
        h = config.health
        results = pool.map(lambda t: tcp_check(t, h.check_timeout, self.ns), targets)
        for target, error in zip(targets, results, strict=True):
            self._account(target, error, h)

    def _account(self, target: str, error: str, h: HealthSettings) -> None:
        st = self.states.setdefault(target, CheckState(target))
        st.checked += 1
        st.last_error = error
        if error:
            st.bad, st.good = st.bad + 1, 0
        else:
            st.good, st.bad = st.good + 1, 0
        if st.state == UP and st.bad >= h.fall:
            st.state = DOWN
            self.on_change(self.out_of_rotation, target, UP, DOWN,
                           f"{st.bad} checks failed: {error}")
        elif st.state == DOWN and st.good >= h.rise:
            st.state = UP
            self.on_change(self.out_of_rotation, target, DOWN, UP,
                           f"{st.good} checks passed")

    def snapshot(self) -> list[dict[str, object]]:
        return [{"target": s.target, "state": s.state, "last_error": s.last_error,
                 "checked": s.checked} for s in self.states.values()]


class CurrentConfig:
    """The config file as it is now (``ctl`` and consoles edit it from other processes),
    re-read only when it changed; while it does not load, the last good one."""

    def __init__(self, path: Path | None, fallback: Config) -> None:
        self.path = path
        self.config = fallback
        self._seen: tuple[int, int] | None = None

    def __call__(self) -> Config:
        if self.path is None:
            return self.config
        try:
            st = self.path.stat()
            if (st.st_mtime_ns, st.st_size) != self._seen:
                self.config = load_config(self.path)
                self._seen = (st.st_mtime_ns, st.st_size)
        except (ConfigError, OSError):
            pass
        return self.config
