"""ClientHellos that span segments and records, and hostile clients: malformed, non-TLS,
oversized, truncated and slowloris hellos are refused by reason while good clients are
served concurrently."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time

import pytest

from lbtui import maps as M

from . import tlstools
from .conftest import splicer_diagnostics, wait_for
from .tlstools import (
    BULK_PORT,
    cert_cn,
    client_context,
    fake_hello,
    https_get,
)

pytestmark = [pytest.mark.datapath, pytest.mark.netns, pytest.mark.timeout(300)]

HELLO_TIMEOUT = 2.0
MAX_PENDING = 8


@pytest.fixture
def lab(sni_lab):
    lab = sni_lab(n_clients=2, n_backends=2)
    lab.listen(443, lab.group(("backend2", 100)))
    M.add_sni_route(lab.maps.sni_map, "a.sni.test", lab.group(("backend1", 100)))
    lab.sp = lab.splicer(443, hello_timeout=HELLO_TIMEOUT, max_pending=MAX_PENDING,
                         max_hello=4096)
    return lab


def _split_records(record: bytes, cut: int) -> tuple[bytes, bytes]:
    """One handshake record re-framed as two records, cut inside the ClientHello."""
    hs = record[5:]
    a, b = hs[:cut], hs[cut:]
    return (record[:3] + len(a).to_bytes(2, "big") + a,
            record[:3] + len(b).to_bytes(2, "big") + b)


def _tls_with_split_hello(sock: socket.socket, ctx: ssl.SSLContext, sni: str,
                          cut: int, delay: float) -> tuple[str, str]:
    """A real TLS exchange whose ClientHello goes out as two records in two writes,
    ``delay`` apart (the transcript covers handshake messages, not records, so the
    handshake still verifies). Returns (response body, certificate CN)."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    first, second = _split_records(out.read(), cut)
    sock.sendall(first)
    time.sleep(delay)
    sock.sendall(second)

    def pump_in() -> bool:
        chunk = sock.recv(65536)
        if chunk:
            inc.write(chunk)
        else:
            inc.write_eof()
        return bool(chunk)

    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            if data := out.read():
                sock.sendall(data)
            if not pump_in():
                raise ConnectionError("closed during the handshake") from None
    obj.write(b"GET / HTTP/1.0\r\n\r\n")
    sock.sendall(out.read())
    response = b""
    while True:
        try:
            data = obj.read(65536)
            if not data:
                break
            response += data
        except ssl.SSLWantReadError:
            if data := out.read():
                sock.sendall(data)
            if not pump_in():
                break
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            break
    return response.split(b"\r\n\r\n", 1)[-1].decode().strip(), cert_cn(obj)


@pytest.mark.parametrize("cut", [3, 60, 200])
def test_hello_in_two_records_two_segments(lab, cut):
    ctx = client_context(lab.certs)
    with lab.in_client():
        sock = socket.create_connection((lab.vip, 443), timeout=10)
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body, cn = _tls_with_split_hello(sock, ctx, "a.sni.test", cut, delay=0.3)
    assert (body, cn) == ("backend1 sni=a.sni.test", "backend1")


def test_hello_over_many_small_segments(lab):
    """MSS 88 (the kernel's minimum): a ~500-byte hello takes six or more segments."""
    ctx = client_context(lab.certs)
    with lab.in_client():
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 88)
        raw.settimeout(10)
        raw.connect((lab.vip, 443))
    hello_len = len(fake_hello("a.sni.test"))
    assert hello_len > 3 * 88
    with ctx.wrap_socket(raw, server_hostname="a.sni.test") as tls:
        tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := tls.recv(4096):
            data += chunk
        assert data.endswith(b"backend1 sni=a.sni.test\n")
        assert cert_cn(tls) == "backend1"


def _alpn_context(lab, n: int) -> tuple[ssl.SSLContext, int]:
    """A client context whose ClientHello carries ``n`` ALPN names; and its hello size."""
    ctx = client_context(lab.certs)
    ctx.set_alpn_protocols([f"x-lbtui-test-protocol-{i:04d}" for i in range(n)])
    probe = ctx.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname="a.sni.test")
    with pytest.raises(ssl.SSLWantReadError):
        probe.do_handshake()
    return ctx, len(out.read())


