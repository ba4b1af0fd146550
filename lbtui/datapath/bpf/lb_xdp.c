/* lbtui XDP datapath: layer-4 DNAT load balancing with shared conntrack.
 *
 * Packet path: parse -> port prefilter (two array reads decide that most foreign traffic is
 * not ours) -> conntrack lookup -> (reply: restore VIP) | (established: keep target) |
 * (new: SYN or first datagram on a listener, or a mid-connection TCP segment a Maglev
 * group adopts; source route, else the listener's group; weighted or Maglev pick) -> DNAT
 * with incremental checksums -> forward.
 *
 * Forwarding: bpf_fib_lookup, then bpf_redirect_map into tx_ports, which holds only the
 * egress interfaces the control plane verified can take XDP frames (a cached next hop
 * whose egress tx_ports accepted is sent with bpf_redirect, no map lookup); anything else (no
 * route, unknown neighbour, an egress that cannot take XDP frames, VLAN, expiring TTL, IP
 * options, partial checksums) goes to the kernel stack, counted per ingress interface and
 * reason. lbtui never drops a packet: what it cannot deliver itself, the stack delivers
 * (one bounded exception: an egress deleted from the host while a cached next hop still
 * vouches for it, see the next-hop cache).
 * Traffic that matches nothing of ours is passed byte-identical. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>

#include "lb_abi.h"
#include "lb_csum.h"
#include "lb_parse.h"

/* Maps. They are created (and pinned) by lbtui.maps before this program is compiled;
 * BCC's pinned-table form makes the program use exactly those maps, so the control plane,
 * the console and a later `serve` share one set. BCC only rewrites map declarations and
 * method calls written in the main file, so they live here rather than in a header.
 * The loader defines LB_PIN_DIR and the LB_MAX_* sizes on the compiler command line. */
#ifndef LB_PIN_DIR
#error "LB_PIN_DIR must be defined by the loader (lbtui.datapath.loader)"
#endif

BPF_TABLE_PINNED("hash", struct lb_listen_key, struct lb_route, listen,
                 LB_MAX_LISTEN, LB_PIN_DIR "/listen");
