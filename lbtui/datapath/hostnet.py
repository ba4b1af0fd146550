"""The host network around the datapath: the start-up self-check and the sysctls lbtui sets.

Self-check. The datapath reads Ethernet frames and forwards by the kernel's FIB, which
answers only where IPv4 forwarding is on. An interface that is not Ethernet (loopback, a
tunnel, WireGuard) or does not forward cannot be served at all: starting anyway would
balance nothing, silently. Such an interface list is refused with the fix.

Sysctls. A reply that lbtui rewrote to come from the VIP and then hands to the stack (its
egress cannot take XDP frames, a VLAN tag, an expiring TTL...) has a source address local
to this host; Linux drops it as a martian unless the interface it arrived on accepts local
sources (``accept_local``) and its reverse-path filter is not strict. lbtui sets
``accept_local = 1``, and ``rp_filter = 2`` (loose) where the effective value is strict,
on the interfaces it attaches to. It also turns ICMP redirects off there
(``send_redirects = 0``, and for ``all``, which the kernel ORs with each interface's): a
balancer is not a router to route around; when the stack forwards a packet back out the
link it came in on (one-arm set-ups: clients and targets on one link), a redirect would
tell clients and targets to talk to each other directly, unbalanced, for minutes.

The previous values are kept in the instance's state and put back when the instance is
torn down, unless someone changed them since.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from lbtui import netns
from lbtui.datapath import egress

ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772


class InterfaceUnusable(ValueError):
    """The configured interfaces cannot be served (a validation error: exit code 2)."""


def _conf(ifname: str, key: str) -> Path:
    return Path("/proc/sys/net/ipv4/conf") / ifname / key


def _read(ifname: str, key: str) -> int:
    return int(_conf(ifname, key).read_text().strip())


@dataclass(frozen=True)
class LinkFacts:
    ifname: str
    link_type: int
    kind: str
    ifindex: int


def _facts(names: list[str]) -> dict[str, LinkFacts]:
    out = {}
    with IPRoute() as ipr:
        for name in names:
            found = ipr.link_lookup(ifname=name)
            if not found:
                continue
            link = ipr.get_links(found[0])[0]
            info = link.get_attr("IFLA_LINKINFO")
            kind = (info.get_attr("IFLA_INFO_KIND") if info else None) or "device"
            out[name] = LinkFacts(name, link["ifi_type"], kind, found[0])
    return out


def check_interfaces(names: list[str], ns: str | None, xdp_mode: str = "auto") -> None:
    """Refuse (InterfaceUnusable, every problem listed with its fix) interfaces the
    datapath cannot serve at all, or not in the XDP mode asked for."""
    where = f" (in network namespace {ns})" if ns else ""
    problems = []
    with netns.inside(ns):
        facts = _facts(names)
        for name in names:
            f = facts.get(name)
            if f is None:
                problems.append(f"{name}: no such interface{where}; check `ip link`")
                continue
            if f.link_type == ARPHRD_LOOPBACK:
                problems.append(f"{name}: the loopback interface carries no traffic from "
                                "clients; list the interfaces clients' packets arrive on")
            elif f.link_type != ARPHRD_ETHER:
                problems.append(
                    f"{name}: not an Ethernet interface ({f.kind}, link type "
                    f"{f.link_type}); lbtui's datapath reads Ethernet frames: list the "
                    "Ethernet interface the traffic arrives on (for a tunnel, its "
                    "underlying device)")
            elif xdp_mode == "native" and (f.kind == "bridge"
                                           or egress.native_capable(f.ifindex) is False):
                problems.append(
                    f"{name}: its driver ({f.kind}) has no native XDP; set "
                    'datapath.xdp_mode = "auto" (native where the driver has it, generic '
                    'elsewhere) or "generic"')
            elif _read(name, "forwarding") != 1:
                problems.append(
                    f"{name}: IPv4 forwarding is off{where}, so the kernel routes "
                    "nothing for the balancer; enable it with `sysctl -w "
                    f"net.ipv4.conf.{name}.forwarding=1` (or net.ipv4.ip_forward=1)")
    if problems:
        raise InterfaceUnusable("these interfaces cannot be served:\n  "
                                + "\n  ".join(problems))


def prepare_sysctls(names: list[str], ns: str | None) -> list[dict[str, Any]]:
    """Let replies handed to the stack with the VIP as source through (see the module
    docstring). Returns what was changed, for ``restore_sysctls``."""
    changed = []
    with netns.inside(ns):
        strict_all = _read("all", "rp_filter") == 1
        for name in names:
            if _read(name, "accept_local") != 1:
                changed.append(_set(name, "accept_local", 1))
            rp = _read(name, "rp_filter")
            if max(rp, 1 if strict_all else 0) == 1:
                changed.append(_set(name, "rp_filter", 2))
            if _read(name, "send_redirects") != 0:
                changed.append(_set(name, "send_redirects", 0))
        if names and _read("all", "send_redirects") != 0:
            changed.append(_set("all", "send_redirects", 0))
    return changed


def _set(ifname: str, key: str, value: int) -> dict[str, Any]:
    old = _read(ifname, key)
    _conf(ifname, key).write_text(f"{value}\n")
    return {"ifname": ifname, "key": key, "old": old, "new": value}


def restore_sysctls(changed: list[dict[str, Any]], ns: str | None) -> list[str]:
    """Put back what ``prepare_sysctls`` changed, where it still holds our value (an
    interface that is gone, or a value someone set since, is left alone)."""
    done: list[str] = []
    try:
        with netns.inside(ns):
            for c in changed:
                try:
                    if _read(c["ifname"], c["key"]) == c["new"]:
                        _conf(c["ifname"], c["key"]).write_text(f"{c['old']}\n")
                        done.append(f"net.ipv4.conf.{c['ifname']}.{c['key']} = {c['old']}")
                except (OSError, ValueError):
                    continue
    except OSError:                     # the namespace is gone, and its settings with it
        pass
    return done
