"""Spliced connections in the shared conntrack map and the event stream.

A spliced flow gets one forward conntrack entry (client -> VIP, nat_dst = target) flagged
LB_CT_F_LOCAL: XDP passes its packets to the stack, and every listing (ctl, console) shows
it like a datapath flow. No reply entry: the backend talks to the splicer, not the client.
Counters come from the client socket (payload bytes and segments, not IP bytes as the
datapath counts). Opened/closed events go through lb_emit_event into the one ring buffer.
"""

from __future__ import annotations

import errno
import functools
import time
from dataclasses import dataclass

from lbtui import abi, bpfsys
from lbtui.addr import ip_to_be, port_to_be
from lbtui.events import LbEvent, emit_event
from lbtui.maps import CT_F_CLOSE_REQUEST, MapSet, stats_enabled

Addr = tuple[str, int]
BPF_EXIST = 2
# ip_to_be validates through ipaddress (~10 us); a splicer converts the same few VIPs and
# targets, and each client a few times, per connection.
ip_be_cached = functools.lru_cache(maxsize=4096)(ip_to_be)


@dataclass(eq=False)
class FlowEntry:
    client: Addr
    vip: Addr
    target: Addr
    stats: bool                       # the chosen route asked for events
    key: abi.CtKey
    value: abi.CtValue

    @property
    def flags(self) -> int:
        return self.value.flags


def _key(client: Addr, vip: Addr) -> abi.CtKey:
    return abi.CtKey(ip_be_cached(client[0]), ip_be_cached(vip[0]), port_to_be(client[1]),
                     port_to_be(vip[1]), abi.IPPROTO_TCP)


class FlowRecorder:
    """Writes spliced flows into conntrack and their events into the ring buffer."""

    def __init__(self, maps: MapSet, emit_prog_fd: int) -> None:
        self.maps = maps
        self.emit_prog_fd = emit_prog_fd
        self.events_lost = 0

    def open(self, client: Addr, vip: Addr, target: Addr, stats: bool) -> FlowEntry:
        now = time.monotonic_ns()     # CLOCK_MONOTONIC, as bpf_ktime_get_ns()
        flags = abi.CT_F_LOCAL | abi.CT_F_SEEN_REPLY | (abi.CT_F_STATS if stats else 0)
        value = abi.CtValue(orig_dst_ip=ip_be_cached(vip[0]), orig_dst_port=port_to_be(vip[1]),
                            flags=flags, nat_dst_ip=ip_be_cached(target[0]),
                            nat_dst_port=port_to_be(target[1]), created_ns=now,
                            last_seen_ns=now)
        entry = FlowEntry(client, vip, target, stats, _key(client, vip), value)
        bpfsys.update(self.maps.conntrack_map.fd, entry.key, entry.value)
        self._emit(entry, "opened", "")
        return entry

    def refresh(self, entry: FlowEntry, packets_fwd: int, packets_rev: int, bytes_fwd: int,
                bytes_rev: int, add_flags: int = 0) -> str:
        """Write the current counters (and last_seen = now). Returns "ok";
        "close_requested" when an operator deleted the connection (ctl or console flag the
        entry, ``maps.CT_F_CLOSE_REQUEST``): the caller resets it; or "reregistered" when
        the entry was gone (evicted by the LRU map under pressure, or swept) and has been
        written back: the connection is alive, so it stays listed."""
        fd = self.maps.conntrack_map.fd
        now = bpfsys.lookup(fd, entry.key, abi.CtValue)
        if now is not None and now.flags & CT_F_CLOSE_REQUEST:
            return "close_requested"
        v = entry.value
        v.packets_fwd, v.packets_rev = packets_fwd, packets_rev
        v.bytes_fwd, v.bytes_rev = bytes_fwd, bytes_rev
        v.flags |= add_flags
        v.last_seen_ns = time.monotonic_ns()
        if now is not None:
            try:
                bpfsys.update(fd, entry.key, v, BPF_EXIST)
                return "ok"
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise
        bpfsys.update(fd, entry.key, v)
        return "reregistered"

    def close(self, entry: FlowEntry, reason: str) -> None:
        """Remove the entry and emit the closed event (reason: fin, rst or aged)."""
        bpfsys.delete(self.maps.conntrack_map.fd, entry.key)
        if reason == "rst":
            entry.value.flags |= abi.CT_F_RST
        self._emit(entry, "closed", reason)

    def _emit(self, entry: FlowEntry, kind: str, reason: str) -> None:
        if not entry.stats or not stats_enabled(self.maps.settings_map):
            return
        v = entry.value
        ev = LbEvent(time.monotonic_ns(), kind, "tcp", reason, entry.client[0],
                     entry.client[1], entry.vip[0], entry.vip[1], entry.target[0],
                     entry.target[1], v.created_ns, v.packets_fwd, v.packets_rev,
                     v.bytes_fwd, v.bytes_rev)
        if not emit_event(self.emit_prog_fd, ev):
            self.events_lost += 1