BPF_TABLE_PINNED("lpm_trie", struct lb_lpm_key, struct lb_route, config,
                 LB_MAX_ROUTES, LB_PIN_DIR "/config", BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("hash", __u64, struct lb_route, sni, LB_MAX_SNI, LB_PIN_DIR "/sni");
BPF_TABLE_PINNED("lru_hash", struct lb_ct_key, struct lb_ct_value, conntrack,
                 LB_MAX_CONNTRACK, LB_PIN_DIR "/conntrack");
BPF_TABLE_PINNED("array", __u32, __u32, settings, LB_SETTINGS_MAX, LB_PIN_DIR "/settings");
BPF_TABLE_PINNED("percpu_array", __u32, __u64, counters, LB_COUNTERS_MAX,
                 LB_PIN_DIR "/counters");
BPF_TABLE_PINNED("array", __u32, __u64, ports, LB_PORTS_MAX, LB_PIN_DIR "/ports");
BPF_TABLE_PINNED("hash", __be32, __u32, local_addrs, LB_MAX_LOCAL_ADDRS,
                 LB_PIN_DIR "/local_addrs");
BPF_TABLE_PINNED("hash", struct lb_vip_key, __u32, vips, LB_MAX_VIPS, LB_PIN_DIR "/vips");
BPF_TABLE_PINNED("percpu_hash", struct lb_reason_key, __u64, reasons, LB_MAX_REASON_KEYS,
                 LB_PIN_DIR "/reasons");
BPF_TABLE_PINNED("array", __u32, struct lb_maglev_table, maglev, LB_MAX_MAGLEV,
                 LB_PIN_DIR "/maglev");

/* BPF_RINGBUF_OUTPUT with a pinned section: same table methods, BCC adopts the pinned map. */
struct stats_table_t {
    int key;
    __u32 leaf;
    int (*ringbuf_output)(void *, __u64, __u64);
    void *(*ringbuf_reserve)(__u64);
    void (*ringbuf_discard)(void *, __u64);
    void (*ringbuf_submit)(void *, __u64);
    __u32 max_entries;
};
__attribute__((section("maps/ringbuf:" LB_PIN_DIR "/stats")))
struct stats_table_t stats = { .max_entries = LB_RINGBUF_BYTES };

/* The egress devmap (a DEVMAP_HASH pinned by lbtui.maps), declared like BCC's
 * BPF_DEVMAP so that .redirect_map() is available, with a pinned section. */
struct tx_ports_table_t {
    __u32 key;
    __u32 leaf;
    __u64 (*redirect_map)(int, int);
    __u32 max_entries;
};
__attribute__((section("maps/devmap:" LB_PIN_DIR "/tx_ports")))
struct tx_ports_table_t tx_ports = { .max_entries = LB_MAX_TX_PORTS };

/* Counters are per CPU: a plain add on this CPU's slot, no shared cache line; readers
 * sum the CPUs. */
static __always_inline void lb_count(__u32 slot)
{
    __u64 *v = counters.lookup(&slot);
    if (v)
        *v += 1;
}

static __always_inline __u32 lb_setting(__u32 index)
{
    __u32 *v = settings.lookup(&index);
    return v ? *v : 0;
}

/* Count a packet by (ingress interface, reason). A lost insert race or a full map loses a
 * count, never a packet. */
static __always_inline void lb_reason(__u32 ifindex, __u32 reason)
{
    struct lb_reason_key k = { .ifindex = ifindex, .reason = reason };
    __u64 *v = reasons.lookup(&k);
    if (v) {
        *v += 1;                        /* per-CPU slot: a plain add */
        return;
    }
    __u64 one = 1;
    reasons.insert(&k, &one);
}

/* Hand a packet to the kernel stack, counting why. */
static __always_inline int lb_pass(__u32 ifindex, __u32 reason)
{
    lb_reason(ifindex, reason);
    return XDP_PASS;
}

static __always_inline int lb_port_marked(__u32 base, __be16 port)
{
    __u16 p = bpf_ntohs(port);
    __u32 idx = base + (p >> 6);
    __u64 *word = ports.lookup(&idx);
    return word && ((*word >> (p & 63)) & 1);
}

#define LB_NS_PER_S 1000000000ULL

/* Timestamps use the coarse monotonic clock: the same epoch as CLOCK_MONOTONIC at tick
 * resolution (a few ms, plenty for idle timeouts), and a cached read instead of a clock
 * source access, which costs ~45 ns per packet in a VM. */
#define lb_now() bpf_ktime_get_coarse_ns()

/* The clock for this packet: read on first use only, so a packet pays for one read
 * however many steps (flow handling, the next-hop cache) look at the time. */
static __always_inline __u64 lb_clock(struct lb_pkt *p)
{
    if (!p->now)
        p->now = lb_now();
    return p->now;
}

/* Per-flow counters use plain adds: a direction of a flow is normally handled by one CPU
 * (RSS), and forward and reply update different fields. A lost increment needs the same
 * direction of one flow on two CPUs at the same instant; a locked add per packet costs
 * more than that is worth. */
static __always_inline void lb_ct_account(__u64 *packets, __u64 *bytes, __u32 len)
{
    *packets += 1;
    *bytes += len;
}
#define LB_AF_INET 2

/* Flag word: flags live in the top 16 bits of the aligned u64 at the start of the value
 * (orig_dst_ip, orig_dst_port, flags) on little-endian machines. BCC's code generation
 * supports 64-bit atomics only. */
static __always_inline __u16 lb_ct_fetch_or_flags(struct lb_ct_value *v, __u16 bits)
{
    __u64 old = __sync_fetch_and_or((__u64 *)v, (__u64)bits << 48);
    return (__u16)(old >> 48);
}

static __always_inline __u32 lb_mix32(__u32 h)
{
    h ^= h >> 16;
    h *= 0x85ebca6b;
    h ^= h >> 13;
    h *= 0xc2b2ae35;
    h ^= h >> 16;
    return h;
}

/* Flow hash for the weighted pick. Hashing the 5-tuple (rather than a random draw) gives
 * the same target again for a flow whose conntrack entry was evicted, as long as the
 * weights did not change. */
static __always_inline __u32 lb_flow_hash(const struct lb_ct_key *k)
{
    __u32 h = lb_mix32(k->src_ip ^ 0x9e3779b9);
    h = lb_mix32(h ^ k->dst_ip);
    h = lb_mix32(h ^ (((__u32)k->src_port << 16) | k->dst_port));
    return lb_mix32(h ^ k->proto);
}

/* Weighted pick on cumulative weights: first slot whose cumulative weight is above
 * hash % total. Weight-0 slots never match. Returns 0 and fills *out on success. */
static __always_inline int lb_pick(const struct lb_route *r, __u32 hash, struct lb_target *out)
{
    __u32 n = r->target_count;
    __u32 total = 0;
    int chosen = -1;
    if (n == 0 || n > LB_MAX_TARGETS)
        return -1;
#pragma unroll
    for (int i = 0; i < LB_MAX_TARGETS; i++)
        if (i == n - 1)
            total = r->targets[i].cumulative_weight;
    if (total == 0)
        return -1;
    __u32 x = hash % total;
    /* Walk from the last slot down so the first matching slot is the one that sticks. */
#pragma unroll
    for (int i = LB_MAX_TARGETS - 1; i >= 0; i--)
        if (i < n && x < r->targets[i].cumulative_weight)
            chosen = i;
    if (chosen < 0)
        return -1;
    out->ip = r->targets[chosen & (LB_MAX_TARGETS - 1)].ip;
    out->port = r->targets[chosen & (LB_MAX_TARGETS - 1)].port;
    return 0;
}

/* Maglev pick: the slot of the flow hash in the group's lookup table names the target (an
 * index into the same route's targets, which the table was built for). No seed: every node
 * with the same config picks the same target for a flow. */
static __always_inline int lb_pick_maglev(const struct lb_route *r, __u32 hash,
                                          struct lb_target *out)
{
    __u32 index = r->table;
    struct lb_maglev_table *t = maglev.lookup(&index);
    if (!t)
        return -1;
    __u32 slot = hash % LB_MAGLEV_SIZE;
    /* The verifier cannot bound a modulo compiled as divide-multiply-subtract: hide the
     * value from the compiler so this check stays and bounds the slot for the verifier. */
    asm volatile("" : "+r"(slot));
    if (slot >= LB_MAGLEV_SIZE)
        return -1;
    __u32 i = t->slot[slot];
    if (i >= r->target_count || i >= LB_MAX_TARGETS)
        return -1;                      /* LB_MAGLEV_NO_TARGET: every target drained */
    out->ip = r->targets[i & (LB_MAX_TARGETS - 1)].ip;
    out->port = r->targets[i & (LB_MAX_TARGETS - 1)].port;
    return 0;
}

/* The route's pick method: its Maglev table, or the weighted pick. */
static __always_inline int lb_choose(const struct lb_route *r, __u32 hash, struct lb_target *out)
{
    if (r->flags & LB_ROUTE_F_MAGLEV)
        return lb_pick_maglev(r, hash, out);
    return lb_pick(r, hash, out);
}

/* Waking the event reader. By default a submit wakes the reader whenever it has consumed
 * everything before this record, which is the normal state of a reader that keeps up: then
 * every event queues an irq_work whose self-IPI, in a VM, costs about 8 us of the CPU that
 * handles the packet (bench.datapath: "new flow, reader caught up", 9,068 vs 940 ns). So
 * an event wakes the reader only if it is the first of this CPU in this clock tick; the
 * others are submitted without a wakeup and read with the next wakeup, or when the
 * reader's poll times out (EventReader.poll then consumes what is there). Nothing is
 * dropped: a reader sees every event, at most one poll timeout late, and a CPU wakes it at
 * most once a tick. Internal to the program (the clock tick of this CPU's last wakeup),
 * not pinned. */
BPF_PERCPU_ARRAY(event_wakeups, __u64, 1);

static __always_inline __u64 lb_event_wakeup(__u64 now)
{
    __u32 zero = 0;
    __u64 *last = event_wakeups.lookup(&zero);
    if (!last || now <= *last)
        return BPF_RB_NO_WAKEUP;
    *last = now;
    return BPF_RB_FORCE_WAKEUP;
}

/* Emit an event about the flow ``fkey``/``v``. ``r``: the flow's reply entry, or NULL; a
 * flow's reverse counts are its forward entry's plus its reply entry's (lb_abi.h). */
static __always_inline void lb_emit(__u8 type, __u8 reason, const struct lb_ct_key *fkey,
                                    const struct lb_ct_value *v, const struct lb_ct_value *r,
                                    __u64 now)
{
    struct lb_event *e = stats.ringbuf_reserve(sizeof(struct lb_event));
    if (!e) {
        lb_count(LB_CTR_EVENTS_LOST);
        return;
    }
    e->ts_ns = now;
    e->packets_fwd = v->packets_fwd;
    e->packets_rev = v->packets_rev + (r ? r->packets_rev : 0);
    e->bytes_fwd = v->bytes_fwd;
    e->bytes_rev = v->bytes_rev + (r ? r->bytes_rev : 0);
    e->created_ns = v->created_ns;
    e->client_ip = fkey->src_ip;
    e->vip_ip = v->orig_dst_ip;
    e->target_ip = v->nat_dst_ip;
    e->client_port = fkey->src_port;
    e->vip_port = v->orig_dst_port;
    e->target_port = v->nat_dst_port;
    e->sni_hash = 0;
    e->type = type;
    e->proto = fkey->proto;
    e->reason = reason;
    e->group = (v->flags & LB_CT_F_SOURCE) ? LB_GROUP_SOURCE : LB_GROUP_LISTENER;
    e->flags = ((v->flags & LB_CT_F_SEEN_REPLY) ? LB_EVENT_F_REPLIED : 0) |
               ((v->flags & LB_CT_F_RST_REV) ? LB_EVENT_F_RST_TARGET : 0);
    e->pad = 0;
    stats.ringbuf_submit(e, lb_event_wakeup(now));
}

static __always_inline int lb_is_closed(__u16 flags)
{
    return (flags & LB_CT_F_RST) || ((flags & LB_CT_F_FIN_FWD) && (flags & LB_CT_F_FIN_REV));
}

static __always_inline int lb_is_expired(const struct lb_ct_value *v, __u64 now)
{
    __u32 timeout_s = lb_setting(LB_SETTING_CONN_TIMEOUT_S);
    return timeout_s && now > v->last_seen_ns &&
           now - v->last_seen_ns > (__u64)timeout_s * LB_NS_PER_S;
}

/* The reply tuple of the flow ``fkey`` (client -> listener) DNATed to ip:port. */
static __always_inline void lb_reply_key_to(struct lb_ct_key *rkey, const struct lb_ct_key *fkey,
                                            __be32 ip, __be16 port)
{
    rkey->src_ip = ip;
    rkey->dst_ip = fkey->src_ip;
    rkey->src_port = port;
    rkey->dst_port = fkey->src_port;
    rkey->proto = fkey->proto;
}

static __always_inline void lb_reply_key_of(struct lb_ct_key *rkey, const struct lb_ct_key *fkey,
                                            const struct lb_ct_value *fct)
{
    lb_reply_key_to(rkey, fkey, fct->nat_dst_ip, fct->nat_dst_port);
}

/* The flow's reply entry (its key in *rkey), if it is this flow's: under the flow's reply
 * tuple and naming the same VIP:port (else another listener's flow owns the tuple). */
static __always_inline struct lb_ct_value *lb_reply_of(const struct lb_ct_key *fkey,
                                                       const struct lb_ct_value *fct,
                                                       struct lb_ct_key *rkey)
{
    lb_reply_key_of(rkey, fkey, fct);
    struct lb_ct_value *r = conntrack.lookup(rkey);
    if (!r || !(r->flags & LB_CT_F_REPLY) || r->orig_dst_ip != fct->orig_dst_ip ||
        r->orig_dst_port != fct->orig_dst_port)
        return NULL;
    return r;
}

/* Add the reverse counts a flow's reply entry ``r`` holds to its forward entry ``fct``,
 * before the reply entry goes (lb_abi.h: readers sum the two). */
static __always_inline void lb_fold_reply(struct lb_ct_value *fct, const struct lb_ct_value *r)
{
    fct->packets_rev += r->packets_rev;
    fct->bytes_rev += r->bytes_rev;
}

/* Delete a flow's reply entry ``r`` (under ``rkey``), its counts folded into the flow's
 * forward entry ``fct`` first (NULL: the flow is gone, nothing to keep). */
static __always_inline void lb_drop_reply(const struct lb_ct_key *rkey, struct lb_ct_value *r,
                                          struct lb_ct_value *fct)
{
    if (fct)
        lb_fold_reply(fct, r);
    conntrack.delete((struct lb_ct_key *)rkey);
}

/* Record FIN/RST seen in one direction of a forward flow; emit "closed" once. ``r``: the
 * flow's reply entry when the caller has it (the reply path); NULL makes the close look it
 * up for the event's reverse counts (rare: once a flow). Returns the flow's flags after
 * this packet. */
static __always_inline __u16 lb_track_tcp_close(struct lb_pkt *p, const struct lb_ct_key *fkey,
                                                struct lb_ct_value *fct,
                                                const struct lb_ct_value *r, int reverse,
                                                __u64 now)
{
    __u16 bits = 0;
    if (!p->tcp)
        return fct->flags;
    if (p->tcp->rst)
        bits |= reverse ? (LB_CT_F_RST | LB_CT_F_RST_REV) : LB_CT_F_RST;
    if (p->tcp->fin)
        bits |= reverse ? LB_CT_F_FIN_REV : LB_CT_F_FIN_FWD;
    if (!bits)
        return fct->flags;
    __u16 flags = lb_ct_fetch_or_flags(fct, bits) | bits;
    if (!lb_is_closed(flags) || (flags & LB_CT_F_CLOSE_SENT))
        return flags;
    if (lb_ct_fetch_or_flags(fct, LB_CT_F_CLOSE_SENT) & LB_CT_F_CLOSE_SENT)
        return flags;                   /* another CPU won the race to report it */
    lb_count(LB_CTR_FLOWS_CLOSED);
    if ((flags & LB_CT_F_STATS) && lb_setting(LB_SETTING_STATS_ENABLED)) {
        struct lb_ct_key rkey = {};
        if (!r)
            r = lb_reply_of(fkey, fct, &rkey);
        lb_emit(LB_EVENT_CLOSED, (flags & LB_CT_F_RST) ? LB_CLOSE_RST : LB_CLOSE_FIN,
                fkey, fct, r, now);
    }
    return flags;
}

/* Handlers return an XDP action, or LB_FORWARD: "translated, now forward it", so the
 * forwarding code (the largest part of the program) exists once; lb_handle_new returns
 * LB_NOT_OURS for a packet no listener takes (its caller passes it untouched). */
#define LB_FORWARD (-1)
#define LB_NOT_OURS (-2)

/* --- address rewriting ------------------------------------------------------------------- */

/* Rewrite one address and port of a TCP/UDP packet with incremental checksum updates. A
 * partial L4 checksum covers the addresses only (the ports are summed at transmit). */
static __always_inline void lb_rewrite(struct lb_pkt *p, __be32 *addr, __be16 *port,
                                       __be32 ip, __be16 new_port)
{
    struct iphdr *iph = p->iph;
    if (p->partial) {
        lb_csum_partial_replace4(p->l4_check, *addr, ip);
        /* The port is in the rest of the segment, which finishing the field sums. */
        p->l4_rest = lb_csum16_add(lb_csum16_add(p->l4_rest, (__u16)~*port), new_port);
    } else if (p->tcp || *p->l4_check) {  /* UDP checksum 0 means "none" and stays 0 */
        lb_csum_replace4(p->l4_check, *addr, ip);
        lb_csum_replace2(p->l4_check, *port, new_port);
        if (p->udp && *p->l4_check == 0)
            *p->l4_check = 0xffff;
    }
    lb_csum_replace4(&iph->check, *addr, ip);
    *addr = ip;
    *port = new_port;
}

static __always_inline void lb_rewrite_dst(struct lb_pkt *p, __be32 ip, __be16 port)
{
    lb_rewrite(p, &p->iph->daddr, p->dport, ip, port);
}

static __always_inline void lb_rewrite_src(struct lb_pkt *p, __be32 ip, __be16 port)
{
    lb_rewrite(p, &p->iph->saddr, p->sport, ip, port);
}

/* --- forwarding ------------------------------------------------------------------------- */

/* Next-hop cache: bpf_fib_lookup is the most expensive step of a forwarded packet (~160 ns
 * in a VM), and a balancer sends most packets to a handful of addresses. Each CPU keeps
 * the last answer per (ingress interface, destination) slot for settings[NH_CACHE_MS]
 * milliseconds; bumping settings[NH_GENERATION] drops them all at once (the control plane
 * does so whenever tx_ports or the generic-XDP setting changes). Internal to the program
 * (not part of the map ABI), so not pinned.
 *
 * A slot also keeps tx_ports' verdict on its egress: when the devmap took the packet that
 * filled it, and every attachment is native, later hits use bpf_redirect, the same
 * transmit path without the devmap lookup (about 10 ns per packet). The verdict is as old
 * as the slot: an egress that leaves tx_ports is dropped from the cache by the generation
 * bump, and one that disappears from the host meanwhile costs its packets (instead of the
 * stack's try) for at most the slot's lifetime, as a neighbour's changed MAC does. Generic
 * XDP keeps the devmap: its redirect also resets the skb's timestamp. */
#define LB_NH_SLOTS 256

struct lb_nh {
    __be32 dst;
    __u32 ifindex_in;
    __u32 ifindex_out;
    __u32 generation;
    __u8 smac[ETH_ALEN];
    __u8 dmac[ETH_ALEN];
    __u32 max_len;          /* the largest packet the lookup passed (its MTU check) */
    __u32 direct;           /* tx_ports took the egress, native XDP: bpf_redirect on hits */
    __u64 expires_ns;
};

BPF_PERCPU_ARRAY(nh_cache, struct lb_nh, LB_NH_SLOTS);

/* Make a frame whose redirect is certain ready for its link: the checksum finished, the
 * TTL decreased, the next hop's MACs. */
static __always_inline int lb_ready_for_link(struct lb_pkt *p, const __u8 *smac,
                                             const __u8 *dmac)
{
    if (p->partial)
        lb_csum_finish(p->l4_check, p->l4_rest, p->proto);
    lb_ip_decrease_ttl(p->iph);
    __builtin_memcpy(p->eth->h_dest, dmac, ETH_ALEN);
    __builtin_memcpy(p->eth->h_source, smac, ETH_ALEN);
    return XDP_REDIRECT;
}

/* Redirect into tx_ports, or let the stack forward the packet when the egress interface is
 * not one the control plane verified (the helper falls back to XDP_PASS). The frame is
 * only rewritten for the link once the redirect is certain, so a passed packet reaches the
 * stack as it arrived, apart from the translation. */
static __always_inline int lb_redirect_to(struct xdp_md *ctx, struct lb_pkt *p,
                                          const __u8 *smac, const __u8 *dmac, __u32 ifindex)
{
    if (tx_ports.redirect_map(ifindex, XDP_PASS) != XDP_REDIRECT)
        return lb_pass(ctx->ingress_ifindex, LB_REASON_EGRESS_NOT_XDP);
    return lb_ready_for_link(p, smac, dmac);
}

/* Route the rewritten packet ourselves when the kernel knows the next hop and the egress
 * takes XDP frames; otherwise let the stack forward it. */
static __always_inline int lb_forward(struct xdp_md *ctx, struct lb_pkt *p, __u64 now)
{
    struct bpf_fib_lookup fib = {};
    struct iphdr *iph = p->iph;
    struct lb_nh *nh = NULL;
    __u32 in = ctx->ingress_ifindex;
    __u32 cache_ms, generation = 0;

    if (p->vlan)
        return lb_pass(in, LB_REASON_VLAN);         /* tag handling is the stack's */
    /* A partial checksum leaves as an XDP frame only finished (lb_redirect_to), and only
     * under native XDP: under generic XDP the skb keeps its "finish this checksum" mark,
     * and a device that honours it would finish the field a second time. */
    if (p->partial && (!p->completable || lb_setting(LB_SETTING_XDP_GENERIC)))
        return lb_pass(in, LB_REASON_CSUM_PARTIAL);
    if (p->options)
        return lb_pass(in, LB_REASON_IP_OPTIONS);   /* routers process options: the stack */
    if (iph->ttl <= 1)
        return lb_pass(in, LB_REASON_TTL);          /* the stack sends time exceeded */
    cache_ms = lb_setting(LB_SETTING_NH_CACHE_MS);
    if (cache_ms) {
        __u32 slot = (bpf_ntohl(iph->daddr) ^ (in << 5)) & (LB_NH_SLOTS - 1);
        nh = nh_cache.lookup(&slot);
        generation = lb_setting(LB_SETTING_NH_GENERATION);
        if (nh && nh->dst == iph->daddr && nh->ifindex_in == in &&
            nh->generation == generation && now < nh->expires_ns &&
            p->ip_len <= nh->max_len) {
            if (nh->direct) {
                bpf_redirect(nh->ifindex_out, 0);
                return lb_ready_for_link(p, nh->smac, nh->dmac);
            }
            return lb_redirect_to(ctx, p, nh->smac, nh->dmac, nh->ifindex_out);
        }
    }
    fib.family = LB_AF_INET;
    fib.tos = iph->tos;
    fib.l4_protocol = iph->protocol;
    fib.tot_len = p->ip_len;
    fib.ipv4_src = iph->saddr;
    fib.ipv4_dst = iph->daddr;
    fib.ifindex = in;
    int rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
    if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
        return lb_pass(in, LB_REASON_NO_NEIGH);
    if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED) {
        /* Too big for the egress link: the stack answers "fragmentation needed". About a
         * reply it must quote the target's own packet (the target lowers its path MTU);
         * about a request the quote names the target, which the client cannot match (a
         * limit: the links towards targets must carry the targets' MTU). */
        if (p->is_reply)
            lb_rewrite_src(p, p->reply_src_ip, p->reply_src_port);
        return lb_pass(in, LB_REASON_MTU);
    }
    if (rc != BPF_FIB_LKUP_RET_SUCCESS)
        return lb_pass(in, LB_REASON_FIB_MISS);
    int act = lb_redirect_to(ctx, p, fib.smac, fib.dmac, fib.ifindex);
    if (nh) {
        /* A hit for the same next hop only widens what the entry vouches for; a larger
         * packet than any checked so far takes the lookup (and its MTU check) again. */
        int same = nh->dst == iph->daddr && nh->ifindex_in == in &&
                   nh->ifindex_out == fib.ifindex && nh->generation == generation &&
                   now < nh->expires_ns;
        nh->max_len = same && nh->max_len > p->ip_len ? nh->max_len : p->ip_len;
        nh->dst = iph->daddr;
        nh->ifindex_in = in;
        nh->ifindex_out = fib.ifindex;
        nh->generation = generation;
        __builtin_memcpy(nh->smac, fib.smac, ETH_ALEN);
        __builtin_memcpy(nh->dmac, fib.dmac, ETH_ALEN);
        nh->expires_ns = now + (__u64)cache_ms * 1000000ULL;
        nh->direct = act == XDP_REDIRECT && !lb_setting(LB_SETTING_XDP_GENERIC);
    }
    return act;
}

