"""The topology matrix: every shape of ``shapes`` x every XDP mode the kernel allows there.

Each cell runs a real ``lbtui serve`` on the shape, real backend servers
(``lbtui.lab.servers``: HTTP 8080, UDP 9000, HTTPS 8443) and real clients:

- TCP: curl from both clients, 200 new connections each, to VIP:80; weights 50/30/20/0;
- UDP: 100 datagrams from each client, each a new flow, answered from VIP:9000;
- TLS: an SNI listener on VIP:443 (splicer), an SNI route for www.matrix.test, Python ssl
  and curl --resolve;
- hijack: balanced connections from client1, then direct connections from client1 to the
  backend each went to, reusing its client port: all must connect at once, with no
  retransmitted SYN.

Every connection must succeed: a black hole shows as a curl timeout or an unanswered
datagram, named in the failure with the attach modes and lbtui's counters. Each shape is
built once (cells are ordered by shape) and each cell starts one serve.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from lbtui import netns
from lbtui.lab import topology as T
from lbtui.lab.tlscerts import TlsFiles, make_certs

from . import probes as P
from . import shapes as S
from .serving import Served, serving, write_config

pytestmark = [pytest.mark.datapath, pytest.mark.netns]

TAG = f"m{os.getpid() % 100000}"
HTTP_WEIGHTS = {"backend1": 50, "backend2": 30, "backend3": 20, "backend4": 0}
UDP_WEIGHTS = {f"backend{j}": 25 for j in range(1, 5)}
TLS_DEFAULT = {"backend1": 50, "backend2": 50}
SNI_HOST, SNI_TARGETS = "www.matrix.test", {"backend3": 50, "backend4": 50}
OTHER_HOST = "other.matrix.test"
TLS_PORT = 8443
UDP_PORT = 9000

# Every XDP mode each shape allows (shapes.SHAPES): "bridge" has no native cell, because a
# Linux bridge has no native XDP and br0 is where its replies arrive.
CELLS = [(shape, mode) for shape, spec in S.SHAPES.items() for mode in spec.modes]


def _group(topo: T.Topology, weights: dict[str, int], port: int) -> str:
    ips = {b.node: b.ip for b in topo.backends}
    rows = [f'  {{ ip = "{ips[n]}", port = {port}, weight = {w} }}' for n, w in weights.items()]
    return "[\n" + ",\n".join(rows) + ",\n]"


def listeners(topo: T.Topology) -> str:
    return f"""\
[[listener]]
port = 80
protocol = "tcp"
targets = {_group(topo, HTTP_WEIGHTS, T.HTTP_PORT)}

[[listener]]
port = {UDP_PORT}
protocol = "udp"
targets = {_group(topo, UDP_WEIGHTS, UDP_PORT)}

[[listener]]
port = 443
protocol = "tcp"
sni = true
address = "{topo.vip}"
targets = {_group(topo, TLS_DEFAULT, TLS_PORT)}

[[sni_route]]
hostname = "{SNI_HOST}"
targets = {_group(topo, SNI_TARGETS, TLS_PORT)}
"""


# Shapes rebuilt for every cell: on one segment the LB's kernel answers hairpinned direct
# traffic with ICMP redirects, rate-limited per peer with state no flush resets; a fresh LB
# namespace makes each cell see the first redirect, as a fresh host would.
FRESH_PER_CELL = {"onearm"}


class ShapeCache:
    """One built shape at a time, with its backend servers: asking for another tears the
    current one down (cells come ordered by shape, so each is built once, except those in
    FRESH_PER_CELL)."""

    def __init__(self, certs: TlsFiles) -> None:
        self.certs = certs
        self.current: S.Shape | None = None

    def get(self, name: str) -> S.Shape:
        if (self.current is not None and self.current.name == name
                and name not in FRESH_PER_CELL):
            return self.current
        self.close()
        shape = S.build(name, TAG)
        self.current = shape
        T.start_backend_servers(shape.topo, udp=UDP_PORT, tls=TLS_PORT,
                                cert=self.certs.cert, key=self.certs.key)
        return shape

    def close(self) -> None:
        if self.current is not None:
            S.teardown(self.current)
            self.current = None


@dataclass
class Cell:
    shape: S.Shape
    mode: str
    served: Served
    certs: TlsFiles

    @property
    def topo(self) -> T.Topology:
        return self.shape.topo

    def diagnosis(self) -> str:
        """What a failing cell needs to be understood: where XDP runs, lbtui's counters,
        serve's last lines."""
        try:
            st = self.served.status()
            modes = {i["ifname"]: i["xdp_mode"] for i in st["interfaces"]}
            counters = {k: v for k, v in st["counters"].items() if v}
        except (RuntimeError, KeyError) as e:
            modes, counters = {}, {"status": str(e)}
        return (f"\n  cell {self.shape.name}/{self.mode}: XDP {modes}\n  counters {counters}"
                f"\n  serve:\n{self.served.output(8)}")


