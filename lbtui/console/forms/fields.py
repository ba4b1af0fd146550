"""Validators for form fields: each wraps one of lbtui's parsers, so the console refuses
exactly what the control plane refuses, with the parser's own message."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual.validation import ValidationResult, Validator

from lbtui.addr import parse_cidr, parse_ipv4, parse_port
from lbtui.sni import normalize_hostname


class Parses(Validator):
    """Valid when ``parse(value)`` does not raise ValueError; its message is the reason."""

    def __init__(self, parse: Callable[[str], Any], failure: str | None = None) -> None:
        super().__init__(failure)
        self.parse = parse

    def validate(self, value: str) -> ValidationResult:
        try:
            self.parse(value)
        except ValueError as e:
            return self.failure(str(e))
        return self.success()


def weight(value: str) -> int:
    v = value.strip()
    if not v.isdigit() or not 0 <= int(v) <= 100:
        raise ValueError(f"weight {value!r} must be a whole number 0..100")
    return int(v)


def ipv4(value: str) -> str:
    return str(parse_ipv4(value, "ip"))


def port(value: str) -> int:
    return parse_port(value.strip(), "port")


def cidr(value: str) -> str:
    return str(parse_cidr(value, "source"))


def hostname(value: str) -> str:
    return normalize_hostname(value.strip()).decode()


def seconds(value: str) -> int:
    v = value.strip()
    if not v.isdigit() or not 0 <= int(v) <= 7 * 24 * 3600:
        raise ValueError(f"timeout {value!r} must be whole seconds 0..604800 "
                         "(0 disables ageing)")
    return int(v)


def interfaces(value: str) -> list[str] | None:
    """Comma/space separated interface names; empty means the datapath's interfaces."""
    names = [n for n in value.replace(",", " ").split() if n]
    for n in names:
        if len(n) > 15 or not all(c.isalnum() or c in "-_.@" for c in n):
            raise ValueError(f"interface {n!r} is not a valid interface name")
    return names or None


IP = Parses(ipv4)
PORT = Parses(port)
WEIGHT = Parses(weight)
CIDR = Parses(cidr)
HOSTNAME = Parses(hostname)
SECONDS = Parses(seconds)
INTERFACES = Parses(interfaces)