/* Classify the L4 checksum before the first rewrite (see lb_csum.h). */
static __always_inline void lb_check_partial(struct xdp_md *ctx, struct lb_pkt *p)
{
    void *data_end = (void *)(long)ctx->data_end;
    int kind = lb_csum_classify(p->iph, p->proto, p->l4_check, p->l4, p->l4_len, data_end,
                                &p->l4_rest);
    p->partial = kind != LB_CSUM_FINISHED;
    p->completable = kind == LB_CSUM_PARTIAL;
}

/* --- conntrack -------------------------------------------------------------------------- */

static __always_inline void lb_forward_key_of(struct lb_ct_key *fkey, const struct lb_ct_key *rkey,
                                              const struct lb_ct_value *rct)
{
    fkey->src_ip = rkey->dst_ip;
    fkey->dst_ip = rct->orig_dst_ip;
    fkey->src_port = rkey->dst_port;
    fkey->dst_port = rct->orig_dst_port;
    fkey->proto = rkey->proto;
}

static __always_inline void lb_reply_value_of(struct lb_ct_value *rv, const struct lb_ct_value *fv,
                                              __u64 now)
{
    rv->orig_dst_ip = fv->orig_dst_ip;
    rv->orig_dst_port = fv->orig_dst_port;
    rv->nat_dst_ip = fv->nat_dst_ip;
    rv->nat_dst_port = fv->nat_dst_port;
    rv->created_ns = fv->created_ns;
    rv->last_seen_ns = now;
    /* SEEN_REPLY too: an adopted or handshake-completed flow is established already. */
    rv->flags = (fv->flags & (LB_CT_F_STATS | LB_CT_F_SEEN_REPLY)) | LB_CT_F_REPLY;
}

