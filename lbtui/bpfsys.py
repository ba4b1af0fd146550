"""The one thin wrapper over libbpf and libbcc's map calls.

BCC 0.26's Python binding has no map creation by type, pinning, object lookup, test runs or
fixed-size batch reads; this module adds exactly those. Every call goes through the
libraries BCC already loads (libbcc and the libbpf it links), never a hand-coded bpf(2)
syscall number, so nothing here is tied to one architecture.
"""

from __future__ import annotations

import ctypes as ct
import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Generic, NoReturn, TypeVar, cast

from bcc.libbcc import lib as _bcc

MAP_TYPE_HASH = 1
MAP_TYPE_ARRAY = 2
MAP_TYPE_PERCPU_HASH = 5
MAP_TYPE_PERCPU_ARRAY = 6
MAP_TYPE_LRU_HASH = 9
MAP_TYPE_LPM_TRIE = 11
MAP_TYPE_DEVMAP_HASH = 25
MAP_TYPE_RINGBUF = 27
BPF_F_NO_PREALLOC = 1
BPF_F_NO_COMMON_LRU = 2
BPF_ANY = 0

# Keys and values are ctypes structures, scalars (c_uint32) or arrays (per-CPU values).
K = TypeVar("K", bound="ct.Structure | ct._SimpleCData[Any] | ct.Array[Any]")
V = TypeVar("V", bound="ct.Structure | ct._SimpleCData[Any] | ct.Array[Any]")
T = TypeVar("T", bound=ct.Structure)
C = TypeVar("C", bound="ct.Structure | ct._SimpleCData[Any] | ct.Array[Any]")


# mypy resolves the ctypes metaclass methods (from_buffer_copy, `*`) of a TypeVar'd class to
# the whole bound union; these two casts give back the caller's own class.
def _copy(kind: type[C], source: C) -> C:
    return cast(C, kind.from_buffer_copy(source))


def _array(kind: type[C], length: int) -> ct.Array[C]:
    return cast("ct.Array[C]", (kind * length)())

_bcc.bcc_create_map.restype = ct.c_int
_bcc.bcc_create_map.argtypes = [ct.c_int, ct.c_char_p, ct.c_int, ct.c_int, ct.c_int, ct.c_int]
# libbpf (linked by libbcc, so its symbols resolve through BCC's handle).
_bcc.bpf_obj_pin.restype = ct.c_int
_bcc.bpf_obj_pin.argtypes = [ct.c_int, ct.c_char_p]
_bcc.bpf_obj_get.restype = ct.c_int
_bcc.bpf_obj_get.argtypes = [ct.c_char_p]
_bcc.bpf_obj_get_info_by_fd.restype = ct.c_int
_bcc.bpf_obj_get_info_by_fd.argtypes = [ct.c_int, ct.c_void_p, ct.POINTER(ct.c_uint32)]


class BpfError(OSError):
    """A bpf(2) call failed; ``errno`` and a message that says what was attempted."""


def _raise(what: str, err: int) -> NoReturn:
    raise BpfError(err, f"{what}: {os.strerror(err)}")


def _errno(ret: int) -> int:
    """The error of a failed libbpf call: libbpf 1.x returns -errno and sets errno; 0.x
    returned -1 and set errno."""
    return ct.get_errno() or -ret


def create_map(map_type: int, name: str, key_size: int, value_size: int,
               max_entries: int, flags: int = 0) -> int:
    """Create a map and return its fd."""
    fd: int = _bcc.bcc_create_map(map_type, name.encode()[:15], key_size, value_size,
                             max_entries, flags)
    if fd < 0:
        _raise(f"creating map {name!r} (type {map_type}, {max_entries} entries)", -fd)
    return fd


def obj_pin(fd: int, path: str) -> None:
    ret = _bcc.bpf_obj_pin(fd, path.encode())
    if ret < 0:
        _raise(f"pinning fd {fd} at {path}", _errno(ret))


