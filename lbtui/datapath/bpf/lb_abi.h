/* lbtui map ABI: the one definition of every map key, value and event.
 *
 * Shared by the XDP datapath (lb_xdp.c) and, through tests/datapath/test_dp_abi.py,
 * proven equal to
 * the ctypes layouts in lbtui/abi.py (BCC compiles this header and the test compares sizes
 * and field offsets with what BCC reports).
 *
 * Byte order: addresses and ports are in network order (__be32/__be16); everything else is
 * in host order. Sizes follow the seed API (its Python form: lbtui/maps/).
 */
#ifndef LBTUI_LB_ABI_H
#define LBTUI_LB_ABI_H

/* Bumped whenever a map's layout, a map's meaning or the set of pinned maps changes. It is
 * stored in settings[LB_SETTING_ABI_VERSION] when the maps are created, so a later lbtui
 * refuses pinned maps it would misread instead of reading the wrong bytes. */
#define LB_ABI_VERSION 4

#define LB_MAX_TARGETS 8

/* Route flags (struct lb_route.flags). One meaning per bit, everywhere. Bit 0 keeps the
 * seed's meaning "stats enabled"; the seed's route default of 1 therefore means "emit events
 * for connections this route chooses" (a route present in its map is always in use). */
#define LB_ROUTE_F_STATS (1 << 0)
/* Listener hands its connections to the userspace SNI splicer (XDP_PASS to the stack). */
#define LB_ROUTE_F_SNI   (1 << 1)
/* Listener protocol filter: with neither bit set a listener takes TCP and UDP (the seed's
 * listen key has no protocol); with one set, the other protocol passes untouched. */
#define LB_ROUTE_F_TCP   (1 << 2)
#define LB_ROUTE_F_UDP   (1 << 3)
/* Destination filter for new flows (listeners written from a config file). Without either
 * bit a listener takes every destination address on its port (the seed's listen key has no
 * address). LOCAL: only addresses local to the LB's namespace (the local_addrs map, kept
 * current by the control plane); ADDRESS: only (address, port) pairs in the vips map. */
#define LB_ROUTE_F_LOCAL   (1 << 4)
#define LB_ROUTE_F_ADDRESS (1 << 5)
/* The route's group picks with its Maglev lookup table (struct lb_route.table) instead of
 * the weighted pick on cumulative weights. */
#define LB_ROUTE_F_MAGLEV  (1 << 6)

/* listen map: HASH, 8 B key. */
struct lb_listen_key {
    __u32 ifindex;      /* host order */
    __be16 port;        /* network order */
    __u16 pad;
};

/* One weighted target slot, 8 B. cumulative_weight is the running sum of the weights of
 * this slot and every slot before it; the last used slot holds the group's total (100). */
struct lb_target {
    __be32 ip;
    __be16 port;
    __u16 cumulative_weight; /* host order */
};

/* Weighted route, 72 B: value of the listen, config (source route) and sni maps. */
struct lb_route {
    __u8 target_count;
    __u8 reserved[3];
    __u16 flags;         /* LB_ROUTE_F_* */
    __u16 table;         /* LB_ROUTE_F_MAGLEV: the maglev map index of its lookup table */
    struct lb_target targets[LB_MAX_TARGETS];
};

/* maglev map: ARRAY u32 -> struct lb_maglev_table, two tables per Maglev group (2g, 2g+1).
 * A slot holds the index of a target in the route that names the table (struct
 * lb_route.targets), LB_MAGLEV_NO_TARGET when no target has weight. A flow's slot is
 * lb_flow_hash % LB_MAGLEV_SIZE. The table a route names is never written: an edit writes
 * the group's other table, then points the route at it (one atomic route update), so a
 * flow never meets a half-written table or a table that disagrees with its route's
 * targets. LB_MAGLEV_SIZE (a prime) is the map's value size: the loader defines it from the
 * pinned map; the default here is what the layout test compiles. */
