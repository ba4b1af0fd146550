"""The conntrack map: flows (forward entries and their reply entries), reading them in
batches, deleting them, and the userspace sweep of idle flows."""

from __future__ import annotations

import dataclasses
import errno
import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lbtui import abi, bpfsys
from lbtui.addr import (
    be_to_ip,
    be_to_port,
    ip_to_be,
    parse_ipv4,
    parse_port,
    port_to_be,
    proto_name,
    proto_number,
)
from lbtui.maps.settings import add_counter

if TYPE_CHECKING:
    from lbtui.maps.mapset import BpfMap


@dataclass(frozen=True, slots=True)
class FiveTuple:
    """A flow as the client sent it: client -> VIP."""

    src_ip: str
    dst_ip: str
    src_port: int
    dst_port: int
    proto: int = abi.IPPROTO_TCP

    @classmethod
    def parse(cls, t: Any) -> FiveTuple:
        if isinstance(t, FiveTuple):
            return t
        if isinstance(t, Mapping):
            fields = t

            def g(*names: str) -> Any:
                return next((fields[n] for n in names if n in fields), None)

            t = (g("src_ip", "src-ip"), g("dst_ip", "dst-ip"), g("src_port", "src-port"),
                 g("dst_port", "dst-port"), g("proto", "protocol") or "tcp")
        if not isinstance(t, tuple | list) or len(t) not in (4, 5):
            raise ValueError(f"five-tuple: expected (src_ip, dst_ip, src_port, dst_port, "
                             f"proto), got {t!r}")
        proto = t[4] if len(t) == 5 else abi.IPPROTO_TCP
        return cls(str(parse_ipv4(t[0], "src_ip")), str(parse_ipv4(t[1], "dst_ip")),
                   parse_port(t[2], "src_port"), parse_port(t[3], "dst_port"),
                   proto_number(proto))

    def key(self) -> abi.CtKey:
        return abi.CtKey(ip_to_be(self.src_ip), ip_to_be(self.dst_ip),
                         port_to_be(self.src_port), port_to_be(self.dst_port), self.proto)

    def __str__(self) -> str:
        return (f"{proto_name(self.proto)} {self.src_ip}:{self.src_port} -> "
                f"{self.dst_ip}:{self.dst_port}")


def ct_state(flags: int, proto: int) -> str:
    """Human state of a forward entry, derived from its flags."""
    if flags & abi.CT_F_RST:
        return "reset"
    if flags & abi.CT_F_FIN_FWD and flags & abi.CT_F_FIN_REV:
        return "closed"
    if flags & (abi.CT_F_FIN_FWD | abi.CT_F_FIN_REV):
        return "closing"
    if flags & abi.CT_F_SEEN_REPLY:
        return "established" if proto == abi.IPPROTO_TCP else "replied"
    return "syn-sent" if proto == abi.IPPROTO_TCP else "new"


@dataclass(frozen=True, slots=True)
class Connection:
    client_ip: str
    client_port: int
    vip_ip: str
    vip_port: int
    target_ip: str
    target_port: int
    proto: int
    flags: int
    created_ns: int
    last_seen_ns: int
    packets_fwd: int
    packets_rev: int
    bytes_fwd: int
    bytes_rev: int

    @property
    def five_tuple(self) -> FiveTuple:
        return FiveTuple(self.client_ip, self.vip_ip, self.client_port, self.vip_port,
                         self.proto)

    @property
    def target(self) -> str:
        return f"{self.target_ip}:{self.target_port}"

    @property
    def state(self) -> str:
        return ct_state(self.flags, self.proto)

    def to_dict(self) -> dict[str, Any]:
        d = {f: getattr(self, f) for f in self.__slots__}
        d["proto"] = proto_name(self.proto)
        d["state"] = self.state
        return d


