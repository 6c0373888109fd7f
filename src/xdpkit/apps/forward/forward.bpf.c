// SPDX-License-Identifier: GPL-2.0
/* xdpkit forward: IPv4/IPv6 routing at XDP on the kernel's own FIB and neighbour tables.
 *
 * A frame to this interface's MAC is looked up with bpf_fib_lookup (routes, policy rules unless
 * fib_direct, neighbours, the egress MTU); on success its MACs are rewritten, the TTL or hop
 * limit decremented and it leaves through fwd_ports (a DEVMAP of the plane's members). Anything
 * the plane cannot finish goes to the stack unchanged (XDP_PASS), or through fwd_cpus (a CPUMAP)
 * when --cpus is given; blackhole, unreachable and prohibit routes drop. Every case is counted.
 *
 * Next-hop memory. A FIB lookup costs about a third of a bare redirect, so each CPU remembers
 * the answer for a flow (the lookup's exact inputs) in fwd_cache4/fwd_cache6, tagged with the generations it
 * was found under: the kernel's own routing generation of the plane's namespace (rt_genid for
 * IPv4, which every routing change bumps; fib6_sernum for IPv6, which every route added or
 * removed bumps; read through the struct net pointer that fwd_locate found) and a neighbour
 * generation in the same fwd_where entry, which
 * the three neighbour tracepoint programs bump after any neighbour update or removal. The kernel
 * bumps its generations inside the change, before the netlink request returns, and a packet
 * reads them before it looks up, so no answer is used after the change that made it stale.
 * (fentry/fexit on the kernel's functions would be the direct way; this kernel refuses them.)
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>

#include <xdpkit/counter.h>
#include <xdpkit/parsing.h>
#include "forward.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

const volatile __u32 fib_flags = 0;       /* BPF_FIB_LOOKUP_DIRECT for --fib direct */
const volatile __u32 cache_mask = 0;      /* slots - 1; 0 = no next-hop memory (every packet looks up) */
const volatile __u32 ncpus = 0;           /* CPUMAP entries in use (--cpus) */
const volatile __u32 flood = 0;           /* --flood: broadcast/multicast out of every other member */

enum fwd_event fwd_event_type;            /* keeps the enum in BTF for the Python mirror */

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);   /* an array: the cheapest lookup a redirect can have */
	__uint(max_entries, 64);            /* load sets it: the highest member ifindex + 1 */
	__type(key, __u32);
	__type(value, __u32);
} fwd_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct fwd_member);
} fwd_members SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_CPUMAP);
	__uint(max_entries, 64);              /* load sets it: the highest CPU in --cpus + 1 */
	__type(key, __u32);
	__type(value, struct bpf_cpumap_val);
} fwd_cpus SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} fwd_cpu_list SEC(".maps");              /* the CPUs of --cpus, in order */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fwd_state);
} fwd_state SEC(".maps");                 /* the plane's settings (JSON), for the control plane */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * 4096);        /* load sets it: --cache-slots for each possible CPU */
	__type(key, __u32);
	__type(value, struct fwd_nexthop4);
} fwd_cache4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * 4096);        /* load sets it: --cache-slots for each possible CPU */
	__type(key, __u32);
	__type(value, struct fwd_nexthop6);
} fwd_cache6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fwd_kernel_gens);
} fwd_where SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FWD_EV_MAX);
	__type(key, __u32);
	__type(value, struct xdpkit_counter);
} fwd_events SEC(".maps");

static __always_inline int event(struct xdp_md *ctx, enum fwd_event ev, int verdict)
{
	xdpkit_count(&fwd_events, ev, ctx->data_end - ctx->data);
	return verdict;
}

/* To the stack: directly, or through the CPUMAP slot the flow hash picks. */
static __always_inline int to_stack(struct xdp_md *ctx, enum fwd_event ev, __u32 hash)
{
	event(ctx, ev, XDP_PASS);
	if (ncpus) {
		__u32 idx = hash % ncpus, *cpu = bpf_map_lookup_elem(&fwd_cpu_list, &idx);
		int verdict = cpu ? bpf_redirect_map(&fwd_cpus, *cpu, XDP_PASS) : XDP_PASS;

		if (verdict == XDP_REDIRECT)
			return event(ctx, FWD_EV_TO_CPU, verdict);
		return verdict;
	}
	return XDP_PASS;
}

/* Every input bit reaches the low bits, which pick the slot and the CPU: flows that differ in
 * one port byte or the last address byte must not share slots. The inputs are folded into 64
 * bits, then mixed by MurmurHash3's 64-bit finaliser (two multiplications; a 32-bit chain of
 * five was a profile's second hottest stretch). */
