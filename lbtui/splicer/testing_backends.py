"""TLS test backends and clients for the splicer's tests and benchmark (lab use only).

Certificates: ``make_certs(dir, names)`` writes a throwaway CA and, per backend, a P-256
certificate whose subject CN is the backend's name, valid for ``<name>.test``, every name
under ``*.sni.test`` and the given IP addresses (so clients can verify with or without SNI).

Servers (run in a backend namespace)::

    python -m lbtui.splicer.testing_backends serve --name backend1 --certs DIR \
        [--tls-port 8443] [--bulk-port 9443]

- TLS on ``--tls-port``: any HTTP request is answered ``<name> sni=<server_name|->`` (the
  name the backend saw in the replayed hello) and the connection is closed. A first line
  ``ECHO`` instead makes a long-lived connection: ``<name> sni=<...> echo`` then every line
  is answered ``<name> <line>`` until the client closes.
- Bulk on ``--bulk-port`` (plain TCP after a real ClientHello, so it can be spliced without
  TLS costs dominating): the client sends one TLS record (a hello) and, like a TLS client,
  waits for the server's answer (one byte ``S``); then ``D`` + u64 N (the server sends N
  bytes and closes) or ``U`` + u64 N followed by N bytes and a FIN (the server answers the
  u64 count it received).

Prints ``ready`` once both are listening. Clients (run in a client namespace) print JSON::

    python -m lbtui.splicer.testing_backends bulk --host H --port P --mode down|up --bytes N
        [--sni NAME] [--eager]
    python -m lbtui.splicer.testing_backends handshakes --host H --port P --certs DIR \
        [--sni NAME] --count N [--concurrency C]
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import socket
import socketserver
import ssl
import struct
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
_CHUNK = memoryview(b"\0" * (1 << 20))


# --- certificates --------------------------------------------------------------------


def make_certs(directory: Path, names: Sequence[str], ips: Sequence[str] = ()) -> Path:
    """Write ca.pem and <name>.pem/<name>.key for each name; returns the CA path."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lbtui test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    sans: list[x509.GeneralName] = [x509.DNSName(f"*.{SNI_DOMAIN}")]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    for name in names:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                .issuer_name(ca_name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=2))
                .add_extension(x509.SubjectAlternativeName(
                    [x509.DNSName(f"{name}.test"), *sans]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path = directory / f"{name}.key"
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_path.chmod(0o600)
    return ca_path


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


# --- servers -------------------------------------------------------------------------


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


def _server_context(name: str, certs: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs / f"{name}.pem", certs / f"{name}.key")

    def on_sni(tls: ssl.SSLSocket, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        tls.lbtui_sni = server_name  # type: ignore[attr-defined]

    ctx.sni_callback = on_sni  # type: ignore[assignment]
    return ctx


def _echo(name: str, sni: str, f: Any) -> None:
    """Long-lived mode: answer each line with ``<name> <line>`` until the client closes."""
    f.write(f"{name} sni={sni} echo\n".encode())
    while line := f.readline(8192):
        f.write(name.encode() + b" " + line)


def _tls_handler(name: str, ctx: ssl.SSLContext) -> type[socketserver.BaseRequestHandler]:
    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            sock: socket.socket = self.request
            sock.settimeout(10)
            try:
                with ctx.wrap_socket(sock, server_side=True) as tls:
                    sni = getattr(tls, "lbtui_sni", None) or "-"
                    f = tls.makefile("rwb", buffering=0)
                    first = f.readline(8192)
                    if first.strip() == b"ECHO":
                        _echo(name, sni, f)
                        return
                    while (line := f.readline(8192)) and line.strip():
                        pass                  # skip the request headers
                    body = f"{name} sni={sni}\n".encode()
                    tls.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
                                b"X-Backend: " + name.encode() + b"\r\nContent-Length: "
                                + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
                                + body)
                    tls.settimeout(2)
                    tls.unwrap()              # close_notify: a clean TLS close
            except (OSError, ssl.SSLError):
                pass

    return Handler


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


def serve(name: str, certs: Path, tls_port: int, bulk_port: int) -> None:
    ctx = _server_context(name, certs)
    servers = [_Server(("0.0.0.0", tls_port), _tls_handler(name, ctx)),
               _Server(("0.0.0.0", bulk_port), _BulkHandler)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


def start_tls_backends(topo: Any, certs: Path, timeout: float = 20) -> None:
    """Run ``serve`` in every backend of a lab topology (``lbtui.lab.topology``), each
    with its own certificate, and wait until all are listening. Teardown kills them."""
    import subprocess

    from lbtui.lab.topology import python_argv

    procs = []
    for e in topo.backends:
        procs.append((e, topo.popen(e.node, python_argv(
            "lbtui.splicer.testing_backends", "serve", "--name", e.node, "--certs",
            str(certs), "--tls-port", str(TLS_PORT), "--bulk-port", str(BULK_PORT)),
            stdout=subprocess.PIPE, text=True)))
    deadline = time.monotonic() + timeout
    for e, p in procs:
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if line.strip() == "ready":
                break
            if not line and p.poll() is not None:
                raise RuntimeError(f"TLS backend in {e.node} exited with {p.returncode}")
        else:
            raise RuntimeError(f"TLS backend in {e.node} not ready after {timeout}s")


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


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m lbtui.splicer.testing_backends")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--name", required=True)
    s.add_argument("--certs", type=Path, required=True)
    s.add_argument("--tls-port", type=int, default=TLS_PORT)
    s.add_argument("--bulk-port", type=int, default=BULK_PORT)
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
    a = ap.parse_args(argv)
    if a.cmd == "serve":
        serve(a.name, a.certs, a.tls_port, a.bulk_port)
    elif a.cmd == "bulk":
        print(json.dumps(bulk(a.host, a.port, a.mode, a.bytes, a.sni, a.eager)))
    else:
        print(json.dumps(handshakes(a.host, a.port, a.certs, a.sni, a.count,
                                    a.concurrency)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
