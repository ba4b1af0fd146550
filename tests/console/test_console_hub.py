"""The console's reading of the hub's messages and of the applied record, without root:
typed rows from the hub's own message shapes, SNI names from the applied record, and
per-(group, target) rates of new connections."""

from __future__ import annotations

import console_data as D

from lbtui.console.data.eventfeed import EventFeed
from lbtui.console.data.hub import OpenedTracker, TargetHealth, group_key
from lbtui.console.data.names import sni_names
from lbtui.control.health import HealthBook
from lbtui.maps.events import LbEvent
from lbtui.model import GroupKey, GroupKind, HealthSettings
from lbtui.sni import hostname_hash


def test_applied_record_names_sni_hashes() -> None:
    applied = {"sni_route": [{"hostname": "API.Example.test", "targets": []},
                             {"hostname": "not a hostname!", "targets": []},
                             "garbage"]}
    assert sni_names(applied) == {hostname_hash("api.example.test"): "api.example.test"}
    assert sni_names(None) == {} and sni_names({}) == {}


def test_feed_turns_hub_messages_into_rows_and_names_hashes() -> None:
    feed = D.event_feed()
    feed.on_message({"type": "health", "targets": [{"kind": "nonsense"}], "checks": []})
    assert feed.take_hub().health == []            # a malformed entry is left out
    hub = D.event_feed().take_hub()
    api = hostname_hash("api.example.test")
    named = hub.rename({api: "api.example.test"})
    groups = {str(h.group) for h in named.health}
    assert "SNI api.example.test" in groups and not any("#" in g for g in groups)
    assert {str(h.group) for h in hub.health} - groups == {f"SNI #{api:016x}"}
    assert not hub.checks["198.18.103.2:8080"].in_rotation
    assert hub.checks["198.18.101.2:8080"].in_rotation
    kinds = [(n.kind, n.source, n.new) for n in hub.notices]
    assert kinds == [("edit", "ctl", ""), ("health", "traffic", "failing"),
                     ("check", "check", "down")]
    assert D.event_feed().take_hub().notices and not feed.take_hub().notices  # taken once


def test_the_hubs_own_snapshot_parses() -> None:
    """What HealthBook.snapshot sends is what the console reads."""
    book = HealthBook(HealthSettings(), lambda ev: GroupKey(GroupKind.LISTENER, ev.vip_port))
    ev = LbEvent(0, "closed", "tcp", "rst", "198.18.1.2", 1, D.VIP, 82, "198.18.101.2",
                 8080, 0, 1, 1, 60, 0, "listener", False, True, 0)
    book.record(ev)
    feed = EventFeed()
    feed.on_message({"type": "health", "targets": book.snapshot(), "checks": []})
    (h,) = feed.take_hub().health
    assert h == TargetHealth(group_key("listener", 82), "198.18.101.2:8080", "healthy",
                             closed=1, unanswered=1, resets=1, recent_failed=1)


def test_new_connections_per_group_from_cumulative_counts() -> None:
    s = 1_000_000_000
    g80, g82 = GroupKey(GroupKind.LISTENER, 80), GroupKey(GroupKind.LISTENER, 82)
    t = "198.18.101.2:8080"
    tr = OpenedTracker()
    tr.update([TargetHealth(g80, t, opened=100), TargetHealth(g82, t, opened=7)], 10 * s)
    got = tr.update([TargetHealth(g80, t, opened=120), TargetHealth(g82, t, opened=8)],
                    12 * s)
    assert (got[(g80, t)].per_s, got[(g82, t)].per_s) == (10.0, 0.5)
    assert got[(g80, t)].last_minute == 20
    # The hub restarted (counts from zero): no negative rates.
    again = tr.update([TargetHealth(g80, t, opened=3)], 13 * s)
    assert again[(g80, t)].per_s == 3.0
