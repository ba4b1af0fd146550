/* lbtui SNI splicer relay: moves bytes between a client socket and its backend socket
 * inside the kernel (sockmap), so the userspace splicer never copies the stream.
 *
 * Both sockets of a spliced connection sit in `socks` (a SOCKHASH keyed by socket cookie)
 * and `peers` maps each socket's cookie to its partner's. This program is attached to
 * `socks` as the stream verdict (BPF_SK_SKB_STREAM_VERDICT, no parser): every skb a member
 * socket receives is redirected to the egress of its peer. Data that cannot be redirected
 * (no peer entry, or the peer is not in the sockhash) stays on its socket (SK_PASS), where
 * the splicer's set-up check finds it.
 *
 * BCC notes: use the table method socks.sk_redirect_hash (BCC does not
 * rewrite &socks passed to the raw helper); BCC 0.26's Python Table does not know SOCKHASH,
 * so userspace updates it through the map fd. The loader defines SPLICE_MAX_SOCKS. */
#include <uapi/linux/bpf.h>

#ifndef SPLICE_MAX_SOCKS
#define SPLICE_MAX_SOCKS 65536
#endif

#define SPLICE_CTR_BYTES    0   /* bytes redirected to a peer */
#define SPLICE_CTR_SKBS     1   /* skbs redirected */
#define SPLICE_CTR_NO_PEER  2   /* skbs whose peer was not in the sockhash (kept) */
#define SPLICE_CTR_PASSED   3   /* skbs kept for userspace (no peer entry yet) */
#define SPLICE_CTR_EMPTY    4   /* zero-length skbs (a bare FIN) dropped */
#define SPLICE_CTR_MAX      5

BPF_SOCKHASH(socks, __u64, SPLICE_MAX_SOCKS);
BPF_HASH(peers, __u64, __u64, SPLICE_MAX_SOCKS);
BPF_PERCPU_ARRAY(splice_counters, __u64, SPLICE_CTR_MAX);

static __always_inline void splice_count(__u32 slot, __u64 n)
{
    __u64 *v = splice_counters.lookup(&slot);
    if (v)
        *v += n;                        /* per-CPU slot: no atomics needed */
}

int splice_verdict(struct __sk_buff *skb)
{
    /* A bare FIN reaches the verdict as a zero-length skb. Redirected, the peer's send
     * backlog would fail on it and mark the peer socket EPIPE (the backlog treats a
     * 0-byte send as an error). The FIN itself is already in the TCP state (RCV_SHUTDOWN,
     * seen by the splicer as EPOLLRDHUP), which passes it on after the data. */
    if (skb->len == 0) {
        splice_count(SPLICE_CTR_EMPTY, 1);
        return SK_DROP;
    }
    __u64 cookie = bpf_get_socket_cookie(skb);
    __u64 *peer = peers.lookup(&cookie);
    if (!peer) {
        splice_count(SPLICE_CTR_PASSED, 1);
        return SK_PASS;
    }
    __u64 key = *peer;
    __u32 len = skb->len;
    if (socks.sk_redirect_hash(skb, &key, 0) == SK_PASS) {
        splice_count(SPLICE_CTR_BYTES, len);
        splice_count(SPLICE_CTR_SKBS, 1);
        return SK_PASS;
    }
    /* The peer is not (or no longer) in the sockhash: keep the data on this socket, where
     * the splicer can see it (recv) rather than losing it silently. */
    splice_count(SPLICE_CTR_NO_PEER, 1);
    return SK_PASS;
}
