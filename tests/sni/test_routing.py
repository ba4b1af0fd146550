"""Target choice for spliced connections, read from real BPF maps (no traffic)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from lbtui import abi
from lbtui import maps as M
from lbtui.splicer.routing import Router, pick, sni_key
from lbtui.targets import TargetGroup, decode_route

pytestmark = pytest.mark.datapath


@pytest.fixture
def ms(state_dir):
    ms = M.create_all_maps({"max_connections": 1024, "max_routes": 64})
    yield ms
    M.close_all_maps(ms)


G_SNI = TargetGroup.of([("198.18.101.2", 8443, 70), ("198.18.102.2", 8443, 30)])
G_SRC = TargetGroup.of([("198.18.103.2", 8443, 100)])
G_LISTEN = TargetGroup.of([("198.18.104.2", 8443, 100)])
SNI_FLAGS = abi.ROUTE_F_SNI | abi.ROUTE_F_TCP | abi.ROUTE_F_STATS


def test_pick_follows_weights_and_skips_drained():
    rng = random.Random(7)
    route = decode_route(G_SNI.to_route())
    n = 20000
    got = Counter(pick(route, rng).ip for _ in range(n))
    assert abs(got["198.18.101.2"] / n - 0.7) < 0.02
    drained = decode_route(TargetGroup.of([("198.18.101.2", 1, 0), ("198.18.102.2", 1, 100)])
                           .to_route())
    assert {pick(drained, rng).ip for _ in range(200)} == {"198.18.102.2"}
    none = G_LISTEN.to_route()
    none.targets[0].cumulative_weight = 0
    assert pick(decode_route(none), rng) is None


def test_sni_key_is_the_map_hash():
    assert sni_key(b"API.Example.com") == sni_key(b"api.example.com.") is not None
    assert sni_key(None) is None
    assert sni_key(b"bad_name!") is None        # never a route: falls back


def test_precedence_sni_then_source_then_listener(ms):
    r = Router(ms, 443, random.Random(1))
    assert r.route(b"a.test", "198.18.1.2") == (None, "none")
    # A listen entry for the port without the SNI flag is not the splicer's.
    M.add_listen_port_weighted(ms.listen_map, 5, 443, G_SRC, abi.ROUTE_F_TCP)
    assert r.route(b"a.test", "198.18.1.2") == (None, "none")
    M.add_listen_port_weighted(ms.listen_map, 7, 443, G_LISTEN, SNI_FLAGS)
    d, kind = r.route(b"a.test", "198.18.1.2")
    assert kind == "listener" and d.target.ip == "198.18.104.2" and d.flags == SNI_FLAGS
    M.add_source_route_weighted(ms.config_map, "198.18.1.0/24", G_SRC)
    assert r.route(b"a.test", "198.18.1.2")[0].target.ip == "198.18.103.2"
    assert r.route(b"a.test", "198.18.2.2")[1] == "listener"
    M.add_sni_route(ms.sni_map, "A.test", G_SNI)
    d, kind = r.route(b"a.TEST", "198.18.1.2")
    assert kind == "sni" and d.target.ip in ("198.18.101.2", "198.18.102.2")
    assert r.route(None, "198.18.1.2")[1] == "source"        # no SNI: fallback
    assert r.route(b"bad_name", "198.18.2.2")[1] == "listener"


def test_listener_entry_is_refound_after_edits(ms):
    r = Router(ms, 443, random.Random(1))
    M.add_listen_port_weighted(ms.listen_map, 7, 443, G_LISTEN, SNI_FLAGS)
    M.add_listen_port_weighted(ms.listen_map, 9, 8443, G_SRC, SNI_FLAGS)   # other port
    assert r.route(None, "198.18.1.2")[0].target.ip == "198.18.104.2"
    M.remove_listen_port(ms.listen_map, 7, 443)
    assert r.route(None, "198.18.1.2") == (None, "none")
    M.add_listen_port_weighted(ms.listen_map, 8, 443, G_SRC, SNI_FLAGS)
    assert r.route(None, "198.18.1.2")[0].target.ip == "198.18.103.2"


def test_a_maglev_sni_route_picks_by_the_connections_hash_on_every_node(ms):
    """Spliced connections of a Maglev group go where its table sends the 5-tuple, the
    same on another node whose maps hold the group in other tables."""
    from lbtui import maglev
    from lbtui.control import apply
    from lbtui.model import Config, DatapathSettings, SniRoute, SourceRoute

    group = TargetGroup.of([("198.18.101.2", 8443, 50), ("198.18.102.2", 8443, 30),
                            ("198.18.103.2", 8443, 20)])
    cfg = Config(DatapathSettings(interfaces=["c1"]),
                 sni_routes=[SniRoute("api.example.com", group, hash="maglev")])
    apply.sync(ms, cfg, lambda _names: [])
    other = M.create_all_maps({"max_connections": 1024, "max_routes": 64})
    try:
        first = Config(DatapathSettings(interfaces=["c1"]), source_routes=[
            SourceRoute("198.18.9.0/24", G_SRC, hash="maglev")])
        apply.sync(other, first, lambda _names: [])
        first.sni_routes = cfg.sni_routes
        apply.sync(other, first, lambda _names: [])
        routers = [Router(ms, 443), Router(other, 443)]
        table = maglev.build_table(group.targets)
        rng = random.Random(3)
        got = Counter()
        for _ in range(300):
            client = (f"198.18.1.{rng.randrange(2, 250)}", rng.randrange(1024, 65536))
            flow = (client, ("198.18.0.10", 443))
            fh = maglev.flow_hash(client[0], "198.18.0.10", client[1], 443, abi.IPPROTO_TCP)
            want = maglev.pick(table, group.targets, fh)
            picks = [r.route(b"API.example.com", client[0], flow) for r in routers]
            assert [(d.target, kind) for d, kind in picks] == [(want, "sni")] * 2
            got[want.ip] += 1
        assert len(got) == 3
    finally:
        M.close_all_maps(other)
