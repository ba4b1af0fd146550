"""lbtui.maps on real (unattached) BPF maps: bad input raises ValueError and writes nothing;
the deprecated single-target wrappers warn and still work.

Creating maps needs root and BPF (no program is loaded); without them these fail loudly."""

from __future__ import annotations

import ctypes as ct
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lbtui import abi, bpfsys
from lbtui import maps as M
from lbtui.targets import TargetGroup

GOOD = TargetGroup.of([("198.18.101.2", 8080, 60), ("198.18.101.3", 8080, 40)])
OTHER = TargetGroup.single("198.18.101.4", 9000)


@pytest.fixture
def ms() -> Iterator[M.MapSet]:
    """A small map set holding one valid entry of each kind, so a bad call that clobbered
    an existing key would show."""
    m = M.create_all_maps({"max_connections": 64, "max_routes": 16, "max_sni_routes": 16,
                           "max_listen_ports": 16, "ringbuf_size": 4096})
    M.add_listen_port_weighted(m.listen_map, 3, 80, GOOD)
    M.add_source_route_weighted(m.config_map, "198.18.1.0/24", GOOD)
    M.add_sni_route(m.sni_map, "api.example.com", GOOD)
    k = M.FiveTuple("198.18.1.2", "198.18.0.10", 40000, 80).key()
    v = abi.CtValue(orig_dst_ip=k.dst_ip, orig_dst_port=k.dst_port, last_seen_ns=1)
    bpfsys.update(m.conntrack_map.fd, k, v)
    yield m
    M.close_all_maps(m)


def _dump(m: M.BpfMap) -> dict[bytes, bytes]:
    out = {}
    for k in bpfsys.keys(m.fd, m.key_type):
        v = bpfsys.lookup(m.fd, k, m.value_type)
        out[bytes(k)] = bytes(v) if v is not None else b""
    return out


def snapshot(ms: M.MapSet) -> dict[str, Any]:
    """Every byte of every map that a call could write, plus the SNI hostname sidecar."""
    snap: dict[str, Any] = {m.name: _dump(m) for m in ms if m.key_type is not None}
    snap["sni_names"] = dict(ms.sni_map.sni_names.names) if ms.sni_map.sni_names else None
    return snap


BAD_CALLS: dict[str, Callable[[M.MapSet], object]] = {
    "listen ifindex 0": lambda m: M.add_listen_port_weighted(m.listen_map, 0, 80, OTHER),
    "listen ifindex negative": lambda m: M.add_listen_port_weighted(m.listen_map, -3, 80,
                                                                    OTHER),
    "listen ifindex str": lambda m: M.add_listen_port_weighted(m.listen_map, "3", 80, OTHER),
    "listen port 0": lambda m: M.add_listen_port_weighted(m.listen_map, 3, 0, OTHER),
    "listen port 65536": lambda m: M.add_listen_port_weighted(m.listen_map, 3, 65536, OTHER),
    "listen group is a list": lambda m: M.add_listen_port_weighted(
        m.listen_map, 3, 80, [("198.18.101.4", 9000, 100)]),
    "listen flags negative (existing key)": lambda m: M.add_listen_port_weighted(
        m.listen_map, 3, 80, OTHER, flags=-1),
    "listen flags too wide (existing key)": lambda m: M.add_listen_port_weighted(
        m.listen_map, 3, 80, OTHER, flags=1 << 16),
    "remove listen ifindex 0": lambda m: M.remove_listen_port(m.listen_map, 0, 80),
    "remove listen port 0": lambda m: M.remove_listen_port(m.listen_map, 3, 0),
    "source host bits": lambda m: M.add_source_route_weighted(m.config_map, "198.18.1.5/24",
                                                              OTHER),
    "source prefix 33": lambda m: M.add_source_route_weighted(m.config_map, "198.18.1.0/33",
                                                              OTHER),
    "source bad ip": lambda m: M.add_source_route_weighted(m.config_map, "198.18.1/24",
                                                           OTHER),
    "source bad group (existing key)": lambda m: M.add_source_route_weighted(
        m.config_map, "198.18.1.0/24", None),
    "source bad flags (existing key)": lambda m: M.add_source_route_weighted(
        m.config_map, "198.18.1.0/24", OTHER, flags=True),
    "remove source bad prefix": lambda m: M.remove_source_route(m.config_map, "198.18.1.0/40"),
    "sni illegal char": lambda m: M.add_sni_route(m.sni_map, "api_example.com", OTHER),
    "sni too long": lambda m: M.add_sni_route(m.sni_map, ("a" * 60 + ".") * 4 + "abcdefghijk",
                                              OTHER),
    "sni non ascii": lambda m: M.add_sni_route(m.sni_map, "\u0130mages.example.com", OTHER),
    "sni bad group (existing key)": lambda m: M.add_sni_route(m.sni_map, "api.example.com",
                                                              {"ip": "198.18.101.4"}),
    "sni bad flags (existing key)": lambda m: M.add_sni_route(m.sni_map, "api.example.com",
                                                              OTHER, flags=70000),
    "remove sni bad name": lambda m: M.remove_sni_route(m.sni_map, "bad name"),
    "setting index out of range": lambda m: M.set_setting(m.settings_map, 16, 1),
    "setting index negative": lambda m: M.set_setting(m.settings_map, -1, 1),
    "setting value negative": lambda m: M.set_setting(m.settings_map, 0, -1),
    "setting value 2**32": lambda m: M.set_setting(m.settings_map, 0, 2**32),
    "setting value str": lambda m: M.set_setting(m.settings_map, 0, "1"),
    "timeout negative": lambda m: M.set_connection_timeout(m.settings_map, -1),
    "timeout over a week": lambda m: M.set_connection_timeout(m.settings_map, 604801),
    "timeout bool": lambda m: M.set_connection_timeout(m.settings_map, True),
    "delete connection bad ip": lambda m: M.delete_connection(
        m.conntrack_map, ("198.18.1.300", "198.18.0.10", 40000, 80)),
    "delete connection bad port": lambda m: M.delete_connection(
        m.conntrack_map, ("198.18.1.2", "198.18.0.10", 40000, 0)),
    "delete connection bad proto": lambda m: M.delete_connection(
        m.conntrack_map, ("198.18.1.2", "198.18.0.10", 40000, 80, "icmp")),
    "delete connection short tuple": lambda m: M.delete_connection(
        m.conntrack_map, ("198.18.1.2", "198.18.0.10")),
    "clear stale negative timeout": lambda m: M.clear_stale_connections(m.conntrack_map, 10,
                                                                        -1),
}