def obj_get(path: str) -> int:
    ret: int = _bcc.bpf_obj_get(path.encode())
    if ret < 0:
        _raise(f"opening pinned object {path}", _errno(ret))
    return ret


class MapInfo(ct.Structure):
    # The fields the callers read, typed for the checker (ctypes itself types none).
    type: int
    id: int
    key_size: int
    value_size: int
    max_entries: int
    map_flags: int
    name: bytes
    _fields_ = [
        ("type", ct.c_uint32), ("id", ct.c_uint32), ("key_size", ct.c_uint32),
        ("value_size", ct.c_uint32), ("max_entries", ct.c_uint32), ("map_flags", ct.c_uint32),
        ("name", ct.c_char * 16),
    ]


class ProgInfo(ct.Structure):
    type: int
    id: int
    tag: ct.Array[ct.c_uint8]
    _fields_ = [("type", ct.c_uint32), ("id", ct.c_uint32), ("tag", ct.c_uint8 * 8)]


def _obj_info(fd: int, info_type: type[T]) -> T:
    info = info_type()
    size = ct.c_uint32(ct.sizeof(info))  # the kernel fills only the fields we ask for
    ret = _bcc.bpf_obj_get_info_by_fd(fd, ct.byref(info), ct.byref(size))
    if ret < 0:
        _raise(f"reading info of fd {fd}", _errno(ret))
    return info


def map_info(fd: int) -> MapInfo:
    return _obj_info(fd, MapInfo)


def prog_info(fd: int) -> ProgInfo:
    return _obj_info(fd, ProgInfo)


# --- element operations (libbcc) -------------------------------------------------------


def update(fd: int, key: ct._CData, value: ct._CData, flags: int = BPF_ANY) -> None:
    if _bcc.bpf_update_elem(fd, ct.byref(key), ct.byref(value), flags) < 0:
        _raise(f"updating map fd {fd}", ct.get_errno())


def lookup(fd: int, key: ct._CData, value_type: type[V]) -> V | None:
    value = value_type()
    if _bcc.bpf_lookup_elem(fd, ct.byref(key), ct.byref(value)) < 0:
        err = ct.get_errno()
        if err == errno.ENOENT:
            return None
        _raise(f"looking up in map fd {fd}", err)
    return value


def delete(fd: int, key: ct._CData) -> bool:
    """Delete a key; False when it was not there."""
    if _bcc.bpf_delete_elem(fd, ct.byref(key)) < 0:
        err = ct.get_errno()
        if err == errno.ENOENT:
            return False
        _raise(f"deleting from map fd {fd}", err)
    return True


def keys(fd: int, key_type: type[K]) -> Iterator[K]:
    """Iterate keys with get_next_key (for small maps and LPM tries, which lack batch ops)."""
    key = key_type()
    nxt = key_type()
    if _bcc.bpf_get_next_key(fd, None, ct.byref(nxt)) < 0:
        return
    while True:
        ct.memmove(ct.byref(key), ct.byref(nxt), ct.sizeof(key))
        yield _copy(key_type, key)
        if _bcc.bpf_get_next_key(fd, ct.byref(key), ct.byref(nxt)) < 0:
            return


