"""TargetGroup validation: 1..8 targets, weights 0..100 summing to 100, clear errors."""

from __future__ import annotations

import dataclasses

import pytest

from lbtui import abi
from lbtui.targets import TargetGroup, TargetSpec, decode_route

T1, T2, T3 = "198.18.101.2", "198.18.101.3", "198.18.101.4"


def test_single_target_may_omit_its_weight_and_gets_100() -> None:
    for spec in ([(T1, 8080)], [{"ip": T1, "port": 8080}], [f"{T1}:8080"]):
        g = TargetGroup.of(spec)
        assert g.targets == (TargetSpec(T1, 8080, 100),)
        assert g.cumulative_weights == (100,)
    assert TargetGroup.single(T1, 8080) == TargetGroup.of([(T1, 8080)])


def test_cumulative_weights_are_running_sums() -> None:
    g = TargetGroup.of([(T1, 80, 50), (T2, 80, 0), (T3, 80, 30), ("198.18.101.5", 80, 20)])
    assert g.cumulative_weights == (50, 50, 80, 100)


def test_eight_targets_are_allowed_nine_are_not() -> None:
    eight = [(f"198.18.101.{i}", 80, w) for i, w in
             zip(range(2, 10), (30, 10, 10, 10, 10, 10, 10, 10), strict=True)]
    assert len(TargetGroup.of(eight).targets) == 8
    with pytest.raises(ValueError, match="9 targets, at most 8"):
        TargetGroup.of([*eight[:-1], ("198.18.101.20", 80, 5), ("198.18.101.21", 80, 5)])
    with pytest.raises(ValueError, match="at least 1"):
        TargetGroup.of([])


@pytest.mark.parametrize(("targets", "message"), [
    ([(T1, 80, 50), (T2, 80, 49)], r"targets: weights sum to 99, must sum to 100"),
    ([(T1, 80, 50), (T2, 80, 51)], r"targets: weights sum to 101"),
    ([(T1, 80, 101), (T2, 80, -1)], r"targets\[0\]\.weight: must be 0\.\.100 \(got 101\)"),
    ([(T1, 80, 100), (T2, 80, -1)], r"targets\[1\]\.weight: must be 0\.\.100 \(got -1\)"),
    ([(T1, 80, 50.0), (T2, 80, 50)], r"targets\[0\]\.weight: must be an integer 0\.\.100, "
                                     r"not a number"),
    ([(T1, 80, "50"), (T2, 80, 50)], r"targets\[0\]\.weight: must be an integer 0\.\.100, "
                                     r"not a string"),
    ([(T1, 80, True)], r"targets\[0\]\.weight: must be an integer 0\.\.100, not a boolean"),
    ([(T1, 80, 50), (T2, 80)], r"targets\[1\]\.weight: is required"),
    ([(T1, 80, 0)], r"targets: weights sum to 0"),
    ([("999.1.1.1", 80, 100)], r"targets\[0\]\.ip: '999\.1\.1\.1' is not an IPv4 address"),
    ([("0.0.0.0", 80, 100)], r"targets\[0\]\.ip: 0\.0\.0\.0 is in 0\.0\.0\.0/8 \(this host\)"),
    ([("224.0.0.1", 80, 100)], r"targets\[0\]\.ip: 224\.0\.0\.1 is a multicast address"),
    ([("127.0.0.1", 80, 100)], r"targets\[0\]\.ip: 127\.0\.0\.1 is a loopback address"),
    ([("169.254.9.9", 80, 100)], r"is a link-local address: it cannot be a target"),
    ([("250.1.1.1", 80, 100)], r"is in class E \(reserved\)"),
    ([("255.255.255.255", 80, 100)], r"cannot be a target"),
    ([("2001:db8::1", 80, 100)], r"targets\[0\]\.ip"),
    ([(T1, 0, 100)], r"targets\[0\]\.port: must be 1\.\.65535 \(got 0\)"),
    ([(T1, 65536, 100)], r"targets\[0\]\.port: must be 1\.\.65535 \(got 65536\)"),
    ([(T1, "http", 100)], r"targets\[0\]\.port: must be an integer 1\.\.65535, not a string"),
    ([(T1, 80, 50), (T1, 80, 50)], r"targets\[1\]: 198\.18\.101\.2:80 is listed twice"),
    ([42], r"targets\[0\]: expected"),
    ([(T1,)], r"targets\[0\]: expected"),
])
def test_bad_groups_raise_value_error_naming_the_field(targets: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TargetGroup.of(targets)


def test_weight_zero_keeps_a_target_listed() -> None:
    g = TargetGroup.of([(T1, 80, 0), (T2, 80, 100)])
    assert [t.weight for t in g.targets] == [0, 100]


def test_with_weight_returns_a_validated_copy() -> None:
    g = TargetGroup.of([(T1, 80, 50), (T2, 80, 50)])
    assert g.with_weight(T1, 80, 50) == g
    with pytest.raises(ValueError, match="sum to 70"):
        g.with_weight(T1, 80, 20)
    with pytest.raises(ValueError, match="not in this group"):
        g.with_weight(T3, 80, 50)
    single = TargetGroup.single(T1, 80)
    with pytest.raises(ValueError, match="sum to 0"):
        single.with_weight(T1, 80, 0)


def test_groups_are_immutable() -> None:
    g = TargetGroup.single(T1, 80)
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.targets = ()  # type: ignore[misc]


def test_to_route_uses_network_order_addresses_and_host_order_weights() -> None:
    g = TargetGroup.of([(T1, 8080, 50), (T2, 9000, 30), (T3, 1, 20)])
    raw = bytes(g.to_route(flags=abi.ROUTE_F_STATS | abi.ROUTE_F_TCP))
    assert len(raw) == 72
    assert raw[0] == 3 and raw[1:4] == b"\0\0\0"
    assert int.from_bytes(raw[4:6], "little") == abi.ROUTE_F_STATS | abi.ROUTE_F_TCP
    assert raw[8:16] == bytes([198, 18, 101, 2]) + (8080).to_bytes(2, "big") + (50).to_bytes(
        2, "little")
    assert raw[16:24] == bytes([198, 18, 101, 3]) + (9000).to_bytes(2, "big") + (80).to_bytes(
        2, "little")
    assert raw[24:32] == bytes([198, 18, 101, 4]) + (1).to_bytes(2, "big") + (100).to_bytes(
        2, "little")
    assert raw[32:] == bytes(40)


def test_decode_route_round_trips_weights() -> None:
    g = TargetGroup.of([(T1, 8080, 0), (T2, 9000, 70), (T3, 1, 30)])
    rec = decode_route(g.to_route(flags=5))
    assert rec.target_count == 3 and rec.flags == 5
    assert rec.group == g and rec.cumulative_weights == (0, 70, 100)
