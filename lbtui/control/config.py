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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lbtui import abi, names
from lbtui.addr import parse_cidr, target_problem
from lbtui.files import FileRefused, read_capped
from lbtui.sni import normalize_hostname
from lbtui.targets import TOTAL_WEIGHT, TargetGroup

PROTOCOLS = ("tcp", "udp", "both")
XDP_MODES = ("auto", "native", "generic")
MAX_LISTEN_ENTRIES = 256          # the listen map's size (maps.DEFAULT_CONFIG)
MAX_CONN_TIMEOUT = 7 * 24 * 3600
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


# --- the model -------------------------------------------------------------------------


@dataclass
class TargetCfg:
    ip: str
    port: int
    weight: int


@dataclass
class ListenerCfg:
    """One balanced port; identity is the port (one listener per port)."""

    port: int
    targets: list[TargetCfg]
    protocol: str = "both"                 # tcp | udp | both
    interfaces: list[str] | None = None    # None: the [datapath] interfaces
    stats: bool = True
    sni: bool = False
    address: str | None = None             # SNI listeners: the IP the splicer binds


@dataclass
class SourceRouteCfg:
    cidr: str
    targets: list[TargetCfg]
    stats: bool = True


@dataclass
class SniRouteCfg:
    hostname: str
    targets: list[TargetCfg]


@dataclass
class SettingsCfg:
    stats: bool = True
    connection_timeout: int = 300
    max_connections: int = 100000
    max_routes: int = 10000
    max_sni_routes: int = 1000
    ringbuf_size: int = 262144
    sweep_interval: float = 5.0


@dataclass
class DatapathCfg:
    interfaces: list[str] = field(default_factory=list)
    instance: str = "default"
    reply_interfaces: list[str] = field(default_factory=list)
    netns: str | None = None
    xdp_mode: str = "auto"
    keep: bool = False


@dataclass
class Config:
    datapath: DatapathCfg
    listeners: list[ListenerCfg] = field(default_factory=list)
    source_routes: list[SourceRouteCfg] = field(default_factory=list)
    sni_routes: list[SniRouteCfg] = field(default_factory=list)
    settings: SettingsCfg = field(default_factory=SettingsCfg)
    path: Path | None = None

    def listener(self, port: int) -> ListenerCfg | None:
        return next((x for x in self.listeners if x.port == port), None)

    def source_route(self, cidr: str) -> SourceRouteCfg | None:
        key = canonical_cidr(cidr)
        return next((r for r in self.source_routes if canonical_cidr(r.cidr) == key), None)

    def sni_route(self, hostname: str) -> SniRouteCfg | None:
        key = canonical_hostname(hostname)
        return next((r for r in self.sni_routes
                     if canonical_hostname(r.hostname) == key), None)

    def listener_interfaces(self, lst: ListenerCfg) -> list[str]:
        return list(lst.interfaces) if lst.interfaces is not None else list(
            self.datapath.interfaces)

    def map_options(self) -> dict[str, int]:
        """Options for ``maps.create_all_maps``."""
        s = self.settings
        return {"max_connections": s.max_connections, "max_routes": s.max_routes,
                "max_sni_routes": s.max_sni_routes, "ringbuf_size": s.ringbuf_size,
                "connection_timeout": s.connection_timeout}

    def to_dict(self) -> dict[str, Any]:
        """The TOML data model (what ``parse_dict`` reads); optional keys left out."""
        d = self.datapath
        dp: dict[str, Any] = {"instance": d.instance, "interfaces": list(d.interfaces)}
        if d.reply_interfaces:
            dp["reply_interfaces"] = list(d.reply_interfaces)
        if d.netns is not None:
            dp["netns"] = d.netns
        dp["xdp_mode"] = d.xdp_mode
        dp["keep"] = d.keep
        out: dict[str, Any] = {"datapath": dp, "settings": dict(vars(self.settings))}
        if self.listeners:
            out["listener"] = [_listener_dict(x) for x in self.listeners]
        if self.source_routes:
            out["source_route"] = [{"cidr": r.cidr, "stats": r.stats,
                                    "targets": targets_to_dicts(r.targets)}
                                   for r in self.source_routes]
        if self.sni_routes:
            out["sni_route"] = [{"hostname": r.hostname,
                                 "targets": targets_to_dicts(r.targets)}
                                for r in self.sni_routes]
        return out


