"""Weighted pick through the real program: 10,000 new flows land on the weights."""

from __future__ import annotations

import math
import random
from collections import Counter

from dp_harness import T1, T2, T3, T4, VIP, XDP_REDIRECT, Harness
from dp_packets import fast_tcp, parse

from lbtui.targets import TargetGroup

WEIGHTS = {T1: 50, T4: 0, T2: 30, T3: 20}    # weight 0 between two live slots


def test_10000_new_flows_split_50_30_20_within_5_sigma_and_weight_0_gets_none(
        dp: Harness) -> None:
    dp.listen(80, TargetGroup.of([(ip, 8080, w) for ip, w in WEIGHTS.items()]))
    rng = random.Random(20240917)
    n = 10_000
    flows: set[tuple[str, int]] = set()
    while len(flows) < n:
        flows.add((f"198.18.{rng.randrange(0, 2)}.{rng.randrange(1, 255)}"
                   if rng.random() < 0.5 else f"198.18.{rng.randrange(2, 256)}."
                   f"{rng.randrange(1, 255)}", rng.randrange(1024, 65536)))
    counts: Counter[str] = Counter()
    for src, port in flows:
        r = dp.run(fast_tcp(src, VIP, port, 80))
        out = parse(r.data)
        assert r.verdict == XDP_REDIRECT and out is not None
        counts[out.dst] += 1

    assert sum(counts.values()) == n and counts[T4] == 0
    for ip, w in WEIGHTS.items():
        p = w / 100
        sd = math.sqrt(n * p * (1 - p))
        assert abs(counts[ip] - n * p) <= 5 * sd, (ip, counts)
    assert dp.counters()["flows_created"] == n
