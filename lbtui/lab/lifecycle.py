"""The demo lab's life: set up, run, tear down.

``LabRun`` is the owner side, shared by ``lbtui demo`` (console or headless) and the
background manager of ``lbtui lab up``. ``start`` runs each step with its outcome and
duration: prerequisites, the namespace network, TLS certificates, backend servers, the
config file, the datapath (``Instance.start``: BCC compile, XDP attach, config applied,
an SNI splicer for the SNI listener), a probe through the load balancer, traffic.

``down`` is the one idempotent clean-up, used by the owner on exit, by its watchdog when
the owner dies, and by ``lbtui lab down``: stop the owner, detach and unpin the instance,
delete the namespaces (which removes their links, processes and XDP programs) and the
lab's files. The root namespace is never touched.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lbtui import netns
from lbtui.files import remove_inside
from lbtui.lab import demo_config as D
from lbtui.lab import topology as T
from lbtui.lab.ownership import LabBusy, LabLock, pid_alive, read_meta, write_meta
from lbtui.lab.progress import Steps
from lbtui.lab.traffic import TrafficSpec, backend_from_http, read_traffic, start_traffic

DEFAULT_LAB = "demo"
# Unknown names take the SNI listener's default group: one of them shows that path.
TLS_TRAFFIC_HOSTS = [*D.SNI_ROUTES, "other.demo.test"]

Progress = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


@dataclass
class TrafficOptions:
    """The generated traffic. client2 is source-routed to HTTP backends whatever the
    port, so it sends only HTTP, at half the rate."""

    enabled: bool = True
    http_rate: float = 20.0
    echo_conns: int = 4
    udp_rate: float = 10.0
    tls_rate: float = 2.0
    duration: float = 600.0

    def specs(self, topo: T.Topology, sni: bool) -> dict[str, TrafficSpec]:
        base = TrafficSpec(vip=topo.vip, http_port=D.HTTP_LISTEN_PORT, echo_port=T.ECHO_PORT,
                           udp_port=T.UDP_PORT, tls_port=D.TLS_LISTEN_PORT,
                           tls_hosts=TLS_TRAFFIC_HOSTS, duration=self.duration)
        tls = self.tls_rate if sni else 0.0
        out = {}
        for c in topo.clients:
            if c.node == D.SOURCE_ROUTED_CLIENT:
                spec = base.with_(http_rate=self.http_rate / 2, echo_conns=0, udp_rate=0.0,
                                  tls_rate=0.0)
            else:
                spec = base.with_(http_rate=self.http_rate, echo_conns=self.echo_conns,
                                  udp_rate=self.udp_rate, tls_rate=tls)
            out[c.node] = spec.validate()
        return out

    def describe(self, sni: bool) -> str:
        parts = [f"HTTP {self.http_rate:g}/s", f"{self.echo_conns} long-lived TCP",
                 f"UDP {self.udp_rate:g}/s"]
        if sni and self.tls_rate:
            parts.append(f"TLS {self.tls_rate:g}/s")
        return ", ".join(parts) + f" for {self.duration:g} s"


# --- SNI ----------------------------------------------------------------------------------


def sni_available() -> bool:
    """True when ``lbtui.splicer`` (the SNI splicer) provides Splicer: the demo then adds
    its port-443 SNI listener (``Instance.start`` runs a splicer for it) and TLS traffic."""
    try:
        mod = importlib.import_module("lbtui.splicer")
    except ImportError:
        return False
    return hasattr(mod, "Splicer")


# --- probing ------------------------------------------------------------------------------


def probe(topo: T.Topology, timeout: float = 10.0) -> str:
    """One HTTP request and one UDP datagram from client1 through the VIP; returns which
    backends answered. Retries briefly (the first packets may race the attach)."""
    client = topo.clients[0]
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    answers: dict[str, str] = {}
    with netns.inside(client.ns):
        while time.monotonic() < deadline and len(answers) < 2:
            try:
                if "HTTP" not in answers:
                    with socket.create_connection((topo.vip, D.HTTP_LISTEN_PORT), 1) as s:
                        s.sendall(b"GET / HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
                        answers["HTTP"] = backend_from_http(s.recv(4096))
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                    u.settimeout(1)
                    u.connect((topo.vip, T.UDP_PORT))
                    u.send(b"probe")
                    answers["UDP"] = u.recv(512).decode().split()[0]
            except (OSError, ValueError, IndexError) as e:
                last = e
                time.sleep(0.2)
    if len(answers) < 2:
        got = ", ".join(f"{k} answered by {v}" for k, v in answers.items()) or "no answer"
        raise RuntimeError(f"traffic from {client.node} to {topo.vip} does not get through "
                           f"({got}; last error: {last})")
    return ", ".join(f"{k} answered by {v}" for k, v in answers.items())


# --- the owner ----------------------------------------------------------------------------


def lab_exists(lab: str) -> bool:
    from lbtui.control.instance import pin_dir_of

    return (lab in T.list_labs() or (T.STATE_DIR / lab).exists()
            or pin_dir_of(D.instance_name(lab)).exists())


class LabRun:
    """Build and own one lab until ``close``."""

    def __init__(self, lab: str = DEFAULT_LAB, traffic: TrafficOptions | None = None,
                 steps: Steps | None = None, role: str = "lbtui demo") -> None:
        self.lab = T.validate_lab_name(lab)
        self.instance_name = D.instance_name(lab)
        self.traffic = traffic or TrafficOptions()
        self.steps = steps or Steps()
        self.role = role
        self.lock = LabLock(lab)
        self.watchdog: Any = None
        self.topo: T.Topology | None = None
        self.inst: Any = None
        self.instance_released = False
        self.config_path: Path | None = None
        self.sni = False
        self.traffic_procs: list[Any] = []
        self._last_sweep = time.monotonic()
        self.started = time.time()

    def start(self) -> None:
        """All set-up steps. On failure (StepFailed, LabBusy) call ``close`` anyway."""
        from lbtui.lab.supervisor import Watchdog

        s = self.steps
        if not self.lock.try_acquire():
            pid = self.lock.holder()
            raise LabBusy(f"lab {self.lab} is already running (pid {pid or '?'}): open its "
                          f"console with `lbtui console --attach {self.instance_name}`, or "
                          f"stop it with `lbtui lab down --lab {self.lab}`", pid)
        self.watchdog = Watchdog(self.lab)
        if lab_exists(self.lab):
            with s.step(f"removing lab {self.lab} left by an earlier run (kept or crashed)",
                        hint=f"run `lbtui lab down --lab {self.lab}` and retry"):
                down(self.lab, progress=s.note, held=self.lock)
        with s.step("checking prerequisites: root, bpffs, kernel headers, BCC",
                    hint="run scripts/setup.sh as root; it installs and mounts what is "
                         "missing"):
            from lbtui.datapath.loader import preflight

            preflight()
        with s.step(f"building the lab network: {D.N_CLIENTS} clients, LB, {D.N_BACKENDS} "
                    "backends in network namespaces (198.18.0.0/15, no route out)",
                    hint=f"`lbtui lab down --lab {self.lab}` removes leftovers; check that "
                         "`ip netns` and veth work on this kernel"):
            self.topo = topo = T.build(self.lab, D.N_CLIENTS, D.N_BACKENDS, s.note)
            self._meta()
        with s.step("creating a throwaway CA and TLS certificate (openssl)",
                    hint="scripts/setup.sh installs openssl"):
            from lbtui.lab.tlscerts import make_certs

            tls = make_certs(T.lab_dir(self.lab) / "tls", list(D.SNI_ROUTES))
        with s.step(f"starting backend servers: HTTP :8080 and :{D.SOURCE_ROUTE_PORT}, echo "
                    f":7000, UDP :9000, TLS :{D.TLS_BACKEND_PORT} in each backend",
                    hint="another process may hold the ports; see `lbtui lab status`"):
            T.start_backend_servers(topo, tls=D.TLS_BACKEND_PORT, cert=tls.cert, key=tls.key,
                                    also_http=[D.SOURCE_ROUTE_PORT])
        self.sni = sni_available()
        with s.step("writing the demo config" + ("" if self.sni else
                    " (no SNI listener: the SNI splicer is not available yet)")):
            from lbtui.control.config import load_config

            self.config_path = T.lab_dir(self.lab) / "lbtui.toml"
            self.config_path.write_text(D.render(topo, sni_listener=self.sni))
            self.config_path.chmod(0o600)
            config = load_config(self.config_path)
            s.note(str(self.config_path))
        with s.step("loading the datapath: BCC compile, XDP on the LB's interfaces, config "
                    "into the maps", hint="the lines above say which part failed; "
                    "scripts/setup.sh fixes missing headers or bcc"):
            from lbtui.control.instance import Instance

            self.inst = Instance.start(config, progress=s.note)
            self._meta()
        with s.step("checking the path client -> VIP -> backend",
                    hint=f"see `lbtui lab status --lab {self.lab}`; `lbtui lab exec lb -- "
                         "ip -s link` shows the LB's interfaces"):
            s.note(probe(topo))
        if self.traffic.enabled:
            with s.step("starting traffic: " + self.traffic.describe(self.sni)):
                self.traffic_procs = start_traffic(
                    topo, self.traffic.specs(topo, self.sni), T.lab_dir(self.lab))
        self._meta(ready=True)

    def _meta(self, **extra: Any) -> None:
        T.lab_dir(self.lab)
        write_meta(self.lab, owner_pid=os.getpid(), role=self.role,
                   instance=self.instance_name,
                   config_path=str(self.config_path) if self.config_path else None,
                   sni=self.sni, traffic=asdict(self.traffic), started=self.started, **extra)

    # --- while running -----------------------------------------------------------------

    def sweep_if_due(self) -> None:
        """Age out idle flows (the console does this itself; headless runs call this)."""
        if self.inst is None or self.inst.config is None:
            return
        if time.monotonic() - self._last_sweep >= self.inst.config.settings.sweep_interval:
            self._last_sweep = time.monotonic()
            self.inst.sweep()

    def summary(self) -> str:
        return traffic_summary(read_traffic(T.STATE_DIR / self.lab))

    # --- ending ------------------------------------------------------------------------

    def close(self, keep: bool = False) -> None:
        """Tear everything down (or, with ``keep``, leave the lab running for a later
        ``lbtui lab down``). Safe after a partial start."""
        if keep and self.inst is not None:
            if not self.instance_released:
                self.inst.stop(keep=True)
            self.lock.release()
            if self.watchdog:
                self.watchdog.keep()
            return
        try:
            if self.inst is not None and not self.instance_released:
                with contextlib.suppress(Exception):   # down() cleans up what this leaves
                    self.inst.stop(keep=False)
            self.instance_released = True
            if self.lock.fd is not None:
                down(self.lab, held=self.lock)
        finally:
            self.lock.release(remove=True)
            if self.watchdog:
                self.watchdog.done()


def traffic_summary(stats: dict[str, dict[str, Any]]) -> str:
    """One line: rates per kind over all clients, errors, and recent HTTP shares."""
    rates: dict[str, float] = {}
    errors = 0
    shares: dict[str, int] = {}
    for st in stats.values():
        for kind, k in st["kinds"].items():
            rates[kind] = rates.get(kind, 0.0) + k["rate"]
            errors += k["errors"]
        if st["client"] != D.SOURCE_ROUTED_CLIENT:
            for b, n in st["kinds"]["http"]["recent_by_backend"].items():
                shares[b] = shares.get(b, 0) + n
    if not stats:
        return "no traffic"
    total = sum(shares.values()) or 1
    parts = [f"{k} {r:.1f}/s" for k, r in rates.items() if r]
    share = " ".join(f"{b} {100 * n / total:.0f}%" for b, n in sorted(shares.items()))
    return (", ".join(parts) or "idle") + f"; errors {errors}" + (
        f"; new HTTP on port {D.HTTP_LISTEN_PORT}: {share}" if shares else "")


# --- clean-up -------------------------------------------------------------------------------


def _stop_owner(lab: str, lock: LabLock, progress: Progress, wait: float) -> list[int]:
    """Ask the live owner of a lab (demo or lab-up manager) to stop, then insist.
    Returns the pids that were stopped."""
    pids = {p for p in (read_meta(lab).get("owner_pid"), lock.holder())
            if isinstance(p, int) and p not in (-1, os.getpid())}
    live = [p for p in pids if pid_alive(p)]
    for p in live:
        progress(f"stopping the lab's owner, pid {p}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while any(pid_alive(p) for p in live) and time.monotonic() < deadline:
        time.sleep(0.1)
    for p in live:
        if pid_alive(p):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
    return live


def down(lab: str, progress: Progress = _quiet, held: LabLock | None = None,
         stop_owner: bool = True, owner_wait: float = 20.0,
         lock_wait: float = 60.0) -> list[str]:
    """Remove everything of ``lab``, idempotently; returns what was done. ``held``: the
    caller owns the lab (its lock); otherwise a live owner is stopped first (unless
    ``stop_owner`` is False: the watchdog must never stop a new owner) and the lock taken,
    so no clean-up runs while a new owner builds (LabBusy if one holds it)."""
    from lbtui.control import instance as I
    from lbtui.control.lock import edit_lock, manager_lock

    T.validate_lab_name(lab)
    lock = held or LabLock(lab)
    done: list[str] = []
    if held is None:
        if stop_owner:
            done += [f"stopped the lab's owner (pid {p})"
                     for p in _stop_owner(lab, lock, progress, owner_wait)]
        lock.acquire(lock_wait)
    try:
        name = D.instance_name(lab)
        topo = T.Topology.load(lab)
        if topo is not None and topo.nodes:     # a cluster lab (lbtui.lab.cluster)
            from lbtui.lab.cluster import stop_nodes

            progress(f"stopping serve and BIRD on {len(topo.nodes)} nodes")
            stop_nodes(topo)
            done.append(f"stopped {len(topo.nodes)} cluster nodes")
        for line in I.teardown(name):
            progress(line)
            done.append(line)
        if T.teardown(lab, progress):
            done.append(f"removed the namespaces and files of lab {lab}")
        for lk in (manager_lock(name), edit_lock(name)):
            if lk.path.exists() and lk.try_acquire():
                remove_inside(lk.path, lk.path.parent)
                lk.release()
        remove_inside(T.STATE_DIR / f"{lab}.log", T.STATE_DIR)
    finally:
        if held is None:
            lock.release(remove=True)
    return done


# --- status ---------------------------------------------------------------------------------


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _process_role(argv: list[str]) -> tuple[str, str]:
    """(role, node) of a lab process from its command line."""
    def arg(flag: str) -> str:
        return argv[argv.index(flag) + 1] if flag in argv[:-1] else "?"
    if "lbtui.lab.servers" in argv:
        return "servers", arg("--name")
    if "lbtui.lab.traffic" in argv:
        return "traffic", arg("--client")
    return (os.path.basename(argv[0]) if argv and argv[0] else "?"), "?"


# pyroute2 reports IFLA_XDP_ATTACHED by name (older versions: by number).
_XDP_MODE_NAMES: dict[Any, str] = {"xdp": "native", "xdpgeneric": "generic",
                                   "xdpoffload": "offload", "xdpmulti": "multi",
                                   1: "native", 2: "generic", 3: "offload", 4: "multi"}


def _xdp_here(ifname: str) -> tuple[str | None, int]:
    """(mode, prog id) of the XDP program on ``ifname`` in the current namespace."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=ifname)
        if not idx:
            return None, 0
        xdp = ipr.get_links(idx[0])[0].get_attr("IFLA_XDP")
    prog_id = (xdp.get_attr("IFLA_XDP_PROG_ID") or 0) if xdp else 0
    attached = xdp.get_attr("IFLA_XDP_ATTACHED") if xdp else None
    return (_XDP_MODE_NAMES.get(attached, str(attached)) if prog_id else None), prog_id


