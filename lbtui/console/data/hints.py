"""Placeholders for the forms, drawn from the instance on screen (its targets, clients,
hostnames, ports and interfaces), so an example in a form is one that makes sense here."""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from lbtui.console.data.groups import Group
from lbtui.console.data.snapshot import Snapshot
from lbtui.maps.flowrows import client_of
from lbtui.model import GroupKind

# Ports offered for a new listener, the first one not in use.
COMMON_PORTS = (80, 443, 8080, 8443, 53, 8000, 9000)
SAMPLE_ROWS = 2000     # client addresses looked at for a source-route example


@dataclass(frozen=True)
class FormHints:
    """Examples for empty form fields. The defaults are documentation addresses
    (RFC 5737), used only when the instance has nothing to draw from."""

    target_ip: str = "192.0.2.10"
    target_port: str = "8080"
    hostname: str = "www.example.test"
    cidr: str = "192.0.2.0/24"
    port: str = "8080"
    interfaces: tuple[str, ...] = ()


def _most_common(values: Sequence[str]) -> str | None:
    return Counter(values).most_common(1)[0][0] if values else None


def form_hints(snap: Snapshot | None, groups: Sequence[Group]) -> FormHints:
    d = FormHints()
    targets = [t for g in groups for t in g.route.targets]
    ip = _most_common([t.ip for t in targets]) or d.target_ip
    port = _most_common([str(t.port) for t in targets]) or d.target_port
    hosts = [str(g.key.key) for g in groups
             if g.kind is GroupKind.SNI and not str(g.key.key).startswith("#")]
    hostname = d.hostname
    if hosts and "." in hosts[0]:
        hostname = "new." + hosts[0].split(".", 1)[1]
    cidr = d.cidr
    clients = [client_of(r).rsplit(":", 1)[0] for r in snap.conns.rows[:SAMPLE_ROWS]
               ] if snap else []
    common = _most_common(clients)
    if common:
        cidr = str(ipaddress.ip_network(f"{common}/24", strict=False))
    else:
        cidr = next((str(g.key.key) for g in groups if g.kind is GroupKind.SOURCE), cidr)
    used = {int(g.key.key) for g in groups if g.kind is GroupKind.LISTENER}
    free = next((p for p in COMMON_PORTS if p not in used), max(used | {8000}) + 1)
    return FormHints(ip, port, hostname, cidr, str(free),
                     snap.info.interfaces if snap else ())
