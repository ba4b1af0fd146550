"""Backend servers for labs: every reply names the backend that produced it.

    python -m lbtui.lab.servers --name backend1 [--http 8080] [--echo 7000] [--udp 9000]
        [--tls 8443 --cert CERT --key KEY] [--also-http 8081 ...]

HTTP: any path answers ``<name>\\n`` (header X-Backend too); ``/bytes/N`` answers N bytes
(bulk transfers). Echo: each line is answered ``<name> <line>`` (long-lived connections).
UDP: each datagram is answered ``<name>``. TLS: the same HTTP behind TLS with the given
certificate (SNI routing happens before the backend; the backend only has to name
itself). Prints ``ready`` once every socket is bound.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl

_CHUNK = b"x" * 65536


async def _http(name: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0].split()
            path = line[1] if len(line) > 1 else b"/"
            keep = b"connection: close" not in head.lower() and b"HTTP/1.1" in head
            if path.startswith(b"/bytes/") and path[7:].isdigit():
                size = int(path[7:])
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Backend: %s\r\n"
                             b"Connection: %s\r\n\r\n" % (size, name,
                                                          b"keep-alive" if keep else b"close"))
                left = size
                while left > 0:
                    writer.write(_CHUNK[: min(left, len(_CHUNK))])
                    left -= len(_CHUNK)
                    await writer.drain()
            else:
                body = name + b"\n"
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Backend: %s\r\n"
                             b"Connection: %s\r\n\r\n%s" % (
                                 len(body), name, b"keep-alive" if keep else b"close", body))
            await writer.drain()
            if not keep:
                break
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError,
            ssl.SSLError):
        pass
    finally:
        writer.close()


async def _echo(name: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while line := await reader.readline():
            writer.write(name + b" " + line)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, name: bytes) -> None:
        self.name = name

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(self.name, addr)  # type: ignore[attr-defined]


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


async def serve(name: str, http: int | None, echo: int | None, udp: int | None,
                host: str = "0.0.0.0", tls: int | None = None,
                tls_ctx: ssl.SSLContext | None = None, also_http: tuple[int, ...] = ()) -> None:
    n = name.encode()
    servers = []
    for port in ([http] if http else []) + list(also_http):
        servers.append(await asyncio.start_server(lambda r, w: _http(n, r, w), host, port,
                                                  reuse_address=True, backlog=4096))
    if tls and tls_ctx:
        servers.append(await asyncio.start_server(
            lambda r, w: _http(n, r, w), host, tls, ssl=tls_ctx, reuse_address=True,
            backlog=1024, ssl_handshake_timeout=5))
    if echo:
        servers.append(await asyncio.start_server(lambda r, w: _echo(n, r, w), host, echo,
                                                  reuse_address=True, backlog=1024))
    if udp:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: _Udp(n), local_addr=(host, udp))
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for s in servers:
        s.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--http", type=int)
    ap.add_argument("--also-http", type=int, action="append", default=[], metavar="PORT",
                    help="more HTTP ports (same answers)")
    ap.add_argument("--echo", type=int)
    ap.add_argument("--udp", type=int)
    ap.add_argument("--tls", type=int, help="HTTPS port (needs --cert and --key)")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    a = ap.parse_args()
    if a.tls and not (a.cert and a.key):
        ap.error("--tls needs --cert and --key")
    ctx = tls_context(a.cert, a.key) if a.tls else None
    asyncio.run(serve(a.name, a.http, a.echo, a.udp, tls=a.tls, tls_ctx=ctx,
                      also_http=tuple(a.also_http)))


if __name__ == "__main__":
    main()
