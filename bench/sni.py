"""SNI splicer cost: TLS handshakes per second and bulk throughput, spliced vs direct.

    sudo .venv/bin/python -m bench.sni [--rounds 3] [--mib 256] [--handshakes 300]
                                       [--concurrency 4] [--json out.json]

One namespace lab (1 client, 1 backend; lab name ``h5-bench``), the real XDP datapath with
an SNI listener on VIP:443 (TLS) and VIP:9443 (bulk), SNI routes to the backend, and two
``Splicer``s in the LB namespace. Every measurement runs once through the splicer
(client -> VIP) and once directly to the backend (client -> backend IP, routed by the LB
namespace's kernel), interleaved over ``--rounds`` rounds; the table shows medians and
the spliced/direct ratio.

- handshakes, python: ``--handshakes`` full TLS 1.3 handshakes + one HTTP exchange each,
  ``--concurrency`` client threads (``tests/sni/tlstools.py handshakes``);
- handshakes, openssl: ``openssl s_time -new`` for 3 s (one connection at a time, a C
  client; it sends no SNI, so through the splicer it takes the listener's-group path; the
  backend is a Python TLS server either way);
- bulk down / up: ``--mib`` MiB over one connection after a real ClientHello (raw bytes,
  so the relay's cost is what differs, not TLS record crypto in Python).

On veth everything shares the same CPUs, so the ratios are what to read; quote the load
average (printed) with any number. Nothing is left behind: the lab, pins and processes
are removed at the end, also on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import fmt, machine, machine_line, median, table
from lbtui import abi
from lbtui import maps as M
from lbtui.datapath.loader import Datapath
from lbtui.lab import topology as T
from lbtui.lab.tlscerts import make_backend_certs
from lbtui.splicer import Splicer
from lbtui.targets import TargetGroup
from tests.sni import tlstools
from tests.sni.tlstools import BULK_PORT, SNI_DOMAIN, TLS_PORT

LAB = "h5-bench"
PIN = Path("/sys/fs/bpf/lbtui-h5-bench")
SNI = "a.sni.test"
BULK_SNI = "bulk.sni.test"
VIP_TLS_PORT = 443


def _client(topo: T.Topology, argv: list[str], timeout: float = 300) -> str:
    r = subprocess.run(["ip", "netns", "exec", topo.clients[0].ns, *argv], text=True,
                       capture_output=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}...: {r.stderr.strip()[-500:]}")
    return r.stdout


def _tb(*args: str) -> list[str]:
    return tlstools.argv(*args)


def handshakes_python(topo, certs: Path, host: str, port: int, n: int, conc: int) -> float:
    out = json.loads(_client(topo, _tb("handshakes", "--host", host, "--port", str(port),
                                       "--certs", str(certs), "--sni", SNI, "--count",
                                       str(n), "--concurrency", str(conc))))
    if out["errors"]:
        raise RuntimeError(f"handshake errors: {out['errors']}")
    return out["per_s"]


def handshakes_openssl(topo, certs: Path, host: str, port: int) -> float | None:
    if not shutil.which("openssl"):
        return None
    # s_time sends no SNI: through the splicer this is the listener's-group path.
    out = _client(topo, ["openssl", "s_time", "-connect", f"{host}:{port}", "-new",
                         "-time", "3", "-CAfile", str(certs / "ca.pem")])
    m = re.search(r"(\d+) connections in ([\d.]+) real seconds", out)
    if not m:
        raise RuntimeError(f"cannot parse openssl s_time output: {out[-300:]}")
    return int(m.group(1)) / float(m.group(2))


def bulk(topo, host: str, mode: str, mib: int) -> float:
    out = json.loads(_client(topo, _tb("bulk", "--host", host, "--port", str(BULK_PORT),
                                       "--mode", mode, "--bytes", str(mib << 20),
                                       "--sni", BULK_SNI)))
    if out["bytes"] != mib << 20:
        raise RuntimeError(f"bulk {mode}: {out['bytes']} of {mib << 20} bytes arrived")
    return out["gbit_s"]


def _release(splicers: list[Splicer], dp: Datapath | None) -> None:
    for sp in splicers:
        sp.stop()
    if dp is not None:
        dp.detach_all()


def _serve_sni(topo: T.Topology, ms: M.MapSet, dp: Datapath,
               splicers: list[Splicer]) -> str:
    """SNI listeners VIP:443 -> backend:8443 and VIP:9443 -> backend:9443, their SNI
    routes, and a splicer for each (appended to ``splicers``). Returns the backend IP."""
    backend = topo.backends[0].ip
    flags = abi.ROUTE_F_SNI | abi.ROUTE_F_TCP | abi.ROUTE_F_STATS
    ifindex = topo.lb_ifindex(topo.clients[0].lb_ifname)
    for vport, bport in ((VIP_TLS_PORT, TLS_PORT), (BULK_PORT, BULK_PORT)):
        M.add_listen_port_weighted(ms.listen_map, ifindex, vport,
                                   TargetGroup.of([(backend, bport, 100)]), flags)
        sp = Splicer(ms, dp.emit_fd, topo.vip, vport, netns=topo.lb_ns)
        sp.start()
        splicers.append(sp)
    M.add_sni_route(ms.sni_map, SNI, TargetGroup.of([(backend, TLS_PORT, 100)]))
    M.add_sni_route(ms.sni_map, BULK_SNI, TargetGroup.of([(backend, BULK_PORT, 100)]))
    return backend


def run(rounds: int, mib: int, n_handshakes: int, conc: int) -> dict[str, object]:
    results: dict[str, dict[str, list[float]]] = {}

    def record(metric: str, kind: str, value: float | None) -> None:
        if value is not None:
            results.setdefault(metric, {"direct": [], "spliced": []})[kind].append(value)

    state = tempfile.mkdtemp(prefix="lbtui-h5-bench-")
    os.environ["LBTUI_STATE_DIR"] = state
    T.teardown(LAB)
    shutil.rmtree(PIN, ignore_errors=True)
    ms = M.create_all_maps({"max_connections": 65536})
    splicers: list[Splicer] = []
    dp = None
    try:
        ms.pin_all(PIN)
        dp = Datapath.load(ms)
        with T.lab(LAB, 1, 1) as topo:
            try:
                certs = make_backend_certs(
                    Path(state) / "certs", [e.node for e in topo.backends],
                    dns=[f"*.{SNI_DOMAIN}"], ips=[topo.vip] + [e.ip for e in topo.backends])
                T.attach_datapath(topo, dp)
                T.start_backend_servers(topo, tls=TLS_PORT, certs=certs)
                tlstools.start_bulk_servers(topo)
                backend = _serve_sni(topo, ms, dp, splicers)
                paths = (("direct", backend, TLS_PORT), ("spliced", topo.vip, VIP_TLS_PORT))
                for r in range(rounds):
                    print(f"round {r + 1}/{rounds}", file=sys.stderr, flush=True)
                    for kind, host, port in paths:
                        record(f"handshakes/s (python, {conc} threads)", kind,
                               handshakes_python(topo, certs, host, port, n_handshakes, conc))
                        record("handshakes/s (openssl s_time, no SNI)", kind,
                               handshakes_openssl(topo, certs, host, port))
                    for mode in ("down", "up"):
                        for kind, host, _port in paths:
                            record(f"bulk {mode} Gbit/s ({mib} MiB)", kind,
                                   bulk(topo, host, mode, mib))
                stats = [sp.stats() for sp in splicers]
            finally:
                _release(splicers, dp)   # before the lab goes: detaching enters its netns
    finally:
        _release(splicers, dp)
        M.close_all_maps(ms)
        shutil.rmtree(PIN, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)
    summary = {}
    for metric, kinds in results.items():
        d, s = median(kinds["direct"]), median(kinds["spliced"])
        summary[metric] = {"direct": d, "spliced": s,
                           "ratio": (s / d) if d and s is not None else None,
                           "samples": kinds}
    return {"machine": machine(), "rounds": rounds, "results": summary,
            "splicer_stats": stats}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.sni", description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mib", type=int, default=256, help="bulk transfer size (MiB)")
    ap.add_argument("--handshakes", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--json", type=Path, help="also write the results here")
    a = ap.parse_args(argv)
    if min(a.rounds, a.mib, a.handshakes, a.concurrency) < 1:
        ap.error("--rounds, --mib, --handshakes and --concurrency must be positive")
    out = run(a.rounds, a.mib, a.handshakes, a.concurrency)
    rows = []
    for metric, r in out["results"].items():
        digits = 2 if "Gbit" in metric else 0
        rows.append([metric, fmt(r["direct"], digits), fmt(r["spliced"], digits),
                     fmt(r["ratio"], 2)])
    print(machine_line(out["machine"]))
    print(f"medians over {out['rounds']} interleaved rounds (direct: client -> backend "
          "through the LB namespace's routing; spliced: client -> VIP -> splicer)")
    print(table(["metric", "direct", "spliced", "spliced/direct"], rows))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
