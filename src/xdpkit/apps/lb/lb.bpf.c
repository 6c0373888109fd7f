// SPDX-License-Identifier: GPL-2.0
/* xdpkit L4 load balancer: VIP lookup, connection tracking, Maglev, IPIP/IP6IP6 encapsulation.
 *
 * Packets for a VIP (address, protocol, port) are encapsulated towards one backend and sent
 * back out with XDP_TX (or XDP_REDIRECT): direct server return, the backend answers the client.
 * Everything else passes untouched. Per packet: one config lookup, one VIP table search (two only
 * when both one-port and all-port VIPs exist), one flow hash, one Maglev slot and one flow-table
 * set (one cache line each; a new flow also writes into the set).
 *
 * Not handled here, on purpose: VLAN-tagged frames and IPv6 extension headers other than a
 * fragment header pass untouched; fragments are balanced on addresses only (they carry no
 * ports), so only all-ports VIPs receive them; ICMP to a VIP passes to the local stack.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/icmp.h>
#include <linux/icmpv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb.h"

#define LB_IP_DF 0x4000
#define LB_IP_FRAG 0x3fff /* MF or an offset */
#define LB_V6_FRAG 44
#define LB_PTB6_QUOTE 256 /* bytes of the offending IPv6 packet quoted in a Packet Too Big */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * 256); /* two halves of 4 x max VIPs (at least 16), a power of two; load sets it */
	__type(key, __u32);
	__type(value, struct lb_vip_entry);
} lb_vip_table SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16 * 4097); /* lines: 16 tables of 65,537 slots */
	__type(key, __u32);
	__type(value, struct lb_ring_line);
} lb_ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct lb_backend);
} lb_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct lb_flow_set);
} lb_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lb_cfg);
} lb_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct xdpkit_counter);
} lb_vip_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct xdpkit_counter);
} lb_be_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LB_EV_MAX);
	__type(key, __u32);
	__type(value, struct xdpkit_counter);
} lb_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} lb_tx_port SEC(".maps");

/* The configuration as the control plane wrote it (JSON, chunked): read by later processes.
 * Not used by the program; bound to it so that it lives and dies with it. */
struct lb_state_chunk {
	__u8 data[4096];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct lb_state_chunk);
} lb_state SEC(".maps");

static __always_inline int lb_event(__u32 ev, __u64 bytes, int verdict)
{
	xdpkit_count(&lb_events, ev, bytes);
	return verdict;
}

/* The flow hash: one 64-bit pass over the key's 64-bit words (IPv4: three words, the addresses'
 * upper words being zero; IPv6: all five), each xored in, multiplied and rotated, then a 64-bit
 * finalizer (MurmurHash3's fmix64). The high half picks the Maglev slot and the outer source,
 * the low bits the flow-table set, and all 64 bits are the flow's fingerprint in that set. One
 * pass costs about a third of the two 32-bit MurmurHash3 passes it replaced. flowhash.py mirrors it. */
#define LB_HASH_MUL 0x9e3779b97f4a7c15ULL

static __always_inline __u64 lb_word(__u64 h, __u64 w)
{
	h = (h ^ w) * LB_HASH_MUL;
	return (h << 31) | (h >> 33);
}

static __always_inline __u64 lb_flow_hash(const struct lb_flow_key *k, __u32 seed)
{
	const __u64 *w = (const __u64 *)k;
	__u64 h = seed ^ LB_HASH_MUL;

	if (k->family == LB_FAMILY_V4) {
		h = lb_word(h, w[0]);
		h = lb_word(h, w[2]);
		h = lb_word(h, w[4]);
	} else {
#pragma unroll
		for (int i = 0; i < 5; i++)
			h = lb_word(h, w[i]);
	}
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	return h ^ (h >> 33);
}

static __always_inline __u32 lb_rol(__u32 x, int r)
{
	return (x << r) | (x >> (32 - r));
}

