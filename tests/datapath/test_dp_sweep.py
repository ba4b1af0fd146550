"""The userspace sweep: idle flows go after the timeout, finished flows after a short
linger, both tuples of a flow together."""

from __future__ import annotations

from dp_harness import CLIENT, T1, VIP, Harness
from dp_packets import tcp

from lbtui import maps as M
from lbtui.targets import TargetGroup

S = 1_000_000_000


def test_finished_flows_go_after_the_linger_open_ones_after_the_timeout(dp: Harness) -> None:
    dp.listen(80, TargetGroup.single(T1, 8080))
    dp.run(tcp(CLIENT, VIP, 40000, 80, "S"))                 # stays open
    dp.run(tcp(CLIENT, VIP, 40001, 80, "S"))                 # will finish
    dp.run(tcp(CLIENT, VIP, 40001, 80, "FA"))
    dp.run(tcp(T1, CLIENT, 8080, 40001, "FA"), iface="b1")
    done = dp.connection(CLIENT, 40001, 80)
    assert done is not None and done.state == "closed"
    # Two tuples per flow: a finished flow keeps its reply tuple for the linger, since the
    # target's last ACKs still belong to it.
    assert len(dp.ct_entries()) == 4
    ct = dp.maps.conntrack_map
    t0 = done.last_seen_ns

    assert M.clear_stale_connections(ct, t0 + 5 * S, 300 * S, closed_timeout_ns=10 * S) == []
    removed = M.clear_stale_connections(ct, t0 + 11 * S, 300 * S, closed_timeout_ns=10 * S)
    assert [c.client_port for c in removed] == [40001]
    assert dp.connection(CLIENT, 40000, 80) is not None
    assert len(dp.ct_entries()) == 2                         # the open flow's two tuples

    removed = M.clear_stale_connections(ct, t0 + 301 * S, 300 * S)
    assert [c.client_port for c in removed] == [40000]
    assert dp.ct_entries() == {}
    assert M.read_counters(dp.maps.counters_map)["flows_deleted"] == 2