def decode_connection(k: abi.CtKey, v: abi.CtValue, r: abi.CtValue | None = None
                      ) -> Connection:
    """The flow of forward entry ``k``/``v``. ``r``: its reply entry (``reply_of``), whose
    reverse counts add to the forward entry's (the datapath counts replies there)."""
    prev, brev = (r.packets_rev, r.bytes_rev) if r is not None else (0, 0)
    return Connection(be_to_ip(k.src_ip), be_to_port(k.src_port), be_to_ip(v.orig_dst_ip),
                      be_to_port(v.orig_dst_port), be_to_ip(v.nat_dst_ip),
                      be_to_port(v.nat_dst_port), k.proto, v.flags, v.created_ns,
                      v.last_seen_ns, v.packets_fwd, v.packets_rev + prev, v.bytes_fwd,
                      v.bytes_rev + brev)


def _is_reply_of(k: abi.CtKey, v: abi.CtValue, rv: abi.CtValue | None) -> bool:
    """Is ``rv`` (read under the reply tuple of ``k``/``v``) this flow's reply entry? Under
    that tuple and naming the same VIP:port; else another listener's flow owns it."""
    return rv is not None and bool(rv.flags & abi.CT_F_REPLY) and (
        rv.orig_dst_ip, rv.orig_dst_port) == (v.orig_dst_ip, v.orig_dst_port)


def reply_of(conntrack_map: BpfMap, k: abi.CtKey, v: abi.CtValue) -> abi.CtValue | None:
    """The reply entry of forward entry ``k``/``v``, if it has one (one lookup)."""
    rv = bpfsys.lookup(conntrack_map._require_open(), _reply_key(k, v), abi.CtValue)
    return rv if _is_reply_of(k, v, rv) else None


CtReader = bpfsys.BatchReader[abi.CtKey, abi.CtValue]


def conntrack_reader(conntrack_map: BpfMap, chunk: int = 4096) -> CtReader:
    """A reusable batched reader (fixed-size buffers) for repeated dumps."""
    return bpfsys.BatchReader(conntrack_map._require_open(), abi.CtKey, abi.CtValue, chunk)


def list_connections(conntrack_map: BpfMap, *, reader: CtReader | None = None
                     ) -> list[Connection]:
    """Every tracked flow (forward entries), read with BPF_MAP_LOOKUP_BATCH in chunks, with
    the reverse counts of its reply entry added (joined from the same dump by (client,
    VIP, target): the reply entry's key and VIP:port must be the flow's)."""
    r = reader or conntrack_reader(conntrack_map)
    out: list[Connection] = []
    joins: list[tuple[int, ...]] = []
    rev: dict[tuple[int, ...], tuple[int, int]] = {}
    for keys, values, n in r.chunks():
        for i in range(n):
            k, v = keys[i], values[i]
            if not v.flags & abi.CT_F_REPLY:
                out.append(decode_connection(k, v))
                joins.append((k.src_ip, k.src_port, v.orig_dst_ip, v.orig_dst_port, k.proto,
                              v.nat_dst_ip, v.nat_dst_port))
            elif v.packets_rev or v.bytes_rev:
                rev[(k.dst_ip, k.dst_port, v.orig_dst_ip, v.orig_dst_port, k.proto,
                     k.src_ip, k.src_port)] = (v.packets_rev, v.bytes_rev)
    if rev:
        for i, j in enumerate(joins):
            if (counts := rev.get(j)) is not None:
                c = out[i]
                out[i] = dataclasses.replace(c, packets_rev=c.packets_rev + counts[0],
                                             bytes_rev=c.bytes_rev + counts[1])
    return out


def lookup_connection(conntrack_map: BpfMap, five_tuple: Any) -> Connection | None:
    """One flow by its five-tuple, its reply entry's reverse counts added."""
    t = FiveTuple.parse(five_tuple)
    k = t.key()
    v = bpfsys.lookup(conntrack_map._require_open(), k, abi.CtValue)
    if v is None or v.flags & abi.CT_F_REPLY:
        return None
    return decode_connection(k, v, reply_of(conntrack_map, k, v))


def _reply_key(k: abi.CtKey, v: abi.CtValue) -> abi.CtKey:
    return abi.CtKey(v.nat_dst_ip, k.src_ip, v.nat_dst_port, k.src_port, k.proto)


def _count_deleted(conntrack_map: BpfMap, n: int) -> None:
    if conntrack_map.counters is not None and n:
        add_counter(conntrack_map.counters, abi.CTR_FLOWS_DELETED, n)