/* MurmurHash3's 32-bit finalizer */
static __always_inline __u32 lb_fmix(__u32 h, __u32 len)
{
	h ^= len;
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/* The VIP table's hash (flowhash.vip_hash): the key's words folded into one and mixed once. It
 * only spreads a few operator-chosen VIPs over the table (the control plane picks a seed under
 * which none is more than LB_VIP_PROBES away), so it can be a third of MurmurHash3's cost. */
static __always_inline __u32 lb_vip_hash(const struct lb_vip_key *k, __u32 seed)
{
	const __u32 *w = (const __u32 *)k;

	return lb_fmix(w[0] ^ lb_rol(w[1], 7) ^ lb_rol(w[2], 14) ^ lb_rol(w[3], 21) ^ (w[4] * 0x9e3779b1u) ^ seed, 20);
}

static __always_inline struct lb_vip *lb_vip_find(const struct lb_cfg *cfg, const struct lb_vip_key *k)
{
	const __u32 *kw = (const __u32 *)k;
	__u32 h = lb_vip_hash(k, cfg->vip_seed);

#pragma unroll
	for (int i = 0; i < LB_VIP_PROBES; i++) {
		__u32 idx = cfg->vip_base + ((h + i) & cfg->vip_mask);
		struct lb_vip_entry *e = bpf_map_lookup_elem(&lb_vip_table, &idx);
		const __u32 *ew;

		if (!e || !e->key.family)
			return NULL;
		ew = (const __u32 *)&e->key;
		if (ew[0] == kw[0] && ew[1] == kw[1] && ew[2] == kw[2] && ew[3] == kw[3] && ew[4] == kw[4])
			return &e->vip;
	}
	return NULL;
}

static __always_inline __u16 lb_fold(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

static __always_inline __u16 lb_ip_csum(const struct iphdr *ip)
{
	const __u16 *w = (const __u16 *)ip;
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += w[i];
	return lb_fold(sum);
}

static __always_inline void lb_macs(struct ethhdr *eth, const __u8 *dst, const __u8 *src, __u16 proto)
{
	__builtin_memcpy(eth->h_dest, dst, ETH_ALEN);
	__builtin_memcpy(eth->h_source, src, ETH_ALEN);
	eth->h_proto = bpf_htons(proto);
}

/* Turn the frame into an ICMP error for its sender: a new Ethernet header with the addresses
 * swapped, the given IP header (ip_len bytes) and 8-byte ICMP header, then the first quote bytes
 * of the original IP packet; the rest is cut off. Returns the ICMP header (the quote follows it)
 * for the caller's checksum, or NULL when the frame is too short or the kernel refuses. */
static __always_inline void *lb_icmp_reply(struct xdp_md *ctx, __u16 proto, const void *ip, int ip_len,
					   const void *icmp, int quote)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u8 smac[ETH_ALEN], dmac[ETH_ALEN];
	int len = sizeof(*eth) + ip_len + 8 + quote;
	void *icp;

	if (data + sizeof(*eth) + quote > data_end)
		return NULL;
	__builtin_memcpy(smac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(dmac, eth->h_dest, ETH_ALEN);
	if (bpf_xdp_adjust_head(ctx, -(ip_len + 8)))
		return NULL;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + len > data_end)
		return NULL;
	lb_macs(data, smac, dmac, proto);
	__builtin_memcpy(data + sizeof(*eth), ip, ip_len);
	__builtin_memcpy(data + sizeof(*eth) + ip_len, icmp, 8);
	if (bpf_xdp_adjust_tail(ctx, len - (int)(data_end - data)))
		return NULL;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	icp = data + sizeof(*eth) + ip_len;
	if (icp + 8 + quote > data_end)
		return NULL;
	return icp;
}

/* ICMP "fragmentation needed" to the sender of an IPv4 packet (without options) that would
 * exceed the MTU once encapsulated: quote its header and 8 bytes, announce mtu, XDP_TX. */
static __always_inline int lb_icmp4_too_big(struct xdp_md *ctx, __u16 mtu)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	struct iphdr o = {};
	struct icmphdr ic = {};
	struct icmphdr *icp;

	if ((void *)(ip + 1) > data_end)
		return XDP_DROP;
	o.version = 4;
	o.ihl = 5;
	o.tot_len = bpf_htons(sizeof(o) + sizeof(ic) + sizeof(*ip) + 8);
	o.ttl = 64;
	o.protocol = IPPROTO_ICMP;
	o.saddr = ip->daddr;
	o.daddr = ip->saddr;
	o.check = lb_ip_csum(&o);
	ic.type = ICMP_DEST_UNREACH;
	ic.code = ICMP_FRAG_NEEDED;
	ic.un.frag.mtu = bpf_htons(mtu);
	icp = lb_icmp_reply(ctx, ETH_P_IP, &o, sizeof(o), &ic, sizeof(*ip) + 8);
	if (!icp)
		return XDP_DROP;
	icp->checksum = lb_fold(bpf_csum_diff(0, 0, (void *)icp, sizeof(ic) + sizeof(*ip) + 8, 0));
	return XDP_TX;
}

