/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* The counter xdpkit's programs keep in per-CPU array slots: packets and bytes. `xdpkit stats`
 * and the exporter read any map whose value is this struct.
 *
 *	#include <xdpkit/counter.h>
 *	xdpkit_count(&my_counters, idx, bytes);
 */
#ifndef XDPKIT_COUNTER_H
#define XDPKIT_COUNTER_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>

struct xdpkit_counter {
	__u64 packets;
	__u64 bytes;
};

/* Per-CPU array slots: a plain add is race-free (softirq on one CPU does not nest XDP). */
static __always_inline void xdpkit_count(void *map, __u32 idx, __u64 bytes)
{
	struct xdpkit_counter *c = bpf_map_lookup_elem(map, &idx);

	if (c) {
		c->packets += 1;
		c->bytes += bytes;
	}
}

#endif
