"""Config parsing and validation: every problem reported, with its location."""

from __future__ import annotations

import copy
import inspect
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from lbtui.control import config as C
from lbtui.control.config import ConfigError, load_config, parse_config, parse_dict
from lbtui.model import DatapathSettings, Settings
from lbtui.targets import TargetGroup, TargetSpec

ROOT = Path(__file__).resolve().parents[2]
T1 = {"ip": "198.18.101.2", "port": 8080, "weight": 50}
T2 = {"ip": "198.18.102.2", "port": 8080, "weight": 50}


def base() -> dict[str, Any]:
    return {
        "datapath": {"instance": "h2-v", "interfaces": ["c1", "c2"],
                     "reply_interfaces": ["b1"]},
        "settings": {},
        "listener": [{"port": 80, "targets": [dict(T1), dict(T2)]}],
        "source_route": [{"cidr": "198.18.1.0/24", "targets": [dict(T1), dict(T2)]}],
        "sni_route": [{"hostname": "api.example.com", "targets": [dict(T1), dict(T2)]}],
    }


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_dict(data)
    return e.value.problems


def edit(**changes: Any) -> dict[str, Any]:
    """base() with dotted-path changes: edit(**{"listener.0.port": 0})."""
    d = base()
    for path, value in changes.items():
        *parents, last = path.split(".")
        node: Any = d
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if value is DELETE:
            if isinstance(node, list):
                del node[int(last)]
            else:
                del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return d


DELETE = object()
NINE = [{"ip": f"198.18.101.{i}", "port": 80, "weight": 0} for i in range(1, 10)]
MANY_LISTENERS = [{"port": p, "targets": [dict(T1, weight=100)]} for p in range(1, 130)]

