"""Benchmark backends that do not measure themselves instead of the load balancer.

    python -m bench.servers --bulk-port 5001 --udp-port 9000 [--echo-port 7000]

Bulk: every TCP connection on ``--bulk-port`` gets an endless stream of zeros until the
peer closes (the client times the transfer). UDP: a socket is bound on ``--udp-port`` and
never read, so datagrams cost the backend no userspace time; the benchmark counts what
arrives on the backend's interface. Echo: every connection on ``--echo-port`` gets back
what it sends, for as long as it stays open (long-lived, mostly idle flows). Prints
``ready`` once all are bound.

The short-request HTTP server is HAProxy (``http_server_config``): the lab's asyncio server
tops out near 5,000 connections/s on this kind of machine, below what the load balancers
under test can pass, so it would measure itself.
"""

from __future__ import annotations

import argparse
import signal
import socket
import threading
from collections.abc import Callable, Sequence

_ZEROS = bytes(1 << 20)


def http_server_config(name: str, ports: Sequence[int], threads: int) -> str:
    """HAProxy answering every request on each of ``ports`` with ``<name>\\n`` (and an
    X-Backend header)."""
    binds = "\n".join(f"  bind :{port}" for port in ports)
    return f"""global
  nbthread {threads}
  maxconn 4000
defaults
  mode http
  timeout connect 2s
  timeout client 5s
  timeout server 5s
frontend web
{binds}
  http-request return status 200 content-type text/plain lf-string "{name}\\n" \
hdr X-Backend {name}
"""


def _stream(conn: socket.socket) -> None:
    with conn:
        try:
            while True:
                conn.sendall(_ZEROS)
        except OSError:
            pass


def _echo(conn: socket.socket) -> None:
    with conn:
        try:
            while data := conn.recv(4096):
                conn.sendall(data)
        except OSError:
            pass


def _serve(listener: socket.socket, handler: Callable[[socket.socket], None]) -> None:
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handler, args=(conn,), daemon=True).start()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bulk-port", type=int, required=True)
    ap.add_argument("--udp-port", type=int, required=True)
    ap.add_argument("--echo-port", type=int)
    a = ap.parse_args()
    bulk = socket.create_server(("0.0.0.0", a.bulk_port), backlog=64, reuse_port=False)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", a.udp_port))
    threading.Thread(target=_serve, args=(bulk, _stream), daemon=True).start()
    if a.echo_port:
        echo = socket.create_server(("0.0.0.0", a.echo_port), backlog=1024)
        threading.Thread(target=_serve, args=(echo, _echo), daemon=True).start()
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    main()
