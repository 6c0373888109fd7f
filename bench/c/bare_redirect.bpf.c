// SPDX-License-Identifier: GPL-2.0
/* The forwarding benchmark's reference (bench/forward.py): what any XDP forwarder must do at
 * least. No parsing, no lookup, no TTL: fixed MACs written over the frame's, then out through a
 * DEVMAP holding the egress interface (slot 0). The MACs come from the compiler's command line
 * (-DDST_MAC=0x..,... -DSRC_MAC=0x..,...): the router lab's dst host and dut out0.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} bare_ports SEC(".maps");

SEC("xdp")
int bare_redirect(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	static const __u8 macs[12] = { DST_MAC, SRC_MAC };

	if (data + 14 > end)
		return XDP_PASS;
	__builtin_memcpy(data, macs, 12);
	return bpf_redirect_map(&bare_ports, 0, 0);
}

char LICENSE[] SEC("license") = "GPL";
