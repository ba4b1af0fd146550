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

import contextlib
import copy
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from lbtui import maps as M
from lbtui.control.changes import audit
from lbtui.control.config import ConfigError, load_config, to_dict, validate
from lbtui.control.configfile import save_config
from lbtui.control.instance import Instance
from lbtui.control.lock import editing, manager_lock
from lbtui.control.state import read_state, write_applied
from lbtui.errors import NotFound
from lbtui.files import atomic_write
from lbtui.maps.transaction import Transaction
from lbtui.model import (
    HASHES,
    Config,
    GroupKey,
    GroupKind,
    Listener,
    Route,
    SniRoute,
    SourceRoute,
)
from lbtui.targets import TOTAL_WEIGHT, TargetGroup

R = TypeVar("R", bound=Route)


@dataclass(frozen=True)
class GroupRef:
    """An editable target group, named by its key."""

    key: GroupKey
    group: TargetGroup
    detail: str = ""     # a listener's protocol and flags


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
        raise NotFound(f"target {ip}:{port} is not in this group ({members})")
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


class Control(Protocol):
    """What clients of the control plane (ctl, the console) may do: each call is one
    transaction (the maps and the config file change together, or nothing changes);
    ValueError: refused, nothing changed; RuntimeError/OSError: a map update failed and
    was rolled back."""

    @property
    def config(self) -> Config: ...

    def groups(self) -> list[GroupRef]: ...

    def set_weights(self, key: GroupKey, group: TargetGroup) -> None: ...

    def set_weight(self, key: GroupKey, target: str, weight: int) -> None: ...

    def drain(self, key: GroupKey, target: str) -> int: ...

    def undrain(self, key: GroupKey, target: str, weight: int) -> None: ...

    def set_hash(self, key: GroupKey, hash_name: str) -> None: ...

    def add_listener(self, listener: Listener) -> None: ...

    def update_listener(self, port: int, listener: Listener) -> None: ...

    def remove_listener(self, port: int) -> None: ...

    def add_source_route(self, route: SourceRoute) -> None: ...

    def update_source_route(self, cidr: str, route: SourceRoute) -> None: ...

    def rename_source_route(self, cidr: str, new_cidr: str) -> None: ...

    def remove_source_route(self, cidr: str) -> None: ...

    def add_sni_route(self, route: SniRoute) -> None: ...

    def update_sni_route(self, hostname: str, route: SniRoute) -> None: ...

    def rename_sni_route(self, hostname: str, new_hostname: str) -> None: ...

    def remove_sni_route(self, hostname: str) -> None: ...

    def delete_connection(self, five_tuple: Any) -> bool: ...

    def set_stats(self, enabled: bool) -> None: ...

    def set_connection_timeout(self, seconds: int) -> None: ...


def parse_target(target: str) -> tuple[str, int]:
    """("ip", port) of an "ip:port" target."""
    from lbtui.addr import parse_ipv4, parse_port

    ip, sep, port = str(target).rpartition(":")
    if not sep:
        raise ValueError(f"target {target!r}: expected IP:PORT like 198.18.101.2:8080")
    return str(parse_ipv4(ip, "target ip")), parse_port(port, "target port")


class PendingEdit:
    """An edit validated under the instance's edit lock, not applied yet (see
    ``Controller.begin``). ``commit`` makes the maps and the config file say it (the maps
    rolled back if the file write fails); ``undo`` takes a committed edit back, maps and
    file, for a cluster edit that failed on a later node; ``release`` drops the lock;
    ``announce`` (after the release) writes the audit trail and tells the manager."""

    def __init__(self, controller: Controller, old: Config, new: Config,
                 lock: contextlib.AbstractContextManager[None]) -> None:
        self.controller = controller
        self.old = old
        self.new = new
        self._lock: contextlib.AbstractContextManager[None] | None = lock
        self._txn: Transaction | None = None
        self._file_before: str | None = None
        self.committed = False

    @property
    def instance(self) -> Instance:
        return self.controller.instance

    def commit(self) -> None:
        c = self.controller
        path = c.config_path
        if path is not None:
            # The exact text, so an undo restores comments and layout byte for byte.
            self._file_before = path.read_text(encoding="utf-8")
        txn = self.instance.apply(self.new)
        if path is not None:
            try:
                save_config(self.new, path, old=self.old)
            except BaseException:
                txn.rollback()
                write_applied(self.instance.name, to_dict(self.old))
                raise
        self._txn = txn
        self.new.path = path
        c.config = self.new
        self.instance.config = self.new
        self.committed = True

    def undo(self) -> None:
        """Back to the config before ``commit``: the maps' previous entries, the file's
        previous text, the applied record. Raises if a step failed (the others are still
        tried)."""
        if not self.committed:
            return
        problems: list[str] = []
        c = self.controller
        if self._txn is not None:
            try:
                self._txn.rollback()
            except (RuntimeError, OSError) as e:
                problems.append(f"maps: {e}")
        if c.config_path is not None and self._file_before is not None:
            try:
                atomic_write(c.config_path, self._file_before, follow_symlinks=True)
            except OSError as e:
                problems.append(f"config file {c.config_path}: {e}")
        try:
            write_applied(self.instance.name, to_dict(self.old))
        except OSError as e:
            problems.append(f"applied record: {e}")
        self.old.path = c.config_path
        c.config = self.old
        self.instance.config = self.old
        self.committed = False
        if problems:
            raise RuntimeError("; ".join(problems))

    def release(self) -> None:
        if self._lock is not None:
            lock, self._lock = self._lock, None
            lock.__exit__(None, None, None)

    def announce(self) -> None:
        """The audit trail and the manager's own follow-up, for a committed edit."""
        if not self.committed:
            return
        c, old, new = self.controller, self.old, self.new
        audit(c.instance, c.source, old, new)
        if _manager_relevant(old) != _manager_relevant(new):
            if c.instance.managed:          # a console that runs the datapath itself
                c.instance.sync_splicers()
            else:
                signal_serve(c.instance.name)


