/* Packet parsing: Ethernet (one optional VLAN tag), IPv4 honouring IHL, TCP honouring its
 * data offset, UDP, and ICMP errors that quote a TCP or UDP packet. Anything we cannot parse
 * completely is reported as not ours, so the caller passes it to the stack untouched. */
#ifndef LBTUI_LB_PARSE_H
#define LBTUI_LB_PARSE_H

#define LB_ETH_P_IP     0x0800
#define LB_ETH_P_8021Q  0x8100
#define LB_ETH_P_8021AD 0x88A8
#define LB_IP_MF        0x2000
#define LB_IP_OFFSET    0x1FFF
#define LB_IPPROTO_ICMP 1
#define LB_ICMP_DEST_UNREACH  3
#define LB_ICMP_TIME_EXCEEDED 11

enum lb_parse_result {
    LB_PKT_L4 = 0,        /* a complete, unfragmented IPv4 TCP or UDP packet */
    LB_PKT_OTHER,         /* not ours to look at: pass untouched */
    LB_PKT_FRAGMENT,      /* an IPv4 fragment: no (or only a partial) L4 header */
    LB_PKT_ICMP_ERROR,    /* an ICMP error quoting an IPv4 TCP/UDP packet */
};

struct lb_vlan_hdr {
    __be16 tci;
    __be16 encapsulated_proto;
};

/* The fixed part of an ICMP message: type, code, checksum, 4 bytes of rest. */
struct lb_icmp_hdr {
    __u8 type;
    __u8 code;
    __u16 check;
    __u32 rest;
};

struct lb_pkt {
    struct ethhdr *eth;
    struct iphdr *iph;
    struct tcphdr *tcp;      /* NULL for UDP */
    struct udphdr *udp;      /* NULL for TCP */
    void *l4;                /* the TCP or UDP header */
    __be16 *sport;
    __be16 *dport;
    __u16 *l4_check;
    __u32 ip_len;            /* IPv4 total length: the byte count of this packet */
    __u32 l4_len;            /* IPv4 total length minus the IP header */
    __u8 proto;
    __u8 vlan;
    __u8 options;            /* the IP header carries options (IHL > 5) */
    __u8 partial;            /* the L4 checksum is partial (set by lb_check_partial) */
    __u8 completable;        /* partial, and l4_rest holds the rest of the segment's sum */
    __u16 l4_rest;           /* partial: one's complement sum of the L4 segment without its
                              * checksum field, kept current through the rewrite */
    /* ICMP errors: the quoted packet. sport/dport/proto above then describe it, and
     * l4_check points at its L4 checksum when the quote is long enough (else NULL). */
    struct lb_icmp_hdr *icmp;
    struct iphdr *inner;
    __u64 now;               /* the clock, read at most once per packet (lb_clock) */
    /* A reply's source before the translation (set by lb_handle_reply): put back when the
     * packet is too big for its egress, so the stack's "fragmentation needed" goes to the
     * target about its own flow, not to the VIP (a local address, where it is lost). */
    __be32 reply_src_ip;
    __be16 reply_src_port;
    __u8 is_reply;
};

/* Parse the quoted IPv4 header and the first 8 bytes of its TCP/UDP header (all an ICMP
 * error must carry; RFC 792). */