/* The forward entry a reply entry points at, if that flow still uses this reply tuple. */
static __always_inline struct lb_ct_value *lb_flow_of_reply(const struct lb_ct_key *rkey,
                                                            const struct lb_ct_value *rct,
                                                            struct lb_ct_key *fkey)
{
    lb_forward_key_of(fkey, rkey, rct);
    struct lb_ct_value *fct = conntrack.lookup(fkey);
    if (!fct || (fct->flags & (LB_CT_F_REPLY | LB_CT_F_LOCAL)) ||
        fct->nat_dst_ip != rkey->src_ip || fct->nat_dst_port != rkey->src_port)
        return NULL;
    return fct;
}

/* Remove a flow's reply entry, but only if it is still this flow's; its reverse counts
 * go to the forward entry first. */
static __always_inline void lb_forget_reply(const struct lb_ct_key *fkey,
                                            struct lb_ct_value *fct)
{
    struct lb_ct_key rkey = {};
    struct lb_ct_value *r = lb_reply_of(fkey, fct, &rkey);
    if (r)
        lb_drop_reply(&rkey, r, fct);
}

/* Once a tick per flow, on forward traffic: refresh the reply entry's last_seen (so the
 * sweep sees a flow whose target is quiet as alive), and re-create it if the LRU evicted
 * or a sweep removed it, so the target's next reply is translated. Never over another
 * flow's entry. */
