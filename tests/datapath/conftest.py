"""Datapath fixtures: the real XDP program run through BPF_PROG_TEST_RUN inside a test
namespace of our own (see dp_harness.py for why and what it contains)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dp_harness import DpNet, Harness, build_net, default_ns_name, teardown_net

from lbtui import maps as M
from lbtui import netns
from lbtui.datapath import egress
from lbtui.datapath.loader import Datapath


@pytest.fixture(scope="session")
def dp_net(session_datapath: Datapath) -> Iterator[DpNet]:
    """The test namespace (built once; torn down at the end, also on failure)."""
    name = default_ns_name("dp")
    net = build_net(name)
    try:
        yield net
    finally:
        teardown_net(name)


def _harness(datapath: Datapath, net: DpNet) -> Iterator[Harness]:
    h = Harness(datapath.prog_fd, datapath.maps, net)
    h.events()          # discard what earlier tests left in the ring buffer
    try:
        with netns.inside(net.ns):
            egress.sync(datapath.maps, generic_only=False)   # as the manager would
            yield h
    finally:
        h.close()


@pytest.fixture
def dp(datapath: Datapath, dp_net: DpNet) -> Iterator[Harness]:
    """The session datapath with empty maps; the test body runs inside the test namespace."""
    yield from _harness(datapath, dp_net)


@pytest.fixture(scope="session")
def make_datapath(state_dir: Path) -> Iterator[Callable[..., Datapath]]:
    """Factory for extra datapaths over maps created with ``opts`` (small conntrack, tiny
    ring buffer, ...). Each is compiled once (~2 s); all are released at the end."""
    made: list[tuple[Datapath, Path]] = []

    def _make(tag: str, opts: dict[str, Any]) -> Datapath:
        ms = M.create_all_maps(opts)
        pin = Path(f"/sys/fs/bpf/lbtui-{default_ns_name(tag)}")
        shutil.rmtree(pin, ignore_errors=True)
        try:
            ms.pin_all(pin)
            dp = Datapath.load(ms)
        except BaseException:
            M.close_all_maps(ms)
            shutil.rmtree(pin, ignore_errors=True)
            raise
        made.append((dp, pin))
        return dp

    yield _make
    for dp, pin in made:
        M.close_all_maps(dp.maps)
        shutil.rmtree(pin, ignore_errors=True)


@pytest.fixture(scope="session")
def small_datapath(make_datapath: Callable[..., Datapath]) -> Datapath:
    """64 conntrack entries (32 flows) and a 4 KiB ring buffer (51 events)."""
    return make_datapath("small", {"max_connections": 64, "ringbuf_size": 4096})


def _root_clear_maps(config: pytest.Config) -> Callable[[M.MapSet], None]:
    """tests/conftest.py's clear_maps (conftest modules cannot be imported by name)."""
    root = config.pluginmanager.get_plugin(str(Path(__file__).parents[1] / "conftest.py"))
    assert root is not None and hasattr(root, "clear_maps"), "tests/conftest.py not loaded"
    return root.clear_maps


@pytest.fixture
def small(small_datapath: Datapath, dp_net: DpNet, request: pytest.FixtureRequest
          ) -> Iterator[Harness]:
    """Like ``dp`` but over ``small_datapath``'s maps (emptied; the ring buffer is drained
    by the harness, a test that wants it full fills it itself)."""
    _root_clear_maps(request.config)(small_datapath.maps)
    yield from _harness(small_datapath, dp_net)


@pytest.fixture(scope="session")
def flood_datapath(make_datapath: Callable[..., Datapath]) -> Datapath:
    """A datapath of its own for SYN flood tests: the flood state (internal, unpinned maps)
    belongs to one program, so no other test meets a flood left over."""
    return make_datapath("flood", {"max_connections": 4096})


@pytest.fixture
def flood(flood_datapath: Datapath, dp_net: DpNet, request: pytest.FixtureRequest
          ) -> Iterator[Harness]:
    """Like ``dp`` but over ``flood_datapath``'s maps (emptied)."""
    _root_clear_maps(request.config)(flood_datapath.maps)
    yield from _harness(flood_datapath, dp_net)
