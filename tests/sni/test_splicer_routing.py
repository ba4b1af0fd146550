"""SNI routing end to end with real TLS clients (Python ssl, openssl s_client, curl) through
the real XDP datapath and the splicer, in namespaces.

Lab: a.sni.test -> backend1; b.sni.test -> backend2 70 / backend3 30; the listener's own
group (unknown names, no SNI) -> backend4. Backends answer ``<name> sni=<what they saw>``
and present a certificate whose CN is their name.
"""

from __future__ import annotations

import ctypes as ct
import json
import math
import shutil
import socket
import ssl

import pytest

from lbtui import abi, bpfsys
from lbtui import maps as M
from lbtui.sni import hostname_hash

from . import tlstools
from .conftest import wait_for
from .tlstools import TLS_PORT, client_context, https_get

pytestmark = [pytest.mark.datapath, pytest.mark.netns, pytest.mark.timeout(300)]


@pytest.fixture
def lab(sni_lab):
    lab = sni_lab(n_clients=2, n_backends=4)
    lab.listen(443, lab.group(("backend4", 100)))
    M.add_sni_route(lab.maps.sni_map, "a.sni.test", lab.group(("backend1", 100)))
    M.add_sni_route(lab.maps.sni_map, "b.sni.test",
                    lab.group(("backend2", 70), ("backend3", 30)))
    lab.sp = lab.splicer(443, stats_interval=0.2)
    return lab


def test_python_ssl_reaches_each_group(lab):
    ctx = client_context(lab.certs)
    with lab.in_client():
        assert https_get(lab.vip, 443, ctx, "a.sni.test") == ("backend1 sni=a.sni.test",
                                                               "backend1")
        body, cn = https_get(lab.vip, 443, ctx, "b.sni.test")
        assert cn in ("backend2", "backend3") and body == f"{cn} sni=b.sni.test"
        # Lookup is case-insensitive (ASCII lower-casing before hashing).
        body, cn = https_get(lab.vip, 443, ctx, "A.SNI.Test")
        assert cn == "backend1" and body.startswith("backend1 sni=")
        # Unknown name and no SNI at all: the listener's group.
        assert https_get(lab.vip, 443, ctx, "zz.sni.test") == ("backend4 sni=zz.sni.test",
                                                                "backend4")
        ctx.check_hostname = False          # no SNI: the certificate is still verified
        assert https_get(lab.vip, 443, ctx, None) == ("backend4 sni=-", "backend4")
    wait_for(lambda: lab.sp.stats()["active"] == 0, what="connections to close")
    s = lab.sp.stats()
    assert s["routed"] == {"sni": 3, "source": 0, "listener": 2}
    assert s["hellos"] == {"sni": 4, "no_sni": 1}
    assert s["closed"]["fin"] == 5 and sum(s["rejected"].values()) == 0
    assert s["active"] == 0 and s["pending"] == 0
    assert s["relay"]["bytes"] > 0 and s["relay"]["no_peer"] == 0
    assert s["loop_errors"] == 0 and s["running"]


def test_openssl_s_client(lab):
    if not shutil.which("openssl"):
        pytest.fail("openssl is required (scripts/setup.sh installs it)")
    for name, want in (("a.sni.test", "backend1"), ("zz.sni.test", "backend4")):
        r = lab.client_run(["openssl", "s_client", "-connect", f"{lab.vip}:443",
                            "-servername", name, "-CAfile", str(lab.certs / "ca.pem"),
                            "-verify_return_error", "-quiet"],
                           input="GET / HTTP/1.0\r\n\r\n", timeout=30)
        assert r.returncode == 0, r.stderr
        assert f"{want} sni={name}" in r.stdout
        assert f"CN = {want}" in r.stderr       # the certificate names the backend


