"""One reader, many viewers: the event stream of a running instance.

A BPF ring buffer has one consumer. The process that manages the instance (``serve``, or a
console that loaded the datapath itself) runs the one reader; it accounts every event per
(group, target) (``health.HealthBook``) and fans the stream out over a local unix socket,
``/run/lbtui/<instance>.events.sock`` (0600: root only), to any number of consoles and
``lbtui ctl events``. Lost events are then only those the kernel could not queue (its
counter), and the per-target totals outlive any console.

The socket speaks newline-delimited JSON, server to client:

- ``{"type": "hello", "instance": ..., "version": 1}`` first, then the recent events and
  edits (up to ``BACKLOG``), ``{"type": "live"}``, and then live ones:
  ``{"type": "event", ...LbEvent fields, "group_key"}``;
- ``{"type": "health", "targets": [...], "checks": [...]}`` every second: totals and
  state per (group, target), and the active checks' state per target;
- ``{"type": "transition", "source": "traffic" | "check", ...}`` when a target's state
  changes (judged from its traffic, or by active checks taking it out of rotation);
  ``{"type": "edit", ...}`` for every configuration change (whoever made it);
  ``{"type": "dropped", "count": n}`` when this subscriber fell behind and lost lines.

A client may send ``{"type": "edit", ...}`` lines (the Controller announces its changes
this way); the hub logs them and passes them on.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lbtui import maps as M
from lbtui.control.health import HealthBook, Transition
from lbtui.control.lock import run_dir
from lbtui.errors import NotRunning
from lbtui.files import remove_inside
from lbtui.maps.events import EventReader, LbEvent
from lbtui.model import GroupKey, GroupKind, HealthSettings
from lbtui.names import instance_name

log = logging.getLogger("lbtui.events")

PROTOCOL_VERSION = 1
BACKLOG = 1000            # recent events a new subscriber gets first
SUBSCRIBER_QUEUE = 20000  # lines queued per subscriber before they are dropped
POLL_MS = 100
HEALTH_EVERY_S = 1.0


def socket_path(instance: str) -> Path:
    return run_dir() / f"{instance_name(instance)}.events.sock"


class Attribution:
    """Names the group that chose an event's target: the listener (its port), the source
    route (longest prefix holding the client) or the SNI route (its hostname)."""

    def __init__(self, maps: M.MapSet, refresh_s: float = 2.0) -> None:
        self.maps = maps
        self.refresh_s = refresh_s
        self._at = 0.0
        self._sources: list[tuple[ipaddress.IPv4Network, str]] = []
        self._names: dict[int, str] = {}

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._at < self.refresh_s:
            return
        self._at = now
        routes = M.list_source_routes(self.maps.config_map)
        self._sources = sorted(((ipaddress.IPv4Network(r.cidr), r.cidr) for r in routes),
                               key=lambda x: -x[0].prefixlen)
        names = self.maps.sni_map.sni_names
        if names is not None and names.path is not None and names.path.exists():
            self._names = M.SniNames(names.path).names

    def __call__(self, ev: LbEvent) -> GroupKey | None:
        if ev.group == "listener":
            return GroupKey(GroupKind.LISTENER, ev.vip_port)
        self._refresh()
        if ev.group == "source":
            ip = ipaddress.IPv4Address(ev.client_ip)
            cidr = next((c for net, c in self._sources if ip in net), None)
            return GroupKey(GroupKind.SOURCE, cidr or "(removed)")
        name = self._names.get(ev.sni_hash)
        return GroupKey(GroupKind.SNI, name or f"#{ev.sni_hash:016x}")


class _Subscriber:
    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.lines: queue.Queue[bytes | None] = queue.Queue(SUBSCRIBER_QUEUE)
        self.dropped = 0

    def put(self, line: bytes) -> None:
        try:
            self.lines.put_nowait(line)
        except queue.Full:
            self.dropped += 1     # never let a slow viewer stall the reader

    def run(self, on_line: Callable[[dict[str, Any]], None]) -> None:
        reader = threading.Thread(target=self._read, args=(on_line,), daemon=True)
        reader.start()
        try:
            while (line := self.lines.get()) is not None:
                if self.dropped:
                    n, self.dropped = self.dropped, 0
                    self.conn.sendall(_line({"type": "dropped", "count": n}))
                self.conn.sendall(line)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                self.conn.close()

    def _read(self, on_line: Callable[[dict[str, Any]], None]) -> None:
        """Lines a client sends (edit announcements)."""
        with contextlib.suppress(OSError, ValueError), self.conn.makefile("rb") as f:
            for raw in f:
                msg = json.loads(raw)
                if isinstance(msg, dict) and msg.get("type") == "edit":
                    on_line(msg)
        self.lines.put(None)      # the client went away: stop writing to it


def _line(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode() + b"\n"


def event_message(ev: LbEvent, group: GroupKey | None) -> dict[str, Any]:
    """An event as the hub sends it: its fields, the group that chose its target, and its
    wall-clock time (the kernel stamps monotonic time)."""
    wall = time.time() - (time.monotonic_ns() - ev.ts_ns) / 1e9
    return {"type": "event", **ev.to_dict(), "group_key": str(group) if group else None,
            "ts": round(wall, 6)}


class EventHub:
    """The reader, the accounts and the socket, for one instance (``start``/``stop``)."""

    def __init__(self, maps: M.MapSet, instance: str, health: HealthSettings,
                 on_transition: Callable[[Transition], None] | None = None) -> None:
        self.maps = maps
        self.instance = instance
        self.path = socket_path(instance)
        self.attribute = Attribution(maps)
        self.book = HealthBook(health, self.attribute)
        self.on_transition = on_transition
        # The active checks' state per target, when they run (HealthChecker.snapshot).
        self.checks: Callable[[], list[dict[str, Any]]] | None = None
        self.recent: deque[bytes] = deque(maxlen=BACKLOG)
        self.events = 0
        self._subs: list[_Subscriber] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: socket.socket | None = None

    # --- life ------------------------------------------------------------------------

    def start(self) -> None:
        self._server = _listen(self.path)
        for target, name in ((self._read_loop, "lbtui-events"),
                             (self._accept_loop, "lbtui-events-accept")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            with contextlib.suppress(OSError):
                self._server.close()
        for t in self._threads:
            t.join(timeout=5)
        with self._lock:
            for s in self._subs:
                s.lines.put(None)
            self._subs.clear()
        remove_inside(self.path, run_dir())

    # --- reading and accounting --------------------------------------------------------

    def _read_loop(self) -> None:
        reader = EventReader(self.maps.stats_ringbuf, self._on_event)
        next_health = time.monotonic() + HEALTH_EVERY_S
        try:
            while not self._stop.is_set():
                try:
                    reader.poll(POLL_MS)
                    if time.monotonic() >= next_health:
                        next_health = time.monotonic() + HEALTH_EVERY_S
                        self._transitions(self.book.tick())
                        self.publish(self.health_message(), keep=False)
                except Exception:     # keep reading; one bad event must not end the stream
                    log.exception("event reader of instance %s", self.instance)
        finally:
            reader.close()

    def _on_event(self, ev: LbEvent) -> None:
        self.events += 1
        group = self.attribute(ev)
        self.publish(event_message(ev, group))
        self._transitions(self.book.record(ev))

    def _transitions(self, changes: list[Transition]) -> None:
        for th, old, new in changes:
            log.log(logging.WARNING if new != "healthy" else logging.INFO,
                    "target %s of %s: %s -> %s", th.target, th.group, old, new)
            self.publish({"type": "transition", "source": "traffic", "group": str(th.group),
                          "target": th.target, "from": old, "to": new, "ts": time.time()})
            if self.on_transition is not None:
                self.on_transition((th, old, new))

    def health_message(self) -> dict[str, Any]:
        checks = self.checks() if self.checks is not None else []
        return {"type": "health", "targets": self.book.snapshot(), "checks": checks}

    def publish(self, msg: dict[str, Any], keep: bool = True) -> None:
        """Send to every subscriber (and keep for later ones unless ``keep`` is False)."""
        line = _line(msg)
        with self._lock:
            if keep:
                self.recent.append(line)
            for s in self._subs:
                s.put(line)

    def announce_edit(self, msg: dict[str, Any]) -> None:
        log.info("config change by %s (%s): %s", msg.get("source", "?"),
                 msg.get("user", "?"), msg.get("change", ""))
        self.publish({**msg, "type": "edit", "ts": time.time()})

    # --- subscribers -------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._server is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sub = _Subscriber(conn)
            with self._lock:
                sub.put(_line({"type": "hello", "instance": self.instance,
                               "version": PROTOCOL_VERSION}))
                for line in self.recent:
                    sub.put(line)
                sub.put(_line({"type": "live"}))
                sub.put(_line(self.health_message()))
                self._subs.append(sub)
            threading.Thread(target=self._serve_one, args=(sub,), daemon=True).start()

    def _serve_one(self, sub: _Subscriber) -> None:
        try:
            sub.run(self.announce_edit)
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._subs.remove(sub)


def _listen(path: Path) -> socket.socket:
    """A unix stream socket at ``path`` (a stale one from a crash is replaced), 0600."""
    remove_inside(path, run_dir())
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        s.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    s.listen(16)
    s.settimeout(0.5)
    return s


# --- clients ---------------------------------------------------------------------------


class NoHub(NotRunning):
    """Nothing serves the instance's event stream (no manager running: exit 3)."""


