"""End to end: a real ``lbtui serve`` subprocess driven by ``lbtui ctl``, traffic from a
client namespace through the XDP datapath, restarts, ``kill -9`` with --keep, ``down``."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from lbtui import netns
from lbtui.control.instance import _xdp_state, pin_dir_of
from lbtui.control.lock import run_dir
from lbtui.control.state import read_state
from lbtui.lab import topology as T
from lbtui.maps import FiveTuple

from .conftest import (
    LBTUI,
    EchoClient,
    cli_main,
    ctl,
    ctl_json,
    ctl_ok,
    dump_maps,
    http_get,
    instance_name,
    lab_config,
    spread,
)

pytestmark = [pytest.mark.datapath, pytest.mark.netns]
ALL_LINKS = ("c1", "b1", "b2", "b3")


def setup(topo: T.Topology, tmp_path: Path, cleanup: list[str], **kw: object
          ) -> tuple[str, Path]:
    name = instance_name()
    cleanup.append(name)
    path = tmp_path / "lbtui.toml"
    path.write_text(lab_config(topo, name, **kw))  # type: ignore[arg-type]
    path.chmod(0o640)
    return name, path


def lbtui(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LBTUI, *args], capture_output=True, text=True, timeout=60)


def socket_inodes(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if m := re.fullmatch(r"socket:\[(\d+)\]", target):
            out.add(m.group(1))
    return out


def inet_inodes(ns: str | None) -> set[str]:
    """Inodes of every TCP/UDP/raw/packet socket (any state) in a namespace."""
    files = " ".join(f"/proc/net/{f}" for f in
                     ("tcp", "tcp6", "udp", "udp6", "raw", "raw6", "packet"))
    argv = ["sh", "-c", f"cat {files}"]
    if ns:
        argv = ["ip", "netns", "exec", ns, *argv]
    text = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    inodes = set()
    for line in text.splitlines():
        cols = line.split()
        if not cols or not cols[0].rstrip(":").isalnum() or cols[0] == "sl":
            continue
        # tcp/udp/raw: inode is column 9; packet: last column.
        for c in (cols[9] if len(cols) > 9 else None, cols[-1]):
            if c and c.isdigit():
                inodes.add(c)
    return inodes


def test_ctl_end_to_end_against_serve(make_lab, state_dir, instance_cleanup, start_serve,
                                      tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    topo = make_lab(1, 3)
    name, path = setup(topo, tmp_path, instance_cleanup)
    serve = start_serve(path)
    b1, b2, b3 = (e.ip for e in topo.backends)

    st = ctl_json(name, "status")
    assert st["manager_pid"] == serve.pid and st["config_path"] == str(path)
    assert [(i["ifname"], i["role"], i["ours"]) for i in st["interfaces"]] == [
        ("c1", "client", True), ("b1", "reply", True), ("b2", "reply", True),
        ("b3", "reply", True)]
    assert {i["prog_id"] for i in st["interfaces"]} == {st["prog_id"]}
    assert st["maps"]["listen"]["entries"] == 2 and st["events_lost"] == 0
    human = ctl_ok(name, "status")
    assert f"manager    pid {serve.pid}" in human and "events lost 0" in human

    assert ctl_json(name, "listeners") == [
        {"port": 80, "protocol": "tcp", "interfaces": ["c1"], "stats": True, "sni": False,
         "hash": "weighted",
         "targets": [{"ip": b1, "port": 8080, "weight": 50},
                     {"ip": b2, "port": 8080, "weight": 50},
                     {"ip": b3, "port": 8080, "weight": 0}]},
        {"port": 7000, "protocol": "tcp", "interfaces": ["c1"], "stats": True, "sni": False,
         "hash": "weighted", "targets": [{"ip": b1, "port": 7000, "weight": 100}]}]
    assert set(spread(topo, 30)) == {"backend1", "backend2"}

    # Weights: drain backend1 (its share goes to backend2; backend3 stays drained).
    out = ctl_ok(name, "weight", "listener", "80", f"{b1}:8080", "0")
    assert f"{b1}:8080 w0, {b2}:8080 w100, {b3}:8080 w0" in out
    assert set(spread(topo, 20)) == {"backend2"}
    ctl_ok(name, "targets", "listener", "80", f"{b3}:8080")
    assert set(spread(topo, 10)) == {"backend3"}

    # Listeners, source routes, SNI routes.
    ctl_ok(name, "listeners", "add", "81", f"{b1}:8080=60", f"{b2}:8080=40", "--protocol",
           "tcp")
    assert set(spread(topo, 30, port=81)) == {"backend1", "backend2"}
    ctl_ok(name, "sources", "add", "198.18.1.0/24", f"{b1}:8080")
    assert set(spread(topo, 10)) == {"backend1"}
    assert ctl_json(name, "sources", "list")[0]["cidr"] == "198.18.1.0/24"
    ctl_ok(name, "sources", "remove", "198.18.1.0/24")
    assert set(spread(topo, 5)) == {"backend3"}
    ctl_ok(name, "sni", "add", "API.Example.com", f"{b2}:443")
    assert [r["hostname"] for r in ctl_json(name, "sni")] == ["api.example.com"]
    ctl_ok(name, "listeners", "remove", "81")
    assert [x["port"] for x in ctl_json(name, "listeners")] == [80, 7000]

    # Bad input: exit 2 (usage/validation) or 4 (not found), nothing changed.
    before = (path.read_bytes(), ctl_json(name, "listeners"))
    for args, msg, want in [
        (("listeners", "add", "82", f"{b1}:8080=60", f"{b2}:8080=30"), "must sum to 100", 2),
        (("listeners", "add", "80", f"{b1}:8080"), "a listener on port 80 exists", 2),
        (("listeners", "add", "82", f"{b1}:8080", "--interface", "b1"),
         "not in datapath.interfaces", 2),
        (("weight", "listener", "99", f"{b1}:8080", "0"), "no listener on port 99", 4),
        (("weight", "listener", "80", f"{b1}:9999", "0"), "not in this group", 4),
        (("weight", "listener", "80", "nonsense", "0"), "expected IP:PORT", 2),
        (("sources", "add", "198.18.1.1/24", f"{b1}:8080"), "host bits", 2),
        (("sni", "remove", "nope.example.com"), "no SNI route", 4),
        (("listeners", "remove", "99"), "no listener on port 99", 4),
        (("settings", "set", "max_routes", "5"), "cannot be changed at run time", 2),
        (("settings", "set", "connection_timeout", "soon"), "integer number of seconds", 2),
        (("frobnicate",), "invalid choice", 2),
    ]:
        # In-process (the same code as the ctl command, without a Python start-up each).
        code = cli_main(["ctl", "--instance", name, *args])
        err = capsys.readouterr().err
        assert code == want, (args, err)
        assert msg in err, (args, err)
    # With --json the same errors are one envelope on stdout.
    code = cli_main(["ctl", "--instance", name, "--json", "sni", "remove", "nope.example.com"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 4 and doc["ok"] is False and doc["version"] == 1
    assert doc["error"]["kind"] == "not_found" and doc["error"]["exit_code"] == 4
    assert "no SNI route" in doc["error"]["message"]
    assert (path.read_bytes(), ctl_json(name, "listeners")) == before

    # Connections: list, look up, delete (then they are gone: exit 1).
    conns = ctl_json(name, "connections")
    assert conns and {c["target_ip"] for c in conns} <= {b1, b2, b3}
    assert len(ctl_json(name, "connections", "--limit", "2")) == 2
    assert all(c["target_ip"] == b3 for c in ctl_json(name, "connections", "list",
                                                      "--target", f"{b3}:8080"))
    # Look up and delete a flow that is still open: finished ones may be swept any time.
    with netns.inside(topo.clients[0].ns), socket.create_connection(
            (topo.vip, 7000), timeout=5) as held:
        held.sendall(b"hi\n")
        assert held.recv(100) == b"backend1 hi\n"
        flow = (f"{topo.clients[0].ip}:{held.getsockname()[1]}", f"{topo.vip}:7000")
        assert ctl_json(name, "connections", "lookup", *flow)["target_ip"] == b1
        ctl_ok(name, "connections", "delete", *flow)
        for action in ("lookup", "delete"):
            r = ctl(name, "connections", action, *flow)
            assert r.returncode == 4 and "no tracked connection" in r.stderr   # not found

    # Settings.
    ctl_ok(name, "settings", "set", "connection_timeout", "77")
    ctl_ok(name, "settings", "set", "stats", "off")
    assert ctl_json(name, "settings", "get", "connection_timeout") == {"connection_timeout": 77}
    got = ctl_json(name, "settings")
    assert (got["stats"], got["connection_timeout"]) == (False, 77)
    mark = serve.mark()
    ctl_ok(name, "settings", "set", "sweep_interval", "0.25")     # serve reloads (SIGHUP)
    serve.wait_for("reloaded", since=mark)
    assert ctl_json(name, "settings")["sweep_interval"] == 0.25

    # The file holds every edit, with the operator's comments and mode; lbtui's own files
    # are 0600.
    text = path.read_text()
    for comment in ("# control-plane test config", "# client side", "# backend3", "# web",
                    "# line echo"):
        assert comment in text
    assert "# backend1" not in text                   # its target was removed
    assert 'hostname = "api.example.com"' in text and "connection_timeout = 77" in text
    assert "stats = false" in text and "port = 81" not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    for p in (run_dir() / f"{name}.json", run_dir() / f"{name}.lock"):
        s = p.stat()
        assert (stat.S_IMODE(s.st_mode), s.st_uid) == (0o600, 0), p
    names_file = state_dir / name / "sni-names.json"
    assert stat.S_IMODE(names_file.stat().st_mode) == 0o600
    for d in (run_dir(), pin_dir_of(name), pin_dir_of(name).parent, names_file.parent):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d

    # One manager: a second serve and `down` are refused, naming the holder.
    r = lbtui("serve", "--config", str(path))
    assert r.returncode == 1 and f"already managed by pid {serve.pid}" in r.stderr
    r = lbtui("down", "--instance", name)
    assert r.returncode == 1 and f"managed by pid {serve.pid}" in r.stderr

    # Nothing listens on the network: serve owns no TCP/UDP/raw/packet socket anywhere.
    mine = socket_inodes(serve.pid)
    assert not mine & (inet_inodes(None) | inet_inodes(topo.lb_ns))

    # SIGTERM: clean stop, XDP detached, pins and state gone; down is then a no-op.
    assert serve.stop(signal.SIGTERM) == 0
    assert "XDP detached and pins removed" in serve.output
    assert not pin_dir_of(name).exists() and read_state(name) is None
    assert not (run_dir() / f"{name}.lock").exists()
    assert not (run_dir() / f"{name}.edit.lock").exists()
    assert all(_xdp_state(i, topo.lb_ns) == (None, 0) for i in ALL_LINKS)
    for _ in range(2):
        r = lbtui("down", "--instance", name)
        assert r.returncode == 0 and "nothing to remove" in r.stdout
    r = ctl(name, "status")
    assert r.returncode == 3 and "is not running" in r.stderr    # 3: not running


def test_restart_reproduces_the_maps(make_lab, state_dir, instance_cleanup, start_serve,
                                     tmp_path: Path) -> None:
    topo = make_lab(1, 3)
    name, path = setup(topo, tmp_path, instance_cleanup)
    serve = start_serve(path)
    b1, b2, b3 = (e.ip for e in topo.backends)
    ctl_ok(name, "weight", "listener", "80", f"{b2}:8080", "20")
    ctl_ok(name, "listeners", "add", "53", f"{b3}:9000", "--protocol", "udp")
    ctl_ok(name, "sources", "add", "198.18.1.128/25", f"{b1}:8080=10", f"{b3}:8080=90",
           "--no-stats")
    ctl_ok(name, "sni", "add", "www.example.com", f"{b2}:443")
    ctl_ok(name, "settings", "set", "connection_timeout", "99")

    # A hand edit is applied on `ctl reload` (SIGHUP); an invalid one is refused whole.
    text = path.read_text()
    assert "port = 7000 }]" in text
    path.write_text(text.replace("port = 7000 }]", "port = 7001 }]"))
    mark = serve.mark()
    ctl_ok(name, "reload")
    serve.wait_for("reloaded", since=mark)
    assert any("reloaded" in x and "(1 map entries changed)" in x for x in serve.lines[mark:])
    assert ctl_json(name, "listeners")[-1]["targets"][0]["port"] == 7001
    valid = path.read_text()
    path.write_text(valid.replace('protocol = "udp"', 'protocol = "icmp"').replace(
        "port = 7001 }]", "port = 7002 }]"))
    mark = serve.mark()
    ctl_ok(name, "reload")
    serve.wait_for("reload refused", since=mark)
    assert "listener[2].protocol: must be one of tcp, udp, both (got 'icmp')" in serve.output
    assert ctl_json(name, "listeners")[-1]["targets"][0]["port"] == 7001
    path.write_text(valid)

    before = dump_maps(name, conntrack=False)
    assert len(before["listen"]) == 3 and len(before["config"]) == 1
    assert before["settings"] == [1, 99] and list(before["sni_names"].values()) == [
        "www.example.com"]

    assert serve.stop() == 0 and not pin_dir_of(name).exists()
    last = start_serve(path)                # a fresh start: maps rebuilt from the file
    assert dump_maps(name, conntrack=False) == before
    assert set(spread(topo, 20)) == {"backend1", "backend2"}

    last.proc.kill()                        # a crash leaves its socket, state and locks ...
    last.proc.wait(10)
    assert (run_dir() / f"{name}.events.sock").exists()
    assert lbtui("down", "--instance", name).returncode == 0
    assert not list(run_dir().glob(f"{name}.*"))    # ... and `down` removes every one


def test_kill9_with_keep_keeps_established_connections(make_lab, state_dir, instance_cleanup,
                                                        start_serve, tmp_path: Path) -> None:
    topo = make_lab(1, 3)
    name, path = setup(topo, tmp_path, instance_cleanup)
    serve = start_serve(path, "--keep")
    echo = EchoClient(topo)
    try:
        assert echo.roundtrip() == "backend1"
        assert http_get(topo) in ("backend1", "backend2")
        old_prog = ctl_json(name, "status")["prog_id"]
        before = dump_maps(name)
        key = bytes(FiveTuple(echo.local[0], topo.vip, echo.local[1], 7000).key())
        assert key in before["conntrack"]                   # the echo flow's entry

        serve.proc.kill()                                   # kill -9: no cleanup at all
        assert serve.proc.wait(10) == -signal.SIGKILL
        assert echo.roundtrip() == "backend1"               # still forwarding, no manager
        assert ctl_json(name, "status")["manager_pid"] is None

        again = start_serve(path)                           # re-adopts the pinned maps
        assert "re-adopting the pinned maps" in again.output
        assert echo.roundtrip() == "backend1"               # same connection, same backend
        after = dump_maps(name)
        for m in ("listen", "config", "sni", "settings", "sni_names"):
            assert after[m] == before[m], m
        assert after["conntrack"][key] == before["conntrack"][key]
        assert set(before["conntrack"]) <= set(after["conntrack"])
        st = ctl_json(name, "status")
        assert st["manager_pid"] == again.pid
        assert st["prog_id"] != old_prog                    # recompiled, replaced in place
        assert {i["prog_id"] for i in st["interfaces"]} == {st["prog_id"]}
        assert all(i["ours"] for i in st["interfaces"])

        # A clean stop without --keep ends the balancing: the tracked flow is gone, and
        # only a SYN opens a flow, so the old connection's next segment is not balanced.
        again.stop()
        kept = start_serve(path, "--keep")
        with pytest.raises((OSError, AssertionError)):
            echo.roundtrip()
        # A clean stop with --keep leaves it forwarding ...
        echo.close()
        echo = EchoClient(topo)
        assert echo.roundtrip() == "backend1"
        assert kept.stop() == 0 and "left forwarding" in kept.output
        assert echo.roundtrip() == "backend1"
        st = ctl_json(name, "status")
        assert st["manager_pid"] is None and st["kept"] is True
        r = ctl(name, "reload")                              # forwarding, but no serve
        assert r.returncode == 3 and "no running serve" in r.stderr

        # ... until `down`, which detaches and unpins (idempotently).
        r = lbtui("down", "--instance", name)
        assert r.returncode == 0 and "detached XDP" in r.stdout and "removed pins" in r.stdout
        assert not pin_dir_of(name).exists() and not (run_dir() / f"{name}.lock").exists()
        assert all(_xdp_state(i, topo.lb_ns) == (None, 0) for i in ALL_LINKS)
        with pytest.raises((OSError, AssertionError)):
            echo.roundtrip()                                 # the LB host itself resets it
        r = lbtui("down", "--instance", name)
        assert r.returncode == 0 and "nothing to remove" in r.stdout
    finally:
        echo.close()


def test_invalid_config_starts_nothing(state_dir, tmp_path: Path) -> None:
    name = instance_name()
    path = tmp_path / "bad.toml"
    path.write_text(f'[datapath]\ninstance = "{name}"\ninterfaces = ["c1"]\nkeep = "no"\n'
                    '[[listener]]\nport = 80\ntargets = [\n'
                    '  { ip = "198.18.101.2", port = 8080, weight = 60 },\n'
                    '  { ip = "198.18.102.2", port = 0, weight = 30 },\n]\n')
    r = lbtui("serve", "--config", str(path))
    assert r.returncode == 2
    assert "listener[0].targets[1].port: must be 1..65535 (got 0)" in r.stderr
    assert "datapath.keep: must be true or false, not a string" in r.stderr
    assert "2 problem(s)" in r.stderr
    assert not pin_dir_of(name).exists() and read_state(name) is None


def tls_get(topo: T.Topology, ca: Path, hostname: str, verify: bool = True) -> str:
    import socket
    import ssl

    from lbtui import netns

    ctx = ssl.create_default_context(cafile=str(ca))
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    with netns.inside(topo.clients[0].ns), socket.create_connection(
            (topo.vip, 443), timeout=5) as raw, ctx.wrap_socket(
            raw, server_hostname=hostname) as s:
        s.sendall(f"GET / HTTP/1.0\r\nHost: {hostname}\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data.split(b"\r\n\r\n", 1)[1].decode().strip()


def listening(ns: str, port: int) -> set[str]:
    """Inodes of TCP sockets listening on ``port`` in namespace ``ns``."""
    text = subprocess.run(["ip", "netns", "exec", ns, "cat", "/proc/net/tcp"],
                          capture_output=True, text=True, check=True).stdout
    out = set()
    for line in text.splitlines()[1:]:
        cols = line.split()
        if cols[1].endswith(f":{port:04X}") and cols[3] == "0A":     # 0A: LISTEN
            out.add(cols[9])
    return out


def test_serve_runs_the_sni_splicer_for_sni_listeners(make_lab, state_dir, instance_cleanup,
                                                      start_serve, tmp_path: Path) -> None:
    from lbtui.lab.tlscerts import make_certs

    topo = make_lab(1, 3, servers=False)
    certs = make_certs(tmp_path / "tls", ["api.example.com", "www.example.com"])
    T.start_backend_servers(topo, tls=8443, cert=certs.cert, key=certs.key)
    b1, b2, b3 = (e.ip for e in topo.backends)
    sni = f"""