static __always_inline int lb_parse_icmp_error(struct lb_pkt *p, void *l4, void *data_end)
{
    struct lb_icmp_hdr *icmp = l4;
    if ((void *)(icmp + 1) > data_end)
        return LB_PKT_OTHER;
    if (icmp->type != LB_ICMP_DEST_UNREACH && icmp->type != LB_ICMP_TIME_EXCEEDED)
        return LB_PKT_OTHER;
    struct iphdr *in = (void *)(icmp + 1);
    if ((void *)(in + 1) > data_end)
        return LB_PKT_OTHER;
    if (in->version != 4 || in->ihl < 5)
        return LB_PKT_OTHER;
    if (in->frag_off & bpf_htons(LB_IP_OFFSET))
        return LB_PKT_OTHER;            /* quotes a later fragment: no ports */
    __u32 ihl = in->ihl * 4;
    __be16 *ports = (void *)in + ihl;
    if ((void *)(ports + 4) > data_end)
        return LB_PKT_OTHER;
    p->icmp = icmp;
    p->inner = in;
    p->proto = in->protocol;
    p->sport = &ports[0];
    p->dport = &ports[1];
    p->l4_check = NULL;
    p->tcp = NULL;
    p->udp = NULL;
    if (in->protocol == IPPROTO_UDP) {
        p->l4_check = &ports[3];
        return LB_PKT_ICMP_ERROR;
    }
    if (in->protocol == IPPROTO_TCP) {
        struct tcphdr *tcp = (void *)ports;
        if ((void *)(tcp + 1) <= data_end)
            p->l4_check = &tcp->check;  /* quoted beyond the 8 required bytes */
        return LB_PKT_ICMP_ERROR;
    }
    return LB_PKT_OTHER;
}

static __always_inline int lb_parse(struct xdp_md *ctx, struct lb_pkt *p)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    __u16 h_proto;
    __u32 off = sizeof(*eth);

    if ((void *)(eth + 1) > data_end)
        return LB_PKT_OTHER;
    h_proto = eth->h_proto;
    p->vlan = 0;
    if (h_proto == bpf_htons(LB_ETH_P_8021Q) || h_proto == bpf_htons(LB_ETH_P_8021AD)) {
        struct lb_vlan_hdr *vh = data + off;
        if ((void *)(vh + 1) > data_end)
            return LB_PKT_OTHER;
        h_proto = vh->encapsulated_proto;
        off += sizeof(*vh);
        p->vlan = 1;
    }
    if (h_proto != bpf_htons(LB_ETH_P_IP))
        return LB_PKT_OTHER;

    struct iphdr *iph = data + off;
    if ((void *)(iph + 1) > data_end)
        return LB_PKT_OTHER;
    if (iph->version != 4 || iph->ihl < 5)
        return LB_PKT_OTHER;
    __u32 ihl = iph->ihl * 4;
    __u32 tot_len = bpf_ntohs(iph->tot_len);
    if (tot_len < ihl || (void *)iph + tot_len > data_end)
        return LB_PKT_OTHER;            /* truncated or lying length */
    if (iph->frag_off & bpf_htons(LB_IP_MF | LB_IP_OFFSET))
        return LB_PKT_FRAGMENT;

    void *l4 = (void *)iph + ihl;
    p->eth = eth;
    p->iph = iph;
    p->ip_len = tot_len;
    p->l4_len = tot_len - ihl;
    p->options = ihl > 20;
    p->proto = iph->protocol;
    p->icmp = NULL;
    p->inner = NULL;
    if (iph->protocol == IPPROTO_TCP) {
        struct tcphdr *tcp = l4;
        if ((void *)(tcp + 1) > data_end)
            return LB_PKT_OTHER;
        __u32 doff = tcp->doff * 4;
        if (doff < sizeof(*tcp) || ihl + doff > tot_len)
            return LB_PKT_OTHER;
        p->tcp = tcp;
        p->udp = NULL;
        p->l4 = l4;
        p->sport = &tcp->source;
        p->dport = &tcp->dest;
        p->l4_check = &tcp->check;
        return LB_PKT_L4;
    }
    if (iph->protocol == IPPROTO_UDP) {
        struct udphdr *udp = l4;
        if ((void *)(udp + 1) > data_end)
            return LB_PKT_OTHER;
        if (ihl + sizeof(*udp) > tot_len)
            return LB_PKT_OTHER;
        p->tcp = NULL;
        p->udp = udp;
        p->l4 = l4;
        p->sport = &udp->source;
        p->dport = &udp->dest;
        p->l4_check = &udp->check;
        return LB_PKT_L4;
    }
    if (iph->protocol == LB_IPPROTO_ICMP)
        return lb_parse_icmp_error(p, l4, data_end);
    return LB_PKT_OTHER;
}

#endif /* LBTUI_LB_PARSE_H */
