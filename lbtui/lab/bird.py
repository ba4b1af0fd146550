"""BIRD 2 for the cluster lab: the router's and the nodes' configs, and queries.

The router peers over eBGP with every LB node (router AS 65000, node k AS 65000+k) and
installs the VIP with every equal path (``merge paths``): the kernel's ECMP route. A node
announces the VIP as a static route while its ``serve`` runs (lbtui.lab.announce).
Short timers (keepalive 1 s, hold 3 s) so a node that vanishes without a BGP
notification is dropped within 3 s; a stopped BIRD sends one and is dropped at once.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROUTER_AS = 65000
_TIMERS = "hold time 3; keepalive time 1; connect retry time 1; connect delay time 1;"


def router_config(router_id: str, peers: list[tuple[str, str, str]], vip: str) -> str:
    """``peers``: (protocol name, local address, node address); node i+1 has AS 65001+i."""
    out = [f"router id {router_id};",
           "protocol device { scan time 5; }",
           "# Every equal BGP path to the VIP, into the kernel as one multipath route.",
           "protocol kernel { ipv4 { import none; export all; }; merge paths on; }"]
    for i, (name, local, node_ip) in enumerate(peers):
        out.append(
            f"protocol bgp {name} {{ local {local} as {ROUTER_AS}; "
            f"neighbor {node_ip} as {ROUTER_AS + 1 + i}; {_TIMERS} "
            f"ipv4 {{ import where net = {vip}/32; export none; }}; }}")
    return "\n".join(out) + "\n"


def node_config(node_ip: str, node_as: int, router_ip: str, vip: str) -> str:
    """A node's BIRD: the VIP as a static route, exported to the router only."""
    return "\n".join([
        f"router id {node_ip};",
        "protocol device { scan time 5; }",
        f"protocol static vip {{ ipv4; route {vip}/32 blackhole; }}",
        f"protocol bgp uplink {{ local {node_ip} as {node_as}; "
        f"neighbor {router_ip} as {ROUTER_AS}; {_TIMERS} "
        "ipv4 { import none; export where proto = \"vip\"; }; }"]) + "\n"


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def bird_argv(config: Path, socket: Path) -> list[str]:
    """BIRD in the foreground (its parent owns its life), with its own control socket."""
    return ["bird", "-f", "-c", str(config), "-s", str(socket)]


def established(ns: str, socket: Path) -> dict[str, bool]:
    """BGP protocol name -> session established, from ``birdc show protocols``."""
    out = subprocess.run(["ip", "netns", "exec", ns, "birdc", "-s", str(socket),
                          "show", "protocols"], capture_output=True, text=True,
                         timeout=10).stdout
    return {m[1]: "Established" in m[2] for m in re.finditer(r"^(\S+)\s+BGP\s(.*)$", out, re.M)}
