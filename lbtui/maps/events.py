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


@dataclass(frozen=True, slots=True)
class LbEvent:
    ts_ns: int
    kind: str            # "opened" | "closed"
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

    @property
    def target(self) -> str:
        return f"{self.target_ip}:{self.target_port}"

    @property
    def client(self) -> str:
        return f"{self.client_ip}:{self.client_port}"

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__slots__}


def decode_event(e: abi.Event) -> LbEvent:
    return LbEvent(
        e.ts_ns, "opened" if e.type == abi.EVENT_OPENED else "closed", proto_name(e.proto),
        CLOSE_REASONS.get(e.reason, "") if e.type == abi.EVENT_CLOSED else "",
        be_to_ip(e.client_ip), be_to_port(e.client_port), be_to_ip(e.vip_ip),
        be_to_port(e.vip_port), be_to_ip(e.target_ip), be_to_port(e.target_port),
        e.created_ns, e.packets_fwd, e.packets_rev, e.bytes_fwd, e.bytes_rev)


def aged_event(conn: Any, now_ns: int) -> LbEvent:
    """The closed event userspace produces for a flow its sweep removed (the kernel never
    sees a flow go idle)."""
    return LbEvent(now_ns, "closed", proto_name(conn.proto), "aged", conn.client_ip,
                   conn.client_port, conn.vip_ip, conn.vip_port, conn.target_ip,
                   conn.target_port, conn.created_ns, conn.packets_fwd, conn.packets_rev,
                   conn.bytes_fwd, conn.bytes_rev)


def encode_event(ev: LbEvent) -> bytes:
    from lbtui.addr import ip_to_be, port_to_be, proto_number

    e = abi.Event(
        ts_ns=ev.ts_ns, packets_fwd=ev.packets_fwd, packets_rev=ev.packets_rev,
        bytes_fwd=ev.bytes_fwd, bytes_rev=ev.bytes_rev, created_ns=ev.created_ns,
        client_ip=ip_to_be(ev.client_ip), vip_ip=ip_to_be(ev.vip_ip),
        target_ip=ip_to_be(ev.target_ip), client_port=port_to_be(ev.client_port),
        vip_port=port_to_be(ev.vip_port), target_port=port_to_be(ev.target_port),
        type=abi.EVENT_OPENED if ev.kind == "opened" else abi.EVENT_CLOSED,
        proto=proto_number(ev.proto),
        reason={v: k for k, v in CLOSE_REASONS.items()}.get(ev.reason, 0))
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
        """Wait up to ``timeout_ms`` for events; returns how many were consumed."""
        return self._lib.bpf_poll_ringbuf(self._rb, timeout_ms)

    def drain(self) -> int:
        return self._lib.bpf_consume_ringbuf(self._rb)

    def close(self) -> None:
        if self._rb:
            self._lib.bpf_free_ringbuf(self._rb)
            self._rb = None