def delete_connection(conntrack_map: BpfMap, five_tuple: Any) -> bool:
    """Forget a flow (both its entries). Its next packet is treated as new. A spliced
    flow is reset by its splicer (``_close_spliced``)."""
    t = FiveTuple.parse(five_tuple)
    fd = conntrack_map._require_open()
    k = t.key()
    v = bpfsys.lookup(fd, k, abi.CtValue)
    if v is None or v.flags & abi.CT_F_REPLY:
        return False
    if v.flags & abi.CT_F_LOCAL and time.monotonic_ns() - v.last_seen_ns < SPLICED_STALE_NS:
        return _close_spliced(conntrack_map, k)
    if reply_of(conntrack_map, k, v) is not None:   # never another flow's
        bpfsys.delete(fd, _reply_key(k, v))
    removed = bpfsys.delete(fd, k)
    _count_deleted(conntrack_map, int(removed))
    return removed


def _finished(flags: int) -> bool:
    return bool(flags & abi.CT_F_RST or (flags & abi.CT_F_FIN_FWD and flags & abi.CT_F_FIN_REV))


def clear_stale_connections(conntrack_map: BpfMap, current_time_ns: int,
                            timeout_ns: int, closed_timeout_ns: int | None = None
                            ) -> list[Connection]:
    """Remove flows idle for longer than ``timeout_ns``, and orphaned reply entries.

    A flow is its two entries, and is idle only when both are: traffic in either direction
    keeps it (a UDP flow whose target is quiet stays as long as its client talks). Both
    entries go together, so a live flow never loses one half.

    Times are CLOCK_MONOTONIC ns (``time.monotonic_ns()``); the kernel stamps flows with
    the coarse form of that clock (bpf_ktime_get_coarse_ns). With ``closed_timeout_ns``,
    flows that finished (FIN both ways, or RST) go once idle that long, so closed flows
    linger only briefly (for the last ACK and retransmissions); a reply entry whose flow is
    gone goes after that long too. Returns the removed flows."""
    if timeout_ns < 0 or (closed_timeout_ns is not None and closed_timeout_ns < 0):
        raise ValueError("timeouts must be >= 0")
    fd = conntrack_map._require_open()
    linger = timeout_ns if closed_timeout_ns is None else min(closed_timeout_ns, timeout_ns)

    def stale(v: abi.CtValue, limit: int) -> bool:
        last_seen_ns: int = v.last_seen_ns
        return current_time_ns - last_seen_ns > limit

    # Entries idle on their own; their other half decides (one lookup per candidate).
    candidates = [(k, v) for k, v in conntrack_reader(conntrack_map).items()
                  if stale(v, linger)]
    removed = []
    for k, v in candidates:
        if v.flags & abi.CT_F_REPLY:
            fk = abi.CtKey(k.dst_ip, v.orig_dst_ip, k.dst_port, v.orig_dst_port, k.proto)
            fv = bpfsys.lookup(fd, fk, abi.CtValue)
            if fv is None or fv.flags & abi.CT_F_REPLY or (fv.nat_dst_ip, fv.nat_dst_port) != (
                    k.src_ip, k.src_port):
                bpfsys.delete(fd, k)            # orphan: its flow is gone
            continue                            # else decided with its forward entry
        limit = linger if _finished(v.flags) else timeout_ns
        rk = _reply_key(k, v)
        rv = bpfsys.lookup(fd, rk, abi.CtValue)
        if not _is_reply_of(k, v, rv):
            rv = None
        last = max(v.last_seen_ns, rv.last_seen_ns) if rv is not None else v.last_seen_ns
        if current_time_ns - last <= limit:
            continue
        if rv is not None:
            bpfsys.delete(fd, rk)
        if bpfsys.delete(fd, k):
            removed.append(decode_connection(k, v, rv))   # the aged event's counts
    _count_deleted(conntrack_map, len(removed))
    return removed


# --- flows a userspace proxy terminates (the SNI splicer) ---------------------------------

BPF_EXIST = 2

