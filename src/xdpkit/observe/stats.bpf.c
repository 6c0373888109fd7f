// SPDX-License-Identifier: GPL-2.0
/* The statistics program `xdpkit stats IFACE` attaches when no xdpkit app is there:
 * count every frame by EtherType, IP protocol and verdict (see <xdpkit/stats.h>), then pass.
 * It is also the reference implementation of the counter convention the apps follow.
 */
#include <xdpkit/stats.h>

SEC("xdp")
int xdpkit_stats(struct xdp_md *ctx)
{
	return xdpkit_stats_record(ctx, XDP_PASS);
}

char _license[] SEC("license") = "GPL";
