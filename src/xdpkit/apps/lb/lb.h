/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* The L4 load balancer's shared structs. The control plane mirrors them in Python struct formats
 * and constants (control.py, plan.py, viptable.py, flowhash.py); tests/unit/test_layouts.py checks
 * the mirrors against the shipped object's BTF and map sizes and against this header, so a change
 * here needs the same change there.
 * Addresses are stored as four big-endian u32 words (IPv4 in word 0, the rest zero); ports in
 * network order. Every struct is padded explicitly so Python packs it with plain struct formats.
 */
#ifndef XDPKIT_LB_H
#define XDPKIT_LB_H

#include <linux/types.h>
#include <xdpkit/counter.h> /* struct xdpkit_counter: packets and bytes */

#define LB_FAMILY_V4 4
#define LB_FAMILY_V6 6

#define LB_VIP_NO_SPORT 1      /* hash without the source port: a client sticks to one backend */
#define LB_VIPS_PORT 1         /* some VIP serves one port */
#define LB_VIPS_ALL_PORTS 2    /* some VIP serves every port */
#define LB_SLOT_NONE 0xffffffffu /* a Maglev slot with no backend: the VIP has none active */

/* A VIP: (address, port, protocol). Port 0 = every port. */
struct lb_vip_key {
	__u32 addr[4];
	__u16 port;     /* network order */
	__u8 proto;
	__u8 family;
};

struct lb_vip {
	__u32 id;         /* index of its counters */
	__u32 ring_base;  /* first slot of its Maglev table in lb_ring (a multiple of LB_RING_LINE_SLOTS) */
	__u32 table_size; /* prime */
	__u32 flags;      /* LB_VIP_* */
};

/* The VIP table: open addressing (linear probing) in an array, one entry per cache line. It
 * has two halves; the program reads the one lb_cfg.vip_base points at, and an apply writes the
 * other in full before switching lb_cfg, so a packet sees the old set of VIPs or the new one.
 * A VIP lies at most LB_VIP_PROBES slots after slot (hash & vip_mask), where hash is the
 * hash of the key (lb_vip_hash) seeded with vip_seed; an empty slot ends the search. A
 * kernel hash map costs about three times as much per lookup (jhash, bucket, element). */
#define LB_VIP_PROBES 8

struct lb_vip_entry {
	struct lb_vip_key key; /* family 0 = empty */
	struct lb_vip vip;
	__u32 pad[7];          /* one entry per 64-byte line */
};

/* A backend slot: one backend of one VIP. gen changes whenever the slot is freed or reused,
 * so a remembered flow whose gen differs knows its backend is gone. */
struct lb_backend {
	__u32 addr[4];
	__u32 gen;
	__u32 vip_id;
	__u8 family;      /* 0 = free slot */
	__u8 pad[3];
};

/* The 5-tuple a flow is known by (hashed, never stored: the flow table keeps fingerprints). */
struct lb_flow_key {
	__u32 src[4];
	__u32 dst[4];
	__u16 sport;      /* 0 for fragments and no-sport VIPs */
	__u16 dport;
	__u8 proto;
	__u8 family;
	__u16 pad;
} __attribute__((aligned(8))); /* five 64-bit words, hashed as such */

/* The Maglev slots of all VIPs, 16 to a 64-byte line: one array entry per line, not per slot,
 * because the kernel rounds array values up to 8 bytes, which would double the slots' memory
 * (512 KiB instead of 256 KiB per table of 65,537). Each VIP's table starts a line. */
#define LB_RING_LINE_SLOTS 16

struct lb_ring_line {
	__u32 slot[LB_RING_LINE_SLOTS]; /* lb_backends slots, LB_SLOT_NONE for none */
};

/* The flow table: a set-associative cache. A flow lives in set (hash & flow_mask), in one of
 * LB_WAYS ways, under its 64-bit hash as fingerprint (lb_flow_hash); a new flow takes an empty way
 * or the least recently used one. One set is one cache line, so a lookup touches one line and an
 * insert allocates nothing and takes no lock. */
#define LB_WAYS 4
#define LB_AGE_SHIFT 6          /* age unit: 64 jiffies (64-640 ms); a u16 wraps after 70 minutes or more */

struct lb_flow_way {
	__u64 tag;        /* fingerprint; 0 = empty */
	__u32 backend;    /* slot in lb_backends */
	__u16 gen;        /* low 16 bits of that slot's generation when the flow was placed */
	__u16 age;        /* jiffies >> LB_AGE_SHIFT at the flow's last packet (a cheap clock: the
			     * coarse ktime helper costs 16 ns per packet here) */
};

struct lb_flow_set {
	struct lb_flow_way way[LB_WAYS];
};

/* Run-time settings (lb_cfg[0]). */
struct lb_cfg {
	__u32 seed;
	__u32 src4;          /* outer IPv4 source: src4 | (hash & src4_hostmask), network order */
	__u32 src4_hostmask; /* network order */
	__u32 src6[4];       /* outer IPv6 source: low word | (hash & src6_hostmask) */
	__u32 src6_hostmask; /* applies to word 3, network order */
	__u16 mtu;           /* largest IP packet the LB may send, outer header included */
	__u8 gw_mac[6];      /* next hop; all zero = the frame's sender */
	__u8 tx_mac[6];      /* our source MAC on the redirect interface */
	__u8 redirect;       /* 1: XDP_REDIRECT through lb_tx_port[0] instead of XDP_TX */
	__u8 has_gw;         /* gw_mac is set */
	__u8 vip_kinds;      /* LB_VIPS_*: which VIP lookups can succeed (each costs a table search) */
	__u8 pad[3];
	__u32 flow_mask;     /* lb_flows sets - 1 (a power of two - 1) */
	__u32 vip_base;      /* first entry of the VIP table's half in force */
	__u32 vip_mask;      /* entries per half - 1 (a power of two - 1) */
	__u32 vip_seed;      /* VIP hash seed: the control plane picks one that keeps probes short */
};


/* lb_events indexes: what happened to packets other than plain forwarding. */
enum lb_event {
	LB_EV_FLOW_HIT = 0,
	LB_EV_FLOW_MISS,
	LB_EV_NOT_VIP,        /* passed untouched */
	LB_EV_NO_BACKEND,     /* dropped: the VIP has no active backend */
	LB_EV_ENCAP_ERROR,    /* dropped: no headroom, unknown backend family, no outer source */
	LB_EV_TOO_BIG_ICMP,   /* answered with ICMP fragmentation needed / packet too big */
	LB_EV_TOO_BIG_DROP,   /* too big and no ICMP possible (IPv4 without DF or with options) */
	LB_EV_MALFORMED,      /* passed: truncated or malformed headers (the stack decides) */
	LB_EV_FRAGMENT,       /* forwarded by addresses only (fragments carry no ports) */
	LB_EV_MAX,
};

/* Decapsulation counters (lb_decap_events). */
enum lb_decap_event {
	LB_DECAP_V4 = 0,     /* outer IPv4 removed */
	LB_DECAP_V6,         /* outer IPv6 removed */
	LB_DECAP_PASS,       /* not encapsulated: passed untouched */
	LB_DECAP_ERROR,      /* encapsulated but malformed: dropped */
	LB_DECAP_MAX,
};

#endif