# Address conversions validate through ipaddress (~10 us); a splicer converts the same few
# VIPs and targets, and each client a few times, per connection.
_ip_be = functools.lru_cache(maxsize=4096)(ip_to_be)


def local_flow_entry(client: tuple[str, int], vip: tuple[str, int],
                     target: tuple[str, int], *, stats: bool, now_ns: int
                     ) -> tuple[abi.CtKey, abi.CtValue]:
    """(key, value) of a flow a userspace proxy terminates: one forward entry flagged
    LOCAL (the datapath passes its packets to the stack; listings show it like any
    flow), established from the start, no reply entry (the target talks to the proxy)."""
    key = abi.CtKey(_ip_be(client[0]), _ip_be(vip[0]), port_to_be(client[1]),
                    port_to_be(vip[1]), abi.IPPROTO_TCP)
    flags = abi.CT_F_LOCAL | abi.CT_F_SEEN_REPLY | (abi.CT_F_STATS if stats else 0)
    value = abi.CtValue(orig_dst_ip=key.dst_ip, orig_dst_port=key.dst_port, flags=flags,
                        nat_dst_ip=_ip_be(target[0]), nat_dst_port=port_to_be(target[1]),
                        created_ns=now_ns, last_seen_ns=now_ns)
    return key, value


def write_flow(conntrack_map: BpfMap, key: abi.CtKey, value: abi.CtValue) -> None:
    bpfsys.update(conntrack_map._require_open(), key, value)


# A spliced flow (CT_F_LOCAL) belongs to the splicer proxying it, which writes its entry
# back if the LRU map evicts it. An operator's delete must not look like an eviction, so it
# flags the entry instead and the splicer resets the connection and removes the entry at
# its next refresh (every second). CT_F_RST is never set on a live spliced entry otherwise.
CT_F_CLOSE_REQUEST = abi.CT_F_RST
SPLICED_STALE_NS = 3_000_000_000   # not refreshed for this long: no splicer runs it
_SPLICED_WAIT_S = 3.0


def _close_spliced(conntrack_map: BpfMap, k: abi.CtKey) -> bool:
    """Ask the splicer to reset a spliced flow and wait until it has; re-flag if a
    refresh overwrote the flag meanwhile. If no splicer answers in time, remove it here."""
    fd = conntrack_map._require_open()
    deadline = time.monotonic() + _SPLICED_WAIT_S
    while (v := bpfsys.lookup(fd, k, abi.CtValue)) is not None:
        if time.monotonic() >= deadline:
            bpfsys.delete(fd, k)
            break
        if not v.flags & CT_F_CLOSE_REQUEST:
            v.flags |= CT_F_CLOSE_REQUEST
            try:
                bpfsys.update(fd, k, v, BPF_EXIST)
            except OSError as e:
                if e.errno != errno.ENOENT:    # ENOENT: gone meanwhile, done
                    raise
        time.sleep(0.05)
    _count_deleted(conntrack_map, 1)
    return True


def refresh_local_flow(conntrack_map: BpfMap, key: abi.CtKey, value: abi.CtValue) -> str:
    """A splicer's periodic write of its flow. Returns "ok"; "close_requested" when an
    operator deleted the connection (``delete_connection`` flags the entry): the splicer
    resets it; or "reregistered" when the entry was gone (evicted by the LRU map under
    pressure, or swept) and has been written back: the connection is alive."""
    fd = conntrack_map._require_open()
    now = bpfsys.lookup(fd, key, abi.CtValue)
    if now is not None and now.flags & CT_F_CLOSE_REQUEST:
        return "close_requested"
    if now is not None and refresh_flow(conntrack_map, key, value):
        return "ok"
    bpfsys.update(fd, key, value)
    return "reregistered"


def refresh_flow(conntrack_map: BpfMap, key: abi.CtKey, value: abi.CtValue) -> bool:
    """Write ``value`` over an existing entry; False when the entry is gone (someone
    deleted the connection: ctl, the console, the sweep)."""
    try:
        bpfsys.update(conntrack_map._require_open(), key, value, BPF_EXIST)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    return True


def remove_flow(conntrack_map: BpfMap, key: abi.CtKey) -> None:
    bpfsys.delete(conntrack_map._require_open(), key)