def _listener_dict(x: ListenerCfg) -> dict[str, Any]:
    d: dict[str, Any] = {"port": x.port, "protocol": x.protocol}
    if x.interfaces is not None:
        d["interfaces"] = list(x.interfaces)
    d["stats"] = x.stats
    d["sni"] = x.sni
    if x.address is not None:
        d["address"] = x.address
    d["targets"] = targets_to_dicts(x.targets)
    return d


def targets_to_dicts(targets: list[TargetCfg]) -> list[dict[str, Any]]:
    return [{"ip": t.ip, "port": t.port, "weight": t.weight} for t in targets]


def group_of(targets: list[TargetCfg]) -> TargetGroup:
    return TargetGroup.of([(t.ip, t.port, t.weight) for t in targets])


def targets_of(group: TargetGroup) -> list[TargetCfg]:
    return [TargetCfg(t.ip, t.port, t.weight) for t in group.targets]


def valid_ifname(name: str) -> bool:
    """The kernel's rule (dev_valid_name: shorter than IFNAMSIZ, no '/', ':' or
    whitespace, not '.' or '..'), and no control characters, which no tool can show."""
    return (0 < len(name.encode("utf-8", "surrogatepass")) < 16 and name not in (".", "..")
            and not any(c in "/:" or c.isspace() or not c.isprintable() for c in name))


def canonical_cidr(cidr: str) -> str:
    try:
        return str(ipaddress.IPv4Network(cidr.strip(), strict=False))
    except ValueError:
        return cidr


def canonical_hostname(hostname: str) -> str:
    try:
        return normalize_hostname(hostname).decode()
    except ValueError:
        return hostname


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
        parse_dict(config.to_dict())
    except ConfigError as e:
        return e.problems
    return []


# --- validation ------------------------------------------------------------------------

_SECTIONS = ("datapath", "settings", "listener", "source_route", "sni_route")
_DATAPATH_KEYS = ("instance", "interfaces", "reply_interfaces", "netns", "xdp_mode", "keep")
_SETTINGS_KEYS = tuple(vars(SettingsCfg()).keys())
_LISTENER_KEYS = ("port", "protocol", "interfaces", "stats", "sni", "address", "targets")
_SOURCE_KEYS = ("cidr", "stats", "targets")
_SNI_KEYS = ("hostname", "targets")
_TARGET_KEYS = ("ip", "port", "weight")

_MISSING = object()


