// SPDX-License-Identifier: GPL-2.0
/* Tutorial 1: the smallest XDP program. Every packet continues into the kernel stack. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