def test_large_hello_spanning_segments(lab):
    """A ClientHello of several KB (a long ALPN list; post-quantum key shares make real
    ones this large) arrives in several full-size segments: routed and handshaken."""
    ctx, size = _alpn_context(lab, 100)
    assert 2 * 1448 < size <= 4096                 # three segments, within max_hello
    with lab.in_client():
        assert https_get(lab.vip, 443, ctx, "a.sni.test") == ("backend1 sni=a.sni.test",
                                                               "backend1")
    # Past this splicer's max_hello (4096): refused as oversized, counted.
    ctx, size = _alpn_context(lab, 150)
    assert size > 4096
    with lab.in_client(), pytest.raises((OSError, ssl.SSLError)):
        https_get(lab.vip, 443, ctx, "a.sni.test")
    assert lab.sp.stats()["rejected"]["oversized"] == 1


def _refused_quickly(lab, payload: bytes, *, then_fin: bool = False,
                     within: float = HELLO_TIMEOUT / 2) -> None:
    """Send ``payload``; the splicer must close the connection well before the hello
    timeout (so it was refused for what was sent, not for stalling)."""
    with lab.in_client():
        s = socket.create_connection((lab.vip, 443), timeout=5)
    with s:
        t0 = time.monotonic()
        s.sendall(payload)
        if then_fin:
            s.shutdown(socket.SHUT_WR)
        try:
            assert s.recv(100) == b""
        except ConnectionResetError:
            pass
        assert time.monotonic() - t0 < within


