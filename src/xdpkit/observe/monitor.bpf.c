// SPDX-License-Identifier: GPL-2.0
/* `xdpkit monitor`: count system-wide XDP events from the xdp tracepoints.
 *
 * One tp_btf program per tracepoint (typed arguments, no perf buffer, no per-event syscall).
 * Each hit is counted in a per-CPU hash keyed by (event, netns, ifindex, program, action,
 * errno, target, map): a storm of identical errors is one entry, read once a second.
 * Python loads only the programs whose tracepoint exists on this kernel (xdp_redirect_map_err
 * was removed in 6.16), so a missing one is skipped, not fatal.
 *
 * Kernel structs are declared with only the fields we read, marked preserve_access_index:
 * libbpf relocates the offsets against the running kernel's BTF (CO-RE), so no vmlinux.h.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "monitor.h"

struct ns_common { unsigned int inum; } __attribute__((preserve_access_index));
struct net { struct ns_common ns; } __attribute__((preserve_access_index));
typedef struct { struct net *net; } possible_net_t;
struct net_device {
	int ifindex;
	possible_net_t nd_net;
} __attribute__((preserve_access_index));
struct bpf_prog_aux { __u32 id; } __attribute__((preserve_access_index));
struct bpf_prog { struct bpf_prog_aux *aux; } __attribute__((preserve_access_index));

#define INT_MAX_U32 0x7fffffffU

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, XDPKIT_MON_MAX_KEYS);
	__type(key, struct xdpkit_mon_key);
	__type(value, struct xdpkit_mon_val);
} xdpkit_mon_events SEC(".maps");

/* Hits that found the hash full: reported, so a full table is never silent. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} xdpkit_mon_lost SEC(".maps");

static __always_inline void count(struct xdpkit_mon_key *k, __u64 packets, __u64 drops)
{
	struct xdpkit_mon_val *v = bpf_map_lookup_elem(&xdpkit_mon_events, k);

	if (!v) {
		struct xdpkit_mon_val zero = {};

		/* NOEXIST: another CPU may have added it meanwhile; then look it up again. */
		bpf_map_update_elem(&xdpkit_mon_events, k, &zero, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&xdpkit_mon_events, k);
		if (!v) {
			__u32 z = 0;
			__u64 *lost = bpf_map_lookup_elem(&xdpkit_mon_lost, &z);

			if (lost)
				*lost += 1;
			return;
		}
	}
	v->events += 1;
	v->packets += packets;
	v->drops += drops;
}

static __always_inline void dev_ids(const struct net_device *dev, struct xdpkit_mon_key *k)
{
	if (!dev)
		return;
	k->ifindex = BPF_CORE_READ(dev, ifindex);
	k->netns = BPF_CORE_READ(dev, nd_net.net, ns.inum);
}

static __always_inline __u32 prog_id(const struct bpf_prog *prog)
{
	return prog ? BPF_CORE_READ(prog, aux, id) : 0;
}

SEC("tp_btf/xdp_exception")
int xdpkit_mon_exception(__u64 *ctx)
{
	struct xdpkit_mon_key k = { .event = XDPKIT_MON_EXCEPTION };

	dev_ids((const struct net_device *)ctx[0], &k);
	k.prog_id = prog_id((const struct bpf_prog *)ctx[1]);
	k.action = (__u32)ctx[2];
	count(&k, 1, 1); /* an exception drops the frame */
	return 0;
}

/* (dev, xdp, tgt, err, map_type, map_id, index): for bpf_redirect() to an ifindex the kernel
 * passes map_type UNSPEC and map_id INT_MAX with the ifindex in index. */
static __always_inline int redirect_err(__u64 *ctx, __u32 event)
{
	struct xdpkit_mon_key k = { .event = event, .action = XDP_REDIRECT };
	__u32 map_id = (__u32)ctx[5];

	dev_ids((const struct net_device *)ctx[0], &k);
	k.prog_id = prog_id((const struct bpf_prog *)ctx[1]);
	k.err = (__s32)ctx[3];
	if ((__u32)ctx[4] == BPF_MAP_TYPE_UNSPEC && map_id == INT_MAX_U32) {
		k.target = (__u32)ctx[6];
	} else {
		k.map_id = map_id;
		k.target = (__u32)ctx[6]; /* the map index */
	}
	count(&k, 1, 1);
	return 0;
}

SEC("tp_btf/xdp_redirect_err")
int xdpkit_mon_redirect_err(__u64 *ctx)
{
	return redirect_err(ctx, XDPKIT_MON_REDIRECT_ERR);
}

SEC("tp_btf/xdp_redirect_map_err")
int xdpkit_mon_redirect_map_err(__u64 *ctx)
{
	return redirect_err(ctx, XDPKIT_MON_REDIRECT_MAP_ERR);
}

/* (from_dev, to_dev, sent, drops, err) */
SEC("tp_btf/xdp_devmap_xmit")
int xdpkit_mon_devmap_xmit(__u64 *ctx)
{
	struct xdpkit_mon_key k = { .event = XDPKIT_MON_DEVMAP_XMIT, .action = XDP_REDIRECT };
	const struct net_device *to = (const struct net_device *)ctx[1];

	dev_ids((const struct net_device *)ctx[0], &k);
	if (to)
		k.target = BPF_CORE_READ(to, ifindex);
	k.err = (__s32)ctx[4];
	count(&k, (__u32)ctx[2], (__u32)ctx[3]);
	return 0;
}

/* (map_id, processed, drops, to_cpu) */
SEC("tp_btf/xdp_cpumap_enqueue")
int xdpkit_mon_cpumap_enqueue(__u64 *ctx)
{
	struct xdpkit_mon_key k = { .event = XDPKIT_MON_CPUMAP_ENQUEUE, .action = XDP_REDIRECT };

	k.map_id = (__u32)ctx[0];
	k.target = (__u32)ctx[3];
	count(&k, (__u32)ctx[1], (__u32)ctx[2]);
	return 0;
}

/* (map_id, processed, drops, sched, stats): runs on the target CPU's kthread. */
SEC("tp_btf/xdp_cpumap_kthread")
int xdpkit_mon_cpumap_kthread(__u64 *ctx)
{
	struct xdpkit_mon_key k = { .event = XDPKIT_MON_CPUMAP_KTHREAD, .action = XDP_REDIRECT };

	k.map_id = (__u32)ctx[0];
	k.target = bpf_get_smp_processor_id();
	count(&k, (__u32)ctx[1], (__u32)ctx[2]);
	return 0;
}

char _license[] SEC("license") = "GPL";
