// SPDX-License-Identifier: GPL-2.0
/* xdpkit firewall: first-match rules over src/dst prefixes, protocol, ports, TCP flags, ICMP
 * type and length, without a loop over rules.
 *
 * Each field maps a packet value to a *class*; a class is a bitmap of the rules whose condition
 * on that field holds (rules without a condition on the field are in every class). ANDing the
 * bitmaps of all fields gives the matching rules; the lowest bit is the first rule in priority
 * order. The cost depends on the number of fields and rule words, not on how many prefixes or
 * ports the rules name.
 *
 * Prefixes of any length live in range tables (rangetable.py): a direct index on the top bits
 * of the address, then a small B+-tree over the interval starts of that chunk of the space, so
 * an address costs a few array reads whatever the set's size, for IPv4 and IPv6 alike.
 *
 * Every table has two halves (generations). The control plane fills the inactive half, then
 * flips fw_active.gen with one 4-byte write; each packet reads the generation once, so it
 * sees the old rule set or the new one, never a mix. Tables whose size follows the rule set
 * (prefix tables, per-source rate state) are inner maps of a 2-slot array of maps: an apply
 * creates them at the size it needs and puts them in the inactive slot before the flip.
 */
#include <xdpkit/parsing.h>
#include <xdpkit/stats.h>
#include "firewall.h"

const volatile __u8 cfg_src_memo = 1;   /* the per-CPU memos: fw_src_memo, fw_verdict_memo */

#define READ_ONCE_U32(x) (*(volatile __u32 *)&(x))

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1 << FW_SRC_MEMO_BITS);
	__type(key, __u32);
	__type(value, struct fw_src_memo);
} fw_src_memo SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1 << FW_VERDICT_MEMO_BITS);
	__type(key, __u32);
	__type(value, struct fw_verdict_memo);
} fw_verdict_memo SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fw_active);
} fw_active SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct fw_gen);
} fw_gen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * FW_MAX_RULES);
	__type(key, __u32);
	__type(value, struct fw_rule);
} fw_rule SEC(".maps");

/* Only the control plane writes this, and only to wait for programs in flight (see
 * sized.wait_for_packets); no program reads it. */
struct fw_sync_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct fw_sync_inner);
} fw_sync SEC(".maps");

/* Only the control plane reads this: rule texts per generation, so any process (and
 * `xdpkit firewall rule list`) can rebuild the rule set from the kernel alone. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * FW_MAX_RULES);
	__type(key, __u32);
	__type(value, struct fw_text);
} fw_text SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * FW_MAX_CLASSES);
	__type(key, __u32);
	__type(value, struct fw_bitmap);
} fw_bitmap SEC(".maps");

/* Inner maps: the shapes every map an apply creates for these slots must have (BPF_F_INNER_MAP
 * lets array sizes differ); max_entries here is only the template's. Sizes, not __type: clang
 * describes a type reached through two pointers (outer map -> inner map -> value) only as a
 * forward declaration in BTF, which libbpf cannot size. */
struct fw_nodes4 {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_INNER_MAP);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct fw_node4));
};

/* The IPv4 direct index: a fixed size, so the verifier knows it and inlines its reads */
struct fw_dir4 {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, (1 << FW_DIR4_BITS) / FW_NODE_WORDS);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct fw_node4));
};

struct fw_nodes6 {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_INNER_MAP);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct fw_node6));
};

#define FW_GENERATIONS(name, inner)                            \
	struct {                                               \
		__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);      \
		__uint(max_entries, 2);                        \
		__type(key, __u32);                            \
		__array(values, inner);                        \
	} name SEC(".maps")

FW_GENERATIONS(fw_src4, struct fw_nodes4);
FW_GENERATIONS(fw_dst4, struct fw_nodes4);
FW_GENERATIONS(fw_src4_dir, struct fw_dir4);
FW_GENERATIONS(fw_dst4_dir, struct fw_dir4);
FW_GENERATIONS(fw_src6, struct fw_nodes6);
FW_GENERATIONS(fw_dst6, struct fw_nodes6);

#define FW_TABLE(name, size)                                   \
	struct {                                               \
		__uint(type, BPF_MAP_TYPE_ARRAY);              \
		__uint(max_entries, 2 * (size));               \
		__type(key, __u32);                            \
		__type(value, __u32);                          \
	} name SEC(".maps")

FW_TABLE(fw_proto, 256);
FW_TABLE(fw_sport, FW_PORT_NONE + 1);
FW_TABLE(fw_dport, FW_PORT_NONE + 1);
FW_TABLE(fw_flags, FW_BYTE_NONE + 1);
FW_TABLE(fw_icmp, FW_BYTE_NONE + 1);
FW_TABLE(fw_len, 65536);

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FW_MAX_RULES);
	__type(key, __u32);
	__type(value, struct xdpkit_counter);
} fw_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FW_NREASONS);
	__type(key, __u32);
	__type(value, struct xdpkit_counter);
} fw_reasons SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FW_MAX_RULES);
	__type(key, __u32);
	__type(value, struct fw_tat);
} fw_rl_rule SEC(".maps");

