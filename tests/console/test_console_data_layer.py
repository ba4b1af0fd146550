"""The console's data layer over real maps: fast row decoding agrees with lbtui.maps,
sampling is counted honestly, per-target traffic adds up, sort and filter are right."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import console_data as D
import pytest

from lbtui import abi
from lbtui import maps as M
from lbtui.console.data import conns as C
from lbtui.console.data.collector import Clock, Collector
from lbtui.console.data.traffic import (
    TrafficTracker,
    by_group,
    event_key,
    source_finder,
    sparkline,
)
from lbtui.maps import flowrows as R
from lbtui.maps.events import LbEvent
from lbtui.sni import hostname_hash

pytestmark = pytest.mark.datapath   # real BPF maps


@pytest.fixture
def ms() -> Iterator[M.MapSet]:
    m = D.make_maps()
    yield m
    M.close_all_maps(m)


def test_rows_decode_exactly_what_list_connections_reads(ms: M.MapSet) -> None:
    D.fill_flows(ms, step=3, now=D.T0_NS)
    dump = R.read_rows(R.open_reader(ms.conntrack_map, chunk=7))   # many small batches
    conns = {c.five_tuple: c for c in M.list_connections(ms.conntrack_map)}
    assert dump.total == len(conns) == len(dump.rows) == 71
    assert dump.entries == 2 * len(conns)     # reply entries counted in the fill
    for r in dump.rows:
        c = conns[R.five_tuple(r)]
        assert R.client_of(r) == f"{c.client_ip}:{c.client_port}"
        assert R.vip_of(r) == f"{c.vip_ip}:{c.vip_port}"
        assert R.target_of(r) == c.target
        assert R.state_of(r) == c.state
        assert (r[R.FLAGS], r[R.CREATED], r[R.LAST_SEEN], r[R.PKTS_FWD], r[R.PKTS_REV],
                r[R.BYTES_FWD], r[R.BYTES_REV]) == (
            c.flags, c.created_ns, c.last_seen_ns, c.packets_fwd, c.packets_rev,
            c.bytes_fwd, c.bytes_rev)


def test_sampling_keeps_the_true_total(ms: M.MapSet) -> None:
    D.fill_flows(ms, step=5, now=D.T0_NS)        # 40 + 50 + 1 flows
    dump = R.read_rows(R.open_reader(ms.conntrack_map, chunk=16), max_rows=20)
    assert dump.sampled and len(dump.rows) == 20
    assert dump.total == 91 and dump.entries == 182
    full = R.read_rows(R.open_reader(ms.conntrack_map), max_rows=1000)
    assert not full.sampled and len(full.rows) == 91


def test_sort_every_column_and_filter(ms: M.MapSet) -> None:
    D.fill_flows(ms, step=2, now=D.T0_NS)
    dump = R.read_rows(R.open_reader(ms.conntrack_map))
    for name in C.COLUMN_NAMES:
        for reverse in (False, True):
            view = C.apply_view(dump, C.ViewSpec(name, reverse))
            col = C.COLUMNS[C.COLUMN_NAMES.index(name)]
            keys = [col.sort_key(r) for r in view.rows]
            assert keys == sorted(keys, reverse=reverse != col.flip), name
    ages = [C.COLUMNS[5].text(r, D.T0_NS) for r in C.apply_view(dump, C.ViewSpec("age")).rows]
    assert ages[0] == "0s" and ages[-1] == "4m40s"          # age ascending: newest first
    by_target = C.apply_view(dump, C.ViewSpec("target"))
    ips = [socket.inet_aton(R.target_of(r).split(":")[0]) for r in by_target.rows]
    assert ips == sorted(ips)                    # numeric, not string, order
    view = C.apply_view(dump, C.ViewSpec("age", False, C.parse("103.2 UDP")))
    assert [R.client_of(r) for r in view.rows] == ["198.18.1.2:53000"]
    view = C.apply_view(dump, C.ViewSpec("age", False, C.parse("reset")))
    assert view.rows and all(R.state_of(r) == "reset" for r in view.rows)
    assert view.total == dump.total


def _row(port: int, target: int, pf: int, bf: int, flags: int = abi.CT_F_SEEN_REPLY
         ) -> R.Row:
    t = M.FiveTuple("198.18.1.2", D.VIP, port, 80)
    return R.make_row(t, (f"198.18.10{target}.2", 8080), flags=flags, packets=(pf, pf),
                      nbytes=(bf, 2 * bf))


def test_traffic_counts_growth_new_flows_and_closed_remainders() -> None:
    tr = TrafficTracker()
    s = 1_000_000_000
    tr.update([_row(1, 1, 10, 1000), _row(2, 2, 5, 500)], 10 * s)
    t1 = tr.targets["198.18.101.2:8080"]
    assert (t1.new_per_s, t1.bps_fwd) == (0, 0)    # no interval yet: history, not rate
    # Two seconds later: flow 1 grew by 100 B, flow 2 vanished after a closed event with
    # final counters 800 B, flow 3 is new with 300 B.
    closed = LbEvent(11 * s, "closed", "tcp", "fin", "198.18.1.2", 2, D.VIP, 80,
                     "198.18.102.2", 8080, 0, 8, 8, 800, 1600)
    targets = tr.update([_row(1, 1, 11, 1100), _row(3, 1, 3, 300)], 12 * s, [closed])
    t1, t2 = targets["198.18.101.2:8080"], targets["198.18.102.2:8080"]
    assert t1.bps_fwd == (100 + 300) / 2 and t1.bps_rev == (200 + 600) / 2
    assert t1.pps_fwd == (1 + 3) / 2
    assert t1.new_per_s == 0.5 and t1.active == 2 and t1.new_last_minute == 1
    assert t2.bps_fwd == (800 - 500) / 2 and t2.active == 0
    assert t1.total_bytes == 1000 + 2000 + 100 + 200 + 300 + 600
    # The same instant again changes nothing (the console's frozen test clock).
    assert tr.update([], 12 * s) is targets and t1.bps_fwd == 200
    assert event_key(closed) == bytes(M.FiveTuple("198.18.1.2", D.VIP, 2, 80).key())


def test_flows_never_listed_count_from_their_closed_event_once() -> None:
    """A spliced TLS flow opens and closes between two snapshots (the splicer deletes its
    entry): it counts as new with all its bytes. A flow whose closed event comes a
    refresh after it left the map adds only its remainder, and is not new again."""
    tr = TrafficTracker()
    s = 1_000_000_000
    tr.update([_row(1, 1, 10, 1000)], 10 * s)
    tls = LbEvent(11 * s, "closed", "tcp", "fin", "198.18.1.2", 7, D.VIP, 443,
                  "198.18.103.2", 8443, 0, 9, 7, 700, 1400)
    t = tr.update([_row(1, 1, 10, 1000)], 12 * s, [tls])["198.18.103.2:8443"]
    assert (t.new_per_s, t.bps_fwd, t.bps_rev, t.active) == (0.5, 350, 700, 0)
    assert t.total_bytes == 2100
    tr.update([], 14 * s)                         # flow 1 left; its event comes later
    late = LbEvent(15 * s, "closed", "tcp", "fin", "198.18.1.2", 1, D.VIP, 80,
                   "198.18.101.2", 8080, 0, 12, 12, 1200, 2400)
    t1 = tr.update([], 16 * s, [late])["198.18.101.2:8080"]
    assert (t1.new_per_s, t1.bps_fwd, t1.bps_rev) == (0, 100, 200)


def test_traffic_per_group_shared_targets_counted_apart() -> None:
    """One target behind :80, :82, a source route and an SNI route: each group gets the
    flows it chose (a source-routed flow by its flag and client, a spliced one by the SNI
    route its opened event names), and the address gets them all."""
    s = 1_000_000_000
    target = ("198.18.101.2", 8080)

    def row(client: str, port: int, vip_port: int, nbytes: int, flags: int = 0) -> R.Row:
        return R.make_row(M.FiveTuple(client, D.VIP, port, vip_port), target,
                          flags=abi.CT_F_SEEN_REPLY | flags, nbytes=(nbytes, 0))

    api = hostname_hash("api.example.test")
    opened = LbEvent(11 * s, "opened", "tcp", "", "198.18.1.2", 4, D.VIP, 443, *target,
                     11 * s, 0, 0, 0, 0, group="sni", sni_hash=api)
    tr = TrafficTracker()
    first = [row("198.18.1.2", 1, 80, 0), row("198.18.1.2", 2, 82, 0),
             row("198.18.2.7", 3, 80, 0, abi.CT_F_SOURCE)]
    finder = source_finder(["198.18.0.0/15", "198.18.2.0/24"])
    tr.update(first, 10 * s, (), finder)
    later = [row("198.18.1.2", 1, 80, 1000), row("198.18.1.2", 2, 82, 300),
             row("198.18.2.7", 3, 80, 50, abi.CT_F_SOURCE),
             row("198.18.1.2", 4, 443, 20, abi.CT_F_LOCAL)]
    address = tr.update(later, 12 * s, [opened], finder)["198.18.101.2:8080"]
    got = {str(g): t.total_bytes for (g, _t), t in
           by_group(tr.by_via, {api: "api.example.test"}).items()}
    assert got == {"listener :80": 1000, "listener :82": 300,
                   "source 198.18.2.0/24": 50, "SNI api.example.test": 20}
    assert address.total_bytes == 1370 and address.bps_fwd == 1370 / 2


def test_closed_flows_are_not_active() -> None:
    tr = TrafficTracker()
    rows = [_row(1, 1, 1, 1, abi.CT_F_SEEN_REPLY | abi.CT_F_RST),
            _row(2, 1, 1, 1, abi.CT_F_FIN_FWD | abi.CT_F_FIN_REV),
            _row(3, 1, 1, 1, abi.CT_F_FIN_FWD), _row(4, 1, 1, 1)]
    t = tr.update(rows, 1)["198.18.101.2:8080"]
    assert (t.flows, t.active) == (4, 2)


def test_sparkline_covers_the_minute_without_gaps() -> None:
    s = 1_000_000_000
    samples = [(t * s, 5 * s, float(t)) for t in range(5, 65, 5)]   # one sample per 5 s
    line = sparkline(samples, 60 * s, width=12)
    assert len(line) == 12 and " " not in line
    assert line[-1] == "█" and line[0] < line[5] < line[-1]
    assert sparkline(samples, 64 * s, width=12)[-1] == "▁"   # no sample yet for 60..64 s
    assert sparkline([], 64 * s, width=5) == "▁" * 5


def test_collector_rates_from_a_moving_clock(ms: M.MapSet) -> None:
    col, _clock = D.warm_collector(ms, steps=3, every=2.0)
    snap = col.collect([])
    assert snap.conns.total == 40 + 2 * D.NEW_PER_STEP + 1
    assert snap.rates.new_conns == D.NEW_PER_STEP / 2.0      # flows_created counter
    web = [snap.targets[f"{ip}:{port}"] for ip, port in D.TARGETS]
    assert sum(t.new_per_s for t in web) == D.NEW_PER_STEP / 2.0   # conntrack-derived
    assert snap.rates.bps_rev == sum(t.bps_rev for t in snap.targets.values()) > 0
    assert [lr.port for lr in snap.listeners] == [53, 80, 443]
    assert snap.listeners[1].interfaces == ("c1", "c2")
    assert [r.hostname for r in snap.sni_routes] == ["api.example.test", "www.example.test"]
    assert snap.stats_enabled and snap.conn_timeout == 300
    assert snap.uptime_s == 3725 + 4.0


def test_collector_samples_past_max_rows(ms: M.MapSet) -> None:
    D.fill_flows(ms, step=0, now=D.T0_NS)
    clock = D.FakeClock()
    col = Collector(ms, D.info(), clock=Clock(clock.mono_ns, clock.wall), max_rows=10)
    snap = col.collect()
    assert snap.conns.sampled and len(snap.conns.rows) == 10 and snap.conns.total == 41


def test_closed_flows_are_hidden_unless_asked(ms: M.MapSet) -> None:
    """Closed flows (FIN both ways) are left out and counted; resets stay in view."""
    D.fill_flows(ms, step=1, now=D.T0_NS)
    dump = R.read_rows(R.open_reader(ms.conntrack_map))
    states = [R.state_of(r) for r in dump.rows]
    hidden = C.apply_view(dump, C.ViewSpec())
    shown = C.apply_view(dump, C.ViewSpec(show_closed=True))
    assert hidden.closed_hidden == states.count("closed") > 0
    assert len(hidden.rows) == len(dump.rows) - states.count("closed")
    assert "closed" not in {R.state_of(r) for r in hidden.rows}
    assert "reset" in {R.state_of(r) for r in hidden.rows}
    assert len(shown.rows) == len(dump.rows) and shown.closed_hidden == 0
    assert all(C.is_closed(r[R.FLAGS]) == (R.state_of(r) == "closed") for r in dump.rows)
    # With a filter, the hidden count is of the flows the filter kept (a drill-down
    # that shows nothing says how many closed flows it holds back).
    b1 = C.apply_view(dump, C.ViewSpec(filter=C.parse("target:198.18.101.2")))
    assert b1.closed_hidden == sum(R.state_of(r) == "closed" and R.target_of(r).startswith(
        "198.18.101.2:") for r in dump.rows) < hidden.closed_hidden


def test_field_filters_and_negation_over_real_rows(ms: M.MapSet) -> None:
    D.fill_flows(ms, step=2, now=D.T0_NS)
    dump = R.read_rows(R.open_reader(ms.conntrack_map))

    def rows(text: str) -> list[R.Row]:
        return C.apply_view(dump, C.ViewSpec(filter=C.parse(text), show_closed=True)).rows

    everything = rows("")
    syn = rows("state:syn-sent")
    assert syn and {R.state_of(r) for r in syn} == {"syn-sent"}
    assert len(rows("!state:syn-sent")) == len(everything) - len(syn)
    b3 = rows("target:198.18.103.2")        # 8080 and the UDP flow's 9000
    assert {R.target_of(r) for r in b3} == {"198.18.103.2:8080", "198.18.103.2:9000"}
    assert not rows("target:198.18.103.20")   # a whole part, not a prefix of one
    assert {R.target_of(r) for r in rows("target:198.18.103.2:9000")} == {
        "198.18.103.2:9000"}
    assert [R.proto_of(r) for r in rows("proto:udp")] == ["udp"]
    assert "udp" not in {R.proto_of(r) for r in rows("!udp")}
    two = rows("client:198.18.2.")
    assert two and all(R.client_of(r).startswith("198.18.2.") for r in two)
    both = rows("client:198.18.2. !target:198.18.101.2 tcp")
    assert both and all(R.client_of(r).startswith("198.18.2.")
                        and not R.target_of(r).startswith("198.18.101.2:") for r in both)
    assert rows("backend:198.18.101.2") == rows("target:198.18.101.2")   # an alias


def test_fake_collector_shows_what_the_real_one_reads(ms: M.MapSet) -> None:
    """The UI snapshot tests render FakeCollector's snapshots (no BPF): they must be the
    snapshots the real Collector takes of the same scenario written into maps."""
    real = D.warm_collector(ms)[0].collect([])
    fake = D.FakeCollector().collect([])
    assert sorted(real.conns.rows) == sorted(fake.conns.rows)
    assert (real.conns.total, real.conns.entries) == (fake.conns.total, fake.conns.entries)
    assert real.rates == fake.rates and real.active == fake.active
    assert real.stack_pps == fake.stack_pps and real.reasons == fake.reasons
    assert real.reason_rates == fake.reason_rates and real.reason_rates
    assert real.counters == fake.counters and real.ct_max == fake.ct_max
    assert real.listeners == fake.listeners
    assert real.source_routes == fake.source_routes and real.sni_routes == fake.sni_routes
    assert real.targets.keys() == fake.targets.keys()
    for name, t in real.targets.items():
        f = fake.targets[name]
        assert (t.active, t.flows, t.new_per_s, t.bps_fwd, t.bps_rev, t.total_bytes) == (
            f.active, f.flows, f.new_per_s, f.bps_fwd, f.bps_rev, f.total_bytes), name
        assert list(t.rate_history) == list(f.rate_history), name
    assert real.group_traffic.keys() == fake.group_traffic.keys()
    for k, t in real.group_traffic.items():
        f = fake.group_traffic[k]
        assert (t.active, t.flows, t.new_per_s, t.bps_fwd, t.total_bytes) == (
            f.active, f.flows, f.new_per_s, f.bps_fwd, f.total_bytes), k
