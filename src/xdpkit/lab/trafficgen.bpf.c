// SPDX-License-Identifier: GPL-2.0
/* The live-frames traffic generator. BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES runs this
 * on a template frame; each run rewrites the flow fields and redirects the frame out.
 *
 * Pages are recycled between runs, so a run may see the previous run's edits (ours, and a
 * receiver's: a veth peer's XDP program works on our pages). So the template's headers are
 * written whole into every frame: Ethernet (an encapsulating receiver writes its outer header
 * over it), IP and L4 (a router decrements the TTL and fixes the checksum: without this, frames
 * reached a forwarder with TTL 1 after a few rounds). Flow fields are then written as absolute
 * values and checksums updated incrementally (RFC 1624).
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "trafficgen.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tg_config);
} tg_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TG_NCOUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} tg_counters SEC(".maps");

static __always_inline __u16 csum_fold_add(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

/* RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m') on 16-bit words (network order in memory). */
static __always_inline void csum_replace16(__u16 *csum, __u16 old, __u16 new)
{
	__u32 sum = (__u16)~*csum;

	sum += (__u16)~old;
	sum += new;
	*csum = ~csum_fold_add(sum);
}

static __always_inline void csum_replace32(__u16 *csum, __u32 old, __u32 new)
{
	csum_replace16(csum, old & 0xffff, new & 0xffff);
	csum_replace16(csum, old >> 16, new >> 16);
}

/* Copy n (a constant) bytes in 8-, 4- and 2-byte words. __builtin_memcpy to a packet compiles to
 * byte copies (clang cannot know the alignment), 6 ns a frame for 42 bytes; x86 and arm64 take
 * unaligned words at full speed and the verifier (no strict alignment) accepts them. */
static __always_inline void tg_copy(void *dst, const void *src, const int n)
{
	int i = 0;

#pragma unroll
	for (; i + 8 <= n; i += 8)
		*(__u64 *)(dst + i) = *(const __u64 *)(src + i);
	if (i + 4 <= n) {
		*(__u32 *)(dst + i) = *(const __u32 *)(src + i);
		i += 4;
	}
	if (i + 2 <= n)
		*(__u16 *)(dst + i) = *(const __u16 *)(src + i);
}

SEC("xdp")
int xdpkit_trafficgen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0, sent = TG_SENT, seqk = TG_SEQ;
	struct tg_config *cfg = bpf_map_lookup_elem(&tg_config, &zero);
	__u64 *nsent = bpf_map_lookup_elem(&tg_counters, &sent);
	__u64 *seq = bpf_map_lookup_elem(&tg_counters, &seqk);
	__u16 *l4csum = NULL;
	__u32 flow, nports, sport_i, dport_i, ip_i;

	if (!cfg || !nsent || !seq)
		return XDP_ABORTED;
	if (data + sizeof(cfg->eth) > end)
		return XDP_ABORTED;
	tg_copy(data, cfg->eth, sizeof(cfg->eth));
	/* constant sizes: a copy the verifier checks once per case */
#define TG_RESTORE(n)                                                   \
	case n:                                                         \
		if (data + 14 + n > end)                                \
			return XDP_ABORTED;                             \
		tg_copy(data + 14, cfg->hdr, n);                        \
		break
	switch (cfg->hdr_len) {
	TG_RESTORE(28);  /* IPv4 + UDP or ICMP */
	TG_RESTORE(40);  /* IPv4 + TCP */
	TG_RESTORE(48);  /* IPv6 + UDP or ICMPv6 */
	TG_RESTORE(60);  /* IPv6 + TCP */
	default:
		break;
	}
#undef TG_RESTORE
	flow = (*seq)++;
	nports = (__u32)cfg->sport_count * cfg->dport_count;
	if (!nports || !cfg->ip_count)
		return XDP_ABORTED;
	sport_i = flow % cfg->sport_count;
	dport_i = (flow / cfg->sport_count) % cfg->dport_count;
	ip_i = (flow / nports) % cfg->ip_count;

	/* Locate the L4 checksum (UDP with checksum 0 stays 0: "no checksum"). */
	if (cfg->l4_off < 512) {
		void *l4 = data + cfg->l4_off;

		if (cfg->l4_proto == IPPROTO_UDP && l4 + 8 <= end) {
			l4csum = l4 + 6;
			if (*l4csum == 0)
				l4csum = NULL;
		} else if (cfg->l4_proto == IPPROTO_TCP && l4 + 20 <= end) {
			l4csum = l4 + 16;
		} else if (cfg->l4_proto == IPPROTO_ICMPV6 && l4 + 4 <= end) {
			l4csum = l4 + 2;
		}
	}

	if ((cfg->flags & TG_VARY_SRC_IP) && cfg->l3_off < 256) {
		void *l3 = data + cfg->l3_off;
		__u32 new_ip = bpf_htonl(cfg->ip_base + ip_i);

		if (cfg->flags & TG_IPV6) {
			/* last 32 bits of the IPv6 source address (offset 8 + 12) */
			__u32 *src = l3 + 20;

			if ((void *)(src + 1) > end)
				return XDP_ABORTED;
			if (l4csum)
				csum_replace32(l4csum, *src, new_ip);
			*src = new_ip;
		} else {
			__u32 *src = l3 + 12;
			__u16 *ipcsum = l3 + 10;

			if ((void *)(src + 1) > end)
				return XDP_ABORTED;
			csum_replace32(ipcsum, *src, new_ip);
			if (l4csum && cfg->l4_proto != IPPROTO_ICMP)
				csum_replace32(l4csum, *src, new_ip);
			*src = new_ip;
		}
	}

	if ((cfg->flags & (TG_VARY_SPORT | TG_VARY_DPORT)) &&
	    (cfg->l4_proto == IPPROTO_UDP || cfg->l4_proto == IPPROTO_TCP) && cfg->l4_off < 512) {
		__u16 *ports = data + cfg->l4_off;

		if ((void *)(ports + 2) > end)
			return XDP_ABORTED;
		if (cfg->flags & TG_VARY_SPORT) {
			__u16 p = bpf_htons(cfg->sport_base + sport_i);

			if (l4csum)
				csum_replace16(l4csum, ports[0], p);
			ports[0] = p;
		}
		if (cfg->flags & TG_VARY_DPORT) {
			__u16 p = bpf_htons(cfg->dport_base + dport_i);

			if (l4csum)
				csum_replace16(l4csum, ports[1], p);
			ports[1] = p;
		}
	}

	*nsent += 1;
	return bpf_redirect(cfg->ifindex_out, 0);
}

char _license[] SEC("license") = "GPL";
