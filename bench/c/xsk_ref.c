// SPDX-License-Identifier: GPL-2.0
/* The reference for the AF_XDP benchmark: a minimal AF_XDP socket in C, raw system calls only
 * (<linux/if_xdp.h>), with the same UMEM and ring geometry as xdpkit.afxdp's defaults.
 *
 *   xsk_ref IFNAME QUEUE rxdrop|echo SECONDS [PINNED_XSKMAP|-] [BATCH]
 *
 * rxdrop: received frames go straight back to the fill ring.
 * echo:   addresses (Ethernet, IP, TCP/UDP ports) are swapped in place and the frame goes out on the TX ring;
 *         completions go back to the fill ring.
 *
 * It loads no XDP program: the caller attaches one that redirects to an XSKMAP, pinned at
 * PINNED_XSKMAP, where this program puts its socket (key QUEUE) once bound. "ready" on stderr
 * says it is in. After SECONDS it prints one JSON line on stdout: frames, seconds, pps, sent
 * (completions), kicks and the XDP_STATISTICS fields.
 *
 * Copy mode with XDP_USE_NEED_WAKEUP. Ring indexes: the other side's index is read with acquire
 * ordering before the entries; ours is published with release ordering after the entries.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <net/if.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <linux/if_xdp.h>
#include <bpf/bpf.h>

#ifndef AF_XDP
#define AF_XDP 44
#endif
#ifndef SOL_XDP
#define SOL_XDP 283
#endif

#define NUM_FRAMES 4096
#define FRAME_SIZE 4096
#define RING_SIZE 2048
#define MAX_BATCH 2048

struct ring {
	__u32 *producer;
	__u32 *consumer;
	__u32 *flags;
	void *entries;
	void *map;
	size_t map_len;
	__u32 mask;
	__u32 head;     /* our side: producer (fill, TX) or consumer (RX, completion), not yet published */
	__u32 other;    /* the kernel's side, as last read */
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	fprintf(stderr, "xsk_ref: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void map_ring(int fd, struct ring *r, const struct xdp_ring_offset *off, off_t pgoff, size_t entry)
{
	r->map_len = off->desc + RING_SIZE * entry;
	r->map = mmap(NULL, r->map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, pgoff);
	if (r->map == MAP_FAILED)
		die("mmap ring");
	r->producer = (__u32 *)((char *)r->map + off->producer);
	r->consumer = (__u32 *)((char *)r->map + off->consumer);
	r->flags = (__u32 *)((char *)r->map + off->flags);
	r->entries = (char *)r->map + off->desc;
	r->mask = RING_SIZE - 1;
}

/* ---- producer side (fill, TX) ---- */
static void prod_init(struct ring *r)
{
	r->head = __atomic_load_n(r->producer, __ATOMIC_RELAXED);
	r->other = __atomic_load_n(r->consumer, __ATOMIC_ACQUIRE);
}

static __u32 prod_free(struct ring *r, __u32 want)
{
	__u32 free = RING_SIZE - (r->head - r->other);

	if (free < want) {
		/* acquire: the kernel has finished reading the entries it consumed */
		r->other = __atomic_load_n(r->consumer, __ATOMIC_ACQUIRE);
		free = RING_SIZE - (r->head - r->other);
	}
	return free < want ? free : want;
}

static void prod_publish(struct ring *r)
{
	/* release: the entries are written before the kernel can see the new index */
	__atomic_store_n(r->producer, r->head, __ATOMIC_RELEASE);
}

static int needs_wakeup(struct ring *r)
{
	return __atomic_load_n(r->flags, __ATOMIC_RELAXED) & XDP_RING_NEED_WAKEUP;
}

/* ---- consumer side (RX, completion) ---- */
static void cons_init(struct ring *r)
{
	r->head = __atomic_load_n(r->consumer, __ATOMIC_RELAXED);
	r->other = __atomic_load_n(r->producer, __ATOMIC_ACQUIRE);
}

static __u32 cons_avail(struct ring *r, __u32 want)
{
	__u32 n = r->other - r->head;

	if (n < want) {
		/* acquire: the entries are read only after the index that covers them */
		r->other = __atomic_load_n(r->producer, __ATOMIC_ACQUIRE);
		n = r->other - r->head;
	}
	return n < want ? n : want;
}

static void cons_release(struct ring *r)
{
	/* release: our reads of the entries are done before the kernel may reuse them */
	__atomic_store_n(r->consumer, r->head, __ATOMIC_RELEASE);
}

static void fill_put(struct ring *fill, __u64 addr)
{
	/* the fill ring holds all RX frames: there is always room for one coming back */
	((__u64 *)fill->entries)[fill->head++ & fill->mask] = addr;
}

static void swap(unsigned char *a, unsigned char *b, int n)
{
	unsigned char tmp[16];

	memcpy(tmp, a, n);
	memcpy(a, b, n);
	memcpy(b, tmp, n);
}

/* The same work as xdpkit's echo (apps/afxdp/tools.py swap_addresses): Ethernet addresses, and
 * for IPv4/IPv6 the addresses and TCP/UDP ports, so the ratio compares like with like. */
static void swap_addresses(unsigned char *f, __u32 len)
{
	int l4 = 0, proto = 0;

	swap(f, f + 6, 6);
	if (len >= 34 && f[12] == 0x08 && f[13] == 0x00) {
		swap(f + 26, f + 30, 4);
		l4 = 14 + (f[14] & 0x0f) * 4;
		proto = f[23];
	} else if (len >= 54 && f[12] == 0x86 && f[13] == 0xdd) {
		swap(f + 22, f + 38, 16);
		l4 = 54;
		proto = f[20];
	}
	if (l4 && (proto == 6 || proto == 17) && len >= (__u32)l4 + 4)
		swap(f + l4, f + l4 + 2, 2);
}

int main(int argc, char **argv)
{
	struct xdp_mmap_offsets off;
	struct xdp_umem_reg reg;
	struct xdp_statistics st;
	struct sockaddr_xdp sxdp;
	struct ring rx = {0}, tx = {0}, fill = {0}, comp = {0};
	struct pollfd pfd;
	socklen_t optlen;
	unsigned long long frames = 0, completed = 0, queued = 0, tx_full = 0, kicks = 0;
	double seconds, start, deadline, bind_deadline, took;
	unsigned int ifindex, queue, batch = 256, size = RING_SIZE;
	int fd, echo, i, loops = 0;
	unsigned char *umem;
	const char *pin = NULL;

	if (argc < 5 || argc > 7) {
		fprintf(stderr, "usage: %s IFNAME QUEUE rxdrop|echo SECONDS [PINNED_XSKMAP|-] [BATCH]\n", argv[0]);
		return 2;
	}
	ifindex = if_nametoindex(argv[1]);
	if (!ifindex)
		die(argv[1]);
	queue = atoi(argv[2]);
	if (!strcmp(argv[3], "echo"))
		echo = 1;
	else if (!strcmp(argv[3], "rxdrop"))
		echo = 0;
	else
		return 2;
	seconds = atof(argv[4]);
	if (argc > 5 && strcmp(argv[5], "-"))
		pin = argv[5];
	if (argc > 6)
		batch = atoi(argv[6]);
	if (batch < 1 || batch > MAX_BATCH || seconds <= 0)
		return 2;

	umem = mmap(NULL, (size_t)NUM_FRAMES * FRAME_SIZE, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (umem == MAP_FAILED)
		die("mmap umem");
	fd = socket(AF_XDP, SOCK_RAW, 0);
	if (fd < 0)
		die("socket(AF_XDP)");
	memset(&reg, 0, sizeof(reg));   /* padding and fields newer than these headers: zero */
	reg.addr = (__u64)(uintptr_t)umem;
	reg.len = (__u64)NUM_FRAMES * FRAME_SIZE;
	reg.chunk_size = FRAME_SIZE;
	reg.headroom = 0;
	if (setsockopt(fd, SOL_XDP, XDP_UMEM_REG, &reg, sizeof(reg)))
		die("XDP_UMEM_REG");
	if (setsockopt(fd, SOL_XDP, XDP_UMEM_FILL_RING, &size, sizeof(size)) ||
	    setsockopt(fd, SOL_XDP, XDP_UMEM_COMPLETION_RING, &size, sizeof(size)) ||
	    setsockopt(fd, SOL_XDP, XDP_RX_RING, &size, sizeof(size)) ||
	    setsockopt(fd, SOL_XDP, XDP_TX_RING, &size, sizeof(size)))
		die("ring sizes");
	optlen = sizeof(off);
	if (getsockopt(fd, SOL_XDP, XDP_MMAP_OFFSETS, &off, &optlen))
		die("XDP_MMAP_OFFSETS");
	map_ring(fd, &rx, &off.rx, XDP_PGOFF_RX_RING, sizeof(struct xdp_desc));
	map_ring(fd, &tx, &off.tx, XDP_PGOFF_TX_RING, sizeof(struct xdp_desc));
	map_ring(fd, &fill, &off.fr, XDP_UMEM_PGOFF_FILL_RING, sizeof(__u64));
	map_ring(fd, &comp, &off.cr, XDP_UMEM_PGOFF_COMPLETION_RING, sizeof(__u64));
	prod_init(&tx);
	prod_init(&fill);
	cons_init(&rx);
	cons_init(&comp);

	/* RX frames: the first RING_SIZE frames, all on the fill ring (as xdpkit does) */
	for (i = 0; i < RING_SIZE; i++)
		fill_put(&fill, (__u64)i * FRAME_SIZE);
	prod_publish(&fill);

	memset(&sxdp, 0, sizeof(sxdp));
	sxdp.sxdp_family = AF_XDP;
	sxdp.sxdp_flags = XDP_COPY | XDP_USE_NEED_WAKEUP;
	sxdp.sxdp_ifindex = ifindex;
	sxdp.sxdp_queue_id = queue;
	/* a socket closed a moment ago on this queue is freed by a kernel work item: retry EBUSY */
	bind_deadline = now() + 1.0;
	while (bind(fd, (struct sockaddr *)&sxdp, sizeof(sxdp))) {
		if (errno != EBUSY || now() > bind_deadline)
			die("bind");
		usleep(10000);
	}
	if (pin) {
		int map_fd = bpf_obj_get(pin);
		__u32 key = queue, val = fd;

		if (map_fd < 0)
			die(pin);
		if (bpf_map_update_elem(map_fd, &key, &val, 0))
			die("XSKMAP update");
		close(map_fd);   /* the program holds the map; our entry goes when the socket closes */
	}
	fprintf(stderr, "ready\n");

	pfd.fd = fd;
	pfd.events = POLLIN;
	start = now();
	deadline = start + seconds;
	for (;;) {
		struct xdp_desc *rxd = rx.entries, *txd = tx.entries;
		__u32 n, k, j;

		if ((++loops & 63) == 0 && now() >= deadline)
			break;
		if (echo) {
			/* sent frames back to the fill ring */
			n = cons_avail(&comp, RING_SIZE);
			if (n) {
				for (j = 0; j < n; j++)
					fill_put(&fill, ((__u64 *)comp.entries)[comp.head++ & comp.mask]);
				cons_release(&comp);
				prod_publish(&fill);
				completed += n;
			}
		}
		n = cons_avail(&rx, batch);
		if (!n) {
			if (echo && tx.head != __atomic_load_n(tx.consumer, __ATOMIC_ACQUIRE)) {
				if (needs_wakeup(&tx)) {
					kicks++;
					sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0);
				}
				continue;
			}
			if (needs_wakeup(&fill))
				recvfrom(fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
			if (now() >= deadline)
				break;
			poll(&pfd, 1, 100);
			continue;
		}
		frames += n;
		if (!echo) {
			for (j = 0; j < n; j++)
				fill_put(&fill, rxd[rx.head++ & rx.mask].addr);
			cons_release(&rx);
			prod_publish(&fill);
			continue;
		}
		k = prod_free(&tx, n);
		for (j = 0; j < k; j++) {
			struct xdp_desc d = rxd[rx.head++ & rx.mask];

			swap_addresses(umem + d.addr, d.len);
			txd[tx.head++ & tx.mask] = d;
		}
		for (; j < n; j++) {   /* the TX ring is full: these go back unsent */
			fill_put(&fill, rxd[rx.head++ & rx.mask].addr);
			tx_full++;
		}
		cons_release(&rx);
		if (k)
			prod_publish(&tx);
		if (k < n)
			prod_publish(&fill);
		queued += k;
		/* copy mode sends at most 32 frames a kick: kick while anything is outstanding */
		if (needs_wakeup(&tx)) {
			kicks++;
			sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0);
		}
	}
	took = now() - start;
	if (echo) {   /* what the last kicks sent */
		__u32 n = cons_avail(&comp, RING_SIZE);

		comp.head += n;
		cons_release(&comp);
		completed += n;
	}
	memset(&st, 0, sizeof(st));
	optlen = sizeof(st);
	if (getsockopt(fd, SOL_XDP, XDP_STATISTICS, &st, &optlen))
		die("XDP_STATISTICS");
	printf("{\"mode\": \"%s\", \"frames\": %llu, \"seconds\": %.6f, \"pps\": %.1f, \"sent\": %llu, "
	       "\"queued\": %llu, \"tx_ring_full\": %llu, \"kicks\": %llu, \"statistics\": {"
	       "\"rx_dropped\": %llu, \"rx_invalid_descs\": %llu, \"tx_invalid_descs\": %llu, "
	       "\"rx_ring_full\": %llu, \"rx_fill_ring_empty_descs\": %llu, \"tx_ring_empty_descs\": %llu}}\n",
	       argv[3], frames, took, frames / took, completed, queued, tx_full, kicks,
	       (unsigned long long)st.rx_dropped, (unsigned long long)st.rx_invalid_descs,
	       (unsigned long long)st.tx_invalid_descs, (unsigned long long)st.rx_ring_full,
	       (unsigned long long)st.rx_fill_ring_empty_descs, (unsigned long long)st.tx_ring_empty_descs);
	close(fd);
	munmap(umem, (size_t)NUM_FRAMES * FRAME_SIZE);
	return 0;
}
