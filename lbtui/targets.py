"""TargetGroup: 1..8 weighted targets, validated, with derived cumulative weights."""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lbtui import abi
from lbtui.addr import be_to_ip, be_to_port, ip_to_be, parse_port, port_to_be, target_problem

TOTAL_WEIGHT = 100


@dataclass(frozen=True, slots=True)
class TargetSpec:
    ip: str
    port: int
    weight: int

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True, slots=True)
class TargetProblem:
    """One broken rule: ``index`` of the target (None: the group), ``field`` (ip, port,
    weight; None: the target as a whole), and what is wrong."""

    index: int | None
    field: str | None
    message: str
    also: int | None = None      # a duplicate: the index of the first occurrence

    def where(self, loc: str = "targets") -> str:
        """``loc[index].field: message``, the location form config errors use."""
        at = loc if self.index is None else f"{loc}[{self.index}]"
        msg = self.message if self.also is None else f"{self.message} (also {loc}[{self.also}])"
        return f"{at}.{self.field}: {msg}" if self.field else f"{at}: {msg}"


def typename(value: Any) -> str:
    """How a TOML/Python value is named in error messages."""
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)


def _target_ip(raw: Any, strict: bool) -> tuple[str | None, str | None]:
    """(address, None) or (None, why not). Not ``strict`` (the API): an IPv4Address or
    the seed's host-order integer is fine too."""
    if isinstance(raw, ipaddress.IPv4Address) or (
            not strict and isinstance(raw, int) and not isinstance(raw, bool)):
        try:
            raw = str(ipaddress.IPv4Address(raw))
        except ValueError:
            return None, f"{raw!r} is not an IPv4 address (like 198.18.101.2)"
    if not isinstance(raw, str):
        return None, f"must be an IPv4 address string, not {typename(raw)}"
    try:
        addr = ipaddress.IPv4Address(raw.strip())
    except ValueError:
        return None, f"{raw!r} is not an IPv4 address (like 198.18.101.2)"
    problem = target_problem(addr)
    if problem:
        return None, problem
    return str(addr), None


def _bounded(raw: Any, lo: int, hi: int) -> tuple[int | None, str | None]:
    if isinstance(raw, bool) or not isinstance(raw, int):
        return None, f"must be an integer {lo}..{hi}, not {typename(raw)}"
    if not lo <= raw <= hi:
        return None, f"must be {lo}..{hi} (got {raw})"
    return raw, None


def check_targets(items: Sequence[Mapping[str, Any]], *, strict: bool = True
                  ) -> tuple[list[TargetSpec], list[TargetProblem]]:
    """The one set of target rules, for a group given as mappings with keys ip, port and
    (optional for a lone target) weight: 1..8 targets, each a usable IPv4 address and a
    port, integer weights 0..100 summing to 100, no target twice. Returns the valid
    targets and every problem (a group with problems must not be used). ``strict`` (a
    config file): values must have their TOML types; otherwise (the API) addresses may
    be integers and ports numeric strings."""
    problems: list[TargetProblem] = []
    if not items:
        return [], [TargetProblem(None, None, "needs at least 1 target")]
    if len(items) > abi.MAX_TARGETS:
        problems.append(TargetProblem(None, None,
                                      f"{len(items)} targets, at most {abi.MAX_TARGETS}"))
    specs: list[TargetSpec] = []
    seen: dict[tuple[str, int], int] = {}
    whole = True
    for i, item in enumerate(items):
        bad = len(problems)
        for key in ("ip", "port"):
            if key not in item:
                problems.append(TargetProblem(i, key, "is required"))
        ip, why = _target_ip(item["ip"], strict) if "ip" in item else (None, None)
        if why:
            problems.append(TargetProblem(i, "ip", why))
        raw_port = item.get("port")
        if not strict and isinstance(raw_port, str) and raw_port.strip().isdigit():
            raw_port = int(raw_port.strip())
        port, why = _bounded(raw_port, 1, 65535) if "port" in item else (None, None)
        if why:
            problems.append(TargetProblem(i, "port", why))
        if "weight" in item and item["weight"] is not None:
            weight, why = _bounded(item["weight"], 0, TOTAL_WEIGHT)
            if why:
                problems.append(TargetProblem(i, "weight", why))
        elif len(items) == 1:
            weight = TOTAL_WEIGHT
        else:
            weight = None
            problems.append(TargetProblem(i, "weight", "is required when a group has more "
                                                       "than one target"))
        if len(problems) > bad or ip is None or port is None or weight is None:
            whole = False
            continue
        if (ip, port) in seen:
            problems.append(TargetProblem(i, None, f"{ip}:{port} is listed twice",
                                          also=seen[ip, port]))
            whole = False
            continue
        seen[ip, port] = i
        specs.append(TargetSpec(ip, port, weight))
    if whole and specs:
        total = sum(t.weight for t in specs)
        if total != TOTAL_WEIGHT:
            problems.append(TargetProblem(None, None, f"weights sum to {total}, must sum "
                                                      f"to {TOTAL_WEIGHT}"))
    return specs, problems