def subscribe(instance: str, tick: float | None = None
              ) -> Iterator[dict[str, Any] | None]:
    """The instance's event stream, message by message (``hello`` first); ends when the
    hub goes away. Connects at once (``NoHub`` if nothing serves the stream). With
    ``tick``, None is yielded after every ``tick`` seconds without a message, so a
    follower can check whether it should stop."""
    path = socket_path(instance)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(path))
    except OSError:
        s.close()
        raise NoHub(f"instance {instance!r} has no event stream ({path}): is it managed "
                    "by a running `lbtui serve` or console?") from None
    s.settimeout(tick)
    return _messages(s)


def _messages(s: socket.socket) -> Iterator[dict[str, Any] | None]:
    buf = b""
    with s:
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                yield None
                continue
            except OSError:
                return
            if not chunk:
                return
            *lines, buf = (buf + chunk).split(b"\n")
            for raw in lines:
                yield json.loads(raw)


def announce(instance: str, source: str, user: str, change: str) -> bool:
    """Tell the instance's hub (if one runs) about a configuration change; it logs it and
    shows it to every viewer. False when no hub was reached (the change still happened)."""
    msg = {"type": "edit", "source": source, "user": user, "pid": os.getpid(),
           "change": change}
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1)
            s.connect(str(socket_path(instance)))
            s.sendall(_line(msg))
    except OSError:
        return False
    return True