/* ICMPv6 Packet Too Big: quote the first LB_PTB6_QUOTE bytes of the packet, announce mtu. */
static __always_inline int lb_icmp6_too_big(struct xdp_md *ctx, __u32 mtu)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
	struct ipv6hdr o = {};
	struct icmp6hdr ic = {};
	struct {
		struct in6_addr saddr, daddr;
		__be32 len, nexthdr;
	} pseudo;
	struct icmp6hdr *icp;
	__s64 sum;

	if ((void *)(ip6 + 1) > data_end)
		return XDP_DROP;
	o.version = 6;
	o.payload_len = bpf_htons(sizeof(ic) + LB_PTB6_QUOTE);
	o.nexthdr = IPPROTO_ICMPV6;
	o.hop_limit = 64;
	o.saddr = ip6->daddr;
	o.daddr = ip6->saddr;
	ic.icmp6_type = ICMPV6_PKT_TOOBIG;
	ic.icmp6_mtu = bpf_htonl(mtu);
	icp = lb_icmp_reply(ctx, ETH_P_IPV6, &o, sizeof(o), &ic, LB_PTB6_QUOTE);
	if (!icp)
		return XDP_DROP;
	pseudo.saddr = o.saddr;
	pseudo.daddr = o.daddr;
	pseudo.len = bpf_htonl(sizeof(ic) + LB_PTB6_QUOTE);
	pseudo.nexthdr = bpf_htonl(IPPROTO_ICMPV6);
	sum = bpf_csum_diff(0, 0, (void *)&pseudo, sizeof(pseudo), 0);
	sum = bpf_csum_diff(0, 0, (void *)icp, sizeof(ic) + LB_PTB6_QUOTE, sum);
	icp->icmp6_cksum = lb_fold(sum);
	return XDP_TX;
}

