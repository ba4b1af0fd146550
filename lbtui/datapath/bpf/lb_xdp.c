/* lbtui XDP datapath: layer-4 DNAT load balancing with shared conntrack.
 *
 * Packet path: parse -> conntrack lookup -> (reply: restore VIP) |
 * (established: keep target) | (new: source route, else listen entry; weighted pick) ->
 * DNAT with incremental checksums -> bpf_fib_lookup + redirect, else XDP_PASS.
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
BPF_TABLE_PINNED("array", __u32, __u64, counters, LB_COUNTERS_MAX, LB_PIN_DIR "/counters");

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

static __always_inline void lb_count(__u32 slot)
{
    __u64 *v = counters.lookup(&slot);
    if (v)
        __sync_fetch_and_add(v, 1);
}

static __always_inline __u32 lb_setting(__u32 index)
{
    __u32 *v = settings.lookup(&index);
    return v ? *v : 0;
}


#define LB_NS_PER_S 1000000000ULL

/* Timestamps use the coarse monotonic clock: the same epoch as CLOCK_MONOTONIC at tick
 * resolution (a few ms, plenty for idle timeouts), and a cached read instead of a clock
 * source access, which costs ~45 ns per packet in a VM. */
#define lb_now() bpf_ktime_get_coarse_ns()

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

static __always_inline void lb_emit(__u8 type, __u8 reason, const struct lb_ct_key *fkey,
                                    const struct lb_ct_value *v, __u64 now)
{
    struct lb_event *e = stats.ringbuf_reserve(sizeof(struct lb_event));
    if (!e) {
        lb_count(LB_CTR_EVENTS_LOST);
        return;
    }
    e->ts_ns = now;
    e->packets_fwd = v->packets_fwd;
    e->packets_rev = v->packets_rev;
    e->bytes_fwd = v->bytes_fwd;
    e->bytes_rev = v->bytes_rev;
    e->created_ns = v->created_ns;
    e->client_ip = fkey->src_ip;
    e->vip_ip = v->orig_dst_ip;
    e->target_ip = v->nat_dst_ip;
    e->client_port = fkey->src_port;
    e->vip_port = v->orig_dst_port;
    e->target_port = v->nat_dst_port;
    e->type = type;
    e->proto = fkey->proto;
    e->reason = reason;
    e->pad[0] = e->pad[1] = e->pad[2] = 0;
    stats.ringbuf_submit(e, 0);
}

/* Record FIN/RST seen in one direction of a forward flow; emit "closed" once. */
static __always_inline void lb_track_tcp_close(struct lb_pkt *p, const struct lb_ct_key *fkey,
                                               struct lb_ct_value *fct, int reverse, __u64 now)
{
    __u16 bits = 0;
    if (!p->tcp)
        return;
    if (p->tcp->rst)
        bits |= LB_CT_F_RST;
    if (p->tcp->fin)
        bits |= reverse ? LB_CT_F_FIN_REV : LB_CT_F_FIN_FWD;
    if (!bits)
        return;
    __u16 flags = lb_ct_fetch_or_flags(fct, bits) | bits;
    int closed = (flags & LB_CT_F_RST) ||
                 ((flags & LB_CT_F_FIN_FWD) && (flags & LB_CT_F_FIN_REV));
    if (!closed || (flags & LB_CT_F_CLOSE_SENT))
        return;
    if (lb_ct_fetch_or_flags(fct, LB_CT_F_CLOSE_SENT) & LB_CT_F_CLOSE_SENT)
        return;                         /* another CPU won the race to report it */
    lb_count(LB_CTR_FLOWS_CLOSED);
    if ((flags & LB_CT_F_STATS) && lb_setting(LB_SETTING_STATS_ENABLED))
        lb_emit(LB_EVENT_CLOSED, (flags & LB_CT_F_RST) ? LB_CLOSE_RST : LB_CLOSE_FIN,
                fkey, fct, now);
}