@dataclass
class BatchReader(Generic[K, V]):
    """Reads a hash map with BPF_MAP_LOOKUP_BATCH into fixed-size buffers that are reused
    across calls (BCC's items_lookup_batch allocates max_entries per call)."""

    fd: int
    key_type: type[K]
    value_type: type[V]
    chunk: int = 4096

    def __post_init__(self) -> None:
        self._keys = _array(self.key_type, self.chunk)
        self._values = _array(self.value_type, self.chunk)

    def chunks(self) -> Iterator[tuple[ct.Array[K], ct.Array[V], int]]:
        """Yield (keys, values, n) per batch; the arrays are reused, copy what you keep."""
        in_batch = ct.c_uint64(0)
        out_batch = ct.c_uint64(0)
        first = True
        while True:
            count = ct.c_uint32(self.chunk)
            ret = _bcc.bpf_lookup_batch(
                self.fd, None if first else ct.cast(ct.byref(in_batch), ct.POINTER(ct.c_uint32)),
                ct.cast(ct.byref(out_batch), ct.POINTER(ct.c_uint32)),
                ct.byref(self._keys), ct.byref(self._values), ct.byref(count))
            err = ct.get_errno() if ret < 0 else 0
            if ret < 0 and err != errno.ENOENT:
                _raise(f"batch lookup on map fd {self.fd}", err)
            if count.value:
                yield self._keys, self._values, count.value
            if ret < 0:  # ENOENT: that was the last batch
                return
            in_batch.value = out_batch.value
            first = False

    def items(self) -> Iterator[tuple[K, V]]:
        for ks, vs, n in self.chunks():
            for i in range(n):
                yield _copy(self.key_type, ks[i]), _copy(self.value_type, vs[i])


# --- program test runs -----------------------------------------------------------------


class _TestRunOpts(ct.Structure):
    """libbpf's ``struct bpf_test_run_opts`` (libbpf 1.x; ``sz`` tells it our size)."""

    _fields_ = [
        ("sz", ct.c_size_t), ("data_in", ct.c_void_p), ("data_out", ct.c_void_p),
        ("data_size_in", ct.c_uint32), ("data_size_out", ct.c_uint32),
        ("ctx_in", ct.c_void_p), ("ctx_out", ct.c_void_p),
        ("ctx_size_in", ct.c_uint32), ("ctx_size_out", ct.c_uint32),
        ("retval", ct.c_uint32), ("repeat", ct.c_int), ("duration", ct.c_uint32),
        ("flags", ct.c_uint32), ("cpu", ct.c_uint32), ("batch_size", ct.c_uint32),
    ]


_bcc.bpf_prog_test_run_opts.restype = ct.c_int
_bcc.bpf_prog_test_run_opts.argtypes = [ct.c_int, ct.POINTER(_TestRunOpts)]


class XdpMd(ct.Structure):
    _fields_ = [
        ("data", ct.c_uint32), ("data_end", ct.c_uint32), ("data_meta", ct.c_uint32),
        ("ingress_ifindex", ct.c_uint32), ("rx_queue_index", ct.c_uint32),
        ("egress_ifindex", ct.c_uint32),
    ]


@dataclass(frozen=True)
class TestRunResult:
    retval: int
    data: bytes
    duration_ns: int


def prog_test_run(prog_fd: int, packet: bytes, *, ingress_ifindex: int = 0,
                  repeat: int = 1) -> TestRunResult:
    """Run an XDP program on one packet (BPF_PROG_TEST_RUN) on the calling thread's CPU.

    ``duration_ns`` is the kernel's mean per run; with ``repeat`` > 1 later runs see the
    buffer as the previous run left it."""
    data_in = ct.create_string_buffer(packet, len(packet))
    out_size = len(packet) + 256
    data_out = ct.create_string_buffer(out_size)
    ctx = XdpMd(data=0, data_end=len(packet), ingress_ifindex=ingress_ifindex)
    opts = _TestRunOpts(
        sz=ct.sizeof(_TestRunOpts), data_size_in=len(packet), data_size_out=out_size,
        data_in=ct.addressof(data_in), data_out=ct.addressof(data_out), repeat=repeat,
        ctx_size_in=ct.sizeof(ctx) if ingress_ifindex else 0,
        ctx_in=ct.addressof(ctx) if ingress_ifindex else None,
    )
    ret = _bcc.bpf_prog_test_run_opts(prog_fd, ct.byref(opts))
    if ret < 0:
        _raise(f"BPF_PROG_TEST_RUN on prog fd {prog_fd}", _errno(ret))
    return TestRunResult(opts.retval, data_out.raw[: opts.data_size_out], opts.duration)