@pytest.mark.parametrize("call", BAD_CALLS.values(), ids=BAD_CALLS.keys())
def test_bad_input_raises_value_error_and_changes_no_map(
        ms: M.MapSet, call: Callable[[M.MapSet], object]) -> None:
    before = snapshot(ms)
    with pytest.raises(ValueError) as e:
        call(ms)
    assert str(e.value), "the error must say what is wrong"
    assert snapshot(ms) == before


@pytest.mark.parametrize("call", [
    lambda m: M.lookup_listen_port(m.listen_map, 0, 80),
    lambda m: M.lookup_source_route(m.config_map, "198.18.1.1/24"),
    lambda m: M.lookup_sni_route(m.sni_map, "-bad-"),
    lambda m: M.lookup_connection(m.conntrack_map, ("x", "198.18.0.10", 1, 80)),
    lambda m: M.get_setting(m.settings_map, 99),
], ids=["listen", "source", "sni", "connection", "setting"])
def test_bad_lookups_raise_value_error(ms: M.MapSet, call: Callable[[M.MapSet], object]
                                       ) -> None:
    with pytest.raises(ValueError):
        call(ms)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("opts", [{"bogus": 1}, {"ringbuf_size": 5000},
                                  {"ringbuf_size": 2048}, {"max_connections": 0},
                                  {"max_routes": -5}, {"max_sni_routes": "10"},
                                  {"connection_timeout": True}])
def test_create_all_maps_rejects_bad_options_and_leaks_no_map(opts: dict) -> None:
    before = _open_fds()
    with pytest.raises(ValueError):
        M.create_all_maps(opts)
    assert _open_fds() == before


def test_closed_map_refuses_use_with_value_error() -> None:
    m = M.create_listen_map(4)
    m.close()
    with pytest.raises(ValueError, match="closed"):
        M.add_listen_port_weighted(m, 3, 80, OTHER)


def test_deprecated_add_listen_port_warns_and_writes_one_target(ms: M.MapSet) -> None:
    with pytest.warns(DeprecationWarning, match="add_listen_port_weighted") as w:
        M.add_listen_port(ms.listen_map, 7, 443, {"ip": 0xC6126504, "port": 9000}, flags=1)
    assert w[0].filename == __file__, "the warning must point at the caller"
    rec = M.lookup_listen_port(ms.listen_map, 7, 443)
    assert rec is not None and rec.group == OTHER and rec.flags == 1
    assert rec.cumulative_weights == (100,)


def test_deprecated_add_source_route_warns_and_writes_one_target(ms: M.MapSet) -> None:
    with pytest.warns(DeprecationWarning, match="add_source_route_weighted"):
        M.add_source_route(ms.config_map, {"ip": "198.18.2.0", "prefix-len": 24},
                           ("198.18.101.4", 9000))
    rec = M.lookup_source_route(ms.config_map, "198.18.2.0/24")
    assert rec is not None and rec.group == OTHER and rec.flags == abi.ROUTE_F_STATS


def test_deprecated_wrappers_with_bad_input_warn_raise_and_write_nothing(ms: M.MapSet
                                                                         ) -> None:
    before = snapshot(ms)
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="port"):
        M.add_listen_port(ms.listen_map, 3, 80, {"ip": "198.18.101.4", "port": 0})
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="target"):
        M.add_source_route(ms.config_map, "198.18.1.0/24", "198.18.101.4")
    assert snapshot(ms) == before


def test_good_input_is_written_decoded(ms: M.MapSet) -> None:
    """The counterpart of the above: the same calls with good input do write."""
    M.add_listen_port_weighted(ms.listen_map, 3, 80, OTHER, flags=abi.ROUTE_F_TCP)
    [rec] = M.list_listen_ports(ms.listen_map)
    assert (rec.ifindex, rec.port, rec.route.group, rec.route.flags) == (
        3, 80, OTHER, abi.ROUTE_F_TCP)
    M.set_connection_timeout(ms.settings_map, 0)
    assert M.get_connection_timeout(ms.settings_map) == 0
    raw = bpfsys.lookup(ms.settings_map.fd, ct.c_uint32(abi.SETTING_CONN_TIMEOUT_S),
                        ct.c_uint32)
    assert raw is not None and raw.value == 0
    [sni] = M.list_sni_routes(ms.sni_map)
    assert sni.hostname == "api.example.com" and sni.route.group == GOOD
