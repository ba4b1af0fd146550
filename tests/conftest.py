"""Shared fixtures: the real datapath loaded once per session, and namespace labs.

Datapath tests need root and BPF. They never skip: CI runs as root with BPF, so a missing
capability is a failure with the fix in its message.
"""

from __future__ import annotations

import ctypes as ct
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lbtui import abi, bpfsys
from lbtui import maps as M
from lbtui.datapath.loader import Datapath, DatapathError, preflight
from lbtui.maps.events import EventReader
from lbtui.maps.settings import set_counter

TEST_TAG = f"t{os.getpid() % 100000}"


def _require_datapath() -> None:
    try:
        preflight()
    except DatapathError as e:
        pytest.fail(f"datapath tests need root and BPF: {e}", pytrace=False)


def clear_maps(ms: M.MapSet) -> None:
    """Empty every map and restore default settings, between tests sharing one datapath."""
    for m in (ms.listen_map, ms.config_map, ms.sni_map, ms.conntrack_map, ms.local_addrs_map,
              ms.vips_map, ms.reasons_map, ms.tx_ports_map):
        for k in list(bpfsys.keys(m.fd, m.key_type)):
            bpfsys.delete(m.fd, k)
    for word in range(abi.PORTS_MAX):
        bpfsys.update(ms.ports_map.fd, ct.c_uint32(word), ct.c_uint64(0))
    for slot in range(ms.counters_map.max_entries):
        set_counter(ms.counters_map, slot, 0)
    reader = EventReader(ms.stats_ringbuf, lambda _e: None)  # drop leftover events
    reader.drain()
    reader.close()
    M.enable_stats(ms.settings_map)
    M.set_connection_timeout(ms.settings_map, M.DEFAULT_CONFIG["connection_timeout"])
    M.set_setting(ms.settings_map, abi.SETTING_NH_CACHE_MS, M.DEFAULT_CONFIG["nexthop_cache_ms"])
    M.flush_nexthop_cache(ms.settings_map)
    if ms.sni_map.sni_names:
        ms.sni_map.sni_names.names.clear()


@pytest.fixture(autouse=True)
def _lbtui_logging_reset() -> Iterator[None]:
    """A command run in-process points the "lbtui" logger at the test's captured stderr;
    drop that handler afterwards, or a later test's log line hits a closed stream."""
    yield
    logger = logging.getLogger("lbtui")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("lbtui-state")
    os.environ["LBTUI_STATE_DIR"] = str(d)
    return d


@pytest.fixture(scope="session")
def session_datapath(state_dir: Path) -> Iterator[Datapath]:
    """The real XDP program, compiled by BCC and loaded once, over small test maps."""
    _require_datapath()
    ms = M.create_all_maps({"max_connections": 65536, "max_routes": 1024})
    pin = Path(f"/sys/fs/bpf/lbtui-{TEST_TAG}")
    shutil.rmtree(pin, ignore_errors=True)
    ms.pin_all(pin)
    try:
        dp = Datapath.load(ms)
        yield dp
        dp.detach_all()
    finally:
        M.close_all_maps(ms)
        shutil.rmtree(pin, ignore_errors=True)


@pytest.fixture
def datapath(session_datapath: Datapath) -> Iterator[Datapath]:
    """The session datapath with every map emptied before the test."""
    clear_maps(session_datapath.maps)
    yield session_datapath
    session_datapath.detach_all()


@pytest.fixture
def make_lab() -> Iterator[Callable[..., object]]:
    """Factory for namespace labs with unique names; all are torn down after the test,
    also when it fails."""
    from lbtui.lab import topology as T

    built: list[str] = []

    def _make(n_clients: int = 2, n_backends: int = 3, servers: bool = True) -> T.Topology:
        _require_datapath()
        name = f"{TEST_TAG}-{len(built)}"
        built.append(name)
        topo = T.build(name, n_clients, n_backends)
        if servers:
            T.start_backend_servers(topo)
        return topo

    yield _make
    for name in built:
        T.teardown(name)

