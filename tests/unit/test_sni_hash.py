"""FNV-1a 64 (published vectors), ASCII-only lower-casing and hostname validation."""

from __future__ import annotations

import locale

import pytest

from lbtui.sni import MAX_HOSTNAME, fnv1a64, hostname_hash, normalize_hostname

# The FNV reference test vectors (Landon Curt Noll's test_fnv.c, FNV-1a 64-bit).
FNV1A64_VECTORS = {
    b"": 0xCBF29CE484222325,
    b"a": 0xAF63DC4C8601EC8C,
    b"b": 0xAF63DF4C8601F1A5,
    b"c": 0xAF63DE4C8601EFF2,
    b"d": 0xAF63D94C8601E773,
    b"e": 0xAF63D84C8601E5C0,
    b"f": 0xAF63DB4C8601EAD9,
    b"fo": 0x08985907B541D342,
    b"foo": 0xDCB27518FED9D577,
    b"foob": 0xDD120E790C2512AF,
    b"fooba": 0xCAC165AFA2FEF40A,
    b"foobar": 0x85944171F73967E8,
}


@pytest.mark.parametrize(("data", "expected"), FNV1A64_VECTORS.items())
def test_fnv1a64_matches_published_vectors(data: bytes, expected: int) -> None:
    assert fnv1a64(data) == expected


def test_hostname_hash_is_fnv1a64_of_the_ascii_lowercased_name_without_trailing_dot() -> None:
    want = fnv1a64(b"api.example.com")
    assert hostname_hash("api.example.com") == want
    assert hostname_hash("API.Example.COM") == want
    assert hostname_hash("api.example.com.") == want
    assert hostname_hash(b"Api.Example.Com") == want


def _locales() -> list[str]:
    """Locales to try: Turkish is the one where a locale-aware lower() maps 'I' to 'ı'."""
    found = []
    for name in ("tr_TR.UTF-8", "tr_TR.utf8", "C.UTF-8", "C"):
        try:
            old = locale.setlocale(locale.LC_ALL)
            locale.setlocale(locale.LC_ALL, name)
            locale.setlocale(locale.LC_ALL, old)
            found.append(name)
        except locale.Error:
            continue
    return found


def test_capital_i_lowercases_to_ascii_i_under_every_available_locale() -> None:
    old = locale.setlocale(locale.LC_ALL)
    try:
        for name in _locales():
            locale.setlocale(locale.LC_ALL, name)
            assert normalize_hostname("IMAGES.INTRANET.IO") == b"images.intranet.io", name
            assert hostname_hash("I") == fnv1a64(b"i"), name
    finally:
        locale.setlocale(locale.LC_ALL, old)


# Characters that Unicode-aware lower-casing would turn into ASCII (or near-ASCII) letters:
# Turkish dotted I, dotless i, the Kelvin sign (lower() gives 'k'), German sharp s.
@pytest.mark.parametrize("name", ["\u0130mages.example", "\u0131mages.example",
                                  "\u212aey.example", "stra\u00dfe.de", "caf\u00e9.fr"])
def test_non_ascii_hostnames_are_rejected_not_folded(name: str) -> None:
    with pytest.raises(ValueError, match="only ASCII"):
        hostname_hash(name)


def _name_of_length(n: int) -> str:
    labels, left = [], n
    while left > 0:
        take = min(63, left)
        labels.append("a" * take)
        left -= take + 1
    name = ".".join(labels)
    assert len(name) in (n, n + 1)
    return name if len(name) == n else name[:-2] + "b"


def test_hostname_of_253_bytes_is_accepted_and_254_rejected() -> None:
    ok = _name_of_length(MAX_HOSTNAME)
    assert len(ok) == 253
    assert normalize_hostname(ok) == ok.encode()
    assert normalize_hostname(ok + ".") == ok.encode()    # trailing dot is not counted
    too_long = "b" + ok
    with pytest.raises(ValueError, match="254 bytes, at most 253"):
        hostname_hash(too_long)


@pytest.mark.parametrize("bad", ["", ".", "a..b", "-a.example", "a-.example", "a_b.example",
                                 "a b.example", "a/b", "x" * 64 + ".example", "a.example..",
                                 "*.example.com", "ex!ample.com"])
def test_illegal_hostnames_raise_a_clear_error(bad: str) -> None:
    with pytest.raises(ValueError, match="hostname"):
        hostname_hash(bad)


@pytest.mark.parametrize("bad", [None, 42, ["a.example"]])
def test_non_string_hostnames_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="expected a string"):
        normalize_hostname(bad)  # type: ignore[arg-type]


def test_63_byte_label_is_the_longest_allowed() -> None:
    assert normalize_hostname("x" * 63 + ".io") == b"x" * 63 + b".io"
