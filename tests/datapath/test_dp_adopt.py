"""Adoption: a TCP packet without a SYN and without a flow, on a Maglev group, is given a
flow with the target the group's table picks (the target any node with the same group
picked for the connection's SYN), counted as flows_adopted. Weighted groups never adopt;
neither does a Maglev group for a reset, a bare FIN, or a connection this host's own
stack holds."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator

import pytest
from dp_harness import CLIENT, T1, T2, T3, T4, VIP, XDP_PASS, XDP_REDIRECT, Harness
from dp_packets import ACK, FIN, PSH, RST, SYN, fast_tcp, parse

from lbtui import abi, bpfsys, maglev
from lbtui.control import apply
from lbtui.model import Config, DatapathSettings, Listener
from lbtui.targets import TargetGroup

PORT = 80
GROUP = TargetGroup.of([(T1, 8080, 40), (T2, 8080, 30), (T3, 8080, 20), (T4, 8080, 10)])


def sync(h: Harness, hash_: str) -> None:
    cfg = Config(DatapathSettings(interfaces=["c1"]),
                 [Listener(PORT, GROUP, "tcp", address=VIP, hash=hash_)], [])
    apply.sync(h.maps, cfg, lambda names: [h.net.ifindex[n] for n in names])


@pytest.fixture
def mdp(dp: Harness) -> Iterator[Harness]:
    """The datapath with a Maglev listener on VIP:80."""
    sync(dp, "maglev")
    yield dp


def predicted(client: str, port: int) -> str:
    table = maglev.build_table(GROUP.targets, maglev.DEFAULT_TABLE_SIZE)
    return str(maglev.pick(table, GROUP.targets,
                           maglev.flow_hash(client, VIP, port, PORT, abi.IPPROTO_TCP)))


def sent_to(h: Harness, frame: bytes) -> str:
    r = h.run(frame)
    assert r.verdict == XDP_REDIRECT, (r.name, h.reasons())
    p = parse(r.data)
    assert p is not None
    return f"{p.dst}:{p.dport}"


def forget_flows(h: Harness) -> None:
    fd = h.maps.conntrack_map.fd
    for k in list(bpfsys.keys(fd, abi.CtKey)):
        bpfsys.delete(fd, k)


def test_a_maglev_group_adopts_a_connection_it_never_saw(mdp: Harness) -> None:
    rng = random.Random(7)
    sample = {(f"198.18.1.{rng.randrange(2, 255)}", rng.randrange(1024, 65536))
              for _ in range(300)}
    for client, port in sample:
        target = sent_to(mdp, fast_tcp(client, VIP, port, PORT, ACK | PSH, seq=5, ack=9,
                                       payload=b"mid-stream"))
        assert target == predicted(client, port), (client, port)
        conn = mdp.connection(client, port, PORT)
        assert conn is not None and f"{conn.target_ip}:{conn.target_port}" == target
        v = mdp.raw_ct(client, VIP, port, PORT)
        assert v is not None and v.flags & abi.CT_F_ADOPTED and v.flags & abi.CT_F_SEEN_REPLY
    c = mdp.counters()
    assert (c["flows_adopted"], c["flows_created"]) == (len(sample), len(sample))


def test_an_adopted_flow_carries_the_connection_both_ways(mdp: Harness) -> None:
    target = sent_to(mdp, fast_tcp(CLIENT, VIP, 41000, PORT, ACK, seq=5, ack=9))
    tip, tport = target.split(":")
    # The target's answer goes back from the VIP ...
    r = mdp.run(fast_tcp(tip, CLIENT, int(tport), 41000, ACK | PSH, payload=b"pong"),
                iface="b1")
    assert r.verdict == XDP_REDIRECT
    p = parse(r.data)
    assert p is not None and (p.src, p.sport, p.dst, p.dport) == (VIP, PORT, CLIENT, 41000)
    # ... and the client's next packets follow the flow, not a new pick.
    assert sent_to(mdp, fast_tcp(CLIENT, VIP, 41000, PORT, ACK, seq=6, ack=13)) == target
    assert mdp.counters()["flows_adopted"] == 1


def test_a_connection_moved_from_another_node_keeps_its_target(mdp: Harness) -> None:
    """The SYN went through "node A" (this program, flow then forgotten, as if another
    node had held it): the mid-stream packet gets the target the SYN got."""
    rng = random.Random(8)
    ports = rng.sample(range(1024, 65536), 200)
    first = {p: sent_to(mdp, fast_tcp(CLIENT, VIP, p, PORT, SYN)) for p in ports}
    forget_flows(mdp)
    for p in ports:
        assert sent_to(mdp, fast_tcp(CLIENT, VIP, p, PORT, ACK, seq=1, ack=1)) == first[p]


def test_weighted_groups_do_not_adopt(dp: Harness) -> None:
    sync(dp, "weighted")
    frame = fast_tcp(CLIENT, VIP, 42000, PORT, ACK)
    r = dp.run(frame)
    assert (r.verdict, r.data) == (XDP_PASS, frame)
    assert dp.ct_entries() == {}
    assert dp.counters()["flows_adopted"] == 0
    assert dp.reasons("c1") == {"no_flow": 1}


@pytest.mark.parametrize("flags", [RST, RST | ACK, FIN, SYN | ACK, PSH],
                         ids=["rst", "rst-ack", "bare-fin", "syn-ack", "no-ack"])
def test_resets_and_packets_without_an_ack_are_not_adopted(mdp: Harness, flags: int) -> None:
    frame = fast_tcp(CLIENT, VIP, 43000, PORT, flags)
    r = mdp.run(frame)
    assert (r.verdict, r.data) == (XDP_PASS, frame)
    assert mdp.ct_entries() == {}
    assert mdp.reasons("c1") == {"no_flow": 1}


def test_a_fin_ack_is_adopted_as_a_closing_flow(mdp: Harness) -> None:
    sent_to(mdp, fast_tcp(CLIENT, VIP, 44000, PORT, FIN | ACK))
    v = mdp.raw_ct(CLIENT, VIP, 44000, PORT)
    assert v is not None and v.flags & abi.CT_F_ADOPTED and v.flags & abi.CT_F_FIN_FWD


def test_a_connection_of_this_hosts_own_stack_is_not_adopted(mdp: Harness) -> None:
    """A local service on the listener's port (the VIP is local here) with a connection
    that predates the listener: its packets stay with the stack. The listening socket
    alone does not stop adoption: it is no connection."""
    with socket.socket() as srv, socket.socket() as cli:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((VIP, PORT))
        srv.listen()
        cli.bind((VIP, 0))
        cli.connect((VIP, PORT))
        conn, _ = srv.accept()
        with conn:
            cport = cli.getsockname()[1]
            frame = fast_tcp(VIP, VIP, cport, PORT, ACK, seq=1, ack=1)
            r = mdp.run(frame)
            assert (r.verdict, r.data) == (XDP_PASS, frame)
            assert mdp.raw_ct(VIP, VIP, cport, PORT) is None
            assert mdp.reasons("c1") == {"no_flow": 1}
            # Another client's connection, unknown to the stack, is adopted.
            other = fast_tcp(CLIENT, VIP, 45000, PORT, ACK, seq=1, ack=1)
            assert sent_to(mdp, other) == predicted(CLIENT, 45000)
    assert mdp.counters()["flows_adopted"] == 1
