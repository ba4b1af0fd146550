"""A viewer of an instance's event hub, for tests (a plain module: several test
directories have a conftest of their own)."""

from __future__ import annotations

from collections.abc import Callable


class HubViewer:
    """A viewer of an instance's event hub, like any console: a thread collects every
    message it sends (``messages``); ``events`` decodes the event messages."""

    def __init__(self, instance: str) -> None:
        import threading

        from lbtui.control.eventhub import subscribe

        self.messages: list[dict] = []
        self._stop = False
        stream = subscribe(instance, tick=0.1)      # connects now: NoHub if none

        def follow() -> None:
            for msg in stream:
                if self._stop:
                    return
                if msg is not None:
                    self.messages.append(msg)

        self._thread = threading.Thread(target=follow, daemon=True)
        self._thread.start()
        self.wait_for(lambda: any(m["type"] == "live" for m in self.messages), "the hub")

    def events(self) -> list:
        from lbtui.maps.events import LbEvent

        return [LbEvent.from_dict(m) for m in list(self.messages) if m["type"] == "event"]

    def of_type(self, kind: str) -> list[dict]:
        return [m for m in list(self.messages) if m["type"] == kind]

    def wait_for(self, pred: Callable[[], object], what: str, timeout: float = 10.0) -> None:
        import time

        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