static __always_inline void lb_keep_reply(const struct lb_ct_key *fkey,
                                          const struct lb_ct_value *fct, __u64 now)
{
    if (lb_is_closed(fct->flags))
        return;
    struct lb_ct_key rkey = {};
    lb_reply_key_of(&rkey, fkey, fct);
    struct lb_ct_value *r = conntrack.lookup(&rkey);
    if (r) {
        if (r->orig_dst_ip == fct->orig_dst_ip && r->orig_dst_port == fct->orig_dst_port &&
            r->last_seen_ns != now)
            r->last_seen_ns = now;
        return;
    }
    struct lb_ct_value rv = {};
    lb_reply_value_of(&rv, fct, now);
    if (conntrack.insert(&rkey, &rv) == 0)
        lb_count(LB_CTR_REPLIES_REBUILT);
}

/* A reply tuple whose flow is gone, finished or someone else's: not ours. ``fct``: its
 * flow when that is gone only in the sense of finished (it keeps the reverse counts). */
static __always_inline int lb_stale_reply(struct xdp_md *ctx, const struct lb_ct_key *key,
                                          struct lb_ct_value *rct, struct lb_ct_value *fct)
{
    lb_drop_reply(key, rct, fct);
    return lb_pass(ctx->ingress_ifindex, LB_REASON_STALE_REPLY);
}

/* A segment that changes no flow state: UDP, or TCP without SYN, FIN or RST. */
static __always_inline int lb_is_plain(const struct lb_pkt *p)
{
    return !p->tcp || !(p->tcp->syn || p->tcp->fin || p->tcp->rst);
}

/* Restore VIP:port as a reply's source, keeping the target's for a PMTU answer. */
static __always_inline int lb_translate_reply(struct lb_pkt *p, __be32 vip, __be16 vport)
{
    p->is_reply = 1;
    p->reply_src_ip = p->iph->saddr;
    p->reply_src_port = *p->sport;
    lb_rewrite_src(p, vip, vport);
    return LB_FORWARD;
}

/* A packet from a target back to its client: restore VIP:port as the source. The reply
 * entry takes the reverse counts (the forward entry is another entry, written by the
 * other direction: a write to it costs a reply about 15 ns, bench.datapath).
 *
 * Fast path: a reply entry validated in this clock tick (by this path below, by the
 * forward path's lb_keep_reply, or by its creation, each of which checked that it is its
 * live flow's) and established (SEEN_REPLY) translates a plain segment from its own
 * VIP:port: one conntrack lookup, no write to the forward entry. Its flow can only have
 * changed since by a FIN, RST or SYN (which take the full path; a reset or a reused tuple
 * deletes the reply entry) or by its forward entry being deleted alone (LRU eviction;
 * lbtui's own deletes remove the reply entry first): then the reply entry answers for at
 * most the rest of the tick, with the flow's own VIP, and the first reply of the next
 * tick finds the flow gone. */
static __always_inline int lb_handle_reply(struct xdp_md *ctx, struct lb_pkt *p,
                                           const struct lb_ct_key *key,
                                           struct lb_ct_value *rct, __u16 rflags, __u64 now)
{
    if ((rflags & LB_CT_F_SEEN_REPLY) && rct->last_seen_ns == now && lb_is_plain(p)) {
        lb_ct_account(&rct->packets_rev, &rct->bytes_rev, p->ip_len);
        return lb_translate_reply(p, rct->orig_dst_ip, rct->orig_dst_port);
    }
    struct lb_ct_key fkey = {};
    struct lb_ct_value *fct = lb_flow_of_reply(key, rct, &fkey);
    if (!fct)
        return lb_stale_reply(ctx, key, rct, NULL);
    __u16 flags = fct->flags;
    int handshake = p->tcp && p->tcp->syn;
    if (lb_is_closed(flags) || lb_is_expired(fct, now)) {
        /* A finished flow answers no handshake and no datagram: those belong to a new
         * connection that reuses the tuple. The target's packets completing the close
         * (ACKs of the client's FIN, repeated FINs, crossing in a simultaneous close)
         * still belong to the flow until the sweep removes it, or a direct SYN on the
         * tuple does (lb_forget_finished_reply). */
        if (handshake || !p->tcp || !lb_is_closed(flags) || (flags & LB_CT_F_RST))
            return lb_stale_reply(ctx, key, rct, fct);
        lb_ct_account(&rct->packets_rev, &rct->bytes_rev, p->ip_len);
    } else {
        if (handshake && !p->tcp->ack)
            return XDP_PASS;            /* the target opening a connection: not a reply */
        if (fct->last_seen_ns != now)
            fct->last_seen_ns = now;
        if (rct->last_seen_ns != now)
            rct->last_seen_ns = now;
        if (!(flags & LB_CT_F_SEEN_REPLY))
            lb_ct_fetch_or_flags(fct, LB_CT_F_SEEN_REPLY);
        if (!(rflags & LB_CT_F_SEEN_REPLY))
            lb_ct_fetch_or_flags(rct, LB_CT_F_SEEN_REPLY);
        lb_ct_account(&rct->packets_rev, &rct->bytes_rev, p->ip_len);
        if (lb_track_tcp_close(p, &fkey, fct, rct, 1, now) & LB_CT_F_RST)
            lb_drop_reply(key, rct, fct);   /* reset: nothing may follow */
    }
    return lb_translate_reply(p, fkey.dst_ip, fkey.dst_port);
}

/* A packet of a known flow from its client. */
static __always_inline int lb_handle_established(struct xdp_md *ctx, struct lb_pkt *p,
                                                 const struct lb_ct_key *key,
                                                 struct lb_ct_value *ct, __u64 now)
{
    if (ct->last_seen_ns != now) {
        ct->last_seen_ns = now;         /* changes once a tick: fewer shared-line writes */
        lb_keep_reply(key, ct, now);
    }
    lb_ct_account(&ct->packets_fwd, &ct->bytes_fwd, p->ip_len);
    if (lb_track_tcp_close(p, key, ct, NULL, 0, now) & LB_CT_F_RST)
        lb_forget_reply(key, ct);       /* reset: nothing of the target's may follow */
    lb_rewrite_dst(p, ct->nat_dst_ip, ct->nat_dst_port);
    return LB_FORWARD;
}

/* A client's SYN straight to a target's port (not through a listener's tuple)? */
static __always_inline int lb_is_direct_syn(const struct lb_pkt *p)
{
    return p->tcp && p->tcp->syn && !p->tcp->ack &&
           lb_port_marked(LB_PORTS_TARGET_BASE, *p->dport);
}

/* A direct connection from a client to a target reuses a finished balanced flow's
 * tuple: the finished flow's reply entry goes now, so nothing the target answers (a
 * SYN-ACK, or the ACK of a socket still in TIME_WAIT) is rewritten to come from the VIP. */
static __always_inline void lb_forget_finished_reply(struct lb_pkt *p,
                                                     const struct lb_ct_key *key)
{
    struct lb_ct_key rkey = {};
    rkey.src_ip = key->dst_ip;
    rkey.dst_ip = key->src_ip;
    rkey.src_port = key->dst_port;
    rkey.dst_port = key->src_port;
    rkey.proto = key->proto;
    struct lb_ct_value *r = conntrack.lookup(&rkey);
    if (!r || !(r->flags & LB_CT_F_REPLY))
        return;
    struct lb_ct_key fkey = {};
    struct lb_ct_value *fct = lb_flow_of_reply(&rkey, r, &fkey);
    if (!fct || lb_is_closed(fct->flags) || lb_is_expired(fct, lb_clock(p)))
        lb_drop_reply(&rkey, r, fct);
}

/* Is the reply entry ``r`` (under ``rkey``) used by a live flow? If not, and it belongs
 * to a finished flow, its reverse counts go to that flow now (the caller overwrites it). */
