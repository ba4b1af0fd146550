/* Packet parsing: Ethernet (one optional VLAN tag), IPv4 honouring IHL, TCP honouring its
 * data offset, UDP. Anything we cannot parse completely is reported as not ours, so the
 * caller passes it to the stack untouched. */
#ifndef LBTUI_LB_PARSE_H
#define LBTUI_LB_PARSE_H

#define LB_ETH_P_IP     0x0800
#define LB_ETH_P_8021Q  0x8100
#define LB_ETH_P_8021AD 0x88A8
#define LB_IP_MF        0x2000
#define LB_IP_OFFSET    0x1FFF

struct lb_vlan_hdr {
    __be16 tci;
    __be16 encapsulated_proto;
};

struct lb_pkt {
    struct ethhdr *eth;
    struct iphdr *iph;
    struct tcphdr *tcp;      /* NULL for UDP */
    struct udphdr *udp;      /* NULL for TCP */
    __be16 *sport;
    __be16 *dport;
    __u16 *l4_check;
    __u32 ip_len;            /* IPv4 total length: the byte count of this packet */
    __u8 proto;
    __u8 vlan;
};

/* Returns 0 when the packet is a complete, unfragmented IPv4 TCP or UDP packet. */
static __always_inline int lb_parse(struct xdp_md *ctx, struct lb_pkt *p)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    __u16 h_proto;
    __u32 off = sizeof(*eth);

    if ((void *)(eth + 1) > data_end)
        return -1;
    h_proto = eth->h_proto;
    p->vlan = 0;
    if (h_proto == bpf_htons(LB_ETH_P_8021Q) || h_proto == bpf_htons(LB_ETH_P_8021AD)) {
        struct lb_vlan_hdr *vh = data + off;
        if ((void *)(vh + 1) > data_end)
            return -1;
        h_proto = vh->encapsulated_proto;
        off += sizeof(*vh);
        p->vlan = 1;
    }
    if (h_proto != bpf_htons(LB_ETH_P_IP))
        return -1;

    struct iphdr *iph = data + off;
    if ((void *)(iph + 1) > data_end)
        return -1;
    if (iph->version != 4 || iph->ihl < 5)
        return -1;
    __u32 ihl = iph->ihl * 4;
    __u32 tot_len = bpf_ntohs(iph->tot_len);
    if (tot_len < ihl || (void *)iph + tot_len > data_end)
        return -1;                      /* truncated or lying length */
    if (iph->frag_off & bpf_htons(LB_IP_MF | LB_IP_OFFSET))
        return -1;                      /* fragments carry no (or partial) L4 header */

    void *l4 = (void *)iph + ihl;
    p->eth = eth;
    p->iph = iph;
    p->ip_len = tot_len;
    p->proto = iph->protocol;
    if (iph->protocol == IPPROTO_TCP) {
        struct tcphdr *tcp = l4;
        if ((void *)(tcp + 1) > data_end)
            return -1;
        __u32 doff = tcp->doff * 4;
        if (doff < sizeof(*tcp) || ihl + doff > tot_len)
            return -1;
        p->tcp = tcp;
        p->udp = NULL;
        p->sport = &tcp->source;
        p->dport = &tcp->dest;
        p->l4_check = &tcp->check;
        return 0;
    }
    if (iph->protocol == IPPROTO_UDP) {
        struct udphdr *udp = l4;
        if ((void *)(udp + 1) > data_end)
            return -1;
        if (ihl + sizeof(*udp) > tot_len)
            return -1;
        p->tcp = NULL;
        p->udp = udp;
        p->sport = &udp->source;
        p->dport = &udp->dest;
        p->l4_check = &udp->check;
        return 0;
    }
    return -1;
}

#endif /* LBTUI_LB_PARSE_H */