class Edits:
    """Every run-time edit, each one call to ``_edit`` with a function that changes a
    copy of the config; ``Controller`` runs it on one instance, ``ClusterController``
    (``lbtui.control.cluster``) on every node of a cluster, all or nothing. Reads go to
    ``config``: the file's config as last read."""

    config: Config

    def _edit(self, change: Callable[[Config], None]) -> None:
        raise NotImplementedError

    # --- reading -------------------------------------------------------------------

    def groups(self) -> list[GroupRef]:
        c = self.config
        out = [GroupRef(x.key, x.group, x.protocol + (" sni" if x.sni else ""))
               for x in c.listeners]
        out += [GroupRef(r.key, r.group) for r in c.source_routes]
        out += [GroupRef(r.key, r.group) for r in c.sni_routes]
        return out

    def group(self, key: GroupKey) -> TargetGroup:
        return _found(self.config, key).group

    # --- groups and weights --------------------------------------------------------

    def set_weights(self, key: GroupKey, group: TargetGroup) -> None:
        """Replace a group's targets and weights."""
        _require_group(group)
        self._edit(lambda c: setattr(_found(c, key), "group", group))

    def set_weight(self, key: GroupKey, target: str, weight: int) -> None:
        """One target to ``weight`` (0 drains it), the others rescaled proportionally."""
        ip, port = parse_target(target)

        def change(c: Config) -> None:
            holder = _found(c, key)
            holder.group = redistribute(holder.group, ip, port, weight)
        self._edit(change)

    def drain(self, key: GroupKey, target: str) -> int:
        """Weight 0 for ``target``: no new connections (established ones stay). Returns
        the weight it had, for ``undrain``."""
        ip, port = parse_target(target)
        before = next((t.weight for t in self.group(key).targets
                       if (t.ip, t.port) == (ip, port)), None)
        if before is None:
            raise NotFound(f"target {target} is not in {key}")
        self.set_weight(key, target, 0)
        return before

    def undrain(self, key: GroupKey, target: str, weight: int) -> None:
        """Give a drained target its weight back (the others rescaled)."""
        self.set_weight(key, target, weight)

    def set_hash(self, key: GroupKey, hash_name: str) -> None:
        """How the group picks a target for new connections: "weighted" or "maglev"
        (established connections keep theirs)."""
        if hash_name not in HASHES:
            raise ValueError(f"hash {hash_name!r}: use one of {', '.join(HASHES)}")
        self._edit(lambda c: setattr(_found(c, key), "hash", hash_name))

    # --- listeners and routes --------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        _require_group(listener.group)

        self._edit(lambda c: _put(c, c.listeners, copy.deepcopy(listener)))

    def update_listener(self, port: int, listener: Listener) -> None:
        """Replace the listener on ``port`` (its port may change too) in one transaction:
        the maps go from the old entries to the new ones with puts before deletes, so the
        port is never unbalanced in between."""
        _require_group(listener.group)

        self._edit(lambda c: _put(c, c.listeners, copy.deepcopy(listener),
                                  _listener(c, port)))

    def remove_listener(self, port: int) -> None:
        self._edit(lambda c: c.listeners.remove(_listener(c, port)))

    def add_source_route(self, route: SourceRoute) -> None:
        _require_group(route.group)
        route = replace(route, cidr=_strict_cidr(route.cidr))
        self._edit(lambda c: _put(c, c.source_routes, route))

    def update_source_route(self, cidr: str, route: SourceRoute) -> None:
        """Replace the source route for ``cidr`` (renamed, new targets or both), in one
        transaction."""
        _require_group(route.group)
        route = replace(route, cidr=_strict_cidr(route.cidr))
        self._edit(lambda c: _put(c, c.source_routes, route, _source_route(c, cidr)))

    def rename_source_route(self, cidr: str, new_cidr: str) -> None:
        old = _source_route(self.config, cidr)
        self.update_source_route(cidr, replace(old, cidr=new_cidr))

    def remove_source_route(self, cidr: str) -> None:
        self._edit(lambda c: c.source_routes.remove(_source_route(c, cidr)))

    def add_sni_route(self, route: SniRoute) -> None:
        _require_group(route.group)
        route = replace(route, hostname=str(route.key.key))
        self._edit(lambda c: _put(c, c.sni_routes, route))

    def update_sni_route(self, hostname: str, route: SniRoute) -> None:
        """Replace the SNI route for ``hostname`` (renamed, new targets or both), in one
        transaction: the new name is routed before the old one goes."""
        _require_group(route.group)
        route = replace(route, hostname=str(route.key.key))
        self._edit(lambda c: _put(c, c.sni_routes, route, _sni_route(c, hostname)))

    def rename_sni_route(self, hostname: str, new_hostname: str) -> None:
        old = _sni_route(self.config, hostname)
        self.update_sni_route(hostname, replace(old, hostname=new_hostname))

    def remove_sni_route(self, hostname: str) -> None:
        self._edit(lambda c: c.sni_routes.remove(_sni_route(c, hostname)))

    # --- settings ------------------------------------------------------------------

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