struct fw_rl_sets4 {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_INNER_MAP);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct fw_rl_set4));
};

struct fw_rl_sets4_default {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << FW_RL4_DEFAULT_BITS);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct fw_rl_set4));
};

struct fw_rl_lru6 {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(struct fw_rl_key6));
	__uint(value_size, sizeof(struct fw_tat));
};

/* Per-source rate state, one map per generation slot; an apply that keeps the size puts the
 * same map in both slots, so sources keep their state. */
FW_GENERATIONS(fw_rl_src4, struct fw_rl_sets4);
FW_GENERATIONS(fw_rl_src4_dflt, struct fw_rl_sets4_default);
FW_GENERATIONS(fw_rl_src6, struct fw_rl_lru6);

/* Find or create the rate state of one source (LRU: old sources make room for new ones). */
static __always_inline struct fw_tat *fw_source_tat(void *map, void *key)
{
	struct fw_tat *tat = bpf_map_lookup_elem(map, key);

	if (!tat) {
		struct fw_tat zero = {};

		bpf_map_update_elem(map, key, &zero, BPF_NOEXIST);
		tat = bpf_map_lookup_elem(map, key);
	}
	return tat;
}

/* Find or make the rate state of one IPv4 source for one rule (see struct fw_rl_way4). Two CPUs
 * making the same new source at once may each take a way; the first way found wins afterwards
 * and the other ages out. */
static __always_inline struct fw_tat *fw_source_tat4(void *sets, __u32 bits, __u32 slot, __u32 addr,
						     __u64 now)
{
	__u32 tag = slot + 1;
	__u32 idx = ((addr ^ (tag * 0x9e3779b9u)) * 2654435761u) >> ((32 - bits) & 31);
	struct fw_rl_set4 *set = bpf_map_lookup_elem(sets, &idx);
	struct fw_rl_way4 *w;

	if (!set)
		return NULL;
	if (set->way[0].tag == tag && set->way[0].addr == addr) {
		w = &set->way[0];
	} else if (set->way[1].tag == tag && set->way[1].addr == addr) {
		w = &set->way[1];
	} else {
		/* an empty way, else the one idle longer */
		if (!set->way[0].tag || (set->way[1].tag && set->way[0].seen <= set->way[1].seen))
			w = &set->way[0];
		else
			w = &set->way[1];
		w->tag = 0;
		w->tat.pps = 0;
		w->tat.bps = 0;
		w->addr = addr;
		w->seen = now;
		w->tag = tag;
		return &w->tat;
	}
	if (w->seen != now)
		w->seen = now;
	return &w->tat;
}

struct fw_pkt {
	__u32 family;          /* 4, 6, or 0 for non-IP */
	__u32 src4, dst4;
	__u8 src6[16], dst6[16];
	__u32 proto, sport, dport, flags, icmp, len;
	__u32 et_idx, pr_idx;
};

struct fw_scan {
	__u64 m[FW_WORDS];     /* matching rules, one bit per rule in priority order */
	__u32 gen;
	__u32 found;
	__u32 slot;
	__u32 reason;
	__u32 drop;
	/* what rate limiting needs of the packet, by value: a pointer would not survive the
	 * global-function call that fills m[] (the verifier forgets what the stack held) */
	__u32 family;
	__u32 len;
	__u32 src4;
	__u8 src6[16];
	__u32 c_src;           /* the source address class, looked up before the scan */
	__u32 rl4_bits;        /* fw_gen.rl4_bits */
};

static __always_inline int fw_finish(struct xdp_md *ctx, struct fw_pkt *p, __u32 reason, int drop)
{
	xdpkit_count(&fw_reasons, reason, p->len);
	/* Verdicts only: the firewall's own reasons and rule counters say the rest, and every
	 * counter costs time on the path that drops floods. */
	return xdpkit_stats_verdict(ctx, drop ? XDP_DROP : XDP_PASS);
}

static __always_inline struct fw_rule *fw_rule_at(__u32 gen, __u32 index)
{
	__u32 idx = gen * FW_MAX_RULES + (index & (FW_MAX_RULES - 1));

	return bpf_map_lookup_elem(&fw_rule, &idx);
}

static __always_inline __u32 fw_table(void *map, __u32 gen, __u32 size, __u32 key)
{
	__u32 idx = gen * size + key;
	__u32 *v = bpf_map_lookup_elem(map, &idx);

	return v ? *v : 0;
}