static __always_inline int lb_reply_is_live(const struct lb_ct_key *rkey,
                                            const struct lb_ct_value *r, __u64 now)
{
    struct lb_ct_key fkey = {};
    struct lb_ct_value *fct = lb_flow_of_reply(rkey, r, &fkey);
    if (!fct)
        return 0;
    if (!lb_is_closed(fct->flags) && !lb_is_expired(fct, now))
        return 1;
    lb_fold_reply(fct, r);
    return 0;
}

/* Take the reply tuple for a new flow. 0: ours (new, the same flow created on another CPU
 * at the same moment, or a finished flow's leftover taken over); -1: a live flow of
 * another listener already answers from this tuple (the target sees one connection). */
static __always_inline int lb_claim_reply(const struct lb_ct_key *rkey,
                                          const struct lb_ct_value *rv, __u64 now)
{
    if (conntrack.insert((struct lb_ct_key *)rkey, (struct lb_ct_value *)rv) == 0)
        return 0;
    struct lb_ct_value *old = conntrack.lookup((struct lb_ct_key *)rkey);
    if (old && lb_reply_is_live(rkey, old, now)) {
        if (old->orig_dst_ip == rv->orig_dst_ip && old->orig_dst_port == rv->orig_dst_port)
            return 0;
        return -1;
    }
    conntrack.update((struct lb_ct_key *)rkey, (struct lb_ct_value *)rv);
    return 0;
}

/* --- SYN floods ------------------------------------------------------------------------ */

/* A spoofed SYN flood would make every SYN a new flow and the LRU evict established flows
 * that are idle for a moment. Above settings[SYN_FLOOD_RATE] SYNs opening flows per second
 * on a CPU (and until a second after any CPU last saw that), a SYN creates no flow: the
 * program picks the target as usual (the pick is a hash of the tuple, so it is the same
 * again later), forwards the SYN and leaves a hint, keyed by the reply tuple, in a fixed
 * array that nothing evicts from. The target's SYN-ACK finds the hint, is answered from the VIP and
 * records its sequence number; the client's ACK, which must acknowledge exactly that
 * number (a spoofed source never saw it), picks the target again and creates the flow.
 * A flooding sender overwrites hints, never flows. Internal to the program, not pinned:
 * a handshake in flight across a restart is retried by the client. */
#define LB_HINT_SLOTS 65536
#define LB_FLOOD_WINDOW_SHIFT 27        /* rate windows of 2^27 ns (134 ms) */

struct lb_hint {
    struct lb_ct_key rkey;  /* the reply tuple: target -> client */
    __be32 vip;
    __be16 vport;
    __u16 pad;
    __u32 ack;              /* what the client's ACK must acknowledge; 0 until the SYN-ACK */
    __u32 pad2;
};

struct lb_flood_window {
    __u64 window;
    __u64 count;
};

BPF_ARRAY(flood_hints, struct lb_hint, LB_HINT_SLOTS);
BPF_PERCPU_ARRAY(flood_windows, struct lb_flood_window, 1);
BPF_ARRAY(flood_until, __u64, 1);      /* the SYN flood state holds until this time */

static __always_inline __u64 *lb_flood_until(void)
{
    __u32 zero = 0;
    return flood_until.lookup(&zero);
}

/* Count a SYN that would open a TCP flow on this CPU; 1 when it must take the handshake
 * path. Every such SYN is counted, tracked or not, so the state holds for as long as the
 * flood goes on above the rate (not a second at a time, letting a window's worth of
 * spoofed SYNs in each second). */
static __always_inline int lb_syn_flooded(__u64 now)
{
    __u32 rate = lb_setting(LB_SETTING_SYN_FLOOD_RATE);
    if (!rate)
        return 0;
    __u32 zero = 0;
    __u64 *until = lb_flood_until();
    struct lb_flood_window *w = flood_windows.lookup(&zero);
    if (!until || !w)
        return 0;
    __u64 window = now >> LB_FLOOD_WINDOW_SHIFT;
    if (w->window != window) {
        w->window = window;
        w->count = 0;
    }
    w->count += 1;
    if (w->count * LB_NS_PER_S <= ((__u64)rate << LB_FLOOD_WINDOW_SHIFT))
        return now < *until;            /* under the rate here; another CPU's flood holds */
    /* Over the rate: the state holds a second from now. The shared word is written at
     * most twice a second, not for every SYN of the flood. */
    if (*until < now + LB_NS_PER_S / 2)
        *until = now + LB_NS_PER_S;
    return 1;
}

/* Hints are consulted only while a flood may have left some (its state, plus the time a
 * handshake takes): no cost for traffic that is not ours at other times. */
static __always_inline int lb_hints_live(__u64 now)
{
    if (!lb_setting(LB_SETTING_SYN_FLOOD_RATE))
        return 0;
    __u64 *until = lb_flood_until();
    return until && *until && now < *until + 2 * LB_NS_PER_S;
}

static __always_inline struct lb_hint *lb_hint_of(const struct lb_ct_key *rkey)
{
    __u32 slot = lb_flow_hash(rkey) & (LB_HINT_SLOTS - 1);
    struct lb_hint *h = flood_hints.lookup(&slot);
    if (!h || h->rkey.src_ip != rkey->src_ip || h->rkey.dst_ip != rkey->dst_ip ||
        h->rkey.src_port != rkey->src_port || h->rkey.dst_port != rkey->dst_port ||
        h->rkey.proto != rkey->proto)
        return NULL;
    return h;
}

/* A SYN of a flood: forward it to ``t`` without a flow, leaving the hint. */
static __always_inline int lb_flood_syn(struct lb_pkt *p, const struct lb_ct_key *key,
                                        const struct lb_target *t)
{
    struct lb_hint h = {};
    lb_reply_key_to(&h.rkey, key, t->ip, t->port);
    h.vip = key->dst_ip;
    h.vport = key->dst_port;
    __u32 slot = lb_flow_hash(&h.rkey) & (LB_HINT_SLOTS - 1);
    flood_hints.update(&slot, &h);
    lb_count(LB_CTR_FLOOD_SYNS);
    lb_rewrite_dst(p, t->ip, t->port);
    return LB_FORWARD;
}

/* A packet from a target with no flow: the answer to a flood-time SYN (its SYN-ACK, or a
 * reset) goes back from the VIP; a SYN-ACK records what the client must acknowledge. */
static __always_inline int lb_flood_answer(struct lb_pkt *p, const struct lb_ct_key *key)
{
    struct lb_hint *h = lb_hint_of(key);
    if (!h)
        return LB_NOT_OURS;
    if (p->tcp->syn && p->tcp->ack)
        h->ack = bpf_ntohl(p->tcp->seq) + 1;
    lb_rewrite_src(p, h->vip, h->vport);
    return LB_FORWARD;
}

/* The client's ACK completing a flood-time handshake with the target ``t`` picked again:
 * 1 when it acknowledges the target's SYN-ACK for this very tuple (the hint is used up). */
static __always_inline int lb_flood_ack_valid(const struct lb_pkt *p,
                                              const struct lb_ct_key *key,
                                              const struct lb_target *t)
{
    struct lb_ct_key rkey = {};
    lb_reply_key_to(&rkey, key, t->ip, t->port);
    struct lb_hint *h = lb_hint_of(&rkey);
    if (!h || h->vip != key->dst_ip || h->vport != key->dst_port || !h->ack ||
        h->ack != bpf_ntohl(p->tcp->ack_seq))
        return 0;
    h->ack = 0;
    return 1;
}

/* Does this listener serve the packet's destination address? */
static __always_inline int lb_serves_address(const struct lb_route *route,
                                             const struct lb_ct_key *key)
{
    if (route->flags & LB_ROUTE_F_ADDRESS) {
        struct lb_vip_key vk = { .ip = key->dst_ip, .port = key->dst_port };
        return vips.lookup(&vk) != NULL;
    }
    if (route->flags & LB_ROUTE_F_LOCAL) {
        __be32 ip = key->dst_ip;
        return local_addrs.lookup(&ip) != NULL;
    }
    return 1;
}

