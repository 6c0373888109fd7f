/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* xdpkit packet parsing helpers: every access is bounds-checked against data_end.
 *
 * A cursor walks the packet; each parse_* returns the next protocol number, or a negative
 * XDPKIT_PARSE_* code when the packet is truncated or malformed, so callers can count and
 * give malformed packets a defined verdict instead of tripping the verifier or aborting.
 *
 * TRUNCATED: the frame ends before what the headers say (a header cut off, or an IP total /
 * payload length reaching past the end of the frame). MALFORMED: the headers contradict
 * themselves (wrong version, IHL < 5, total length < header length, too many extension headers).
 * Frames longer than the IP length (Ethernet padding) are valid; the cursor's end stays at the
 * end of the frame.
 */
#ifndef XDPKIT_PARSING_H
#define XDPKIT_PARSING_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/icmp.h>
#include <linux/icmpv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define XDPKIT_PARSE_TRUNCATED (-1)
#define XDPKIT_PARSE_MALFORMED (-2)

#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif
#define XDPKIT_MAX_VLAN 2
#define XDPKIT_MAX_IPV6_EXT 6

struct xdpkit_cursor {
	void *pos;
	void *end;
};

struct xdpkit_vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

static __always_inline void xdpkit_cursor_init(struct xdpkit_cursor *c, struct xdp_md *ctx)
{
	c->pos = (void *)(long)ctx->data;
	c->end = (void *)(long)ctx->data_end;
}

/* Ethernet plus up to two VLAN tags (802.1Q, 802.1ad/QinQ). Returns the inner EtherType
 * in host order; vlan_ids (may be NULL) receives the VLAN ids, outermost first. */
static __always_inline int xdpkit_parse_eth(struct xdpkit_cursor *c, struct ethhdr **eth,
					    __u16 *vlan_ids)
{
	struct ethhdr *e = c->pos;
	__u16 proto;

	if ((void *)(e + 1) > c->end)
		return XDPKIT_PARSE_TRUNCATED;
	c->pos = e + 1;
	*eth = e;
	proto = bpf_ntohs(e->h_proto);
#pragma unroll
	for (int i = 0; i < XDPKIT_MAX_VLAN; i++) {
		struct xdpkit_vlan_hdr *v = c->pos;

		if (proto != ETH_P_8021Q && proto != ETH_P_8021AD)
			break;
		if ((void *)(v + 1) > c->end)
			return XDPKIT_PARSE_TRUNCATED;
		if (vlan_ids)
			vlan_ids[i] = bpf_ntohs(v->tci) & 0x0fff;
		proto = bpf_ntohs(v->encap_proto);
		c->pos = v + 1;
	}
	return proto;
}

/* IPv4 including options. Returns the L4 protocol. *frag_offset receives the fragment
 * offset (non-zero for non-first fragments, which carry no L4 header). The total length
 * must cover the header and fit in the frame (trailing padding is allowed). */
static __always_inline int xdpkit_parse_ipv4(struct xdpkit_cursor *c, struct iphdr **iph,
					     __u16 *frag_offset)
{
	struct iphdr *ip = c->pos;
	int hlen, tot_len;

	if ((void *)(ip + 1) > c->end)
		return XDPKIT_PARSE_TRUNCATED;
	if (ip->version != 4)
		return XDPKIT_PARSE_MALFORMED;
	hlen = ip->ihl * 4;
	if (hlen < (int)sizeof(*ip))
		return XDPKIT_PARSE_MALFORMED;
	if (c->pos + hlen > c->end)
		return XDPKIT_PARSE_TRUNCATED;
	tot_len = bpf_ntohs(ip->tot_len); /* 0..65535 */
	if (tot_len < hlen)
		return XDPKIT_PARSE_MALFORMED;
	if ((void *)ip + tot_len > c->end)
		return XDPKIT_PARSE_TRUNCATED;
	c->pos += hlen;
	*iph = ip;
	if (frag_offset)
		*frag_offset = bpf_ntohs(ip->frag_off) & 0x1fff;
	return ip->protocol;
}

struct xdpkit_ipv6_frag {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 identification;
};