/* 1 if a <= b, for values below 2^63, without a branch: a compare per key would double the
 * paths the verifier walks through a node. The empty asm keeps clang from turning the
 * arithmetic back into a compare. */
static __always_inline __u64 fw_le63(__u64 a, __u64 b)
{
	__u64 d = a - b - 1;

	asm volatile("" : "+r"(d));
	return d >> 63;
}

/* 1 if a < b for any u64 values, without a branch (the borrow of a - b). */
static __always_inline __u64 fw_lt64(__u64 a, __u64 b)
{
	__u64 d = a - b;

	asm volatile("" : "+r"(d));
	return ((~a & b) | ((~a | b) & d)) >> 63;
}

/* The class of an IPv4 address in one prefix table (see rangetable.lookup). */
static __always_inline __u32 fw_walk4(void *dir, void *nodes, __u32 addr)
{
	__u32 shift = 32 - FW_DIR4_BITS;
	__u32 c = addr >> shift, rel = addr & ((1u << shift) - 1);
	__u32 idx = c / FW_NODE_WORDS, ref;
	struct fw_node4 *n = bpf_map_lookup_elem(dir, &idx);

	if (!n)
		return FW_NO_CLASS;
	ref = n->w[c & (FW_NODE_WORDS - 1)];
	for (int d = 0; d < FW_DEPTH4; d++) {
		__u64 j = 0;

		if (ref & FW_REF_CLASS)
			return ref & ~FW_REF_CLASS;
		idx = ref & FW_REF_INDEX;
		n = bpf_map_lookup_elem(nodes, &idx);
		if (!n)
			return FW_NO_CLASS;
		/* j = how many sorted keys are <= rel, without a branch. A leaf counts its 7 keys (w[0]
		 * <= rel: the leaf's first start) with independent loads, 1-2 ns faster than a binary
		 * search's chain of dependent ones; an internal node's 15 take a binary search. */
		if (ref & FW_REF_LEAF) {
			for (int i = 1; i < FW_LEAF4; i++)
				j += fw_le63(n->w[i], rel);
			return n->w[(FW_LEAF4 + j) & (FW_NODE_WORDS - 1)];
		}
		j = fw_le63(n->w[7], rel) << 3;           /* separators w[0..14] */
		j += fw_le63(n->w[j + 3], rel) << 2;
		j += fw_le63(n->w[j + 1], rel) << 1;
		j += fw_le63(n->w[j], rel);
		ref = n->w[FW_FANOUT4 - 1] + (__u32)j;
	}
	return ref & FW_REF_CLASS ? ref & ~FW_REF_CLASS : FW_NO_CLASS;
}

/* key <= (hi, lo): keys' high words, like hi, are relative to the chunk (below 2^60) */
static __always_inline __u64 fw_le128(const __u64 *key, __u64 hi, __u64 lo)
{
	__u64 hi_lt = fw_le63(key[0] + 1, hi);
	__u64 hi_eq = fw_le63(key[0] ^ hi, 0);

	return hi_lt | (hi_eq & (fw_lt64(lo, key[1]) ^ 1));
}

static __always_inline __u32 fw_walk6(void *nodes, __u64 hi, __u64 lo, __u32 bits)
{
	__u32 shift = (64 - bits) & 63;
	__u64 c = hi >> shift;
	__u32 idx = c / FW_NODE_WORDS, ref;
	struct fw_node6 *n = bpf_map_lookup_elem(nodes, &idx);

	hi &= (1ULL << shift) - 1;
	if (!n)
		return FW_NO_CLASS;
	ref = n->w[c & (FW_NODE_WORDS - 1)];
	for (int d = 0; d < FW_DEPTH6; d++) {
		__u64 j = 0;

		if (ref & FW_REF_CLASS)
			return ref & ~FW_REF_CLASS;
		idx = ref & FW_REF_INDEX;
		n = bpf_map_lookup_elem(nodes, &idx);
		if (!n)
			return FW_NO_CLASS;
		if (ref & FW_REF_LEAF) { /* keys 1..4 (key 0 <= the address): sorted, so key 4 <= it
					  * only when all are */
			j = fw_le128(&n->w[2 * 2], hi, lo) << 1;
			j += fw_le128(&n->w[2 * (j + 1)], hi, lo);
			j += fw_le128(&n->w[2 * 4], hi, lo);
			return n->w[(2 * FW_LEAF6 + j) & (FW_NODE_WORDS - 1)];
		}
		j = fw_le128(&n->w[2 * 3], hi, lo) << 2;  /* separators 0..6 */
		j += fw_le128(&n->w[2 * (j + 1)], hi, lo) << 1;
		j += fw_le128(&n->w[2 * j], hi, lo);
		ref = n->w[2 * (FW_FANOUT6 - 1)] + (__u32)j;
	}
	return ref & FW_REF_CLASS ? ref & ~FW_REF_CLASS : FW_NO_CLASS;
}

