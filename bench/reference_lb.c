/* A minimal Katran-shaped XDP balancer, written to be timed beside lbtui's program
 * (bench/datapath.py): the least a one-entry conntrack design does per packet on this
 * machine. It is not Katran (not available offline here) and not a usable balancer.
 *
 * Client side (ref_one, ref_two; ref_no_insert, a probe): parse Ethernet/IPv4/TCP; look the destination VIP:port up
 * in a small hash (Katran's vip_map); look the 5-tuple up in one LRU hash (the conntrack,
 * lbtui's key layout, Katran's 16 B value); on a miss pick a target from the VIP's ring
 * (Katran's ch_rings: an array slot chosen by a jhash of the flow, naming an entry of the
 * reals array) and insert the flow (ref_two also inserts the reply tuple, as lbtui does);
 * rewrite the destination with incremental checksums (lbtui's helpers) and send the
 * frame back out with XDP_TX after swapping the MACs.
 *
 * Target side (ref_reply, a program of its own as on a backend-facing interface): look the
 * reply tuple up in the same LRU; on a hit restore the VIP as the source, XDP_TX.
 *
 * What it leaves out, which lbtui does: no fib lookup or next-hop cache (XDP_TX instead of
 * a devmap redirect), no TTL, no checksum classification (partial checksums), no flags,
 * counters, clock or events, no TCP state, no fragments/options/VLAN/ICMP/UDP handling.
 * Katran itself encapsulates (IPIP) instead of rewriting and skips the LRU lookup for SYNs.
 *
 * Compiled by BCC with REF_CT_SIZE (entries), REF_CT_FLAGS (0 or BPF_F_NO_COMMON_LRU). */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/tcp.h>

#include "lb_abi.h"
#include "lb_csum.h"

#define REF_RING_SIZE 65537     /* Katran's default ring size (a prime) */
#define REF_MAX_VIPS 4
#define REF_MAX_REALS 16

/* The conntrack key is lbtui's own (lb_abi.h), so both tables hash the same bytes. */

struct ref_value {              /* Katran's real_pos_lru: the target and an access time */
    __be32 ip;
    __be16 port;
    __u16 pad;
    __u64 atime;                /* Katran fills it for UDP only: left 0 here */
};

struct ref_vip_key {
    __be32 ip;
    __be16 port;
    __u8 proto;
    __u8 pad;
};

struct ref_vip_meta {
    __u32 flags;
    __u32 vip_num;              /* which ring */
};

struct ref_real {
    __be32 ip;
    __be16 port;
    __u16 pad;
};

BPF_F_TABLE("lru_hash", struct lb_ct_key, struct ref_value, ref_ct, REF_CT_SIZE, REF_CT_FLAGS);
BPF_HASH(ref_vips, struct ref_vip_key, struct ref_vip_meta, 64);
BPF_ARRAY(ref_rings, __u32, REF_RING_SIZE * REF_MAX_VIPS);
BPF_ARRAY(ref_reals, struct ref_real, REF_MAX_REALS);

static __always_inline __u32 ref_rol32(__u32 w, int s)
{
    return (w << s) | (w >> (32 - s));
}

/* The kernel's jhash_3words (as Katran hashes a flow). */
static __always_inline __u32 ref_jhash_3words(__u32 a, __u32 b, __u32 c, __u32 initval)
{
    a += 0xdeadbeef + initval;
    b += 0xdeadbeef + initval;
    c += 0xdeadbeef + initval;
    c ^= b; c -= ref_rol32(b, 14);
    a ^= c; a -= ref_rol32(c, 11);
    b ^= a; b -= ref_rol32(a, 25);
    c ^= b; c -= ref_rol32(b, 16);
    a ^= c; a -= ref_rol32(c, 4);
    b ^= a; b -= ref_rol32(a, 14);
    c ^= b; c -= ref_rol32(b, 24);
    return c;
}

/* Ethernet/IPv4 without options, not a fragment/TCP: the headers, or -1 (not ours). */
static __always_inline int ref_parse(struct xdp_md *ctx, struct ethhdr **eth,
                                     struct iphdr **iph, struct tcphdr **th)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *e = data;
    if ((void *)(e + 1) > end || e->h_proto != bpf_htons(ETH_P_IP))
        return -1;
    struct iphdr *ip = (void *)(e + 1);
    if ((void *)(ip + 1) > end || ip->ihl != 5 || ip->protocol != IPPROTO_TCP ||
        (ip->frag_off & bpf_htons(0x3fff)))
        return -1;
    struct tcphdr *t = (void *)(ip + 1);
    if ((void *)(t + 1) > end)
        return -1;
    *eth = e;
    *iph = ip;
    *th = t;
    return 0;
}

