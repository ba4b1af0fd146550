"""Address and port codecs: map bytes are network order, operator input is validated."""

from __future__ import annotations

import ctypes as ct
import ipaddress
import socket

import pytest

from lbtui.addr import (
    be_to_ip,
    be_to_port,
    ip_to_be,
    parse_cidr,
    parse_ipv4,
    parse_port,
    port_to_be,
    proto_name,
    proto_number,
)


@pytest.mark.parametrize("ip", ["198.18.0.10", "0.0.0.1", "255.255.255.255", "10.1.2.3"])
def test_ip_to_be_lays_out_network_order_bytes_in_memory(ip: str) -> None:
    assert bytes(ct.c_uint32(ip_to_be(ip))) == socket.inet_aton(ip)
    assert be_to_ip(ip_to_be(ip)) == ip


def test_ip_to_be_accepts_the_seeds_host_order_u32_and_ipv4address() -> None:
    assert ip_to_be(0xC612000A) == ip_to_be("198.18.0.10")
    assert ip_to_be(ipaddress.IPv4Address("198.18.0.10")) == ip_to_be("198.18.0.10")


@pytest.mark.parametrize("port", [1, 80, 443, 8080, 0x1234, 65535])
def test_port_to_be_lays_out_network_order_bytes(port: int) -> None:
    assert bytes(ct.c_uint16(port_to_be(port))) == port.to_bytes(2, "big")
    assert be_to_port(port_to_be(port)) == port


@pytest.mark.parametrize("bad", ["256.1.1.1", "1.2.3", "", "::1", "host.example", None, True,
                                 1.5, -1, 2**32, "198.18.0.10/24"])
def test_parse_ipv4_rejects_non_ipv4_with_the_input_in_the_message(bad: object) -> None:
    with pytest.raises(ValueError, match=r"IP address|IPv4") as e:
        parse_ipv4(bad)  # type: ignore[arg-type]
    assert repr(bad) in str(e.value)


def test_parse_ipv4_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"^targets\[2\]\.ip: "):
        parse_ipv4("x", "targets[2].ip")


@pytest.mark.parametrize(("given", "port"), [(1, 1), (65535, 65535), ("8080", 8080),
                                              (" 80 ", 80)])
def test_parse_port_accepts_1_to_65535(given: object, port: int) -> None:
    assert parse_port(given) == port


@pytest.mark.parametrize("bad", [0, 65536, -1, True, False, "http", "80a", 80.0, None, ""])
def test_parse_port_rejects_out_of_range_and_non_integers(bad: object) -> None:
    with pytest.raises(ValueError, match="port"):
        parse_port(bad)


@pytest.mark.parametrize(("given", "cidr"), [
    ("198.18.1.0/24", "198.18.1.0/24"),
    ("198.18.1.7", "198.18.1.7/32"),
    ("0.0.0.0/0", "0.0.0.0/0"),
    ({"ip": "198.18.0.0", "prefix_len": 15}, "198.18.0.0/15"),
    ({"ip": 0xC6120100, "prefix-len": 24}, "198.18.1.0/24"),
    (("198.18.2.0", 23), "198.18.2.0/23"),
])
def test_parse_cidr_accepts_the_seed_and_string_forms(given: object, cidr: str) -> None:
    assert str(parse_cidr(given)) == cidr  # type: ignore[arg-type]


def test_parse_cidr_refuses_host_bits_and_suggests_the_network() -> None:
    with pytest.raises(ValueError, match=r"host bits set.*198\.18\.1\.0/24"):
        parse_cidr("198.18.1.5/24")


@pytest.mark.parametrize("bad", ["198.18.1.0/33", "198.18.1.0/-1", "198.18.1.0/x",
                                 ("198.18.1.0", True), ("198.18.1.0", 33), ("1.2.3", 8),
                                 {"ip": "198.18.1.0"}, 42, "300.1.1.0/24"])
def test_parse_cidr_rejects_bad_prefixes_and_addresses(bad: object) -> None:
    with pytest.raises(ValueError, match="source"):
        parse_cidr(bad)  # type: ignore[arg-type]


def test_proto_codecs() -> None:
    assert proto_number("TCP") == 6 and proto_number("udp") == 17 and proto_number(17) == 17
    assert proto_name(6) == "tcp" and proto_name(17) == "udp" and proto_name(1) == "1"
    for bad in ("icmp", 1, None):
        with pytest.raises(ValueError, match="protocol"):
            proto_number(bad)  # type: ignore[arg-type]