/* The class of an address in one prefix table of a generation, or FW_NO_CLASS. One function
 * per table: a lookup instruction reached by inner maps of two outer maps cannot be bound to one
 * map, so the kernel would call the generic helper, an indirect call (a retpoline here: ~20 ns a
 * level instead of ~2). Inlined into the one global function that looks up each side (src:
 * fw_src_class, dst: fw_match), so each is verified once and costs no call of its own. */
#define FW_PREFIX_CLASS4(fname, dir_outer, outer)                                   \
	static __always_inline __u32 fname(__u32 gen, __u32 addr)                   \
	{                                                                           \
		void *dir = bpf_map_lookup_elem(&dir_outer, &gen);                  \
		void *nodes = bpf_map_lookup_elem(&outer, &gen);                    \
		return dir && nodes ? fw_walk4(dir, nodes, addr) : FW_NO_CLASS;     \
	}
#define FW_PREFIX_CLASS6(fname, outer)                                              \
	static __always_inline __u32 fname(__u32 gen, __u64 hi, __u64 lo, __u32 bits) \
	{                                                                           \
		void *nodes = bpf_map_lookup_elem(&outer, &gen);                    \
		return nodes ? fw_walk6(nodes, hi, lo, bits) : FW_NO_CLASS;         \
	}

FW_PREFIX_CLASS4(fw_src_prefix4, fw_src4_dir, fw_src4)
FW_PREFIX_CLASS4(fw_dst_prefix4, fw_dst4_dir, fw_dst4)
FW_PREFIX_CLASS6(fw_src_prefix6, fw_src6)
FW_PREFIX_CLASS6(fw_dst_prefix6, fw_dst6)

static __always_inline __u32 fw_class4(__u32 dst, struct fw_gen *g, __u32 gen, __u32 addr)
{
	__u32 bits = g->prefix_bits[dst ? FW_T_DST4 : FW_T_SRC4];
	__u32 dflt = dst ? g->dst_default4 : g->src_default4;
	__u32 c;

	if (!bits)
		return dflt;
	c = dst ? fw_dst_prefix4(gen, addr) : fw_src_prefix4(gen, addr);
	return c == FW_NO_CLASS ? dflt : c;
}

static __always_inline __u32 fw_class6(__u32 dst, struct fw_gen *g, __u32 gen, __u8 *addr)
{
	__u32 bits = g->prefix_bits[dst ? FW_T_DST6 : FW_T_SRC6];
	__u32 dflt = dst ? g->dst_default6 : g->src_default6;
	__u64 hi, lo;
	__u32 c;

	if (!bits)
		return dflt;
	__builtin_memcpy(&hi, addr, 8);
	__builtin_memcpy(&lo, addr + 8, 8);
	hi = bpf_be64_to_cpu(hi);
	lo = bpf_be64_to_cpu(lo);
	c = dst ? fw_dst_prefix6(gen, hi, lo, bits) : fw_src_prefix6(gen, hi, lo, bits);
	return c == FW_NO_CLASS ? dflt : c;
}

static __always_inline struct fw_bitmap *fw_bm(__u32 gen, __u32 class)
{
	__u32 idx = gen * FW_MAX_CLASSES + (class & (FW_MAX_CLASSES - 1));

	return bpf_map_lookup_elem(&fw_bitmap, &idx);
}

static __always_inline int fw_ctz(__u64 x)
{
	int n = 0;

	if (!(x & 0xffffffffULL)) { n += 32; x >>= 32; }
	if (!(x & 0xffffULL)) { n += 16; x >>= 16; }
	if (!(x & 0xffULL)) { n += 8; x >>= 8; }
	if (!(x & 0xfULL)) { n += 4; x >>= 4; }
	if (!(x & 0x3ULL)) { n += 2; x >>= 2; }
	if (!(x & 0x1ULL)) { n += 1; }
	return n;
}

/* GCRA (a token bucket in one timestamp): conform if the theoretical arrival time is at
 * most tau ahead of now; then move it on by the cost. Lock-free with compare-and-swap. */
static __always_inline int fw_gcra(__u64 *tat, __u64 now, __u64 cost, __u64 tau)
{
	for (int i = 0; i < 4; i++) {
		__u64 old = *(volatile __u64 *)tat;
		__u64 t = old > now ? old : now;

		if (t - now > tau)
			return 0;
		if (__sync_val_compare_and_swap(tat, old, t + cost) == old)
			return 1;
	}
	return 0; /* heavy contention on one bucket: treat as over the rate */
}

