"""The maps that steer forwarding: the egress devmap and the addresses local to the
balancer."""

from __future__ import annotations

import ctypes as ct
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from lbtui import bpfsys
from lbtui.addr import (
    IpLike,
    be_to_ip,
    ip_to_be,
    parse_ipv4,
)

if TYPE_CHECKING:
    from lbtui.maps.mapset import BpfMap


def _sync_set(m: BpfMap, want: Mapping[bytes, tuple[Any, Any]]) -> tuple[int, int]:
    """Make a small hash map hold exactly ``want`` (bytes(key) -> (key, value))."""
    fd = m._require_open()
    have = {bytes(k): k for k in bpfsys.keys(fd, m.key_type)}
    for kb, (k, v) in want.items():
        if kb not in have:
            bpfsys.update(fd, k, v)
    gone = [k for kb, k in have.items() if kb not in want]
    for k in gone:
        bpfsys.delete(fd, k)
    return len(want.keys() - have.keys()), len(gone)


def set_local_addresses(local_addrs_map: BpfMap, addresses: Iterable[IpLike]
                        ) -> tuple[int, int]:
    """The addresses local to the LB's namespace (for listeners without an address).
    Returns (added, removed)."""
    want = {}
    for a in addresses:
        k = ct.c_uint32(ip_to_be(a))
        want[bytes(k)] = (k, ct.c_uint32(1))
    if len(want) > local_addrs_map.max_entries:
        raise ValueError(f"{len(want)} local addresses, more than the "
                         f"{local_addrs_map.max_entries} lbtui tracks")
    return _sync_set(local_addrs_map, want)


def local_addresses(local_addrs_map: BpfMap) -> list[str]:
    fd = local_addrs_map._require_open()
    return sorted((be_to_ip(k.value) for k in bpfsys.keys(fd, ct.c_uint32)),
                  key=lambda a: parse_ipv4(a))


def set_tx_ports(tx_ports_map: BpfMap, ifindexes: Iterable[int]) -> tuple[int, int]:
    """Make the egress devmap hold exactly these interfaces. Returns (added, removed)."""
    want = {}
    for i in ifindexes:
        k = ct.c_uint32(i)
        want[bytes(k)] = (k, ct.c_uint32(i))
    return _sync_set(tx_ports_map, want)


def tx_ports(tx_ports_map: BpfMap) -> list[int]:
    fd = tx_ports_map._require_open()
    return sorted(k.value for k in bpfsys.keys(fd, ct.c_uint32))
