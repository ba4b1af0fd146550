"""Spliced connections as flows: conntrack entries (LOCAL), live counters, opened/closed
events in the shared ring buffer, operator deletion, idle ageing and stop."""

from __future__ import annotations

import socket
import ssl

import pytest

from lbtui import abi
from lbtui import maps as M
from lbtui.maps.events import EventReader, LbEvent

from .conftest import wait_for
from .tlstools import TLS_PORT, client_context

pytestmark = [pytest.mark.datapath, pytest.mark.netns, pytest.mark.timeout(300)]


@pytest.fixture
def lab(sni_lab):
    lab = sni_lab(n_clients=1, n_backends=2)
    lab.listen(443, lab.group(("backend2", 100)))
    M.add_sni_route(lab.maps.sni_map, "a.sni.test", lab.group(("backend1", 100)))
    lab.sp = lab.splicer(443, stats_interval=0.2)
    lab.events = []
    lab.reader = EventReader(lab.maps.stats_ringbuf, lab.events.append)
    lab.reader.drain()
    lab.events.clear()
    yield lab
    lab.reader.close()


def _echo_conn(lab, sni="a.sni.test"):
    ctx = client_context(lab.certs)
    with lab.in_client():
        raw = socket.create_connection((lab.vip, 443), timeout=10)
    tls = ctx.wrap_socket(raw, server_hostname=sni)
    f = tls.makefile("rwb", buffering=0)
    f.write(b"ECHO\n")
    assert f.readline().split()[0] in (b"backend1", b"backend2")
    return tls, f


def _conn(lab, port):
    found = [c for c in M.list_connections(lab.maps.conntrack_map) if c.client_port == port]
    return found[0] if found else None


def _events_for(lab, port) -> list[LbEvent]:
    lab.reader.poll(50)
    return [e for e in lab.events if e.client_port == port]


def test_flow_listed_with_counters_and_events(lab):
    tls, f = _echo_conn(lab)
    port = tls.getsockname()[1]
    c = _conn(lab, port)
    assert c is not None, "the spliced flow must be in conntrack while open"
    b1 = lab.backend("backend1")
    assert (c.client_ip, c.vip_ip, c.vip_port) == (lab.topo.clients[0].ip, lab.vip, 443)
    assert c.target == f"{b1.ip}:{TLS_PORT}"
    assert c.flags & abi.CT_F_LOCAL and c.flags & abi.CT_F_STATS
    assert c.state == "established"
    # Counters follow the traffic (refreshed every stats_interval).
    for _ in range(5):
        f.write(b"x" * 4000 + b"\n")
        assert f.readline() == b"backend1 " + b"x" * 4000 + b"\n"
    wait_for(lambda: _conn(lab, port).bytes_fwd > 20000 and _conn(lab, port).bytes_rev > 20000,
             what="counters to follow the traffic")
    assert _conn(lab, port).packets_fwd > 0 and _conn(lab, port).packets_rev > 0
    # The XDP program passed the listener's packets to the stack and the flow's afterwards.
    assert M.read_counters(lab.maps.counters_map)["sni_passed"] >= 1
    f.close()
    tls.close()
    wait_for(lambda: _conn(lab, port) is None, what="the entry to go at close")
    wait_for(lambda: len(_events_for(lab, port)) == 2, what="opened and closed events")
    opened, closed = _events_for(lab, port)
    assert (opened.kind, closed.kind) == ("opened", "closed")
    assert opened.target == closed.target == f"{b1.ip}:{TLS_PORT}"
    assert (opened.vip_ip, opened.vip_port, opened.proto) == (lab.vip, 443, "tcp")
    assert closed.reason == "fin"
    assert closed.bytes_fwd > 20000 and closed.bytes_rev > 20000
    assert closed.created_ns == opened.created_ns
    assert lab.sp.stats()["closed"]["fin"] == 1


def test_stats_disabled_means_no_events_but_still_listed(lab):
    M.disable_stats(lab.maps.settings_map)
    tls, f = _echo_conn(lab)
    port = tls.getsockname()[1]
    assert _conn(lab, port) is not None
    f.close()
    tls.close()
    wait_for(lambda: _conn(lab, port) is None, what="the entry to go")
    assert _events_for(lab, port) == []


def test_operator_delete_resets_the_connection(lab):
    tls, f = _echo_conn(lab)
    port = tls.getsockname()[1]
    other, of = _echo_conn(lab)
    c = _conn(lab, port)
    assert M.delete_connection(lab.maps.conntrack_map, c.five_tuple)
    tls.settimeout(5)
    with pytest.raises((ConnectionResetError, ssl.SSLError, OSError)):
        # The splicer resets it at its next refresh; reads then fail.
        while f.readline():
            pass
        raise ConnectionResetError("closed")
    wait_for(lambda: lab.sp.stats()["closed"]["deleted"] == 1, what="the deletion count")
    closed = [e for e in _events_for(lab, port) if e.kind == "closed"]
    assert closed and closed[0].reason == "rst"
    # The other connection is untouched.
    of.write(b"ok\n")
    assert of.readline() == b"backend1 ok\n"
    other.close()


def test_idle_flow_ages_out(lab):
    M.set_connection_timeout(lab.maps.settings_map, 1)
    tls, _f = _echo_conn(lab)
    port = tls.getsockname()[1]
    wait_for(lambda: lab.sp.stats()["closed"]["aged"] == 1, timeout=5,
             what="the idle flow to age out")
    assert _conn(lab, port) is None
    closed = [e for e in _events_for(lab, port) if e.kind == "closed"]
    assert closed and closed[0].reason == "aged"
    tls.close()


def test_stop_resets_open_flows_and_cleans_up(lab):
    conns = [_echo_conn(lab) for _ in range(3)]
    ports = [t.getsockname()[1] for t, _ in conns]
    assert all(_conn(lab, p) is not None for p in ports)
    lab.sp.stop()
    assert all(_conn(lab, p) is None for p in ports)
    s = lab.sp.stats()
    assert s["closed"]["stopped"] == 3 and s["active"] == 0 and not s["running"]
    for p in ports:
        assert [e.reason for e in _events_for(lab, p) if e.kind == "closed"] == ["rst"]
    for tls, f in conns:
        tls.settimeout(5)
        with pytest.raises((ConnectionResetError, ssl.SSLError, OSError)):
            if not f.readline():
                raise ConnectionResetError("closed")
        tls.close()
    # Nothing listens any more, and a second stop is harmless.
    with lab.in_client(), pytest.raises(ConnectionRefusedError):
        socket.create_connection((lab.vip, 443), timeout=5)
    lab.sp.stop()


def test_start_failure_leaves_nothing_running(lab):
    from lbtui.splicer import Splicer

    dup = Splicer(lab.maps, lab.datapath.emit_fd, lab.vip, 443, netns=lab.topo.lb_ns)
    with pytest.raises(OSError, match=r"cannot listen on 198\.18\.0\.10:443"):
        dup.start()
    assert dup.stats()["running"] is False
    dup.stop()
    with pytest.raises(ValueError, match="hello_timeout"):
        Splicer(lab.maps, lab.datapath.emit_fd, lab.vip, 443, hello_timeout=0)
    with pytest.raises(ValueError, match="max_pending"):
        Splicer(lab.maps, lab.datapath.emit_fd, lab.vip, 443, max_pending=0)
    # The running splicer was not disturbed.
    tls, _f = _echo_conn(lab)
    tls.close()
