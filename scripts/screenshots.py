"""Screenshots of the console over a live lab: every view and the main forms, SVG and PNG.

    sudo .venv/bin/python scripts/screenshots.py [--out screenshots] [--warmup 30]

Runs the demo lab as ``lbtui demo`` runs it (``lbtui.lab.lifecycle.LabRun``, lab name
``h3shot``): 2 clients, 4 backends, the demo's config with its SNI listener, TLS traffic
and active checks on backend3, the lab's traffic generator (bounded in rate and duration).
The console is driven headless (``App.run_test``) and each view saved as SVG, converted to
PNG with ``rsvg-convert`` (Debian librsvg2-bin). For the incident views it then breaks
backend3 as the demo config's comment says (nftables in backend3 rejects its HTTP port)
and shows Targets with it failing and out of rotation, the Events of the change, and the
Reasons view. At the end the console quits with "stop" and the lab is torn down, also on
failure or Ctrl-C.

``--cluster`` instead builds a 2-node cluster lab (``lbtui lab up --nodes 2``, lab name
``h3shotc``), sends connections through its router and shows the console over both nodes
(``17-cluster-*``), then tears the lab down.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lbtui.console.app import ConsoleApp  # noqa: E402
from lbtui.console.session import build_app  # noqa: E402
from lbtui.console.views.targets import TargetsView  # noqa: E402
from lbtui.lab import demo_config  # noqa: E402
from lbtui.lab import topology as T  # noqa: E402
from lbtui.lab.lifecycle import LabRun, TrafficOptions  # noqa: E402

LAB = "h3shot"
SIZE = (160, 44)
SMALL = (80, 24)
KEY_NAMES = {" ": "space", "!": "exclamation_mark"}


def keys(text: str) -> list[str]:
    return [KEY_NAMES.get(c, c) for c in text]


def png_ready_svg(svg: str) -> str:
    """Textual writes runs of spaces as &#160; at the start of text spans; rsvg-convert
    drops them unless the document preserves white space, which shifts right-aligned
    columns and glues labels to the text before them."""
    return re.sub(r"<svg ", '<svg xml:space="preserve" ', svg, count=1)


def save(app: ConsoleApp, out: Path, name: str, title: str) -> None:
    svg = png_ready_svg(app.export_screenshot(title=title))
    (out / f"{name}.svg").write_text(svg)
    subprocess.run(["rsvg-convert", "-o", str(out / f"{name}.png"), str(out / f"{name}.svg")],
                   check=True)
    print(f"[screenshots] {out / name}.svg / .png", flush=True)


OUTAGE = "outage"       # the nftables table the demo config's comment adds


def break_backend(topo: T.Topology) -> None:
    """Make the checked backend refuse its HTTP port, as the demo config says to."""
    topo.run(demo_config.CHECKED_BACKEND, [
        "nft", f"add table ip {OUTAGE} {{ chain in {{ type filter hook input priority 0; "
               f"tcp dport {T.HTTP_PORT} reject with tcp reset; }}; }}"])


async def drive(app: ConsoleApp, topo: T.Topology, out: Path, warmup: float) -> None:
    async with app.run_test(size=SIZE) as pilot:
        t_end = time.monotonic() + warmup
        while time.monotonic() < t_end:
            await pilot.pause(0.5)
        assert app.snapshot is not None and app.snapshot.conns.total, "no flows seen"

        async def shot(keys: list[str], name: str, title: str,
                       before: Callable[[], Awaitable[None]] | None = None) -> None:
            if before:
                await before()
            await pilot.press(*keys)
            await pilot.pause(1.2)        # one more refresh with this view on screen
            save(app, out, name, title)

        await shot(["1"], "1-connections", "lbtui console: connections")
        await shot(["2"], "2-routes", "lbtui console: routes")
        await shot(["3"], "3-targets", "lbtui console: targets")
        await shot(["4"], "4-events", "lbtui console: events")
        await shot(["5"], "5-settings", "lbtui console: settings")
        # Forms: the weights of the HTTP listener, and an SNI route.
        await pilot.press("2")
        g80 = next(g for g in app.groups if g.ref == "listener|80")
        app.edit_weights(g80)
        await pilot.pause(0.5)
        save(app, out, "6-weights-form", "lbtui console: editing weights")
        await pilot.press("escape")
        sni = next(g for g in app.groups if g.kind == "sni")
        app.edit_route("sni", sni)
        await pilot.pause(0.5)
        save(app, out, "7-sni-form", "lbtui console: an SNI route")
        await pilot.press("escape", "ctrl+p", *"drain")
        await pilot.pause(1.0)
        save(app, out, "8-palette", "lbtui console: command palette")
        await pilot.press("escape", "?")
        await pilot.pause(0.5)
        save(app, out, "9-help", "lbtui console: help")
        # The filter language, and a drill-down from a target to its connections.
        await pilot.press("escape", "1", "slash", *keys("proto:udp !target:198.18.101.2"),
                          "enter")
        await pilot.pause(1.2)
        save(app, out, "11-filter", "lbtui console: a field filter with negation")
        await pilot.press("escape", "3")
        targets = app.query_one(TargetsView)
        idx = next(i for i, r in enumerate(targets.table.rows)
                   if r.ref == ("listener|7000", "198.18.103.2:7000"))
        targets.table.move_to(idx)
        await pilot.press("c")
        await pilot.pause(1.2)
        save(app, out, "12-drill-down", "lbtui console: the connections of one target")
        # An 80x24 terminal.
        await pilot.press("escape", "3")
        await pilot.resize_terminal(*SMALL)
        await pilot.pause(1.2)
        save(app, out, "13-80x24", "lbtui console: 80x24")
        await pilot.resize_terminal(*SIZE)
        # An incident: the checked backend refuses; it turns failing and leaves the
        # rotation, its traffic moves to the others.
        break_backend(topo)
        checked = f"{topo.node(demo_config.CHECKED_BACKEND).ip}:{T.HTTP_PORT}"

        def out_of_rotation() -> bool:
            # Out of rotation by the checks, and judged by its resets: failing, or only
            # degraded when the checks took it out before many connections met a reset.
            return any(r.target == checked and r.rotation == "OUT" and
                       r.state in ("failing", "degraded")
                       for r in app.query_one(TargetsView).rows)
        t_end = time.monotonic() + 30
        while not out_of_rotation():
            assert time.monotonic() < t_end, f"{checked} never failed and left the rotation"
            await pilot.pause(0.5)
        await shot(["3"], "14-health", "lbtui console: a failing backend out of rotation")
        for r in app.query_one(TargetsView).rows:
            if r.target == checked and r.health is not None:
                print(f"[screenshots] {r.label} {checked}: {r.state}, check {r.rotation}, "
                      f"{r.health}", flush=True)
        await shot(["4", "slash", *keys("!event:opened !event:closed"), "enter"],
                   "15-incident-events", "lbtui console: edits and changes of state")
        # The operator deletes long-lived echo connections (d on Connections, confirmed):
        # their clients' next segments have no flow, and the datapath hands them to the
        # stack (reason no_flow).
        await pilot.press("escape", "1", "slash", *keys(f"vip:{topo.vip}:7000"), "enter")
        await pilot.pause(1.2)
        for _ in range(4):
            if app.conns_view.table.selected is None:
                break
            await pilot.press("d")
            await pilot.pause(0.3)
            await pilot.press("y")
            await pilot.pause(0.6)
        await pilot.press("escape")
        await shot(["6"], "16-reasons", "lbtui console: why packets went to the stack")
        await pilot.press("q")
        await pilot.pause(0.3)
        save(app, out, "10-quit", "lbtui console: quitting")
        await pilot.press("s")          # stop: detach and unpin
        for _ in range(100):
            if app.stopped:
                break
            await pilot.pause(0.1)


def _cluster_traffic(topo: T.Topology, stop: threading.Event) -> None:
    """New HTTP connections through the router from both clients, about 20/s, until
    ``stop``; and 16 long-lived echo connections, so both nodes show flows and rates."""
    from lbtui import netns
    from lbtui.lab import cluster as C
    from lbtui.lab import failover as F

    socks = []
    for i in range(16):
        with netns.inside(topo.clients[i % len(topo.clients)].ns):
            socks.append(socket.create_connection((topo.vip, C.ECHO_LISTEN_PORT), timeout=5))
    try:
        def load(client: T.Endpoint) -> None:
            netns.enter(client.ns)
            while not stop.wait(0.1):
                F._http_once(topo.vip, timeout=1)
        threads = [threading.Thread(target=load, args=(c,), daemon=True)
                   for c in topo.clients]
        for t in threads:
            t.start()
        stop.wait()
        for t in threads:
            t.join(3)
    finally:
        for sk in socks:
            sk.close()


async def drive_cluster(app: ConsoleApp, out: Path, warmup: float) -> None:
    async with app.run_test(size=SIZE) as pilot:
        deadline = time.monotonic() + warmup
        while time.monotonic() < deadline or app.snapshot is None:
            await pilot.pause(0.5)
        await pilot.press("3")
        await pilot.pause(1.5)
        save(app, out, "17-cluster-targets", "lbtui console --cluster: Targets, per node")
        await pilot.press("1")
        await pilot.pause(1.5)
        save(app, out, "18-cluster-connections", "lbtui console --cluster: Connections")
        await pilot.press("q")


def cluster_shots(out: Path, warmup: float) -> int:
    """A 2-node cluster lab, traffic through its router, the console over both nodes."""
    from lbtui.console.session import build_cluster_app
    from lbtui.control.clusterfile import load_cluster
    from lbtui.lab import cluster as C

    lab = LAB + "c"
    topo = C.up(lab, 2, progress=lambda m: print(f"[screenshots] {m}", flush=True))
    stop = threading.Event()
    traffic = threading.Thread(target=_cluster_traffic, args=(topo, stop), daemon=True)
    try:
        traffic.start()
        app, collector = build_cluster_app(load_cluster(C.cluster_file(lab)),
                                           refresh_interval=1.0)
        try:
            asyncio.run(drive_cluster(app, out, warmup))
        finally:
            collector.close()
    finally:
        stop.set()
        traffic.join(10)
        C.teardown(lab)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(REPO / "screenshots"), help="output directory")
    p.add_argument("--warmup", type=float, default=30.0,
                   help="seconds of traffic before the first screenshot (default 30)")
    p.add_argument("--cluster", action="store_true",
                   help="only the console over a 2-node cluster lab (17-18)")
    a = p.parse_args(argv)
    if not shutil.which("rsvg-convert"):
        print("rsvg-convert missing: apt-get install librsvg2-bin", file=sys.stderr)
        return 1
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.cluster:
        return cluster_shots(out, a.warmup)
    run = LabRun(LAB, TrafficOptions(http_rate=40, echo_conns=8, udp_rate=20, tls_rate=4,
                                     duration=a.warmup + 180), role="screenshots")
    try:
        run.start()
        assert run.topo is not None and run.inst is not None
        if not run.sni:
            print("[screenshots] the SNI splicer is not available: no SNI listener, no TLS",
                  file=sys.stderr)
            return 1
        app = build_app(run.inst, refresh_interval=1.0)
        asyncio.run(drive(app, run.topo, out, a.warmup))
        run.instance_released = app.stopped is not None
    finally:
        run.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