/* Global: verified once, whatever path leads here. */
__noinline int fw_within_rate(struct fw_rule *r, struct fw_scan *p)
{
	struct fw_tat *tat;
	/* The coarse clock (one tick: 1-4 ms) costs a fraction of the precise one in VMs; against
	 * a one-second burst tolerance the error is below half a percent. */
	__u64 now = bpf_ktime_get_coarse_ns();
	int ok = 1;

	if (!r || !p)
		return 0;
	if (r->per_source) {
		__u32 gen = p->gen & 1;

		if (p->family == 4 && p->rl4_bits == FW_RL4_DEFAULT_BITS) {
			void *sets = bpf_map_lookup_elem(&fw_rl_src4_dflt, &gen);

			if (!sets)
				return 0;
			tat = fw_source_tat4(sets, FW_RL4_DEFAULT_BITS, r->slot, p->src4, now);
		} else if (p->family == 4) {
			void *sets = bpf_map_lookup_elem(&fw_rl_src4, &gen);

			if (!sets || !p->rl4_bits)
				return 0;
			tat = fw_source_tat4(sets, p->rl4_bits, r->slot, p->src4, now);
		} else {
			struct fw_rl_key6 k6 = { .slot = r->slot };
			void *lru = bpf_map_lookup_elem(&fw_rl_src6, &gen);

			if (!lru)
				return 0;
			__builtin_memcpy(k6.addr, p->src6, 16);
			tat = fw_source_tat(lru, &k6);
		}
		if (!tat)
			return 0;
	} else {
		__u32 slot = r->slot;

		tat = bpf_map_lookup_elem(&fw_rl_rule, &slot);
		if (!tat)
			return 0;
	}
	if (r->pps_interval)
		ok = fw_gcra(&tat->pps, now, r->pps_interval, r->pps_tau);
	if (ok && r->byte_ns_x1k)
		ok = fw_gcra(&tat->bps, now, (p->len * r->byte_ns_x1k) >> 10, r->bps_tau);
	return ok;
}


/* One step: take the first matching rule. A rated rule within its rate clears its bit and
 * asks for another step; anything else ends the scan with a decision. */
static int fw_scan_step(__u32 i, void *data)
{
	struct fw_scan *sc = data;
	struct fw_rule *r;
	__u32 w;
	__u64 word = 0;

	for (w = 0; w < FW_WORDS; w++) {
		word = sc->m[w];
		if (word)
			break;
	}
	if (!word || w >= FW_WORDS)
		return 1;
	r = fw_rule_at(sc->gen, w * 64 + fw_ctz(word));
	if (!r)
		return 1;
	if (r->rated && fw_within_rate(r, sc)) {
		xdpkit_count(&fw_reasons, FW_R_WITHIN_RATE, sc->len);
		sc->m[w] = word & (word - 1);
		return 0;
	}
	sc->found = 1;
	sc->slot = r->slot;
	sc->drop = r->rated ? 1 : r->drop;
	sc->reason = r->rated ? FW_R_RATE_LIMITED : FW_R_RULE;
	return 1;
}

/* A global function: the verifier checks it once, not once per path of its caller (the parse
 * has many paths: VLAN depths, IPv4/IPv6, extension headers, L4 protocols). */
__noinline int fw_parse(struct xdp_md *ctx, struct fw_pkt *p)
{
	struct xdpkit_cursor c;
	struct ethhdr *eth;
	__u16 frag = 0;
	int l3, l4;

	if (!p)
		return -1;
	xdpkit_cursor_init(&c, ctx);
	p->len = ctx->data_end - ctx->data;
	if (p->len > 65535)
		p->len = 65535;
	p->sport = p->dport = FW_PORT_NONE;
	p->flags = p->icmp = FW_BYTE_NONE;
	p->pr_idx = XDPKIT_ST_P_NON_IP;
	l3 = xdpkit_parse_eth(&c, &eth, NULL);
	if (l3 < 0) {
		p->et_idx = XDPKIT_ST_ET_OTHER;
		return -1;
	}
	p->et_idx = xdpkit_st_etype_index(bpf_ntohs(eth->h_proto));
	if (l3 == ETH_P_IP) {
		struct iphdr *ip;

		l4 = xdpkit_parse_ipv4(&c, &ip, &frag);
		if (l4 < 0)
			goto malformed;
		p->family = 4;
		p->src4 = bpf_ntohl(ip->saddr);
		p->dst4 = bpf_ntohl(ip->daddr);
	} else if (l3 == ETH_P_IPV6) {
		struct ipv6hdr *ip6;

		l4 = xdpkit_parse_ipv6(&c, &ip6, &frag);
		if (l4 < 0)
			goto malformed;
		p->family = 6;
		__builtin_memcpy(p->src6, &ip6->saddr, 16);
		__builtin_memcpy(p->dst6, &ip6->daddr, 16);
	} else {
		p->family = 0;
		return 0;
	}
	p->proto = l4;
	p->pr_idx = xdpkit_st_proto_index(l4);
	if (frag)
		return 1; /* non-first fragment: no L4 header, only address/proto/len rules apply */
	if (l4 == IPPROTO_TCP) {
		struct tcphdr *t;

		if (xdpkit_parse_tcp(&c, &t) < 0)
			goto malformed;
		p->sport = bpf_ntohs(t->source);
		p->dport = bpf_ntohs(t->dest);
		p->flags = ((__u8 *)t)[13];
	} else if (l4 == IPPROTO_UDP) {
		struct udphdr *u;

		if (xdpkit_parse_udp(&c, &u) < 0)
			goto malformed;
		p->sport = bpf_ntohs(u->source);
		p->dport = bpf_ntohs(u->dest);
	} else if (l4 == IPPROTO_ICMP || l4 == IPPROTO_ICMPV6) {
		__u8 *type = c.pos;

		if ((void *)(type + 4) > c.end) /* type, code, checksum: a complete ICMP header */
			goto malformed;
		p->icmp = *type;
	}
	return 0;
malformed:
	p->pr_idx = XDPKIT_ST_P_OTHER;
	return -1;
}

