"""bench.compare --quick: every contender carries real traffic and the table is printed."""

from __future__ import annotations

from pathlib import Path

from pyroute2 import netns as pr_netns

from bench.compare import CONTENDERS, METRICS, summarize
from bench.contenders import WEIGHTS
from lbtui.lab import topology as T


def test_prints_one_column_per_contender_and_every_metric(compare_quick) -> None:
    lines = compare_quick.proc.stdout.splitlines()
    header = next(line for line in lines if line.startswith("metric"))
    assert header.split()[1:] == list(CONTENDERS)
    for _key, label, _higher, _digits in METRICS:
        row = next(line for line in lines if line.startswith(label))
        assert len(row[len(label):].split()) >= len(CONTENDERS)
    assert any(line.startswith("goal: lbtui conns/s >= 90% of direct") for line in lines)
    assert any(line.startswith("goal: lbtui-generic conns/s >= 90% of direct")
               for line in lines)


def test_every_contender_forwarded_connections_bulk_and_latency(compare_quick) -> None:
    for name in CONTENDERS:
        (r,) = compare_quick.result["samples"][name]
        assert r["conns_per_s"] > 300, (name, r)
        assert r["conn_errors"] <= 0.01 * r["conns_per_s"], (name, r)
        assert r["bulk_gbps"] > 0.05, (name, r)
        assert 0 < r["lat_p50_us"] <= r["lat_p99_us"] < 1e6, (name, r)
        assert r["cpu_rate"] > 100 and r["cpu_ms_per_1k"] > 0, (name, r)


def test_xdp_contenders_bypass_the_lb_stack_and_netfilter_uses_it(compare_quick) -> None:
    samples = compare_quick.result["samples"]
    for name in ("lbtui", "lbtui-generic", "lbtui-single", "xdp-redirect", "haproxy"):
        assert samples[name][0]["kernel_fwd_per_conn"] < 0.5, name
    for name in ("direct", "direct-spread", "nftables"):  # SYN, ACK, request, FIN, ACK...
        assert samples[name][0]["kernel_fwd_per_conn"] > 4, name


def test_udp_reaches_backends_intact_except_on_haproxy(compare_quick) -> None:
    samples = compare_quick.result["samples"]
    for name in ("lbtui", "lbtui-generic", "lbtui-single", "direct", "direct-spread",
                 "xdp-redirect", "nftables"):
        (r,) = samples[name]
        assert r["udp_pps"] > 1000, (name, r)
        assert r["udp_pps"] >= 0.9 * r["udp_sent_pps"], (name, r)
        assert r["udp_bad_checksums"] == 0, (name, r)
    assert samples["haproxy"][0]["udp_pps"] is None


def test_haproxy_process_cpu_is_counted_and_in_kernel_lbs_have_none(compare_quick) -> None:
    samples = compare_quick.result["samples"]
    assert samples["haproxy"][0]["lb_proc_ms_per_1k"] > 1
    for name in ("lbtui", "lbtui-generic", "lbtui-single", "nftables", "direct",
                 "direct-spread", "xdp-redirect"):
        assert samples[name][0]["lb_proc_ms_per_1k"] is None


def test_latency_tail_is_broken_down_and_retransmissions_counted(compare_quick) -> None:
    """Each contender's handshake time and the retransmissions its clients counted, and
    the ceilings of the same run, are printed next to the p99 they explain."""
    lines = compare_quick.proc.stdout.splitlines()
    assert any(line.startswith("latency tail") for line in lines)
    for label in ("XDP redirect alone vs kernel forwarding",
                  "lbtui-single vs XDP redirect alone (same traffic: lbtui's own cost)",
                  "lbtui vs kernel forwarding"):
        assert any(line.startswith(f"ceiling: {label}: ") for line in lines), label
    assert any(line.startswith("goal: lbtui connect+response p99 at or under haproxy's")
               for line in lines)
    for name in CONTENDERS:
        (r,) = compare_quick.result["samples"][name]
        assert 0 < r["lat_connect_p99_us"] <= r["lat_max_us"], (name, r)
        for key in ("lat_syn_retrans", "lat_retrans", "syn_retrans", "retrans",
                    "lat_over_1ms"):
            assert isinstance(r[key], int) and r[key] >= 0, (name, key, r)


