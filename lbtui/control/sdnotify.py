"""systemd's readiness protocol (sd_notify(3)) with a plain datagram socket.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET``; serve sends ``READY=1`` once XDP
is attached and the config applied, ``RELOADING=1``/``READY=1`` around a reload,
``STOPPING=1`` when it starts to shut down, and ``STATUS=`` lines that ``systemctl
status`` shows. Without ``NOTIFY_SOCKET`` (not under systemd) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(*fields: str) -> bool:
    """Send ``fields`` (``"READY=1"``, ``"STATUS=..."``) to the service manager; True if
    sent. A failure is logged, never raised: the service keeps running without it."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):          # an abstract socket address
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall("\n".join(fields).encode())
    except OSError as e:
        log.warning("sd_notify to %s failed: %s", os.environ.get("NOTIFY_SOCKET"), e)
        return False
    return True
