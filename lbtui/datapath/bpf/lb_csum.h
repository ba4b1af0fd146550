/* Incremental Internet checksum updates (RFC 1624: HC' = ~(~HC + ~m + m')).
 *
 * All values are the raw 16/32-bit words as they sit in the packet; the one's complement
 * sum is byte-order independent as long as every operand is taken the same way. */
#ifndef LBTUI_LB_CSUM_H
#define LBTUI_LB_CSUM_H

static __always_inline __u16 lb_csum16_add(__u16 a, __u16 b)
{
    __u32 sum = (__u32)a + (__u32)b;
    return (__u16)(sum + (sum >> 16));
}

static __always_inline void lb_csum_replace2(__u16 *check, __u16 from, __u16 to)
{
    __u16 sum = lb_csum16_add(lb_csum16_add((__u16)~*check, (__u16)~from), to);
    *check = (__u16)~sum;
}

static __always_inline void lb_csum_replace4(__u16 *check, __u32 from, __u32 to)
{
    lb_csum_replace2(check, (__u16)(from >> 16), (__u16)(to >> 16));
    lb_csum_replace2(check, (__u16)(from & 0xffff), (__u16)(to & 0xffff));
}

/* The kernel's ip_decrease_ttl(): TTL sits in the high byte of its 16-bit word. */
static __always_inline void lb_ip_decrease_ttl(struct iphdr *iph)
{
    __u32 check = (__u32)iph->check;
    check += (__u32)bpf_htons(0x0100);
    iph->check = (__u16)(check + (check >= 0xFFFF));
    iph->ttl--;
}

#endif /* LBTUI_LB_CSUM_H */