SEC("xdp")
int xdpkit_lb(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct lb_flow_key fk = {};
	struct lb_vip_key vk = {};
	struct lb_backend *be = NULL;
	struct lb_flow_set *set;
	struct lb_ring_line *line;
	struct lb_vip *vip;
	struct lb_cfg *cfg;
	__u32 zero = 0, slot = 0, hash, set_idx, ring_idx, line_idx, ring_slot, way = LB_WAYS;
	__u32 outer_len, l3_len, tos;
	__u64 tag;
	__u16 now;
	__u8 mac_dst[ETH_ALEN], mac_src[ETH_ALEN];
	__u16 *ports;
	int fragment = 0, df = 0, ihl5 = 1;

	if ((void *)(eth + 1) > data_end)
		return lb_event(LB_EV_MALFORMED, data_end - data, XDP_PASS);
	l3_len = data_end - (void *)(eth + 1);
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		__u32 hlen;

		if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5)
			return lb_event(LB_EV_MALFORMED, l3_len, XDP_PASS);
		if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
			return lb_event(LB_EV_NOT_VIP, l3_len, XDP_PASS);
		hlen = ip->ihl * 4;
		/* the total length must cover the header and fit the frame (padding after it is fine) */
		if (bpf_ntohs(ip->tot_len) < hlen || (void *)ip + bpf_ntohs(ip->tot_len) > data_end)
			return lb_event(LB_EV_MALFORMED, l3_len, XDP_PASS);
		ihl5 = hlen == sizeof(*ip);
		fk.family = LB_FAMILY_V4;
		fk.proto = ip->protocol;
		fk.src[0] = ip->saddr;
		fk.dst[0] = ip->daddr;
		tos = ip->tos;
		df = !!(ip->frag_off & bpf_htons(LB_IP_DF));
		fragment = !!(ip->frag_off & bpf_htons(LB_IP_FRAG));
		ports = (void *)ip + hlen;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		__u8 next;

		if ((void *)(ip6 + 1) > data_end || ip6->version != 6 ||
		    (void *)(ip6 + 1) + bpf_ntohs(ip6->payload_len) > data_end)
			return lb_event(LB_EV_MALFORMED, l3_len, XDP_PASS);
		next = ip6->nexthdr;
		ports = (void *)(ip6 + 1);
		if (next == LB_V6_FRAG) {
			__u8 *frag = (void *)(ip6 + 1);

			if ((void *)(frag + 8) > data_end)
				return lb_event(LB_EV_MALFORMED, l3_len, XDP_PASS);
			next = frag[0];
			fragment = 1;
		}
		if (next != IPPROTO_TCP && next != IPPROTO_UDP)
			return lb_event(LB_EV_NOT_VIP, l3_len, XDP_PASS);
		fk.family = LB_FAMILY_V6;
		fk.proto = next;
		__builtin_memcpy(fk.src, &ip6->saddr, 16);
		__builtin_memcpy(fk.dst, &ip6->daddr, 16);
		tos = (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);
	} else {
		return lb_event(LB_EV_NOT_VIP, l3_len, XDP_PASS);
	}
	if (!fragment) {
		if ((void *)(ports + 2) > data_end)
			return lb_event(LB_EV_MALFORMED, l3_len, XDP_PASS);
		fk.sport = ports[0];
		fk.dport = ports[1];
	}

	cfg = bpf_map_lookup_elem(&lb_cfg, &zero);
	if (!cfg)
		return XDP_ABORTED;
	__builtin_memcpy(vk.addr, fk.dst, 16);
	vk.proto = fk.proto;
	vk.family = fk.family;
	vip = NULL;
	if ((cfg->vip_kinds & LB_VIPS_PORT) && fk.dport) {
		vk.port = fk.dport;
		vip = lb_vip_find(cfg, &vk);
	}
	if (!vip && (cfg->vip_kinds & LB_VIPS_ALL_PORTS)) {
		vk.port = 0;
		vip = lb_vip_find(cfg, &vk);
	}
	if (!vip)
		return lb_event(LB_EV_NOT_VIP, l3_len, XDP_PASS);
	if (fragment)
		xdpkit_count(&lb_events, LB_EV_FRAGMENT, l3_len);
	if (vip->flags & LB_VIP_NO_SPORT)
		fk.sport = 0;

	tag = lb_flow_hash(&fk, cfg->seed);
	hash = tag >> 32;
	set_idx = tag & cfg->flow_mask;
	tag |= !tag; /* 0 marks an empty way */
	/* The Maglev slot is read before the flow table is searched, though only a new flow needs
	 * it: the two loads are independent, so their cache misses overlap instead of adding up. */
	if (!vip->table_size)
		return lb_event(LB_EV_NO_BACKEND, l3_len, XDP_DROP);
	ring_idx = vip->ring_base + hash % vip->table_size;
	line_idx = ring_idx / LB_RING_LINE_SLOTS;
	line = bpf_map_lookup_elem(&lb_ring, &line_idx);
	if (!line)
		return lb_event(LB_EV_NO_BACKEND, l3_len, XDP_DROP);
	ring_slot = line->slot[ring_idx % LB_RING_LINE_SLOTS];
	set = bpf_map_lookup_elem(&lb_flows, &set_idx);
	if (!set)
		return lb_event(LB_EV_ENCAP_ERROR, l3_len, XDP_DROP);
	now = bpf_jiffies64() >> LB_AGE_SHIFT;
