"""A one-namespace network and a harness for running the real XDP program through
BPF_PROG_TEST_RUN (shared by tests/datapath and bench/datapath.py, bench/fuzz.py).

Why a namespace: a test run with ``ingress_ifindex`` needs that interface to exist in the
caller's network namespace, and ``bpf_fib_lookup`` resolves against that namespace's routes
and neighbours. Running inside our own namespace means the datapath never consults the root
namespace, and we control exactly which next hops are known:

    c1  198.18.1.1/24    client link; permanent neighbours 198.18.1.2 (CLIENT) and
                         198.18.1.3 (ONE_ARM: a target on the clients' link)
    c2  198.18.2.1/24    a second client link (no listen entries unless a test adds them);
                         permanent neighbour 198.18.2.2 (CLIENT2), not redirect-capable
    b1  198.18.101.1/24  backend link; permanent neighbours T1, T2, T3, T4 -> XDP_REDIRECT
    b2  198.18.102.1/24  backend link without neighbours: FAR -> fib NO_NEIGH -> XDP_PASS
    lo  198.18.0.10/32   the VIP

Each link is a veth whose peer stays in the same namespace (up, no address). The peers of
c1 and b1 have GRO on, which makes c1 and b1 able to take XDP frames: the control plane's
own assessment (lbtui.datapath.egress) then puts them into the egress devmap; c2 and b2
stay out of it, so a packet routed there goes to the stack.
Nothing connects to the root namespace; only 198.18.0.0/15 is used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyroute2 import NetNS
from pyroute2 import netns as pr_netns

from lbtui import abi, bpfsys, netns
from lbtui import maps as M
from lbtui.datapath import egress
from lbtui.maps.events import EventReader, LbEvent
from lbtui.targets import TargetGroup

if TYPE_CHECKING:
    from lbtui.datapath.loader import Datapath

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)
VERDICTS = {0: "ABORTED", 1: "DROP", 2: "PASS", 3: "TX", 4: "REDIRECT"}

VIP = "198.18.0.10"
CLIENT = "198.18.1.2"
CLIENT_MAC = "02:00:c6:12:01:02"
ONE_ARM = "198.18.1.3"
ONE_ARM_MAC = "02:00:c6:12:01:03"
CLIENT2 = "198.18.2.2"
CLIENT2_MAC = "02:00:c6:12:02:02"
T1, T2, T3, T4 = "198.18.101.2", "198.18.101.3", "198.18.101.4", "198.18.101.5"
FAR = "198.18.102.2"
BACKEND_MACS = {T1: "02:00:c6:12:65:02", T2: "02:00:c6:12:65:03",
                T3: "02:00:c6:12:65:04", T4: "02:00:c6:12:65:05"}

REDIRECT_CAPABLE_PEERS = ("c1p", "b1p")
LINKS = {"c1": ("198.18.1.1", 24), "c2": ("198.18.2.1", 24),
         "b1": ("198.18.101.1", 24), "b2": ("198.18.102.1", 24)}
NEIGHBOURS = {"c1": {CLIENT: CLIENT_MAC, ONE_ARM: ONE_ARM_MAC}, "c2": {CLIENT2: CLIENT2_MAC},
              "b1": BACKEND_MACS}


@dataclass(frozen=True)
class DpNet:
    ns: str
    ifindex: dict[str, int]
    mac: dict[str, str]            # our MAC on each link (the source MAC after redirect)


def _sysctl(key: str, value: str) -> None:
    Path("/proc/sys", *key.split(".")).write_text(value)


VIP_MAC = "02:00:c6:12:00:0a"


def build_net(name: str, *, vip_local: bool = True) -> DpNet:
    """Create namespace ``name`` with the links above. Removes it again if a step fails.

    ``vip_local=False`` (benchmarks): the VIP is not a local address but a neighbour on b1,
    so a packet rewritten back to the VIP is forwarded (XDP_REDIRECT) like any other."""
    if not name.startswith("lbt-"):
        raise ValueError(f"namespace {name!r} must start with 'lbt-'")
    teardown_net(name)
    pr_netns.create(name)
    try:
        ifindex, mac = {}, {}
        with NetNS(name) as ns:
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
            if vip_local:
                ns.addr("add", index=ns.link_lookup(ifname="lo")[0], address=VIP,
                        prefixlen=32)
            for link, (addr, plen) in LINKS.items():
                ns.link("add", ifname=link, kind="veth", peer={"ifname": f"{link}p"})
                for ifname in (link, f"{link}p"):
                    ns.link("set", index=ns.link_lookup(ifname=ifname)[0], state="up")
                idx = ns.link_lookup(ifname=link)[0]
                ns.addr("add", index=idx, address=addr, prefixlen=plen)
                for ip, lladdr in NEIGHBOURS.get(link, {}).items():
                    ns.neigh("add", dst=ip, lladdr=lladdr, ifindex=idx, state="permanent")
                ifindex[link] = idx
                mac[link] = ns.get_links(idx)[0].get_attr("IFLA_ADDRESS")
            if not vip_local:
                ns.route("add", dst=f"{VIP}/32", oif=ifindex["b1"])
                ns.neigh("add", dst=VIP, lladdr=VIP_MAC, ifindex=ifindex["b1"],
                         state="permanent")
        pr_netns.pushns(name)
        try:
            # bpf_fib_lookup answers only when forwarding is on for the ingress device.
            _sysctl("net.ipv4.conf.all.forwarding", "1")
        finally:
            pr_netns.popns()
        for peer in REDIRECT_CAPABLE_PEERS:
            subprocess.run(["ip", "netns", "exec", name, "ethtool", "-K", peer, "gro", "on"],
                           check=True, capture_output=True)
    except BaseException:
        teardown_net(name)
        raise
    return DpNet(name, ifindex, mac)


def teardown_net(name: str) -> None:
    if name in pr_netns.listnetns():
        with suppress(OSError):
            pr_netns.remove(name)
    deadline = time.monotonic() + 5
    while name in pr_netns.listnetns() and time.monotonic() < deadline:
        time.sleep(0.05)


@contextmanager
def dp_net(name: str, *, vip_local: bool = True) -> Iterator[DpNet]:
    net = build_net(name, vip_local=vip_local)
    try:
        yield net
    finally:
        teardown_net(name)


@dataclass(frozen=True)
class Run:
    verdict: int
    data: bytes

    @property
    def name(self) -> str:
        return VERDICTS.get(self.verdict, str(self.verdict))


@dataclass
class Harness:
    """The loaded program, its maps and the test network; call it from inside ``net.ns``."""

    prog_fd: int
    maps: M.MapSet
    net: DpNet
    _events: list[LbEvent] = field(default_factory=list)
    _reader: EventReader | None = None

    def run(self, frame: bytes, iface: str = "c1") -> Run:
        r = bpfsys.prog_test_run(self.prog_fd, frame, ingress_ifindex=self.net.ifindex[iface])
        return Run(r.retval, r.data)

    # --- configuration -----------------------------------------------------------------

    def listen(self, port: int, group: TargetGroup, iface: str = "c1", flags: int = 0) -> None:
        M.add_listen_port_weighted(self.maps.listen_map, self.net.ifindex[iface], port, group,
                                   flags)

    def source_route(self, cidr: str, group: TargetGroup, flags: int = abi.ROUTE_F_STATS
                     ) -> None:
        M.add_source_route_weighted(self.maps.config_map, cidr, group, flags)

    # --- state ---------------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        return M.read_counters(self.maps.counters_map)

    def reasons(self, iface: str = "c1") -> dict[str, int]:
        """Packets handed to the stack (or handled specially) on ``iface``, by reason."""
        return M.read_reasons(self.maps.reasons_map).get(self.net.ifindex[iface], {})

    def connection(self, client: str, cport: int, vport: int, proto: int = abi.IPPROTO_TCP,
                   vip: str = VIP) -> M.Connection | None:
        return M.lookup_connection(self.maps.conntrack_map, (client, vip, cport, vport, proto))

    def ct_entries(self) -> dict[bytes, abi.CtValue]:
        """Every conntrack entry (forward and reply), keyed by the raw key bytes."""
        r = M.conntrack_reader(self.maps.conntrack_map, chunk=1024)
        return {bytes(k): v for k, v in r.items()}

    def raw_ct(self, src: str, dst: str, sport: int, dport: int,
               proto: int = abi.IPPROTO_TCP) -> abi.CtValue | None:
        key = M.FiveTuple(src, dst, sport, dport, proto).key()
        return bpfsys.lookup(self.maps.conntrack_map.fd, key, abi.CtValue)

    def events(self) -> list[LbEvent]:
        """Events produced since the last call (the ring buffer is consumed)."""
        if self._reader is None:
            self._reader = EventReader(self.maps.stats_ringbuf, self._events.append)
        self._reader.drain()
        out, self._events[:] = list(self._events), []
        return out

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def default_ns_name(tag: str) -> str:
    return f"lbt-h1-{tag}{os.getpid() % 100000}"


@contextmanager
def standalone(tag: str, opts: dict[str, Any] | None = None, *, vip_local: bool = True
               ) -> Iterator[tuple[Harness, Datapath]]:
    """Everything a script needs outside pytest (bench/): maps created with ``opts`` and
    pinned, the program compiled and loaded, the test namespace built and entered. All of
    it is released on exit, also on failure."""
    from lbtui.datapath.loader import Datapath

    state = Path(tempfile.mkdtemp(prefix="lbtui-h1-state-"))
    os.environ["LBTUI_STATE_DIR"] = str(state)
    name = default_ns_name(tag)
    pin = Path(f"/sys/fs/bpf/lbtui-{name}")
    ms = M.create_all_maps(opts)
    try:
        shutil.rmtree(pin, ignore_errors=True)
        ms.pin_all(pin)
        dp = Datapath.load(ms)
        with dp_net(name, vip_local=vip_local) as net, netns.inside(net.ns):
            egress.sync(ms, generic_only=False)
            h = Harness(dp.prog_fd, ms, net)
            try:
                yield h, dp
            finally:
                h.close()
    finally:
        M.close_all_maps(ms)
        shutil.rmtree(pin, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)
