/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* Shared between firewall.bpf.c and the control plane, which mirrors these layouts and constants
 * in Python (struct formats and constants in control.py and compiler.py); tests/unit/
 * test_layouts.py checks the mirrors against the shipped object's BTF and map sizes and against
 * this header, so a change here needs the same change there. */
#ifndef XDPKIT_FIREWALL_H
#define XDPKIT_FIREWALL_H

#define FW_MAX_RULES 1024
#define FW_WORDS (FW_MAX_RULES / 64)
#define FW_MAX_CLASSES 16384
#define FW_DECIDE_SHIFT 16   /* source classes carry, above this, the rule that decides on the
                              * source alone (index + 1; 0: none), like fw_bitmap.decide_dst */
#define FW_MAX_FALLTHROUGH 8 /* rated rules a packet may pass within their rate */

/* fields a rule set uses; unused fields are not looked up at all */
#define FW_F_SRC   (1 << 0)
#define FW_F_DST   (1 << 1)
#define FW_F_PROTO (1 << 2)
#define FW_F_SPORT (1 << 3)
#define FW_F_DPORT (1 << 4)
#define FW_F_FLAGS (1 << 5)
#define FW_F_ICMP  (1 << 6)
#define FW_F_LEN   (1 << 7)

#define FW_PORT_NONE 65536   /* port tables: class for packets without ports */
#define FW_BYTE_NONE 256     /* flags/icmp tables: class for non-TCP / non-ICMP packets */

/* Prefix tables (rangetable.py builds them): a node is 16 words; a direct index (a word per
 * entry: its own map for IPv4, the first nodes of the trees' map for IPv6), then the chunks'
 * B+-trees. A word of the direct index or an internal node's child word is a reference: */
#define FW_REF_CLASS (1u << 31)  /* ... to a class (the low bits) */
#define FW_REF_LEAF (1u << 30)   /* ... to a leaf node (the low bits: its index) */
#define FW_REF_INDEX (FW_REF_LEAF - 1) /* neither: to an internal node */
#define FW_NO_CLASS 0xffffffffu  /* a lookup that found no table: the side's default class */
#define FW_NODE_WORDS 16
#define FW_LEAF4 8               /* IPv4 leaf: w[0..7] starts, w[8..15] classes */
#define FW_FANOUT4 16            /* IPv4 internal: w[0..14] separators, w[15] first child */
#define FW_DEPTH4 5
#define FW_DIR4_BITS 20          /* IPv4 direct index: 2^20 entries (4 MiB) in a map of its own, of fixed
                                  * size, which the program reads inline */
#define FW_LEAF6 5               /* IPv6 leaf: 5 starts (hi, lo) in w[0..9], classes w[10..14] */
#define FW_FANOUT6 8             /* IPv6 internal: 7 separators in w[0..13], w[14] first child */
#define FW_DEPTH6 9

struct fw_node4 {
	__u32 w[FW_NODE_WORDS];
};

struct fw_node6 {
	__u64 w[FW_NODE_WORDS];
};

/* Index of fw_gen.prefix_bits */
enum fw_prefix_table { FW_T_SRC4 = 0, FW_T_DST4 = 1, FW_T_SRC6 = 2, FW_T_DST6 = 3 };

enum fw_reason {
	FW_R_RULE = 0,        /* decided by a rule */
	FW_R_POLICY = 1,      /* no rule matched: default policy */
	FW_R_MALFORMED = 2,   /* truncated or malformed */
	FW_R_NON_IP = 3,      /* ARP, LLDP, ... */
	FW_R_RATE_LIMITED = 4,/* dropped by a rated rule (over its rate) */
	FW_R_WITHIN_RATE = 5, /* a rated rule matched but the packet was within the rate */
	FW_R_FRAGMENT = 6,    /* non-first fragment (no L4 header); counted, then evaluated */
	FW_NREASONS = 7,
};

struct fw_gen {
	__u32 nrules;
	__u32 nwords;
	__u32 fields;         /* FW_F_* */
	__u32 src_default4;   /* class for addresses no prefix covers (rules without src); the
	                       * source ones carry their deciding rule above FW_DECIDE_SHIFT */
	__u32 src_default6;
	__u32 dst_default4;
	__u32 dst_default6;
	__u8 policy_drop;
	__u8 malformed_drop;
	__u8 non_ip_drop;
	__u8 rl4_bits;        /* log2 of the IPv4 rate-state sets (0: no per-source rule) */
	__u8 prefix_bits[4];  /* direct-index bits of each prefix table (enum fw_prefix_table;
	                       * 0: no table, every address has the default class) */
	__u32 rate_sources;   /* control plane only: the rule set's rate-sources setting */
	/* fw_verdict_memo's key masks: the bits of the fields this rule set uses */
	__u64 memo_addrs_mask;
	__u64 memo_l4_mask;
	__u32 memo_len_mask;
	__u32 pad;
};