#pragma unroll
	for (int i = 0; i < LB_WAYS; i++) {
		if (set->way[i].tag == tag) {
			way = i;
			break;
		}
	}
	if (way < LB_WAYS) {
		struct lb_flow_way *w = &set->way[way];

		slot = w->backend;
		be = bpf_map_lookup_elem(&lb_backends, &slot);
		if (be && be->family && (__u16)be->gen == w->gen) {
			if (w->age != now)
				w->age = now;
			xdpkit_count(&lb_events, LB_EV_FLOW_HIT, l3_len);
		} else {
			be = NULL;
		}
	}
	if (!be) {
		struct lb_flow_way *w;
		__u32 victim = way, oldest = 0;

		if (ring_slot == LB_SLOT_NONE)
			return lb_event(LB_EV_NO_BACKEND, l3_len, XDP_DROP);
		slot = ring_slot;
		be = bpf_map_lookup_elem(&lb_backends, &slot);
		if (!be || !be->family)
			return lb_event(LB_EV_NO_BACKEND, l3_len, XDP_DROP);
		if (victim >= LB_WAYS) {
			/* an empty way, else the least recently used one */
#pragma unroll
			for (int i = 0; i < LB_WAYS; i++) {
				__u32 idle = (__u16)(now - set->way[i].age);

				if (!set->way[i].tag) {
					victim = i;
					break;
				}
				if (idle >= oldest) {
					oldest = idle;
					victim = i;
				}
			}
		}
		w = &set->way[victim & (LB_WAYS - 1)];
		/* tag last: a reader on another CPU never pairs this flow's tag with old contents */
		w->tag = 0;
		w->backend = slot;
		w->gen = be->gen;
		w->age = now;
		w->tag = tag;
		xdpkit_count(&lb_events, LB_EV_FLOW_MISS, l3_len);
	}

	outer_len = be->family == LB_FAMILY_V4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);
	if (l3_len + outer_len > cfg->mtu) {
		if (fk.family == LB_FAMILY_V6)
			return lb_event(LB_EV_TOO_BIG_ICMP, l3_len, lb_icmp6_too_big(ctx, cfg->mtu - outer_len));
		if (df && ihl5)
			return lb_event(LB_EV_TOO_BIG_ICMP, l3_len, lb_icmp4_too_big(ctx, cfg->mtu - outer_len));
		return lb_event(LB_EV_TOO_BIG_DROP, l3_len, XDP_DROP);
	}

	__builtin_memcpy(mac_dst, cfg->has_gw ? cfg->gw_mac : eth->h_source, ETH_ALEN);
	__builtin_memcpy(mac_src, cfg->redirect ? cfg->tx_mac : eth->h_dest, ETH_ALEN);
	if (bpf_xdp_adjust_head(ctx, -(int)outer_len))
		return lb_event(LB_EV_ENCAP_ERROR, l3_len, XDP_DROP);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if (be->family == LB_FAMILY_V4) {
		struct iphdr o = {};

		if (data + sizeof(*eth) + sizeof(o) > data_end)
			return lb_event(LB_EV_ENCAP_ERROR, l3_len, XDP_DROP);
		lb_macs(eth, mac_dst, mac_src, ETH_P_IP);
		o.version = 4;
		o.ihl = 5;
		o.tos = tos;
		o.tot_len = bpf_htons(l3_len + sizeof(o));
		o.frag_off = bpf_htons(LB_IP_DF);
		o.ttl = 64;
		o.protocol = fk.family == LB_FAMILY_V4 ? IPPROTO_IPIP : IPPROTO_IPV6;
		o.saddr = cfg->src4 | (hash & cfg->src4_hostmask);
		o.daddr = be->addr[0];
		o.check = lb_ip_csum(&o);
		__builtin_memcpy(data + sizeof(*eth), &o, sizeof(o));
	} else {
		struct ipv6hdr o = {};

		if (data + sizeof(*eth) + sizeof(o) > data_end)
			return lb_event(LB_EV_ENCAP_ERROR, l3_len, XDP_DROP);
		lb_macs(eth, mac_dst, mac_src, ETH_P_IPV6);
		o.version = 6;
		o.priority = tos >> 4;
		/* the flow label spreads flows over the backend's receive queues */
		o.flow_lbl[0] = ((tos & 0xf) << 4) | ((hash >> 16) & 0xf);
		o.flow_lbl[1] = hash >> 8;
		o.flow_lbl[2] = hash;
		o.payload_len = bpf_htons(l3_len);
		o.nexthdr = fk.family == LB_FAMILY_V4 ? IPPROTO_IPIP : IPPROTO_IPV6;
		o.hop_limit = 64;
		__builtin_memcpy(&o.saddr, cfg->src6, 16);
		o.saddr.in6_u.u6_addr32[3] |= hash & cfg->src6_hostmask;
		__builtin_memcpy(&o.daddr, be->addr, 16);
		__builtin_memcpy(data + sizeof(*eth), &o, sizeof(o));
	}
	xdpkit_count(&lb_vip_stats, vip->id, l3_len);
	xdpkit_count(&lb_be_stats, slot, l3_len);
	if (cfg->redirect)
		return bpf_redirect_map(&lb_tx_port, 0, 0);
	return XDP_TX;
}

char _license[] SEC("license") = "GPL";
