"""UDP load generator: small datagrams as fast as one Python process can send them.

    python -m bench.udpflood --dst 198.18.0.10 --port 9000 --seconds 3 [--flows 8]

Sends 18-byte payloads (60-byte frames) round-robin over ``--flows`` connected sockets
(distinct source ports, so a load balancer spreads them), stops after ``--seconds`` or
``--max-packets``, and prints ``sent=<n> seconds=<s>``. On veth the sender's own CPU
carries each packet through the whole path (veth transmit runs the receiving side's
softirq inline), so a faster path shows up as more packets per second here.
"""

from __future__ import annotations

import argparse
import socket
import time

PAYLOAD = b"lbtui-bench-udp!!!"  # 18 bytes: 14 Ethernet + 20 IP + 8 UDP + 18 = 60


def flood(dst: str, port: int, seconds: float, flows: int, max_packets: int) -> tuple[int, float]:
    socks = []
    for _ in range(flows):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect((dst, port))
        socks.append(s)
    sends = [s.send for s in socks]
    sent = 0
    start = time.perf_counter()
    deadline = start + seconds
    payload = PAYLOAD
    while sent < max_packets:
        for send in sends:  # one burst: 64 datagrams per flow, then check the clock
            for _ in range(64):
                try:
                    send(payload)
                except OSError:  # ENOBUFS/ECONNREFUSED: a dropped datagram is not sent
                    sent -= 1
            sent += 64
        if time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - start
    for s in socks:
        s.close()
    return sent, elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dst", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--flows", type=int, default=8)
    ap.add_argument("--max-packets", type=int, default=50_000_000)
    a = ap.parse_args()
    if not 0 < a.seconds <= 60 or not 1 <= a.flows <= 1024:
        ap.error("--seconds must be in (0, 60] and --flows in 1..1024")
    sent, elapsed = flood(a.dst, a.port, a.seconds, a.flows, a.max_packets)
    print(f"sent={sent} seconds={elapsed:.6f}", flush=True)


if __name__ == "__main__":
    main()