class Controller(Edits):
    """The one place a running instance is changed (see the module docstring). ``source``
    names who edits (ctl, console, reload) in the audit trail."""

    def __init__(self, instance: Instance, config_path: Path | None = None,
                 source: str = "ctl") -> None:
        self.instance = instance
        self.source = source
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

    # --- the edit pipeline -----------------------------------------------------------

    def _edit(self, change: Callable[[Config], None]) -> None:
        """One transaction: ``change`` edits a copy of the file's current config."""
        pending = self.begin(change)
        try:
            pending.commit()
        finally:
            pending.release()
        pending.announce()

    def begin(self, change: Callable[[Config], None], lock_timeout: float = 10.0
              ) -> PendingEdit:
        """Phase one of an edit: take the edit lock, re-read the file, apply ``change`` to
        a copy and validate it. Nothing is changed yet; the caller commits (or not) and
        always releases. A cluster edit (``lbtui.control.cluster``) runs this on every
        node before it commits any, so a refusal anywhere changes nothing anywhere."""
        lock = editing(self.instance.name, lock_timeout)
        lock.__enter__()
        try:
            try:
                old = self.refresh()
            except ConfigError as e:
                raise ValueError(f"the config file is invalid, fix it first: {e}") from None
            new = copy.deepcopy(old)
            change(new)
            problems = validate(new)
            if problems:
                raise ValueError("; ".join(problems))
        except BaseException:
            lock.__exit__(None, None, None)
            raise
        return PendingEdit(self, old, new, lock)

    # --- connections -----------------------------------------------------------------

    def delete_connection(self, five_tuple: Any) -> bool:
        return M.delete_connection(self.instance.maps.conntrack_map, five_tuple)


def _keep_hash(new: R, old: R) -> R:
    """An update that does not say how its group hashes (hash None) keeps the old
    route's choice: editors that do not show the option never reset it."""
    return replace(new, hash=old.hash) if new.hash is None else new


def _strict_cidr(cidr: str) -> str:
    """The canonical prefix; host bits set are refused (a typo, not a wider route)."""
    from lbtui.addr import parse_cidr

    return str(parse_cidr(cidr))


def _found(c: Config, key: GroupKey) -> Route:
    """The listener or route ``key`` names in ``c``; NotFound (a ValueError) if none."""
    return _must(c.route(key), key)


def _listener(c: Config, port: int) -> Listener:
    return _must(c.listener(port), GroupKey.of(GroupKind.LISTENER, port))


def _source_route(c: Config, cidr: str) -> SourceRoute:
    return _must(c.source_route(cidr), GroupKey.of(GroupKind.SOURCE, cidr))


def _sni_route(c: Config, hostname: str) -> SniRoute:
    return _must(c.sni_route(hostname), GroupKey.of(GroupKind.SNI, hostname))


def _put(c: Config, routes: list[R], new: R, old: R | None = None) -> None:
    """Add ``new`` to ``routes`` (one of ``c``'s lists), or put it in ``old``'s place;
    refused when another listener or route already has its key."""
    if (old is None or new.key != old.key) and c.route(new.key) is not None:
        what = {GroupKind.LISTENER: "a listener on port", GroupKind.SOURCE: "a source route for",
                GroupKind.SNI: "an SNI route for"}[new.key.kind]
        raise ValueError(f"{what} {new.key.key} exists" +
                         ("; edit it instead" if old is None else ""))
    if old is None:
        routes.append(new)
    else:
        routes[routes.index(old)] = _keep_hash(new, old)


def _must(found: R | None, key: GroupKey) -> R:
    if found is None:
        what = {GroupKind.LISTENER: f"no listener on port {key.key}",
                GroupKind.SOURCE: f"no source route {key.key}",
                GroupKind.SNI: f"no SNI route for {key.key}"}[key.kind]
        raise NotFound(what)
    return found


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


def _require_group(group: Any) -> None:
    if not isinstance(group, TargetGroup):
        raise ValueError("targets: expected a TargetGroup (TargetGroup.of([...]))")


__all__ = ["Control", "Controller", "GroupRef", "PendingEdit", "parse_target",
           "redistribute"]
