"""The stats ring buffer as a queue the collector drains once per refresh."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from lbtui.maps import BpfMap
from lbtui.maps.events import EventReader, LbEvent

POLL_MS = 100          # finite, so the polling worker notices cancellation quickly
MAX_PENDING = 50_000   # beyond this the oldest pending events are dropped (and counted)


class EventFeed:
    """Events pushed by a polling thread (``run``), taken by the collector (``take``)."""

    def __init__(self, max_pending: int = MAX_PENDING) -> None:
        self._pending: deque[LbEvent] = deque()
        self._lock = threading.Lock()
        self.max_pending = max_pending
        self.received = 0
        self.dropped = 0       # dropped here because nobody took them in time

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

    def run(self, ringbuf: BpfMap, cancelled: Callable[[], bool]) -> None:
        """Poll the ring buffer until ``cancelled()``; meant for a thread worker."""
        reader = EventReader(ringbuf, self.push)
        try:
            while not cancelled():
                reader.poll(POLL_MS)
        finally:
            reader.close()