def test_bad_hellos_are_refused_by_reason(lab):
    hello = fake_hello("a.sni.test")
    _refused_quickly(lab, b"GET / HTTP/1.1\r\nHost: a.sni.test\r\n\r\n")
    _refused_quickly(lab, b"\x16\x03\x01\x00\x30\x01\x00\x00\x2c" + b"\xee" * 0x2c)
    _refused_quickly(lab, b"\x16\x03\x01\x00\x08\x01\x00\x40\x00" + b"\0" * 4)  # 16 KiB
    _refused_quickly(lab, hello[: len(hello) // 2], then_fin=True)
    # Stalled half-way: refused at the hello timeout.
    with lab.in_client():
        s = socket.create_connection((lab.vip, 443), timeout=5)
    with s:
        t0 = time.monotonic()
        s.sendall(hello[:40])
        with pytest.raises(ConnectionResetError):
            s.recv(100)
        assert HELLO_TIMEOUT * 0.9 < time.monotonic() - t0 < HELLO_TIMEOUT + 1.5
    r = lab.sp.stats()["rejected"]
    assert (r["not_tls"], r["malformed"], r["oversized"], r["truncated"], r["timeout"]) == \
        (1, 1, 1, 1, 1)
    # A whole hello and at once a FIN (no TLS client does that): refused as closed_early
    # if the FIN is in before the relay joins, else relayed; never hung.
    with lab.in_client():
        s = socket.create_connection((lab.vip, 443), timeout=5)
    with s:
        s.sendall(hello)
        s.shutdown(socket.SHUT_WR)
        try:
            while s.recv(65536):
                pass
        except ConnectionResetError:
            pass
    st = lab.sp.stats()
    assert st["rejected"]["closed_early"] + st["spliced"] == 1
    # And the splicer still serves.
    with lab.in_client():
        assert https_get(lab.vip, 443, client_context(lab.certs), "a.sni.test")[1] == \
            "backend1"


def _stalled(lab, n: int, nbytes: int = 3) -> list[socket.socket]:
    socks = []
    with lab.in_client():
        for _ in range(n):
            s = socket.create_connection((lab.vip, 443), timeout=5)
            if nbytes:
                s.sendall(fake_hello("a.sni.test")[:nbytes])
            socks.append(s)
    return socks


def test_slowloris_does_not_lock_out_good_clients(lab):
    good_n = 60
    good = subprocess.Popen(
        ["ip", "netns", "exec", lab.topo.clients[1].ns, *tlstools.argv(
            "handshakes", "--host", lab.vip, "--port",
            "443", "--certs", str(lab.certs), "--sni", "a.sni.test", "--count", str(good_n),
            "--concurrency", "4")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    held: list[socket.socket] = []
    bad_rounds = 0
    try:
        # Waves of stalled clients, four times the pending cap each, plus a dribbler,
        # for as long as the good clients run.
        with lab.in_client():
            drip = socket.create_connection((lab.vip, 443), timeout=5)
        hello = fake_hello("a.sni.test")
        sent = 0
        while good.poll() is None and bad_rounds < 40:
            held += _stalled(lab, 4 * MAX_PENDING)
            bad_rounds += 1
            try:
                drip.send(hello[sent:sent + 1])
                sent += 1
            except OSError:
                pass
            time.sleep(0.1)
        out, err = good.communicate(timeout=120)
    finally:
        if good.poll() is None:
            good.kill()
        for s in held:
            s.close()
        drip.close()
    assert good.returncode == 0, err
    res = json.loads(out)
    assert res["errors"] == {} and res["backends"] == {"backend1": good_n}, res
    assert bad_rounds >= 2, "the attack must overlap the good clients"
    s = lab.sp.stats()
    print(f"\nslowloris: {bad_rounds} waves of {4 * MAX_PENDING}; good {good_n}/{good_n} "
          f"at {res['per_s']:.0f}/s; rejected {s['rejected']}")
    assert s["rejected"]["evicted"] + s["rejected"]["timeout"] >= bad_rounds * 4 * MAX_PENDING \
        - MAX_PENDING - 1
    assert s["pending"] <= MAX_PENDING and s["loop_errors"] == 0
    wait_for(lambda: lab.sp.stats()["pending"] == 0, timeout=HELLO_TIMEOUT + 3,
             what="pending hellos to drain after the attack")


@pytest.mark.parametrize("nbytes", [4096, 1 << 20])
def test_client_data_right_after_the_hello_arrives_once_in_order(sni_lab, nbytes):
    """A client that does not wait for the server (TLS early data does this, with a
    bound): bytes read with the hello, bytes queued while the backend connects, and bytes
    relayed afterwards all arrive exactly once, in order (the server counts them)."""
    lab = sni_lab(n_clients=1, n_backends=1)
    lab.listen(BULK_PORT, lab.group(("backend1", 100), port=BULK_PORT))
    sp = lab.splicer(BULK_PORT)
    for mode in ("up", "down"):
        for _ in range(5):
            argv = tlstools.argv("bulk", "--host", lab.vip,
                               "--port", str(BULK_PORT), "--mode", mode, "--bytes",
                               str(nbytes), "--eager")
            try:
                r = lab.client_run(argv, timeout=30)
            except subprocess.TimeoutExpired:
                pytest.fail(f"eager {mode} transfer hung:\n{splicer_diagnostics(lab, sp)}")
            assert r.returncode == 0, r.stderr
            assert json.loads(r.stdout)["bytes"] == nbytes
    s = sp.stats()
    assert s["spliced"] == 10 and s["rejected"]["setup_failed"] == 0
    assert s["relay"]["no_peer"] == 0 and s["relay"]["passed"] == 0
    assert s["loop_errors"] == 0


def test_silent_clients_take_no_slot(lab):
    """Clients that connect and send nothing are held by the kernel (deferred accept):
    they take no descriptor and no pending slot, so a good client is served at once while
    more of them than the pending cap wait. Once they close (or the deferral runs out)
    they are accepted and refused, each counted once."""
    n = MAX_PENDING + 3
    silent = _stalled(lab, n, nbytes=0)
    time.sleep(0.5)
    st = lab.sp.stats()
    assert (st["accepted"], st["pending"]) == (0, 0), st
    with lab.in_client():
        assert https_get(lab.vip, 443, client_context(lab.certs), "a.sni.test")[1] == \
            "backend1"
    assert lab.sp.stats()["rejected"]["evicted"] == 0
    for s in silent:
        s.close()
    wait_for(lambda: lab.sp.stats()["accepted"] == n + 1, what="the silent clients' FINs")
    wait_for(lambda: lab.sp.stats()["pending"] == 0, timeout=HELLO_TIMEOUT + 3,
             what="the silent clients to be refused")
    r = lab.sp.stats()["rejected"]
    assert r["truncated"] == n and sum(r.values()) == n, r


def test_silent_client_accepted_after_the_deferral_times_out(lab):
    """A client that stays silent past the deferral is accepted and refused at the hello
    timeout (a reset), not held forever."""
    with lab.in_client():
        s = socket.create_connection((lab.vip, 443), timeout=15)
    with s:
        t0 = time.monotonic()
        with pytest.raises(ConnectionResetError):
            s.recv(100)
        took = time.monotonic() - t0
    print(f"\nsilent client refused after {took:.1f} s")
    assert HELLO_TIMEOUT < took < 4 * HELLO_TIMEOUT + 3, took
    r = lab.sp.stats()["rejected"]
    assert r["timeout"] == 1 and sum(r.values()) == 1, r