def _as_mapping(item: Any, index: int) -> Mapping[str, Any]:
    """A target given as (ip, port[, weight]), a mapping, a TargetSpec or "ip:port"."""
    if isinstance(item, TargetSpec):
        return {"ip": item.ip, "port": item.port, "weight": item.weight}
    if isinstance(item, Mapping):
        return item
    if isinstance(item, Sequence) and not isinstance(item, str) and len(item) in (2, 3):
        return {"ip": item[0], "port": item[1], "weight": item[2] if len(item) == 3 else None}
    if isinstance(item, str) and ":" in item:
        ip, _, port = item.rpartition(":")
        try:
            return {"ip": ip, "port": parse_port(port, f"targets[{index}].port")}
        except ValueError as e:
            raise ValueError(str(e)) from None
    raise ValueError(f"targets[{index}]: expected (ip, port, weight), "
                     f"{{'ip', 'port', 'weight'}} or 'ip:port', got {item!r}")


@dataclass(frozen=True, slots=True)
class TargetGroup:
    """Immutable weighted target group. Build it with ``TargetGroup.of(...)``."""

    targets: tuple[TargetSpec, ...]

    @property
    def cumulative_weights(self) -> tuple[int, ...]:
        total, out = 0, []
        for t in self.targets:
            total += t.weight
            out.append(total)
        return tuple(out)

    @classmethod
    def of(cls, targets: Iterable[Any]) -> TargetGroup:
        """Validate (``check_targets``) and build. Accepts (ip, port, weight) tuples,
        mappings, TargetSpecs, or "ip:port" strings; a group of one target may omit its
        weight (it gets 100). ValueError names the first problem."""
        items = [_as_mapping(item, i) for i, item in enumerate(targets)]
        specs, problems = check_targets(items, strict=False)
        if problems:
            raise ValueError(problems[0].where())
        return cls(tuple(specs))

    @classmethod
    def single(cls, ip: Any, port: Any) -> TargetGroup:
        return cls.of([(ip, port, TOTAL_WEIGHT)])

    def with_weight(self, ip: str, port: int, weight: int) -> TargetGroup:
        """A copy with one target's weight changed (validated: the sum must stay 100)."""
        if not any(t.ip == ip and t.port == port for t in self.targets):
            raise ValueError(f"target {ip}:{port} is not in this group")
        return TargetGroup.of(
            [(t.ip, t.port, weight if (t.ip, t.port) == (ip, port) else t.weight)
             for t in self.targets])

    def in_rotation(self, out: Collection[str]) -> TargetGroup:
        """What the datapath balances over when the targets in ``out`` ("ip:port") are
        out of rotation: their weight 0, the others keep theirs (so they share in the same
        proportions). If that would leave no weight at all the group is kept whole: a
        group whose every target fails its checks still gets its traffic (fail open)."""
        if not any(str(t) in out for t in self.targets):
            return self
        kept = tuple(TargetSpec(t.ip, t.port, 0) if str(t) in out else t
                     for t in self.targets)
        return TargetGroup(kept) if any(t.weight for t in kept) else self

    def to_route(self, flags: int = 0, table: int | None = None) -> abi.Route:
        """The route value; with ``table`` (a maglev map index) the group picks with
        that Maglev lookup table (ROUTE_F_MAGLEV)."""
        if table is not None:
            flags |= abi.ROUTE_F_MAGLEV
        route = abi.Route(target_count=len(self.targets), flags=flags, table=table or 0)
        for slot, (t, cum) in enumerate(zip(self.targets, self.cumulative_weights, strict=True)):
            route.targets[slot] = abi.Target(ip_to_be(t.ip), port_to_be(t.port), cum)
        return route

    def to_list(self) -> list[dict[str, Any]]:
        return [{"ip": t.ip, "port": t.port, "weight": t.weight} for t in self.targets]

    def __str__(self) -> str:
        return ", ".join(f"{t} w{t.weight}" for t in self.targets)


@dataclass(frozen=True, slots=True)
class RouteRecord:
    """A decoded weighted route as read from a map."""

    target_count: int
    flags: int
    targets: tuple[TargetSpec, ...]
    cumulative_weights: tuple[int, ...]
    table: int = 0               # ROUTE_F_MAGLEV: the maglev map index of its table

    @property
    def group(self) -> TargetGroup:
        return TargetGroup(self.targets)

    @property
    def hash(self) -> str:
        """How the group picks a target: "maglev" or "weighted"."""
        return "maglev" if self.flags & abi.ROUTE_F_MAGLEV else "weighted"

    def to_dict(self) -> dict[str, Any]:
        return {"target_count": self.target_count, "flags": self.flags, "hash": self.hash,
                "targets": [{"ip": t.ip, "port": t.port, "weight": t.weight}
                            for t in self.targets],
                "cumulative_weights": list(self.cumulative_weights)}


def decode_route(route: abi.Route) -> RouteRecord:
    n = min(route.target_count, abi.MAX_TARGETS)
    specs, cums, prev = [], [], 0
    for i in range(n):
        t = route.targets[i]
        specs.append(TargetSpec(be_to_ip(t.ip), be_to_port(t.port), t.cumulative_weight - prev))
        cums.append(t.cumulative_weight)
        prev = t.cumulative_weight
    return RouteRecord(n, route.flags, tuple(specs), tuple(cums), route.table)