static __always_inline __u32 flow_hash(const struct fwd_flow *f, const int words)
{
	__u64 x = ((__u64)f->src[0] << 32 | f->dst[0]) ^
		  ((__u64)((__u32)f->sport << 16 | f->dport) << 13) ^ ((__u64)f->proto << 45) ^ f->ifindex;

#pragma unroll
	for (int i = 1; i < words; i++)
		x = (x ^ ((__u64)f->src[i] << 32 | f->dst[i])) * 0x9e3779b97f4a7c15ULL;
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	return (__u32)(x ^ (x >> 33));
}

static __always_inline int same_flow(const struct fwd_flow *a, const struct fwd_flow *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;
	__u64 d = 0;

#pragma unroll
	for (int i = 0; i < (int)(sizeof(*a) / 8); i++)
		d |= x[i] ^ y[i];
	return d == 0;
}

static __always_inline int mac_equal(const __u8 *a, const __u8 *b)
{
	return *(const __u32 *)a == *(const __u32 *)b && *(const __u16 *)(a + 4) == *(const __u16 *)(b + 4);
}

static __always_inline void mac_copy(__u8 *to, const __u8 *from)
{
	*(__u32 *)to = *(const __u32 *)from;
	*(__u16 *)(to + 4) = *(const __u16 *)(from + 4);
}

/* What a refusal of bpf_fib_lookup means for the frame. */
static __always_inline int refused(struct xdp_md *ctx, int rc, __u32 hash)
{
	switch (rc) {
	case BPF_FIB_LKUP_RET_BLACKHOLE:
		return event(ctx, FWD_EV_BLACKHOLE, XDP_DROP);
	case BPF_FIB_LKUP_RET_UNREACHABLE:
		return event(ctx, FWD_EV_UNREACHABLE, XDP_DROP);
	case BPF_FIB_LKUP_RET_PROHIBIT:
		return event(ctx, FWD_EV_PROHIBIT, XDP_DROP);
	case BPF_FIB_LKUP_RET_NOT_FWDED:
		return to_stack(ctx, FWD_EV_LOCAL, hash);
	case BPF_FIB_LKUP_RET_FWD_DISABLED:
		return to_stack(ctx, FWD_EV_FWD_OFF, hash);
	case BPF_FIB_LKUP_RET_NO_NEIGH:
		return to_stack(ctx, FWD_EV_NO_NEIGH, hash);
	case BPF_FIB_LKUP_RET_FRAG_NEEDED:
		return to_stack(ctx, FWD_EV_TOO_BIG, hash);
	default:
		return to_stack(ctx, FWD_EV_UNSUPPORTED, hash);
	}
}

/* Only the fields read, located through the kernel's BTF at load time (CO-RE). */
struct ns_common { unsigned int inum; } __attribute__((preserve_access_index));
typedef struct { int counter; } fwd_atomic_t;
struct netns_ipv4 { fwd_atomic_t rt_genid; } __attribute__((preserve_access_index));
struct netns_ipv6 { fwd_atomic_t fib6_sernum; } __attribute__((preserve_access_index));
struct net {
	struct ns_common ns;
	struct netns_ipv4 ipv4;
	struct netns_ipv6 ipv6;
} __attribute__((preserve_access_index));
struct nsproxy { struct net *net_ns; } __attribute__((preserve_access_index));
struct task_struct { struct nsproxy *nsproxy; } __attribute__((preserve_access_index));

/* An address read as a kernel struct: the verifier turns the call into a move and the reads
 * into loads that cannot fault (a helper call per packet cost 4 ns more). */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

/* The generation a remembered answer must carry: the kernel's routing generation for the
 * family (where fwd_locate found it) in the low half, neighbour changes in the high half.
 * Read before the lookup: a change after the read makes the answer stale, never the reverse. */
static __always_inline int current_gen(int family, __u64 *gen)
{
	struct fwd_kernel_gens *w;
	struct net *net;
	__u32 key = 0, route;

	w = bpf_map_lookup_elem(&fwd_where, &key);
	if (!w || !w->net)
		return -1;
	net = bpf_rdonly_cast((void *)w->net, bpf_core_type_id_kernel(struct net));
	route = family == AF_INET ? net->ipv4.rt_genid.counter : net->ipv6.fib6_sernum.counter;
	*gen = *(volatile __u64 *)&w->neigh << 32 | route;
	return 0;
}

/* The memory of one family (IPv4 and IPv6 answers differ in size; v4 is 1 when constant), a
 * region per CPU of one array: a per-CPU array reads a pointer per lookup first, and with random
 * slots that read missed the cache (a profile's hottest instruction). */
