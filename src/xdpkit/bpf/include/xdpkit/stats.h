/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* xdpkit shared traffic counters: the convention every xdpkit program follows so that
 * `xdpkit stats IFACE` and `xdpkit exporter` can read any xdpkit app in place, without
 * replacing it. Python finds the maps by name among the attached program's maps.
 *
 * Usage (one line at each return):
 *
 *	#include <xdpkit/stats.h>
 *	...
 *	return xdpkit_stats_record(ctx, XDP_DROP);     // parses, counts etype+proto+verdict
 *	return xdpkit_stats_verdict(ctx, XDP_PASS);    // cheapest: verdict only
 *	return xdpkit_stats_count(ctx, XDPKIT_ST_ET_IPV4, XDPKIT_ST_P_UDP, XDP_DROP);
 *	                                               // app already parsed: no re-parse
 *
 * Maps. Including this header *defines* three BTF maps (below), so include it in exactly
 * one compilation unit per BPF object. Every program of that object shares them, which is
 * what we want (an app and its tail-called stages count into the same counters). Objects
 * linked from several .c files (bpftool gen object) must include it in one file only.
 * Maps a program never references are not bound to it and Python simply shows no rows for
 * them (an app using only xdpkit_stats_verdict exposes only verdict counters).
 *
 * The kernel keeps 15 characters of a map name: `xdpkit_st_verdict` appears as
 * `xdpkit_st_verdi` in map info; Python matches the truncated name.
 *
 * Counting rules (each frame lands in exactly ONE slot of each map, so the three maps have
 * the same totals and Python can show one "total" row):
 *   - etype: the OUTERMOST EtherType. A VLAN-tagged frame (802.1Q or 802.1ad, any depth)
 *     counts under VLAN only, not also under its inner EtherType; its inner protocol still
 *     shows in the proto map (tags are stripped before the IP header is parsed).
 *     Frames shorter than an Ethernet header count as OTHER.
 *   - proto: the L4 protocol of IPv4/IPv6 (after extension headers); NON_IP for anything
 *     that is not IP (ARP, LLDP, ...); OTHER for IP with another or unparsable protocol
 *     and for truncated frames.
 *   - verdict: the XDP action (XDP_ABORTED..XDP_REDIRECT = 0..4) the program returns;
 *     values outside 0..4 are not counted anywhere (the verifier-safe lookup fails).
 *   - bytes: data_end - data at the time of counting (the frame as the program sees it,
 *     without FCS; after any head adjustments the program made before counting).
 * Counters are per-CPU: no atomics, no contention; Python sums over CPUs.
 */
#ifndef XDPKIT_STATS_H
#define XDPKIT_STATS_H

#include <xdpkit/counter.h>
#include <xdpkit/parsing.h>

#ifndef ETH_P_MPLS_UC
#define ETH_P_MPLS_UC 0x8847
#endif
#ifndef ETH_P_LLDP
#define ETH_P_LLDP 0x88CC
#endif

/* etype indexes (keep in sync with xdpkit/observe/stats.py ETYPE_NAMES) */
#define XDPKIT_ST_ET_OTHER 0
#define XDPKIT_ST_ET_IPV4 1
#define XDPKIT_ST_ET_IPV6 2
#define XDPKIT_ST_ET_ARP 3
#define XDPKIT_ST_ET_VLAN 4 /* exclusive: see the counting rules above */
#define XDPKIT_ST_ET_LLDP 5
#define XDPKIT_ST_ET_MPLS 6
#define XDPKIT_ST_ET_MAX 8 /* map size; 7 is spare */

/* proto indexes (keep in sync with xdpkit/observe/stats.py PROTO_NAMES) */
#define XDPKIT_ST_P_OTHER 0
#define XDPKIT_ST_P_TCP 1
#define XDPKIT_ST_P_UDP 2
#define XDPKIT_ST_P_ICMP 3
#define XDPKIT_ST_P_ICMPV6 4
#define XDPKIT_ST_P_NON_IP 5
#define XDPKIT_ST_P_MAX 8 /* map size; 6 and 7 are spare */

#define XDPKIT_ST_VERDICT_MAX 5 /* XDP_ABORTED .. XDP_REDIRECT */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XDPKIT_ST_ET_MAX);
	__type(key, __u32);
	__type(value, struct xdpkit_counter);
} xdpkit_st_etype SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XDPKIT_ST_P_MAX);
	__type(key, __u32);
	__type(value, struct xdpkit_counter);
} xdpkit_st_proto SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XDPKIT_ST_VERDICT_MAX);
	__type(key, __u32);
	__type(value, struct xdpkit_counter);
} xdpkit_st_verdict SEC(".maps");