# (data, the exact problem expected among those reported)
CASES: list[tuple[Any, str]] = [
    (edit(bogus=1), "bogus: unknown section (known: datapath, settings, health, metrics, "
                    "listener, source_route, sni_route)"),
    (edit(metrics={"interval": 0}), "metrics.interval: must be 1..3600 (got 0)"),
    (edit(metrics={"textfile_dir": "prom"}),
     "metrics.textfile_dir: 'prom' must be an absolute path (or \"\" for no textfile)"),
    (edit(metrics={"listen": "localhost:9469"}),
     "metrics.listen: 'localhost' is not an IPv4 address (like 198.18.0.10)"),
    (edit(metrics={"listen": "127.0.0.1:x"}), "metrics.listen: '127.0.0.1:x': port must be "
                                              "1..65535"),
    (edit(metrics={"port": 1}), "metrics.port: unknown key (known: textfile_dir, interval, "
                                "listen)"),
    (edit(datapath=DELETE), "datapath: missing section: [datapath] with at least "
                            "interfaces = [...] is required"),
    (edit(datapath=3), "datapath: must be a table, not an integer"),
    (edit(**{"datapath.colour": "red"}),
     "datapath.colour: unknown key (known: instance, interfaces, reply_interfaces, netns, "
     "xdp_mode, keep)"),
    (edit(**{"datapath.instance": "a/b"}),
     "datapath.instance: instance name 'a/b' is not allowed: 1-32 ASCII letters, digits, "
     "'_' or '-', starting with a letter or digit"),
    (edit(**{"datapath.instance": "x\n"}),
     "datapath.instance: instance name 'x\\n' is not allowed: 1-32 ASCII letters, digits, "
     "'_' or '-', starting with a letter or digit"),
    (edit(**{"datapath.instance": 7}), "datapath.instance: must be a string, not an integer"),
    (edit(**{"datapath.interfaces": DELETE}),
     "datapath.interfaces: is required (the client-facing interfaces XDP balances on)"),
    (edit(**{"datapath.interfaces": "c1"}),
     "datapath.interfaces: must be an array of interface names, not a string"),
    (edit(**{"datapath.interfaces": []}), "datapath.interfaces: must name at least one "
                                          "interface"),
    (edit(**{"datapath.interfaces": ["c1", 5]}),
     "datapath.interfaces[1]: must be an interface name, not an integer"),
    (edit(**{"datapath.interfaces": ["c1", "x" * 16]}),
     f"datapath.interfaces[1]: '{'x' * 16}' is not a valid interface name (1-15 bytes, "
     "no '/', ':', whitespace or control characters, not '.' or '..')"),
    (edit(**{"datapath.interfaces": ["c1", "e\x1b[2J"]}),
     "datapath.interfaces[1]: 'e\\x1b[2J' is not a valid interface name (1-15 bytes, "
     "no '/', ':', whitespace or control characters, not '.' or '..')"),
    (edit(**{"datapath.interfaces": ["c1", "\u00e9" * 8]}),
     "datapath.interfaces[1]: '\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9' is not a "
     "valid interface name (1-15 bytes, "
     "no '/', ':', whitespace or control characters, not '.' or '..')"),
    (edit(**{"datapath.interfaces": ["c1", "c1"]}),
     "datapath.interfaces[1]: 'c1' is listed twice"),
    (edit(**{"datapath.reply_interfaces": ["b1", "c2"]}),
     "datapath.reply_interfaces[1]: 'c2' is already in datapath.interfaces"),
    (edit(**{"datapath.netns": "a/b"}),
     "datapath.netns: network namespace name 'a/b' is not allowed: 1-64 ASCII letters, "
     "digits, '_', '.' or '-', starting with a letter, digit or '_'"),
    (edit(**{"datapath.netns": ".."}),
     "datapath.netns: network namespace name '..' is not allowed: 1-64 ASCII letters, "
     "digits, '_', '.' or '-', starting with a letter, digit or '_'"),
    (edit(**{"datapath.xdp_mode": "turbo"}),
     "datapath.xdp_mode: must be one of auto, native, generic (got 'turbo')"),
    (edit(**{"datapath.keep": "yes"}), "datapath.keep: must be true or false, not a string"),
    (edit(settings=[1]), "settings: must be a table, not an array"),
    (edit(**{"settings.colour": 1}),
     "settings.colour: unknown key (known: stats, connection_timeout, max_connections, "
     "max_routes, max_sni_routes, ringbuf_size, sweep_interval, maglev_table_size, "
     "max_maglev_groups, syn_flood_rate)"),
    (edit(**{"settings.maglev_table_size": 65536}),
     "settings.maglev_table_size: must be a prime (got 65536; nearest primes 65521 and 65537)"),
    (edit(**{"settings.maglev_table_size": 1000}),
     "settings.maglev_table_size: must be a prime 4093..655373 (got 1000)"),
    (edit(**{"settings.maglev_table_size": 1e5}),
     "settings.maglev_table_size: must be a prime integer 4093..655373"),
    (edit(**{"settings.max_maglev_groups": 0}),
     "settings.max_maglev_groups: must be 1..1024 (got 0)"),
    (edit(**{"listener.0.hash": "ring"}),
     "listener[0].hash: must be one of weighted, maglev (got 'ring')"),
    (edit(**{"source_route.0.hash": 1}), "source_route[0].hash: must be a string, not an integer"),
    (edit(**{"sni_route.0.hash": "Maglev"}),
     "sni_route[0].hash: must be one of weighted, maglev (got 'Maglev')"),
    (edit(**{"settings.max_maglev_groups": 1, "listener.0.hash": "maglev",
             "sni_route.0.hash": "maglev"}),
     'sni_route[0].hash: 2 groups use hash = "maglev", more than settings.max_maglev_groups (1)'),
    (edit(**{"settings.syn_flood_rate": -1}),
     "settings.syn_flood_rate: must be 0..100000000 (got -1)"),
    (edit(**{"settings.syn_flood_rate": "fast"}),
     "settings.syn_flood_rate: must be an integer 0..100000000, not a string"),
    (edit(**{"settings.connection_timeout": 1.5}),
     "settings.connection_timeout: must be an integer 0..604800, not a number"),
    (edit(**{"settings.connection_timeout": 604801}),
     "settings.connection_timeout: must be 0..604800 (got 604801)"),
    (edit(**{"settings.ringbuf_size": 5000}),
     "settings.ringbuf_size: must be a power of two (got 5000)"),
    (edit(**{"settings.sweep_interval": "1s"}),
     "settings.sweep_interval: must be a number 0.1..3600, not a string"),
    (edit(**{"settings.sweep_interval": 0}),
     "settings.sweep_interval: must be 0.1..3600 (got 0)"),
    (edit(health={"window": 1}), "health.window: must be 5..3600 (got 1)"),
    (edit(health={"fall": 0}), "health.fall: must be 1..100 (got 0)"),
    (edit(health={"rise": 1, "probe": 2}),
     "health.probe: unknown key (known: window, min_samples, degraded_ratio, failing_ratio, "
     "check_interval, check_timeout, fall, rise, check_targets)"),
    (edit(health={"check_targets": ["198.18.2.11"]}),
     "health.check_targets[0]: '198.18.2.11': expected IP:PORT (like 198.18.2.11:8080)"),
    (edit(health={"check_targets": ["198.18.2.11:0"]}),
     "health.check_targets[0]: '198.18.2.11:0': port must be 1..65535"),
    (edit(health={"check_targets": "198.18.2.11:80"}),
     'health.check_targets: must be an array of "ip:port" strings, not a string'),
    (edit(health={"degraded_ratio": 0.6, "failing_ratio": 0.5}),
     "health.degraded_ratio: 0.6 is above failing_ratio (0.5)"),
    (edit(health=[]), "health: must be a table, not an array"),
    (edit(listener=3), "listener: must be an array of tables ([[listener]]), not an integer"),
    (edit(listener=[1]), "listener[0]: must be a table, not an integer"),
    (edit(**{"listener.0.port": DELETE}), "listener[0].port: is required"),
    (edit(**{"listener.0.port": 0}), "listener[0].port: must be 1..65535 (got 0)"),
    (edit(**{"listener.0.protocol": "sctp"}),
     "listener[0].protocol: must be one of tcp, udp, both (got 'sctp')"),
    (edit(**{"listener.0.interfaces": ["c1", "b1"]}),
     "listener[0].interfaces[1]: 'b1' is not in datapath.interfaces (XDP balances only there)"),
    (edit(**{"listener.0.protocol": "udp", "listener.0.sni": True}),
     'listener[0].sni: SNI routing needs TCP (protocol is "udp")'),
    (edit(listener=[base()["listener"][0], dict(base()["listener"][0])]),
     "listener[1].port: 80 is already used by listener[0] (one listener per port)"),
    (edit(listener=MANY_LISTENERS),
     "listener: 258 listen entries (listeners x interfaces), at most 256"),
    (edit(**{"listener.0.targets": "198.18.101.2:80"}),
     'listener[0].targets: must be an array of targets like [{ ip = "198.18.101.2", '
     'port = 8080, weight = 50 }], not a string'),
    (edit(**{"listener.0.targets": []}), "listener[0].targets: needs at least 1 target"),
    (edit(**{"listener.0.targets": NINE}), "listener[0].targets: 9 targets, at most 8"),
    (edit(**{"listener.0.targets.1": "x"}),
     'listener[0].targets[1]: must be a table like { ip = "198.18.101.2", port = 8080, '
     'weight = 50 }'),
    (edit(**{"listener.0.targets.1.host": "x"}),
     "listener[0].targets[1].host: unknown key (known: ip, port, weight)"),
    (edit(**{"listener.0.targets.1.ip": DELETE}), "listener[0].targets[1].ip: is required"),
    (edit(**{"listener.0.targets.1.ip": 3}),
     "listener[0].targets[1].ip: must be an IPv4 address string, not an integer"),
    (edit(**{"listener.0.targets.1.ip": "198.18.1"}),
     "listener[0].targets[1].ip: '198.18.1' is not an IPv4 address (like 198.18.101.2)"),
    (edit(**{"listener.0.targets.1.ip": "224.0.0.1"}),
     "listener[0].targets[1].ip: 224.0.0.1 is a multicast address: it cannot be a target"),
    (edit(**{"listener.0.targets.1.ip": "127.0.0.53"}),
     "listener[0].targets[1].ip: 127.0.0.53 is a loopback address: it cannot be a target"),
    (edit(**{"listener.0.targets.1.ip": "169.254.1.1"}),
     "listener[0].targets[1].ip: 169.254.1.1 is a link-local address: it cannot be a "
     "target"),
    (edit(**{"listener.0.targets.1.ip": "240.0.0.1"}),
     "listener[0].targets[1].ip: 240.0.0.1 is in class E (reserved) or the broadcast "
     "address: it cannot be a target"),
    (edit(**{"listener.0.targets.1.ip": "0.1.2.3"}),
     "listener[0].targets[1].ip: 0.1.2.3 is in 0.0.0.0/8 (this host): it cannot be a "
     "target"),
    (edit(**{"listener.0.targets.1.port": DELETE}), "listener[0].targets[1].port: is required"),
    (edit(**{"listener.0.targets.1.weight": 101}),
     "listener[0].targets[1].weight: must be 0..100 (got 101)"),
    (edit(**{"listener.0.targets.1.weight": DELETE}),
     "listener[0].targets[1].weight: is required when a group has more than one target"),
    (edit(**{"listener.0.targets.1": dict(T1)}),
     "listener[0].targets[1]: 198.18.101.2:8080 is listed twice (also listener[0].targets[0])"),
    (edit(**{"listener.0.targets.1.weight": 40}),
     "listener[0].targets: weights sum to 90, must sum to 100"),
    (edit(**{"listener.0.sni": True, "listener.0.address": "198.18.0"}),
     "listener[0].address: '198.18.0' is not an IPv4 address (like 198.18.0.10)"),
    (edit(**{"listener.0.sni": True, "listener.0.address": "239.1.1.1"}),
     "listener[0].address: 239.1.1.1 cannot be listened on"),
    (edit(**{"listener.0.sni": True, "listener.0.address": "0.0.0.0"}),
     "listener[0].address: must be one address (normally the VIP), not 0.0.0.0: the splicer "
     "never listens on every interface"),
    (edit(**{"listener.0.sni": True}),
     "listener[0].address: is required for SNI listeners: the one address the splicer "
     "listens on (normally the VIP)"),
    (edit(**{"listener.0.sni": True, "listener.0.address": "198.18.101.2", "listener.0.port":
             8080}),
     "listener[0].targets[0]: 198.18.101.2:8080 is the address of the SNI listener "
     "listener[0]: its splicer would connect to itself (a loop)"),
    (edit(**{"listener.0.sni": True, "listener.0.address": "198.18.102.2", "listener.0.port":
             8080}),
     "sni_route[0].targets[1]: 198.18.102.2:8080 is the address of the SNI listener "
     "listener[0]: its splicer would connect to itself (a loop)"),
    (edit(**{"listener.0.stats": 1}), "listener[0].stats: must be true or false, not an "
                                      "integer"),
    (edit(**{"source_route.0.cidr": "198.18.1.0/33"}),
     "source_route[0].cidr: prefix length 33 must be an integer 0..32"),
    (edit(**{"source_route.0.cidr": "198.18.1.7/24"}),
     "source_route[0].cidr: 198.18.1.7/24 has host bits set (did you mean 198.18.1.0/24?)"),
    (edit(**{"source_route.0.cidr": "198.18.1.0/0.0.0.255"}),
     "source_route[0].cidr: 0.0.0.255 is not a netmask (contiguous leading ones, like "
     "255.255.255.0)"),
    (edit(**{"source_route.0.cidr": ["x"]}),
     "source_route[0].cidr: must be a string, not an array"),
    (edit(source_route=[base()["source_route"][0],
                        dict(base()["source_route"][0], cidr="198.18.1.0/24")]),
     "source_route[1].cidr: 198.18.1.0/24 is already routed by source_route[0]"),
    (edit(**{"settings.max_routes": 1},
          source_route=[base()["source_route"][0],
                        dict(base()["source_route"][0], cidr="198.18.2.0/24")]),
     "source_route: 2 routes, more than settings.max_routes (1)"),
    (edit(**{"sni_route.0.hostname": "bad_name.example"}),
     "sni_route[0].hostname: hostname 'bad_name.example': label 'bad_name' is invalid (1-63 "
     "of a-z, 0-9, '-', not starting or ending with '-')"),
    (edit(**{"sni_route.0.hostname": "198.18.0.10"}),
     "sni_route[0].hostname: hostname '198.18.0.10': the last label is all digits, as in an "
     "IP address; SNI routes match names (TLS clients never send an address as SNI)"),
    (edit(**{"sni_route.0.hostname": "xn--abc.example"}),
     "sni_route[0].hostname: hostname 'xn--abc.example': label 'xn--abc' is not valid "
     "punycode (Codepoint U+0082 at position 1 of '\\x82\\x81\\x80' not allowed)"),
    (edit(sni_route=[base()["sni_route"][0],
                     dict(base()["sni_route"][0], hostname="API.Example.com.")]),
     "sni_route[1].hostname: api.example.com is already routed by sni_route[0]"),
    (edit(**{"settings.max_sni_routes": 1},
          sni_route=[base()["sni_route"][0],
                     dict(base()["sni_route"][0], hostname="www.example.com")]),
     "sni_route: 2 routes, more than settings.max_sni_routes (1)"),
]


