"""TLS test tooling for the splicer's tests and benchmark (not part of lbtui).

Bulk server (run in a backend namespace; plain TCP after a real ClientHello, so it can be
spliced without TLS costs dominating)::

    python tests/sni/tlstools.py serve-bulk [--port 9443]

The client sends one TLS record (a hello) and, like a TLS client, waits for the server's
answer (one byte ``S``); then ``D`` + u64 N (the server sends N bytes and closes) or
``U`` + u64 N followed by N bytes and a FIN (the server answers the u64 count it
received). Prints ``ready`` once listening.

Clients (run in a client namespace) print JSON::

    python tests/sni/tlstools.py bulk --host H --port P --mode down|up --bytes N
        [--sni NAME] [--eager]
    python tests/sni/tlstools.py handshakes --host H --port P --certs DIR \
        [--sni NAME] --count N [--concurrency C]

The TLS backends themselves are the lab's servers (``lbtui.lab.servers``), with one
certificate per backend (``lbtui.lab.tlscerts.make_backend_certs``).
"""

from __future__ import annotations

import argparse
import json
import socket
import socketserver
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

TLS_PORT = 8443
BULK_PORT = 9443
SNI_DOMAIN = "sni.test"
SCRIPT = Path(__file__).resolve()
_CHUNK = memoryview(b"\0" * (1 << 20))


def argv(*args: str) -> list[str]:
    """Run this file with the current interpreter (inside a namespace)."""
    return [sys.executable, str(SCRIPT), *args]


def client_context(certs: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    return ctx


def cert_cn(tls: ssl.SSLSocket | ssl.SSLObject) -> str:
    cert = tls.getpeercert() or {}
    for rdn in cert.get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                return v
    return ""


# --- bulk server ----------------------------------------------------------------------


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"peer closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


class _BulkHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(60)
        try:
            header = _recv_exact(sock, 5)
            _recv_exact(sock, int.from_bytes(header[3:5], "big"))
            sock.sendall(b"S")            # like a ServerHello: the client may go on
            op, n = struct.unpack("!cQ", _recv_exact(sock, 9))
            if op == b"D":
                left = n
                while left:
                    left -= sock.send(_CHUNK[:min(left, len(_CHUNK))])
                sock.shutdown(socket.SHUT_WR)
                sock.recv(1)
            elif op == b"U":
                buf = bytearray(1 << 20)
                got = 0
                while True:
                    r = sock.recv_into(buf)
                    if not r:
                        break
                    got += r
                sock.sendall(struct.pack("!Q", got))
        except OSError:
            pass


def serve_bulk(port: int) -> None:
    server = _Server(("0.0.0.0", port), _BulkHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


def start_bulk_servers(topo: Any, port: int = BULK_PORT, timeout: float = 20) -> None:
    """Run the bulk server in every backend of a lab topology and wait until all are
    listening. The topology's teardown kills them."""
    procs = [(e, topo.popen(e.node, argv("serve-bulk", "--port", str(port)),
                            stdout=subprocess.PIPE, text=True)) for e in topo.backends]
    deadline = time.monotonic() + timeout
    for e, p in procs:
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if line.strip() == "ready":
                break
            if not line and p.poll() is not None:
                raise RuntimeError(f"bulk server in {e.node} exited with {p.returncode}")
        else:
            raise RuntimeError(f"bulk server in {e.node} not ready after {timeout}s")


# --- clients -------------------------------------------------------------------------


def fake_hello(server_name: str | None = None) -> bytes:
    """A real ClientHello (from Python's ssl) to open a bulk connection with."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname=server_name)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def bulk(host: str, port: int, mode: str, nbytes: int, sni: str | None,
         eager: bool = False) -> dict[str, float]:
    """One bulk transfer. ``eager``: do not wait for the server's answer to the hello
    (like TLS early data, but unbounded): the request and an upload follow at once."""
    sock = socket.create_connection((host, port), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t0 = time.perf_counter()
    request = struct.pack("!cQ", b"D" if mode == "down" else b"U", nbytes)
    if eager:
        sock.sendall(fake_hello(sni) + request)
    else:
        sock.sendall(fake_hello(sni))
        if _recv_exact(sock, 1) != b"S":
            raise ConnectionError("bulk server did not answer the hello")
        sock.sendall(request)
    got = 0
    if mode == "down":
        if eager and _recv_exact(sock, 1) != b"S":
            raise ConnectionError("bulk server did not answer the hello")
        buf = bytearray(1 << 20)
        while True:
            r = sock.recv_into(buf)
            if not r:
                break
            got += r
    else:
        left = nbytes
        while left:
            left -= sock.send(_CHUNK[:min(left, len(_CHUNK))])
        # Like TLS, never close before the server has answered (eager or not).
        if eager and _recv_exact(sock, 1) != b"S":
            raise ConnectionError("bulk server did not answer the hello")
        sock.shutdown(socket.SHUT_WR)
        got = struct.unpack("!Q", _recv_exact(sock, 8))[0]
    seconds = time.perf_counter() - t0
    sock.close()
    return {"bytes": got, "seconds": seconds, "gbit_s": got * 8 / seconds / 1e9}


def https_get(host: str, port: int, ctx: ssl.SSLContext, sni: str | None,
              timeout: float = 10) -> tuple[str, str]:
    """(body, certificate CN) of one HTTPS GET over a fresh TLS connection."""
    with socket.create_connection((host, port), timeout=timeout) as raw, \
            ctx.wrap_socket(raw, server_hostname=sni) as tls:
        tls.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := tls.recv(4096):
            data += chunk
        return data.split(b"\r\n\r\n", 1)[-1].decode().strip(), cert_cn(tls)


def handshakes(host: str, port: int, certs: Path, sni: str | None, count: int,
               concurrency: int) -> dict[str, object]:
    ctx = client_context(certs)
    if sni is None:
        ctx.check_hostname = False
    names: Counter[str] = Counter()
    errors: Counter[str] = Counter()

    def one(_i: int) -> None:
        try:
            body, _cn = https_get(host, port, ctx, sni)
            names[body.split()[0] if body else "?"] += 1
        except (OSError, ssl.SSLError) as e:
            errors[type(e).__name__] += 1

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(count)))
    seconds = time.perf_counter() - t0
    return {"count": count, "seconds": seconds, "per_s": count / seconds,
            "backends": dict(names), "errors": dict(errors)}


def main(args: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="tlstools.py")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve-bulk")
    s.add_argument("--port", type=int, default=BULK_PORT)
    b = sub.add_parser("bulk")
    b.add_argument("--host", required=True)
    b.add_argument("--port", type=int, default=BULK_PORT)
    b.add_argument("--mode", choices=("down", "up"), default="down")
    b.add_argument("--bytes", type=int, default=256 << 20)
    b.add_argument("--sni")
    b.add_argument("--eager", action="store_true",
                   help="send the request (and upload) without waiting for the server")
    h = sub.add_parser("handshakes")
    h.add_argument("--host", required=True)
    h.add_argument("--port", type=int, default=TLS_PORT)
    h.add_argument("--certs", type=Path, required=True)
    h.add_argument("--sni")
    h.add_argument("--count", type=int, default=200)
    h.add_argument("--concurrency", type=int, default=4)
    a = ap.parse_args(args)
    if a.cmd == "serve-bulk":
        serve_bulk(a.port)
    elif a.cmd == "bulk":
        print(json.dumps(bulk(a.host, a.port, a.mode, a.bytes, a.sni, a.eager)))
    else:
        print(json.dumps(handshakes(a.host, a.port, a.certs, a.sni, a.count,
                                    a.concurrency)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