def _forget_routes(topo: T.Topology) -> None:
    """Drop the endpoints' cached routes (redirects they took included)."""
    for e in topo.clients + topo.backends:
        subprocess.run(["ip", "netns", "exec", e.ns, "ip", "route", "flush", "cache"],
                       check=True, capture_output=True, timeout=10)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_certs(tmp_path_factory.mktemp("matrix-certs"), [SNI_HOST, OTHER_HOST])


@pytest.fixture(scope="module")
def shape_cache(certs: TlsFiles) -> Iterator[ShapeCache]:
    cache = ShapeCache(certs)
    try:
        yield cache
    finally:
        cache.close()


@pytest.fixture(scope="module", params=CELLS, ids=[f"{s}-{m}" for s, m in CELLS])
def cell(request: pytest.FixtureRequest, shape_cache: ShapeCache, certs: TlsFiles,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cell]:
    name, mode = request.param
    shape = shape_cache.get(name)
    _forget_routes(shape.topo)   # nothing learnt in another cell
    instance = f"{TAG}-{name}-{mode}"
    config = write_config(shape, tmp_path_factory.mktemp("matrix"), instance, mode,
                          listeners(shape.topo))
    with serving(config, instance) as served:
        yield Cell(shape, mode, served, certs)


def test_xdp_runs_in_the_mode_asked(cell: Cell) -> None:
    """``auto``: native on every veth, generic on the bridge (no native XDP there)."""
    modes = cell.served.xdp_modes()
    assert set(modes) == set(cell.shape.xdp_interfaces), modes
    for ifname, mode in modes.items():
        if cell.mode == "auto":
            assert mode == ("generic" if ifname == "br0" else "native"), modes
        else:
            assert mode == cell.mode, modes


def test_balanced_flows_still_answered_from_vip_after_direct_traffic(cell: Cell) -> None:
    """Clients and backends talking directly through the LB host (ping both ways) must not
    teach them to bypass it: on one segment (one-arm) the kernel answers such hairpinned
    traffic with ICMP redirects, which endpoints accept by default (shared_media), and a
    backend that took one sends its answers to the client directly, unbalanced. First in a
    cell (a fresh LB's kernel sends the first redirect to each peer at once; later ones are
    rate-limited); what the endpoints learnt is forgotten afterwards, for the other
    tests."""
    client = cell.topo.clients[0]
    try:
        _balanced_after_direct_traffic(cell, client)
    finally:
        _forget_routes(cell.topo)


def _balanced_after_direct_traffic(cell: Cell, client: T.Endpoint) -> None:
    for b in cell.topo.backends:
        for src, dst in ((client.ns, b.ip), (b.ns, client.ip)):
            r = subprocess.run(["ip", "netns", "exec", src, "ping", "-c", "1", "-W", "2", dst],
                               capture_output=True, text=True, timeout=10)
            assert r.returncode == 0, f"direct ping {src} -> {dst} failed: {r.stdout}"
    run = P.udp_exchanges(client.ns, cell.topo.vip, UDP_PORT, 40)
    assert run.lost == 0 and not run.wrong_source, (
        f"{run.lost} unanswered, answers not from VIP:{UDP_PORT}: {set(run.wrong_source)}"
        f"{cell.diagnosis()}")
    (tcp,) = P.curl_many({client.ns: P.curl_argv(client.ns, [f"http://{cell.topo.vip}/"] * 40)
                          }).values()
    assert tcp.returncode == 0 and len(tcp.answers) == 40, (tcp, cell.diagnosis())


@dataclass
class HttpRun:
    """400 new connections through the VIP (curl, 200 from each client), then what the
    clients' TCP stacks say about them half a second later."""

    runs: dict[str, P.CurlRun]
    unfinished: dict[str, list[str]]    # per client: sockets still retransmitting a FIN
    resent: dict[str, dict[str, int]]   # per client: retransmitted segments and SYNs


