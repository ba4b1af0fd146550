"""bench.compare --quick: every contender carries real traffic and the table is printed."""

from __future__ import annotations

from pathlib import Path

from pyroute2 import netns as pr_netns

from bench.compare import CONTENDERS, METRICS
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
    for name in ("direct", "nftables"):  # SYN, ACK, request, FIN, ACK... both directions
        assert samples[name][0]["kernel_fwd_per_conn"] > 4, name


def test_udp_reaches_backends_intact_except_on_haproxy(compare_quick) -> None:
    samples = compare_quick.result["samples"]
    for name in ("lbtui", "lbtui-generic", "lbtui-single", "direct", "xdp-redirect",
                 "nftables"):
        (r,) = samples[name]
        assert r["udp_pps"] > 1000, (name, r)
        assert r["udp_pps"] >= 0.9 * r["udp_sent_pps"], (name, r)
        assert r["udp_bad_checksums"] == 0, (name, r)
    assert samples["haproxy"][0]["udp_pps"] is None


def test_haproxy_process_cpu_is_counted_and_in_kernel_lbs_have_none(compare_quick) -> None:
    samples = compare_quick.result["samples"]
    assert samples["haproxy"][0]["lb_proc_ms_per_1k"] > 1
    for name in ("lbtui", "lbtui-generic", "lbtui-single", "nftables", "direct",
                 "xdp-redirect"):
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


def test_lab_and_pins_are_gone_afterwards(compare_quick) -> None:
    lab = compare_quick.lab
    assert not [n for n in pr_netns.listnetns() if n.startswith(f"lbt-{lab}-")]
    assert not Path(f"/sys/fs/bpf/lbtui-bench-{lab}").exists()
    assert not (T.STATE_DIR / f"{lab}.json").exists()
