/* Internet checksums: incremental updates (RFC 1624: HC' = ~(~HC + ~m + m')), and telling
 * a finished L4 checksum from a partial one.
 *
 * All values are the raw 16/32-bit words as they sit in the packet; the one's complement
 * sum is byte-order independent as long as every operand is taken the same way.
 *
 * Partial checksums: a packet sent by a local socket through a device with checksum
 * offload (veth, by default) carries CHECKSUM_PARTIAL: its L4 checksum field holds only the
 * folded pseudo-header sum, and whoever transmits it last adds the payload. XDP cannot see
 * the skb's flag, so it reads the field: a field equal to the pseudo-header sum is partial
 * (or, once in 65536 packets, a finished checksum that happens to have that value; a full
 * verification tells the two apart). A partial field must be updated without the ports
 * (they are summed at transmit) and without complementing. It must not leave as an XDP
 * frame as it is (the frame drops the skb's flag): the program finishes it first, from the
 * segment's sum it took to verify it (lb_csum_finish), or hands the packet to the stack. */
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

/* A partial field is an uncomplemented sum: add the new word and take away the old. */
static __always_inline void lb_csum_partial_replace4(__u16 *check, __u32 from, __u32 to)
{
    __u16 sum = lb_csum16_add(*check, (__u16)~(from >> 16));
    sum = lb_csum16_add(sum, (__u16)~(from & 0xffff));
    sum = lb_csum16_add(sum, (__u16)(to >> 16));
    *check = lb_csum16_add(sum, (__u16)(to & 0xffff));
}

static __always_inline __u16 lb_fold32(__u32 sum)
{
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return (__u16)sum;
}

/* The folded IPv4 pseudo-header sum: what a partial L4 checksum field holds. */
static __always_inline __u16 lb_pseudo_sum(const struct iphdr *iph, __u8 proto, __u32 l4_len)
{
    __u32 s = (iph->saddr >> 16) + (iph->saddr & 0xffff) + (iph->daddr >> 16) +
              (iph->daddr & 0xffff) + bpf_htons((__u16)proto) + bpf_htons((__u16)l4_len);
    return lb_fold32(s);
}

/* Longest L4 segment whose checksum the program verifies; longer ones (segmentation
 * offload super-packets, which are always partial, or jumbo frames) are taken as partial
 * when their field holds the pseudo-header sum. */
#define LB_CSUM_VERIFY_MAX 2048

/* One's complement sum of the L4 segment [l4, l4 + len) as raw words, folded; -1 when the
 * segment is too long to verify. Eight bytes at a time, then the tail.
 *
 * Offsets are computed as len - left, which the verifier cannot reduce to a constant: the
 * pointers it checks are then its own (a variable offset gets a fresh id), so verifying
 * this loop widens no other packet pointer's checked range and the rest of the program is
 * verified once, not once per loop exit. */
static __always_inline int lb_l4_sum(void *l4, __u32 len, void *data_end)
{
    __u64 acc = 0;
    __u32 left = len;
    if (len > LB_CSUM_VERIFY_MAX)
        return -1;
    for (int i = 0; i < LB_CSUM_VERIFY_MAX / 8; i++) {
        /* Opaque to the compiler: it would otherwise turn the offset into an induction
         * variable (constant offsets again) and hoist the bounds check into arithmetic on
         * data_end, which the verifier refuses. */
        asm volatile("" : "+r"(left));
        if (left < 8)
            break;
        __u32 off = len - left;
        __u64 *w = l4 + (off & 0xfff);
        void *next = w + 1;
        asm volatile("" : "+r"(next));
        if (next > data_end)
            return -1;
        __u64 x = *w;
        acc += (x & 0xffffffff) + (x >> 32);   /* 32-bit halves: no carry is lost */
        left -= 8;
    }
    __u8 *tail = l4 + ((len - left) & 0xfff);
    if (left >= 4) {
        if ((void *)(tail + 4) > data_end)
            return -1;
        acc += *(__u32 *)tail;
        tail += 4;
        left -= 4;
    }
    if (left >= 2) {
        if ((void *)(tail + 2) > data_end)
            return -1;
        acc += *(__u16 *)tail;
        tail += 2;
        left -= 2;
    }
    if (left == 1) {
        if ((void *)(tail + 1) > data_end)
            return -1;
        acc += *tail;                   /* odd byte: padded with a zero byte after it */
    }
    acc = (acc & 0xffffffff) + (acc >> 32);
    acc = (acc & 0xffffffff) + (acc >> 32);
    return lb_fold32((__u32)acc);
}

#define LB_CSUM_FINISHED 0       /* a finished checksum (or UDP without one) */
#define LB_CSUM_PARTIAL  1       /* partial; *rest holds the sum of the rest of the segment */
#define LB_CSUM_TOO_LONG 2       /* taken for partial, too long to sum: not finishable */

/* Classify the L4 checksum field (see the top of this file). For a partial field, *rest
 * is the one's complement sum of the segment without the field: what finishing it needs. */
static __always_inline int lb_csum_classify(const struct iphdr *iph, __u8 proto,
                                            __u16 *check, void *l4, __u32 l4_len,
                                            void *data_end, __u16 *rest)
{
    if (proto == IPPROTO_UDP && *check == 0)
        return LB_CSUM_FINISHED;        /* UDP without a checksum */
    __u16 pseudo = lb_pseudo_sum(iph, proto, l4_len);
    if (*check != pseudo)
        return LB_CSUM_FINISHED;
    int sum = lb_l4_sum(l4, l4_len, data_end);
    if (sum < 0)
        return LB_CSUM_TOO_LONG;
    if (lb_csum16_add((__u16)sum, pseudo) == 0xffff)
        return LB_CSUM_FINISHED;        /* a finished checksum equal to the pseudo sum */
    *rest = lb_csum16_add((__u16)sum, (__u16)~pseudo);   /* the segment minus its field */
    return LB_CSUM_PARTIAL;
}

/* Finish a partial field whose segment, apart from the field, sums to ``rest``: the field
 * holds the pseudo-header sum, so the finished checksum is the complement of both. */
static __always_inline void lb_csum_finish(__u16 *check, __u16 rest, __u8 proto)
{
    __u16 c = (__u16)~lb_csum16_add(*check, rest);
    *check = (proto == IPPROTO_UDP && c == 0) ? 0xffff : c;   /* UDP: 0 means "none" */
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