def status(lab: str) -> dict[str, Any]:
    """Everything ``lbtui lab status`` shows, as data."""
    from pyroute2 import netns as pr_netns

    from lbtui.control.instance import Instance, InstanceError

    T.validate_lab_name(lab)
    topo = T.Topology.load(lab)
    meta = read_meta(lab)
    owner = meta.get("owner_pid")
    out: dict[str, Any] = {
        "lab": lab, "exists": lab_exists(lab), "instance": D.instance_name(lab),
        "owner": {"pid": owner, "alive": pid_alive(owner), "role": meta.get("role")},
        "ready": bool(meta.get("ready")), "config_path": meta.get("config_path"),
        "namespaces": [], "processes": [], "xdp": [], "datapath": None, "traffic": {}}
    if topo is None:
        return out
    present = set(pr_netns.listnetns())
    out["namespaces"] = [{"name": n, "present": n in present} for n in topo.namespaces]
    for pid in topo.pids:
        role, node = _process_role(_cmdline(pid))
        out["processes"].append({"pid": pid, "role": role, "node": node,
                                 "alive": pid_alive(pid)})
    if topo.lb_ns in present:
        with netns.inside(topo.lb_ns):
            for e in topo.clients + topo.backends:
                mode, prog_id = _xdp_here(e.lb_ifname)
                out["xdp"].append({"ifname": e.lb_ifname, "peer": e.node, "mode": mode,
                                   "prog_id": prog_id})
    try:
        inst = Instance.attach(D.instance_name(lab))
    except (InstanceError, OSError) as e:
        out["datapath"] = {"error": str(e)}
    else:
        try:
            out["datapath"] = inst.status()
        finally:
            inst.close()
    out["traffic"] = read_traffic(T.STATE_DIR / lab)
    return out