static __always_inline void lb_rewrite_dst(struct lb_pkt *p, __be32 ip, __be16 port)
{
    struct iphdr *iph = p->iph;
    if (p->tcp || *p->l4_check) {       /* UDP checksum 0 means "none" and stays 0 */
        lb_csum_replace4(p->l4_check, iph->daddr, ip);
        lb_csum_replace2(p->l4_check, *p->dport, port);
        if (p->udp && *p->l4_check == 0)
            *p->l4_check = 0xffff;
    }
    lb_csum_replace4(&iph->check, iph->daddr, ip);
    iph->daddr = ip;
    *p->dport = port;
}

static __always_inline void lb_rewrite_src(struct lb_pkt *p, __be32 ip, __be16 port)
{
    struct iphdr *iph = p->iph;
    if (p->tcp || *p->l4_check) {
        lb_csum_replace4(p->l4_check, iph->saddr, ip);
        lb_csum_replace2(p->l4_check, *p->sport, port);
        if (p->udp && *p->l4_check == 0)
            *p->l4_check = 0xffff;
    }
    lb_csum_replace4(&iph->check, iph->saddr, ip);
    iph->saddr = ip;
    *p->sport = port;
}

/* Next-hop cache: bpf_fib_lookup is the most expensive step of a forwarded packet (~160 ns
 * in a VM), and a balancer sends most packets to a handful of addresses. Each CPU keeps
 * the last answer per (ingress interface, destination) slot for settings[NH_CACHE_MS]
 * milliseconds; bumping settings[NH_GENERATION] drops them all at once. Internal to the
 * program (not part of the map ABI), so not pinned. */
#define LB_NH_SLOTS 256

struct lb_nh {
    __be32 dst;
    __u32 ifindex_in;
    __u32 ifindex_out;
    __u32 generation;
    __u8 smac[ETH_ALEN];
    __u8 dmac[ETH_ALEN];
    __u32 pad;
    __u64 expires_ns;
};

BPF_PERCPU_ARRAY(nh_cache, struct lb_nh, LB_NH_SLOTS);

static __always_inline int lb_redirect_to(struct lb_pkt *p, const __u8 *smac, const __u8 *dmac,
                                          __u32 ifindex)
{
    lb_ip_decrease_ttl(p->iph);
    __builtin_memcpy(p->eth->h_dest, dmac, ETH_ALEN);
    __builtin_memcpy(p->eth->h_source, smac, ETH_ALEN);
    return bpf_redirect(ifindex, 0);
}

/* Route the rewritten packet ourselves when the kernel knows the next hop; otherwise let
 * the stack forward it. */
static __always_inline int lb_forward(struct xdp_md *ctx, struct lb_pkt *p, __u64 now)
{
    struct bpf_fib_lookup fib = {};
    struct iphdr *iph = p->iph;
    struct lb_nh *nh = NULL;
    __u32 cache_ms, generation = 0;

    if (p->vlan || iph->ttl <= 1)
        return XDP_PASS;                /* VLAN egress / ICMP time exceeded: the stack's job */
    cache_ms = lb_setting(LB_SETTING_NH_CACHE_MS);
    if (cache_ms) {
        __u32 slot = (bpf_ntohl(iph->daddr) ^ (ctx->ingress_ifindex << 5)) & (LB_NH_SLOTS - 1);
        nh = nh_cache.lookup(&slot);
        generation = lb_setting(LB_SETTING_NH_GENERATION);
        if (nh && nh->dst == iph->daddr && nh->ifindex_in == ctx->ingress_ifindex &&
            nh->generation == generation && now < nh->expires_ns)
            return lb_redirect_to(p, nh->smac, nh->dmac, nh->ifindex_out);
    }
    fib.family = LB_AF_INET;
    fib.tos = iph->tos;
    fib.l4_protocol = iph->protocol;
    fib.tot_len = p->ip_len;
    fib.ipv4_src = iph->saddr;
    fib.ipv4_dst = iph->daddr;
    fib.ifindex = ctx->ingress_ifindex;
    if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
        return XDP_PASS;
    if (nh) {
        nh->dst = iph->daddr;
        nh->ifindex_in = ctx->ingress_ifindex;
        nh->ifindex_out = fib.ifindex;
        nh->generation = generation;
        __builtin_memcpy(nh->smac, fib.smac, ETH_ALEN);
        __builtin_memcpy(nh->dmac, fib.dmac, ETH_ALEN);
        nh->expires_ns = now + (__u64)cache_ms * 1000000ULL;
    }
    return lb_redirect_to(p, fib.smac, fib.dmac, fib.ifindex);
}