static __always_inline void *way(__u32 slot, const int v4)
{
	slot += bpf_get_smp_processor_id() * (cache_mask + 1);
	return v4 ? bpf_map_lookup_elem(&fwd_cache4, &slot) : bpf_map_lookup_elem(&fwd_cache6, &slot);
}

static __always_inline struct fwd_hop *hop_of(void *e, const int v4)
{
	return v4 ? &((struct fwd_nexthop4 *)e)->hop : &((struct fwd_nexthop6 *)e)->hop;
}

static __always_inline int remembered(void *e, const struct fwd_flow *f, const struct ethhdr *eth,
				      __u64 gen, const int v4)
{
	if (*(__u64 *)e != gen)
		return 0;
	if (v4) {
		const __u64 *x = (const __u64 *)&((struct fwd_nexthop4 *)e)->flow, *y = (const __u64 *)f;
		const struct fwd_flow4 *r = &((struct fwd_nexthop4 *)e)->flow;

		if (x[0] != y[0] || x[1] != y[1] || r->src != f->src[0] || r->dst != f->dst[0])
			return 0;
	} else if (!same_flow(&((struct fwd_nexthop6 *)e)->flow, f)) {
		return 0;
	}
	return mac_equal(eth->h_dest, hop_of(e, v4)->in_mac);
}

static __always_inline void remember(void *e, const struct fwd_flow *f, __u64 gen, const int v4)
{
	*(__u64 *)e = gen;
	if (v4) {
		struct fwd_flow4 *r = &((struct fwd_nexthop4 *)e)->flow;

		__builtin_memcpy(r, f, 16);
		r->src = f->src[0];
		r->dst = f->dst[0];
	} else {
		((struct fwd_nexthop6 *)e)->flow = *f;
	}
}

/* A remembered next hop, checked against the packet's size; NULL with *verdict set when the
 * packet is too big for it. */
static __always_inline struct fwd_hop *fits(struct xdp_md *ctx, struct fwd_hop *hop, __u16 tot_len,
					    __u32 hash, int *verdict)
{
	__u32 mtu = 0;

	/* The device MTU too: IPv6 changes it without a new routing generation. No MTU is below
	 * 1280 where IPv6 runs, so small packets skip the check. */
	if (tot_len > hop->mtu || (tot_len > 1280 && bpf_check_mtu(ctx, hop->oif, &mtu, 0, 0))) {
		*verdict = to_stack(ctx, FWD_EV_TOO_BIG, hash);
		return NULL;
	}
	return hop;
}

/* The next hop for ``f``: remembered, or found by the kernel and remembered. NULL with *verdict
 * set when the frame does not leave through the plane. The memory is 2-way set associative: two
 * flows whose hashes meet keep both their answers (direct-mapped, 1 of 16 flows kept missing in
 * the bench), and a new answer goes to the way that is stale, else pushes the other way out. */
