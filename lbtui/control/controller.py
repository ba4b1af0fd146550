"""Run-time edits: the one place ctl and the console change a running instance.

Every edit runs the same steps under the instance's edit lock:
1. re-read the config file (another process may have edited it) and apply the change to a
   copy; validate the result with the file's own rules (ValueError: nothing changed);
2. make the maps match it (``apply.sync``: all entries or none, rolled back on failure);
3. write the file atomically with tomlkit (comments kept); if that fails, roll the maps
   back too.
So the maps and the file never disagree, and a restart reproduces the maps exactly.
"""

from __future__ import annotations

import copy
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lbtui import maps as M
from lbtui.addr import parse_cidr
from lbtui.control import apply
from lbtui.control.config import (
    Config,
    ConfigError,
    ListenerCfg,
    SniRouteCfg,
    SourceRouteCfg,
    TargetCfg,
    canonical_cidr,
    group_of,
    load_config,
    targets_of,
    validate,
)
from lbtui.control.configfile import save_config
from lbtui.control.instance import Instance
from lbtui.control.lock import editing, manager_lock
from lbtui.control.state import read_state
from lbtui.sni import normalize_hostname
from lbtui.targets import TOTAL_WEIGHT, TargetGroup

KINDS = ("listener", "source", "sni")


@dataclass(frozen=True)
class GroupRef:
    """An editable target group: kind listener|source|sni, key port|cidr|hostname."""

    kind: str
    key: Any
    group: TargetGroup
    label: str


def redistribute(group: TargetGroup, ip: str, port: int, weight: int) -> TargetGroup:
    """``group`` with one target set to ``weight`` and the remaining weight spread over
    the others in proportion to their current weights (largest-remainder rounding, so the
    sum stays 100). Drained (weight 0) targets stay drained."""
    if isinstance(weight, bool) or not isinstance(weight, int) or not (
            0 <= weight <= TOTAL_WEIGHT):
        raise ValueError(f"weight {weight!r} must be an integer 0..{TOTAL_WEIGHT}")
    idx = next((i for i, t in enumerate(group.targets) if (t.ip, t.port) == (ip, port)), None)
    if idx is None:
        members = ", ".join(str(t) for t in group.targets)
        raise ValueError(f"target {ip}:{port} is not in this group ({members})")
    others = [i for i in range(len(group.targets)) if i != idx]
    rest = TOTAL_WEIGHT - weight
    if not others:
        if weight != TOTAL_WEIGHT:
            raise ValueError(f"{ip}:{port} is the group's only target: its weight must stay "
                             f"{TOTAL_WEIGHT} (add another target first)")
        return group
    base = [group.targets[i].weight for i in others]
    total = sum(base)
    if total == 0 and rest > 0:
        raise ValueError(f"every other target is drained (weight 0), so {ip}:{port} must "
                         f"keep weight {TOTAL_WEIGHT}; set the whole group to change that")
    exact = [rest * b / total if total else 0.0 for b in base]
    share = [int(x) for x in exact]
    left = rest - sum(share)
    for j in sorted(range(len(others)), key=lambda j: (share[j] - exact[j], j))[:left]:
        share[j] += 1
    weights = {idx: weight, **dict(zip(others, share, strict=True))}
    return TargetGroup.of([(t.ip, t.port, weights[i]) for i, t in enumerate(group.targets)])