struct fw_active {
	__u32 gen;            /* applies so far; gen & 1 is the half of every table packets use */
};

/* A per-CPU memo of source-address lookups: (address, apply count) -> fw_src_class result.
 * Direct-mapped by a multiplicative hash of the address; an entry from an earlier apply never
 * matches, so the memo needs no invalidation. */
#define FW_SRC_MEMO_BITS 10
struct fw_src_memo {
	__u32 addr;
	__u32 epoch;          /* fw_active.gen + 1 (0 = empty) */
	__u32 c_src;
	__u32 pad;
};

/* A per-CPU memo of decisions (IPv4): the values of the fields the rule set uses -> the rule that
 * decided (or the policy), or the rated rule that matched first (its rate decides, so only the
 * rule is kept). Keyed by the apply count like fw_src_memo, so an apply needs no invalidation; a
 * flood from a few thousand (source, port, ...) tuples per CPU is decided by one array access
 * (and a rate check) whatever rule drops it. */
#define FW_VERDICT_MEMO_BITS 10
struct fw_verdict_memo {  /* 32 bytes: two to a cache line */
	__u64 addrs;          /* src << 32 | dst (0 for a side no rule looks at) */
	__u64 l4;             /* proto | sport << 8 | dport << 25 | flags << 42 | icmp << 51 */
	__u32 len_decision;   /* frame length (when a rule looks at it) | reason << 16 | drop << 24 */
	__u32 epoch;          /* fw_active.gen + 1 (0 = empty) */
	__u32 slot;           /* rule counter slot + 1; 0: the policy decided */
	__u32 rated_rule;     /* index + 1 of the rated rule that matches first (0: none; then
	                       * slot, reason and drop are the decision) */
};

struct fw_rule {
	__u32 slot;           /* counter slot: stays with the rule across applies */
	__u8 drop;
	__u8 per_source;
	__u8 rated;
	__u8 pad;
	__u64 pps_interval;   /* ns per packet (0: no packet rate) */
	__u64 pps_tau;        /* burst tolerance in ns */
	__u64 byte_ns_x1k;    /* ns per byte * 1024 (0: no bit rate) */
	__u64 bps_tau;
};

struct fw_bitmap {
	__u64 w[FW_WORDS];
	/* Blocklist fast path: when the first rule of this class has no condition but the
	 * destination address, that rule decides as soon as the address is looked up (index + 1;
	 * 0: no shortcut). No earlier rule can match: it would have to be in this class. (The
	 * source's twin is in the source tables' values: FW_DECIDE_SHIFT.) */
	__u32 decide_dst;
	__u32 pad;
};

struct fw_text {
	__u32 len;
	char text[508];       /* the rule as written: the kernel keeps the rule set itself */
};

struct fw_tat {
	__u64 pps;            /* GCRA theoretical arrival times */
	__u64 bps;
};

/* Per-source rate state of IPv4 sources: an array of 2-way sets, one cache line each, indexed
 * by a multiplicative hash of (rule, address); 2^fw_gen.rl4_bits sets, sized at apply. The
 * default size has a map of its own whose size the verifier knows, so its lookups are inlined
 * (2 ns a packet less on a rated rule's path than a settable-size map's call). A kernel LRU
 * hash costs ~30 ns per lookup here and ~1 us per insert once full (its eviction takes a global lock), which a SYN flood from random
 * sources turns into the firewall's ceiling; a set lookup is an array access and a compare, and a
 * new source overwrites the way idle longer. */
#define FW_RL4_DEFAULT_BITS 15   /* rate-sources 65536: 32768 sets of 2 */

struct fw_rl_way4 {
	__u32 addr;
	__u32 tag;            /* rule slot + 1; 0 = empty */
	__u64 seen;           /* coarse time of the source's last packet */
	struct fw_tat tat;
};

struct fw_rl_set4 {
	struct fw_rl_way4 way[2];
};

struct fw_rl_key6 {
	__u32 slot;
	__u8 addr[16];
};

#endif
