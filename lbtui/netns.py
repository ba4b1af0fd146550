"""Entering a network namespace for the calling thread (attach, test runs, link queries)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pyroute2 import netns as _netns


@contextmanager
def inside(name: str | None) -> Iterator[None]:
    """Run the block in network namespace ``name`` (None: stay where we are)."""
    if not name:
        yield
        return
    _netns.pushns(name)
    try:
        yield
    finally:
        _netns.popns()
