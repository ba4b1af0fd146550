"""Overload and privilege of the SNI splicer: descriptors sized to its caps (or caps sized
to the limit), accepting paused rather than spinning when descriptors run out, an evicted
conntrack entry re-registered while an operator's delete resets, one listening address,
and a loop thread without capabilities."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time

import pytest
from sni.test_splicer_flows import _conn, _echo_conn
from sni.test_splicer_flows import lab as lab  # the fixture: a splicer on VIP:443

from lbtui import bpfsys
from lbtui import maps as M
from lbtui.privilege import thread_capabilities
from lbtui.splicer import Splicer
from lbtui.splicer.fdlimit import open_fds

from .conftest import wait_for

pytestmark = [pytest.mark.datapath, pytest.mark.netns, pytest.mark.timeout(300)]


def _thread_cpu_s(stat_fd: int) -> float:
    """CPU seconds of a thread, from its /proc stat file opened as ``stat_fd``."""
    fields = os.pread(stat_fd, 4096, 0).decode().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100       # utime + stime, in ticks


def _splicer_thread(port: int) -> threading.Thread:
    return next(t for t in threading.enumerate() if t.name == f"lbtui-splicer-{port}")


def test_evicted_entry_is_reregistered_operator_delete_resets(lab) -> None:
    tls, f = _echo_conn(lab)
    port = tls.getsockname()[1]
    c = _conn(lab, port)
    # What the LRU map does to an entry under pressure: it is simply gone.
    assert bpfsys.delete(lab.maps.conntrack_map.fd, M.FiveTuple.parse(c.five_tuple).key())
    wait_for(lambda: _conn(lab, port) is not None, what="the entry to be written back")
    assert lab.sp.stats()["reregistered"] == 1 and lab.sp.stats()["closed"]["deleted"] == 0
    f.write(b"still there\n")
    assert f.readline().split(b" ", 1)[1] == b"still there\n"
    # An operator's delete is told apart: the connection is reset.
    assert M.delete_connection(lab.maps.conntrack_map, c.five_tuple)
    assert _conn(lab, port) is None
    assert lab.sp.stats()["closed"]["deleted"] == 1
    tls.settimeout(5)
    with pytest.raises(OSError):
        f.write(b"x\n")
        if not f.readline():
            raise ConnectionResetError("closed")
    tls.close()


def test_out_of_descriptors_pauses_accepting_instead_of_spinning(lab) -> None:
    tid = _splicer_thread(443).native_id
    stat_fd = os.open(f"/proc/self/task/{tid}/stat", os.O_RDONLY)   # opened while we can
    with lab.in_client():
        socks = [socket.socket() for _ in range(12)]   # descriptors taken before the limit
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (open_fds() + 3, hard))
    try:
        for s in socks:
            s.settimeout(5)
            s.connect((lab.vip, 443))                 # in the backlog; accept runs dry
        wait_for(lambda: lab.sp.stats()["accept_paused"] > 0, what="accepting to pause")
        cpu0, t0 = _thread_cpu_s(stat_fd), time.monotonic()
        time.sleep(1.0)
        busy = (_thread_cpu_s(stat_fd) - cpu0) / (time.monotonic() - t0)
        assert busy < 0.2, f"the splicer thread used {busy:.0%} of a CPU while out of fds"
        assert lab.sp.stats()["running"]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        os.close(stat_fd)
    wait_for(lambda: lab.sp.stats()["accepted"] >= len(socks), what="the backlog to drain")
    for s in socks:
        s.close()
    tls, _f = _echo_conn(lab)                          # serving again
    tls.close()


_RESERVE = """
import json, logging, resource, sys
logging.basicConfig(level=logging.WARNING)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 4096))
if sys.argv[1] == "drop":
    from lbtui.privilege import drop_thread_capabilities
    drop_thread_capabilities()        # no CAP_SYS_RESOURCE: the hard limit stays
from lbtui.splicer import fdlimit
got = fdlimit.reserve(int(sys.argv[2]), 256)
print(json.dumps({"got": got, "limit": resource.getrlimit(resource.RLIMIT_NOFILE)}))
"""


@pytest.mark.parametrize("mode,cap,fits", [("keep", 1000, True), ("drop", 10000, False)])
def test_descriptor_limit_fits_the_caps(mode: str, cap: int, fits: bool) -> None:
    r = subprocess.run([sys.executable, "-c", _RESERVE, mode, str(cap)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    (granted, reserved), (soft, hard) = out["got"], out["limit"]
    if fits:        # raised within the hard limit, cap kept
        assert granted == cap and soft >= 2 * cap + 256 and hard == 4096
    else:           # cannot be raised: the cap shrinks to fit, and says so
        assert granted < cap and soft == hard == 4096 and 2 * granted + 256 <= soft
        assert f"max_connections lowered from {cap} to {granted}" in r.stderr
    assert reserved == 2 * granted + 256 + 64


def test_splicer_thread_keeps_no_capability(lab) -> None:
    caps = thread_capabilities(_splicer_thread(443).native_id)
    assert caps["CapEff"] == caps["CapPrm"] == caps["CapInh"] == 0, caps
    assert thread_capabilities()["CapEff"] != 0            # the rest of the process keeps them
    tls, _f = _echo_conn(lab)                              # and it still splices
    tls.close()


def test_splicer_never_listens_on_every_interface(lab) -> None:
    with pytest.raises(ValueError, match=r"0\.0\.0\.0 would listen on every interface"):
        Splicer(lab.maps, lab.datapath.emit_fd, "0.0.0.0", 4443)
