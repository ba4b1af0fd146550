"""Number and time formatting shared by the views (humanize, compact widths)."""

from __future__ import annotations

import humanize

from lbtui.console.conns import count, size, span

__all__ = ["count", "duration", "pct", "rate", "rate_bytes", "size"]


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
