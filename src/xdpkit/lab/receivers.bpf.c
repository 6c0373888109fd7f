// SPDX-License-Identifier: GPL-2.0
/* Receivers and references for tests and benchmarks.
 *
 * xdpkit_drop / xdpkit_pass: the bare references that per-program costs are compared with.
 * xdpkit_swap_tx: swap the Ethernet addresses and send the frame back (the load balancer's
 * reference: the least any XDP_TX forwarder does).
 * xdpkit_count_*: count per CPU (a per-CPU array, no atomics), then act. The generator's CLI
 * reports the received rate when one of these sits on the veth peer.
 * xdpkit_ttl_dec_drop: what a router does to a frame in place (count it by its IPv4 TTL or IPv6
 * hop limit, decrement that, fix the IPv4 checksum), then drop it: a frame from the generator
 * comes back to it in a recycled page, which must not keep the edit.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} rx_count SEC(".maps");

static __always_inline void count_rx(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&rx_count, &zero);

	if (n)
		*n += 1;
}

SEC("xdp")
int xdpkit_drop(struct xdp_md *ctx)
{
	return XDP_DROP;
}

SEC("xdp")
int xdpkit_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("xdp")
int xdpkit_count_drop(struct xdp_md *ctx)
{
	count_rx();
	return XDP_DROP;
}

SEC("xdp")
int xdpkit_count_pass(struct xdp_md *ctx)
{
	count_rx();
	return XDP_PASS;
}

SEC("xdp")
int xdpkit_swap_tx(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u8 tmp[ETH_ALEN];

	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(tmp, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, tmp, ETH_ALEN);
	return XDP_TX;
}

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u64);
} rx_ttl SEC(".maps");

SEC("xdp")
int xdpkit_ttl_dec_drop(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u8 *ttl = NULL;
	__u64 *n;
	__u32 key;

	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		__u32 sum;

		if ((void *)(ip + 1) > data_end)
			return XDP_DROP;
		ttl = &ip->ttl;
		/* RFC 1624: the TTL is the high byte of its 16-bit word */
		sum = (__u16)~ip->check + (__u16)~bpf_htons(*ttl << 8) + bpf_htons((__u8)(*ttl - 1) << 8);
		sum = (sum & 0xffff) + (sum >> 16);
		sum = (sum & 0xffff) + (sum >> 16);
		ip->check = ~sum;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end)
			return XDP_DROP;
		ttl = &ip6->hop_limit;
	}
	if (!ttl)
		return XDP_DROP;
	key = *ttl;
	n = bpf_map_lookup_elem(&rx_ttl, &key);
	if (n)
		*n += 1;
	*ttl -= 1;
	return XDP_DROP;
}

char _license[] SEC("license") = "GPL";
