"""10,000 seeded random and mutated packets through the real program (see dp_fuzz.py for
the generator and the oracle; bench/fuzz.py runs many more)."""

from __future__ import annotations

import os

from dp_fuzz import run_fuzz
from dp_harness import Harness

SEED = int(os.environ.get("LBTUI_FUZZ_SEED", "1729"))


def test_fuzz_never_aborts_touches_only_ours_and_keeps_checksums_valid(dp: Harness) -> None:
    s = run_fuzz(dp, 10_000, SEED)
    assert not s.failures, f"seed {SEED}:\n" + "\n".join(s.failures)
    assert s.packets == 10_000
    # The stream must exercise every path, or the properties above prove little.
    assert min(s.paths[p] for p in ("new", "forward", "reply")) >= 250, s.paths
    assert s.paths["untouched"] >= 3000, s.paths
    assert s.verdicts["REDIRECT"] >= 500 and s.checked_checksums >= 1000, s
