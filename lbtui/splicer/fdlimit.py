"""File descriptors for the splicers' caps: RLIMIT_NOFILE raised to fit them, or the caps
lowered to fit the limit (with a warning saying so).

A spliced flow holds two sockets, a pending hello one; a splicer with
``max_connections`` and ``max_pending`` needs ``2 * max_connections + max_pending`` plus a
few for itself. Several splicers share one process (one per SNI listener), so each
reserves its share on top of what the process has open.
"""

from __future__ import annotations

import logging
import os
import resource
import threading

log = logging.getLogger(__name__)

OWN_FDS = 64              # listener, epoll, eventfd, relay maps and programs, slack
_lock = threading.Lock()
_reserved = 0             # descriptors promised to running splicers, not yet open


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def fds_needed(max_connections: int, max_pending: int) -> int:
    return 2 * max_connections + max_pending + OWN_FDS


def reserve(max_connections: int, max_pending: int) -> tuple[int, int]:
    """Make room for a splicer's caps; returns ``(max_connections, reserved)``: the cap
    it may use (lowered if the hard limit cannot be raised far enough) and the number of
    descriptors reserved (give it back with ``release``)."""
    global _reserved
    with _lock:
        need = fds_needed(max_connections, max_pending)
        want = open_fds() + _reserved + need
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if want > soft:
            _raise_limit(want, hard)
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if want > soft:
            room = soft - open_fds() - _reserved - max_pending - OWN_FDS
            fitted = max(1, room // 2)
            log.warning("splicer: RLIMIT_NOFILE is %d and cannot be raised: max_connections "
                        "lowered from %d to %d to fit (raise the limit, e.g. LimitNOFILE= "
                        "in the systemd unit)", soft, max_connections, fitted)
            max_connections = min(max_connections, fitted)
            need = fds_needed(max_connections, max_pending)
        _reserved += need
        return max_connections, need


def release(reserved: int) -> None:
    global _reserved
    with _lock:
        _reserved = max(0, _reserved - reserved)


def _raise_limit(want: int, hard: int) -> None:
    """Soft limit to ``want``; the hard limit too if needed (root: CAP_SYS_RESOURCE, up to
    fs.nr_open). Failing that, the soft limit goes as high as the hard one allows."""
    new_hard = hard if hard == resource.RLIM_INFINITY or hard >= want else want
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, new_hard))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
