// SPDX-License-Identifier: GPL-2.0
/* Receivers and references for tests and benchmarks.
 *
 * xdpkit_drop / xdpkit_pass: the bare references that per-program costs are compared with.
 * xdpkit_count_*: count per CPU (a per-CPU array, no atomics), then act. The generator's CLI
 * reports the received rate when one of these sits on the veth peer.
 */
#include <linux/bpf.h>
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

char _license[] SEC("license") = "GPL";
