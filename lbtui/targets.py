"""TargetGroup: 1..8 weighted targets, validated, with derived cumulative weights."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lbtui import abi
from lbtui.addr import (
    be_to_ip,
    be_to_port,
    ip_to_be,
    parse_ipv4,
    parse_port,
    port_to_be,
    target_problem,
)

TOTAL_WEIGHT = 100


@dataclass(frozen=True, slots=True)
class TargetSpec:
    ip: str
    port: int
    weight: int

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


def _coerce(item: Any, index: int, single: bool) -> tuple[Any, Any, Any]:
    """(ip, port, weight) from a tuple, a mapping or a TargetSpec; weight None if omitted."""
    if isinstance(item, TargetSpec):
        return item.ip, item.port, item.weight
    if isinstance(item, Mapping):
        return item.get("ip"), item.get("port"), item.get("weight")
    if isinstance(item, Sequence) and not isinstance(item, str) and len(item) in (2, 3):
        return item[0], item[1], item[2] if len(item) == 3 else None
    if isinstance(item, str) and ":" in item:
        ip, _, port = item.rpartition(":")
        return ip, port, None
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
        """Validate and build. Accepts (ip, port, weight) tuples, mappings, TargetSpecs, or
        "ip:port" strings; a group of one target may omit its weight (it gets 100)."""
        items = list(targets)
        if not items:
            raise ValueError("targets: a group needs at least 1 target")
        if len(items) > abi.MAX_TARGETS:
            raise ValueError(f"targets: {len(items)} given, at most {abi.MAX_TARGETS}")
        single = len(items) == 1
        specs: list[TargetSpec] = []
        seen: set[tuple[str, int]] = set()
        for i, item in enumerate(items):
            ip, port, weight = _coerce(item, i, single)
            addr = parse_ipv4(ip, f"targets[{i}].ip")
            problem = target_problem(addr)
            if problem:
                raise ValueError(f"targets[{i}].ip: {problem}")
            p = parse_port(port, f"targets[{i}].port")
            if weight is None:
                if not single:
                    raise ValueError(f"targets[{i}].weight: required when a group has "
                                     "more than one target")
                weight = TOTAL_WEIGHT
            if isinstance(weight, bool) or not isinstance(weight, int):
                raise ValueError(f"targets[{i}].weight: {weight!r} must be an integer 0..100")
            if not 0 <= weight <= TOTAL_WEIGHT:
                raise ValueError(f"targets[{i}].weight: {weight} must be 0..100")
            if (str(addr), p) in seen:
                raise ValueError(f"targets[{i}]: {addr}:{p} is listed twice")
            seen.add((str(addr), p))
            specs.append(TargetSpec(str(addr), p, weight))
        total = sum(s.weight for s in specs)
        if total != TOTAL_WEIGHT:
            raise ValueError(f"weights: sum to {total}, must sum to {TOTAL_WEIGHT}")
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

    def to_route(self, flags: int = 0) -> abi.Route:
        route = abi.Route(target_count=len(self.targets), flags=flags)
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

    @property
    def group(self) -> TargetGroup:
        return TargetGroup(self.targets)

    def to_dict(self) -> dict[str, Any]:
        return {"target_count": self.target_count, "flags": self.flags,
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
    return RouteRecord(n, route.flags, tuple(specs), tuple(cums))