/* --- adopting connections ----------------------------------------------------------------
 *
 * Behind ECMP, a connection moves to another balancer node when a node fails or the
 * router's paths change; its next packet finds no flow there. A Maglev group picks the
 * same target on every node that has the same group (the table depends only on the
 * targets and weights, the hash on the 5-tuple), so such a packet is given a flow with
 * the target the first node picked, instead of being passed to a stack that would reset
 * the connection (Maglev's and Katran's answer to a conntrack miss). Not adopted: a
 * connection this host's own stack holds (a local service on the listener's port whose
 * connection predates the listener), and anything while the new-flow rate is over
 * syn_flood_rate (adopting counts as a new flow: an ACK flood must not fill conntrack). */
static __always_inline int lb_adoptable(struct xdp_md *ctx, const struct lb_route *route,
                                        const struct lb_ct_key *key, __u64 now)
{
    if (!(route->flags & LB_ROUTE_F_MAGLEV))
        return 0;
    struct bpf_sock_tuple tuple = {};
    tuple.ipv4.saddr = key->src_ip;
    tuple.ipv4.daddr = key->dst_ip;
    tuple.ipv4.sport = key->src_port;
    tuple.ipv4.dport = key->dst_port;
    struct bpf_sock *sk = bpf_skc_lookup_tcp(ctx, &tuple, sizeof(tuple.ipv4),
                                             BPF_F_CURRENT_NETNS, 0);
    if (sk) {
        /* The lookup falls back to a listening socket: that is no connection. */
        int connected = sk->state != BPF_TCP_LISTEN;
        bpf_sk_release(sk);
        if (connected)
            return 0;
    }
    return !lb_syn_flooded(now);
}

/* First packet of a flow on a listener: choose a target, record both tuples. ``reuse``:
 * a finished or aged flow of the same tuple is being replaced. LB_NOT_OURS when no
 * listener takes the packet (no listener, the other protocol, the SNI splicer's, not an
 * address it serves). */
static __always_inline int lb_handle_new(struct xdp_md *ctx, struct lb_pkt *p,
                                         const struct lb_ct_key *key, int reuse)
{
    __u32 in = ctx->ingress_ifindex;
    struct lb_listen_key lkey = {};
    lkey.ifindex = in;
    lkey.port = key->dst_port;
    struct lb_route *route = listen.lookup(&lkey);
    if (!route)
        return LB_NOT_OURS;
    if ((route->flags & (LB_ROUTE_F_TCP | LB_ROUTE_F_UDP)) &&
        !(route->flags & (p->tcp ? LB_ROUTE_F_TCP : LB_ROUTE_F_UDP)))
        return LB_NOT_OURS;             /* listener is for the other protocol */
    if (route->flags & LB_ROUTE_F_SNI) {
        lb_count(LB_CTR_SNI_PASSED);
        return LB_NOT_OURS;             /* the userspace splicer owns this listener */
    }
    /* A SYN opens a TCP flow. A TCP packet without one (an ACK, possibly with data or a
     * FIN) opens one only when it completes a handshake forwarded during a SYN flood, or
     * when a Maglev group adopts it (lb_adoptable). */
    int midstream = p->tcp && !(p->tcp->syn && !p->tcp->ack);
    if (midstream && (!p->tcp->ack || p->tcp->syn || p->tcp->rst))
        return lb_pass(in, LB_REASON_NO_FLOW);
    if (!lb_serves_address(route, key)) {
        lb_reason(in, LB_REASON_NOT_VIP);
        return LB_NOT_OURS;
    }
    __u64 now = lb_clock(p);

    struct lb_lpm_key skey = { .prefixlen = 32, .ip = key->src_ip };
    struct lb_route *sroute = config.lookup(&skey);
    __u16 chosen_by = 0;
    if (sroute) {
        route = sroute;
        chosen_by = LB_CT_F_SOURCE;
    }
    int hints = midstream && lb_hints_live(now);
    if (midstream && !hints && !(route->flags & LB_ROUTE_F_MAGLEV))
        return lb_pass(in, LB_REASON_NO_FLOW);

    struct lb_target t = {};
    if (lb_choose(route, lb_flow_hash(key), &t) != 0) {
        lb_count(LB_CTR_NO_TARGET);
        return lb_pass(in, LB_REASON_NO_TARGET);    /* every target drained */
    }
    int handshake_ack = 0;
    if (hints && lb_flood_ack_valid(p, key, &t)) {
        handshake_ack = 1;
        lb_count(LB_CTR_FLOOD_FLOWS);
    } else if (midstream) {
        if (!lb_adoptable(ctx, route, key, now))
            return lb_pass(in, LB_REASON_NO_FLOW);
        chosen_by |= LB_CT_F_ADOPTED | LB_CT_F_SEEN_REPLY |
                     (p->tcp->fin ? LB_CT_F_FIN_FWD : 0);
        lb_count(LB_CTR_FLOWS_ADOPTED);
    } else if (p->tcp && !reuse && lb_syn_flooded(now)) {
        return lb_flood_syn(p, key, &t);
    }

    struct lb_ct_value v = {};
    v.orig_dst_ip = key->dst_ip;
    v.orig_dst_port = key->dst_port;
    v.nat_dst_ip = t.ip;
    v.nat_dst_port = t.port;
    v.created_ns = now;
    v.last_seen_ns = now;
    v.packets_fwd = 1;
    v.bytes_fwd = p->ip_len;
    v.flags = chosen_by | ((route->flags & LB_ROUTE_F_STATS) ? LB_CT_F_STATS : 0) |
              (handshake_ack ? LB_CT_F_SEEN_REPLY : 0);

    /* Reply entry first: once the forward entry exists, another CPU may forward this
     * flow's packets and the target may answer. */
    struct lb_ct_key rkey = {};
    lb_reply_key_of(&rkey, key, &v);
    struct lb_ct_value rv = {};
    lb_reply_value_of(&rv, &v, now);
    if (lb_claim_reply(&rkey, &rv, now) != 0)
        return lb_pass(in, LB_REASON_REPLY_CLASH);
    if (reuse) {
        conntrack.update((struct lb_ct_key *)key, &v);
    } else if (conntrack.insert((struct lb_ct_key *)key, &v) != 0) {
        /* Another CPU created this flow a moment ago (a retransmitted SYN): follow it. */
        struct lb_ct_value *won = conntrack.lookup((struct lb_ct_key *)key);
        if (!won)
            return XDP_PASS;
        lb_rewrite_dst(p, won->nat_dst_ip, won->nat_dst_port);
        return LB_FORWARD;
    }
    lb_count(LB_CTR_FLOWS_CREATED);
    if ((v.flags & LB_CT_F_STATS) && lb_setting(LB_SETTING_STATS_ENABLED))
        lb_emit(LB_EVENT_OPENED, 0, key, &v, NULL, now);

    lb_rewrite_dst(p, t.ip, t.port);
    return LB_FORWARD;
}

/* --- ICMP errors ------------------------------------------------------------------------ */

/* Rewrite one address and port of the packet an ICMP error quotes, keeping the quoted IP
 * and L4 checksums and the ICMP checksum (which covers the quote) consistent. */
static __always_inline void lb_icmp_rewrite_quote(struct lb_pkt *p, int dst, __be32 ip,
                                                  __be16 port)
{
    struct iphdr *in = p->inner;
    __u16 *icheck = &p->icmp->check;
    __be32 *addr = dst ? &in->daddr : &in->saddr;
    __be16 *pp = dst ? p->dport : p->sport;
    __be32 old_ip = *addr;
    __be16 old_port = *pp;
    __u16 old_ip_check = in->check;
    lb_csum_replace4(&in->check, old_ip, ip);
    lb_csum_replace4(icheck, old_ip, ip);
    lb_csum_replace2(icheck, old_port, port);
    lb_csum_replace2(icheck, old_ip_check, in->check);
    if (p->l4_check && (p->proto == IPPROTO_TCP || *p->l4_check)) {
        __u16 old_l4_check = *p->l4_check;
        lb_csum_replace4(p->l4_check, old_ip, ip);
        lb_csum_replace2(p->l4_check, old_port, port);
        lb_csum_replace2(icheck, old_l4_check, *p->l4_check);
    }
    *addr = ip;
    *pp = port;
}

