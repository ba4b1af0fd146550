"""The demo lab's load-balancer config, rendered as a commented TOML file.

The file is the instance's config: the console and ``lbtui ctl`` write their edits back
into it (comments kept), so it lives in the lab's directory for the lab's lifetime.

What it sets up, on the demo topology (2 clients, 4 backends; see ``topology``):

- port 80 (TCP): HTTP, weighted 40/30/20/10 over the four backends;
- port 7000 (TCP): long-lived line-echo connections, 25 each;
- port 9000 (UDP): datagrams, 25 each;
- a source route: client2's subnet goes to backend3/backend4:8081 50/50 (source routes beat
  the listener's group, whatever the port (the SNI splicer honours them too), so
  client2 only sends HTTP);
- SNI routes www.demo.test -> backend1/backend2, api.demo.test -> backend3/backend4;
  with the SNI splicer available, port 443 is an SNI listener in front of them;
- active health checks on backend3's HTTP port, which the demo can break (see the file).
"""

from __future__ import annotations

from collections.abc import Sequence

from lbtui.lab.topology import ECHO_PORT, HTTP_PORT, UDP_PORT, Topology

N_CLIENTS = 2
N_BACKENDS = 4
HTTP_LISTEN_PORT = 80
# The source route sends to a second HTTP port of its backends, so the console's per-target
# view tells its traffic apart from the port-80 listener's (a target is ip:port).
SOURCE_ROUTE_PORT = 8081
TLS_LISTEN_PORT = 443
TLS_BACKEND_PORT = 8443
HTTP_WEIGHTS = (40, 30, 20, 10)
EVEN_WEIGHTS = (25, 25, 25, 25)
SOURCE_ROUTED_CLIENT = "client2"
SOURCE_ROUTE_BACKENDS = ((3, 50), (4, 50))
SNI_ROUTES = {"www.demo.test": ((1, 50), (2, 50)), "api.demo.test": ((3, 70), (4, 30))}
CONNECTION_TIMEOUT = 60
CHECKED_BACKEND = "backend3"      # the one with active health checks


def instance_name(lab: str) -> str:
    """The control-plane instance that serves a lab (pins under /sys/fs/bpf/lbtui/<it>)."""
    return f"lab-{lab}"


def _targets(topo: Topology, port: int, weights: Sequence[tuple[int, int]]) -> str:
    rows = [f'  {{ ip = "{topo.backends[j - 1].ip}", port = {port}, weight = {w} }},'
            f"  # {topo.backends[j - 1].node}" for j, w in weights]
    return "targets = [\n" + "\n".join(rows) + "\n]"


def _all(weights: Sequence[int]) -> list[tuple[int, int]]:
    return [(j + 1, w) for j, w in enumerate(weights)]


def render(topo: Topology, sni_listener: bool) -> str:
    """The config text for ``topo`` (which must have the demo's shape)."""
    if len(topo.clients) != N_CLIENTS or len(topo.backends) != N_BACKENDS:
        raise ValueError(f"the demo config needs {N_CLIENTS} clients and {N_BACKENDS} "
                         f"backends, lab {topo.lab} has {len(topo.clients)} and "
                         f"{len(topo.backends)}")
    routed = topo.node(SOURCE_ROUTED_CLIENT)
    checked = topo.node(CHECKED_BACKEND)
    assert routed is not None and checked is not None
    quoted = ", ".join(f'"{n}"' for n in topo.client_ifnames)
    replies = ", ".join(f'"{n}"' for n in topo.backend_ifnames)
    parts = [f"""\
# lbtui lab "{topo.lab}": written by `lbtui demo` / `lbtui lab up`.
# This is the running instance's config: console and `lbtui ctl` edits are saved here.
# Everything lives in network namespaces lbt-{topo.lab}-*; the VIP is {topo.vip}.

[datapath]
instance = "{instance_name(topo.lab)}"
# The lab's LB namespace and its interfaces: client-facing ones balance, backend-facing
# ones rewrite replies back to the VIP. veth supports native XDP (needed for redirect).
netns = "{topo.lb_ns}"
interfaces = [{quoted}]
reply_interfaces = [{replies}]
xdp_mode = "native"
keep = false

[settings]
stats = true
# Short, so idle UDP flows age out while you watch.
connection_timeout = {CONNECTION_TIMEOUT}

# Target health from the traffic, plus active checks on {checked.node}'s HTTP port. Make it
# refuse connections, as if its server had stopped, and watch it turn failing, leave the
# rotation and its share move to the others:
#   lbtui lab exec --lab {topo.lab} {checked.node} -- nft add table ip outage \\
#     '{{ chain in {{ type filter hook input priority 0;
#         tcp dport {HTTP_PORT} reject with tcp reset; }}; }}'
# and bring it back:
#   lbtui lab exec --lab {topo.lab} {checked.node} -- nft delete table ip outage
[health]
window = 30
check_interval = 1
check_timeout = 0.5
fall = 2
rise = 2
check_targets = ["{checked.ip}:{HTTP_PORT}"]

# Short HTTP requests: every request is a new connection, so weights show at once.
[[listener]]
port = {HTTP_LISTEN_PORT}
protocol = "tcp"
{_targets(topo, HTTP_PORT, _all(HTTP_WEIGHTS))}

# Long-lived connections (line echo): a drain leaves them be; only new ones move.
[[listener]]
port = {ECHO_PORT}
protocol = "tcp"
{_targets(topo, ECHO_PORT, _all(EVEN_WEIGHTS))}

# UDP datagrams: one flow per client source port.
[[listener]]
port = {UDP_PORT}
protocol = "udp"
{_targets(topo, UDP_PORT, _all(EVEN_WEIGHTS))}
"""]
    if sni_listener:
        parts.append(f"""
# TLS: the SNI splicer reads the ClientHello and picks the group of the [[sni_route]]
# naming that host; unknown names and hellos without SNI use this default group.
[[listener]]
port = {TLS_LISTEN_PORT}
protocol = "tcp"
sni = true
address = "{topo.vip}"      # where the splicer listens (in the LB namespace)
{_targets(topo, TLS_BACKEND_PORT, _all(EVEN_WEIGHTS))}
""")
    parts.append(f"""
# {routed.node}'s subnet is pinned to two backends (their second HTTP port, {SOURCE_ROUTE_PORT}),
# whatever the listener: the SNI splicer honours source routes too, so client2 sends
# only HTTP.
[[source_route]]
cidr = "{routed.subnet}"
{_targets(topo, SOURCE_ROUTE_PORT, SOURCE_ROUTE_BACKENDS)}
""")
    for host, weights in SNI_ROUTES.items():
        parts.append(f"""
[[sni_route]]
hostname = "{host}"
{_targets(topo, TLS_BACKEND_PORT, weights)}
""")
    return "".join(parts)
