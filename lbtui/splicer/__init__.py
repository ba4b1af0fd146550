"""SNI routing for real TLS clients: the userspace splicer.

A listener flagged SNI (``LB_ROUTE_F_SNI`` on its listen entries) is passed by XDP to the
stack, where a ``Splicer`` accepts its connections, peeks at the whole ClientHello without
consuming it (bounded in size and time; it may span several segments and records), hashes
server_name (FNV-1a of the ASCII-lower-cased name), looks it up in the BPF sni map, picks a
weighted target (no SNI or an unknown name: source route, else the listener's own group),
connects, and joins both sockets to a sockmap relay (``lbtui/datapath/bpf/sk_splice.c``): the kernel
delivers the hello to the backend and relays both directions from then on. Python never
consumes or writes a byte of the stream (it only peeks at the hello). Spliced flows appear
in conntrack (flag ``LB_CT_F_LOCAL``) with live counters and produce opened/closed events
like datapath flows.

Entry point (used by ``lbtui.control.Instance``, one per SNI listener)::

    from lbtui.splicer import Splicer

    sp = Splicer(maps, emit_prog_fd, listen_ip, port, netns=None,
                 hello_timeout=5.0,      # whole ClientHello within this many seconds
                 max_hello=16384,        # bytes; larger hellos are refused ("oversized")
                 max_pending=256,        # hellos being read at once; the oldest is evicted
                 connect_timeout=3.0,    # backend connect
                 max_connections=10000,  # spliced + connecting; beyond: refused ("busy")
                 stats_interval=1.0)     # conntrack counter refresh period
    sp.start()      # compiles/attaches the relay (~1 s), binds listen_ip:port inside
                    # netns (None: the caller's namespace), serves on a background thread;
                    # raises OSError/RelayError and leaves nothing running on failure
    sp.stats()      # {"listen", "running", "accepted", "spliced", "active", "pending",
                    #  "connecting", "routed": {sni, source, listener},
                    #  "hellos": {sni, no_sni}, "rejected": {reason: n},
                    #  "closed": {reason: n}, "events_lost", "loop_errors",
                    #  "relay": {bytes, skbs, no_peer, passed, empty}}
    sp.stop()       # resets open connections (closed events), removes their conntrack
                    # entries, frees the relay; idempotent

Rejection reasons: not_tls, malformed, oversized, truncated (client closed or reset before
the hello was complete), timeout (hello not complete in time: slowloris), evicted (pending
cap reached, oldest pending dropped for a newcomer), busy, no_target (every target drained
or no group), connect_failed, connect_timeout, closed_early (a side sent its FIN before the
relay joined: TLS peers never do), setup_failed. Close reasons: fin, rst, aged
(idle longer than the connection timeout setting), deleted (an operator deleted its
conntrack entry), stopped.

Edits made to the maps (SNI routes, weights, the listener group) apply to the next
connection; established connections keep their target.

Performance (``python -m bench.sni``; veth lab, 2 shared CPUs): handshakes through the
splicer run at 0.7-0.9 of direct; bulk throughput at about 0.5 of a direct (routed)
connection. The bulk cost is TCP termination in the LB namespace (a receive and a send per
byte, in software on veth with tx offloads off), not Python: a splice(2) relay measured the
same within noise, and Python does no per-byte work.
"""

from lbtui.splicer.hello import ClientHello, HelloBuffer, HelloError, parse_client_hello
from lbtui.splicer.relay import RelayError, SockmapRelay
from lbtui.splicer.service import CLOSE_REASONS, REJECT_REASONS, Splicer

__all__ = [
    "CLOSE_REASONS", "REJECT_REASONS", "ClientHello", "HelloBuffer", "HelloError",
    "RelayError", "SockmapRelay", "Splicer", "parse_client_hello",
]
