"""The Maglev table builder (lbtui.maglev): shares follow the weights, removing a target
moves (almost) only its own flows, and the table depends on nothing but the targets and the
size. Measured over 100k 5-tuples with the datapath's flow hash (its Python mirror; the
kernel's agreement with it is tests/datapath/test_dp_maglev.py), with the helpers of
bench.maglev, which prints the same measurements for docs/scale-out.md."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.maglev import VIP, equal_group, flow_hashes, lookups
from lbtui import maglev
from lbtui.control.controller import redistribute
from lbtui.targets import TargetGroup, TargetSpec

TUPLES = 100_000
HASHES = flow_hashes(TUPLES)       # flow hashes of 100k distinct TCP 5-tuples to VIP:80
group = equal_group                # n targets, weights as equal as sum-100 integers allow


def picks(g: TargetGroup, size: int = maglev.DEFAULT_TABLE_SIZE) -> list[str]:
    return lookups(g, size, HASHES)


@pytest.mark.parametrize("weights", [(40, 30, 20, 10), (25, 25, 25, 25), (1, 99),
                                     (50, 0, 50), (13, 12, 13, 12, 13, 12, 13, 12)])
def test_slot_and_flow_shares_follow_the_weights(weights: tuple[int, ...]) -> None:
    g = TargetGroup.of([(f"198.18.101.{i + 2}", 8080, w) for i, w in enumerate(weights)])
    size = maglev.DEFAULT_TABLE_SIZE
    table = maglev.build_table(g.targets, size)
    slots = Counter(table)
    got = Counter(picks(g))
    for i, t in enumerate(g.targets):
        assert abs(slots[i] / size - t.weight / 100) < 0.001, (t, slots[i])
        # Flows: binomial noise over 100k tuples (sd <= 0.16 %): 1 % is > 6 sd.
        assert abs(got[str(t)] / TUPLES - t.weight / 100) < 0.01, (t, got[str(t)])
    assert maglev.NO_TARGET not in slots


@pytest.mark.parametrize("n", range(2, 9))
def test_removing_one_of_n_targets_moves_only_its_flows(n: int) -> None:
    """A target removed (first drained, the others rescaled by the controller, then dropped)
    moves at most 1/N + 2 % of the flows; flows of the other targets barely move."""
    g = group(n)
    before = picks(g)
    for gone in (g.targets[0], g.targets[n // 2], g.targets[-1]):
        drained = redistribute(g, gone.ip, gone.port, 0)
        after_group = TargetGroup(tuple(t for t in drained.targets if t != TargetSpec(
            gone.ip, gone.port, 0)))
        after = picks(after_group)
        moved = sum(a != b for a, b in zip(before, after, strict=True)) / TUPLES
        bystanders = sum(a != b and a != str(gone)
                         for a, b in zip(before, after, strict=True)) / TUPLES
        assert moved <= 1 / n + 0.02, (n, str(gone), moved)
        assert bystanders <= 0.02, (n, str(gone), bystanders)
        assert str(gone) not in after


def test_taking_a_target_out_of_rotation_moves_only_its_flows() -> None:
    """Weight 0 with the others unchanged (what active health checks do): exactly its own
    flows move, and nothing else, within Maglev's small extra churn."""
    g = group(4)
    before = picks(g)
    after = picks(g.in_rotation({str(g.targets[1])}))
    moved = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert {a for a, _ in moved} <= {str(g.targets[1]), *map(str, g.targets)}
    own = sum(a == str(g.targets[1]) for a, _ in moved)
    assert own == before.count(str(g.targets[1]))
    assert (len(moved) - own) / TUPLES <= 0.01


def test_the_table_ignores_listing_order_node_and_time() -> None:
    g = group(5)
    shuffled = TargetGroup(tuple(reversed(g.targets)))
    a = maglev.build_table(g.targets)
    b = maglev.build_table(shuffled.targets)
    assert [str(g.targets[i]) for i in a] == [str(shuffled.targets[i]) for i in b]
    maglev._build.cache_clear()
    assert maglev.build_table(g.targets) == a      # rebuilt, not cached: deterministic


def test_a_group_without_weight_has_an_empty_table() -> None:
    drained = (TargetSpec("198.18.101.2", 80, 0), TargetSpec("198.18.101.3", 80, 0))
    table = maglev.build_table(drained, 4093)
    assert set(table) == {maglev.NO_TARGET}
    assert maglev.pick(table, drained, 12345) is None


def test_flow_hash_is_the_datapaths_formula() -> None:
    """Known values (the kernel agrees: test_dp_maglev); no seed, so stable across runs."""
    assert maglev.flow_hash("198.18.1.2", VIP, 40000, 80, 6) == maglev.flow_hash(
        "198.18.1.2", VIP, 40000, 80, 6)
    assert len({maglev.flow_hash("198.18.1.2", VIP, p, 80, 6) for p in range(1000)}) == 1000
    assert maglev.flow_hash("198.18.1.2", VIP, 40000, 80, 6) != maglev.flow_hash(
        "198.18.1.2", VIP, 40000, 80, 17)


@pytest.mark.parametrize("size,problem", [
    (65537, None), (4093, None), (655373, None),
    (65536, "must be a prime (got 65536; nearest primes 65521 and 65537)"),
    (4091, "must be a prime 4093..655373 (got 4091)"),
    (655379, "must be a prime 4093..655373 (got 655379)"),
    (True, "must be a prime integer 4093..655373"),
    ("65537", "must be a prime integer 4093..655373"),
])
def test_table_sizes(size: object, problem: str | None) -> None:
    assert maglev.table_size_problem(size) == problem
    if problem:
        with pytest.raises(ValueError, match="table size: must be a prime"):
            maglev.build_table(group(2).targets, size)  # type: ignore[arg-type]
