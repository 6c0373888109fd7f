// SPDX-License-Identifier: GPL-2.0
/* Tutorial style: a legacy custom section name, a per-CPU array of counters indexed by ICMP
 * type, fixed-width types from clang's <stdint.h> and <stdbool.h>. */
#include <stdbool.h>
#include <stdint.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/icmp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 256);
	__type(key, uint32_t);
	__type(value, uint64_t);
} icmp_types SEC(".maps");

SEC("xdp_icmp_count")
int xdp_icmp_count_prog(struct xdp_md *ctx)
{
	void *data_end = (void *)(long)ctx->data_end;
	void *data = (void *)(long)ctx->data;
	struct ethhdr *eth = data;
	struct iphdr *iph = (void *)(eth + 1);
	struct icmphdr *icmph;
	uint32_t type;
	uint64_t *count;
	bool is_icmp;

	if ((void *)(iph + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	is_icmp = iph->protocol == IPPROTO_ICMP && iph->ihl == 5;
	icmph = (void *)(iph + 1);
	if (!is_icmp || (void *)(icmph + 1) > data_end)
		return XDP_PASS;
	type = icmph->type;
	count = bpf_map_lookup_elem(&icmp_types, &type);
	if (count)
		*count += 1;
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
