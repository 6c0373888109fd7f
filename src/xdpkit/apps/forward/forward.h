/* SPDX-License-Identifier: GPL-2.0 */
/* xdpkit forward: what the forwarding program and its control plane (control.py) share. */
#ifndef XDPKIT_FORWARD_H
#define XDPKIT_FORWARD_H

#include <linux/types.h>

/* What happened to a frame; one per-CPU counter each (fwd_events). FWD_EV_TO_CPU counts in
 * addition to the reason a frame went to the stack. */
enum fwd_event {
	FWD_EV_FORWARDED = 0,   /* redirected with a remembered next hop */
	FWD_EV_LOOKED_UP,       /* redirected after a FIB lookup (first packet, or the tables changed) */
	FWD_EV_NO_NEIGH,        /* passed: no neighbour entry yet (the stack resolves it) */
	FWD_EV_TTL,             /* passed: TTL or hop limit <= 1 (the stack sends time exceeded) */
	FWD_EV_LOCAL,           /* passed: for this host, or a route that does not forward */
	FWD_EV_TOO_BIG,         /* passed: larger than the egress MTU (the stack fragments or answers) */
	FWD_EV_IP_OPTIONS,      /* passed: IPv4 options or an IPv6 hop-by-hop header */
	FWD_EV_NOT_IP,          /* passed: not IPv4 or IPv6 (ARP, LLDP, ...) */
	FWD_EV_EGRESS,          /* passed: the egress interface is not a member of the plane */
	FWD_EV_FWD_OFF,         /* passed: forwarding is off for the ingress interface (sysctl) */
	FWD_EV_UNSUPPORTED,     /* passed: VLAN tag, lightweight tunnel route, or another helper refusal */
	FWD_EV_BLACKHOLE,       /* dropped: blackhole route */
	FWD_EV_UNREACHABLE,     /* dropped: unreachable route */
	FWD_EV_PROHIBIT,        /* dropped: prohibit route */
	FWD_EV_MALFORMED,       /* passed: truncated or malformed headers (the stack counts them) */
	FWD_EV_OTHER_HOST,      /* passed: unicast to another MAC than the interface's */
	FWD_EV_MULTICAST,       /* passed: broadcast or multicast destination MAC */
	FWD_EV_FLOODED,         /* broadcast or multicast sent out of every other member (--flood) */
	FWD_EV_TO_CPU,          /* went to the stack through the CPUMAP (--cpus) */
	FWD_EV_MAX,
};

/* The FIB lookup's inputs: a remembered next hop is used only for the same inputs. */
struct fwd_flow {
	__u32 ifindex;          /* ingress */
	__u8 family;            /* AF_INET or AF_INET6 */
	__u8 proto;
	__u8 tos;
	__u8 pad;
	__be16 sport;
	__be16 dport;
	__be32 flowinfo;        /* IPv6 traffic class and flow label, as bpf_fib_lookup takes them */
	__be32 src[4];
	__be32 dst[4];
};

/* What a remembered FIB answer says. */
struct fwd_hop {
	__u32 oif;
	__u16 mtu;
	__u8 in_mac[6];         /* the ingress interface's own MAC, checked on every hit */
	__u8 smac[6];
	__u8 dmac[6];
};

/* An IPv4 flow as remembered: fwd_flow's first 16 bytes, then the two addresses. */
struct fwd_flow4 {
	__u32 ifindex;
	__u8 family;
	__u8 proto;
	__u8 tos;
	__u8 pad;
	__be16 sport;
	__be16 dport;
	__be32 flowinfo;
	__be32 src;
	__be32 dst;
};

/* Remembered answers, valid while the generations they were found under hold. The IPv4 one is
 * 56 bytes, so most fit one cache line. */
struct fwd_nexthop4 {
	__u64 gen;
	struct fwd_flow4 flow;
	struct fwd_hop hop;
};

struct fwd_nexthop6 {
	__u64 gen;
	struct fwd_flow flow;
	struct fwd_hop hop;
};

/* The generations a remembered answer depends on (fwd_where): the plane's network namespace,
 * which keeps the kernel's routing generations, and the neighbour generation. */
struct fwd_kernel_gens {
	__u64 net;              /* the namespace's struct net (its ipv4.rt_genid, ipv6.fib6_sernum) */
	__u64 neigh;            /* bumped by the neighbour tracepoint programs */
	__u32 netns;            /* the namespace's inode number, for the loader to check */
	__u32 pad;
};

/* A member interface (fwd_members, key: ifindex). */
struct fwd_member {
	__u8 mac[6];
	__u8 pad[2];
};

/* The plane's settings as the control plane recorded them: length, then JSON. */
#define FWD_STATE_SIZE 4096
struct fwd_state {
	__u32 len;
	char json[FWD_STATE_SIZE - 4];
};

#endif