@pytest.mark.parametrize("data,expected", CASES, ids=[c[1][:60] for c in CASES])
def test_each_problem_is_reported_with_its_location(data: Any, expected: str) -> None:
    assert expected in problems(data)


def test_every_validation_message_is_reachable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each ``self.bad(`` call site in config.py is hit by at least one case above."""
    src, first = inspect.getsourcelines(C)
    sites = {first + i for i, line in enumerate(src) if "self.bad(" in line
             and "def bad" not in line}
    hit: set[int] = set()
    real = C._Validator.bad

    def spy(self: C._Validator, loc: str, msg: str) -> None:
        hit.add(sys._getframe(1).f_lineno)
        real(self, loc, msg)

    monkeypatch.setattr(C._Validator, "bad", spy)
    for data, _ in CASES:
        with pytest.raises(ConfigError):
            parse_dict(copy.deepcopy(data))
    # A call spanning several lines reports the line of its first argument's start.
    missed = {s for s in sites if not ({s, s + 1} & hit)}
    assert not missed, f"validation messages never produced: lines {sorted(missed)}"


def test_all_problems_are_reported_at_once() -> None:
    data = edit(**{"datapath.xdp_mode": "x", "listener.0.port": 0,
                   "listener.0.targets.1.weight": 101, "source_route.0.cidr": "nope",
                   "sni_route.0.hostname": "-x-"})
    got = problems(data)
    assert len(got) == 5, got
    assert [p.split(":")[0] for p in got] == [
        "datapath.xdp_mode", "listener[0].port", "listener[0].targets[1].weight",
        "source_route[0].cidr", "sni_route[0].hostname"]


def test_error_text_lists_every_problem_and_the_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text('[datapath]\ninterfaces = []\nxdp_mode = "x"\n')
    with pytest.raises(ConfigError) as e:
        load_config(p)
    text = str(e.value)
    assert text.startswith(f"{p}: 2 problem(s) in the config:")
    assert "datapath.interfaces: must name at least one interface" in text
    assert "datapath.xdp_mode: must be one of auto, native, generic (got 'x')" in text
    assert isinstance(e.value, ValueError)  # the CLI maps it to exit code 2


def test_toml_syntax_error_names_line_and_column() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config('[datapath]\ninterfaces = ["c1"]\nxdp_mode = \nkeep = true\n', "x.toml")
    (msg,) = e.value.problems
    assert re.match(r"TOML syntax: .*\(at line \d+, column \d+\)", msg), msg


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "none.toml")
    assert e.value.problems == [f"{tmp_path / 'none.toml'}: file not found"]


def test_defaults_and_normalisation() -> None:
    c = parse_config('[datapath]\ninterfaces = ["c1"]\n'
                     '[[listener]]\nport = 53\ntargets = [{ ip = "198.18.101.2", port = 53 }]\n'
                     '[[source_route]]\ncidr = " 198.18.7.0/24"\n'
                     'targets = [{ ip = "198.18.101.2", port = 53 }]\n'
                     '[[sni_route]]\nhostname = "WWW.Example.COM."\n'
                     'targets = [{ ip = "198.18.101.2", port = 443 }]\n')
    assert c.datapath == DatapathSettings(interfaces=["c1"])
    assert c.settings == Settings()
    (lst,) = c.listeners
    assert (lst.protocol, lst.interfaces, lst.stats, lst.sni) == ("both", None, True, False)
    assert lst.group == TargetGroup.single("198.18.101.2", 53)
    assert c.source_routes[0].cidr == "198.18.7.0/24"
    assert c.sni_routes[0].hostname == "www.example.com"
    assert c.listener_interfaces(lst) == ["c1"]
    assert c.sni_route("www.EXAMPLE.com") is c.sni_routes[0]
    assert c.source_route("198.18.7.0/24") is c.source_routes[0]


def test_example_config_is_valid_and_complete() -> None:
    c = load_config(ROOT / "examples" / "lbtui.toml")
    text = (ROOT / "examples" / "lbtui.toml").read_text()
    # Every key the validator knows appears in the example, so it documents them all.
    for key in (*C._DATAPATH_KEYS, *C._SETTINGS_KEYS, *C._HEALTH_KEYS, *C._LISTENER_KEYS,
                *C._SOURCE_KEYS,
                *C._SNI_KEYS, *C._TARGET_KEYS):
        assert re.search(rf"^#? ?{key} = |{key} = ", text, re.M), f"{key} not in the example"
    assert [x.port for x in c.listeners] == [80, 53, 443]
    assert c.listeners[2].sni and c.sni_routes[0].hostname == "api.example.com"


def test_validate_a_config_built_in_code() -> None:
    c = parse_dict(base())
    assert C.validate(c) == []
    # Groups are validated when built; one built around the rules is still caught.
    first, *rest = c.listeners[0].group.targets
    c.listeners[0].group = TargetGroup((TargetSpec(first.ip, first.port, 10), *rest))
    assert C.validate(c) == ["listener[0].targets: weights sum to 60, must sum to 100"]
