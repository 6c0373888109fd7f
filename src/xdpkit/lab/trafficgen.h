/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* Shared between trafficgen.bpf.c and xdpkit/trafficgen.py (layout mirrored there). */
#ifndef XDPKIT_TRAFFICGEN_H
#define XDPKIT_TRAFFICGEN_H

#define TG_VARY_SRC_IP   (1 << 0)
#define TG_VARY_SPORT    (1 << 1)
#define TG_VARY_DPORT    (1 << 2)
#define TG_IPV6          (1 << 3)
#define TG_HDR_MAX       60       /* IPv6 + TCP: the most of the template restored per frame */

struct tg_config {
	__u32 ifindex_out;   /* where frames are redirected */
	__u32 flags;         /* TG_* */
	__u32 l3_off;        /* offset of the IP header */
	__u32 l4_off;        /* offset of the TCP/UDP/ICMP header */
	__u32 l4_proto;      /* IPPROTO_UDP, IPPROTO_TCP, IPPROTO_ICMP, IPPROTO_ICMPV6 */
	__u32 ip_base;       /* host order: the last 32 bits of the source address, first flow */
	__u32 ip_count;      /* how many source addresses (>= 1) */
	__u16 sport_base;
	__u16 sport_count;   /* >= 1 */
	__u16 dport_base;
	__u16 dport_count;   /* >= 1 */
	__u8 eth[14];        /* the template's Ethernet header, written into every frame */
	__u8 pad[2];
	__u32 hdr_len;       /* bytes of hdr: the IP and L4 headers (28, 40, 48 or 60; 0: none) */
	__u8 hdr[TG_HDR_MAX];/* the template's IP and L4 headers, written into every frame */
};

enum tg_counter {
	TG_SENT = 0,  /* frames handed to bpf_redirect */
	TG_SEQ = 1,   /* per-CPU flow sequence */
	TG_NCOUNTERS = 2,
};

#endif
