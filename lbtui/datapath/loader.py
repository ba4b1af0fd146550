"""Compile the XDP datapath with BCC against a MapSet, attach and detach it.

The maps come first (``lbtui.maps``) and are pinned; the program is compiled with BCC's
pinned-table declarations pointing at those pins, so it uses exactly those maps. XDP is
attached with netlink and stays attached after this process exits (``serve --keep``);
``detach`` removes only a program that is ours.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lbtui import bpfsys, netns
from lbtui.datapath import egress
from lbtui.maps import MapSet

if TYPE_CHECKING:
    from bcc import BPF


def _bpf_dir() -> Path:
    """The C sources, shipped inside the package (``lbtui/datapath/bpf``); BCC compiles
    them from real files, so an installed lbtui carries its datapath with it."""
    override = os.environ.get("LBTUI_BPF_DIR")
    return Path(override) if override else Path(str(resources.files("lbtui.datapath") / "bpf"))


BPF_DIR = _bpf_dir()
PROG_NAME = "lb_xdp"
PASS_PROG_NAME = "lb_xdp_pass"
EMIT_PROG_NAME = "lb_emit_event"

XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
MODES = {"native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE}
# pyroute2 decodes IFLA_XDP_ATTACHED to names ("xdpgeneric"); raw numbers kept for safety.
_ATTACHED_MODE = {1: "native", 2: "generic", 3: "offload", 4: "multi",
                  "xdp": "native", "xdpgeneric": "generic", "xdpoffload": "offload",
                  "xdpmulti": "multi"}


class DatapathError(RuntimeError):
    """Loading or attaching failed; the message says what to do next."""


# The oldest kernel the datapath loads on: bpf_ktime_get_coarse_ns (5.11) is the newest
# kernel feature it uses; the BPF ring buffer and CAP_BPF came in 5.8.
MIN_KERNEL = (5, 11)


def kernel_version(release: str) -> tuple[int, int]:
    """(major, minor) of a kernel release string such as ``6.1.0-18-amd64``."""
    major, _, rest = release.partition(".")
    minor = "".join(itertools.takewhile(str.isdigit, rest))
    return int(major), int(minor or 0)


def preflight() -> None:
    """Fail early, with the fix, when this machine cannot run the datapath."""
    release = os.uname().release
    if kernel_version(release) < MIN_KERNEL:
        raise DatapathError(f"kernel {release} is too old: lbtui's datapath needs Linux "
                            f"{'.'.join(map(str, MIN_KERNEL))} or newer (Debian 12's own "
                            "kernel, 6.1, works).")
    if os.geteuid() != 0:
        raise DatapathError("lbtui needs root to load BPF programs: run it with sudo.")
    if not os.path.ismount("/sys/fs/bpf"):
        raise DatapathError("bpffs is not mounted: run `mount -t bpf bpf /sys/fs/bpf` "
                            "(scripts/setup.sh does this).")
    build = Path(f"/lib/modules/{os.uname().release}/build")
    if not (build / "include").exists():
        raise DatapathError(
            f"kernel headers missing: {build} does not exist. Run scripts/setup.sh, which "
            "installs linux-headers-ARCH and links it there.")
    try:
        import bcc  # noqa: F401
    except ImportError as e:
        raise DatapathError(
            "the bcc Python module is missing: install Debian's python3-bpfcc and use the "
            "venv made by scripts/setup.sh (PyPI's 'bcc' is a different package).") from e


@dataclass(frozen=True)
class Attachment:
    ifname: str
    ifindex: int
    mode: str
    netns: str | None
    prog_id: int


@dataclass(eq=False)
class Datapath:
    """The loaded XDP programs bound to one MapSet."""

    maps: MapSet
    bpf: BPF
    prog_fd: int
    pass_fd: int
    emit_fd: int
    attachments: list[Attachment] = field(default_factory=list)

    @property
    def prog_id(self) -> int:
        return bpfsys.prog_info(self.prog_fd).id

    @classmethod
    def load(cls, maps: MapSet) -> Datapath:
        """Compile lb_xdp.c for ``maps`` (which must be pinned) and load it."""
        preflight()
        if maps.pin_dir is None:
            raise DatapathError("maps must be pinned (MapSet.pin_all) before loading")
        from bcc import BPF

        src = (BPF_DIR / "lb_xdp.c").read_text()
        cflags = [
            f"-I{BPF_DIR}",
            f'-DLB_PIN_DIR="{maps.pin_dir}"',
            f"-DLB_MAX_LISTEN={maps.listen_map.max_entries}",
            f"-DLB_MAX_ROUTES={maps.config_map.max_entries}",
            f"-DLB_MAX_SNI={maps.sni_map.max_entries}",
            f"-DLB_MAX_CONNTRACK={maps.conntrack_map.max_entries}",
            f"-DLB_RINGBUF_BYTES={maps.stats_ringbuf.max_entries}",
            "-Wno-unused-function",
        ]
        try:
            b = BPF(text=src.encode(), cflags=cflags)
            prog = b.load_func(PROG_NAME.encode(), BPF.XDP)
            passp = b.load_func(PASS_PROG_NAME.encode(), BPF.XDP)
            emit = b.load_func(EMIT_PROG_NAME.encode(), BPF.XDP)
        except Exception as e:  # BCC raises bare Exceptions with the compiler's text
            raise DatapathError(f"compiling/loading {BPF_DIR / 'lb_xdp.c'} failed: {e}. "
                                "Check the kernel headers (scripts/setup.sh).") from e
        return cls(maps, b, prog.fd, passp.fd, emit.fd)

    def pin_programs(self, pin_dir: Path) -> None:
        """Pin the datapath and the event-emitter programs next to the maps, so another
        process (ctl, an attached console, a restarted serve) can find them."""
        for name, fd in (("prog_xdp", self.prog_fd), ("prog_emit", self.emit_fd)):
            path = pin_dir / name
            if path.exists():
                path.unlink()
            bpfsys.obj_pin(fd, str(path))

    def attach(self, ifname: str, *, mode: str = "auto", ns: str | None = None,
               fd: int | None = None) -> Attachment:
        """Attach the datapath (or the pass program, ``fd``) to ``ifname``.

        ``mode``: native, generic, or auto (native, falling back to generic)."""
        prog_fd = self.prog_fd if fd is None else fd
        modes = ["native", "generic"] if mode == "auto" else [mode]
        if any(m not in MODES for m in modes):
            raise DatapathError(f"XDP mode {mode!r}: use native, generic or auto")
        with netns.inside(ns):
            ifindex = _ifindex(ifname, ns)
            if mode == "auto" and egress.native_capable(ifindex) is False:
                modes = ["generic"]     # the driver says so: no failed attempt, no noise
            for m in modes:
                if _bcc_lib().bpf_attach_xdp(ifname.encode(), prog_fd, MODES[m]) == 0:
                    break
            else:
                raise DatapathError(f"attaching XDP to {ifname} ({'/'.join(modes)}) failed; "
                                    "the kernel log (dmesg) may say why")
            attached_mode, prog_id = xdp_state(ifindex)
        a = Attachment(ifname, ifindex, attached_mode or modes[0], ns, prog_id)
        self.attachments.append(a)
        return a

    def detach_all(self) -> None:
        for a in list(self.attachments):
            detach(a.ifname, ns=a.netns, only_prog_id=a.prog_id)
            self.attachments.remove(a)


def _bcc_lib() -> Any:  # libbcc's ctypes handle (bcc is untyped)
    from bcc.libbcc import lib

    return lib


def _ifindex(ifname: str, ns: str | None) -> int:
    try:
        return _if_nametoindex(ifname)
    except OSError:
        where = f" in network namespace {ns}" if ns else ""
        raise DatapathError(f"unknown interface {ifname!r}{where}: check `ip link`") from None


def _if_nametoindex(ifname: str) -> int:
    import socket

    return socket.if_nametoindex(ifname)


def xdp_state(ifindex: int) -> tuple[str | None, int]:
    """(mode, prog id) of the XDP program on ``ifindex`` in the current namespace."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        link = ipr.get_links(ifindex)[0]
    xdp = link.get_attr("IFLA_XDP")
    if not xdp:
        return None, 0
    attached = xdp.get_attr("IFLA_XDP_ATTACHED") or 0
    prog_id = xdp.get_attr("IFLA_XDP_PROG_ID") or 0
    return _ATTACHED_MODE.get(attached), prog_id


def detach(ifname: str, *, ns: str | None = None, only_prog_id: int | None = None) -> bool:
    """Remove the XDP program from ``ifname``; with ``only_prog_id``, only if it is that one
    (we never remove another tool's program). Returns True if something was removed."""
    with netns.inside(ns):
        try:
            ifindex = _if_nametoindex(ifname)
        except OSError:
            return False
        mode, prog_id = xdp_state(ifindex)
        if not prog_id or (only_prog_id is not None and prog_id != only_prog_id):
            return False
        ret: int = _bcc_lib().bpf_attach_xdp(ifname.encode(), -1, MODES.get(mode or "", 0))
        return ret == 0
