"""Which Maglev tables a config's groups use (lbtui.maps.maglev.TablePlanner through
apply.sync), on real maps without a program: a table a route names is never written, an
unchanged config writes nothing, a full map still lets a change swap one group for
another, and a config needing more groups than the map holds changes nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lbtui import abi, bpfsys
from lbtui import maps as M
from lbtui.control import apply
from lbtui.maps.maglev import read_table
from lbtui.model import Config, DatapathSettings, Listener, SniRoute
from lbtui.targets import RouteRecord, TargetGroup

pytestmark = pytest.mark.datapath

A = TargetGroup.of([("198.18.101.2", 8443, 50), ("198.18.101.3", 8443, 50)])
B = TargetGroup.of([("198.18.101.2", 8443, 20), ("198.18.101.3", 8443, 80)])
IFINDEX = 7


@pytest.fixture
def ms(state_dir: object) -> Iterator[M.MapSet]:
    ms = M.create_all_maps({"max_connections": 1024, "max_routes": 64,
                            "maglev_table_size": 4093, "max_maglev_groups": 2})
    yield ms
    M.close_all_maps(ms)


def config(*snis: tuple[str, TargetGroup], listener: TargetGroup | None = A) -> Config:
    listeners = [Listener(80, listener, "tcp", hash="maglev")] if listener else []
    return Config(DatapathSettings(interfaces=["c1"]), listeners,
                  sni_routes=[SniRoute(h, g, hash="maglev") for h, g in snis])


def sync(ms: M.MapSet, cfg: Config) -> int:
    return apply.sync(ms, cfg, lambda names: [IFINDEX] * len(names)).changed


def listener(ms: M.MapSet) -> RouteRecord:
    r = M.lookup_listen_port(ms.listen_map, IFINDEX, 80)
    assert r is not None
    return r


def sni(ms: M.MapSet, host: str) -> RouteRecord:
    r = M.lookup_sni_route(ms.sni_map, host)
    assert r is not None
    return r


def test_edits_switch_tables_and_an_unchanged_config_writes_nothing(ms: M.MapSet) -> None:
    sync(ms, config())
    first = listener(ms)
    assert first.hash == "maglev" and first.table == 0
    before = read_table(ms.maglev_map, 0)
    assert sync(ms, config()) == 0
    sync(ms, config(listener=B))
    assert listener(ms).table == 1 and read_table(ms.maglev_map, 0) == before
    sync(ms, config(listener=A))            # back: table 0 already holds A's table
    assert listener(ms).table == 0
    cfg = config()
    cfg.listeners[0].hash = "weighted"
    sync(ms, cfg)
    assert listener(ms).hash == "weighted" and not listener(ms).flags & abi.ROUTE_F_MAGLEV


def test_a_full_map_still_swaps_one_group_for_another(ms: M.MapSet) -> None:
    sync(ms, config(("a.example.com", A)))            # both pairs in use
    leaving = sni(ms, "a.example.com").table
    named = {listener(ms).table, leaving}
    contents = {t: read_table(ms.maglev_map, t) for t in named}
    sync(ms, config(("b.example.com", B)))            # one transaction: a goes, b comes
    assert M.lookup_sni_route(ms.sni_map, "a.example.com") is None
    assert sni(ms, "b.example.com").table == leaving ^ 1   # a's spare table
    assert read_table(ms.maglev_map, leaving) == contents[leaving]   # never written


def test_more_groups_than_the_map_holds_change_nothing(ms: M.MapSet) -> None:
    sync(ms, config(("a.example.com", A)))
    listen_before = {bytes(k): bytes(bpfsys.lookup(ms.listen_map.fd, k, abi.Route))
                     for k in bpfsys.keys(ms.listen_map.fd, abi.ListenKey)}
    with pytest.raises(ValueError, match=r"no free Maglev table .* holds 2 groups"):
        sync(ms, config(("a.example.com", A), ("b.example.com", B)))
    assert M.lookup_sni_route(ms.sni_map, "b.example.com") is None
    assert {bytes(k): bytes(bpfsys.lookup(ms.listen_map.fd, k, abi.Route))
            for k in bpfsys.keys(ms.listen_map.fd, abi.ListenKey)} == listen_before
