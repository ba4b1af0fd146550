"""The splicer service: accept, read the ClientHello, route, connect, relay in the kernel.

One ``Splicer`` serves one SNI listener (see the package docstring for the interface). It
runs an epoll loop on its own thread, inside the listener's network namespace. Life of a
connection:

1. **pending**: accepted; its first bytes are peeked (MSG_PEEK: nothing is consumed)
   into a ``HelloBuffer`` until the whole ClientHello is in (deadline ``hello_timeout``;
   at most ``max_pending`` at once, the oldest is evicted for a newcomer so stalled
   clients cannot lock good ones out). The listener defers accepting (TCP_DEFER_ACCEPT)
   until a client's first data segment is in: a silent client costs neither a descriptor
   nor a pending slot, and a good client arrives with its hello (usually whole, so it is
   routed at once and never competes for a slot).
2. **connecting**: a target is chosen from the maps (``Router``), a non-blocking connect
   runs (deadline ``connect_timeout``).
3. **spliced**: the two sockets are linked to each other, then join the sockhash, the
   backend first (it is silent: it has not seen the hello), then the client; a ``kick``
   pushes the client's queued bytes, the hello first, through the verdict to the backend.
   From then on the kernel relays both ways; Python never consumes or writes a byte of
   the stream, the hello included: it only peeked at it.
4. **closing**: a FIN from one side is passed on (shutdown SHUT_WR on the other socket)
   only once every byte that side sent has been handed to the other socket (TCP_INFO
   counts), so the FIN never overtakes data. An error or RST on either side resets both.

The conntrack entry and opened/closed events are handled by ``FlowRecorder``; counters are
refreshed every ``stats_interval`` seconds and at close. A flow idle for longer than the
connection timeout (settings map) is reset ("aged"); a flow an operator deleted (ctl or
console: they flag its entry) is reset too ("deleted"), while a flow whose entry the LRU
conntrack map evicted under pressure is written back and goes on ("reregistered").

Overload: ``start`` raises RLIMIT_NOFILE to fit the caps (or lowers ``max_connections`` to
fit, with a warning); out of descriptors, the listener is left alone for a moment
("accept_paused") instead of being polled in a busy loop. The loop thread drops every
capability once its socket is bound (``lbtui.privilege``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import random
import select
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from lbtui import abi, netns
from lbtui.addr import parse_ipv4
from lbtui.maps import MapSet, get_connection_timeout
from lbtui.privilege import drop_thread_capabilities
from lbtui.splicer import fdlimit
from lbtui.splicer.flows import FlowEntry, FlowRecorder
from lbtui.splicer.hello import (
    DEFAULT_MAX_HELLO,
    MAX_RECORDS,
    RECORD_HEADER,
    ClientHello,
    HelloBuffer,
    HelloError,
)
from lbtui.splicer.relay import SockmapRelay, socket_cookie
from lbtui.splicer.routing import Decision, Router
from lbtui.splicer.tcpinfo import TcpCounts, tcp_counts

log = logging.getLogger(__name__)

Addr = tuple[str, int]
REJECT_REASONS = ("not_tls", "malformed", "oversized", "truncated", "timeout", "evicted",
                  "busy", "no_target", "connect_failed", "connect_timeout", "closed_early",
                  "setup_failed", "no_fds")
CLOSE_REASONS = ("fin", "rst", "aged", "deleted", "stopped")
_EP_IN, _EP_OUT, _EP_ERR, _EP_HUP = select.EPOLLIN, select.EPOLLOUT, select.EPOLLERR, \
    select.EPOLLHUP
_EP_RDHUP, _EP_ET = select.EPOLLRDHUP, select.EPOLLET
_DRAIN_TICK = 0.01
_ACCEPT_BATCH = 64
# Out of descriptors (EMFILE, ENFILE, ENOBUFS, ENOMEM): stop accepting this long, leaving
# clients in the backlog, instead of spinning on a listener that stays readable.
_ACCEPT_PAUSE = 0.1
_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def _reset_close(sock: socket.socket) -> None:
    """Close with an RST (linger 0): the peer learns at once that the connection is gone."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


