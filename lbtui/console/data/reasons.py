"""Why packets went to the kernel stack: the datapath's reason counters per interface.

lbtui never drops a packet: what XDP cannot forward itself it passes to the stack, and
counts why, per ingress interface (the ``reasons`` map, as ``lbtui ctl status`` shows it).
Some are passed untouched (not balanced: no flow, not a VIP, a fragment), some are
translated first and only forwarded by the stack (a fallback: no neighbour yet, partial
checksum, an egress that takes no XDP frames).
"""

from __future__ import annotations

from dataclasses import dataclass

from lbtui.console.data.snapshot import Snapshot

# What each reason means for the operator (the datapath's ABI header says the same).
MEANING = {
    "fib_miss": "no route for the rewritten packet",
    "no_neigh": "next hop's link-layer address not known yet (the stack resolves it)",
    "mtu": "larger than the egress MTU: the stack answers",
    "egress_not_xdp": "egress interface cannot take XDP frames: the stack forwards",
    "vlan": "VLAN-tagged: the stack owns tag handling",
    "ttl": "TTL expiring: the stack sends time exceeded",
    "fragment": "IP fragment: not balanced, passed untouched",
    "ip_options": "IP options: translated, forwarded by the stack",
    "csum_partial": "partial checksum (offload): translated, forwarded by the stack",
    "no_flow": "TCP non-SYN to a listener with no flow: passed untouched",
    "no_target": "every target of the group drained: not balanced",
    "reply_clash": "the target's reply tuple belongs to a live flow",
    "stale_reply": "reply of a finished flow: not ours",
    "not_vip": "listener port, but not an address it serves",
    "icmp_translated": "ICMP error of a balanced flow, translated",
}


@dataclass(frozen=True)
class ReasonRow:
    interface: str
    reason: str
    per_s: float        # over the last refresh
    total: int          # since the maps were created

    @property
    def ref(self) -> tuple[str, str]:
        return self.interface, self.reason

    @property
    def meaning(self) -> str:
        return MEANING.get(self.reason, "")


def interface_name(snap: Snapshot, ifindex: int) -> str:
    return snap.info.ifnames.get(ifindex, f"if{ifindex}")


def reason_rows(snap: Snapshot) -> list[ReasonRow]:
    """Every nonzero (interface, reason): busiest now first, then by total."""
    rows = [ReasonRow(interface_name(snap, i), r, snap.reason_rates.get(i, {}).get(r, 0.0), n)
            for i, per in snap.reasons.items() for r, n in per.items() if n]
    return sorted(rows, key=lambda r: (-r.per_s, -r.total, r.interface, r.reason))