def test_curl_resolve(lab):
    if not shutil.which("curl"):
        pytest.fail("curl is required (scripts/setup.sh installs it)")
    ca = str(lab.certs / "ca.pem")
    for name, want in (("a.sni.test", {"backend1"}), ("b.sni.test", {"backend2", "backend3"}),
                       ("other.sni.test", {"backend4"})):
        r = lab.client_run(["curl", "-sS", "--max-time", "10", "--cacert", ca, "--resolve",
                            f"{name}:443:{lab.vip}", f"https://{name}/"])
        assert r.returncode == 0, r.stderr
        backend, _, sni = r.stdout.strip().partition(" sni=")
        assert backend in want and sni == name
    # An IP-address URL sends no SNI: the listener's group.
    r = lab.client_run(["curl", "-sS", "--max-time", "10", "--cacert", ca,
                        f"https://{lab.vip}/"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "backend4 sni=-"


def _handshakes(lab, sni, count, client=0):
    argv = tlstools.argv("handshakes", "--host", lab.vip,
                       "--port", "443", "--certs", str(lab.certs), "--count", str(count),
                       "--concurrency", "4")
    if sni:
        argv += ["--sni", sni]
    r = lab.client_run(argv, client=client, timeout=240)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_weights_hold_over_300_handshakes(lab):
    n, p = 300, 0.7
    res = _handshakes(lab, "b.sni.test", n)
    assert res["errors"] == {}
    got = res["backends"]
    assert set(got) <= {"backend2", "backend3"} and sum(got.values()) == n
    sd = math.sqrt(n * p * (1 - p))                 # binomial: 4.5 sd is about 1 in 10^5
    assert abs(got.get("backend2", 0) - n * p) < 4.5 * sd, got
    # The other client, unknown and absent SNI: all to the default group.
    assert _handshakes(lab, "nobody.sni.test", 40, client=1)["backends"] == {"backend4": 40}
    assert _handshakes(lab, None, 40, client=1)["backends"] == {"backend4": 40}
    print(f"\n300 handshakes to b.sni.test (70/30): {got}, {res['per_s']:.0f}/s")


def _echo_conn(lab, sni):
    """A long-lived TLS connection through the splicer (the backend's echo mode)."""
    ctx = client_context(lab.certs)
    with lab.in_client():
        raw = socket.create_connection((lab.vip, 443), timeout=10)
    tls = ctx.wrap_socket(raw, server_hostname=sni)
    f = tls.makefile("rwb", buffering=0)
    f.write(b"ECHO\n")
    hello = f.readline().decode().split()
    return tls, f, hello[0]


def test_edits_apply_to_new_connections_only(lab):
    ctx = client_context(lab.certs)
    tls, f, first = _echo_conn(lab, "a.sni.test")
    assert first == "backend1"
    # Re-point the route: the next connection follows, the open one keeps its backend.
    M.add_sni_route(lab.maps.sni_map, "a.sni.test", lab.group(("backend2", 100)))
    with lab.in_client():
        assert https_get(lab.vip, 443, ctx, "a.sni.test")[1] == "backend2"
    f.write(b"still there\n")
    assert f.readline() == b"backend1 still there\n"
    # Remove it: the name falls back to the listener's group.
    M.remove_sni_route(lab.maps.sni_map, "a.sni.test")
    with lab.in_client():
        assert https_get(lab.vip, 443, ctx, "a.sni.test")[1] == "backend4"
    # Change the listener's own group (a weight edit): new unknown names follow.
    lab.listen(443, lab.group(("backend3", 100)))
    with lab.in_client():
        assert https_get(lab.vip, 443, ctx, "zz.sni.test")[1] == "backend3"
    f.write(b"and still\n")
    assert f.readline() == b"backend1 and still\n"
    tls.close()


def test_source_route_is_the_fallback_before_the_listener(lab):
    ctx = client_context(lab.certs)
    client_net = lab.topo.clients[0].subnet
    M.add_source_route_weighted(lab.maps.config_map, client_net, lab.group(("backend3", 100)))
    with lab.in_client():
        assert https_get(lab.vip, 443, ctx, "zz.sni.test")[1] == "backend3"   # source route
        assert https_get(lab.vip, 443, ctx, "a.sni.test")[1] == "backend1"    # SNI wins
    with lab.in_client(1):
        assert https_get(lab.vip, 443, ctx, "zz.sni.test")[1] == "backend4"   # other client
    assert lab.sp.stats()["routed"]["source"] == 1


def test_drained_group_refuses_cleanly(lab):
    ctx = client_context(lab.certs)
    M.add_sni_route(lab.maps.sni_map, "a.sni.test",
                    lab.group(("backend1", 0), ("backend2", 100)))
    with lab.in_client():
        assert https_get(lab.vip, 443, ctx, "a.sni.test")[1] == "backend2"
    # Every target at weight 0 (only reachable by a raw map write): refused, counted, and
    # the splicer keeps serving the others.
    route = lab.group(("backend1", 100)).to_route(abi.ROUTE_F_STATS)
    route.targets[0].cumulative_weight = 0
    bpfsys.update(lab.maps.sni_map.fd, ct.c_uint64(hostname_hash("a.sni.test")), route)
    with lab.in_client(), pytest.raises((OSError, ssl.SSLError)):
        https_get(lab.vip, 443, ctx, "a.sni.test", timeout=5)
    assert lab.sp.stats()["rejected"]["no_target"] == 1
    with lab.in_client():
        assert https_get(lab.vip, 443, ctx, "b.sni.test")[1] in ("backend2", "backend3")


def test_backend_down_is_counted(lab):
    ctx = client_context(lab.certs)
    M.add_sni_route(lab.maps.sni_map, "down.sni.test",
                    lab.group(("backend1", 100), port=TLS_PORT + 1))   # nothing listens
    with lab.in_client(), pytest.raises((OSError, ssl.SSLError)):
        https_get(lab.vip, 443, ctx, "down.sni.test", timeout=5)
    assert lab.sp.stats()["rejected"]["connect_failed"] == 1
    with lab.in_client():
        assert https_get(lab.vip, 443, ctx, "a.sni.test")[1] == "backend1"