static __always_inline struct fwd_hop *next_hop(struct xdp_md *ctx, struct ethhdr *eth,
						const struct fwd_flow *f, __u16 tot_len, __u32 hash,
						int *verdict, int *looked_up, const int v4)
{
	struct bpf_fib_lookup p = {};
	struct fwd_member *in;
	struct fwd_hop *hop;
	void *e, *other;
	__u32 key, slot = hash & cache_mask & ~1u;
	__u64 gen = 0;
	int rc, fresh = 0;

	e = way(slot, v4);
	if (!e) {
		*verdict = to_stack(ctx, FWD_EV_UNSUPPORTED, hash);
		return NULL;
	}
	if (cache_mask && current_gen(f->family, &gen) == 0) {
		fresh = 1;
		if (remembered(e, f, eth, gen, v4))
			return fits(ctx, hop_of(e, v4), tot_len, hash, verdict);
		other = way(slot | 1, v4);
		if (other) {
			if (remembered(other, f, eth, gen, v4))
				return fits(ctx, hop_of(other, v4), tot_len, hash, verdict);
			if (*(__u64 *)e == gen) {   /* way 0 is in use: the new answer goes there */
				if (*(__u64 *)other != gen) {
					e = other;
				} else if (v4) {            /* and way 1's stale one makes room */
					*(struct fwd_nexthop4 *)other = *(struct fwd_nexthop4 *)e;
				} else {
					*(struct fwd_nexthop6 *)other = *(struct fwd_nexthop6 *)e;
				}
			}
		}
	}
	key = f->ifindex;
	in = bpf_map_lookup_elem(&fwd_members, &key);
	if (!in) { /* not one of the plane's interfaces: the program is attached by no one else */
		*verdict = to_stack(ctx, FWD_EV_UNSUPPORTED, hash);
		return NULL;
	}
	if (!mac_equal(eth->h_dest, in->mac)) {
		*verdict = to_stack(ctx, FWD_EV_OTHER_HOST, hash);
		return NULL;
	}
	p.family = f->family;
	p.tos = f->tos;
	p.l4_protocol = f->proto;
	p.sport = f->sport;
	p.dport = f->dport;
	p.tot_len = tot_len;
	p.ifindex = f->ifindex;
	if (v4) {
		p.ipv4_src = f->src[0];
		p.ipv4_dst = f->dst[0];
	} else {
		p.flowinfo = f->flowinfo;
		__builtin_memcpy(p.ipv6_src, f->src, 16);
		__builtin_memcpy(p.ipv6_dst, f->dst, 16);
	}
	rc = bpf_fib_lookup(ctx, &p, sizeof(p), fib_flags);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS) {
		*verdict = refused(ctx, rc, hash);
		return NULL;
	}
	key = p.ifindex;
	if (!bpf_map_lookup_elem(&fwd_ports, &key)) {
		*verdict = to_stack(ctx, FWD_EV_EGRESS, hash);
		return NULL;
	}
	/* Without a generation (memory off) the slot still carries this packet's answer, but it
	 * never matches a later one. */
	remember(e, f, fresh ? gen : ~0ULL, v4);
	hop = hop_of(e, v4);
	hop->oif = p.ifindex;
	hop->mtu = p.mtu_result;
	mac_copy(hop->in_mac, in->mac);
	__builtin_memcpy(hop->smac, p.smac, 6); /* the stack is checked for alignment: bytes */
	__builtin_memcpy(hop->dmac, p.dmac, 6);
	*looked_up = 1;
	return hop;
}

static __always_inline int send(struct xdp_md *ctx, struct ethhdr *eth, struct fwd_hop *nh,
				int looked_up)
{
	mac_copy(eth->h_dest, nh->dmac);
	mac_copy(eth->h_source, nh->smac);
	event(ctx, looked_up ? FWD_EV_LOOKED_UP : FWD_EV_FORWARDED, 0);
	return bpf_redirect_map(&fwd_ports, nh->oif, 0);
}

static __always_inline int ports(struct xdpkit_cursor *c, struct fwd_flow *f, int proto)
{
	__be16 *l4 = c->pos;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	if ((void *)(l4 + 2) > c->end)
		return -1;
	f->sport = l4[0];
	f->dport = l4[1];
	return 0;
}

static __always_inline int forward4(struct xdp_md *ctx, struct xdpkit_cursor *c, struct ethhdr *eth)
{
	struct fwd_flow f; /* IPv4 reads its first 16 bytes and src[0], dst[0]: only those are set */
	struct fwd_hop *nh;
	struct iphdr *ip;
	__u16 frag = 0;
	int proto, verdict = XDP_PASS, looked_up = 0;
	__u32 check, hash;

	proto = xdpkit_parse_ipv4(c, &ip, &frag);
	if (proto < 0)
		return to_stack(ctx, FWD_EV_MALFORMED, 0);
	f.ifindex = ctx->ingress_ifindex;
	f.family = AF_INET;
	f.proto = proto;
	f.tos = ip->tos;
	f.pad = 0;
	f.sport = 0;
	f.dport = 0;
	f.flowinfo = 0;
	f.src[0] = ip->saddr;
	f.dst[0] = ip->daddr;
	if (!frag && ports(c, &f, proto) < 0)
		return to_stack(ctx, FWD_EV_MALFORMED, 0);
	hash = flow_hash(&f, 1);
	if (ip->ihl != 5)
		return to_stack(ctx, FWD_EV_IP_OPTIONS, hash);
	if (ip->ttl <= 1)
		return to_stack(ctx, FWD_EV_TTL, hash);
	nh = next_hop(ctx, eth, &f, bpf_ntohs(ip->tot_len), hash, &verdict, &looked_up, 1);
	if (!nh)
		return verdict;
	/* The TTL is the high byte of its 16-bit word: the checksum rises by 0x0100, end-around carry. */
	check = ip->check;
	check += bpf_htons(0x0100);
	ip->check = (__u16)(check + (check >= 0xffff));
	ip->ttl--;
	return send(ctx, eth, nh, looked_up);
}

