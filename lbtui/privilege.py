"""Dropping privileges for one thread: the SNI splicer's, which parses untrusted
ClientHellos.

Linux keeps capabilities per thread, and libcap's ``cap_set_proc`` (without libpsx)
changes only the calling thread's. The splicer's thread drops every capability once its
listening socket is bound and its maps and programs are open: what it does from then on
(accept, connect, epoll, TCP_INFO, BPF map updates and BPF_PROG_TEST_RUN on descriptors it
already holds) needs none. The rest of the process keeps its capabilities, which serve
needs later (new splicers on reload, detaching XDP and unpinning at exit).
``docs/security.md`` says what this protects against and what it does not.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from pathlib import Path

PR_SET_NO_NEW_PRIVS = 38


class PrivilegeError(OSError):
    """The thread's capabilities could not be changed."""


def _libcap() -> ctypes.CDLL:
    lib = ctypes.CDLL(ctypes.util.find_library("cap") or "libcap.so.2", use_errno=True)
    lib.cap_from_text.restype = ctypes.c_void_p
    lib.cap_from_text.argtypes = [ctypes.c_char_p]
    lib.cap_set_proc.argtypes = [ctypes.c_void_p]
    lib.cap_free.argtypes = [ctypes.c_void_p]
    return lib


def drop_thread_capabilities() -> None:
    """Clear the calling thread's effective, permitted and inheritable capabilities, and
    set no_new_privs (nothing it might exec can regain any). Other threads keep theirs."""
    lib = _libcap()
    caps = lib.cap_from_text(b"=")
    if not caps:
        err = ctypes.get_errno()
        raise PrivilegeError(err, f"cap_from_text: {os.strerror(err)}")
    try:
        if lib.cap_set_proc(caps) != 0:
            err = ctypes.get_errno()
            raise PrivilegeError(err, f"dropping capabilities: {os.strerror(err)}")
    finally:
        lib.cap_free(caps)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise PrivilegeError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")


def thread_capabilities(tid: int | None = None) -> dict[str, int]:
    """CapInh/CapPrm/CapEff/CapBnd/CapAmb of a thread of this process (default: the
    caller), from /proc: what the tests and ``docs/security.md`` check."""
    tid = tid if tid is not None else threading.get_native_id()
    out = {}
    for line in Path(f"/proc/self/task/{tid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.startswith("Cap"):
            out[key] = int(value.strip(), 16)
    return out
