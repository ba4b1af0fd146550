"""Entering a network namespace for the calling thread (attach, test runs, link queries).

A direct setns(2) through ctypes: importing pyroute2 just for this costs more than half
of a short ``lbtui ctl`` call's start-up.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager

from lbtui.names import netns_name

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"entering network namespace {what}: {os.strerror(err)}")


def _open(name: str) -> int:
    try:
        return os.open(os.path.join(NETNS_RUN_DIR, netns_name(name)),
                       os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise OSError(f"network namespace {name!r} does not exist (see `ip netns`)") from None


def enter(name: str) -> None:
    """Move the calling thread into network namespace ``name`` for good (a worker thread
    that lives there); sockets it makes stay there whichever thread later uses them."""
    fd = _open(name)
    try:
        _setns(fd, name)
    finally:
        os.close(fd)


@contextmanager
def inside(name: str | None) -> Iterator[None]:
    """Run the block in network namespace ``name`` (None: stay where we are). Only this
    thread moves; sockets created inside keep that namespace after the block."""
    if not name:
        yield
        return
    target = _open(name)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target, name)
        try:
            yield
        finally:
            _setns(home, "of this process")
    finally:
        os.close(target)
        os.close(home)
