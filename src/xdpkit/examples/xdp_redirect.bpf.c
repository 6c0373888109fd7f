// SPDX-License-Identifier: GPL-2.0
/* Tutorial 3: forward every frame out of another interface through a DEVMAP.
 *
 * tx_port[0] holds the egress interface. When egress_mac[0] has a non-zero destination MAC,
 * the Ethernet addresses are rewritten (dst = that MAC, src = the egress interface's MAC) so
 * the next hop accepts the frame. Without an egress entry the frame passes to the stack.
 */
#include <xdpkit/parsing.h>

struct egress_mac {
	__u8 dst[ETH_ALEN];
	__u8 src[ETH_ALEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} tx_port SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct egress_mac);
} egress_mac SEC(".maps");

SEC("xdp")
int xdp_redirect_devmap(struct xdp_md *ctx)
{
	struct xdpkit_cursor c;
	struct ethhdr *eth;
	struct egress_mac *mac;
	__u32 key = 0;

	xdpkit_cursor_init(&c, ctx);
	if (xdpkit_parse_eth(&c, &eth, NULL) < 0)
		return XDP_PASS;
	mac = bpf_map_lookup_elem(&egress_mac, &key);
	if (mac && (mac->dst[0] | mac->dst[1] | mac->dst[2] | mac->dst[3] | mac->dst[4] | mac->dst[5])) {
		__builtin_memcpy(eth->h_dest, mac->dst, ETH_ALEN);
		__builtin_memcpy(eth->h_source, mac->src, ETH_ALEN);
	}
	/* XDP_PASS when tx_port[0] is empty (lower bits of flags are the fallback verdict). */
	return bpf_redirect_map(&tx_port, 0, XDP_PASS);
}

char _license[] SEC("license") = "GPL";
