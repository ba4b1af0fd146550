"""Per-socket TCP byte counts from the kernel (TCP_INFO, SIOCINQ/SIOCOUTQ).

The splicer never sees the relayed bytes, so it asks each socket what went through it:
these numbers feed the conntrack counters of a spliced flow and tell when a relay
direction has delivered everything (so a FIN can follow the data, never overtake it).
"""

from __future__ import annotations

import array
import fcntl
import socket
import struct
from dataclasses import dataclass

SIOCINQ = 0x541B   # FIONREAD: bytes received and not yet read
SIOCOUTQ = 0x5411  # TIOCOUTQ: bytes written and not yet acknowledged (write_seq - snd_una)

# Offsets in struct tcp_info (linux/tcp.h, stable ABI: fields are only ever appended).
_BYTES_ACKED = 120     # __u64 tcpi_bytes_acked
_BYTES_RECEIVED = 128  # __u64 tcpi_bytes_received
_SEGS_OUT = 136        # __u32 tcpi_segs_out
_SEGS_IN = 140         # __u32 tcpi_segs_in
_INFO_LEN = 144


@dataclass(frozen=True, slots=True)
class TcpCounts:
    bytes_acked: int       # sent and acknowledged by the peer (SYN/FIN count as one each)
    bytes_received: int    # received in order (a FIN counts as one)
    segs_out: int
    segs_in: int
    outq: int              # written, not yet acknowledged
    inq: int               # received, not yet read by anyone

    @property
    def written(self) -> int:
        """Sequence space handed to the socket for sending (acked + in flight/queued)."""
        return self.bytes_acked + self.outq


def _ioctl_int(fd: int, request: int) -> int:
    buf = array.array("i", [0])
    fcntl.ioctl(fd, request, buf)
    return buf[0]


def _info(sock: socket.socket) -> bytes:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _INFO_LEN)
    if len(info) < _INFO_LEN:
        raise OSError("TCP_INFO is too short on this kernel (needs Linux 4.2+)")
    return info


def tcp_counts(sock: socket.socket) -> TcpCounts:
    """Counters of a connected TCP socket. Raises OSError if the socket is gone.

    TCP_INFO and the queue ioctls are separate calls: a segment landing between them
    would pair a byte count from before it with a queue length from after it (seen: a
    ClientHello counted in the queue but not yet as received). So the queues are read
    between two TCP_INFO reads, and again until both agree."""
    fd = sock.fileno()
    info = _info(sock)
    for _ in range(100):
        outq, inq = _ioctl_int(fd, SIOCOUTQ), _ioctl_int(fd, SIOCINQ)
        again = _info(sock)
        if again[_BYTES_ACKED:_BYTES_RECEIVED + 8] == info[_BYTES_ACKED:_BYTES_RECEIVED + 8]:
            break
        info = again
    acked, received = struct.unpack_from("=QQ", info, _BYTES_ACKED)
    segs_out, segs_in = struct.unpack_from("=II", info, _SEGS_OUT)
    return TcpCounts(acked, received, segs_out, segs_in, outq, inq)
