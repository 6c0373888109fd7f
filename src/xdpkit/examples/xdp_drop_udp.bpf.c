// SPDX-License-Identifier: GPL-2.0
/* Tutorial 2: drop UDP. Written in the classic tutorial style, with a custom section name:
 *
 *   xdpkit load IFACE xdp_drop_udp.bpf.c --section xdp_drop_udp
 *
 * behaves like `ip link set dev IFACE xdp obj xdp_drop_udp.o sec xdp_drop_udp`.
 *
 * drop_port selects the variant: 0 drops all UDP; any other value drops only UDP to that
 * destination port (set it before load: --const drop_port=53, or spec.rodata["drop_port"]).
 * Malformed or truncated IP headers pass: this program only claims UDP it can read.
 */
#include <xdpkit/parsing.h>

const volatile __u16 drop_port = 0;

SEC("xdp_drop_udp")
int xdp_drop_udp_prog(struct xdp_md *ctx)
{
	struct xdpkit_cursor c;
	struct ethhdr *eth;
	struct iphdr *ip4;
	struct ipv6hdr *ip6;
	struct udphdr *udp;
	__u16 frag = 0;
	int proto;

	xdpkit_cursor_init(&c, ctx);
	proto = xdpkit_parse_eth(&c, &eth, NULL);
	if (proto == ETH_P_IP)
		proto = xdpkit_parse_ipv4(&c, &ip4, &frag);
	else if (proto == ETH_P_IPV6)
		proto = xdpkit_parse_ipv6(&c, &ip6, &frag);
	else
		return XDP_PASS;
	if (proto != IPPROTO_UDP)
		return XDP_PASS;
	if (drop_port == 0)
		return XDP_DROP; /* every UDP packet, fragments included */
	if (frag)
		return XDP_PASS; /* non-first fragments carry no port */
	if (xdpkit_parse_udp(&c, &udp) < 0)
		return XDP_PASS;
	return bpf_ntohs(udp->dest) == drop_port ? XDP_DROP : XDP_PASS;
}

char _license[] SEC("license") = "GPL";
