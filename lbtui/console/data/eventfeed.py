"""The instance's event stream as a queue the collector drains once per refresh.

Events come from the instance's hub (the one ring-buffer reader, in ``serve`` or in the
console that manages the instance), never from the ring buffer itself: a second reader
would split the events with the first. The hub's per-target health and the edits made
anywhere (ctl, another console, reload) come with them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from lbtui.console.data.hub import HubState, check_state, notice, target_health
from lbtui.control.eventhub import NoHub, subscribe
from lbtui.maps.events import LbEvent

TICK_S = 0.1           # how often a quiet stream checks for cancellation
RETRY_S = 1.0          # wait before reconnecting to a hub that went away
MAX_PENDING = 50_000   # beyond this the oldest pending events are dropped (and counted)


class EventFeed:
    """Messages pushed by a following thread (``run``), taken by the collector
    (``take``, ``take_hub``); ``health`` and ``checks`` are the hub's latest per-target
    account and active checks' state."""

    def __init__(self, max_pending: int = MAX_PENDING) -> None:
        self._pending: deque[LbEvent] = deque()
        self._edits: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.max_pending = max_pending
        self.received = 0
        self.dropped = 0       # dropped here or by the hub because nobody took them in time
        self.health: list[dict[str, Any]] = []
        self.checks: list[dict[str, Any]] = []
        self.connected = False
        self.problem = ""      # why there is no stream, when there is none

    def push(self, ev: LbEvent) -> None:
        with self._lock:
            self.received += 1
            self._pending.append(ev)
            if len(self._pending) > self.max_pending:
                self._pending.popleft()
                self.dropped += 1

    def take(self) -> list[LbEvent]:
        with self._lock:
            out = list(self._pending)
            self._pending.clear()
        return out

    def take_edits(self) -> list[dict[str, Any]]:
        with self._lock:
            out, self._edits = self._edits, []
        return out

    def take_hub(self) -> HubState:
        """The hub's latest account, and the edits and changes of state since the last
        call, as typed rows (a malformed entry is left out, never fatal)."""
        def parsed(parse: Callable[[dict[str, Any]], Any], msgs: list[dict[str, Any]]
                   ) -> list[Any]:
            out = []
            for m in msgs:
                try:
                    out.append(parse(m))
                except (KeyError, TypeError, ValueError):
                    continue
            return out

        checks = parsed(check_state, self.checks)
        return HubState(parsed(target_health, self.health), {c.target: c for c in checks},
                        parsed(notice, self.take_edits()), self.connected, self.problem)

    def on_message(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "event":
            self.push(LbEvent.from_dict(msg))
        elif kind == "health":
            self.health = msg.get("targets", [])
            self.checks = msg.get("checks", [])
        elif kind in ("edit", "transition"):
            with self._lock:
                self._edits.append(msg)
        elif kind == "dropped":
            with self._lock:
                self.dropped += int(msg.get("count", 0))

    def run(self, instance: str, cancelled: Callable[[], bool]) -> None:
        """Follow the instance's hub until ``cancelled()``, reconnecting when it restarts;
        meant for a thread worker."""
        while not cancelled():
            try:
                for msg in subscribe(instance, tick=TICK_S):
                    if cancelled():
                        return
                    if msg is not None:
                        self.connected, self.problem = True, ""
                        self.on_message(msg)
                self.problem = "the event stream ended (the manager stopped)"
            except NoHub as e:
                self.problem = str(e)
            self.connected = False
            deadline = time.monotonic() + RETRY_S
            while time.monotonic() < deadline and not cancelled():
                time.sleep(TICK_S)