static __always_inline int ref_tx(struct ethhdr *eth)
{
    unsigned char mac[ETH_ALEN];
    __builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
    __builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
    __builtin_memcpy(eth->h_source, mac, ETH_ALEN);
    return XDP_TX;
}

/* Rewrite one address and port (destination or source) with incremental checksums. */
static __always_inline void ref_rewrite(struct iphdr *iph, struct tcphdr *th, __be32 *addr,
                                        __be16 *port, __be32 ip, __be16 new_port)
{
    lb_csum_replace4(&iph->check, *addr, ip);
    lb_csum_replace4(&th->check, *addr, ip);
    lb_csum_replace2(&th->check, *port, new_port);
    *addr = ip;
    *port = new_port;
}

static __always_inline int ref_forward(struct xdp_md *ctx, int inserts)
{
    struct ethhdr *eth;
    struct iphdr *iph;
    struct tcphdr *th;
    if (ref_parse(ctx, &eth, &iph, &th) < 0)
        return XDP_PASS;
    struct ref_vip_key vk = {.ip = iph->daddr, .port = th->dest, .proto = IPPROTO_TCP};
    struct ref_vip_meta *vip = ref_vips.lookup(&vk);
    if (!vip)
        return XDP_PASS;
    struct lb_ct_key key = {.src_ip = iph->saddr, .dst_ip = iph->daddr, .src_port = th->source,
                          .dst_port = th->dest, .proto = IPPROTO_TCP};
    struct ref_value *v = ref_ct.lookup(&key);
    __be32 ip;
    __be16 port;
    if (v) {
        ip = v->ip;
        port = v->port;
    } else {
        __u32 h = ref_jhash_3words(key.src_ip, key.dst_ip,
                                   ((__u32)key.src_port << 16) | key.dst_port, IPPROTO_TCP);
        __u32 slot = vip->vip_num * REF_RING_SIZE + h % REF_RING_SIZE;
        __u32 *pos = ref_rings.lookup(&slot);
        if (!pos)
            return XDP_DROP;
        struct ref_real *r = ref_reals.lookup(pos);
        if (!r || !r->ip)
            return XDP_DROP;
        ip = r->ip;
        port = r->port;
        struct ref_value nv = {.ip = ip, .port = port};
        if (inserts >= 1)
            ref_ct.update(&key, &nv);
        if (inserts == 2) {
            struct lb_ct_key rk = {.src_ip = ip, .dst_ip = key.src_ip, .src_port = port,
                                 .dst_port = key.src_port, .proto = IPPROTO_TCP};
            struct ref_value rv = {.ip = key.dst_ip, .port = key.dst_port};
            ref_ct.update(&rk, &rv);
        }
    }
    ref_rewrite(iph, th, &iph->daddr, &th->dest, ip, port);
    return ref_tx(eth);
}

/* A probe, not a balancer: everything a new flow does but the insert (the miss, the pick,
 * the rewrite), to tell the miss from the insert. */
int ref_no_insert(struct xdp_md *ctx)
{
    return ref_forward(ctx, 0);
}

int ref_one(struct xdp_md *ctx)
{
    return ref_forward(ctx, 1);
}

int ref_two(struct xdp_md *ctx)
{
    return ref_forward(ctx, 2);
}

int ref_reply(struct xdp_md *ctx)
{
    struct ethhdr *eth;
    struct iphdr *iph;
    struct tcphdr *th;
    if (ref_parse(ctx, &eth, &iph, &th) < 0)
        return XDP_PASS;
    struct lb_ct_key key = {.src_ip = iph->saddr, .dst_ip = iph->daddr, .src_port = th->source,
                          .dst_port = th->dest, .proto = IPPROTO_TCP};
    struct ref_value *v = ref_ct.lookup(&key);
    if (!v)
        return XDP_PASS;
    __be32 ip = v->ip;
    __be16 port = v->port;
    ref_rewrite(iph, th, &iph->saddr, &th->source, ip, port);
    return ref_tx(eth);
}