/* The class of the source address, and above FW_DECIDE_SHIFT the rule that decides on it
 * alone (index + 1, see FW_DECIDE_SHIFT), 0 when the scan must go on. */
__noinline __u32 fw_src_class(struct fw_pkt *p, struct fw_gen *g, __u32 gen)
{
	if (!p || !g)
		return 0;
	gen &= 1;
	/* source tables and defaults hold the deciding rule already (compiler.src_value): no
	 * read of the class's bitmap here */
	return p->family == 4 ? fw_class4(0, g, gen, p->src4) : fw_class6(0, g, gen, p->src6);
}

/* fw_src_class through the per-CPU memo (IPv4): a flood from a few thousand sources skips the
 * prefix tables. Off with cfg_src_memo = 0 (the benchmark measures the tables that way). */
static __always_inline __u32 fw_src_class_memo(struct fw_pkt *p, struct fw_gen *g, __u32 gen, __u32 epoch)
{
	struct fw_src_memo *m;
	__u32 idx, c;

	if (!cfg_src_memo || p->family != 4)
		return fw_src_class(p, g, gen);
	idx = (p->src4 * 2654435761u) >> (32 - FW_SRC_MEMO_BITS);
	m = bpf_map_lookup_elem(&fw_src_memo, &idx);
	if (m && m->addr == p->src4 && m->epoch == epoch + 1)
		return m->c_src;
	c = fw_src_class(p, g, gen);
	if (m) {
		m->addr = p->src4;
		m->epoch = epoch + 1;
		m->c_src = c;
	}
	return c;
}

/* Look up every field's class and AND the class bitmaps into sc->m. Global, so verified once.
 * Class 0 is "every rule": a field no rule looks at costs no lookup. Returns 0 when sc->m
 * holds the matches, rule index + 1 when an address alone decided, -1 on a missing entry. */
__noinline int fw_match(struct fw_pkt *p, struct fw_gen *g, struct fw_scan *sc)
{
	struct fw_bitmap *b_src, *b_dst, *b_proto, *b_sport, *b_dport, *b_flags, *b_icmp, *b_len;
	__u32 c_src, c_dst = 0, c_proto = 0, c_sport = 0, c_dport = 0, c_flags = 0, c_icmp = 0, c_len = 0;
	__u32 gen, fields, nwords;

	if (!p || !g || !sc)
		return -1;
	gen = sc->gen & 1;
	fields = g->fields;
	nwords = g->nwords;
	c_src = sc->c_src;
	if (fields & FW_F_DST)
		c_dst = p->family == 4 ? fw_class4(1, g, gen, p->dst4) : fw_class6(1, g, gen, p->dst6);
	if (fields & FW_F_PROTO)
		c_proto = fw_table(&fw_proto, gen, 256, p->proto & 0xff);
	if (fields & FW_F_SPORT)
		c_sport = fw_table(&fw_sport, gen, FW_PORT_NONE + 1, p->sport);
	if (fields & FW_F_DPORT)
		c_dport = fw_table(&fw_dport, gen, FW_PORT_NONE + 1, p->dport);
	if (fields & FW_F_FLAGS)
		c_flags = fw_table(&fw_flags, gen, FW_BYTE_NONE + 1, p->flags);
	if (fields & FW_F_ICMP)
		c_icmp = fw_table(&fw_icmp, gen, FW_BYTE_NONE + 1, p->icmp);
	if (fields & FW_F_LEN)
		c_len = fw_table(&fw_len, gen, 65536, p->len & 0xffff);
	b_src = fw_bm(gen, c_src);
	if (!b_src)
		return -1;
	/* fields no rule uses share class 0 ("every rule"): no second lookup for them */
	b_dst = c_dst ? fw_bm(gen, c_dst) : b_src;
	if (b_dst && c_dst && b_dst->decide_dst)
		return b_dst->decide_dst;
	b_proto = c_proto ? fw_bm(gen, c_proto) : b_src;
	b_sport = c_sport ? fw_bm(gen, c_sport) : b_src;
	b_dport = c_dport ? fw_bm(gen, c_dport) : b_src;
	b_flags = c_flags ? fw_bm(gen, c_flags) : b_src;
	b_icmp = c_icmp ? fw_bm(gen, c_icmp) : b_src;
	b_len = c_len ? fw_bm(gen, c_len) : b_src;
	if (!b_dst || !b_proto || !b_sport || !b_dport || !b_flags || !b_icmp || !b_len)
		return -1;
	for (__u32 w = 0; w < FW_WORDS; w++) {
		if (w >= nwords)
			break;
		sc->m[w] = b_src->w[w] & b_dst->w[w] & b_proto->w[w] & b_sport->w[w] & b_dport->w[w] &
			   b_flags->w[w] & b_icmp->w[w] & b_len->w[w];
	}
	return 0;
}

