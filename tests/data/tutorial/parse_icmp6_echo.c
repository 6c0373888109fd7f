// SPDX-License-Identifier: GPL-2.0
/* Tutorial style: parse Ethernet (with VLAN tags), IPv6 and ICMPv6 by hand and drop echo
 * requests whose sequence number is odd. Includes the uapi headers tutorials include, among
 * them <linux/icmp.h>, which pulls in <linux/if.h> and so <sys/socket.h>. */
#include <stddef.h>
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/if_vlan.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/icmp.h>
#include <linux/icmpv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct vlan_hdr {
	__be16 h_vlan_TCI;
	__be16 h_vlan_encapsulated_proto;
};

static __always_inline int proto_is_vlan(__u16 h_proto)
{
	return h_proto == bpf_htons(ETH_P_8021Q) || h_proto == bpf_htons(ETH_P_8021AD);
}

SEC("xdp")
int xdp_parser_func(struct xdp_md *ctx)
{
	void *data_end = (void *)(long)ctx->data_end;
	void *data = (void *)(long)ctx->data;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6;
	struct icmp6hdr *icmp6;
	void *pos;
	__u16 h_proto;
	int i;

	if ((void *)(eth + 1) > data_end)
		return XDP_ABORTED;
	pos = eth + 1;
	h_proto = eth->h_proto;
#pragma unroll
	for (i = 0; i < 2; i++) {
		struct vlan_hdr *vlh = pos;

		if (!proto_is_vlan(h_proto) || (void *)(vlh + 1) > data_end)
			break;
		h_proto = vlh->h_vlan_encapsulated_proto;
		pos = vlh + 1;
	}
	if (h_proto != bpf_htons(ETH_P_IPV6))
		return XDP_PASS;
	ip6 = pos;
	if ((void *)(ip6 + 1) > data_end || ip6->nexthdr != IPPROTO_ICMPV6)
		return XDP_PASS;
	icmp6 = (void *)(ip6 + 1);
	if ((void *)(icmp6 + 1) > data_end)
		return XDP_PASS;
	if (icmp6->icmp6_type == ICMPV6_ECHO_REQUEST &&
	    bpf_ntohs(icmp6->icmp6_sequence) % 2)
		return XDP_DROP;
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
