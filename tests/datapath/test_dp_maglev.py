"""Maglev groups in the kernel: the XDP program (BPF_PROG_TEST_RUN) picks exactly what the
Python table and flow hash predict, so weights, disruption and cross-node agreement measured
on the builder hold on the packet path; conntrack keeps established flows on their target
across edits; an edit switches tables without a moment in which a flow meets a half-written
table or a table that disagrees with its route."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable

import pytest
from dp_harness import T1, T2, T3, T4, VIP, XDP_REDIRECT, Harness
from dp_packets import ACK, SYN, fast_tcp, parse

from lbtui import abi, bpfsys, maglev, netns
from lbtui import maps as M
from lbtui.control import apply
from lbtui.datapath import egress
from lbtui.datapath.loader import Datapath
from lbtui.maps.maglev import read_table, table_size
from lbtui.model import Config, DatapathSettings, Listener, SourceRoute
from lbtui.targets import RouteRecord, TargetGroup

PORT = 80
WEIGHTED = TargetGroup.of([(T1, 8080, 40), (T2, 8080, 30), (T3, 8080, 20), (T4, 8080, 10)])
EVEN = TargetGroup.of([(T1, 8080, 25), (T2, 8080, 25), (T3, 8080, 25), (T4, 8080, 25)])
WITHOUT_T2 = TargetGroup.of([(T1, 8080, 34), (T3, 8080, 33), (T4, 8080, 33)])


def config(group: TargetGroup, *, extra_maglev_route: bool = False) -> Config:
    sources = [SourceRoute("198.18.200.0/24", EVEN, hash="maglev")] if extra_maglev_route else []
    return Config(DatapathSettings(interfaces=["c1"]),
                  [Listener(PORT, group, "tcp", address=VIP, hash="maglev")], sources)


def sync(h: Harness, cfg: Config) -> None:
    apply.sync(h.maps, cfg, lambda names: [h.net.ifindex[n] for n in names])


def tuples(n: int, seed: int) -> list[tuple[str, int]]:
    """n distinct (client address, port) pairs the c1 link reaches (198.18.1.0/24)."""
    rng = random.Random(seed)
    out: set[tuple[str, int]] = set()
    while len(out) < n:
        out.add((f"198.18.1.{rng.randrange(2, 255)}", rng.randrange(1024, 65536)))
    return sorted(out)


def kernel_pick(h: Harness, client: str, port: int, flags: int = SYN) -> str:
    r = h.run(fast_tcp(client, VIP, port, PORT, flags))
    assert r.verdict == XDP_REDIRECT, (client, port, r.name, h.reasons())
    p = parse(r.data)
    assert p is not None
    return f"{p.dst}:{p.dport}"


def predicted(group: TargetGroup, client: str, port: int,
              size: int = maglev.DEFAULT_TABLE_SIZE) -> str:
    table = maglev.build_table(group.targets, size)
    return str(maglev.pick(table, group.targets,
                           maglev.flow_hash(client, VIP, port, PORT, abi.IPPROTO_TCP)))


def forget_flows(h: Harness) -> None:
    """Delete every conntrack entry: the next SYN of a tuple is a new flow again."""
    fd = h.maps.conntrack_map.fd
    for k in list(bpfsys.keys(fd, abi.CtKey)):
        bpfsys.delete(fd, k)


def listen_route(h: Harness) -> RouteRecord:
    r = M.lookup_listen_port(h.maps.listen_map, h.net.ifindex["c1"], PORT)
    assert r is not None
    return r


def test_kernel_picks_what_the_table_predicts_and_follows_the_weights(dp: Harness) -> None:
    sync(dp, config(WEIGHTED))
    route = listen_route(dp)
    assert route.flags & abi.ROUTE_F_MAGLEV and route.hash == "maglev"
    sample = tuples(6000, seed=1)
    got = Counter()
    for client, port in sample:
        target = kernel_pick(dp, client, port)
        assert target == predicted(WEIGHTED, client, port), (client, port)
        got[target] += 1
    for t in WEIGHTED.targets:
        # 6000 flows: binomial sd <= 0.64 %; 2.5 % is ~4 sd.
        assert abs(got[str(t)] / len(sample) - t.weight / 100) < 0.025, (str(t), got)
    assert dp.counters()["flows_created"] == len(sample)


def test_removing_a_target_moves_only_its_flows_on_the_kernels_pick(dp: Harness) -> None:
    sync(dp, config(EVEN))
    sample = tuples(4000, seed=2)
    before = [kernel_pick(dp, c, p) for c, p in sample]
    forget_flows(dp)
    sync(dp, config(WITHOUT_T2))
    after = [kernel_pick(dp, c, p) for c, p in sample]
    moved = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    gone = f"{T2}:8080"
    assert gone not in after
    assert len(moved) / len(sample) <= 1 / 4 + 0.02, len(moved)
    bystanders = sum(a != gone for a, _ in moved)
    assert bystanders / len(sample) <= 0.02, bystanders
    assert after == [predicted(WITHOUT_T2, c, p) for c, p in sample]


def test_two_independently_loaded_programs_pick_the_same_target(
        dp: Harness, make_datapath: Callable[..., Datapath]) -> None:
    """A second program compiled over maps of its own (as another node would be), whose
    group got another table index, picks the same target for every tuple of a sample."""
    other_dp = make_datapath("maglev2", {"max_connections": 16384, "max_maglev_groups": 4})
    other = Harness(other_dp.prog_fd, other_dp.maps, dp.net)
    try:
        egress.sync(other.maps, generic_only=False)
        sync(dp, config(WEIGHTED))
        only_route = config(WEIGHTED, extra_maglev_route=True)
        only_route.listeners = []
        sync(other, only_route)                     # the source route takes tables 0/1
        sync(other, config(WEIGHTED, extra_maglev_route=True))
        assert listen_route(dp).table // 2 != listen_route(other).table // 2
        for client, port in tuples(3000, seed=3):
            assert kernel_pick(dp, client, port) == kernel_pick(other, client, port)
    finally:
        other.close()


def test_established_flows_keep_their_target_across_edits(dp: Harness) -> None:
    sync(dp, config(EVEN))
    sample = tuples(600, seed=4)
    first = {t: kernel_pick(dp, *t) for t in sample}
    old_table = listen_route(dp).table
    old_content = read_table(dp.maps.maglev_map, old_table)
    sync(dp, config(WITHOUT_T2))                    # T2 removed, weights changed
    new_table = listen_route(dp).table
    assert new_table == old_table ^ 1, "the edit switches to the group's other table"
    assert read_table(dp.maps.maglev_map, old_table) == old_content, "never written in place"
    for t in sample:                                # packets of the established flows
        assert kernel_pick(dp, *t, flags=ACK) == first[t]
    on_t2 = [t for t in sample if first[t] == f"{T2}:8080"]
    assert on_t2, "some flows were on the removed target"
    fresh = tuples(300, seed=5)
    assert f"{T2}:8080" not in {kernel_pick(dp, c, p + 1 if p < 65535 else 1024)
                                for c, p in fresh if (c, p) not in first}
    sync(dp, config(WITHOUT_T2))                    # nothing changed: no table written
    assert listen_route(dp).table == new_table


def test_an_edit_never_exposes_a_half_written_table(dp: Harness) -> None:
    """Edits flip the group between two target lists (the middle target removed, so target
    indexes shift) while new flows arrive: every flow gets the target the old or the new
    config gives it, never another, never none."""
    a, b = config(EVEN), config(WITHOUT_T2)
    sync(dp, a)
    stop = threading.Event()
    errors: list[BaseException] = []
    edits = 0

    def edit() -> None:
        nonlocal edits
        try:
            with netns.inside(dp.net.ns):
                while not stop.is_set():
                    sync(dp, b if edits % 2 == 0 else a)
                    edits += 1
        except BaseException as e:   # reported by the main thread
            errors.append(e)

    editor = threading.Thread(target=edit)
    editor.start()
    try:
        for client, port in tuples(3000, seed=6):
            got = kernel_pick(dp, client, port)
            assert got in (predicted(EVEN, client, port), predicted(WITHOUT_T2, client, port))
            if errors:
                break
    finally:
        stop.set()
        editor.join()
    assert not errors, errors
    assert edits >= 10, edits
    assert dp.reasons().get("no_target", 0) == 0


@pytest.mark.parametrize("size", [4093, 16381])
def test_the_program_follows_the_maps_table_size(
        make_datapath: Callable[..., Datapath], dp_net: object, size: int) -> None:
    """The loader compiles the table size of the pinned map into the program."""
    d = make_datapath(f"mgsize{size}", {"max_connections": 4096, "maglev_table_size": size,
                                        "max_maglev_groups": 2})
    h = Harness(d.prog_fd, d.maps, dp_net)  # type: ignore[arg-type]
    try:
        with netns.inside(h.net.ns):
            egress.sync(h.maps, generic_only=False)
            assert table_size(h.maps.maglev_map) == size
            sync(h, config(WEIGHTED))
            for client, port in tuples(500, seed=7):
                assert kernel_pick(h, client, port) == predicted(WEIGHTED, client, port, size)
    finally:
        h.close()