static __always_inline int lb_is_expired(const struct lb_ct_value *v, __u64 now)
{
    __u32 timeout_s = lb_setting(LB_SETTING_CONN_TIMEOUT_S);
    return timeout_s && now > v->last_seen_ns &&
           now - v->last_seen_ns > (__u64)timeout_s * LB_NS_PER_S;
}

static __always_inline int lb_is_closed(__u16 flags)
{
    return (flags & LB_CT_F_RST) || ((flags & LB_CT_F_FIN_FWD) && (flags & LB_CT_F_FIN_REV));
}

/* A packet from a target back to its client: restore VIP:port as the source. */
static __always_inline int lb_handle_reply(struct xdp_md *ctx, struct lb_pkt *p,
                                           const struct lb_ct_key *key,
                                           struct lb_ct_value *rct, __u64 now)
{
    struct lb_ct_key fkey = {};
    fkey.src_ip = key->dst_ip;
    fkey.dst_ip = rct->orig_dst_ip;
    fkey.src_port = key->dst_port;
    fkey.dst_port = rct->orig_dst_port;
    fkey.proto = key->proto;
    if (rct->last_seen_ns != now)
        rct->last_seen_ns = now;

    /* Count and track only on the forward entry this reply belongs to: after a tuple was
     * re-picked to another target, a straggler from the old target must not touch the new
     * flow (its counters, FIN/RST state or closed event). */
    struct lb_ct_value *fct = conntrack.lookup(&fkey);
    int ours = fct && fct->nat_dst_ip == key->src_ip && fct->nat_dst_port == key->src_port;
    /* A reply tuple outlives its flow until the sweep. If the client then reuses its port
     * to talk to the target directly, the target's SYN-ACK (or UDP answer) must not be
     * dressed up as the VIP: a handshake answer needs a live flow of ours, a UDP answer
     * any flow of ours. Other TCP segments are rewritten even without the forward entry,
     * so a flow survives the LRU evicting that entry. */
    int handshake = p->tcp && p->tcp->syn;
    if ((!ours && (p->udp || handshake)) ||
        (ours && handshake && lb_is_closed(fct->flags))) {
        conntrack.delete((struct lb_ct_key *)key);
        return XDP_PASS;
    }
    if (ours) {
        if (fct->last_seen_ns != now)
            fct->last_seen_ns = now;
        lb_ct_account(&fct->packets_rev, &fct->bytes_rev, p->ip_len);
        if (!(fct->flags & LB_CT_F_SEEN_REPLY))
            lb_ct_fetch_or_flags(fct, LB_CT_F_SEEN_REPLY);
        lb_track_tcp_close(p, &fkey, fct, 1, now);
    }
    lb_rewrite_src(p, rct->orig_dst_ip, rct->orig_dst_port);
    return lb_forward(ctx, p, now);
}

