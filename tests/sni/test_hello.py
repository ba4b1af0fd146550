"""ClientHello reassembly and parsing on real hellos (Python's OpenSSL) and broken ones."""

from __future__ import annotations

import ssl

import pytest

from lbtui.splicer.hello import HelloBuffer, HelloError, parse_client_hello

from .tlstools import fake_hello


def _hello(name: str | None = "a.sni.test", max_version: ssl.TLSVersion | None = None) -> bytes:
    if max_version is None:
        return fake_hello(name)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = max_version
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def _feed_all(data: bytes, step: int | None = None, max_hello: int = 16384):
    buf = HelloBuffer(max_hello)
    step = step or len(data)
    result = None
    for i in range(0, len(data), step):
        result = buf.feed(data[i:i + step])
        if result is not None:
            assert i + step >= len(data), "complete before the last byte arrived"
    return result


def _split_records(data: bytes, cut: int) -> bytes:
    """Re-frame a one-record hello as two records (cut inside the handshake message)."""
    hs = data[5:]
    a, b = hs[:cut], hs[cut:]
    return (data[:3] + len(a).to_bytes(2, "big") + a + data[:3] + len(b).to_bytes(2, "big")
            + b)


@pytest.mark.parametrize("name", ["a.sni.test", "API.Example.COM", None])
def test_real_hello_whole(name):
    data = _hello(name)
    h = _feed_all(data)
    assert h is not None
    assert h.server_name == (name.encode() if name else None)
    assert h.record_bytes == len(data)
    assert 0 in h.extensions if name else 0 not in h.extensions


def test_tls12_hello():
    h = _feed_all(_hello("old.sni.test", ssl.TLSVersion.TLSv1_2))
    assert h.server_name == b"old.sni.test"
    assert h.legacy_version == 0x0303


@pytest.mark.parametrize("step", [1, 3, 5, 6, 100])
def test_hello_in_pieces(step):
    data = _hello("pieces.sni.test")
    assert _feed_all(data, step).server_name == b"pieces.sni.test"


@pytest.mark.parametrize("cut", [1, 3, 4, 40, 200])
def test_hello_over_two_records(cut):
    data = _split_records(_hello("two.sni.test"), cut)
    for step in (None, 7):
        h = _feed_all(data, step)
        assert h.server_name == b"two.sni.test"
        assert h.record_bytes == len(data)


def test_bytes_after_hello_are_kept():
    data = _hello("x.sni.test")
    buf = HelloBuffer()
    h = buf.feed(data + b"\x17\x03\x03\x00\x01Z")
    assert h is not None and h.record_bytes == len(data)
    assert bytes(buf.data) == data + b"\x17\x03\x03\x00\x01Z"


@pytest.mark.parametrize("data,reason", [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not_tls"),
    (b"\x80\x2e\x01\x03\x01", "not_tls"),                      # SSLv2-style hello
    (b"\x16\x02\x00\x00\x10", "not_tls"),                      # record version 2.0
    (b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00", "not_tls"),  # a ServerHello
    (b"\x16\x03\x01\x00\x00", "malformed"),                    # empty record
    (b"\x16\x03\x01\x50\x00", "malformed"),                    # record over 2^14
    (b"\x16\x03\x01\x00\x04\x01\x01\x00\x00", "oversized"),    # announces 64 KiB
])
def test_refused_early(data, reason):
    with pytest.raises(HelloError) as e:
        _feed_all(data)
    assert e.value.reason == reason


def test_oversized_by_limit():
    data = _hello("big.sni.test")
    with pytest.raises(HelloError) as e:
        _feed_all(data, max_hello=len(data) - 10)
    assert e.value.reason == "oversized"


def _corrupt(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value):]


def test_malformed_lengths():
    data = _hello("m.sni.test")
    body = data[9:]
    # session_id length beyond the message
    with pytest.raises(HelloError) as e:
        parse_client_hello(_corrupt(body, 34, b"\xff"))
    assert e.value.reason == "malformed"
    # extensions length that does not match
    sid = body[34]
    cs = int.from_bytes(body[35 + sid:37 + sid], "big")
    comp_at = 37 + sid + cs
    ext_len_at = comp_at + 1 + body[comp_at]
    with pytest.raises(HelloError):
        parse_client_hello(_corrupt(body, ext_len_at, b"\x00\x01"))
    # odd cipher suite length
    with pytest.raises(HelloError):
        parse_client_hello(_corrupt(body, 35 + sid, (cs - 1).to_bytes(2, "big")))


def test_malformed_server_name_extension():
    ext = b"\x00\x00" + (9).to_bytes(2, "big") + b"\x00\x07" + b"\x00\x00\x04abcd"
    body = (b"\x03\x03" + b"\0" * 32 + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
            + len(ext).to_bytes(2, "big") + ext)
    assert parse_client_hello(body)[1] == b"abcd"
    bad = ext[:6] + b"\x00\x00\x05abcd"          # host_name length overruns
    with pytest.raises(HelloError):
        parse_client_hello(body[:-len(ext) - 2] + len(bad).to_bytes(2, "big") + bad)
    dup = ext + ext                               # extension type twice
    with pytest.raises(HelloError):
        parse_client_hello(body[:-len(ext) - 2] + len(dup).to_bytes(2, "big") + dup)


def test_truncated_hello_needs_more():
    data = _hello("t.sni.test")
    buf = HelloBuffer()
    assert buf.feed(data[:-1]) is None


def test_dribbled_tiny_records_are_bounded():
    data = _hello("d.sni.test")
    hs = data[5:]
    framed = b"".join(data[:3] + b"\x00\x01" + hs[i:i + 1] for i in range(len(hs)))
    with pytest.raises(HelloError) as e:
        _feed_all(framed, 6)
    assert e.value.reason == "malformed"