/* IPv6 and its extension headers (hop-by-hop, routing, fragment, destination options).
 * Returns the upper-layer protocol. A non-first fragment (offset != 0) carries no headers
 * after its fragment header: parsing stops there and returns the fragment header's next
 * header, whatever it is. The payload length must fit in the frame (0, a jumbogram, is not
 * checked). */
static __always_inline int xdpkit_parse_ipv6(struct xdpkit_cursor *c, struct ipv6hdr **ip6h,
					     __u16 *frag_offset)
{
	struct ipv6hdr *ip6 = c->pos;
	__u8 next;

	if ((void *)(ip6 + 1) > c->end)
		return XDPKIT_PARSE_TRUNCATED;
	if (ip6->version != 6)
		return XDPKIT_PARSE_MALFORMED;
	if ((void *)(ip6 + 1) + bpf_ntohs(ip6->payload_len) > c->end)
		return XDPKIT_PARSE_TRUNCATED;
	c->pos = ip6 + 1;
	*ip6h = ip6;
	next = ip6->nexthdr;
	if (frag_offset)
		*frag_offset = 0;
#pragma unroll
	for (int i = 0; i < XDPKIT_MAX_IPV6_EXT; i++) {
		switch (next) {
		case IPPROTO_HOPOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_DSTOPTS: {
			__u8 *h = c->pos;

			if ((void *)(h + 2) > c->end)
				return XDPKIT_PARSE_TRUNCATED;
			next = h[0];
			c->pos += (h[1] + 1) * 8;
			if (c->pos > c->end)
				return XDPKIT_PARSE_TRUNCATED;
			break;
		}
		case IPPROTO_FRAGMENT: {
			struct xdpkit_ipv6_frag *f = c->pos;
			__u16 off;

			if ((void *)(f + 1) > c->end)
				return XDPKIT_PARSE_TRUNCATED;
			next = f->nexthdr;
			off = bpf_ntohs(f->frag_off) >> 3;
			if (frag_offset)
				*frag_offset = off;
			c->pos = f + 1;
			if (off)
				return next; /* non-first fragment: what follows is payload */
			break;
		}
		default:
			return next;
		}
	}
	/* XDPKIT_MAX_IPV6_EXT extension headers parsed: what follows them must be the upper layer */
	switch (next) {
	case IPPROTO_HOPOPTS:
	case IPPROTO_ROUTING:
	case IPPROTO_DSTOPTS:
	case IPPROTO_FRAGMENT:
		return XDPKIT_PARSE_MALFORMED; /* more extension headers than we follow */
	default:
		return next;
	}
}

static __always_inline int xdpkit_parse_udp(struct xdpkit_cursor *c, struct udphdr **udph)
{
	struct udphdr *u = c->pos;

	if ((void *)(u + 1) > c->end)
		return XDPKIT_PARSE_TRUNCATED;
	c->pos = u + 1;
	*udph = u;
	return 0;
}

static __always_inline int xdpkit_parse_tcp(struct xdpkit_cursor *c, struct tcphdr **tcph)
{
	struct tcphdr *t = c->pos;
	int hlen;

	if ((void *)(t + 1) > c->end)
		return XDPKIT_PARSE_TRUNCATED;
	hlen = t->doff * 4;
	if (hlen < (int)sizeof(*t))
		return XDPKIT_PARSE_MALFORMED;
	if (c->pos + hlen > c->end)
		return XDPKIT_PARSE_TRUNCATED;
	c->pos += hlen;
	*tcph = t;
	return 0;
}

static __always_inline int xdpkit_parse_icmp(struct xdpkit_cursor *c, struct icmphdr **icmph)
{
	struct icmphdr *h = c->pos;

	if ((void *)(h + 1) > c->end)
		return XDPKIT_PARSE_TRUNCATED;
	c->pos = h + 1;
	*icmph = h;
	return 0;
}

static __always_inline int xdpkit_parse_icmp6(struct xdpkit_cursor *c, struct icmp6hdr **icmp6h)
{
	struct icmp6hdr *h = c->pos;

	if ((void *)(h + 1) > c->end)
		return XDPKIT_PARSE_TRUNCATED;
	c->pos = h + 1;
	*icmp6h = h;
	return 0;
}

#endif /* XDPKIT_PARSING_H */
