"""Prometheus metrics of a real serve: the textfile node_exporter reads and the HTTP
endpoint, both parsed with prometheus-client's own parser."""

from __future__ import annotations

import socket
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from lbtui.lab import topology as T

from .conftest import instance_name, lab_config, spread

pytestmark = [pytest.mark.datapath, pytest.mark.netns]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def samples(text: str, parse=parse_text) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in parse(text) for s in fam.samples}


def test_textfile_and_http_endpoint_expose_traffic_health_and_reasons(
        make_lab, state_dir, start_serve, tmp_path: Path) -> None:
    topo = make_lab(1, 2)
    name = instance_name()
    port = free_port()
    prom = tmp_path / "textfile"
    prom.mkdir()
    path = tmp_path / "lbtui.toml"
    path.write_text(lab_config(topo, name, http_weights=(50, 50)) + f"""
[metrics]
textfile_dir = "{prom}"
interval = 1
listen = "127.0.0.1:{port}"
""")
    serve = start_serve(path)
    answers = spread(topo, 20)
    b1 = f"{topo.backends[0].ip}:{T.HTTP_PORT}"
    textfile = prom / f"lbtui_{name}.prom"
    opened = ("lbtui_target_opened_total",
              frozenset({"instance": name, "group": "listener :80", "target": b1}.items()))
    deadline = time.monotonic() + 10
    while True:                        # the hub counts closes as events arrive
        got = samples(textfile.read_text()) if textfile.exists() else {}
        if got.get(opened) == answers["backend1"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert got[opened] == answers["backend1"]
    me = frozenset({"instance": name}.items())
    assert got[("lbtui_datapath_flows_created_total", me)] >= 20
    assert got[("lbtui_flows", me)] >= 0
    healthy = ("lbtui_target_health", frozenset(
        {"instance": name, "group": "listener :80", "target": b1, "state": "healthy"}.items()))
    assert got[healthy] == 1
    assert any(k[0] == "lbtui_interface_xdp_attached" and v == 1 for k, v in got.items())

    # The endpoint speaks OpenMetrics to a scraper that asks for it.
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={
        "Accept": "application/openmetrics-text; version=1.0.0"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.headers["Content-Type"].startswith("application/openmetrics-text")
        body = r.read().decode()
    assert body.rstrip().endswith("# EOF")
    om = samples(body, parse_om)
    assert om[("lbtui_target_opened_total", opened[1])] >= answers["backend1"]

    assert serve.stop() == 0
    assert not textfile.exists(), "a stopped instance leaves no stale metrics"
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
