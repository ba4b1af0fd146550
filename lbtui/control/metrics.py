"""Prometheus metrics of a running instance, with the prometheus-client library.

``serve`` exposes them the two ways Prometheus users expect of a host daemon:

- a node_exporter textfile-collector file (default), rewritten atomically every
  ``[metrics] interval`` seconds as ``<textfile_dir>/lbtui_<instance>.prom`` when that
  directory exists (Debian's prometheus-node-exporter reads
  /var/lib/prometheus/node-exporter);
- an HTTP endpoint (opt-in: ``[metrics] listen = "ADDRESS:PORT"``), which answers in the
  OpenMetrics text format when the scraper asks for it (Prometheus does) and in the
  classic text format otherwise.

Everything is read when scraped: the datapath's counters and per-interface reasons, map
fill, interfaces, the event hub's per-(group, target) traffic and health, and the active
checks.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from lbtui.control.health import DEGRADED, FAILING, HEALTHY
from lbtui.files import remove_inside
from lbtui.model import MetricsSettings

if TYPE_CHECKING:
    from lbtui.control.instance import Instance

log = logging.getLogger("lbtui.metrics")

STATES = (HEALTHY, DEGRADED, FAILING)
TARGET_COUNTS = (("opened", "connections the datapath or splicer opened to the target"),
                 ("closed", "connections to the target that finished"),
                 ("unanswered", "connections or flows the target never answered"),
                 ("timeouts", "unanswered flows that aged out waiting"),
                 ("resets", "resets the target sent"),
                 ("connect_failed", "connections the SNI splicer could not open"))


class InstanceCollector(Collector):
    """Reads the instance on every collect (a scrape, or a textfile write)."""

    def __init__(self, inst: Instance) -> None:
        self.inst = inst

    def collect(self) -> Iterator[Any]:
        inst = self.inst
        status = inst.status()
        labels = ["instance"]
        me = [inst.name]
        from importlib.metadata import version

        info = InfoMetricFamily("lbtui", "the running lbtui", labels=labels)
        info.add_metric(me, {"version": version("lbtui")})
        yield info

        for name, value in status["counters"].items():
            c = CounterMetricFamily(f"lbtui_datapath_{name}", f"datapath counter {name}",
                                    labels=labels)
            c.add_metric(me, value)
            yield c

        xdp = GaugeMetricFamily("lbtui_interface_xdp_attached",
                                "1 while lbtui's XDP program is attached to the interface",
                                labels=[*labels, "interface", "role", "mode"])
        stack = CounterMetricFamily("lbtui_stack_packets",
                                    "packets the datapath handed to the kernel stack, by "
                                    "interface and reason", labels=[*labels, "interface",
                                                                     "reason"])
        for i in status["interfaces"]:
            xdp.add_metric([*me, i["ifname"], i["role"], i["xdp_mode"] or "none"],
                           1 if i["ours"] else 0)
            for reason, n in sorted(i["reasons"].items()):
                stack.add_metric([*me, i["ifname"], reason], n)
        yield xdp
        yield stack

        egress = GaugeMetricFamily("lbtui_egress_redirect",
                                   "1 where the datapath may redirect frames itself, 0 where "
                                   "packets leave through the kernel stack",
                                   labels=[*labels, "interface"])
        for e in status["egress"]:
            egress.add_metric([*me, e["ifname"]], 1 if e["redirect"] else 0)
        yield egress

        entries = GaugeMetricFamily("lbtui_map_entries", "entries in a map",
                                    labels=[*labels, "map"])
        size = GaugeMetricFamily("lbtui_map_max_entries", "capacity of a map",
                                 labels=[*labels, "map"])
        for name, m in status["maps"].items():
            entries.add_metric([*me, name], m["entries"])
            size.add_metric([*me, name], m["max_entries"])
        yield entries
        yield size
        flows = GaugeMetricFamily("lbtui_flows", "flows tracked by the datapath",
                                  labels=labels)
        flows.add_metric(me, status["maps"]["conntrack"]["flows"])
        yield flows
        yield from self._targets(me, labels)

    def _targets(self, me: list[str], labels: list[str]) -> Iterator[Any]:
        hub, checker = self.inst.hub, self.inst.checker
        tl = [*labels, "group", "target"]
        counts = {k: CounterMetricFamily(f"lbtui_target_{k}", why, labels=tl)
                  for k, why in TARGET_COUNTS}
        nbytes = CounterMetricFamily("lbtui_target_bytes", "bytes of finished flows, by "
                                     "direction (to the target: fwd, from it: rev)",
                                     labels=[*tl, "direction"])
        state = GaugeMetricFamily("lbtui_target_health", "1 for the target's current state "
                                  "judged from its traffic", labels=[*tl, "state"])
        if hub is not None:
            for t in hub.book.snapshot():
                key = [*me, t["group"], t["target"]]
                for k in counts:
                    counts[k].add_metric(key, t[k])
                nbytes.add_metric([*key, "fwd"], t["bytes_fwd"])
                nbytes.add_metric([*key, "rev"], t["bytes_rev"])
                for s in STATES:
                    state.add_metric([*key, s], 1 if t["state"] == s else 0)
        yield from counts.values()
        yield nbytes
        yield state
        rotation = GaugeMetricFamily("lbtui_target_in_rotation", "active checks: 1 while the "
                                     "target is in rotation, 0 while taken out",
                                     labels=[*labels, "target"])
        for c in checker.snapshot() if checker is not None else []:
            rotation.add_metric([*me, str(c["target"])], 1 if c["state"] == "up" else 0)
        yield rotation


class MetricsExporter:
    """The textfile writer thread and the optional HTTP endpoint (``start``/``stop``)."""

    def __init__(self, inst: Instance, settings: MetricsSettings) -> None:
        self.settings = settings
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(InstanceCollector(inst))
        self.textfile = (Path(settings.textfile_dir) / f"lbtui_{inst.name}.prom"
                         if settings.textfile_dir else None)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._http: Any = None
        self._warned = False

    def start(self) -> None:
        if self.settings.listen:
            host, _, port = self.settings.listen.rpartition(":")
            try:
                self._http, _t = start_http_server(int(port), addr=host,
                                                   registry=self.registry)
            except OSError as e:
                raise RuntimeError(f"metrics.listen {self.settings.listen}: {e.strerror}; "
                                   "choose a free port on a local address") from None
            log.info("metrics on http://%s/metrics", _url_host(host, port))
        if self.textfile is not None:
            self._thread = threading.Thread(target=self._loop, name="lbtui-metrics",
                                            daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.write()
            self._stop.wait(self.settings.interval)

    def write(self) -> bool:
        """Rewrite the textfile (atomically); False when its directory does not exist."""
        assert self.textfile is not None
        if not self.textfile.parent.is_dir():
            if not self._warned:
                log.info("not writing %s: no such directory (install node_exporter's "
                         "textfile collector, or set [metrics] textfile_dir)", self.textfile)
                self._warned = True
            return False
        try:
            write_to_textfile(str(self.textfile), self.registry)
        except Exception:        # keep serving; the next interval retries
            log.exception("writing metrics to %s", self.textfile)
            return False
        return True

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        if self.textfile is not None:
            # A stopped instance has no metrics (only our own file in that directory goes).
            remove_inside(self.textfile, self.textfile.parent)


def _url_host(host: str, port: str) -> str:
    try:
        return f"[{host}]:{port}" if ipaddress.ip_address(host).version == 6 else \
            f"{host}:{port}"
    except ValueError:
        return f"{host}:{port}"
