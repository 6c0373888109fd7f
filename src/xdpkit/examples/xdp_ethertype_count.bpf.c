// SPDX-License-Identifier: GPL-2.0
/* Tutorial 4: count packets per EtherType in a per-CPU hash map, then pass them on.
 *
 * The key is the EtherType in host byte order (0x0800 IPv4, 0x86DD IPv6, 0x0806 ARP), after
 * any VLAN tags; frames too short for an Ethernet header count under key 0.
 */
#include <xdpkit/parsing.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u16);
	__type(value, __u64);
} ethertype_count SEC(".maps");

SEC("xdp")
int xdp_ethertype_count(struct xdp_md *ctx)
{
	struct xdpkit_cursor c;
	struct ethhdr *eth;
	__u64 one = 1, *count;
	int proto;
	__u16 key;

	xdpkit_cursor_init(&c, ctx);
	proto = xdpkit_parse_eth(&c, &eth, NULL);
	key = proto < 0 ? 0 : (__u16)proto;
	count = bpf_map_lookup_elem(&ethertype_count, &key);
	if (count)
		*count += 1; /* per-CPU value: no atomic needed */
	else
		bpf_map_update_elem(&ethertype_count, &key, &one, BPF_NOEXIST);
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