[[listener]]
port = 443
protocol = "tcp"
sni = true
address = "{topo.vip}"
targets = [{{ ip = "{b1}", port = 8443 }}]

[[sni_route]]
hostname = "api.example.com"
targets = [{{ ip = "{b2}", port = 8443 }}]
"""
    name, path = setup(topo, tmp_path, instance_cleanup, extra=sni)
    serve = start_serve(path)
    assert f"SNI splicer listening on {topo.vip}:443 in {topo.lb_ns}" in serve.output
    assert listening(topo.lb_ns, 443) <= socket_inodes(serve.pid)   # serve's own socket
    assert listening(topo.lb_ns, 443)

    # The backend answers with its name and the server name it saw in the replayed hello.
    assert tls_get(topo, certs.ca, "api.example.com") == "backend2 sni=api.example.com"
    assert tls_get(topo, certs.ca, "www.example.com") == "backend1 sni=www.example.com"
    ctl_ok(name, "sni", "add", "www.example.com", f"{b3}:8443")        # next connection
    assert tls_get(topo, certs.ca, "www.example.com") == "backend3 sni=www.example.com"
    assert http_get(topo) in ("backend1", "backend2")                  # XDP still balances

    mark = serve.mark()
    ctl_ok(name, "listeners", "remove", "443")
    serve.wait_for("SNI splicer on port 443 stopped", since=mark)
    assert not listening(topo.lb_ns, 443)
    with pytest.raises(OSError):
        tls_get(topo, certs.ca, "api.example.com")

    mark = serve.mark()
    ctl_ok(name, "listeners", "add", "443", f"{b1}:8443", "--protocol", "tcp", "--sni",
           "--address", topo.vip)
    serve.wait_for("SNI splicer listening", since=mark)
    assert tls_get(topo, certs.ca, "api.example.com") == "backend2 sni=api.example.com"
    assert f'address = "{topo.vip}"' in path.read_text()
    assert serve.stop() == 0 and not listening(topo.lb_ns, 443)