@dataclass(eq=False)
class _Pending:
    sock: socket.socket
    client: Addr
    vip: Addr
    deadline: float
    hello: HelloBuffer
    base_rcv: int          # client's bytes_received before any data (SYN accounting)
    base_wr: int           # client's written sequence space before we send anything


@dataclass(eq=False)
class _Connecting:
    pending: _Pending
    backend: socket.socket
    decision: Decision
    deadline: float


@dataclass(eq=False)
class _Flow:
    client: socket.socket
    backend: socket.socket
    client_cookie: int
    backend_cookie: int
    entry: FlowEntry
    base_c_rcv: int
    base_c_wr: int
    base_b_rcv: int
    base_b_wr: int
    fin_c: bool = False        # client sent FIN
    fin_b: bool = False        # backend sent FIN
    shut_b: bool = False       # client->backend done: FIN passed to the backend
    shut_c: bool = False       # backend->client done
    progress: int = -1         # bytes moved, last time we looked
    progress_at: float = field(default_factory=time.monotonic)

    def data_c(self, c: TcpCounts) -> int:
        """Payload bytes received from the client (a received FIN takes one sequence)."""
        return c.bytes_received - self.base_c_rcv - int(self.fin_c)

    def data_b(self, b: TcpCounts) -> int:
        return b.bytes_received - self.base_b_rcv - int(self.fin_b)