static __always_inline __u64 xdpkit_st_len(struct xdp_md *ctx)
{
	return (__u64)(ctx->data_end - ctx->data);
}

/* Index helpers for apps that parsed the frame themselves. outer_proto is the FIRST
 * EtherType in host order (eth->h_proto before VLAN stripping). */
static __always_inline __u32 xdpkit_st_etype_index(__u16 outer_proto)
{
	switch (outer_proto) {
	case ETH_P_IP:
		return XDPKIT_ST_ET_IPV4;
	case ETH_P_IPV6:
		return XDPKIT_ST_ET_IPV6;
	case ETH_P_ARP:
		return XDPKIT_ST_ET_ARP;
	case ETH_P_8021Q:
	case ETH_P_8021AD:
		return XDPKIT_ST_ET_VLAN;
	case ETH_P_LLDP:
		return XDPKIT_ST_ET_LLDP;
	case ETH_P_MPLS_UC:
		return XDPKIT_ST_ET_MPLS;
	default:
		return XDPKIT_ST_ET_OTHER;
	}
}

/* l4proto: IPPROTO_* from xdpkit_parse_ipv4/ipv6 (negative = parse error -> OTHER). */
static __always_inline __u32 xdpkit_st_proto_index(int l4proto)
{
	switch (l4proto) {
	case IPPROTO_TCP:
		return XDPKIT_ST_P_TCP;
	case IPPROTO_UDP:
		return XDPKIT_ST_P_UDP;
	case IPPROTO_ICMP:
		return XDPKIT_ST_P_ICMP;
	case IPPROTO_ICMPV6:
		return XDPKIT_ST_P_ICMPV6;
	default:
		return XDPKIT_ST_P_OTHER;
	}
}

/* Count only the verdict: one map lookup, no packet access. Returns verdict. */
static __always_inline int xdpkit_stats_verdict(struct xdp_md *ctx, int verdict)
{
	xdpkit_count(&xdpkit_st_verdict, (__u32)verdict, xdpkit_st_len(ctx));
	return verdict;
}

/* Count with indexes the app already knows (XDPKIT_ST_ET_*, XDPKIT_ST_P_*). Returns verdict. */
static __always_inline int xdpkit_stats_count(struct xdp_md *ctx, __u32 etype_idx,
					      __u32 proto_idx, int verdict)
{
	__u64 len = xdpkit_st_len(ctx);

	xdpkit_count(&xdpkit_st_etype, etype_idx, len);
	xdpkit_count(&xdpkit_st_proto, proto_idx, len);
	xdpkit_count(&xdpkit_st_verdict, (__u32)verdict, len);
	return verdict;
}

/* Parse (bounds-checked, read-only) and count etype, proto and verdict. Safe to call after
 * the app has parsed or even rewritten the frame: it re-reads from ctx->data, so it counts
 * the frame as it is now. Returns verdict, so `return xdpkit_stats_record(ctx, XDP_DROP);`. */
static __always_inline int xdpkit_stats_record(struct xdp_md *ctx, int verdict)
{
	struct xdpkit_cursor c;
	struct ethhdr *eth;
	__u32 et = XDPKIT_ST_ET_OTHER, pr = XDPKIT_ST_P_NON_IP;
	int l3, l4 = -1;

	xdpkit_cursor_init(&c, ctx);
	l3 = xdpkit_parse_eth(&c, &eth, NULL);
	if (l3 >= 0) {
		et = xdpkit_st_etype_index(bpf_ntohs(eth->h_proto));
		if (l3 == ETH_P_IP) {
			struct iphdr *ip;

			l4 = xdpkit_parse_ipv4(&c, &ip, NULL);
			pr = xdpkit_st_proto_index(l4);
		} else if (l3 == ETH_P_IPV6) {
			struct ipv6hdr *ip6;

			l4 = xdpkit_parse_ipv6(&c, &ip6, NULL);
			pr = xdpkit_st_proto_index(l4);
		}
	} else {
		/* Truncated: protocol unknown. An intact Ethernet header with a cut-off VLAN
		 * tag is still a VLAN frame. */
		pr = XDPKIT_ST_P_OTHER;
		if ((void *)(long)ctx->data + sizeof(struct ethhdr) <= (void *)(long)ctx->data_end)
			et = XDPKIT_ST_ET_VLAN;
	}
	return xdpkit_stats_count(ctx, et, pr, verdict);
}

#endif /* XDPKIT_STATS_H */
