"""Which interfaces can take XDP frames: the egress devmap the datapath redirects into.

A frame redirected by native XDP is handed to the egress driver's XDP transmit. A Linux
bridge has none, and a veth delivers redirected frames only while its far end has an XDP
program or GRO enabled; everywhere else the kernel drops the frame without a trace. So the
datapath redirects only into ``tx_ports``, which this module fills with the interfaces the
kernel itself reports as able to transmit XDP frames (the netdev netlink family's
``xdp-features``, NETDEV_XDP_ACT_NDO_XMIT, kernel 6.3 and later), and hands every other
packet to the kernel stack. When every attachment is generic XDP, redirected frames leave
through the stack's ordinary transmit path, which every interface has.

The verdicts change at run time (a far end attaches XDP or toggles GRO, interfaces come and
go), so the manager re-assesses them every second (``EgressWatcher``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST, genlmsg
from pyroute2.netlink.generic import GenericNetlinkSocket

from lbtui import abi, netns
from lbtui import maps as M

NETDEV_CMD_DEV_GET = 1
NETDEV_XDP_ACT_BASIC = 1 << 0      # the driver runs XDP programs natively
NETDEV_XDP_ACT_NDO_XMIT = 1 << 2   # the driver transmits redirected XDP frames


class _NetdevMsg(genlmsg):  # type: ignore[misc]  # pyroute2 is untyped: genlmsg is Any
    nla_map = (("NETDEV_A_DEV_UNSPEC", "none"),
               ("NETDEV_A_DEV_IFINDEX", "uint32"),
               ("NETDEV_A_DEV_PAD", "none"),
               ("NETDEV_A_DEV_XDP_FEATURES", "uint64"))


def xdp_features() -> dict[int, int] | None:
    """ifindex -> NETDEV_XDP_ACT_* bits for the current namespace; None when the kernel
    does not report them (no netdev netlink family before 6.3)."""
    sock = GenericNetlinkSocket()
    try:
        try:
            sock.bind("netdev", _NetdevMsg)
        except Exception:  # pyroute2 raises NetlinkError or its own errors for "no family"
            return None
        msg = _NetdevMsg()
        msg["cmd"] = NETDEV_CMD_DEV_GET
        msg["version"] = 1
        out = {}
        for m in sock.nlm_request(msg, msg_type=sock.prid,
                                  msg_flags=NLM_F_REQUEST | NLM_F_DUMP):
            idx = m.get_attr("NETDEV_A_DEV_IFINDEX")
            if idx:
                out[idx] = m.get_attr("NETDEV_A_DEV_XDP_FEATURES") or 0
        return out
    finally:
        sock.close()


@dataclass(frozen=True)
class Link:
    ifindex: int
    ifname: str
    kind: str          # "veth", "bridge", ... ("" for a plain device)
    up: bool
    loopback: bool
    enslaved: bool     # a bridge or bond port: routes never name it as egress


def links() -> list[Link]:
    """The interfaces of the current namespace."""
    out = []
    with IPRoute() as ipr:
        for link in ipr.get_links():
            info = link.get_attr("IFLA_LINKINFO")
            kind = (info.get_attr("IFLA_INFO_KIND") if info else None) or ""
            flags = link["flags"]
            out.append(Link(link["index"], link.get_attr("IFLA_IFNAME"), kind,
                            bool(flags & 1), bool(flags & 8),      # IFF_UP, IFF_LOOPBACK
                            bool(link.get_attr("IFLA_MASTER"))))
    return out


def native_capable(ifindex: int) -> bool | None:
    """Whether the driver of ``ifindex`` (current namespace) runs XDP natively; None when
    the kernel does not say."""
    features = xdp_features()
    if features is None or ifindex not in features:
        return None
    return bool(features[ifindex] & NETDEV_XDP_ACT_BASIC)


@dataclass(frozen=True)
class Egress:
    """Whether XDP may redirect into an interface, and why (for status and warnings)."""

    ifindex: int
    ifname: str
    redirect: bool
    why: str


def assess(generic_only: bool) -> list[Egress]:
    """Verdicts for every interface of the current namespace. ``generic_only``: every
    attachment of the instance runs in generic mode."""
    features = None if generic_only else xdp_features()
    out = []
    for link in links():
        if link.loopback or link.enslaved:
            continue
        if not link.up:
            out.append(Egress(link.ifindex, link.ifname, False, "interface is down"))
        elif generic_only:
            out.append(Egress(link.ifindex, link.ifname, True,
                              "generic XDP: frames leave through the stack's transmit path"))
        elif features is None:
            out.append(Egress(link.ifindex, link.ifname, False,
                              "this kernel does not report XDP transmit support (6.3+)"))
        elif features.get(link.ifindex, 0) & NETDEV_XDP_ACT_NDO_XMIT:
            out.append(Egress(link.ifindex, link.ifname, True,
                              "the driver transmits XDP frames"))
        else:
            out.append(Egress(link.ifindex, link.ifname, False, _why_not(link)))
    return out


def _why_not(link: Link) -> str:
    if link.kind == "bridge":
        return "a bridge cannot transmit XDP frames"
    if link.kind == "veth":
        return ("its far end has no XDP program and GRO off (either makes veth take "
                "XDP frames)")
    return f"the {link.kind or 'device'} driver cannot transmit XDP frames"


def sync(maps: M.MapSet, generic_only: bool, any_generic: bool | None = None
         ) -> tuple[list[Egress], bool]:
    """Make tx_ports hold exactly the interfaces that can take XDP frames (current
    namespace), and tell the datapath whether any attachment runs generic XDP
    (``any_generic``, default ``generic_only``): only native XDP may finish a partial
    checksum and redirect the packet (see lb_csum.h). Returns the verdicts and whether the
    devmap changed. A change of either drops the datapath's cached next hops, which keep
    both verdicts (a cached hop into a verified egress skips the devmap), so no packet
    follows a stale decision."""
    generic = generic_only if any_generic is None else any_generic
    mode_changed = M.get_setting(maps.settings_map, abi.SETTING_XDP_GENERIC) != int(generic)
    if mode_changed:
        M.set_setting(maps.settings_map, abi.SETTING_XDP_GENERIC, int(generic))
    verdicts = assess(generic_only)
    added, removed = M.set_tx_ports(maps.tx_ports_map,
                                    [e.ifindex for e in verdicts if e.redirect])
    changed = bool(added or removed)
    if changed or mode_changed:
        M.flush_nexthop_cache(maps.settings_map)
    return verdicts, changed


def local_addresses() -> list[str]:
    """IPv4 addresses of the current namespace, loopback range excluded: the addresses a
    listener without an address of its own serves."""
    with IPRoute() as ipr:
        addrs = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=2)}
    return sorted(a for a in addrs if a and not a.startswith("127."))


@dataclass
class NetworkState:
    """What the last assessment found (shown by status and the console)."""

    egress: list[Egress]
    local_addresses: list[str]


class EgressWatcher:
    """A daemon thread in the instance's namespace that keeps tx_ports and local_addrs
    current: once at start (``refresh``) and every ``interval`` seconds after."""

    def __init__(self, maps: M.MapSet, ns: str | None, modes: Callable[[], Collection[str]],
                 interval: float = 1.0, on_change: Callable[[str], None] | None = None
                 ) -> None:
        self.maps = maps
        self.ns = ns
        self.modes = modes
        self.interval = interval
        self.on_change = on_change
        self.state = NetworkState([], [])
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def refresh(self) -> NetworkState:
        """Assess now (from any thread); returns the new state."""
        with self._lock, netns.inside(self.ns):
            modes = set(self.modes())
            generic_only = bool(modes) and modes <= {"generic"}
            verdicts, _ = sync(self.maps, generic_only, any_generic="generic" in modes)
            addrs = local_addresses()
            added, removed = M.set_local_addresses(self.maps.local_addrs_map, addrs)
        before = {e.ifname: e.redirect for e in self.state.egress}
        self.state = NetworkState(verdicts, addrs)
        if self.on_change is not None:
            for e in verdicts:
                if before and before.get(e.ifname) != e.redirect:
                    path = "XDP redirect" if e.redirect else "the kernel stack"
                    self.on_change(f"egress {e.ifname}: now {path} ({e.why})")
            if before and (added or removed):
                self.on_change(f"local addresses now {', '.join(addrs) or 'none'}")
        return self.state

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lbtui-egress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.refresh()
            except Exception:  # keep watching; a transient netlink error must not end it
                self.errors += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