class Splicer:
    """Serves one SNI listener on ``listen_ip:port`` (in ``netns``). See the package doc."""

    def __init__(self, maps: MapSet, emit_prog_fd: int, listen_ip: str, port: int,
                 netns: str | None = None, *, hello_timeout: float = 5.0,
                 max_hello: int = DEFAULT_MAX_HELLO, max_pending: int = 256,
                 connect_timeout: float = 3.0, max_connections: int = 10000,
                 backlog: int = 1024, stats_interval: float = 1.0,
                 relay: SockmapRelay | None = None, rng: random.Random | None = None) -> None:
        for name, v in (("hello_timeout", hello_timeout), ("connect_timeout", connect_timeout),
                        ("stats_interval", stats_interval)):
            if not v > 0:
                raise ValueError(f"{name}: {v!r} must be > 0 seconds")
        for name, n in (("max_hello", max_hello), ("max_pending", max_pending),
                        ("max_connections", max_connections), ("backlog", backlog)):
            if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
                raise ValueError(f"{name}: {n!r} must be a positive integer")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port: {port!r} must be an integer 0..65535 (0: any free port)")
        if parse_ipv4(listen_ip, "listen address").is_unspecified:
            raise ValueError("listen address: 0.0.0.0 would listen on every interface; give "
                             "the one address to listen on (normally the VIP)")
        self.maps = maps
        self.emit_prog_fd = emit_prog_fd
        self.listen_ip = listen_ip
        self.port = port
        self.netns = netns
        self.hello_timeout = hello_timeout
        self.max_hello = max_hello
        self.max_pending = max_pending
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.backlog = backlog
        self.stats_interval = stats_interval
        self._relay = relay
        self._own_relay = relay is None
        self._rng = rng
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping = False
        self._start_error: BaseException | None = None
        self._wake = -1
        self._fds_reserved = 0
        self._accept_resume: float | None = None   # accepting paused until then
        self.address: Addr | None = None
        # Loop-thread state.
        self._pending: dict[int, _Pending] = {}
        self._connecting: dict[int, _Connecting] = {}
        self._flows: dict[int, _Flow] = {}          # keyed by both sockets' fds
        self._draining: set[_Flow] = set()
        self._n_flows = 0
        self._closed_fds: set[int] = set()
        # A hello of max_hello bytes fits in this many bytes of records; a peek that fills
        # it without a complete hello means an oversized one.
        self._peek_limit = max_hello + RECORD_HEADER * (MAX_RECORDS + 1) + 1
        self._rbuf = bytearray(self._peek_limit)
        self._rview = memoryview(self._rbuf)

    # --- public interface ------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Build the relay, bind the listener and start serving on a background thread.
        Raises (and leaves nothing running) if the relay or the bind fails."""
        if self._thread is not None:
            raise RuntimeError("splicer already started")
        self.max_connections, self._fds_reserved = fdlimit.reserve(self.max_connections,
                                                                   self.max_pending)
        if self._relay is None:
            self._relay = SockmapRelay(max_sockets=2 * self.max_connections + 64)
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"lbtui-splicer-{self.port}")
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"splicer on port {self.port} did not start in {timeout}s")
        if self._start_error is not None:
            err = self._start_error
            self._thread.join()
            self._thread = None
            self._cleanup_shared()
            raise err

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, reset every connection (closed events with reason rst), remove
        their conntrack entries and free the relay. Idempotent."""
        t = self._thread
        if t is None:
            self._cleanup_shared()
            return
        self._stopping = True
        try:
            os.eventfd_write(self._wake, 1)
        except OSError:
            pass
        t.join(timeout)
        if t.is_alive():
            log.error("splicer on port %s did not stop within %ss", self.port, timeout)
            return
        self._thread = None
        self._cleanup_shared()

    def stats(self) -> dict[str, Any]:
        """Counters and gauges: accepted, spliced, active, pending, connecting,
        routed{sni,source,listener}, hellos{sni,no_sni}, rejected{reason},
        closed{reason}, events_lost, loop_errors, relay{bytes,skbs,no_peer,passed,
        empty}."""
        with self._lock:
            c = dict(self._counts)
            active, pending, connecting = self._n_flows, len(self._pending), len(
                self._connecting)
        out: dict[str, Any] = {
            "listen": f"{self.address[0]}:{self.address[1]}" if self.address else None,
            "running": self._thread is not None and self._thread.is_alive()
            and not self._stopping,
            "accepted": c.get("accepted", 0), "spliced": c.get("spliced", 0),
            "active": active, "pending": pending, "connecting": connecting,
            "routed": {k: c.get(f"routed.{k}", 0) for k in ("sni", "source", "listener")},
            "hellos": {k: c.get(f"hello.{k}", 0) for k in ("sni", "no_sni")},
            "rejected": {k: c.get(f"rejected.{k}", 0) for k in REJECT_REASONS},
            "closed": {k: c.get(f"closed.{k}", 0) for k in CLOSE_REASONS},
            "events_lost": c.get("events_lost", 0),
            "loop_errors": c.get("loop_errors", 0),
            "accept_paused": c.get("accept_paused", 0),
            "reregistered": c.get("reregistered", 0),
            "max_connections": self.max_connections,
        }
        relay = self._relay
        try:
            out["relay"] = relay.counters() if relay is not None else {}
        except Exception:  # the relay is being freed by stop()
            out["relay"] = {}
        return out

    def __enter__(self) -> Splicer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- thread ----------------------------------------------------------------------

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def _cleanup_shared(self) -> None:
        fdlimit.release(self._fds_reserved)
        self._fds_reserved = 0
        if self._own_relay and self._relay is not None:
            self._relay.close()
            self._relay = None
        if self._wake >= 0:
            os.close(self._wake)
            self._wake = -1

    def _run(self) -> None:
        try:
            if self.netns:
                netns.enter(self.netns)
            lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                # A TLS client speaks first: hand over a connection once its first
                # segment is in (a silent one is accepted after this many seconds).
                lsock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT,
                                 max(1, math.ceil(self.hello_timeout)))
                lsock.bind((self.listen_ip, self.port))
                lsock.listen(self.backlog)
                lsock.setblocking(False)
            except OSError as e:
                lsock.close()
                where = f" in network namespace {self.netns}" if self.netns else ""
                raise OSError(e.errno, f"splicer cannot listen on {self.listen_ip}:"
                                       f"{self.port}{where}: {e.strerror}") from None
            try:
                self.address = lsock.getsockname()
                self._router = Router(self.maps, self.address[1], self._rng)
                self._recorder = FlowRecorder(self.maps, self.emit_prog_fd)
                ep = select.epoll()
                # From here on this thread reads untrusted hellos: it keeps no capability.
                drop_thread_capabilities()
            except BaseException:
                lsock.close()
                raise
        except BaseException as e:
            self._start_error = e
            self._ready.set()
            return
        self._ep = ep
        self._lsock = lsock
        ep.register(lsock.fileno(), _EP_IN)
        ep.register(self._wake, _EP_IN)
        self._ready.set()
        try:
            self._loop()
        except Exception:
            log.exception("splicer on port %s failed", self.port)
        finally:
            self._shutdown()

    def _loop(self) -> None:
        self._next_stats = time.monotonic() + self.stats_interval
        while not self._stopping:
            try:
                self._iterate()
            except Exception:
                # Whatever went wrong concerned some connection; the others and the
                # listener must go on. Pause briefly so a persistent fault cannot spin.
                log.exception("splicer on port %s: loop error", self.port)
                self._count("loop_errors")
                time.sleep(0.1)

    def _iterate(self) -> None:
        now = time.monotonic()
        timeout = self._next_stats - now
        if self._pending:
            timeout = min(timeout, next(iter(self._pending.values())).deadline - now)
        if self._connecting:
            timeout = min(timeout, next(iter(self._connecting.values())).deadline - now)
        if self._draining:
            timeout = min(timeout, _DRAIN_TICK)
        if self._accept_resume is not None:
            if now >= self._accept_resume:
                self._accept_resume = None
                self._ep.modify(self._lsock.fileno(), _EP_IN)
            else:
                timeout = min(timeout, self._accept_resume - now)
        self._closed_fds.clear()
        lfd = self._lsock.fileno()
        for fd, events in self._ep.poll(max(timeout, 0.0)):
            if fd == lfd:
                self._accept()
            elif fd != self._wake:
                self._dispatch(fd, events)
        now = time.monotonic()
        self._expire(now)
        for flow in list(self._draining):
            self._guard(flow, self._advance_close)
        if now >= self._next_stats:
            self._next_stats = now + self.stats_interval
            self._refresh_all()

    def _guard(self, flow: _Flow, step: Any) -> None:
        """Run a step for one flow; a failure resets that flow, never the loop."""
        try:
            step(flow)
        except Exception:
            log.exception("splicer: resetting %s:%s after an internal error",
                          *flow.entry.client)
            self._abort(flow, "rst")

    def _drop(self, sock: socket.socket, reset: bool = True) -> None:
        """Close a socket, remembering its fd: an event for it later in the same poll batch
        must not be taken for one of a new socket that reused the number."""
        self._closed_fds.add(sock.fileno())
        if reset:
            _reset_close(sock)
        else:
            sock.close()

    def _dispatch(self, fd: int, events: int) -> None:
        if fd in self._closed_fds:
            return
        if fd in self._pending:
            self._read_guarded(self._pending[fd], events)
        elif fd in self._connecting:
            c = self._connecting[fd]
            try:
                self._connected(c)
            except Exception:
                log.exception("splicer: setting up %s:%s", *c.pending.client)
                self._reject_connecting(c, "setup_failed")
        elif fd in self._flows:
            flow = self._flows[fd]
            self._guard(flow, lambda f: self._flow_event(f, fd, events))

    # --- accepting and reading hellos -------------------------------------------------

    def _accept(self) -> None:
        for _ in range(_ACCEPT_BATCH):
            try:
                sock, client = self._lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in _OUT_OF_FDS:
                    self._pause_accepting(e)
                else:               # ECONNABORTED...: keep serving the others
                    log.warning("splicer accept on port %s: %s", self.port, e)
                return
            self._count("accepted")
            if self._n_flows + len(self._connecting) >= self.max_connections:
                self._count("rejected.busy")
                self._drop(sock)
                continue
            self._make_room()
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                counts = tcp_counts(sock)
                vip = sock.getsockname()
            except OSError:
                self._count("rejected.truncated")
                self._drop(sock)
                continue
            p = _Pending(sock, client, vip, time.monotonic() + self.hello_timeout,
                         HelloBuffer(self.max_hello), counts.bytes_received - counts.inq,
                         counts.written)
            self._pending[sock.fileno()] = p
            self._ep.register(sock.fileno(), _EP_IN | _EP_RDHUP | _EP_ET)
            self._read_guarded(p)   # deferred accept: the hello is usually in already

    def _read_guarded(self, p: _Pending, events: int = 0) -> None:
        try:
            self._read_hello(p, events)
        except Exception:
            log.exception("splicer: hello from %s:%s", *p.client)
            self._reject_pending(p, "malformed")

    def _pause_accepting(self, e: OSError) -> None:
        """Stop watching the listener for a moment: it stays readable while descriptors
        are short, so accepting would spin. Waiting clients stay in the backlog."""
        self._count("accept_paused")
        log.warning("splicer on port %s: out of descriptors (%s); not accepting for %gs",
                    self.port, e.strerror, _ACCEPT_PAUSE)
        self._ep.modify(self._lsock.fileno(), 0)
        self._accept_resume = time.monotonic() + _ACCEPT_PAUSE

    def _make_room(self) -> None:
        """At the pending cap, drop the oldest pending hello for the newcomer; but first
        read it, in case its hello has arrived meanwhile (then it moves on instead). A
        client is accepted with its first segment in and read at once, so a one-segment
        hello never waits here; only a hello still missing segments competes with
        newcomers, and stalled clients, being older, go first."""
        while len(self._pending) >= self.max_pending:
            oldest = next(iter(self._pending.values()))
            self._read_hello(oldest)
            if self._pending.get(oldest.sock.fileno()) is oldest:
                self._reject_pending(oldest, "evicted")

    def _read_hello(self, p: _Pending, events: int = 0) -> None:
        """Look at what the client has sent so far, without consuming it (MSG_PEEK): the
        hello stays in the kernel's receive queue and later reaches the backend through
        the relay itself, in order with whatever follows it. The socket is watched
        edge-triggered, so unread data does not wake the loop again."""
        seen = len(p.hello.data)
        try:
            n = p.sock.recv_into(self._rbuf, self._peek_limit,
                                 socket.MSG_PEEK | socket.MSG_DONTWAIT)
            eof = n == 0                # a peek returns 0 only at end of stream
        except (BlockingIOError, InterruptedError):
            n, eof = seen, False
        except OSError:
            self._reject_pending(p, "truncated")
            return
        hello = None
        if n > seen:
            try:
                hello = p.hello.feed(bytes(self._rview[seen:n]))
            except HelloError as e:
                log.debug("splicer: %s:%s: %s", *p.client, e)
                self._reject_pending(p, e.reason)
                return
        if hello is not None:
            self._route(p, hello)
        elif n >= self._peek_limit:
            self._reject_pending(p, "oversized")
        elif eof or events & (_EP_RDHUP | _EP_HUP | _EP_ERR):
            self._reject_pending(p, "truncated")   # closed before the hello was complete

    def _reject_pending(self, p: _Pending, reason: str) -> None:
        self._count(f"rejected.{reason}")
        self._forget_pending(p)
        # A reset tells a stalled or broken client at once; a polite close would leave
        # our unread bytes to turn into an RST anyway.
        self._drop(p.sock)

    def _forget_pending(self, p: _Pending) -> None:
        self._unwatch(self._pending, p.sock)

    def _unwatch(self, table: dict[int, Any], sock: socket.socket) -> None:
        """Stop tracking ``sock`` in ``table`` and in epoll (either may have let it go)."""
        fd = sock.fileno()
        table.pop(fd, None)
        with contextlib.suppress(OSError, ValueError):
            self._ep.unregister(fd)

    def _expire(self, now: float) -> None:
        while self._pending:
            p = next(iter(self._pending.values()))
            if p.deadline > now:
                break
            self._reject_pending(p, "timeout")
        while self._connecting:
            c = next(iter(self._connecting.values()))
            if c.deadline > now:
                break
            self._reject_connecting(c, "connect_timeout")

    # --- routing and connecting -------------------------------------------------------

    def _route(self, p: _Pending, hello: ClientHello) -> None:
        self._forget_pending(p)
        self._count("hello.sni" if hello.server_name else "hello.no_sni")
        decision, kind = self._router.route(hello.server_name, p.client[0],
                                            (p.client, p.vip))
        if decision is None:
            self._count("rejected.no_target")
            self._drop(p.sock)
            return
        self._count(f"routed.{kind}")
        try:
            backend = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as e:
            if e.errno not in _OUT_OF_FDS:
                raise
            self._count("rejected.no_fds")
            self._drop(p.sock)
            return
        backend.setblocking(False)
        backend.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = backend.connect_ex((decision.target.ip, decision.target.port))
        if err not in (0, errno.EINPROGRESS):
            self._connect_failed(p, decision, os.strerror(err))
            self._count("rejected.connect_failed")
            self._drop(backend)
            self._drop(p.sock)
            return
        c = _Connecting(p, backend, decision, time.monotonic() + self.connect_timeout)
        self._connecting[backend.fileno()] = c
        self._ep.register(backend.fileno(), _EP_OUT)

    def _connect_failed(self, p: _Pending, d: Decision, why: str) -> None:
        """A target that does not accept connections: logged, and an event for its
        health (the datapath's unanswered SYNs, seen from the splicer)."""
        log.warning("splicer on port %s: connect to %s for %s:%s failed: %s", self.port,
                    d.target, *p.client, why)
        if self._recorder is not None:
            t = d.target
            self._recorder.connect_failed(p.client, p.vip, (t.ip, t.port),
                                          bool(d.flags & abi.ROUTE_F_STATS), d.kind,
                                          d.sni_hash)

    def _reject_connecting(self, c: _Connecting, reason: str, why: str = "") -> None:
        if reason in ("connect_failed", "connect_timeout"):
            self._connect_failed(c.pending, c.decision, why or reason.replace("_", " "))
        self._count(f"rejected.{reason}")
        self._unwatch(self._connecting, c.backend)
        self._drop(c.backend)
        self._drop(c.pending.sock)

    def _connected(self, c: _Connecting) -> None:
        err = c.backend.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if not err:
            try:
                c.backend.getpeername()
            except OSError:
                return          # not connected yet (a spurious wake-up)
        if err:
            self._reject_connecting(c, "connect_failed", os.strerror(err))
            return
        fd = c.backend.fileno()
        del self._connecting[fd]
        self._ep.unregister(fd)
        p, backend = c.pending, c.backend
        client = p.sock
        relay = self._relay
        assert relay is not None
        # The flow is listed (and its opened event sent) before the relay starts, so no
        # listing can miss a flow whose bytes are already moving.
        t = c.decision.target
        try:
            entry = self._recorder.open(p.client, p.vip, (t.ip, t.port),
                                        bool(c.decision.flags & abi.ROUTE_F_STATS),
                                        c.decision.kind, c.decision.sni_hash)
        except OSError as e:
            log.warning("splicer: conntrack insert for %s:%s failed: %s", *p.client, e)
            self._count("rejected.setup_failed")
            self._drop(backend)
            self._drop(client)
            return
        cc = cb = 0
        try:
            b0 = tcp_counts(backend)
            cc, cb = socket_cookie(client), socket_cookie(backend)
            # Order matters (module docstring, step 3): links first, then the backend
            # (silent: it has not seen the hello), then the client, whose queued bytes,
            # hello first, the kick sends through the verdict to the backend.
            relay.link(cc, cb)
            relay.link(cb, cc)
            relay.add(backend)
            relay.add(client)
            if relay.kick(client) or relay.kick(backend):
                # Cannot happen while both are in the sockhash; refuse rather than guess.
                raise OSError(errno.EPROTO, "data stayed on a socket after joining")
        except OSError as e:
            log.debug("splicer: setting up %s:%s -> %s failed: %s", *p.client,
                      c.decision.target, e)
            if cc:
                relay.forget(cc, cb)
            self._recorder.close(entry, "rst")
            # EOPNOTSUPP: a socket that has received a FIN cannot join a sockhash. A TLS
            # client never closes before the server's answer (and a backend that closes
            # on accept is down); refusing such a connection loses nothing TLS needs.
            reason = "closed_early" if e.errno == errno.EOPNOTSUPP else "setup_failed"
            self._count(f"rejected.{reason}")
            self._drop(backend)
            self._drop(client)
            return
        flow = _Flow(client, backend, cc, cb, entry, p.base_rcv, p.base_wr,
                     b0.bytes_received - b0.inq, b0.written)
        self._flows[client.fileno()] = flow
        self._flows[backend.fileno()] = flow
        with self._lock:
            self._n_flows += 1
            self._counts["spliced"] += 1
        self._ep.register(client.fileno(), _EP_RDHUP)
        self._ep.register(backend.fileno(), _EP_RDHUP)

    # --- relaying and closing ---------------------------------------------------------

    def _flow_event(self, flow: _Flow, fd: int, events: int) -> None:
        sock = flow.client if fd == flow.client.fileno() else flow.backend
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err or events & _EP_ERR:
            log.debug("splicer: %s:%s: %s side error %s (events 0x%x)", *flow.entry.client,
                      "client" if sock is flow.client else "backend",
                      os.strerror(err) if err else "-", events)
            self._abort(flow, "rst")
            return
        if events & (_EP_RDHUP | _EP_HUP):
            # FIN from this side. Stop watching it (EPOLLHUP cannot be masked and would
            # fire on every poll); its close is completed by _advance_close.
            self._ep.unregister(fd)
            if sock is flow.client:
                flow.fin_c = True
            else:
                flow.fin_b = True
            self._draining.add(flow)
            self._advance_close(flow)

    def _advance_close(self, flow: _Flow) -> None:
        """Pass each received FIN on once its direction has delivered everything; finish
        when both directions are done."""
        c, b = tcp_counts(flow.client), tcp_counts(flow.backend)
        try:
            if flow.fin_c and not flow.shut_b and b.written - flow.base_b_wr >= flow.data_c(c):
                flow.backend.shutdown(socket.SHUT_WR)
                flow.shut_b = True
            if flow.fin_b and not flow.shut_c and c.written - flow.base_c_wr >= flow.data_b(b):
                flow.client.shutdown(socket.SHUT_WR)
                flow.shut_c = True
        except OSError as e:
            log.debug("splicer: %s:%s: passing a FIN on failed: %s", *flow.entry.client, e)
            # ENOTCONN/EPIPE: that side has reset meanwhile (say, a client's late alert hit
            # a backend that had already closed). Reset the other side too, as a direct
            # connection would have.
            self._finish(flow, "rst", c, b)
            return
        if flow.shut_b and flow.shut_c:
            self._finish(flow, "fin", c, b)

    def _counters(self, flow: _Flow, c: TcpCounts, b: TcpCounts) -> tuple[int, ...]:
        """(packets_fwd, packets_rev, bytes_fwd, bytes_rev) from the client socket: bytes
        from the client, and bytes the client acknowledged (at most what the backend
        sent)."""
        to_client = min(max(c.bytes_acked - flow.base_c_wr, 0), flow.data_b(b))
        return c.segs_in, c.segs_out, max(flow.data_c(c), 0), to_client

    def _finish(self, flow: _Flow, reason: str, c: TcpCounts | None = None,
                b: TcpCounts | None = None) -> None:
        """Close both sockets (gracefully unless ``reason`` is a reset), drop the
        conntrack entry and emit the closed event."""
        try:
            c = c or tcp_counts(flow.client)
            b = b or tcp_counts(flow.backend)
            pf, pr, bf, br = self._counters(flow, c, b)
            v = flow.entry.value
            v.packets_fwd, v.packets_rev, v.bytes_fwd, v.bytes_rev = pf, pr, bf, br
        except OSError:
            pass
        if flow.fin_c:
            flow.entry.value.flags |= abi.CT_F_FIN_FWD
        if flow.fin_b:
            flow.entry.value.flags |= abi.CT_F_FIN_REV
        for s in (flow.client, flow.backend):
            self._unwatch(self._flows, s)
        self._draining.discard(flow)
        if self._relay is not None:
            self._relay.forget(flow.client_cookie, flow.backend_cookie)
        self._drop(flow.client, reset=reason != "fin")
        self._drop(flow.backend, reset=reason != "fin")
        event_reason = {"fin": "fin", "aged": "aged"}.get(reason, "rst")
        try:
            self._recorder.close(flow.entry, event_reason)
        except OSError as e:
            log.warning("splicer: closing conntrack entry: %s", e)
        with self._lock:
            self._n_flows -= 1
            self._counts[f"closed.{reason}"] += 1
            self._counts["events_lost"] = self._recorder.events_lost

    def _abort(self, flow: _Flow, reason: str) -> None:
        if flow.client.fileno() in self._flows or flow.backend.fileno() in self._flows:
            self._finish(flow, reason)

    def _refresh_all(self) -> None:
        """Periodic: counters into conntrack, idle timeout, operator deletions."""
        flows = {id(f): f for f in self._flows.values()}.values()
        timeout = get_connection_timeout(self.maps.settings_map)
        now = time.monotonic()
        for flow in list(flows):
            self._guard(flow, lambda f: self._refresh(f, now, timeout))

    def _refresh(self, flow: _Flow, now: float, timeout: int) -> None:
        c, b = tcp_counts(flow.client), tcp_counts(flow.backend)
        pf, pr, bf, br = self._counters(flow, c, b)
        moved = c.bytes_received + c.bytes_acked + b.bytes_received + b.bytes_acked
        if moved != flow.progress:
            flow.progress, flow.progress_at = moved, now
        elif timeout and now - flow.progress_at > timeout:
            self._finish(flow, "aged", c, b)
            return
        flags = (abi.CT_F_FIN_FWD if flow.fin_c else 0) | (abi.CT_F_FIN_REV if flow.fin_b
                                                             else 0)
        outcome = self._recorder.refresh(flow.entry, pf, pr, bf, br, flags)
        if outcome == "close_requested":
            self._finish(flow, "deleted", c, b)
        elif outcome == "reregistered":
            self._count("reregistered")

    def _shutdown(self) -> None:
        """Loop exit: reset everything, remove our conntrack entries, close the listener."""
        for p in list(self._pending.values()):
            self._forget_pending(p)
            self._drop(p.sock)
        for c in list(self._connecting.values()):
            self._connecting.pop(c.backend.fileno(), None)
            self._drop(c.backend)
            self._drop(c.pending.sock)
        for flow in list({id(f): f for f in self._flows.values()}.values()):
            try:
                self._finish(flow, "stopped")
            except Exception:
                log.exception("splicer: closing a flow at stop")
        self._ep.close()
        self._lsock.close()