class Controller:
    def __init__(self, instance: Instance, config_path: Path | None = None) -> None:
        self.instance = instance
        self.config_path = Path(config_path) if config_path else instance.config_path
        if instance.config is not None:
            self.config: Config = instance.config
        elif self.config_path is not None:
            self.config = load_config(self.config_path)
        else:
            raise ValueError(f"instance {instance.name!r}: no config file known; pass "
                             "config_path (serve records it in its state file)")

    # --- reading -------------------------------------------------------------------

    def refresh(self) -> Config:
        """Re-read the config file (edits by other processes)."""
        if self.config_path is not None and self.config_path.exists():
            self.config = load_config(self.config_path)
            self.instance.config = self.config
        return self.config

    def groups(self) -> list[GroupRef]:
        c = self.config
        out = [GroupRef("listener", x.port, group_of(x.targets),
                        f"listener :{x.port}/{x.protocol}" + (" sni" if x.sni else ""))
               for x in c.listeners]
        out += [GroupRef("source", r.cidr, group_of(r.targets), f"source {r.cidr}")
                for r in c.source_routes]
        out += [GroupRef("sni", r.hostname, group_of(r.targets), f"sni {r.hostname}")
                for r in c.sni_routes]
        return out

    def group(self, kind: str, key: Any) -> TargetGroup:
        return group_of(self._targets_holder(self.config, kind, key).targets)

    # --- the edit pipeline -----------------------------------------------------------

    def _edit(self, change: Callable[[Config], None]) -> None:
        with editing(self.instance.name):
            try:
                old = self.refresh()
            except ConfigError as e:
                raise ValueError(f"the config file is invalid, fix it first: {e}") from None
            new = copy.deepcopy(old)
            change(new)
            problems = validate(new)
            if problems:
                raise ValueError("; ".join(problems))
            txn = apply.sync(self.instance.maps, new, self.instance.ifindexes)
            if self.config_path is not None:
                try:
                    save_config(new, self.config_path, old=old)
                except BaseException:
                    txn.rollback()
                    raise
            new.path = self.config_path
            self.config = new
            self.instance.config = new
        if _manager_relevant(old) != _manager_relevant(new):
            if self.instance.managed:          # a console that runs the datapath itself
                self.instance.sync_splicers()
            else:
                signal_serve(self.instance.name)

    @staticmethod
    def _targets_holder(c: Config, kind: str, key: Any) -> Any:
        if kind == "listener":
            found: Any = c.listener(_port(key))
            what = f"no listener on port {key}"
        elif kind == "source":
            found = c.source_route(str(parse_cidr(key)))
            what = f"no source route {key}"
        elif kind == "sni":
            found = c.sni_route(normalize_hostname(key).decode())
            what = f"no SNI route for {key}"
        else:
            raise ValueError(f"kind {kind!r}: use one of {', '.join(KINDS)}")
        if found is None:
            raise ValueError(what)
        return found

    # --- groups and weights --------------------------------------------------------

    def set_group(self, kind: str, key: Any, group: TargetGroup) -> None:
        _require_group(group)
        self._edit(lambda c: setattr(self._targets_holder(c, kind, key), "targets",
                                     targets_of(group)))

    def set_weight(self, kind: str, key: Any, ip: str, port: int, weight: int) -> None:
        """One target to ``weight`` (0 drains it), the others rescaled proportionally."""
        def change(c: Config) -> None:
            holder = self._targets_holder(c, kind, key)
            holder.targets = targets_of(redistribute(group_of(holder.targets), ip, port,
                                                     weight))
        self._edit(change)

    # --- listeners and routes --------------------------------------------------------

    def add_listener(self, listener: ListenerCfg) -> None:
        def change(c: Config) -> None:
            if c.listener(listener.port) is not None:
                raise ValueError(f"a listener on port {listener.port} exists; remove it or "
                                 "edit its targets")
            c.listeners.append(copy.deepcopy(listener))
        self._edit(change)

    def remove_listener(self, port: int) -> None:
        def change(c: Config) -> None:
            found = self._targets_holder(c, "listener", port)
            c.listeners.remove(found)
        self._edit(change)

    def add_source_route(self, cidr: str, group: TargetGroup, stats: bool = True) -> None:
        net = str(parse_cidr(cidr))
        _require_group(group)

        def change(c: Config) -> None:
            if c.source_route(net) is not None:
                raise ValueError(f"a source route for {net} exists; remove it or edit its "
                                 "targets")
            c.source_routes.append(SourceRouteCfg(net, targets_of(group), stats))
        self._edit(change)

    def remove_source_route(self, cidr: str) -> None:
        def change(c: Config) -> None:
            found = self._targets_holder(c, "source", cidr)
            c.source_routes = [r for r in c.source_routes
                               if canonical_cidr(r.cidr) != canonical_cidr(found.cidr)]
        self._edit(change)

    def add_sni_route(self, hostname: str, group: TargetGroup) -> None:
        name = normalize_hostname(hostname).decode()
        _require_group(group)

        def change(c: Config) -> None:
            if c.sni_route(name) is not None:
                raise ValueError(f"an SNI route for {name} exists; remove it or edit its "
                                 "targets")
            c.sni_routes.append(SniRouteCfg(name, targets_of(group)))
        self._edit(change)

    def remove_sni_route(self, hostname: str) -> None:
        def change(c: Config) -> None:
            found = self._targets_holder(c, "sni", hostname)
            c.sni_routes.remove(found)
        self._edit(change)

    # --- connections and settings ----------------------------------------------------

    def delete_connection(self, five_tuple: Any) -> bool:
        return M.delete_connection(self.instance.maps.conntrack_map, five_tuple)

    def set_stats(self, enabled: bool) -> None:
        if not isinstance(enabled, bool):
            raise ValueError(f"stats: {enabled!r} must be true or false")
        self._edit(lambda c: setattr(c.settings, "stats", enabled))

    def set_connection_timeout(self, seconds: int) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, int):
            raise ValueError(f"connection_timeout: {seconds!r} must be an integer")
        self._edit(lambda c: setattr(c.settings, "connection_timeout", seconds))

    def set_sweep_interval(self, seconds: float) -> None:
        """Written to the file; a running serve picks it up on reload (SIGHUP)."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise ValueError(f"sweep_interval: {seconds!r} must be a number of seconds")
        self._edit(lambda c: setattr(c.settings, "sweep_interval", float(seconds)))


def _manager_relevant(c: Config) -> tuple[Any, ...]:
    """What the managing process itself acts on (the maps it leaves to whoever edits):
    the SNI listeners it runs splicers for, its sweep interval."""
    return (sorted((x.port, x.address) for x in c.listeners if x.sni),
            c.settings.sweep_interval)


def signal_serve(instance: str, sig: int = signal.SIGHUP) -> int | None:
    """Ask the instance's ``serve`` to reload. The pid is the manager lock's holder as the
    kernel lists it (a pid in the state file may be stale: a dead serve's, reused since),
    and only a serve is signalled (it recorded itself with that very pid); a console
    manager may not expect signals. Returns the pid signalled, if any."""
    pid = manager_lock(instance).holder()
    if not pid or pid < 0 or pid == os.getpid():
        return None
    state = read_state(instance) or {}
    if state.get("manager") != "serve" or state.get("pid") != pid:
        return None
    os.kill(pid, sig)
    return pid


def _port(key: Any) -> int:
    from lbtui.addr import parse_port

    return parse_port(key, "listener port")


def _require_group(group: Any) -> None:
    if not isinstance(group, TargetGroup):
        raise ValueError("targets: expected a TargetGroup (TargetGroup.of([...]))")


__all__ = ["KINDS", "Controller", "GroupRef", "TargetCfg", "redistribute"]
