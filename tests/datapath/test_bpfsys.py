"""lbtui.bpfsys goes through libbpf (loaded by BCC), with no bpf(2) syscall numbers of its
own: pinning, opening, object info, test runs and their errors, as the kernel reports them.
And the kernel floor the loader enforces."""

from __future__ import annotations

import ctypes as ct
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbtui import bpfsys
from lbtui.datapath.loader import MIN_KERNEL, Datapath, kernel_version


@pytest.fixture
def pin_dir() -> Iterator[Path]:
    d = Path(f"/sys/fs/bpf/lbtui-bpfsys-{os.getpid()}")
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_pin_open_info_and_their_errors(session_datapath: Datapath, pin_dir: Path) -> None:
    fd = bpfsys.create_map(bpfsys.MAP_TYPE_HASH, "bpfsys_t", 4, 8, 16)
    try:
        bpfsys.update(fd, ct.c_uint32(7), ct.c_uint64(42))
        bpfsys.obj_pin(fd, str(pin_dir / "m"))
        with pytest.raises(bpfsys.BpfError) as e:
            bpfsys.obj_pin(fd, str(pin_dir / "m"))
        assert e.value.errno == errno.EEXIST and str(pin_dir / "m") in str(e.value)
    finally:
        os.close(fd)
    fd = bpfsys.obj_get(str(pin_dir / "m"))     # the pin keeps the map alive
    try:
        info = bpfsys.map_info(fd)
        assert (info.type, info.key_size, info.value_size, info.max_entries) == (
            bpfsys.MAP_TYPE_HASH, 4, 8, 16)
        assert info.name == b"bpfsys_t"
        assert bpfsys.lookup(fd, ct.c_uint32(7), ct.c_uint64).value == 42
        with pytest.raises(bpfsys.BpfError) as e:   # a map is not a program
            bpfsys.prog_test_run(fd, bytes(64))
        assert e.value.errno in (errno.EINVAL, errno.EBADF)
    finally:
        os.close(fd)
    with pytest.raises(bpfsys.BpfError) as e:
        bpfsys.obj_get(str(pin_dir / "missing"))
    assert e.value.errno == errno.ENOENT


def test_program_info_and_test_run(session_datapath: Datapath) -> None:
    info = bpfsys.prog_info(session_datapath.pass_fd)
    assert info.id > 0 and info.type == 6                     # BPF_PROG_TYPE_XDP
    r = bpfsys.prog_test_run(session_datapath.pass_fd, bytes(60), repeat=3)
    assert r.retval == 2 and len(r.data) == 60                # XDP_PASS, packet untouched


def test_kernel_floor() -> None:
    assert kernel_version("6.1.0-18-amd64") == (6, 1)
    assert kernel_version("5.10.0-28-cloud-amd64") < MIN_KERNEL <= kernel_version("5.11.0")
    assert kernel_version(os.uname().release) >= MIN_KERNEL