/* The key of fw_verdict_memo: the packet's values of the fields the rule set uses (the control
 * plane's masks in fw_gen clear the others). */
static __always_inline void fw_verdict_key(struct fw_pkt *p, struct fw_gen *g, __u64 *addrs, __u64 *l4, __u32 *len)
{
	*addrs = ((__u64)p->src4 << 32 | p->dst4) & g->memo_addrs_mask;
	*l4 = ((__u64)(p->proto & 0xff) | (__u64)p->sport << 8 | (__u64)p->dport << 25 |
	       (__u64)p->flags << 42 | (__u64)p->icmp << 51) & g->memo_l4_mask;
	*len = p->len & g->memo_len_mask;
}

/* A decision that depends only on the key: remember it, then count it and act. */
static __always_inline int fw_decided(struct xdp_md *ctx, struct fw_pkt *p, struct fw_verdict_memo *vm,
				      __u32 epoch, __u32 slot1, __u32 reason, int drop)
{
	if (vm) { /* the key is in place (epoch 0 until now) */
		vm->rated_rule = 0;
		vm->slot = slot1;
		vm->len_decision |= reason << 16 | (drop ? 1 : 0) << 24;
		vm->epoch = epoch + 1;
	}
	if (slot1)
		xdpkit_count(&fw_counters, (slot1 - 1) & (FW_MAX_RULES - 1), p->len);
	return fw_finish(ctx, p, reason, drop);
}