#ifndef LB_MAGLEV_SIZE
#define LB_MAGLEV_SIZE 65537
#endif
#define LB_MAGLEV_NO_TARGET 255

struct lb_maglev_table {
    __u8 slot[LB_MAGLEV_SIZE];
};

/* config map: LPM_TRIE (BPF_F_NO_PREALLOC), 8 B key. */
struct lb_lpm_key {
    __u32 prefixlen;     /* host order, 0..32 */
    __be32 ip;
};

/* sni map: HASH, key is the u64 FNV-1a hash of the ASCII-lower-cased hostname. */

/* conntrack map: LRU_HASH shared by all CPUs (never per-CPU: a reply handled on another
 * CPU must see the NAT state), 16 B key. Each flow has two entries: the forward tuple
 * (client -> VIP) and the reply tuple (target -> client), told apart by LB_CT_F_REPLY.
 * The forward entry is the flow; the reply entry is an index into it, used only while the
 * forward entry is alive and still names that target. Forward traffic refreshes the reply
 * entry (and re-creates it if the LRU evicted it); a finished flow's reply entry goes with
 * the packet that finishes it, so it never answers for another connection. A reply entry
 * checked against its flow in the current clock tick (its last_seen_ns is the tick) and
 * marked SEEN_REPLY translates plain segments (no SYN, FIN, RST) alone; a forward entry
 * deleted without its reply entry (LRU eviction) is noticed at the next tick.
 *
 * Reverse counts (packets_rev, bytes_rev) live in both entries: the reply path adds to
 * the reply entry; the forward entry holds what deleted reply entries of the flow folded
 * into it (the datapath folds before it deletes one: RST, a reused tuple, a stale reply),
 * and everything for flows without a reply entry (LB_CT_F_LOCAL: the splicer writes them).
 * A flow's reverse counts are the forward entry's plus its reply entry's, the reply entry
 * counting only if it is this flow's: under the forward entry's reply tuple (nat_dst ->
 * client) and naming the same orig_dst. Every reader sums them (lbtui/maps/conntrack.py,
 * flowrows.py; the closed event carries the sum). A reply entry the LRU evicts takes its
 * counts with it. */
struct lb_ct_key {
    __be32 src_ip;
    __be32 dst_ip;
    __be16 src_port;
    __be16 dst_port;
    __u8 proto;
    __u8 pad[3];
};

/* Conntrack flags (struct lb_ct_value.flags). Set with atomic OR, never cleared. */
#define LB_CT_F_REPLY        (1 << 0) /* this entry is a flow's reply tuple */
#define LB_CT_F_SEEN_REPLY   (1 << 1) /* the target answered: established (also set in
                                       * the reply entry, the reply fast path's check) */
#define LB_CT_F_FIN_FWD      (1 << 2) /* client sent FIN */
#define LB_CT_F_FIN_REV      (1 << 3) /* target sent FIN */
#define LB_CT_F_RST          (1 << 4) /* either side sent RST */
#define LB_CT_F_STATS        (1 << 5) /* flow emits open/close events */
#define LB_CT_F_CLOSE_SENT   (1 << 6) /* the closed event was emitted */
#define LB_CT_F_LOCAL        (1 << 7) /* proxied by a userspace splicer: XDP passes it */
#define LB_CT_F_SOURCE       (1 << 8) /* a source route chose the target (else the listener) */
#define LB_CT_F_RST_REV      (1 << 9) /* the target sent an RST */
#define LB_CT_F_ADOPTED      (1 << 10) /* created mid-connection (Maglev group, no SYN seen) */

/* Conntrack value, 64 B. In a forward entry orig_dst is the VIP the client dialled and
 * nat_dst the chosen target; the reply entry holds the same pair, so the reply path can
 * restore the VIP and find the forward entry. Forward counts are in the forward entry
 * only; reverse counts in both (see above). In a reply entry packets_fwd and bytes_fwd
 * stay 0. */
