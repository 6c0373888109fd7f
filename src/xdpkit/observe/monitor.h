/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* Shared between monitor.bpf.c and xdpkit/monitor.py (which reads the layout from BTF). */
#ifndef XDPKIT_MONITOR_H
#define XDPKIT_MONITOR_H

#include <linux/types.h>

/* event numbers: keep in sync with xdpkit/monitor.py EVENTS */
#define XDPKIT_MON_EXCEPTION 0
#define XDPKIT_MON_REDIRECT_ERR 1
#define XDPKIT_MON_REDIRECT_MAP_ERR 2
#define XDPKIT_MON_DEVMAP_XMIT 3
#define XDPKIT_MON_CPUMAP_ENQUEUE 4
#define XDPKIT_MON_CPUMAP_KTHREAD 5

#define XDPKIT_MON_MAX_KEYS 4096

struct xdpkit_mon_key {
	__u32 event;
	__u32 netns;   /* inode of the device's network namespace (0: no device) */
	__u32 ifindex; /* device the event happened on (devmap: the sender) */
	__u32 prog_id; /* XDP program (exception, redirect errors) */
	__u32 action;  /* XDP action */
	__s32 err;     /* negative errno, 0 if none */
	__u32 target;  /* to-ifindex, map index or CPU */
	__u32 map_id;  /* devmap/cpumap id, 0 if none */
};

struct xdpkit_mon_val {
	__u64 events;  /* tracepoint hits */
	__u64 packets; /* frames concerned (sent/processed for bulk events) */
	__u64 drops;   /* frames dropped */
};

#endif
