"""Fixtures of the console's live tests: a namespace lab per test module."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from lbtui.datapath import loader
from lbtui.lab import topology as T

_labs = 0


@pytest.fixture(scope="module")
def lab() -> Iterator[T.Topology]:
    """2 clients, 3 backends running the lab's servers; torn down after the module, also
    when it failed."""
    global _labs
    try:
        loader.preflight()
    except loader.DatapathError as e:
        pytest.fail(f"console live tests need root and BPF: {e}", pytrace=False)
    _labs += 1
    name = f"h3-{os.getpid() % 100000}-{_labs}"
    T.teardown(name)
    topo = T.build(name, 2, 3)
    try:
        T.start_backend_servers(topo)
        yield topo
    finally:
        T.teardown(name)


@pytest.fixture
def utc() -> Iterator[None]:
    """Event times are shown in local time; pin it (snapshot tests)."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old
    time.tzset()
