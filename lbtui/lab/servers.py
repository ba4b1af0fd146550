"""Backend servers for labs: every reply names the backend that produced it.

    python -m lbtui.lab.servers --name backend1 [--http 8080] [--echo 7000] [--udp 9000]
        [--tls 8443 (--cert CERT --key KEY | --certs DIR)] [--also-http 8081 ...]

HTTP: any path answers ``<name>\\n`` (header X-Backend too); ``/bytes/N`` answers N bytes
(bulk transfers). Echo: each line is answered ``<name> <line>`` (long-lived connections).
UDP: each datagram is answered ``<name>``. TLS: the same HTTP behind TLS, answering
``<name> sni=<the server name this backend saw, or ->`` (so the SNI path can be checked
end to end); a first line ``ECHO`` instead makes a long-lived connection answered like the
echo port, after a ``<name> sni=<...> echo`` line. The certificate is ``--cert/--key``,
or ``--certs DIR`` holding ``<name>.pem``/``<name>.key`` (one per backend). Prints
``ready`` once every socket is bound.

These are the lab's servers, the one home of every backend the demo, the tests and the
benchmarks run.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
from typing import cast

_CHUNK = b"x" * 65536


async def _request(reader: asyncio.StreamReader, first: bytes) -> bytes:
    """The request head whose first line is ``first``: lines up to the empty one."""
    head = first
    while (line := await reader.readline()) not in (b"\r\n", b"\n"):
        if not line:
            raise asyncio.IncompleteReadError(head, None)
        head += line
    return head


async def _http(name: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    tls = writer.get_extra_info("ssl_object")
    sni = (getattr(tls, "lbtui_sni", None) or "-").encode() if tls is not None else None
    try:
        while first := await reader.readline():
            if sni is not None and first.strip() == b"ECHO":
                writer.write(name + b" sni=" + sni + b" echo\n")
                await _echo(name, reader, writer)
                return
            head = await _request(reader, first)
            line = first.split()
            path = line[1] if len(line) > 1 else b"/"
            keep = b"connection: close" not in head.lower() and b"HTTP/1.1" in first
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
                body = name + (b" sni=" + sni if sni is not None else b"") + b"\n"
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
        # A datagram endpoint's transport: asyncio's own class does not subclass
        # DatagramTransport, so this is a cast, not an isinstance check.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(self.name, addr)


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)

    def on_sni(obj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        # The name the client asked for, kept on the connection for _http to answer with;
        # SSLObject declares no such attribute.
        obj.lbtui_sni = server_name  # type: ignore[attr-defined]

    ctx.sni_callback = on_sni
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
    ap.add_argument("--tls", type=int,
                    help="HTTPS port (needs --cert and --key, or --certs)")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--certs", help="directory with <name>.pem and <name>.key")
    a = ap.parse_args()
    if a.certs:
        a.cert, a.key = f"{a.certs}/{a.name}.pem", f"{a.certs}/{a.name}.key"
    if a.tls and not (a.cert and a.key):
        ap.error("--tls needs --cert and --key, or --certs")
    ctx = tls_context(a.cert, a.key) if a.tls else None
    asyncio.run(serve(a.name, a.http, a.echo, a.udp, tls=a.tls, tls_ctx=ctx,
                      also_http=tuple(a.also_http)))


if __name__ == "__main__":
    main()
