"""The reference balancer bench.datapath times beside lbtui's program: a minimal
Katran-shaped XDP balancer (reference_lb.c, next to this file, says what it does and what it
leaves out), with one LRU conntrack of the same size, key and LRU kind as lbtui's.

Katran itself is not available offline here; this is written for the purpose. Its figures
tell what any one-entry conntrack design costs on this machine, so the benchmark can tell
lbtui's own cost apart from that."""

from __future__ import annotations

import ctypes as ct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lbtui import abi, bpfsys
from lbtui import maps as M
from lbtui.addr import ip_to_be

SRC = Path(__file__).with_name("reference_lb.c")
LBTUI_BPF = Path(__file__).resolve().parents[1] / "lbtui" / "datapath" / "bpf"
RING_SIZE = 65537               # REF_RING_SIZE
IPPROTO_TCP = 6


class RefValue(ct.Structure):
    _fields_ = [("ip", ct.c_uint32), ("port", ct.c_uint16), ("pad", ct.c_uint16),
                ("atime", ct.c_uint64)]


class VipKey(ct.Structure):
    _fields_ = [("ip", ct.c_uint32), ("port", ct.c_uint16), ("proto", ct.c_uint8),
                ("pad", ct.c_uint8)]


class VipMeta(ct.Structure):
    _fields_ = [("flags", ct.c_uint32), ("vip_num", ct.c_uint32)]


class Real(ct.Structure):
    _fields_ = [("ip", ct.c_uint32), ("port", ct.c_uint16), ("pad", ct.c_uint16)]


def _be16(port: int) -> int:
    return int.from_bytes(port.to_bytes(2, "big"), "little")


@dataclass
class ReferenceLB:
    """The compiled reference: its three programs and its maps (one BCC module)."""

    bpf: Any
    one_fd: int            # client side, one entry per new flow
    two_fd: int            # client side, two entries per new flow (forward and reply)
    reply_fd: int          # target side: reply tuple -> restore the VIP
    no_insert_fd: int      # a probe: a new flow's work without the insert
    ct_fd: int

    @classmethod
    def load(cls, size: int, per_cpu_lru: bool) -> ReferenceLB:
        from bcc import BPF

        flags = bpfsys.BPF_F_NO_COMMON_LRU if per_cpu_lru else 0
        b = BPF(src_file=str(SRC).encode(), cflags=[f"-I{LBTUI_BPF}", f"-DREF_CT_SIZE={size}",
                                           f"-DREF_CT_FLAGS={flags}"])
        one, two, reply, probe = (b.load_func(n, BPF.XDP).fd for n in (
            b"ref_one", b"ref_two", b"ref_reply", b"ref_no_insert"))
        return cls(b, one, two, reply, probe, b[b"ref_ct"].map_fd)

    def close(self) -> None:
        self.bpf.cleanup()

    def serve(self, vip: str, ports: list[int], targets: list[tuple[str, int, int]]) -> None:
        """``vip``:each port -> ring 0, whose slots name the (ip, port, weight) targets in
        proportion to their weights (weights summing to 100)."""
        m = self.bpf
        for i, (ip, port, _w) in enumerate(targets):
            bpfsys.update(m[b"ref_reals"].map_fd, ct.c_uint32(i),
                          Real(ip_to_be(ip), _be16(port)))
        for port in ports:
            bpfsys.update(m[b"ref_vips"].map_fd, VipKey(ip_to_be(vip), _be16(port),
                                                        IPPROTO_TCP), VipMeta(0, 0))
        pattern = [i for i, (_ip, _p, w) in enumerate(targets) for _ in range(w)]
        rings = m[b"ref_rings"].map_fd
        for slot in range(RING_SIZE):
            bpfsys.update(rings, ct.c_uint32(slot), ct.c_uint32(pattern[slot % len(pattern)]))

    def forget(self, flow: tuple[str, str, int, int]) -> None:
        """Delete a flow's forward entry and its reply entry (if the flow has one)."""
        key = M.FiveTuple(*flow).key()
        v = bpfsys.lookup(self.ct_fd, key, RefValue)
        if v is None:
            return
        bpfsys.delete(self.ct_fd, key)
        bpfsys.delete(self.ct_fd, abi.CtKey(src_ip=v.ip, dst_ip=key.src_ip, src_port=v.port,
                                            dst_port=key.src_port, proto=IPPROTO_TCP))

    def entries(self) -> int:
        reader = bpfsys.BatchReader(self.ct_fd, abi.CtKey, RefValue)
        return sum(n for _k, _v, n in reader.chunks())
