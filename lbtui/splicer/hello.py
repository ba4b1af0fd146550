"""TLS ClientHello reassembly and parsing: just enough to route on server_name.

``HelloBuffer`` collects the bytes a client sent, which may arrive in any number of TCP
segments and, legally, in several TLS records. ``HelloBuffer.feed`` answers None while more
is needed, the parsed ``ClientHello`` once the whole message is in, or raises
``HelloError`` with a reason the splicer counts:

- ``not_tls``: the first bytes are not a TLS handshake record carrying a ClientHello
- ``malformed``: a length or field that does not add up (RFC 8446 §4.1.2, RFC 6066 §3)
- ``oversized``: the ClientHello is larger than the configured limit
"""

from __future__ import annotations

from dataclasses import dataclass, field

RECORD_HEADER = 5
HANDSHAKE_HEADER = 4
CONTENT_HANDSHAKE = 22
HANDSHAKE_CLIENT_HELLO = 1
EXT_SERVER_NAME = 0
NAME_TYPE_HOST = 0
MAX_RECORD = 1 << 14  # TLSPlaintext.length limit
DEFAULT_MAX_HELLO = 16384
MAX_RECORDS = 32  # real clients use one or two; more is a dribbling trick


class HelloError(ValueError):
    """The client's first bytes are not an acceptable ClientHello."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ClientHello:
    legacy_version: int
    server_name: bytes | None       # the host_name entry of the SNI extension, as sent
    extensions: tuple[int, ...]     # extension types in order
    length: int                     # handshake message length (header included)
    record_bytes: int               # bytes of the records that carried it


class _Reader:
    """Bounds-checked cursor over a ClientHello body; any overrun is ``malformed``."""

    def __init__(self, data: bytes | memoryview, what: str) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.what = what

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, what: str) -> memoryview:
        if n > self.remaining():
            raise HelloError("malformed", f"{self.what}: {what} needs {n} bytes, "
                                          f"{self.remaining()} left")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "big")

    def vec(self, len_bytes: int, what: str) -> memoryview:
        n = int.from_bytes(self.take(len_bytes, f"{what} length"), "big")
        return self.take(n, what)


def parse_client_hello(body: bytes | memoryview) -> tuple[int, bytes | None, tuple[int, ...]]:
    """Parse a ClientHello body (after the 4-byte handshake header).

    Returns (legacy_version, server_name or None, extension types)."""
    r = _Reader(body, "ClientHello")
    version = r.u16("legacy_version")
    if version >> 8 != 3:
        raise HelloError("malformed", f"ClientHello: legacy_version 0x{version:04x}")
    r.take(32, "random")
    if len(r.vec(1, "session_id")) > 32:
        raise HelloError("malformed", "ClientHello: session_id longer than 32 bytes")
    suites = r.vec(2, "cipher_suites")
    if not suites or len(suites) % 2:
        raise HelloError("malformed", f"ClientHello: {len(suites)} bytes of cipher suites")
    if not r.vec(1, "compression_methods"):
        raise HelloError("malformed", "ClientHello: no compression method")
    if r.remaining() == 0:          # TLS 1.0-1.2 allow a hello without extensions
        return version, None, ()
    exts = _Reader(r.vec(2, "extensions"), "extensions")
    if r.remaining():
        raise HelloError("malformed", f"ClientHello: {r.remaining()} bytes after extensions")
    types: list[int] = []
    server_name: bytes | None = None
    while exts.remaining():
        etype = exts.u16("extension type")
        data = exts.vec(2, f"extension {etype}")
        if etype in types:
            raise HelloError("malformed", f"extensions: type {etype} appears twice")
        types.append(etype)
        if etype == EXT_SERVER_NAME:
            server_name = _server_name(data)
    return version, server_name, tuple(types)


def _server_name(data: memoryview) -> bytes | None:
    """The host_name of a server_name extension (RFC 6066 §3). An empty extension is
    legal in a ServerHello only; in a ClientHello the list must hold at least one name."""
    r = _Reader(data, "server_name")
    names = _Reader(r.vec(2, "server_name_list"), "server_name_list")
    if r.remaining() or not names.remaining():
        raise HelloError("malformed", "server_name: list length does not match")
    host: bytes | None = None
    seen: set[int] = set()
    while names.remaining():
        name_type = names.u8("name_type")
        name = bytes(names.vec(2, "host_name"))
        if name_type in seen:
            raise HelloError("malformed", f"server_name: name type {name_type} twice")
        seen.add(name_type)
        if name_type == NAME_TYPE_HOST:
            if not name:
                raise HelloError("malformed", "server_name: empty host_name")
            host = name
    return host


@dataclass
class HelloBuffer:
    """Accumulates a client's first bytes until a whole ClientHello is in.

    ``data`` holds every byte fed (the splicer feeds what it peeked: the bytes themselves
    stay in the kernel and reach the backend through the relay). Parsing is incremental:
    each complete record is examined once, so a client dribbling bytes costs little."""

    max_hello: int = DEFAULT_MAX_HELLO
    data: bytearray = field(default_factory=bytearray)
    _pos: int = 0                   # start of the first record not yet consumed
    _records: int = 0
    _handshake: bytearray = field(default_factory=bytearray)  # payload of whole records

    def feed(self, chunk: bytes) -> ClientHello | None:
        """Add received bytes. None while incomplete; the ClientHello when complete;
        HelloError if the bytes cannot be (or are too large to be) a ClientHello."""
        self.data += chunk
        buf = self.data
        if buf[0] != CONTENT_HANDSHAKE:
            raise HelloError("not_tls", f"first byte 0x{buf[0]:02x} is not a TLS handshake "
                                        "record")
        while len(buf) - self._pos >= RECORD_HEADER:
            pos = self._pos
            ctype, major, minor = buf[pos], buf[pos + 1], buf[pos + 2]
            rec_len = int.from_bytes(buf[pos + 3:pos + 5], "big")
            if ctype != CONTENT_HANDSHAKE:
                raise HelloError("malformed", f"record type {ctype} inside the ClientHello")
            if major != 3 or minor > 4:
                raise HelloError("not_tls" if pos == 0 else "malformed",
                                 f"record version {major}.{minor}")
            if rec_len == 0 or rec_len > MAX_RECORD:
                raise HelloError("malformed", f"record length {rec_len}")
            end = pos + RECORD_HEADER + rec_len
            if len(buf) < end:           # partial record: its first bytes may hold the
                self._total(self._handshake + buf[pos + RECORD_HEADER:pos + 9])  # header
                break
            self._records += 1
            if self._records > MAX_RECORDS:
                raise HelloError("malformed", f"ClientHello split over more than "
                                              f"{MAX_RECORDS} records")
            self._handshake += buf[pos + RECORD_HEADER:end]
            self._pos = end
            total = self._total(self._handshake)
            if total is not None and len(self._handshake) >= total:
                if len(self._handshake) > total:
                    raise HelloError("malformed", "data after the ClientHello in its record")
                version, name, exts = parse_client_hello(
                    memoryview(self._handshake)[HANDSHAKE_HEADER:total])
                return ClientHello(version, name, exts, total, end)
        return None

    def _total(self, handshake: bytes | bytearray) -> int | None:
        """Total handshake message length once its header is in. Refuses other messages,
        and sizes over the limit as soon as the header announces them."""
        if not handshake:
            return None
        if handshake[0] != HANDSHAKE_CLIENT_HELLO:
            raise HelloError("not_tls", f"handshake message type {handshake[0]} is not a "
                                        "ClientHello")
        if len(handshake) < HANDSHAKE_HEADER:
            return None
        total = HANDSHAKE_HEADER + int.from_bytes(handshake[1:4], "big")
        if total > self.max_hello:
            raise HelloError("oversized", f"ClientHello of {total} bytes exceeds the "
                                          f"{self.max_hello}-byte limit")
        return total