static __always_inline int forward6(struct xdp_md *ctx, struct xdpkit_cursor *c, struct ethhdr *eth)
{
	struct fwd_flow f = {};
	struct fwd_hop *nh;
	struct ipv6hdr *ip6 = c->pos;
	int proto, verdict = XDP_PASS, looked_up = 0;
	__u16 frag = 0;
	__u32 hash;

	if ((void *)(ip6 + 1) > c->end)
		return to_stack(ctx, FWD_EV_MALFORMED, 0);
	if (ip6->nexthdr == IPPROTO_HOPOPTS) /* every router must read it: the stack does */
		return to_stack(ctx, FWD_EV_IP_OPTIONS, 0);
	proto = xdpkit_parse_ipv6(c, &ip6, &frag);
	if (proto < 0)
		return to_stack(ctx, FWD_EV_MALFORMED, 0);
	f.ifindex = ctx->ingress_ifindex;
	f.family = AF_INET6;
	f.proto = proto;
	f.flowinfo = *(__be32 *)ip6 & bpf_htonl(0x0fffffff);
	__builtin_memcpy(f.src, &ip6->saddr, 16);
	__builtin_memcpy(f.dst, &ip6->daddr, 16);
	if (!frag && ports(c, &f, proto) < 0)
		return to_stack(ctx, FWD_EV_MALFORMED, 0);
	hash = flow_hash(&f, 4);
	if (ip6->hop_limit <= 1)
		return to_stack(ctx, FWD_EV_TTL, hash);
	nh = next_hop(ctx, eth, &f, sizeof(*ip6) + bpf_ntohs(ip6->payload_len), hash, &verdict, &looked_up, 0);
	if (!nh)
		return verdict;
	ip6->hop_limit--;
	return send(ctx, eth, nh, looked_up);
}

SEC("xdp")
int xdpkit_forward(struct xdp_md *ctx)
{
	struct xdpkit_cursor c;
	struct ethhdr *eth;
	int l3;

	xdpkit_cursor_init(&c, ctx);
	l3 = xdpkit_parse_eth(&c, &eth, NULL);
	if (l3 < 0)
		return to_stack(ctx, FWD_EV_MALFORMED, 0);
	if (eth->h_dest[0] & 1) { /* broadcast or multicast */
		if (flood)
			return event(ctx, FWD_EV_FLOODED, bpf_redirect_map(&fwd_ports, 0,
								    BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS));
		return to_stack(ctx, FWD_EV_MULTICAST, 0);
	}
	if (bpf_ntohs(eth->h_proto) != l3) /* a VLAN tag: the helper routes the tagged frame wrongly */
		return to_stack(ctx, FWD_EV_UNSUPPORTED, 0);
	if (l3 == ETH_P_IP)
		return forward4(ctx, &c, eth);
	if (l3 == ETH_P_IPV6)
		return forward6(ctx, &c, eth);
	return to_stack(ctx, FWD_EV_NOT_IP, 0);
}

/* ---- where the kernel keeps its routing generations -------------------------------------- */

const volatile __u32 locate_tid = 0;      /* the loader's thread, in the plane's namespace */

/* Attached by the loader for one system call of its own: records where the loader's network
 * namespace keeps rt_genid (bumped by every IPv4 routing change: routes, rules, nexthops,
 * addresses, links, MTU, forwarding sysctls) and fib6_sernum (every IPv6 route added or
 * removed). The forwarding program reads both on every packet. */
SEC("tp_btf/sys_enter")
int xdpkit_fwd_locate(void *ctx)
{
	struct task_struct *task;
	struct fwd_kernel_gens *w;
	struct net *net;
	__u32 key = 0;

	if ((__u32)bpf_get_current_pid_tgid() != locate_tid)
		return 0;
	w = bpf_map_lookup_elem(&fwd_where, &key);
	task = bpf_get_current_task_btf();
	if (!w || !task->nsproxy)
		return 0;
	net = task->nsproxy->net_ns;
	w->net = (__u64)net;
	w->netns = net->ns.inum;
	return 0;
}

/* Neighbours: an update (new MAC, new state) once it is done, a timer's state change, removal.
 * Global (every namespace): an unrelated change only costs one lookup per flow and CPU. */
static __always_inline int bump(void)
{
	__u32 key = 0;
	struct fwd_kernel_gens *w = bpf_map_lookup_elem(&fwd_where, &key);

	if (w)
		__sync_fetch_and_add(&w->neigh, 1);
	return 0;
}

SEC("tp_btf/neigh_update_done") int xdpkit_fwd_neigh_upd(void *ctx) { return bump(); }
SEC("tp_btf/neigh_timer_handler") int xdpkit_fwd_neigh_tmr(void *ctx) { return bump(); }
SEC("tp_btf/neigh_cleanup_and_release") int xdpkit_fwd_neigh_del(void *ctx) { return bump(); }

char LICENSE[] SEC("license") = "GPL";
