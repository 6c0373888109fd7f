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
#define FW_LONG (1u << 31)   /* /24 entry: look at the /32 table as well */

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
	__u32 src_default4;   /* class for addresses no prefix covers (rules without src) */
	__u32 src_default6;
	__u32 dst_default4;
	__u32 dst_default6;
	__u8 policy_drop;
	__u8 malformed_drop;
	__u8 non_ip_drop;
	__u8 dirty;           /* control plane only: this generation may hold prefix entries that
	                       * an apply left behind (it failed or was killed); packets never
	                       * read it, and the next apply removes them before writing */
	__u32 entries[4];     /* control plane only: entries this generation holds in fw_src4_24,
	                       * fw_src4_32, fw_dst4_24, fw_dst4_32 (an apply needs room for the
	                       * set in force and the new one at once, and checks it first) */
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
	 * source (decide_src) or destination (decide_dst) address, that rule decides as soon as
	 * the address is looked up (index + 1; 0: no shortcut). No earlier rule can match: it
	 * would have to be in this class. */
	__u32 decide_src;
	__u32 decide_dst;
};

struct fw_key4 {
	__u32 gen;
	__u32 addr;           /* host order (the /32 tables; /24 tables key on gen << 24 | block) */
};

struct fw_key6 {
	__u32 prefixlen;      /* 8 + prefix length: the first byte is the generation */
	__u8 data[17];
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
 * by a multiplicative hash of (rule, address). A kernel LRU hash costs ~30 ns per lookup here and
 * ~1 us per insert once full (its eviction takes a global lock), which a SYN flood from random
 * sources turns into the firewall's ceiling; a set lookup is an array access and a compare, and a
 * new source overwrites the way idle longer. */
#define FW_RL4_SET_BITS 17
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
