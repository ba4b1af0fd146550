"""The TOML config file: dataclasses, parsing and validation.

``parse_config`` checks everything and raises ``ConfigError`` listing *every* problem with
its location (``listener[1].targets[2].weight: must be 0..100``; indexes count from 0, as
in the file's ``[[listener]]`` order), so an operator fixes a file in one pass and nothing
starts from an invalid one. Writing the file back (comments kept) is ``configfile``'s job.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lbtui import maglev, names
from lbtui.addr import parse_cidr
from lbtui.files import FileRefused, read_capped
from lbtui.model import (
    HASHES,
    PROTOCOLS,
    XDP_MODES,
    Config,
    DatapathSettings,
    HealthSettings,
    Listener,
    MetricsSettings,
    Settings,
    SniRoute,
    SourceRoute,
    TargetGroup,
)
from lbtui.sni import normalize_hostname
from lbtui.targets import check_targets, typename

MAX_LISTEN_ENTRIES = 256          # the listen map's size (maps.DEFAULT_CONFIG)
MAX_CONN_TIMEOUT = 7 * 24 * 3600
MAX_SYN_FLOOD_RATE = 100_000_000       # new TCP flows/s per CPU (the datapath takes u32)
MAX_CONFIG_BYTES = 16 << 20      # a config file larger than this is refused unread
IFNAME_RULE = ("1-15 bytes, no '/', ':', whitespace or control characters, not '.' or "
               "'..'")
TARGET_EXAMPLE = '{ ip = "198.18.101.2", port = 8080, weight = 50 }'


class ConfigError(ValueError):
    """An invalid config; ``problems`` holds one "location: problem" line per mistake."""

    def __init__(self, problems: list[str], path: Path | str | None = None) -> None:
        self.problems = problems
        self.path = path
        where = f"{path}: " if path else ""
        super().__init__(f"{where}{len(problems)} problem(s) in the config:\n  "
                         + "\n  ".join(problems))


# --- the file's data model ---------------------------------------------------------------


def to_dict(config: Config) -> dict[str, Any]:
    """The TOML data model of ``config`` (what ``parse_dict`` reads); optional keys left
    out."""
    d = config.datapath
    dp: dict[str, Any] = {"instance": d.instance, "interfaces": list(d.interfaces)}
    if d.reply_interfaces:
        dp["reply_interfaces"] = list(d.reply_interfaces)
    if d.netns is not None:
        dp["netns"] = d.netns
    dp["xdp_mode"] = d.xdp_mode
    dp["keep"] = d.keep
    out: dict[str, Any] = {"datapath": dp, "settings": dict(vars(config.settings))}
    if config.health != HealthSettings():
        out["health"] = dict(vars(config.health))
    if config.metrics != MetricsSettings():
        out["metrics"] = dict(vars(config.metrics))
    if config.listeners:
        out["listener"] = [_listener_dict(x) for x in config.listeners]
    if config.source_routes:
        out["source_route"] = [_with_hash({"cidr": r.cidr, "stats": r.stats}, r.hash,
                                          r.group.to_list())
                               for r in config.source_routes]
    if config.sni_routes:
        out["sni_route"] = [_with_hash({"hostname": r.hostname}, r.hash, r.group.to_list())
                            for r in config.sni_routes]
    return out


def _with_hash(d: dict[str, Any], hash_name: str | None, targets: list[dict[str, Any]]
               ) -> dict[str, Any]:
    """``d`` with its group's hash (when set) and targets, in the file's key order."""
    if hash_name is not None:
        d["hash"] = hash_name
    d["targets"] = targets
    return d


def _listener_dict(x: Listener) -> dict[str, Any]:
    d: dict[str, Any] = {"port": x.port, "protocol": x.protocol}
    if x.interfaces is not None:
        d["interfaces"] = list(x.interfaces)
    d["stats"] = x.stats
    d["sni"] = x.sni
    if x.address is not None:
        d["address"] = x.address
    return _with_hash(d, x.hash, x.group.to_list())


def valid_ifname(name: str) -> bool:
    """The kernel's rule (dev_valid_name: shorter than IFNAMSIZ, no '/', ':' or
    whitespace, not '.' or '..'), and no control characters, which no tool can show."""
    return (0 < len(name.encode("utf-8", "surrogatepass")) < 16 and name not in (".", "..")
            and not any(c in "/:" or c.isspace() or not c.isprintable() for c in name))


# --- loading ---------------------------------------------------------------------------


def read_config_text(path: str | Path) -> str:
    """The text of a config file: a regular file of at most MAX_CONFIG_BYTES, UTF-8.
    Anything else (missing, unreadable, a FIFO or device, too big, not UTF-8) is a
    ConfigError saying so: a file that vanishes or is swapped is a validation error."""
    p = Path(path)
    try:
        data = read_capped(p, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        raise ConfigError([f"{p}: file not found"], p) from None
    except FileRefused as e:
        raise ConfigError([str(e)], p) from None
    except OSError as e:
        raise ConfigError([f"{p}: cannot be read: {e.strerror or e}"], p) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError([f"{p}: not UTF-8 text (line {line}, byte offset {e.start}); "
                           "save the file as UTF-8"], p) from None


def load_config(path: str | Path) -> Config:
    """Read and validate a config file. Raises ConfigError (a ValueError) listing every
    problem, including a file that cannot be read."""
    return parse_config(read_config_text(path), Path(path))


def parse_config(text: str, path: str | Path | None = None) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"TOML syntax: {e}"], path) from None
    except RecursionError:
        raise ConfigError(["TOML: arrays or tables nested too deeply (a config needs at "
                           "most a few levels)"], path) from None
    return parse_dict(data, path)


def parse_dict(data: dict[str, Any], path: str | Path | None = None) -> Config:
    """Validate the TOML data model and build a Config (ConfigError on any problem)."""
    v = _Validator()
    cfg = v.config(data)
    if v.problems:
        raise ConfigError(v.problems, path)
    cfg.path = Path(path) if path is not None else None
    return cfg


def validate(config: Config) -> list[str]:
    """Problems of a Config built in code (the same rules as the file)."""
    try:
        parse_dict(to_dict(config))
    except ConfigError as e:
        return e.problems
    return []


# --- validation ------------------------------------------------------------------------

_SECTIONS = ("datapath", "settings", "health", "metrics", "listener", "source_route",
             "sni_route")
_DATAPATH_KEYS = ("instance", "interfaces", "reply_interfaces", "netns", "xdp_mode", "keep")
_SETTINGS_KEYS = tuple(vars(Settings()).keys())
_HEALTH_KEYS = tuple(vars(HealthSettings()).keys())
_METRICS_KEYS = tuple(vars(MetricsSettings()).keys())
_LISTENER_KEYS = ("port", "protocol", "interfaces", "stats", "sni", "address", "hash",
                  "targets")
_SOURCE_KEYS = ("cidr", "stats", "hash", "targets")
_SNI_KEYS = ("hostname", "hash", "targets")
_TARGET_KEYS = ("ip", "port", "weight")

_MISSING = object()


class _Validator:
    """Walks the data model, recording every problem instead of stopping at the first.
    The Config it builds is used only when no problem was recorded."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        # SNI listeners' address:port -> location: a target there makes the splicer
        # connect to itself.
        self.sni_endpoints: dict[tuple[str, int], str] = {}

    def bad(self, loc: str, msg: str) -> None:
        self.problems.append(f"{loc}: {msg}")

    # --- primitive checks (return the value or _MISSING) ---

    def keys(self, loc: str, table: dict[str, Any], known: tuple[str, ...]) -> None:
        for k in table:
            if k not in known:
                self.bad(f"{loc}.{k}" if loc else k,
                         f"unknown key (known: {', '.join(known)})")

    def boolean(self, loc: str, value: Any) -> Any:
        if not isinstance(value, bool):
            self.bad(loc, f"must be true or false, not {typename(value)}")
            return _MISSING
        return value

    def integer(self, loc: str, value: Any, lo: int, hi: int) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            self.bad(loc, f"must be an integer {lo}..{hi}, not {typename(value)}")
            return _MISSING
        if not lo <= value <= hi:
            self.bad(loc, f"must be {lo}..{hi} (got {value})")
            return _MISSING
        return value

    def string(self, loc: str, value: Any) -> Any:
        if not isinstance(value, str):
            self.bad(loc, f"must be a string, not {typename(value)}")
            return _MISSING
        return value

    def name(self, loc: str, value: Any, rule: names.NameRule) -> Any:
        """A name that becomes a path or a namespace (lbtui.names: one rule per kind)."""
        if self.string(loc, value) is _MISSING:
            return _MISSING
        try:
            return names.check_name(rule, value)
        except names.BadName as e:
            self.bad(loc, str(e))
            return _MISSING

    def choice(self, loc: str, value: Any, choices: tuple[str, ...]) -> Any:
        if self.string(loc, value) is _MISSING:
            return _MISSING
        if value not in choices:
            self.bad(loc, f"must be one of {', '.join(choices)} (got {value!r})")
            return _MISSING
        return value

    def ifnames(self, loc: str, value: Any, allow_empty: bool) -> list[str]:
        """The valid names (problems with the others are recorded)."""
        if not isinstance(value, list):
            self.bad(loc, f"must be an array of interface names, not {typename(value)}")
            return []
        if not value and not allow_empty:
            self.bad(loc, "must name at least one interface")
            return []
        out: list[str] = []
        for i, name in enumerate(value):
            where = f"{loc}[{i}]"
            if not isinstance(name, str):
                self.bad(where, f"must be an interface name, not {typename(name)}")
            elif not valid_ifname(name):
                self.bad(where, f"{name!r} is not a valid interface name ({IFNAME_RULE})")
            elif name in out:
                self.bad(where, f"{name!r} is listed twice")
            else:
                out.append(name)
        return out

    def table(self, loc: str, value: Any) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.bad(loc, f"must be a table, not {typename(value)}")
            return None
        return value

    def tables(self, loc: str, value: Any) -> list[dict[str, Any]]:
        if not isinstance(value, list):
            self.bad(loc, f"must be an array of tables ([[{loc}]]), not {typename(value)}")
            return []
        out = []
        for i, t in enumerate(value):
            if isinstance(t, dict):
                out.append(t)
            else:
                self.bad(f"{loc}[{i}]", f"must be a table, not {typename(t)}")
                out.append({})
        return out

    def field(self, loc: str, table: dict[str, Any], key: str, check: Callable[..., Any],
              *args: Any, default: Any = _MISSING) -> Any:
        """table[key] checked; a missing required key is a problem, else the default."""
        if key not in table:
            if default is _MISSING:
                self.bad(f"{loc}.{key}", "is required")
            return default
        return check(f"{loc}.{key}", table[key], *args)

    # --- structure ---

    def config(self, data: dict[str, Any]) -> Config:
        for k in data:
            if k not in _SECTIONS:
                self.bad(k, f"unknown section (known: {', '.join(_SECTIONS)})")
        if "datapath" not in data:
            self.bad("datapath", "missing section: [datapath] with at least "
                                 "interfaces = [...] is required")
        dp = self.datapath(data.get("datapath", {}) if "datapath" in data else None)
        st = self.settings(data.get("settings", {}))
        listeners = self.listeners(data.get("listener", []), dp)
        sources = self.source_routes(data.get("source_route", []), st)
        snis = self.sni_routes(data.get("sni_route", []), st)
        self.maglev_groups(data, st)
        health = self.health(data.get("health", {}))
        metrics = self.metrics(data.get("metrics", {}))
        return Config(dp, listeners, sources, snis, st, health, metrics)

    def datapath(self, raw: Any) -> DatapathSettings:
        d = DatapathSettings()
        if raw is None:
            return d
        t = self.table("datapath", raw)
        if t is None:
            return d
        self.keys("datapath", t, _DATAPATH_KEYS)
        inst = self.field("datapath", t, "instance", self.name, names.INSTANCE,
                          default=d.instance)
        if inst is not _MISSING:
            d.instance = inst
        if "interfaces" not in t:
            self.bad("datapath.interfaces", "is required (the client-facing interfaces XDP "
                                            "balances on)")
        else:
            d.interfaces = self.ifnames("datapath.interfaces", t["interfaces"], False)
        if "reply_interfaces" in t:
            reply = self.ifnames("datapath.reply_interfaces", t["reply_interfaces"], True)
            for name in reply:
                if name in d.interfaces:
                    self.bad(f"datapath.reply_interfaces[{t['reply_interfaces'].index(name)}]",
                             f"{name!r} is already in datapath.interfaces")
            d.reply_interfaces = reply
        ns = self.field("datapath", t, "netns", self.name, names.NETNS, default=None)
        if ns is not _MISSING:
            d.netns = ns
        mode = self.field("datapath", t, "xdp_mode", self.choice, XDP_MODES,
                          default=d.xdp_mode)
        if mode is not _MISSING:
            d.xdp_mode = mode
        keep = self.field("datapath", t, "keep", self.boolean, default=d.keep)
        if keep is not _MISSING:
            d.keep = keep
        return d

    def settings(self, raw: Any) -> Settings:
        s = Settings()
        t = self.table("settings", raw)
        if t is None:
            return s
        self.keys("settings", t, _SETTINGS_KEYS)
        checks: dict[str, tuple[Callable[..., Any], tuple[Any, ...]]] = {
            "stats": (self.boolean, ()),
            "connection_timeout": (self.integer, (0, MAX_CONN_TIMEOUT)),
            "max_connections": (self.integer, (2, 1 << 24)),
            "max_routes": (self.integer, (1, 1 << 20)),
            "max_sni_routes": (self.integer, (1, 1 << 20)),
            "ringbuf_size": (self.integer, (4096, 1 << 30)),
            "maglev_table_size": (self.table_size, ()),
            "max_maglev_groups": (self.integer, (1, 1024)),
            "syn_flood_rate": (self.integer, (0, MAX_SYN_FLOOD_RATE)),
        }
        for key, (check, args) in checks.items():
            val = self.field("settings", t, key, check, *args, default=_MISSING_OK)
            if val is not _MISSING and val is not _MISSING_OK:
                setattr(s, key, val)
        if s.ringbuf_size & (s.ringbuf_size - 1):
            self.bad("settings.ringbuf_size", f"must be a power of two (got {s.ringbuf_size})")
            s.ringbuf_size = Settings.ringbuf_size
        val = self.number("settings.sweep_interval", t, "sweep_interval", 0.1, 3600)
        if val is not _MISSING:
            s.sweep_interval = val
        return s

    def table_size(self, loc: str, value: Any) -> Any:
        problem = maglev.table_size_problem(value)
        if problem:
            self.bad(loc, problem)
            return _MISSING
        return value

    def hash_name(self, loc: str, t: dict[str, Any]) -> Any:
        """A group's ``hash`` (None when absent: the default)."""
        return self.field(loc, t, "hash", self.choice, HASHES, default=None)

    def maglev_groups(self, data: dict[str, Any], st: Settings) -> None:
        """Every group with hash = "maglev" needs its own tables in the maglev map."""
        where = [f"{section}[{i}].hash"
                 for section in ("listener", "source_route", "sni_route")
                 if isinstance(data.get(section), list)
                 for i, t in enumerate(data[section])
                 if isinstance(t, dict) and t.get("hash") == "maglev"]
        if len(where) > st.max_maglev_groups:
            self.bad(where[st.max_maglev_groups],
                     f"{len(where)} groups use hash = \"maglev\", more than "
                     f"settings.max_maglev_groups ({st.max_maglev_groups})")

    def number(self, loc: str, t: dict[str, Any], key: str, lo: float, hi: float) -> Any:
        """An int or float lo..hi if ``key`` is in ``t``; _MISSING if absent or bad."""
        if key not in t:
            return _MISSING
        val = t[key]
        if isinstance(val, bool) or not isinstance(val, int | float):
            self.bad(loc, f"must be a number {lo:g}..{hi:g}, not {typename(val)}")
            return _MISSING
        if not lo <= val <= hi:
            self.bad(loc, f"must be {lo:g}..{hi:g} (got {val})")
            return _MISSING
        return float(val)

    def health(self, raw: Any) -> HealthSettings:
        h = HealthSettings()
        t = self.table("health", raw)
        if t is None:
            return h
        self.keys("health", t, _HEALTH_KEYS)
        for key, lo, hi in (("window", 5, 3600), ("degraded_ratio", 0, 1),
                            ("failing_ratio", 0, 1), ("check_interval", 0, 3600),
                            ("check_timeout", 0.05, 60)):
            val = self.number(f"health.{key}", t, key, lo, hi)
            if val is not _MISSING:
                setattr(h, key, val)
        for key, lo, hi in (("min_samples", 1, 100000), ("fall", 1, 100), ("rise", 1, 100)):
            val = self.field("health", t, key, self.integer, lo, hi, default=_MISSING_OK)
            if val is not _MISSING and val is not _MISSING_OK:
                setattr(h, key, val)
        if "check_targets" in t:
            h.check_targets = self.endpoints("health.check_targets", t["check_targets"])
        if h.degraded_ratio > h.failing_ratio:
            self.bad("health.degraded_ratio", f"{h.degraded_ratio:g} is above failing_ratio "
                                              f"({h.failing_ratio:g})")
        return h

    def targets(self, loc: str, raw: Any, loops: dict[tuple[str, int], str] | None = None
                ) -> Any:
        """A validated TargetGroup (the rules of ``lbtui.targets.check_targets``), or
        _MISSING with every problem recorded. ``loops``: endpoints no target may equal
        (the SNI listener this group serves; default: every SNI listener, as routes apply
        on all of them)."""
        if not isinstance(raw, list):
            self.bad(loc, f"must be an array of targets like [{TARGET_EXAMPLE}], "
                          f"not {typename(raw)}")
            return _MISSING
        items = []
        not_tables = set()
        for i, item in enumerate(raw):
            if not isinstance(item, dict):
                self.bad(f"{loc}[{i}]", f"must be a table like {TARGET_EXAMPLE}")
                not_tables.add(i)
                item = {}
            else:
                self.keys(f"{loc}[{i}]", item, _TARGET_KEYS)
            items.append(item)
        specs, problems = check_targets(items)
        for p in problems:
            if p.index not in not_tables:      # already said what is wrong there
                self.problems.append(p.where(loc))
        if problems or not_tables:
            return _MISSING
        loops = self.sni_endpoints if loops is None else loops
        looped = [i for i, s in enumerate(specs) if (s.ip, s.port) in loops]
        for i in looped:
            self.bad(f"{loc}[{i}]", f"{specs[i].ip}:{specs[i].port} is the address of the SNI "
                                    f"listener {loops[specs[i].ip, specs[i].port]}: its "
                                    "splicer would connect to itself (a loop)")
        return _MISSING if looped else TargetGroup(tuple(specs))

    def listeners(self, raw: Any, dp: DatapathSettings) -> list[Listener]:
        out: list[Listener] = []
        ports: dict[int, int] = {}
        entries = 0
        for i, t in enumerate(self.tables("listener", raw)):
            loc = f"listener[{i}]"
            self.keys(loc, t, _LISTENER_KEYS)
            port = self.field(loc, t, "port", self.integer, 1, 65535)
            if port is not _MISSING:
                if port in ports:
                    self.bad(f"{loc}.port", f"{port} is already used by listener[{ports[port]}] "
                                            "(one listener per port)")
                else:
                    ports[port] = i
            proto = self.field(loc, t, "protocol", self.choice, PROTOCOLS, default="both")
            ifaces = None
            if "interfaces" in t:
                ifaces = self.ifnames(f"{loc}.interfaces", t["interfaces"], False)
                for name in ifaces:
                    if dp.interfaces and name not in dp.interfaces:
                        self.bad(f"{loc}.interfaces[{t['interfaces'].index(name)}]",
                                 f"{name!r} is not in datapath.interfaces (XDP balances only "
                                 "there)")
            stats = self.field(loc, t, "stats", self.boolean, default=True)
            sni = self.field(loc, t, "sni", self.boolean, default=False)
            if sni is True and proto == "udp":
                self.bad(f"{loc}.sni", 'SNI routing needs TCP (protocol is "udp")')
            address = None
            if "address" in t:
                address = self.address(f"{loc}.address", t["address"])
                if sni is True and address == "0.0.0.0":
                    self.bad(f"{loc}.address", "must be one address (normally the VIP), not "
                                               "0.0.0.0: the splicer never listens on every "
                                               "interface")
                    address = _MISSING
            elif sni is True:
                self.bad(f"{loc}.address", "is required for SNI listeners: the one address "
                                           "the splicer listens on (normally the VIP)")
            own: dict[tuple[str, int], str] = {}
            if sni is True and isinstance(address, str) and isinstance(port, int):
                own[address, port] = self.sni_endpoints[address, port] = loc
            hash_name = self.hash_name(loc, t)
            targets = self.field(loc, t, "targets", self.targets, own)
            entries += len(ifaces if ifaces is not None else dp.interfaces)
            if _MISSING not in (port, proto, stats, sni, targets, address, hash_name):
                out.append(Listener(port, targets, proto, ifaces, stats, sni, address,
                                    hash_name))
        if entries > MAX_LISTEN_ENTRIES:
            self.bad("listener", f"{entries} listen entries (listeners x interfaces), at most "
                                 f"{MAX_LISTEN_ENTRIES}")
        return out

    def address(self, loc: str, value: Any) -> Any:
        if self.string(loc, value) is _MISSING:
            return _MISSING
        try:
            addr = ipaddress.IPv4Address(value.strip())
        except ValueError:
            self.bad(loc, f"{value!r} is not an IPv4 address (like 198.18.0.10)")
            return _MISSING
        if addr.is_multicast or str(addr) == "255.255.255.255":
            self.bad(loc, f"{addr} cannot be listened on")
            return _MISSING
        return str(addr)

    def metrics(self, raw: Any) -> MetricsSettings:
        m = MetricsSettings()
        t = self.table("metrics", raw)
        if t is None:
            return m
        self.keys("metrics", t, _METRICS_KEYS)
        val = self.number("metrics.interval", t, "interval", 1, 3600)
        if val is not _MISSING:
            m.interval = val
        if "textfile_dir" in t:
            d = self.string("metrics.textfile_dir", t["textfile_dir"])
            if d is not _MISSING and d and not d.startswith("/"):
                self.bad("metrics.textfile_dir", f"{d!r} must be an absolute path (or \"\" "
                                                 "for no textfile)")
            elif d is not _MISSING:
                m.textfile_dir = d
        if "listen" in t and self.string("metrics.listen", t["listen"]) is not _MISSING:
            if t["listen"].strip():
                listen = self.endpoint("metrics.listen", t["listen"])
                m.listen = m.listen if listen is _MISSING else listen
        return m

    def endpoints(self, loc: str, value: Any) -> list[str]:
        """A list of "ip:port" strings, canonical (problems recorded)."""
        if not isinstance(value, list):
            self.bad(loc, f"must be an array of \"ip:port\" strings, not {typename(value)}")
            return []
        got = (self.endpoint(f"{loc}[{i}]", item) for i, item in enumerate(value))
        return [e for e in got if e is not _MISSING]

    def endpoint(self, loc: str, value: Any) -> Any:
        """One "ip:port" string, canonical, or _MISSING (the problem recorded)."""
        if self.string(loc, value) is _MISSING:
            return _MISSING
        ip, colon, port = value.strip().rpartition(":")
        if not colon:
            self.bad(loc, f"{value!r}: expected IP:PORT (like 198.18.2.11:8080)")
            return _MISSING
        addr = self.address(loc, ip)
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            self.bad(loc, f"{value!r}: port must be 1..65535")
            return _MISSING
        return _MISSING if addr is _MISSING else f"{addr}:{int(port)}"

    def source_routes(self, raw: Any, st: Settings) -> list[SourceRoute]:
        out: list[SourceRoute] = []
        seen: dict[str, str] = {}
        tables = self.tables("source_route", raw)
        for i, t in enumerate(tables):
            loc = f"source_route[{i}]"
            self.keys(loc, t, _SOURCE_KEYS)
            cidr = self.unique(loc, "cidr", self.field(loc, t, "cidr", self.cidr), seen)
            stats = self.field(loc, t, "stats", self.boolean, default=True)
            hash_name = self.hash_name(loc, t)
            targets = self.field(loc, t, "targets", self.targets)
            if _MISSING not in (cidr, stats, targets, hash_name):
                out.append(SourceRoute(cidr, targets, stats, hash_name))
        self.at_most("source_route", len(tables), "max_routes", st.max_routes)
        return out

    def unique(self, loc: str, name: str, key: Any, seen: dict[str, str]) -> Any:
        """A route's ``key`` unless an earlier route (in ``seen``, key -> location) has it:
        then the problem is recorded and it is _MISSING."""
        if key is _MISSING:
            return key
        if key in seen:
            self.bad(f"{loc}.{name}", f"{key} is already routed by {seen[key]}")
            return _MISSING
        seen[key] = loc
        return key

    def at_most(self, section: str, count: int, setting: str, limit: int) -> None:
        if count > limit:
            self.bad(section, f"{count} routes, more than settings.{setting} ({limit})")

    def cidr(self, loc: str, value: Any) -> Any:
        if self.string(loc, value) is _MISSING:
            return _MISSING
        try:
            return str(parse_cidr(value, loc))   # the same parser as `lbtui ctl sources`
        except ValueError as e:
            self.problems.append(str(e))
            return _MISSING

    def sni_routes(self, raw: Any, st: Settings) -> list[SniRoute]:
        out: list[SniRoute] = []
        seen: dict[str, str] = {}
        tables = self.tables("sni_route", raw)
        for i, t in enumerate(tables):
            loc = f"sni_route[{i}]"
            self.keys(loc, t, _SNI_KEYS)
            host = self.unique(loc, "hostname", self.field(loc, t, "hostname", self.hostname),
                               seen)
            hash_name = self.hash_name(loc, t)
            targets = self.field(loc, t, "targets", self.targets)
            if _MISSING not in (host, targets, hash_name):
                out.append(SniRoute(host, targets, hash_name))
        self.at_most("sni_route", len(tables), "max_sni_routes", st.max_sni_routes)
        return out

    def hostname(self, loc: str, value: Any) -> Any:
        if self.string(loc, value) is _MISSING:
            return _MISSING
        try:
            return normalize_hostname(value).decode()
        except ValueError as e:
            self.bad(loc, str(e))
            return _MISSING


_MISSING_OK = object()  # "absent and optional": keep the dataclass default