SEC("xdp")
int xdpkit_firewall(struct xdp_md *ctx)
{
	struct fw_pkt p = {};
	__u32 zero = 0, gen, epoch;
	struct fw_active *act = bpf_map_lookup_elem(&fw_active, &zero);
	struct fw_gen *g;
	int parsed;

	if (!act)
		return XDP_PASS;
	/* read once: the memo's epoch and the tables' half must come from the same apply */
	epoch = READ_ONCE_U32(act->gen);
	gen = epoch & 1;
	g = bpf_map_lookup_elem(&fw_gen, &gen);
	if (!g)
		return XDP_PASS;
	parsed = fw_parse(ctx, &p);
	if (parsed < 0)
		return fw_finish(ctx, &p, FW_R_MALFORMED, g->malformed_drop);
	if (p.family == 0)
		return fw_finish(ctx, &p, FW_R_NON_IP, g->non_ip_drop);
	if (parsed == 1)
		xdpkit_count(&fw_reasons, FW_R_FRAGMENT, p.len);

	struct fw_verdict_memo *vm = NULL;
	struct fw_scan sc;
	struct fw_rule *r;
	int charged = 0;        /* the first matching (rated) rule's rate was checked: within */
	__u32 c_src = 0;

	/* A decision seen before for the same field values (IPv4, memo on): one array access. */
	if (cfg_src_memo && p.family == 4) {
		__u64 addrs, l4;
		__u32 len, idx;

		fw_verdict_key(&p, g, &addrs, &l4, &len);
		idx = ((addrs ^ (l4 << 7) ^ (l4 >> 29) ^ len) * 0x9e3779b97f4a7c15ULL) >> (64 - FW_VERDICT_MEMO_BITS);
		vm = bpf_map_lookup_elem(&fw_verdict_memo, &idx);
		if (vm) {
			if (vm->epoch == epoch + 1 && vm->addrs == addrs && vm->l4 == l4 &&
			    (vm->len_decision & 0xffff) == len) {
				if (!vm->rated_rule) {
					if (vm->slot)
						xdpkit_count(&fw_counters, (vm->slot - 1) & (FW_MAX_RULES - 1), p.len);
					return fw_finish(ctx, &p, (vm->len_decision >> 16) & 0xff, vm->len_decision >> 24);
				}
				r = fw_rule_at(gen, vm->rated_rule - 1);
				if (!r)
					return fw_finish(ctx, &p, FW_R_POLICY, g->policy_drop);
				__builtin_memset(&sc, 0, sizeof(sc));
				sc.gen = gen;
				sc.family = 4;
				sc.len = p.len;
				sc.src4 = p.src4;
				sc.rl4_bits = g->rl4_bits;
				if (!fw_within_rate(r, &sc)) {
					xdpkit_count(&fw_counters, r->slot & (FW_MAX_RULES - 1), p.len);
					return fw_finish(ctx, &p, FW_R_RATE_LIMITED, 1);
				}
				charged = 1;  /* within its rate: the later rules decide, as below */
				vm = NULL;
			} else {
				vm->epoch = 0; /* taken: filled below once the decision is known */
				vm->addrs = addrs;
				vm->l4 = l4;
				vm->len_decision = len;
			}
		}
	}

	/* Then the source: a blocklist rule decides here, before any scan state is built (the source
	 * memo answers a flood from listed sources whose ports change every packet). */
	if (g->fields & FW_F_SRC) {
		c_src = fw_src_class_memo(&p, g, gen, epoch);
		if (c_src >> FW_DECIDE_SHIFT) {
			r = fw_rule_at(gen, (c_src >> FW_DECIDE_SHIFT) - 1);
			if (!r)
				return fw_finish(ctx, &p, FW_R_POLICY, g->policy_drop);
			return fw_decided(ctx, &p, vm, epoch, r->slot + 1, FW_R_RULE, r->drop);
		}
	}
	__builtin_memset(&sc, 0, sizeof(sc));
	sc.gen = gen;
	sc.family = p.family;
	sc.len = p.len;
	sc.src4 = p.src4;
	sc.c_src = c_src;
	sc.rl4_bits = g->rl4_bits;
	__builtin_memcpy(sc.src6, p.src6, 16);
	int decided = fw_match(&p, g, &sc);

	if (decided < 0)
		return fw_finish(ctx, &p, FW_R_POLICY, g->policy_drop);
	if (decided > 0) {
		r = fw_rule_at(gen, decided - 1);
		if (!r)
			return fw_finish(ctx, &p, FW_R_POLICY, g->policy_drop);
		return fw_decided(ctx, &p, vm, epoch, r->slot + 1, FW_R_RULE, r->drop);
	}
	/* Fast path: the first matching rule decides unless it is rated. */
	__u64 word = 0;
	__u32 w;

	for (w = 0; w < FW_WORDS; w++) {
		word = sc.m[w];
		if (word)
			break;
	}
	if (!word || w >= FW_WORDS)
		return fw_decided(ctx, &p, vm, epoch, 0, FW_R_POLICY, g->policy_drop);
	__u32 first = w * 64 + fw_ctz(word);

	r = fw_rule_at(gen, first);
	if (!r)
		return fw_finish(ctx, &p, FW_R_POLICY, g->policy_drop);
	if (!r->rated)
		return fw_decided(ctx, &p, vm, epoch, r->slot + 1, FW_R_RULE, r->drop);
	if (vm) { /* remember the rule, not the decision: its rate decides each time */
		vm->rated_rule = first + 1;
		vm->epoch = epoch + 1;
	}
	/* The first rated rule is checked here: a flood over the rate ends without bpf_loop. */
	if (!charged && !fw_within_rate(r, &sc)) {
		xdpkit_count(&fw_counters, r->slot & (FW_MAX_RULES - 1), p.len);
		return fw_finish(ctx, &p, FW_R_RATE_LIMITED, 1);
	}
	xdpkit_count(&fw_reasons, FW_R_WITHIN_RATE, p.len);
	sc.m[w & (FW_WORDS - 1)] = word & (word - 1);
	/* Rated rules may pass a packet on to later rules: bpf_loop, so that the verifier
	 * checks the step once instead of every path through it. */
	bpf_loop(FW_MAX_FALLTHROUGH + 1, fw_scan_step, &sc, 0);
	if (sc.found) {
		xdpkit_count(&fw_counters, sc.slot & (FW_MAX_RULES - 1), p.len);
		return fw_finish(ctx, &p, sc.reason, sc.drop);
	}
	return fw_finish(ctx, &p, FW_R_POLICY, g->policy_drop);
}

char _license[] SEC("license") = "GPL";
