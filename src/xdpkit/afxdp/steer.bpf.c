// SPDX-License-Identifier: GPL-2.0
/* AF_XDP steering: frames of the receiving queue go to that queue's socket (xsk_sockets, an
 * XSKMAP keyed by queue), all of them or only those that match (protocol and destination port);
 * the rest, and frames of a queue without a socket, pass to the stack. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include <xdpkit/counter.h>
#include <xdpkit/parsing.h>

const volatile __u8 match_proto = 0;      /* 0: every frame; else this IP protocol only */
const volatile __u16 match_port = 0;      /* with TCP or UDP: this destination port only (0: any) */

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);              /* load sets it: the interface's queues */
	__type(key, __u32);
	__type(value, __u32);
} xsk_sockets SEC(".maps");

/* 0: to a socket, 1: passed (no match), 2: passed (no socket on the queue) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, struct xdpkit_counter);
} xsk_events SEC(".maps");

static __always_inline int matches(struct xdp_md *ctx)
{
	struct xdpkit_cursor c;
	struct ethhdr *eth;
	__u16 frag = 0;
	__be16 *ports;
	int l3, proto;

	if (!match_proto)
		return 1;
	xdpkit_cursor_init(&c, ctx);
	l3 = xdpkit_parse_eth(&c, &eth, NULL);
	if (l3 == ETH_P_IP) {
		struct iphdr *ip;

		proto = xdpkit_parse_ipv4(&c, &ip, &frag);
	} else if (l3 == ETH_P_IPV6) {
		struct ipv6hdr *ip6;

		proto = xdpkit_parse_ipv6(&c, &ip6, &frag);
	} else {
		return 0;
	}
	if (proto != match_proto)
		return 0;
	if (!match_port || (proto != IPPROTO_TCP && proto != IPPROTO_UDP))
		return 1;
	ports = c.pos;
	if (frag || (void *)(ports + 2) > c.end)
		return 0;
	return ports[1] == bpf_htons(match_port);
}

SEC("xdp")
int xdpkit_xsk_steer(struct xdp_md *ctx)
{
	__u32 len = ctx->data_end - ctx->data;
	int verdict;

	if (!matches(ctx)) {
		xdpkit_count(&xsk_events, 1, len);
		return XDP_PASS;
	}
	verdict = bpf_redirect_map(&xsk_sockets, ctx->rx_queue_index, XDP_PASS);
	xdpkit_count(&xsk_events, verdict == XDP_REDIRECT ? 0 : 2, len);
	return verdict;
}

char LICENSE[] SEC("license") = "GPL";
