// SPDX-License-Identifier: GPL-2.0
/* Receivers and references for tests and benchmarks.
 *
 * xdpkit_drop / xdpkit_pass: the bare references that per-program costs are compared with.
 * xdpkit_swap_tx: swap the Ethernet addresses and send the frame back (the load balancer's
 * reference: the least any XDP_TX forwarder does).
 * xdpkit_count_*: count per CPU (a per-CPU array, no atomics), then act. The generator's CLI
 * reports the received rate when one of these sits on the veth peer.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

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

char _license[] SEC("license") = "GPL";
