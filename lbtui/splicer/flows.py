"""Spliced connections in the shared conntrack map and the event stream.

A spliced flow gets one forward conntrack entry (client -> VIP, nat_dst = target) flagged
LB_CT_F_LOCAL: XDP passes its packets to the stack, and every listing (ctl, console) shows
it like a datapath flow. No reply entry: the backend talks to the splicer, not the client.
Counters come from the client socket (payload bytes and segments, not IP bytes as the
datapath counts). Opened/closed events go through lb_emit_event into the one ring buffer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from lbtui import abi
from lbtui.maps import MapSet, stats_enabled
from lbtui.maps.conntrack import local_flow_entry, refresh_local_flow, remove_flow, write_flow
from lbtui.maps.events import LbEvent, emit_event

Addr = tuple[str, int]


@dataclass(eq=False)
class FlowEntry:
    client: Addr
    vip: Addr
    target: Addr
    stats: bool                       # the chosen route asked for events
    key: abi.CtKey
    value: abi.CtValue
    group: str = "listener"           # what chose the target: listener | source | sni
    sni_hash: int = 0

    @property
    def flags(self) -> int:
        flags: int = self.value.flags
        return flags


class FlowRecorder:
    """Writes spliced flows into conntrack and their events into the ring buffer."""

    def __init__(self, maps: MapSet, emit_prog_fd: int) -> None:
        self.maps = maps
        self.emit_prog_fd = emit_prog_fd
        self.events_lost = 0

    def open(self, client: Addr, vip: Addr, target: Addr, stats: bool,
             group: str = "listener", sni_hash: int = 0) -> FlowEntry:
        now = time.monotonic_ns()     # CLOCK_MONOTONIC, as bpf_ktime_get_ns()
        key, value = local_flow_entry(client, vip, target, stats=stats, now_ns=now)
        entry = FlowEntry(client, vip, target, stats, key, value, group, sni_hash)
        write_flow(self.maps.conntrack_map, key, value)
        self._emit(entry, "opened", "")
        return entry

    def refresh(self, entry: FlowEntry, packets_fwd: int, packets_rev: int, bytes_fwd: int,
                bytes_rev: int, add_flags: int = 0) -> str:
        """Write the current counters (and last_seen = now). Returns "ok";
        "close_requested" when an operator deleted the connection (ctl or console flag the
        entry, ``maps.conntrack.CT_F_CLOSE_REQUEST``): the caller resets it; or "reregistered" when
        the entry was gone (evicted by the LRU map under pressure, or swept) and has been
        written back: the connection is alive, so it stays listed."""
        v = entry.value
        v.packets_fwd, v.packets_rev = packets_fwd, packets_rev
        v.bytes_fwd, v.bytes_rev = bytes_fwd, bytes_rev
        v.flags |= add_flags
        v.last_seen_ns = time.monotonic_ns()
        return refresh_local_flow(self.maps.conntrack_map, entry.key, v)

    def close(self, entry: FlowEntry, reason: str) -> None:
        """Remove the entry and emit the closed event (reason: fin, rst or aged)."""
        remove_flow(self.maps.conntrack_map, entry.key)
        if reason == "rst":
            entry.value.flags |= abi.CT_F_RST
        self._emit(entry, "closed", reason)

    def connect_failed(self, client: Addr, vip: Addr, target: Addr, stats: bool,
                       group: str, sni_hash: int) -> None:
        """The target did not accept the connection: an event, so the target's health
        shows it like a SYN the datapath saw unanswered."""
        now = time.monotonic_ns()
        self._send(stats, LbEvent(now, "connect_failed", "tcp", "", client[0], client[1],
                                  vip[0], vip[1], target[0], target[1], now, 0, 0, 0, 0,
                                  group, False, False, sni_hash))

    def _emit(self, entry: FlowEntry, kind: str, reason: str) -> None:
        v = entry.value
        self._send(entry.stats, LbEvent(
            time.monotonic_ns(), kind, "tcp", reason, entry.client[0], entry.client[1],
            entry.vip[0], entry.vip[1], entry.target[0], entry.target[1], v.created_ns,
            v.packets_fwd, v.packets_rev, v.bytes_fwd, v.bytes_rev, entry.group, True,
            False, entry.sni_hash))

    def _send(self, stats: bool, ev: LbEvent) -> None:
        if not stats or not stats_enabled(self.maps.settings_map):
            return
        if not emit_event(self.emit_prog_fd, ev):
            self.events_lost += 1
