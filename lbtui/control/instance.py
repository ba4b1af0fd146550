"""A named datapath instance: pinned maps and programs, XDP attachments, its lock.

``Instance.start`` is what a manager (``serve``, a standalone console) calls: it takes the
instance's manager lock, creates the maps (or re-adopts the ones pinned by an earlier run,
keeping every established connection), compiles the program against them, attaches it
(atomically replacing our own earlier program, never another tool's), and makes the maps
match the config. ``Instance.attach`` is for everyone else (ctl, an attached console): it
opens the pinned maps and programs and changes nothing.

Layout: pins under ``/sys/fs/bpf/lbtui/<instance>/`` (maps by name, ``prog_xdp``,
``prog_emit``; directories 0700); lock and state files under ``/run/lbtui/``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lbtui import abi, bpfsys, netns
from lbtui import maps as M
from lbtui.control import apply
from lbtui.control.checks import DOWN, CurrentConfig, HealthChecker
from lbtui.control.config import ConfigError, load_config, parse_dict, to_dict
from lbtui.control.eventhub import EventHub, socket_path
from lbtui.control.lock import FileLock, LockHeld, editing, manager_lock, run_dir
from lbtui.control.state import (
    read_applied,
    read_state,
    remove_state,
    update_state,
    write_applied,
    write_state,
)
from lbtui.datapath import hostnet, loader
from lbtui.datapath.egress import EgressWatcher, assess
from lbtui.datapath.loader import Datapath, DatapathError, xdp_state
from lbtui.errors import NotRunning
from lbtui.files import remove_inside, state_root
from lbtui.maps.events import aged_event, emit_event
from lbtui.maps.maglev import group_capacity, groups_in_use, table_size
from lbtui.maps.transaction import Transaction
from lbtui.model import Config
from lbtui.names import instance_name

PIN_ROOT = Path(os.environ.get("LBTUI_PIN_ROOT", "/sys/fs/bpf/lbtui"))
PROG_PIN = "prog_xdp"
EMIT_PIN = "prog_emit"
# Finished flows (FIN both ways, or RST) stay this long after their last packet, for the
# final ACK and retransmissions, then the sweep removes them without waiting for the
# connection timeout.
CLOSED_LINGER_S = 10

Progress = Callable[[str], None]
log = logging.getLogger("lbtui.control")


class InstanceError(RuntimeError):
    """The instance cannot be started/attached/stopped; the message says what to do."""


class InstanceNotRunning(InstanceError, NotRunning):
    """Nothing is pinned for the instance (exit 3)."""


def pin_dir_of(name: str) -> Path:
    return PIN_ROOT / instance_name(name)


def state_dir_of(name: str) -> Path:
    """Where lbtui.maps keeps this instance's SNI hostnames (beside the pins' name)."""
    return state_root() / instance_name(name)


def pins_complete(pin_dir: Path) -> bool:
    return all((pin_dir / n).exists() for n in (*M.PIN_NAMES, PROG_PIN, EMIT_PIN))


def _private_dir(d: Path) -> None:
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    if d.stat().st_mode & 0o777 != 0o700:
        os.chmod(d, 0o700)


def _pinned_prog_id(pin_dir: Path) -> int | None:
    try:
        fd = bpfsys.obj_get(str(pin_dir / PROG_PIN))
    except OSError:
        return None
    try:
        return bpfsys.prog_info(fd).id
    finally:
        os.close(fd)


def lost_xdp_phrase(ifname: str, live_prog_id: int) -> str:
    """How an interface that lost this instance's program is described everywhere."""
    return (f"{ifname} runs another XDP program (id {live_prog_id})" if live_prog_id
            else f"{ifname} has no XDP program")


def _quiet(_msg: str) -> None:
    pass


