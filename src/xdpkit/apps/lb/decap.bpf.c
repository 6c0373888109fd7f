// SPDX-License-Identifier: GPL-2.0
/* xdpkit backend-side decapsulation: strip the outer IPv4/IPv6 header the load balancer added
 * (IPIP, IPv6-in-IPv4, IPv4-in-IPv6, IP6IP6) and pass the inner packet to the stack, which
 * delivers it to the VIP configured on a local interface. This replaces the ipip/ip6_tunnel
 * modules, which a backend may not have.
 *
 * Only unfragmented outer headers without IPv4 options or IPv6 extension headers are stripped
 * (the load balancer sends exactly those); other encapsulated packets are dropped and counted,
 * and everything not encapsulated passes untouched.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LB_DECAP_MAX);
	__type(key, __u32);
	__type(value, struct xdpkit_counter);
} lb_decap_events SEC(".maps");

static __always_inline int lb_decap_count(__u32 ev, __u64 bytes, int verdict)
{
	xdpkit_count(&lb_decap_events, ev, bytes);
	return verdict;
}

static __always_inline int lb_inner_ethertype(__u8 proto)
{
	if (proto == IPPROTO_IPIP)
		return ETH_P_IP;
	if (proto == IPPROTO_IPV6)
		return ETH_P_IPV6;
	return 0;
}

SEC("xdp")
int xdpkit_lb_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u8 dst[ETH_ALEN], src[ETH_ALEN];
	int outer_len, inner, ev;
	__u64 len = data_end - data;

	if ((void *)(eth + 1) > data_end)
		return lb_decap_count(LB_DECAP_PASS, len, XDP_PASS);
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > data_end)
			return lb_decap_count(LB_DECAP_PASS, len, XDP_PASS);
		inner = lb_inner_ethertype(ip->protocol);
		if (!inner)
			return lb_decap_count(LB_DECAP_PASS, len, XDP_PASS);
		if (ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff)))
			return lb_decap_count(LB_DECAP_ERROR, len, XDP_DROP);
		outer_len = sizeof(*ip);
		ev = LB_DECAP_V4;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end)
			return lb_decap_count(LB_DECAP_PASS, len, XDP_PASS);
		inner = lb_inner_ethertype(ip6->nexthdr);
		if (!inner)
			return lb_decap_count(LB_DECAP_PASS, len, XDP_PASS);
		outer_len = sizeof(*ip6);
		ev = LB_DECAP_V6;
	} else {
		return lb_decap_count(LB_DECAP_PASS, len, XDP_PASS);
	}
	__builtin_memcpy(dst, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(src, eth->h_source, ETH_ALEN);
	if (bpf_xdp_adjust_head(ctx, outer_len))
		return lb_decap_count(LB_DECAP_ERROR, len, XDP_DROP);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return lb_decap_count(LB_DECAP_ERROR, len, XDP_DROP);
	__builtin_memcpy(eth->h_dest, dst, ETH_ALEN);
	__builtin_memcpy(eth->h_source, src, ETH_ALEN);
	eth->h_proto = bpf_htons(inner);
	return lb_decap_count(ev, len, XDP_PASS);
}

char _license[] SEC("license") = "GPL";