def _shares(r: dict, prefix: str) -> list[float]:
    counts = [r[f"{prefix}{j}"] for j in (1, 2, 3)]
    return [c / sum(counts) for c in counts]


def test_direct_spread_carries_traffic_to_all_three_backends_by_weight(compare_quick) -> None:
    """Counted where it arrives (each backend's TCP and UDP MIB): direct-spread's
    connections reach all three backends by the balancers' weights, as lbtui's do, and
    direct's reach backend 1 only; with the same clients, so the paced phase offers the
    same load."""
    samples = compare_quick.result["samples"]
    (spread,) = samples["direct-spread"]
    (direct,) = samples["direct"]
    (lbtui,) = samples["lbtui"]
    weights = [w / sum(WEIGHTS) for w in WEIGHTS]
    for r in (spread, lbtui):   # thousands of connections, each hashed or picked by weight
        assert sum(r[f"conns_b{j}"] for j in (1, 2, 3)) > 300, r
        for got, want in zip(_shares(r, "conns_b"), weights, strict=True):
            assert abs(got - want) < 0.05, (_shares(r, "conns_b"), r)
    assert spread["udp_pps"] > 1000 and sum(spread[f"udp_b{j}"] for j in (1, 2, 3)) > 0
    assert direct["conns_b1"] > 300 and direct["conns_b2"] == direct["conns_b3"] == 0
    assert direct["udp_b2"] == direct["udp_b3"] == 0 < direct["udp_b1"]
    assert 0.85 < spread["cpu_rate"] / direct["cpu_rate"] < 1.15, (spread, direct)


def test_direct_spread_is_the_like_for_like_baseline_in_goals_and_ceiling(
        compare_quick) -> None:
    lines = compare_quick.proc.stdout.splitlines()
    for me in ("lbtui", "lbtui-generic"):
        assert any(line.startswith(f"goal: {me} conns/s >= 90% of direct over the same "
                                   "backends (direct-spread)") for line in lines), me
        assert any(line.startswith(f"goal: {me} conns/s >= 90% of direct ") for line in lines)
        assert any(line.startswith(f"ceiling: {me} vs direct-spread (same backends and "
                                   "weights): ") for line in lines), me
    assert any(line.startswith("ceiling: direct-spread vs direct (three backends vs one, no "
                               "LB): ") for line in lines)
    assert any(line.startswith("LB CPU ms per 1k req (minus direct-spread)") for line in lines)
    summary = summarize(compare_quick.result)
    assert summary["direct-spread"]["lb_cpu_spread_ms_per_1k"] == 0.0
    for name in ("direct", "xdp-redirect", "lbtui-single"):  # one backend: not comparable
        assert summary[name]["lb_cpu_spread_ms_per_1k"] is None, name
    for name in ("lbtui", "lbtui-generic", "nftables", "haproxy"):
        (r,), (d,) = compare_quick.result["samples"][name], compare_quick.result[
            "samples"]["direct-spread"]
        assert summary[name]["lb_cpu_spread_ms_per_1k"] == r["cpu_ms_per_1k"] - d[
            "cpu_ms_per_1k"], name


def test_lab_and_pins_are_gone_afterwards(compare_quick) -> None:
    lab = compare_quick.lab
    assert not [n for n in pr_netns.listnetns() if n.startswith(f"lbt-{lab}-")]
    assert not Path(f"/sys/fs/bpf/lbtui-bench-{lab}").exists()
    assert not (T.STATE_DIR / f"{lab}.json").exists()