@pytest.fixture(scope="module")
def http_run(cell: Cell) -> HttpRun:
    vip, clients = cell.topo.vip, cell.topo.clients
    before = {c.ns: P.tcp_counters(c.ns) for c in clients}
    runs = P.curl_many({c.ns: P.curl_argv(c.ns, [f"http://{vip}/"] * 200) for c in clients})
    time.sleep(0.5)   # a lost FIN or ACK shows as a retransmission after 200 ms
    return HttpRun(runs, {c.node: P.unfinished_closes(c.ns, vip) for c in clients},
                   {c.node: P.counters_delta(c.ns, before[c.ns]) for c in clients})


def test_tcp_connections_split_by_weight_none_failed(cell: Cell, http_run: HttpRun) -> None:
    failed = {ns: f"{len(r.answers)}/200 answered, curl rc {r.returncode}: {r.stderr[-200:]}"
              for ns, r in http_run.runs.items()
              if r.returncode != 0 or len(r.answers) != 200}
    assert not failed, f"connections failed: {failed}{cell.diagnosis()}"
    counts = Counter(backend for r in http_run.runs.values() for backend, _ in r.answers)
    assert not P.split_problems(counts, HTTP_WEIGHTS), (
        f"{P.split_problems(counts, HTTP_WEIGHTS)}{cell.diagnosis()}")
    syns = {c: d["TcpExtTCPSynRetrans"] for c, d in http_run.resent.items()}
    assert not any(syns.values()), f"SYNs retransmitted: {syns}{cell.diagnosis()}"


def test_tcp_connections_closed_cleanly(cell: Cell, http_run: HttpRun) -> None:
    """Every close acknowledged (whoever closed first, or both at once), nothing
    retransmitted: the packets that end a flow are translated like the others."""
    assert not any(http_run.unfinished.values()), (
        f"FINs not acknowledged, still retransmitted: {http_run.unfinished}, "
        f"{http_run.resent}{cell.diagnosis()}")
    assert not any(v for d in http_run.resent.values() for v in d.values()), (
        f"segments retransmitted: {http_run.resent}{cell.diagnosis()}")


def _reasons(st: dict) -> int:
    return sum(sum(i.get("reasons", {}).values()) for i in st["interfaces"])


def test_packets_left_to_the_kernel_are_counted_by_reason(cell: Cell) -> None:
    """Every balanced packet the LB's kernel forwarded was handed to it by lbtui with a
    counted reason (nothing is lost or forwarded silently). On ``redirect`` and
    ``onearmxdp`` (a devmap redirect back out of lb0) in native mode XDP forwards
    everything itself: the kernel forwards (almost) nothing."""
    client, lb = cell.topo.clients[0], cell.topo.lb_ns
    fwd, reasons = P.nstat(lb, "IpForwDatagrams"), _reasons(cell.served.status())
    (run,) = P.curl_many({client.ns: P.curl_argv(client.ns, [f"http://{cell.topo.vip}/"] * 50)
                          }).values()
    assert run.returncode == 0 and len(run.answers) == 50, (run, cell.diagnosis())
    forwarded = P.counters_delta(lb, fwd)["IpForwDatagrams"]
    counted = _reasons(cell.served.status()) - reasons
    assert forwarded <= counted, (
        f"the kernel forwarded {forwarded} packets but lbtui counted {counted} handed to it: "
        f"packets of balanced flows went untranslated or uncounted{cell.diagnosis()}")
    if (cell.shape.name, cell.mode) in (("redirect", "native"), ("onearmxdp", "native")):
        assert forwarded <= 10, f"{forwarded} packets took the stack{cell.diagnosis()}"


def test_udp_answered_from_vip_split_by_weight(cell: Cell) -> None:
    counts: Counter[str] = Counter()
    for c in cell.topo.clients:
        run = P.udp_exchanges(c.ns, cell.topo.vip, UDP_PORT, 100)
        assert run.lost == 0, (f"{c.node}: {run.lost} datagrams unanswered after "
                               f"{sum(run.answers.values())} answers{cell.diagnosis()}")
        assert not run.wrong_source, f"answers not from VIP:{UDP_PORT}: {run.wrong_source[:5]}"
        counts += run.answers
    assert not P.split_problems(counts, UDP_WEIGHTS), (
        f"{P.split_problems(counts, UDP_WEIGHTS)}{cell.diagnosis()}")


