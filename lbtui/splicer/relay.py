"""The in-kernel relay: a SOCKHASH with an SK_SKB stream-verdict program
(``lbtui/datapath/bpf/sk_splice.c``).

Once two sockets are linked to each other (``link`` both ways) and both are in the sockhash
(``add``), every byte either receives leaves through the other without passing through
userspace. The set-up order that makes the hand-over lossless is the splicer's business
(``lbtui.splicer.service``); ``kick`` finishes it.

Kernel behaviour this relies on (Linux 6.x): a sockhash member's ``recv`` first pushes the
skbs queued before it joined through the verdict, whole (``kick`` uses this). A socket must
therefore join with nothing consumed from a partly read skb (the verdict would send the
whole skb, so its first part twice); the splicer only ever peeks before joining. Two
quirks worked around in the verdict: a bare FIN arrives as a zero-length skb (dropped), and
a redirect to a missing peer keeps the data on the socket rather than losing it.
"""

from __future__ import annotations

import ctypes as ct
import socket
import struct

from lbtui import bpfsys

SO_COOKIE = 57
VERDICT_FN = "splice_verdict"
COUNTER_NAMES = ("bytes", "skbs", "no_peer", "passed", "empty")


class RelayError(RuntimeError):
    """The relay program could not be built or attached; the message says why."""


def socket_cookie(sock: socket.socket) -> int:
    """The kernel's unique id of a socket (what the verdict program sees)."""
    cookie: int = struct.unpack("=Q", sock.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8))[0]
    return cookie


class SockmapRelay:
    """One SOCKHASH + peer map + verdict program. Not thread-safe: one owner thread."""

    def __init__(self, max_sockets: int = 65536) -> None:
        from bcc import BPF, BPFAttachType
        from bcc.libbcc import lib

        from lbtui.datapath.loader import BPF_DIR

        src = BPF_DIR / "sk_splice.c"
        try:
            self._bpf = BPF(text=src.read_bytes(),
                            cflags=[f"-DSPLICE_MAX_SOCKS={max_sockets}"])
            self._fn = self._bpf.load_func(VERDICT_FN.encode(), BPF.SK_SKB)
        except Exception as e:  # BCC raises bare Exceptions carrying the compiler's text
            raise RelayError(f"compiling/loading {src} failed: {e}") from e
        self.socks_fd = lib.bpf_table_fd(self._bpf.module, b"socks")
        self.peers_fd = self._bpf.get_table(b"peers").get_fd()
        self._counters = self._bpf.get_table(b"splice_counters")
        self._attach_type = BPFAttachType.SK_SKB_STREAM_VERDICT
        try:
            BPF.attach_func(self._fn, self.socks_fd, self._attach_type)
        except Exception as e:
            self._bpf.cleanup()
            raise RelayError(f"attaching the sockmap stream verdict failed: {e}") from e
        self.max_sockets = max_sockets

    def add(self, sock: socket.socket) -> int:
        """Put a socket in the sockhash; returns its cookie. Link its peer first: from now
        on the verdict runs on everything it receives."""
        cookie = socket_cookie(sock)
        bpfsys.update(self.socks_fd, ct.c_uint64(cookie), ct.c_int(sock.fileno()))
        return cookie

    def link(self, src_cookie: int, dst_cookie: int) -> None:
        """What ``src`` receives is sent out through ``dst`` (once both are in)."""
        bpfsys.update(self.peers_fd, ct.c_uint64(src_cookie), ct.c_uint64(dst_cookie))

    @staticmethod
    def kick(sock: socket.socket) -> bytes | None:
        """Run the verdict over data that reached ``sock`` before it joined the sockhash.

        A recv on a sockhash member first pushes its kernel receive queue through the
        verdict (whole skbs, in order); peeking then shows what stayed on the socket.
        Returns None when nothing stayed, b"" at end of stream, else the stray bytes
        (data the relay could not redirect)."""
        try:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) or b""
        except (BlockingIOError, InterruptedError):
            return None

    def forget(self, *cookies: int) -> None:
        """Drop peer entries and sockhash entries (closing a socket also drops the latter)."""
        for c in cookies:
            bpfsys.delete(self.peers_fd, ct.c_uint64(c))
            bpfsys.delete(self.socks_fd, ct.c_uint64(c))

    def counters(self) -> dict[str, int]:
        """Totals over every CPU: bytes/skbs redirected, drops for a vanished peer, skbs
        kept for userspace, bare-FIN skbs dropped."""
        out = {}
        for i, name in enumerate(COUNTER_NAMES):
            out[name] = int(sum(self._counters[ct.c_int(i)]))
        return out

    def close(self) -> None:
        """Detach and free the program and maps; sockets still in the sockhash leave it."""
        if self._bpf is None:
            return
        from bcc import BPF

        try:
            BPF.detach_func(self._fn, self.socks_fd, self._attach_type)
        except Exception:
            pass
        self._bpf.cleanup()
        self._bpf = None
