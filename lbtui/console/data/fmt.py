"""Number and time formatting shared by the views (humanize, compact widths)."""

from __future__ import annotations

import humanize


def span(s: int) -> str:
    """Seconds as a compact age: 42s, 3m05s, 2h07m, 1d04h."""
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def size(n: int) -> str:
    return humanize.naturalsize(n, binary=True, format="%.1f") if n >= 1024 else f"{n} B"


def count(n: int) -> str:
    return humanize.intcomma(n) if n < 1_000_000 else humanize.intword(n, "%.1f")


def rate(per_s: float) -> str:
    """Packets or connections per second, compact: 0, 3.5, 120, 12.3k, 4.1M."""
    if per_s < 10:
        return f"{per_s:.1f}" if per_s else "0"
    if per_s < 1000:
        return f"{per_s:.0f}"
    return humanize.metric(per_s, precision=3).replace(" ", "")


def rate_bytes(per_s: float) -> str:
    if per_s < 1:
        return "0 B/s"
    return f"{size(round(per_s))}/s"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return span(int(seconds))


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"