/* First packet of a flow on a listen entry: choose a target, record both tuples. */
static __always_inline int lb_handle_new(struct xdp_md *ctx, struct lb_pkt *p,
                                         const struct lb_ct_key *key)
{
    struct lb_listen_key lkey = {};
    lkey.ifindex = ctx->ingress_ifindex;
    lkey.port = key->dst_port;
    struct lb_route *route = listen.lookup(&lkey);
    if (!route)
        return XDP_PASS;                /* not ours: untouched */
    if ((route->flags & (LB_ROUTE_F_TCP | LB_ROUTE_F_UDP)) &&
        !(route->flags & (p->tcp ? LB_ROUTE_F_TCP : LB_ROUTE_F_UDP)))
        return XDP_PASS;                /* listener is for the other protocol */
    if (route->flags & LB_ROUTE_F_SNI) {
        lb_count(LB_CTR_SNI_PASSED);
        return XDP_PASS;                /* the userspace splicer owns this listener */
    }

    struct lb_lpm_key skey = { .prefixlen = 32, .ip = key->src_ip };
    struct lb_route *sroute = config.lookup(&skey);
    if (sroute)
        route = sroute;

    struct lb_target t = {};
    if (lb_pick(route, lb_flow_hash(key), &t) != 0) {
        lb_count(LB_CTR_NO_TARGET);
        return XDP_PASS;                /* every target drained: the stack refuses it */
    }

    __u64 now = lb_now();
    struct lb_ct_value v = {};
    v.orig_dst_ip = key->dst_ip;
    v.orig_dst_port = key->dst_port;
    v.nat_dst_ip = t.ip;
    v.nat_dst_port = t.port;
    v.created_ns = now;
    v.last_seen_ns = now;
    v.packets_fwd = 1;
    v.bytes_fwd = p->ip_len;
    if (route->flags & LB_ROUTE_F_STATS)
        v.flags = LB_CT_F_STATS;

    struct lb_ct_key rkey = {};
    rkey.src_ip = t.ip;
    rkey.dst_ip = key->src_ip;
    rkey.src_port = t.port;
    rkey.dst_port = key->src_port;
    rkey.proto = key->proto;
    struct lb_ct_value rv = {};
    rv.orig_dst_ip = v.orig_dst_ip;
    rv.orig_dst_port = v.orig_dst_port;
    rv.nat_dst_ip = v.nat_dst_ip;
    rv.nat_dst_port = v.nat_dst_port;
    rv.created_ns = now;
    rv.last_seen_ns = now;
    rv.flags = v.flags | LB_CT_F_REPLY;

    /* Reply entry first: once the forward entry exists, a reply may already be on its way. */
    conntrack.update(&rkey, &rv);
    conntrack.update((struct lb_ct_key *)key, &v);
    lb_count(LB_CTR_FLOWS_CREATED);
    if ((v.flags & LB_CT_F_STATS) && lb_setting(LB_SETTING_STATS_ENABLED))
        lb_emit(LB_EVENT_OPENED, 0, key, &v, now);

    lb_rewrite_dst(p, t.ip, t.port);
    return lb_forward(ctx, p, now);
}

int lb_xdp(struct xdp_md *ctx)
{
    struct lb_pkt p = {};
    if (lb_parse(ctx, &p) != 0)
        return XDP_PASS;

    struct lb_ct_key key = {};
    key.src_ip = p.iph->saddr;
    key.dst_ip = p.iph->daddr;
    key.src_port = *p.sport;
    key.dst_port = *p.dport;
    key.proto = p.proto;
    int syn = p.tcp && p.tcp->syn && !p.tcp->ack;

    struct lb_ct_value *ct = conntrack.lookup(&key);
    if (ct) {
        __u16 flags = ct->flags;
        if (flags & LB_CT_F_LOCAL)
            return XDP_PASS;            /* a userspace splicer terminates this flow */
        /* Read the clock only for packets we own: it costs about as much as a map lookup,
         * and most traffic on a listen interface is not ours. */
        __u64 now = lb_now();
        if (flags & LB_CT_F_REPLY)
            return lb_handle_reply(ctx, &p, &key, ct, now);
        /* A new SYN on a finished or aged tuple, or a UDP datagram after the timeout,
         * starts a new flow; everything else keeps its target. */
        int reuse = (syn && (lb_is_closed(flags) || lb_is_expired(ct, now))) ||
                    (p.udp && lb_is_expired(ct, now));
        if (!reuse) {
            if (ct->last_seen_ns != now)
                ct->last_seen_ns = now;     /* changes once a tick: fewer shared-line writes */
            lb_ct_account(&ct->packets_fwd, &ct->bytes_fwd, p.ip_len);
            lb_track_tcp_close(&p, &key, ct, 0, now);
            lb_rewrite_dst(&p, ct->nat_dst_ip, ct->nat_dst_port);
            return lb_forward(ctx, &p, now);
        }
        /* The old incarnation's reply tuple must not outlive it (the new flow may go to
         * another target); handle_new writes a fresh one for the new target. */
        struct lb_ct_key old_rkey = {};
        old_rkey.src_ip = ct->nat_dst_ip;
        old_rkey.dst_ip = key.src_ip;
        old_rkey.src_port = ct->nat_dst_port;
        old_rkey.dst_port = key.src_port;
        old_rkey.proto = key.proto;
        conntrack.delete(&old_rkey);
    }
    return lb_handle_new(ctx, &p, &key);
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