def _typename(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)


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
            self.bad(loc, f"must be true or false, not {_typename(value)}")
            return _MISSING
        return value

    def integer(self, loc: str, value: Any, lo: int, hi: int) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            self.bad(loc, f"must be an integer {lo}..{hi}, not {_typename(value)}")
            return _MISSING
        if not lo <= value <= hi:
            self.bad(loc, f"must be {lo}..{hi} (got {value})")
            return _MISSING
        return value

    def string(self, loc: str, value: Any) -> Any:
        if not isinstance(value, str):
            self.bad(loc, f"must be a string, not {_typename(value)}")
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
            self.bad(loc, f"must be an array of interface names, not {_typename(value)}")
            return []
        if not value and not allow_empty:
            self.bad(loc, "must name at least one interface")
            return []
        out: list[str] = []
        for i, name in enumerate(value):
            where = f"{loc}[{i}]"
            if not isinstance(name, str):
                self.bad(where, f"must be an interface name, not {_typename(name)}")
            elif not valid_ifname(name):
                self.bad(where, f"{name!r} is not a valid interface name ({IFNAME_RULE})")
            elif name in out:
                self.bad(where, f"{name!r} is listed twice")
            else:
                out.append(name)
        return out

    def table(self, loc: str, value: Any) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.bad(loc, f"must be a table, not {_typename(value)}")
            return None
        return value

    def tables(self, loc: str, value: Any) -> list[dict[str, Any]]:
        if not isinstance(value, list):
            self.bad(loc, f"must be an array of tables ([[{loc}]]), not {_typename(value)}")
            return []
        out = []
        for i, t in enumerate(value):
            if isinstance(t, dict):
                out.append(t)
            else:
                self.bad(f"{loc}[{i}]", f"must be a table, not {_typename(t)}")
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
        return Config(dp, listeners, sources, snis, st)

    def datapath(self, raw: Any) -> DatapathCfg:
        d = DatapathCfg()
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

    def settings(self, raw: Any) -> SettingsCfg:
        s = SettingsCfg()
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
        }
        for key, (check, args) in checks.items():
            val = self.field("settings", t, key, check, *args, default=_MISSING_OK)
            if val is not _MISSING and val is not _MISSING_OK:
                setattr(s, key, val)
        if s.ringbuf_size & (s.ringbuf_size - 1):
            self.bad("settings.ringbuf_size", f"must be a power of two (got {s.ringbuf_size})")
            s.ringbuf_size = SettingsCfg.ringbuf_size
        if "sweep_interval" in t:
            val = t["sweep_interval"]
            if isinstance(val, bool) or not isinstance(val, int | float):
                self.bad("settings.sweep_interval",
                         f"must be a number of seconds 0.1..3600, not {_typename(val)}")
            elif not 0.1 <= val <= 3600:
                self.bad("settings.sweep_interval", f"must be 0.1..3600 seconds (got {val})")
            else:
                s.sweep_interval = float(val)
        return s

    def targets(self, loc: str, raw: Any, loops: dict[tuple[str, int], str] | None = None
                ) -> list[TargetCfg]:
        """``loops``: endpoints no target may equal (SNI listeners this group serves);
        default: every SNI listener (routes apply on all of them)."""
        loops = self.sni_endpoints if loops is None else loops
        if not isinstance(raw, list):
            self.bad(loc, f"must be an array of targets like [{TARGET_EXAMPLE}], "
                          f"not {_typename(raw)}")
            return []
        if not raw:
            self.bad(loc, "needs at least 1 target")
            return []
        if len(raw) > abi.MAX_TARGETS:
            self.bad(loc, f"{len(raw)} targets, at most {abi.MAX_TARGETS}")
        out: list[TargetCfg] = []
        ok = True
        seen: dict[tuple[str, int], int] = {}
        for i, item in enumerate(raw):
            where = f"{loc}[{i}]"
            if not isinstance(item, dict):
                self.bad(where, f"must be a table like {TARGET_EXAMPLE}")
                ok = False
                continue
            self.keys(where, item, _TARGET_KEYS)
            ip = self.target_ip(f"{where}.ip", item)
            port = self.field(where, item, "port", self.integer, 1, 65535)
            if "weight" in item:
                weight = self.integer(f"{where}.weight", item["weight"], 0, TOTAL_WEIGHT)
            elif len(raw) == 1:
                weight = TOTAL_WEIGHT
            else:
                self.bad(f"{where}.weight", "is required when a group has more than one "
                                            "target")
                weight = _MISSING
            if _MISSING in (ip, port, weight):
                ok = False
                continue
            if (ip, port) in seen:
                self.bad(where, f"{ip}:{port} is listed twice (also {loc}[{seen[ip, port]}])")
                ok = False
                continue
            if (ip, port) in loops:
                self.bad(where, f"{ip}:{port} is the address of the SNI listener "
                                f"{loops[ip, port]}: its splicer would connect to itself (a "
                                "loop)")
                ok = False
                continue
            seen[ip, port] = i
            out.append(TargetCfg(ip, port, weight))
        if ok and out:
            total = sum(t.weight for t in out)
            if total != TOTAL_WEIGHT:
                self.bad(loc, f"weights sum to {total}, must sum to {TOTAL_WEIGHT}")
        return out

    def target_ip(self, loc: str, item: dict[str, Any]) -> Any:
        if "ip" not in item:
            self.bad(loc, "is required")
            return _MISSING
        raw = item["ip"]
        if not isinstance(raw, str):
            self.bad(loc, f"must be an IPv4 address string, not {_typename(raw)}")
            return _MISSING
        try:
            addr = ipaddress.IPv4Address(raw.strip())
        except ValueError:
            self.bad(loc, f"{raw!r} is not an IPv4 address (like 198.18.101.2)")
            return _MISSING
        problem = target_problem(addr)
        if problem:
            self.bad(loc, problem)
            return _MISSING
        return str(addr)

    def listeners(self, raw: Any, dp: DatapathCfg) -> list[ListenerCfg]:
        out: list[ListenerCfg] = []
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
                if sni is False:
                    self.bad(f"{loc}.address", "is only used by SNI listeners (sni = true): "
                                               "the address the splicer listens on")
            elif sni is True:
                self.bad(f"{loc}.address", "is required for SNI listeners: the one address "
                                           "the splicer listens on (normally the VIP)")
            own: dict[tuple[str, int], str] = {}
            if sni is True and isinstance(address, str) and isinstance(port, int):
                own[address, port] = self.sni_endpoints[address, port] = loc
            targets = self.field(loc, t, "targets", self.targets, own)
            entries += len(ifaces if ifaces is not None else dp.interfaces)
            if _MISSING not in (port, proto, stats, sni, targets, address):
                out.append(ListenerCfg(port, targets, proto, ifaces, stats, sni, address))
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
        if addr.is_unspecified:
            self.bad(loc, "must be one address (normally the VIP), not 0.0.0.0: the splicer "
                          "never listens on every interface")
            return _MISSING
        return str(addr)

    def source_routes(self, raw: Any, st: SettingsCfg) -> list[SourceRouteCfg]:
        out: list[SourceRouteCfg] = []
        seen: dict[str, int] = {}
        tables = self.tables("source_route", raw)
        for i, t in enumerate(tables):
            loc = f"source_route[{i}]"
            self.keys(loc, t, _SOURCE_KEYS)
            cidr = self.field(loc, t, "cidr", self.cidr)
            if cidr is not _MISSING:
                if cidr in seen:
                    self.bad(f"{loc}.cidr", f"{cidr} is already routed by "
                                            f"source_route[{seen[cidr]}]")
                    cidr = _MISSING
                else:
                    seen[cidr] = i
            stats = self.field(loc, t, "stats", self.boolean, default=True)
            targets = self.field(loc, t, "targets", self.targets)
            if _MISSING not in (cidr, stats, targets):
                out.append(SourceRouteCfg(cidr, targets, stats))
        if len(tables) > st.max_routes:
            self.bad("source_route", f"{len(tables)} routes, more than settings.max_routes "
                                     f"({st.max_routes})")
        return out

    def cidr(self, loc: str, value: Any) -> Any:
        if self.string(loc, value) is _MISSING:
            return _MISSING
        try:
            return str(parse_cidr(value, loc))   # the same parser as `lbtui ctl sources`
        except ValueError as e:
            self.problems.append(str(e))
            return _MISSING

    def sni_routes(self, raw: Any, st: SettingsCfg) -> list[SniRouteCfg]:
        out: list[SniRouteCfg] = []
        seen: dict[str, int] = {}
        tables = self.tables("sni_route", raw)
        for i, t in enumerate(tables):
            loc = f"sni_route[{i}]"
            self.keys(loc, t, _SNI_KEYS)
            host = self.field(loc, t, "hostname", self.hostname)
            if host is not _MISSING:
                if host in seen:
                    self.bad(f"{loc}.hostname", f"{host} is already routed by "
                                                f"sni_route[{seen[host]}]")
                    host = _MISSING
                else:
                    seen[host] = i
            targets = self.field(loc, t, "targets", self.targets)
            if _MISSING not in (host, targets):
                out.append(SniRouteCfg(host, targets))
        if len(tables) > st.max_sni_routes:
            self.bad("sni_route", f"{len(tables)} routes, more than settings.max_sni_routes "
                                  f"({st.max_sni_routes})")
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