def _tls_answers(answers: list[str], hostname: str) -> Counter[str]:
    """Backends named in TLS answers (``<name> sni=<name seen>``); each must have seen
    ``hostname``, i.e. the ClientHello reached it intact."""
    seen = [a.partition(" sni=") for a in answers]
    assert all(sni == hostname for _, _, sni in seen), answers
    return Counter(name for name, _, _ in seen)


def test_tls_routed_by_server_name(cell: Cell) -> None:
    c1, c2 = cell.topo.clients
    vip, ca = cell.topo.vip, cell.certs.ca
    try:
        routed = [P.tls_get(c1.ns, vip, SNI_HOST, ca) for _ in range(16)]
        other = [P.tls_get(c1.ns, vip, OTHER_HOST, ca) for _ in range(8)]
    except OSError as e:
        raise AssertionError(f"TLS through the splicer failed: {e!r}{cell.diagnosis()}") from e
    assert set(_tls_answers(routed, SNI_HOST)) == set(SNI_TARGETS)   # 16 handshakes: both
    assert set(_tls_answers(other, OTHER_HOST)) <= set(TLS_DEFAULT)
    url = f"https://{SNI_HOST}/"
    (run,) = P.curl_many({c2.ns: P.curl_argv(
        c2.ns, [url] * 4, "--cacert", str(ca), "--resolve", f"{SNI_HOST}:443:{vip}")
    }).values()
    assert run.returncode == 0 and len(run.answers) == 4, (run, cell.diagnosis())
    assert set(_tls_answers([a for a, _ in run.answers], SNI_HOST)) <= set(SNI_TARGETS)


@pytest.mark.parametrize("closer", ["client", "backend"])
def test_direct_connections_reusing_balanced_ports_not_hijacked(cell: Cell, closer: str
                                                                 ) -> None:
    """Direct client->backend connections that reuse the client port of a finished
    balanced flow to that backend must connect at once: nothing of the old flow may
    rewrite their packets.

    ``client``: the client closed the balanced flows first, so the backend is clean and any
    retransmitted SYN is the path's doing. ``backend``: the backend closed first and holds
    the 4-tuple in TIME_WAIT; a new SYN it does not take as newer gets an ACK, the client
    answers with a RST that ends the TIME_WAIT and resends its SYN within milliseconds
    (a retransmitted SYN, but prompt) - unless that ACK is rewritten to come from the VIP
    and never reaches the connecting socket: then the SYN waits out its 1 s timeout.
    TCP timestamps are off in the client while this runs so that "newer" is decided by
    each connection's random initial sequence number (about half collide), not once per
    address pair by the timestamp offsets (all or none)."""
    client = cell.topo.clients[0]
    ips = {b.node: b.ip for b in cell.topo.backends}
    server_closes = closer == "backend"
    _forget_routes(cell.topo)   # one-arm: redirects taken in an earlier test (see above)
    stamps = S.sysctl(client.ns, "net.ipv4.tcp_timestamps", "0" if server_closes else "1")
    try:
        with netns.inside(client.ns):
            try:
                balanced = [P.http_exchange(cell.topo.vip, 80, client_closes=not server_closes)
                            for _ in range(30)]
            except OSError as e:
                raise AssertionError(f"balanced connection failed: {e!r}"
                                     f"{cell.diagnosis()}") from e
        time.sleep(0.2)  # every FIN both ways through the LB: the flows are closed
        before = P.tcp_counters(client.ns)
        slow: list[str] = []
        with netns.inside(client.ns):
            for b in balanced:
                try:
                    d = P.http_exchange(ips[b.backend], T.HTTP_PORT, client_closes=True,
                                        src=(client.ip, b.port), timeout=1.5)
                except OSError as e:
                    slow.append(f"port {b.port} -> {b.backend}: {e!r}")
                else:
                    if d.connect_s > P.SLOW_CONNECT or d.backend != b.backend:
                        slow.append(f"port {b.port} -> {b.backend}: {d}")
                if len(slow) >= 3:
                    break
        delta = P.counters_delta(client.ns, before)
    finally:
        S.sysctl(client.ns, "net.ipv4.tcp_timestamps", stamps)
    assert not slow, f"direct connections hijacked or slow: {slow}, {delta}{cell.diagnosis()}"
    if not server_closes:
        assert delta["TcpExtTCPSynRetrans"] == 0, f"{delta}{cell.diagnosis()}"