struct lb_ct_value {
    __be32 orig_dst_ip;
    __be16 orig_dst_port;
    __u16 flags;         /* LB_CT_F_*, host order; shares an aligned u32 with orig_dst_port */
    __be32 nat_dst_ip;
    __be16 nat_dst_port;
    __u16 reserved;
    __u64 created_ns;    /* bpf_ktime_get_ns(), CLOCK_MONOTONIC */
    __u64 last_seen_ns;
    __u64 packets_fwd;
    __u64 packets_rev;
    __u64 bytes_fwd;
    __u64 bytes_rev;
};

/* settings map: ARRAY u32 -> u32. */
#define LB_SETTING_STATS_ENABLED   0
#define LB_SETTING_CONN_TIMEOUT_S  1
#define LB_SETTING_NH_CACHE_MS     2  /* next-hop cache lifetime in ms; 0 disables it */
#define LB_SETTING_NH_GENERATION   3  /* bump to invalidate every cached next hop */
/* 1 while any interface of the instance runs generic XDP (written by the control plane's
 * egress assessment): partial checksums then go to the stack, never finished by XDP. */
#define LB_SETTING_XDP_GENERIC     4
/* SYNs opening TCP flows per second per CPU above which the program stops creating flows
 * for SYNs (it forwards them and creates the flow when the client completes the handshake:
 * see "SYN floods" in lb_xdp.c); 0 turns this off, below 8 applies it to every SYN. */
#define LB_SETTING_SYN_FLOOD_RATE  5
#define LB_SETTING_ABI_VERSION     15 /* LB_ABI_VERSION of whoever created the maps */
#define LB_SETTINGS_MAX            16

/* counters map: PERCPU_ARRAY u32 -> u64, each CPU adding to its own slot; readers sum the
 * CPUs. Slots written by the kernel and slots written by userspace never overlap. */
#define LB_CTR_FLOWS_CREATED     0  /* kernel: new conntrack flows (2 entries each) */
#define LB_CTR_EVENTS_LOST       1  /* kernel: ring buffer reserve failures */
#define LB_CTR_NO_TARGET         2  /* kernel: new flow found no target with weight > 0 */
#define LB_CTR_FLOWS_CLOSED      3  /* kernel: flows closed by FIN/RST */
#define LB_CTR_SNI_PASSED        4  /* kernel: packets passed to the SNI splicer */
#define LB_CTR_USER_EVENTS       5  /* kernel: events submitted for userspace (lb_emit_event) */
#define LB_CTR_REPLIES_REBUILT   6  /* kernel: reply entries re-created from their flow */
#define LB_CTR_FLOOD_SYNS        7  /* kernel: SYNs forwarded without a flow (SYN flood) */
#define LB_CTR_FLOOD_FLOWS       9  /* kernel: flows created by a completed handshake */
#define LB_CTR_FLOWS_DELETED     8  /* userspace: flows deleted by lbtui (sweep, ctl, console) */
#define LB_CTR_FLOWS_ADOPTED     10 /* kernel: flows created mid-connection (Maglev groups) */
#define LB_COUNTERS_MAX          16

/* tx_ports map: DEVMAP_HASH ifindex -> ifindex. The control plane fills it with the egress
 * interfaces it verified can take XDP frames (a native XDP transmit, or generic XDP on every
 * ingress); bpf_redirect_map falls back to XDP_PASS for any other, so a frame is never
 * redirected where the kernel would drop it. */
#define LB_MAX_TX_PORTS 256

/* ports map: ARRAY u32 -> u64, a bitmap over 16-bit ports. Words [0, 1024) mark the
 * destination ports of listeners, words [1024, 2048) the source ports of targets (where
 * replies come from). A packet with neither bit set is not ours and leaves after two array
 * reads, before any hash lookup. Bits are only ever set while the maps live, so flows that
 * outlive their listener or target keep working. */
#define LB_PORTS_LISTEN_BASE 0
#define LB_PORTS_TARGET_BASE 1024
#define LB_PORTS_MAX         2048