class Instance:
    def __init__(self, name: str, maps: M.MapSet, emit_fd: int, *,
                 config: Config | None = None, datapath: Datapath | None = None,
                 lock: FileLock | None = None, netns_name: str | None = None,
                 config_path: Path | None = None, adopted: bool = False) -> None:
        self.name = name
        self.maps = maps
        self.emit_fd = emit_fd
        self.config = config
        self.datapath = datapath
        self.lock = lock
        self.netns = netns_name
        self.config_path = config_path
        self.adopted = adopted          # start() found pinned maps and kept them
        self.pin_dir = pin_dir_of(name)
        self.splicers: dict[int, Any] = {}   # SNI listener port -> running Splicer
        self.egress: EgressWatcher | None = None   # the manager keeps tx_ports current
        self.hub: EventHub | None = None           # the manager reads the events
        self.checker: HealthChecker | None = None  # the manager's active health checks
        self.sysctls: list[dict[str, Any]] = []    # what hostnet.prepare_sysctls changed

    @property
    def managed(self) -> bool:
        """True in the process that loaded the datapath and holds the manager lock."""
        return self.datapath is not None

    def out_of_rotation(self) -> frozenset[str]:
        """Targets ("ip:port") the manager's active checks took out of rotation (another
        process reads them from the state file)."""
        if self.checker is not None:
            return self.checker.out_of_rotation
        if self.managed:
            return frozenset()
        return frozenset((read_state(self.name) or {}).get("out_of_rotation", []))

    def apply(self, config: Config) -> Transaction:
        """Make the maps match ``config`` (all or nothing), with the targets out of
        rotation at weight 0; the returned transaction can be rolled back."""
        txn = apply.sync(self.maps, config, self.ifindexes, self.out_of_rotation())
        write_applied(self.name, to_dict(config))
        return txn

    def applied_config(self) -> Config | None:
        """The config the maps hold now, as last applied by any process."""
        data = read_applied(self.name)
        if data is None:
            return None
        try:
            return parse_dict(data)
        except ConfigError:
            return None

    # --- start / attach ------------------------------------------------------------

    @classmethod
    def start(cls, config: Config, progress: Progress = print) -> Instance:
        """Load (or re-adopt) the datapath for ``config`` and make the maps match it."""
        loader.preflight()
        name = config.datapath.instance
        lock = manager_lock(name)
        try:
            lock.acquire()
        except LockHeld as e:
            raise InstanceError(
                f"instance {name!r} is already managed by pid {e.pid or '?'} (lbtui serve or "
                f"console); stop that process, or use `lbtui ctl --instance {name}` / "
                "`lbtui console --attach` to work with it") from None
        try:
            return cls._start_locked(config, lock, progress)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def _start_locked(cls, config: Config, lock: FileLock, progress: Progress) -> Instance:
        dp_cfg = config.datapath
        name = dp_cfg.instance
        ns = dp_cfg.netns
        if ns and ns not in _netns_names():
            raise InstanceError(f"network namespace {ns!r} (datapath.netns) does not exist")
        all_ifaces = [*dp_cfg.interfaces, *dp_cfg.reply_interfaces]
        hostnet.check_interfaces(all_ifaces, ns, dp_cfg.xdp_mode)
        ifindex = dict(zip(all_ifaces, _ifindexes(all_ifaces, ns), strict=True))

        pin_dir = pin_dir_of(name)
        _private_dir(PIN_ROOT)
        _private_dir(state_dir_of(name).parent)
        old_prog = _pinned_prog_id(pin_dir)
        state = read_state(name) or {}
        ours = _own_prog_ids(state, old_prog)
        existing = _check_interfaces(all_ifaces, ifindex, ns, ours)

        M.check_pinned_version(pin_dir)     # another lbtui's maps: refuse, never misread
        adopted = pins_complete(pin_dir)
        if adopted:
            ms = M.MapSet.open_pinned(pin_dir)
            _warn_sizes(ms, config, progress)
            progress(f"re-adopting the pinned maps of instance {name} ({pin_dir}); "
                     "established connections are kept")
        else:
            remove_inside(pin_dir, PIN_ROOT)     # half-made by a crash during start
            ms = M.create_all_maps(config.map_options())
            ms.pin_all(pin_dir)
            os.chmod(pin_dir, 0o700)
        dp: Datapath | None = None
        inst: Instance | None = None
        try:
            progress("compiling the XDP datapath (BCC)")
            dp = Datapath.load(ms)
            # Record the new program as ours before attaching it anywhere: if this start
            # fails half-way, the next one must recognise it on the interfaces it reached.
            write_state(name, {**state, "prog_ids": sorted(ours | {dp.prog_id})})
            for ifname in all_ifaces:
                mode = dp_cfg.xdp_mode
                live = existing.get(ifname)
                if mode == "auto" and live in ("native", "generic"):
                    mode = live                  # replacing in place needs the same mode
                a = dp.attach(ifname, mode=mode, ns=ns)
                live_mode, _ = _xdp_state(ifname, ns)
                progress(f"XDP attached to {ifname} ({live_mode or a.mode}, prog id "
                         f"{a.prog_id})")
            dp.pin_programs(pin_dir)
            _detach_dropped(state, all_ifaces, ours, progress)
            emit_fd = bpfsys.obj_get(str(pin_dir / EMIT_PIN))
            inst = cls(name, ms, emit_fd, config=config, datapath=dp, lock=lock,
                       netns_name=ns, config_path=config.path, adopted=adopted)
            inst.sysctls = [*state.get("sysctls", []),
                            *hostnet.prepare_sysctls(all_ifaces, ns)]
            inst._start_egress(progress)
            inst.hub = EventHub(ms, name, config.health)
            inst.hub.start()
            txn = inst.apply(config)
            progress(f"config applied ({txn.changed} map entries changed)")
            try:
                inst.sync_splicers(progress)
            except BaseException:
                inst.stop_splicers()
                raise
            inst.write_state()
            inst._start_checks()
            return inst
        except BaseException:
            if inst is not None:
                inst._stop_threads()
            if not adopted:
                if dp is not None:
                    dp.detach_all()
                if inst is not None:
                    hostnet.restore_sysctls(inst.sysctls, ns)
                remove_inside(pin_dir, PIN_ROOT)
                remove_state(name)
            M.close_all_maps(ms)
            raise

    @classmethod
    def attach(cls, name: str = "default") -> Instance:
        """Open the pinned maps and programs of a running (or kept) instance."""
        pin_dir = pin_dir_of(name)
        M.check_pinned_version(pin_dir)
        if not pins_complete(pin_dir):
            raise InstanceNotRunning(f"instance {name!r} is not running: nothing pinned under "
                                f"{pin_dir} (start it with `lbtui serve --config FILE`)")
        ms = M.MapSet.open_pinned(pin_dir)
        try:
            emit_fd = bpfsys.obj_get(str(pin_dir / EMIT_PIN))
        except OSError:
            M.close_all_maps(ms)
            raise
        state = read_state(name) or {}
        path = Path(state["config_path"]) if state.get("config_path") else None
        config = None
        if path is not None:
            with contextlib.suppress(ConfigError, OSError):
                config = load_config(path)
        return cls(name, ms, emit_fd, config=config, netns_name=state.get("netns"),
                   config_path=path)

    def _start_egress(self, progress: Progress) -> None:
        """Fill tx_ports and local_addrs now, say where packets will take the stack, and
        keep both current while we manage the instance."""
        assert self.datapath is not None
        modes = sorted({a.mode for a in self.datapath.attachments})
        watcher = EgressWatcher(self.maps, self.netns, lambda: modes, on_change=progress)
        state = watcher.refresh()
        for e in state.egress:
            if not e.redirect:
                progress(f"note: packets leaving through {e.ifname} go through the kernel "
                         f"stack ({e.why})")
        watcher.start()
        self.egress = watcher

    def _start_checks(self) -> None:
        """The manager's active health checks (idle while ``[health] check_interval`` is
        0; the config is re-read as it changes)."""
        assert self.config is not None and self.hub is not None
        current = CurrentConfig(self.config_path, self.config)
        self.checker = HealthChecker(current, self.netns,
                                     lambda *change: self._rotation_changed(current, *change))
        self.hub.checks = self.checker.snapshot
        self.checker.start()

    def _rotation_changed(self, current: CurrentConfig, out: frozenset[str], target: str,
                          old: str, new: str, why: str) -> None:
        """A target went out of rotation or came back: log it, record it for other
        processes' edits, apply it (under the edit lock, with the file's config), then show
        it to every viewer, so that a viewer who sees the event finds the maps changed."""
        log.log(logging.WARNING if new == DOWN else logging.INFO,
                "target %s %s rotation (active check: %s)",
                target, "taken out of" if new == DOWN else "back in", why)
        try:
            with editing(self.name):
                update_state(self.name, out_of_rotation=sorted(out))
                self.apply(current())
        finally:
            if self.hub is not None:
                self.hub.publish({"type": "transition", "source": "check", "group": None,
                                  "target": target, "from": old, "to": new, "why": why,
                                  "ts": time.time()})

    # --- state ---------------------------------------------------------------------

    def attachments(self) -> list[dict[str, Any]]:
        if self.datapath is not None:
            return [{"ifname": a.ifname, "ifindex": a.ifindex,
                     "mode": _xdp_state(a.ifname, a.netns)[0] or a.mode,
                     "prog_id": a.prog_id, "netns": a.netns}
                    for a in self.datapath.attachments]
        return list((read_state(self.name) or {}).get("attachments", []))

    def write_state(self, **extra: Any) -> None:
        cfg = self.config
        write_state(self.name, {
            "instance": self.name,
            "pid": os.getpid() if self.managed else None,
            "config_path": str(self.config_path.resolve()) if self.config_path else None,
            "netns": self.netns,
            "interfaces": list(cfg.datapath.interfaces) if cfg else [],
            "reply_interfaces": list(cfg.datapath.reply_interfaces) if cfg else [],
            "pin_dir": str(self.pin_dir),
            "attachments": self.attachments(),
            "prog_ids": [self.datapath.prog_id] if self.datapath else (
                read_state(self.name) or {}).get("prog_ids", []),
            "sysctls": self.sysctls if self.managed else (
                read_state(self.name) or {}).get("sysctls", []),
            "out_of_rotation": sorted(self.out_of_rotation()),
            "started": time.time(),
            **extra,
        })

    # --- stop ----------------------------------------------------------------------

    def stop(self, keep: bool = False) -> None:
        """Release this process's hold. A manager without ``keep`` detaches what it
        attached and unpins everything; with ``keep`` XDP keeps forwarding on the pinned
        maps for a later ``serve`` to re-adopt. A non-manager only closes its fds."""
        try:
            self.stop_splicers()
            self._stop_threads()
            if self.managed:
                if keep:
                    self.write_state(pid=None, kept=True)
                else:
                    teardown(self.name, self.attachments(), held=self.lock)
        finally:
            self.close()

    def _stop_threads(self) -> None:
        """The manager's own threads: health checks, the egress watcher, the event hub."""
        if self.checker is not None:
            self.checker.stop()
            self.checker = None
        if self.egress is not None:
            self.egress.stop()
            self.egress = None
        if self.hub is not None:
            self.hub.stop()
            self.hub = None

    def close(self) -> None:
        self._stop_threads()
        if self.emit_fd >= 0:
            os.close(self.emit_fd)
            self.emit_fd = -1
        M.close_all_maps(self.maps)
        if self.datapath is not None:
            with contextlib.suppress(Exception):
                self.datapath.bpf.cleanup()
        if self.lock is not None:
            self.lock.release()

    # --- SNI splicers -----------------------------------------------------------------

    def sync_splicers(self, progress: Progress = _quiet) -> None:
        """Run one SNI splicer per listener with ``sni = true`` (the listen entry passes
        those connections to the stack); stop the ones whose listener is gone. Only the
        manager runs them: they proxy in this process."""
        if not self.managed or self.config is None:
            return
        want: dict[int, str] = {}
        for x in self.config.listeners:
            if x.sni:
                if not x.address:      # validation requires it; never every interface
                    raise InstanceError(f"SNI listener on port {x.port} has no address: "
                                        "set the one address its splicer listens on")
                want[x.port] = x.address
        # New splicers first, old ones stopped only once all started: a failure leaves
        # the running ones exactly as they were.
        started: dict[int, Any] = {}
        try:
            for port, ip in want.items():
                old = self.splicers.get(port)
                if old is not None and old.listen_ip == ip:
                    continue
                from lbtui.splicer import Splicer

                sp = Splicer(self.maps, self.emit_fd, ip, port, netns=self.netns,
                             max_connections=max(1, self.maps.conntrack_map.max_entries // 2))
                sp.start()
                started[port] = sp
        except BaseException:
            for sp in started.values():
                with contextlib.suppress(Exception):
                    sp.stop()
            raise
        for port, sp in list(self.splicers.items()):
            if want.get(port) != sp.listen_ip:
                self.splicers.pop(port).stop()
                progress(f"SNI splicer on port {port} stopped")
        where = f" in {self.netns}" if self.netns else ""
        for port, sp in started.items():
            self.splicers[port] = sp
            progress(f"SNI splicer listening on {sp.listen_ip}:{port}{where}")

    def stop_splicers(self) -> None:
        while self.splicers:
            _port, sp = self.splicers.popitem()
            with contextlib.suppress(Exception):
                sp.stop()

    # --- run time ------------------------------------------------------------------

    def sweep(self, now_ns: int | None = None) -> list[M.Connection]:
        """Remove flows idle longer than the connection timeout (finished ones after
        CLOSED_LINGER_S) and emit closed ("aged") events for flows that had not reported
        their close, into the ring buffer, so consumers see one stream."""
        timeout_s = M.get_connection_timeout(self.maps.settings_map)
        if timeout_s == 0:
            return []
        now = time.monotonic_ns() if now_ns is None else now_ns  # bpf_ktime_get_ns clock
        removed = M.clear_stale_connections(
            self.maps.conntrack_map, now, timeout_s * 1_000_000_000,
            closed_timeout_ns=min(timeout_s, CLOSED_LINGER_S) * 1_000_000_000)
        if removed and M.stats_enabled(self.maps.settings_map):
            for conn in removed:
                if conn.flags & abi.CT_F_STATS and not conn.flags & abi.CT_F_CLOSE_SENT:
                    emit_event(self.emit_fd, aged_event(conn, now))
        return removed

    def _egress_now(self) -> dict[str, Any]:
        """Redirect verdicts per interface, assessed now in the instance's namespace."""
        atts = self.attachments()
        modes = {a.get("mode") for a in atts}
        try:
            with netns.inside(self.netns):
                return {e.ifname: e for e in assess(bool(modes) and modes <= {"generic"})}
        except OSError:
            return {}

    def ifindexes(self, names: Sequence[str]) -> list[int]:
        return _ifindexes(names, self.netns)

    def lost_xdp(self) -> list[str]:
        """Interfaces that no longer run this instance's program, each as a phrase ("b2
        has no XDP program"). Reads no map: a health check can ask every second."""
        prog_id = _pinned_prog_id(self.pin_dir)
        out = []
        for a in self.attachments():
            _mode, live_id = _xdp_state(a["ifname"], a.get("netns"))
            if not live_id or live_id != prog_id:
                out.append(lost_xdp_phrase(a["ifname"], live_id))
        return out

    def status(self) -> dict[str, Any]:
        from lbtui.control.lock import manager_lock as _ml

        state = read_state(self.name) or {}
        ifaces = []
        roles = {n: "client" for n in state.get("interfaces", [])}
        roles.update({n: "reply" for n in state.get("reply_interfaces", [])})
        prog_id = _pinned_prog_id(self.pin_dir)
        reasons = M.read_reasons(self.maps.reasons_map)
        egress = self._egress_now()
        for a in self.attachments():
            mode, live_id = _xdp_state(a["ifname"], a.get("netns"))
            e = egress.get(a["ifname"])
            ifaces.append({"ifname": a["ifname"], "role": roles.get(a["ifname"], "?"),
                           "ifindex": a.get("ifindex"), "xdp_mode": mode,
                           "prog_id": live_id, "ours": bool(live_id) and live_id == prog_id,
                           "redirect": e.redirect if e else False,
                           "redirect_why": e.why if e else "not found",
                           "reasons": reasons.get(a.get("ifindex") or -1, {})})
        tx = set(M.tx_ports(self.maps.tx_ports_map))
        egress_rows = [{"ifname": e.ifname, "redirect": e.ifindex in tx, "why": e.why}
                       for e in egress.values()]
        ms = self.maps
        fwd = rev = 0
        for _k, v in M.conntrack_reader(ms.conntrack_map).items():
            if v.flags & abi.CT_F_REPLY:
                rev += 1
            else:
                fwd += 1
        fill = {name: {"entries": M.count_entries(m),
                       "max_entries": m.max_entries}
                for name, m in (("listen", ms.listen_map), ("source_routes", ms.config_map),
                                ("sni_routes", ms.sni_map))}
        fill["conntrack"] = {"entries": fwd + rev, "flows": fwd,
                             "max_entries": ms.conntrack_map.max_entries}
        fill["maglev_groups"] = {
            "entries": groups_in_use(ms.listen_map, ms.config_map, ms.sni_map),
            "max_entries": group_capacity(ms.maglev_map)}
        holder = _ml(self.name).holder()
        counters = M.read_counters(ms.counters_map)
        return {
            "instance": self.name,
            "manager_pid": holder,
            "kept": bool(state.get("kept")) and holder is None,
            "config_path": str(self.config_path) if self.config_path else None,
            "pin_dir": str(self.pin_dir),
            "netns": self.netns,
            "prog_id": prog_id,
            "interfaces": ifaces,
            "egress": egress_rows,
            "local_addresses": M.local_addresses(self.maps.local_addrs_map),
            "maps": fill,
            "settings": {"stats": M.stats_enabled(ms.settings_map),
                         "connection_timeout": M.get_connection_timeout(ms.settings_map),
                         "syn_flood_rate": M.get_setting(ms.settings_map,
                                                         abi.SETTING_SYN_FLOOD_RATE)},
            "events_lost": counters.get("events_lost", 0),
            "counters": counters,
        }


# --- helpers ---------------------------------------------------------------------------


def _netns_names() -> list[str]:
    from pyroute2 import netns as pr_netns

    return list(pr_netns.listnetns())


def _ifindexes(names: Sequence[str], ns: str | None) -> list[int]:
    out, missing = [], []
    with netns.inside(ns):
        for n in names:
            try:
                out.append(socket.if_nametoindex(n))
            except OSError:
                missing.append(n)
    if missing:
        where = f" in network namespace {ns}" if ns else ""
        raise ValueError(f"unknown interface(s) {', '.join(missing)}{where} (check `ip link`)")
    return out


def _xdp_state(ifname: str, ns: str | None) -> tuple[str | None, int]:
    try:
        with netns.inside(ns):
            return xdp_state(socket.if_nametoindex(ifname))
    except OSError:
        return None, 0


def _check_interfaces(names: Sequence[str], ifindex: dict[str, int], ns: str | None,
                      ours: set[Any]) -> dict[str, str | None]:
    """Refuse interfaces that carry another tool's XDP program; returns the mode of our
    own earlier program per interface (to replace it in the same mode)."""
    modes: dict[str, str | None] = {}
    foreign = []
    with netns.inside(ns):
        for n in names:
            mode, prog_id = xdp_state(ifindex[n])
            if prog_id and prog_id not in ours:
                foreign.append(f"{n} (prog id {prog_id}, {mode})")
            modes[n] = mode if prog_id else None
    if foreign:
        raise InstanceError(
            "another XDP program is attached to " + ", ".join(foreign) + "; lbtui does not "
            "replace programs it did not attach. Remove it first (`ip link set dev IFACE "
            "xdp off`, in the right namespace) or choose other interfaces.")
    return modes


def _own_prog_ids(state: dict[str, Any], pinned: int | None) -> set[int]:
    """Ids of XDP programs this instance attached: pinned now, or recorded in its state."""
    ids = {pinned, *state.get("prog_ids", []),
           *(a.get("prog_id") for a in state.get("attachments", []))}
    return {i for i in ids if i}


def _detach_dropped(state: dict[str, Any], ifaces: Sequence[str], ours: set[int],
                    progress: Progress) -> None:
    """Interfaces an earlier run attached to but the config no longer lists: take our old
    program off them (it would keep balancing there, unmanaged)."""
    for a in state.get("attachments", []):
        if a["ifname"] in ifaces:
            continue
        _mode, live = _xdp_state(a["ifname"], a.get("netns"))
        if live in ours and loader.detach(a["ifname"], ns=a.get("netns"), only_prog_id=live):
            progress(f"XDP detached from {a['ifname']} (no longer in the config)")


def _warn_sizes(ms: M.MapSet, config: Config, progress: Progress) -> None:
    want = config.settings
    have = {"max_connections": ms.conntrack_map.max_entries,
            "max_routes": ms.config_map.max_entries,
            "max_sni_routes": ms.sni_map.max_entries,
            "ringbuf_size": ms.stats_ringbuf.max_entries,
            "maglev_table_size": table_size(ms.maglev_map),
            "max_maglev_groups": group_capacity(ms.maglev_map)}
    diff = [f"{k} {v} (config says {getattr(want, k)})" for k, v in have.items()
            if v != getattr(want, k)]
    if diff:
        progress("note: the pinned maps keep their sizes: " + ", ".join(diff) + "; run "
                 "`lbtui down` and start again to resize (drops established connections)")


def teardown(name: str, attachments: Sequence[dict[str, Any]] | None = None,
             held: FileLock | None = None) -> list[str]:
    """Detach this instance's XDP programs (only ours) and remove its pins, state, SNI
    names and lock files (those nobody else holds; ``held``: the caller's manager lock).
    Idempotent; returns what was done, one line per step."""
    done = []
    pin_dir = pin_dir_of(name)
    prog_id = _pinned_prog_id(pin_dir)
    state = read_state(name) or {}
    atts = list(attachments if attachments is not None else state.get("attachments", []))
    ids = _own_prog_ids({**state, "attachments": atts}, prog_id)
    for a in atts:
        mode, live = _xdp_state(a["ifname"], a.get("netns"))
        if live and live in ids:
            if loader.detach(a["ifname"], ns=a.get("netns"), only_prog_id=live):
                where = f" in {a['netns']}" if a.get("netns") else ""
                done.append(f"detached XDP (prog id {live}, {mode}) from {a['ifname']}{where}")
    done += [f"restored {x}" for x in hostnet.restore_sysctls(state.get("sysctls", []),
                                                              state.get("netns"))]
    if remove_inside(pin_dir, PIN_ROOT):
        done.append(f"removed pins {pin_dir}")
    with contextlib.suppress(OSError):
        pin_dir.parent.rmdir()  # the last instance leaves no empty /sys/fs/bpf/lbtui
    remove_inside(state_dir_of(name), state_root())
    if remove_state(name):
        done.append("removed state file")
    remove_inside(socket_path(name), run_dir())  # a serve killed with -9 leaves its socket
    _remove_lock_files(name, held)
    return done


def _remove_lock_files(name: str, held: FileLock | None) -> None:
    """Unlink lock files while holding them, so nobody is mid-way through using them."""
    from lbtui.control.lock import edit_lock

    for lock in (edit_lock(name), manager_lock(name)):
        if held is not None and lock.path == held.path:
            if held.held:
                remove_inside(lock.path, lock.path.parent)
            continue
        if lock.path.exists() and lock.try_acquire():
            remove_inside(lock.path, lock.path.parent)
            lock.release()


__all__ = ["PIN_ROOT", "DatapathError", "Instance", "InstanceError", "teardown"]
