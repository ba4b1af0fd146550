"""The stats ring buffer (a map like the others): connection opened / closed events,
decoded, encoded for userspace emission, and read with a callback."""

from __future__ import annotations

import ctypes as ct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lbtui import abi
from lbtui.addr import be_to_ip, be_to_port, proto_name
from lbtui.maps.mapset import BpfMap

_CB = ct.CFUNCTYPE(ct.c_int, ct.c_void_p, ct.c_void_p, ct.c_int)
CLOSE_REASONS = {abi.CLOSE_FIN: "fin", abi.CLOSE_RST: "rst", abi.CLOSE_AGED: "aged"}
KINDS = {abi.EVENT_OPENED: "opened", abi.EVENT_CLOSED: "closed",
         abi.EVENT_CONNECT_FAILED: "connect_failed"}
GROUPS = {abi.GROUP_LISTENER: "listener", abi.GROUP_SOURCE: "source", abi.GROUP_SNI: "sni"}


@dataclass(frozen=True, slots=True)
class LbEvent:
    ts_ns: int
    kind: str            # "opened" | "closed" | "connect_failed"
    proto: str
    reason: str          # close reason ("fin", "rst", "aged"); "" for opened
    client_ip: str
    client_port: int
    vip_ip: str
    vip_port: int
    target_ip: str
    target_port: int
    created_ns: int
    packets_fwd: int
    packets_rev: int
    bytes_fwd: int
    bytes_rev: int
    group: str = "listener"   # what chose the target: listener | source | sni
    replied: bool = False     # the target answered at least once
    rst_by_target: bool = False
    sni_hash: int = 0         # SNI-routed: the route's hostname hash

    @property
    def target(self) -> str:
        return f"{self.target_ip}:{self.target_port}"

    @property
    def client(self) -> str:
        return f"{self.client_ip}:{self.client_port}"

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__slots__}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LbEvent:
        """The inverse of ``to_dict`` (unknown keys, such as a hub's, are ignored)."""
        return cls(**{f: d[f] for f in cls.__slots__ if f in d})


def decode_event(e: abi.Event) -> LbEvent:
    return LbEvent(
        e.ts_ns, KINDS.get(e.type, "closed"), proto_name(e.proto),
        CLOSE_REASONS.get(e.reason, "") if e.type == abi.EVENT_CLOSED else "",
        be_to_ip(e.client_ip), be_to_port(e.client_port), be_to_ip(e.vip_ip),
        be_to_port(e.vip_port), be_to_ip(e.target_ip), be_to_port(e.target_port),
        e.created_ns, e.packets_fwd, e.packets_rev, e.bytes_fwd, e.bytes_rev,
        GROUPS.get(e.group, "listener"), bool(e.flags & abi.EVENT_F_REPLIED),
        bool(e.flags & abi.EVENT_F_RST_TARGET), e.sni_hash)


def aged_event(conn: Any, now_ns: int) -> LbEvent:
    """The closed event userspace produces for a flow its sweep removed (the kernel never
    sees a flow go idle)."""
    return LbEvent(now_ns, "closed", proto_name(conn.proto), "aged", conn.client_ip,
                   conn.client_port, conn.vip_ip, conn.vip_port, conn.target_ip,
                   conn.target_port, conn.created_ns, conn.packets_fwd, conn.packets_rev,
                   conn.bytes_fwd, conn.bytes_rev,
                   "source" if conn.flags & abi.CT_F_SOURCE else "listener",
                   bool(conn.flags & abi.CT_F_SEEN_REPLY), bool(conn.flags & abi.CT_F_RST_REV))


def encode_event(ev: LbEvent) -> bytes:
    from lbtui.addr import ip_to_be, port_to_be, proto_number

    e = abi.Event(
        ts_ns=ev.ts_ns, packets_fwd=ev.packets_fwd, packets_rev=ev.packets_rev,
        bytes_fwd=ev.bytes_fwd, bytes_rev=ev.bytes_rev, created_ns=ev.created_ns,
        client_ip=ip_to_be(ev.client_ip), vip_ip=ip_to_be(ev.vip_ip),
        target_ip=ip_to_be(ev.target_ip), client_port=port_to_be(ev.client_port),
        vip_port=port_to_be(ev.vip_port), target_port=port_to_be(ev.target_port),
        type={v: k for k, v in KINDS.items()}[ev.kind], proto=proto_number(ev.proto),
        reason={v: k for k, v in CLOSE_REASONS.items()}.get(ev.reason, 0),
        group={v: k for k, v in GROUPS.items()}.get(ev.group, abi.GROUP_LISTENER),
        flags=(abi.EVENT_F_REPLIED if ev.replied else 0)
        | (abi.EVENT_F_RST_TARGET if ev.rst_by_target else 0), sni_hash=ev.sni_hash)
    return bytes(e)


def emit_event(emit_prog_fd: int, ev: LbEvent) -> bool:
    """Put a userspace-made event into the stats ring buffer (through the kernel's
    lb_emit_event program), so every consumer sees one stream. False if it was lost."""
    from lbtui import bpfsys

    return bpfsys.prog_test_run(emit_prog_fd, encode_event(ev)).retval == 2  # XDP_PASS


class EventReader:
    """Consume the ring buffer through libbcc. ``poll`` calls ``on_event`` for each event.

    Poll with a finite timeout from a worker thread and check for cancellation between
    calls; a blocking poll would make shutdown hang."""

    def __init__(self, ringbuf: BpfMap, on_event: Callable[[LbEvent], None]) -> None:
        from bcc.libbcc import lib

        self._lib = lib
        self._on_event = on_event

        def _cb(_ctx: Any, data: Any, size: int) -> int:
            if size >= ct.sizeof(abi.Event):
                self._on_event(decode_event(abi.Event.from_address(data)))
            return 0

        self._cb = _CB(_cb)  # keep a reference: libbcc holds only the pointer
        self._rb = lib.bpf_new_ringbuf(ringbuf.fd, self._cb, None)
        if not self._rb:
            raise OSError(f"cannot open the stats ring buffer (fd {ringbuf.fd})")

    def poll(self, timeout_ms: int = 100) -> int:
        """Wait up to ``timeout_ms`` for events; returns how many were consumed.

        The datapath wakes the reader at most once per CPU and clock tick (lb_event_wakeup
        in lb_xdp.c): events submitted after that wakeup wait for the next one, so when the
        wait times out, whatever is in the ring buffer is consumed anyway. An event is thus
        read at most one ``timeout_ms`` after it was submitted."""
        consumed: int = self._lib.bpf_poll_ringbuf(self._rb, timeout_ms)
        if consumed <= 0:
            consumed = self.drain()
        return consumed

    def drain(self) -> int:
        consumed: int = self._lib.bpf_consume_ringbuf(self._rb)
        return consumed

    def close(self) -> None:
        if self._rb:
            self._lib.bpf_free_ringbuf(self._rb)
            self._rb = None
