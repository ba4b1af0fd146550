"""SNI hostnames: validation and the FNV-1a 64 hash that keys the sni map.

The hash is taken over the ASCII-lower-cased bytes with no trailing dot; lower-casing is
ASCII-only on purpose (a locale-aware lower() breaks on some locales, e.g. Turkish "I").
"""

from __future__ import annotations

import re

FNV64_OFFSET = 0xCBF29CE484222325
FNV64_PRIME = 0x100000001B3
MAX_HOSTNAME = 253

_LABEL = re.compile(rb"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_ASCII_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")


def fnv1a64(data: bytes) -> int:
    h = FNV64_OFFSET
    for b in data:
        h ^= b
        h = (h * FNV64_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h


def normalize_hostname(hostname: str | bytes) -> bytes:
    """Validate and canonicalise a hostname: ASCII lower case, no trailing dot.

    Raises ValueError naming the problem (length, characters, empty label)."""
    if isinstance(hostname, str):
        try:
            raw = hostname.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError(f"hostname {hostname!r}: only ASCII letters, digits, '-' and '.' "
                             "are allowed (use the punycode form for IDNs)") from None
    elif isinstance(hostname, bytes):
        raw = hostname
    else:
        raise ValueError(f"hostname: expected a string, got {type(hostname).__name__}")
    raw = raw.strip().translate(_ASCII_LOWER)
    if raw.endswith(b"."):
        raw = raw[:-1]
    shown = raw.decode("ascii", "replace")
    if not raw:
        raise ValueError("hostname: must not be empty")
    if len(raw) > MAX_HOSTNAME:
        raise ValueError(f"hostname {shown[:40]}...: {len(raw)} bytes, at most {MAX_HOSTNAME}")
    labels = raw.split(b".")
    for label in labels:
        if not _LABEL.match(label):
            raise ValueError(
                f"hostname {shown!r}: label {label.decode('ascii', 'replace')!r} is invalid "
                "(1-63 of a-z, 0-9, '-', not starting or ending with '-')")
        if label.startswith(b"xn--"):
            _check_a_label(shown, label)
    if labels[-1].isdigit():
        # "198.18.0.10" or "10": TLS clients never send an IP address as SNI (RFC 6066),
        # and no top-level domain is all digits.
        raise ValueError(f"hostname {shown!r}: the last label is all digits, as in an IP "
                         "address; SNI routes match names (TLS clients never send an "
                         "address as SNI)")
    return raw


def _check_a_label(shown: str, label: bytes) -> None:
    """An "xn--" label must be valid punycode of an IDNA 2008 name (the idna library)."""
    import idna  # only names with such a label pay for the import

    try:
        idna.decode(label)
    except (idna.IDNAError, UnicodeError) as e:
        raise ValueError(f"hostname {shown!r}: label {label.decode()!r} is not valid "
                         f"punycode ({e})") from None


def hostname_hash(hostname: str | bytes) -> int:
    """The sni map key for a hostname (validated)."""
    return fnv1a64(normalize_hostname(hostname))