/* local_addrs map: HASH __be32 address -> __u32 (1). The IPv4 addresses local to the LB's
 * namespace, for LB_ROUTE_F_LOCAL listeners. */
#define LB_MAX_LOCAL_ADDRS 1024

/* vips map: HASH, for LB_ROUTE_F_ADDRESS listeners. */
struct lb_vip_key {
    __be32 ip;
    __be16 port;
    __u16 pad;
};
#define LB_MAX_VIPS 1024

/* reasons map: PERCPU_HASH, packets per (ingress interface, reason) that lbtui handed to
 * the kernel stack instead of forwarding them itself, or handled specially. */
struct lb_reason_key {
    __u32 ifindex;
    __u32 reason;
};
#define LB_MAX_REASON_KEYS 4096

#define LB_REASON_FIB_MISS        1  /* no route for the rewritten packet */
#define LB_REASON_NO_NEIGH        2  /* next hop's link-layer address not known yet */
#define LB_REASON_MTU             3  /* larger than the egress MTU: the stack answers */
#define LB_REASON_EGRESS_NOT_XDP  4  /* egress interface cannot take XDP frames */
#define LB_REASON_VLAN            5  /* VLAN-tagged: the stack owns tag handling */
#define LB_REASON_TTL             6  /* TTL expiring: the stack sends time exceeded */
#define LB_REASON_FRAGMENT        7  /* IP fragment: not balanced, passed untouched */
#define LB_REASON_IP_OPTIONS      8  /* translated, forwarded by the stack (options) */
#define LB_REASON_CSUM_PARTIAL    9  /* translated, forwarded by the stack (partial csum) */
#define LB_REASON_NO_FLOW         10 /* TCP non-SYN to a listener with no flow */
#define LB_REASON_NO_TARGET       11 /* every target drained */
#define LB_REASON_REPLY_CLASH     12 /* the target's reply tuple belongs to a live flow */
#define LB_REASON_STALE_REPLY     13 /* reply tuple of a finished flow: not ours */
#define LB_REASON_NOT_VIP         14 /* listener port, but not an address it serves */
#define LB_REASON_ICMP            15 /* ICMP error of a balanced flow, translated */
#define LB_REASONS_MAX            16

/* stats ring buffer events: naturally aligned, 80 B. */
#define LB_EVENT_OPENED         1
#define LB_EVENT_CLOSED         2
#define LB_EVENT_CONNECT_FAILED 3  /* userspace: the SNI splicer could not reach the target */

#define LB_CLOSE_FIN  1
#define LB_CLOSE_RST  2
#define LB_CLOSE_AGED 3  /* only produced by userspace sweeps */

/* What chose the target (struct lb_event.group). */
#define LB_GROUP_LISTENER 0
#define LB_GROUP_SOURCE   1
#define LB_GROUP_SNI      2

/* struct lb_event.flags */
#define LB_EVENT_F_REPLIED    (1 << 0) /* the target answered at least once */
#define LB_EVENT_F_RST_TARGET (1 << 1) /* closed by an RST the target sent */

struct lb_event {
    __u64 ts_ns;
    __u64 packets_fwd;
    __u64 packets_rev;
    __u64 bytes_fwd;
    __u64 bytes_rev;
    __u64 created_ns;
    __u64 sni_hash;      /* SNI-routed flows: the route's hostname hash; else 0 */
    __be32 client_ip;
    __be32 vip_ip;
    __be32 target_ip;
    __be16 client_port;
    __be16 vip_port;
    __be16 target_port;
    __u8 type;           /* LB_EVENT_* */
    __u8 proto;          /* IPPROTO_TCP / IPPROTO_UDP */
    __u8 reason;         /* LB_CLOSE_* for closed events */
    __u8 group;          /* LB_GROUP_* */
    __u8 flags;          /* LB_EVENT_F_* */
    __u8 pad;
};

#endif /* LBTUI_LB_ABI_H */
