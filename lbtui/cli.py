"""Command line entry point: `lbtui <command>`."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("lbtui: not yet", file=sys.stderr)
    return 2
