"""Maglev consistent hashing: the lookup table of a weighted target group, and the flow hash
the datapath indexes it with.

A table has ``size`` slots (a prime); each slot holds the index of a target in the group
(``NO_TARGET`` when no target has weight). The table depends only on the targets'
addresses, weights and the size: never on the order targets are listed in, the node, or the
time, so every node with the same config builds the same table. Each target walks its own
permutation of the slots (offset and skip from a fixed hash of "ip:port") and takes turns
claiming the next free slot of its permutation; a target with weight w gets w/max(weights)
turns per round (Katran's weighted variant of Maglev's population), so its share of slots
is its share of the weights. Removing a target frees only its slots; the others' claims
change little (Maglev's minimal-disruption property, measured in tests/unit).

``flow_hash`` is the datapath's ``lb_flow_hash`` (lb_xdp.c) bit for bit: the slot of a flow
is ``flow_hash(...) % size``, with no per-boot seed, so two nodes pick the same slot.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence
from functools import lru_cache

from lbtui.targets import TargetSpec

HASHES = ("weighted", "maglev")
DEFAULT_HASH = "weighted"
DEFAULT_TABLE_SIZE = 65537      # a prime; 128 KiB per group in the maglev map (two tables)
MIN_TABLE_SIZE = 4093           # 1021 slots moved 3 % extra flows (docs/scale-out.md)
MAX_TABLE_SIZE = 655373         # Maglev's "large" table; 1.25 MiB per group
NO_TARGET = 0xFF                # an empty slot: the group has no target with weight > 0

_MASK = 0xFFFFFFFF


def is_prime(n: int) -> bool:
    """Deterministic trial division (table sizes are at most a few hundred thousand)."""
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


def table_size_problem(size: object) -> str | None:
    """Why ``size`` cannot be a table size (None: it can)."""
    if isinstance(size, bool) or not isinstance(size, int):
        return f"must be a prime integer {MIN_TABLE_SIZE}..{MAX_TABLE_SIZE}"
    if not MIN_TABLE_SIZE <= size <= MAX_TABLE_SIZE:
        return f"must be a prime {MIN_TABLE_SIZE}..{MAX_TABLE_SIZE} (got {size})"
    if not is_prime(size):
        below = next(n for n in range(size - 1, 1, -1) if is_prime(n))
        above = next(n for n in range(size + 1, 2 * size) if is_prime(n))
        return f"must be a prime (got {size}; nearest primes {below} and {above})"
    return None


def _permutation(t: TargetSpec, size: int) -> tuple[int, int]:
    """(offset, skip) of a target's slot permutation: from a fixed hash of "ip:port", so
    the same target walks the same slots on every node and in every group."""
    h = hashlib.blake2b(f"{t.ip}:{t.port}".encode(), digest_size=16).digest()
    return (int.from_bytes(h[:8], "little") % size,
            int.from_bytes(h[8:], "little") % (size - 1) + 1)


def build_table(targets: Sequence[TargetSpec], size: int = DEFAULT_TABLE_SIZE) -> bytes:
    """The lookup table of a group: ``size`` bytes, slot -> index into ``targets``."""
    problem = table_size_problem(size)
    if problem:
        raise ValueError(f"table size: {problem}")
    return _build(tuple((t.ip, t.port, t.weight) for t in targets), size)


@lru_cache(maxsize=256)
def _build(targets: tuple[tuple[str, int, int], ...], size: int) -> bytes:
    live = [(i, TargetSpec(ip, port, w)) for i, (ip, port, w) in enumerate(targets) if w > 0]
    table = bytearray([NO_TARGET]) * size
    if not live:
        return bytes(table)
    # Turn order by address, not by listing order: reordering a config moves no flow.
    live.sort(key=lambda it: (int(ipaddress.IPv4Address(it[1].ip)), it[1].port))
    index = [i for i, _ in live]
    weight = [t.weight for _, t in live]
    offset, skip = zip(*(_permutation(t, size) for _, t in live), strict=True)
    position = [0] * len(live)             # how far each target walked its permutation
    credit = [0] * len(live)
    top = max(weight)
    filled = 0
    while True:
        for k in range(len(live)):
            credit[k] += weight[k]
            if credit[k] < top:
                continue
            credit[k] -= top
            j = position[k]
            slot = (offset[k] + j * skip[k]) % size
            while table[slot] != NO_TARGET:
                j += 1
                slot = (offset[k] + j * skip[k]) % size
            table[slot] = index[k]
            position[k] = j + 1
            filled += 1
            if filled == size:
                return bytes(table)


def _mix32(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK
    h ^= h >> 16
    return h


def _le32(ip: str) -> int:
    """A network-order address as the datapath's u32 load sees it (little endian)."""
    return int.from_bytes(ipaddress.IPv4Address(ip).packed, "little")


def _le16(port: int) -> int:
    return int.from_bytes(port.to_bytes(2, "big"), "little")


def flow_hash(src_ip: str, dst_ip: str, src_port: int, dst_port: int, proto: int) -> int:
    """lb_flow_hash of lb_xdp.c: the 5-tuple hash both pick methods use."""
    h = _mix32(_le32(src_ip) ^ 0x9E3779B9)
    h = _mix32(h ^ _le32(dst_ip))
    h = _mix32(h ^ ((_le16(src_port) << 16) | _le16(dst_port)))
    return _mix32(h ^ proto)


def pick(table: bytes, targets: Sequence[TargetSpec], fhash: int) -> TargetSpec | None:
    """The target a table gives a flow hash (None: no target has weight)."""
    i = table[fhash % len(table)]
    return targets[i] if i < len(targets) else None


__all__ = ["DEFAULT_HASH", "DEFAULT_TABLE_SIZE", "HASHES", "MAX_TABLE_SIZE", "MIN_TABLE_SIZE",
           "NO_TARGET", "build_table", "flow_hash", "is_prime", "pick", "table_size_problem"]
