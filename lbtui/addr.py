"""Address and port codecs between operator-facing values and map bytes.

Maps hold IPv4 addresses and ports in network order; ctypes fields read them as native
integers. ``ip_to_be``/``be_to_ip`` and ``port_to_be``/``be_to_port`` convert both ways,
and the parse functions turn operator input into validated values with clear errors.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from typing import Any

IpLike = str | int | ipaddress.IPv4Address


def parse_ipv4(ip: IpLike, what: str = "IP address") -> ipaddress.IPv4Address:
    """Accept dotted quads, IPv4Address, or the seed's host-order u32; reject the rest."""
    if isinstance(ip, bool):
        raise ValueError(f"{what}: expected an IPv4 address, got {ip!r}")
    try:
        if isinstance(ip, int):
            return ipaddress.IPv4Address(ip)
        if isinstance(ip, ipaddress.IPv4Address):
            return ip
        if isinstance(ip, str):
            return ipaddress.IPv4Address(ip.strip())
    except ValueError:
        pass
    raise ValueError(f"{what}: {ip!r} is not an IPv4 address (like 198.18.2.11)")


# Addresses no packet can be forwarded to: this host (0.0.0.0/8, loopback), link-local
# (not routable), class E (reserved, with the limited broadcast) and multicast.
_NO_TARGET = (
    (ipaddress.IPv4Network("0.0.0.0/8"), "is in 0.0.0.0/8 (this host)"),
    (ipaddress.IPv4Network("127.0.0.0/8"), "is a loopback address"),
    (ipaddress.IPv4Network("169.254.0.0/16"), "is a link-local address"),
    (ipaddress.IPv4Network("224.0.0.0/4"), "is a multicast address"),
    (ipaddress.IPv4Network("240.0.0.0/4"), "is in class E (reserved) or the broadcast "
                                           "address"),
)


def target_problem(addr: ipaddress.IPv4Address) -> str | None:
    """Why ``addr`` cannot be a backend target (None if it can)."""
    for net, why in _NO_TARGET:
        if addr in net:
            return f"{addr} {why}: it cannot be a target"
    return None


def parse_port(port: object, what: str = "port") -> int:
    if isinstance(port, bool) or not isinstance(port, int):
        if isinstance(port, str) and port.strip().isdigit():
            port = int(port.strip())
        else:
            raise ValueError(f"{what}: {port!r} is not a port number (1..65535)")
    if not 1 <= port <= 65535:
        raise ValueError(f"{what}: {port} is out of range (1..65535)")
    return port


def parse_cidr(cidr: str | dict[str, Any] | tuple[Any, Any], what: str = "source"
               ) -> ipaddress.IPv4Network:
    """A source prefix as "198.18.1.0/24", {"ip":..., "prefix_len":...} or (ip, prefix_len).

    Host bits must be zero: "198.18.1.5/24" is refused rather than silently widened."""
    if isinstance(cidr, dict):
        if "ip" not in cidr or not ({"prefix_len", "prefix-len"} & cidr.keys()):
            raise ValueError(f"{what}: expected keys 'ip' and 'prefix_len', got {sorted(cidr)}")
        ip, plen = cidr["ip"], cidr.get("prefix_len", cidr.get("prefix-len"))
    elif isinstance(cidr, tuple) and len(cidr) == 2:
        ip, plen = cidr
    elif isinstance(cidr, str):
        ip, _, plen_s = cidr.strip().partition("/")
        plen = int(plen_s) if plen_s.isdigit() else (32 if not plen_s else
                                                      _netmask_len(plen_s, what))
    else:
        raise ValueError(f"{what}: {cidr!r} is not a CIDR like 198.18.1.0/24")
    if isinstance(plen, bool) or not isinstance(plen, int) or not 0 <= plen <= 32:
        raise ValueError(f"{what}: prefix length {plen!r} must be an integer 0..32")
    addr = parse_ipv4(ip, what)
    try:
        return ipaddress.IPv4Network((addr, plen), strict=True)
    except ValueError:
        raise ValueError(f"{what}: {addr}/{plen} has host bits set "
                         f"(did you mean {ipaddress.IPv4Network((addr, plen), strict=False)}?)"
                         ) from None


def _netmask_len(mask: str, what: str) -> int | str:
    """The prefix length of a dotted netmask ("255.255.0.0" -> 16); other text is
    returned as is, for the caller's error."""
    try:
        m = int(ipaddress.IPv4Address(mask))
    except ValueError:
        return mask
    n = bin(m).count("1")
    if m != ((1 << 32) - 1) ^ ((1 << (32 - n)) - 1):
        raise ValueError(f"{what}: {mask} is not a netmask (contiguous leading ones, like "
                         "255.255.255.0)")
    return n


def ip_to_be(ip: IpLike) -> int:
    """Native integer whose in-memory bytes are the address in network order."""
    return int.from_bytes(parse_ipv4(ip).packed, sys.byteorder)


def be_to_ip(value: int) -> str:
    return socket.inet_ntoa(value.to_bytes(4, sys.byteorder))


def port_to_be(port: int) -> int:
    return socket.htons(port)


def be_to_port(value: int) -> int:
    return socket.ntohs(value)


def proto_name(proto: int) -> str:
    return {6: "tcp", 17: "udp"}.get(proto, str(proto))


def proto_number(proto: str | int) -> int:
    if isinstance(proto, int) and proto in (6, 17):
        return proto
    names = {"tcp": 6, "udp": 17}
    if isinstance(proto, str) and proto.lower() in names:
        return names[proto.lower()]
    raise ValueError(f"protocol: {proto!r} must be 'tcp' or 'udp'")
