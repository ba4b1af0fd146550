"""Bench-mode fuzz of the XDP datapath: the test suite's generator and oracle
(tests/datapath/dp_fuzz.py), run for many more packets than CI does, with a summary.

Every packet goes through the real program with BPF_PROG_TEST_RUN inside a namespace this
script creates (lbt-h1-fz<pid>, removed on exit). It checks: never XDP_ABORTED, nothing
rewritten unless a listen entry or a tracked flow owns it, rewritten packets keep valid
IP/L4 checksums (see dp_fuzz.py). Exit status 1 if any packet broke a rule.

Reproduce:  sudo .venv/bin/python bench/fuzz.py --packets 1000000 --seed 1729
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "datapath"))

from dp_fuzz import Fuzzer, Oracle, Summary, check_one, configure
from dp_harness import standalone


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1729)
    ap.add_argument("--max-connections", type=int, default=262144,
                    help="conntrack size (random clients fill it; LRU evicts)")
    args = ap.parse_args(argv)
    if args.packets <= 0:
        ap.error("--packets must be positive")

    print(f"compiling and loading the datapath; {args.packets:,} packets, seed {args.seed}")
    with standalone("fz", {"max_connections": args.max_connections}) as (h, _dp):
        configure(h)
        fz, oracle, s = Fuzzer(args.seed), Oracle(h), Summary()
        start = time.monotonic()
        step = max(args.packets // 10, 1)
        for i in range(1, args.packets + 1):
            kind, frame, iface = fz.packet()
            check_one(h, oracle, s, kind, frame, iface)
            if i % step == 0:
                rate = i / (time.monotonic() - start)
                print(f"  {i:>10,} packets  {rate:,.0f}/s  failures {len(s.failures)}")
        elapsed = time.monotonic() - start
    report(s, elapsed, args)
    return 1 if s.failures else 0


def report(s: Summary, elapsed: float, args: argparse.Namespace) -> None:
    print(f"\n{s.packets:,} packets in {elapsed:.1f} s ({s.packets / elapsed:,.0f}/s)")
    print("verdicts:  " + ", ".join(f"{k} {v:,}" for k, v in s.verdicts.most_common()))
    print("oracle:    " + ", ".join(f"{k} {v:,}" for k, v in s.paths.most_common()))
    print(f"rewritten packets whose L4 checksum was checked: {s.checked_checksums:,}")
    print("generated: " + ", ".join(f"{k} {v:,}" for k, v in sorted(s.kinds.items())))
    if s.failures:
        print(f"\nFAILURES (first {len(s.failures)}):")
        for f in s.failures:
            print("  " + f)
    else:
        print("\nno rule broken")
    print(f"\nreproduce: sudo .venv/bin/python bench/fuzz.py --packets {args.packets} "
          f"--seed {args.seed}")


if __name__ == "__main__":
    sys.exit(main())