/* ICMP has no pseudo-header: only the outer IP checksum covers the outer addresses. */
static __always_inline void lb_icmp_rewrite_outer(struct iphdr *iph, __be32 *addr, __be32 ip)
{
    lb_csum_replace4(&iph->check, *addr, ip);
    *addr = ip;
}

/* "Fragmentation needed", "port unreachable" and their kin about a balanced flow travel
 * translated like the flow: PMTU discovery and errors work through the balancer. */
static __always_inline int lb_handle_icmp(struct xdp_md *ctx, struct lb_pkt *p)
{
    struct iphdr *in = p->inner;
    struct lb_ct_key k = {};
    k.proto = p->proto;
    /* About a packet a client sent, after DNAT, to a target (the quote reads client ->
     * target): from the target or a router on the way; the client must see the VIP. */
    if (lb_port_marked(LB_PORTS_TARGET_BASE, *p->dport)) {
        k.src_ip = in->daddr;
        k.dst_ip = in->saddr;
        k.src_port = *p->dport;
        k.dst_port = *p->sport;
        struct lb_ct_value *r = conntrack.lookup(&k);
        if (r && (r->flags & LB_CT_F_REPLY)) {
            struct lb_ct_key fkey = {};
            struct lb_ct_value *fct = lb_flow_of_reply(&k, r, &fkey);
            if (fct) {
                if (p->iph->saddr == in->daddr)
                    lb_icmp_rewrite_outer(p->iph, &p->iph->saddr, fkey.dst_ip);
                lb_icmp_rewrite_quote(p, 1, fkey.dst_ip, fkey.dst_port);
                lb_reason(ctx->ingress_ifindex, LB_REASON_ICMP);
                return LB_FORWARD;
            }
        }
    }
    /* About a reply the balancer sent as the VIP (the quote reads VIP -> client): from
     * the client or a router on its side; the target must see its own address. */
    if (lb_port_marked(LB_PORTS_LISTEN_BASE, *p->sport)) {
        k.src_ip = in->daddr;
        k.dst_ip = in->saddr;
        k.src_port = *p->dport;
        k.dst_port = *p->sport;
        struct lb_ct_value *f = conntrack.lookup(&k);
        if (f && !(f->flags & (LB_CT_F_REPLY | LB_CT_F_LOCAL))) {
            __be32 target_ip = f->nat_dst_ip;
            __be16 target_port = f->nat_dst_port;
            if (p->iph->daddr == in->saddr)
                lb_icmp_rewrite_outer(p->iph, &p->iph->daddr, target_ip);
            lb_icmp_rewrite_quote(p, 0, target_ip, target_port);
            lb_reason(ctx->ingress_ifindex, LB_REASON_ICMP);
            return LB_FORWARD;
        }
    }
    return XDP_PASS;
}

/* --- entry points ----------------------------------------------------------------------- */

/* Dispatch a TCP/UDP packet of ours to its handler. */
static __always_inline int lb_handle_l4(struct xdp_md *ctx, struct lb_pkt *p, int to_listener)
{
    struct lb_ct_key key = {};
    key.src_ip = p->iph->saddr;
    key.dst_ip = p->iph->daddr;
    key.src_port = *p->sport;
    key.dst_port = *p->dport;
    key.proto = p->proto;

    struct lb_ct_value *ct = conntrack.lookup(&key);
    if (!ct) {
        int act = to_listener ? lb_handle_new(ctx, p, &key, 0) : LB_NOT_OURS;
        if (act != LB_NOT_OURS)
            return act;
        if (p->tcp && lb_hints_live(lb_clock(p))) {
            act = lb_flood_answer(p, &key);
            if (act != LB_NOT_OURS)
                return act;
        }
        /* Checked only for SYNs no listener took: a balanced SYN's reversed tuple is
         * never a finished flow's reply tuple worth a lookup (listener port = target
         * port is common, and this lookup misses the cache like the insert after it). */
        if (lb_is_direct_syn(p))
            lb_forget_finished_reply(p, &key);
        return XDP_PASS;
    }
    __u16 flags = ct->flags;
    if (flags & LB_CT_F_LOCAL)
        return XDP_PASS;                /* a userspace splicer terminates this flow */
    /* Read the clock only for packets we own: it costs about as much as a map lookup. */
    __u64 now = lb_clock(p);
    if (flags & LB_CT_F_REPLY)
        return lb_handle_reply(ctx, p, &key, ct, flags, now);
    /* A new SYN on a finished or aged tuple, or a UDP datagram after the timeout, starts a
     * new flow; everything else keeps its target. */
    int syn = p->tcp && p->tcp->syn && !p->tcp->ack;
    int reuse = (syn && (lb_is_closed(flags) || lb_is_expired(ct, now))) ||
                (p->udp && lb_is_expired(ct, now));
    if (!reuse)
        return lb_handle_established(ctx, p, &key, ct, now);
    /* The old incarnation's reply tuple must not outlive it (the new flow may go to
     * another target); lb_handle_new writes a fresh one for the new target. */
    lb_forget_reply(&key, ct);
    int act = lb_handle_new(ctx, p, &key, 1);
    return act == LB_NOT_OURS ? XDP_PASS : act;
}

int lb_xdp(struct xdp_md *ctx)
{
    struct lb_pkt p = {};
    int act;
    int kind = lb_parse(ctx, &p);
    if (kind == LB_PKT_L4) {
        /* Ours only if it goes to a listener's port or comes from a target's port. */
        int to_listener = lb_port_marked(LB_PORTS_LISTEN_BASE, *p.dport);
        if (!to_listener && !lb_port_marked(LB_PORTS_TARGET_BASE, *p.sport) &&
            !lb_is_direct_syn(&p))
            return XDP_PASS;
        lb_check_partial(ctx, &p);
        act = lb_handle_l4(ctx, &p, to_listener);
    } else if (kind == LB_PKT_ICMP_ERROR) {
        act = lb_handle_icmp(ctx, &p);
    } else if (kind == LB_PKT_FRAGMENT) {
        return lb_pass(ctx->ingress_ifindex, LB_REASON_FRAGMENT);
    } else {
        return XDP_PASS;
    }
    if (act != LB_FORWARD)
        return act;
    return lb_forward(ctx, &p, lb_clock(&p));
}

/* Userspace's way into the one event stream: run with BPF_PROG_TEST_RUN on a buffer that
 * holds a struct lb_event (aged flows from the sweep, spliced connections), it submits the
 * event to the stats ring buffer exactly as the datapath would. Never attached. */
int lb_emit_event(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct lb_event ev;
    if (data + sizeof(ev) > data_end)
        return XDP_ABORTED;
    __builtin_memcpy(&ev, data, sizeof(ev));
    if (stats.ringbuf_output(&ev, sizeof(ev), 0) != 0) {
        lb_count(LB_CTR_EVENTS_LOST);
        return XDP_DROP;
    }
    lb_count(LB_CTR_USER_EVENTS);
    return XDP_PASS;
}

/* The empty program: the benchmark floor, and the XDP program the lab puts on the peers of
 * veths that receive redirected frames (veth only delivers XDP_REDIRECT to a peer with
 * XDP attached). */
int lb_xdp_pass(struct xdp_md *ctx)
{
    return XDP_PASS;
}
