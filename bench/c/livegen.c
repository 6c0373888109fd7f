// SPDX-License-Identifier: GPL-2.0
/* The reference for the generator benchmark: the same live-frames loop as xdpkit's, driven
 * from C with nothing else around it.
 *
 *   livegen PINNED_PROG IFINDEX HEX_FRAME SECONDS CPU
 *
 * Prints "<frames> <seconds>" on stdout.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <linux/bpf.h>
#include <bpf/bpf.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	unsigned char frame[2048];
	struct xdp_md ctx = {0};
	cpu_set_t set;
	size_t len, i;
	double seconds, start, took, left;
	long long total = 0, chunk = 1 << 20;
	int fd;

	if (argc != 6) {
		fprintf(stderr, "usage: %s PINNED_PROG IFINDEX HEX_FRAME SECONDS CPU\n", argv[0]);
		return 2;
	}
	fd = bpf_obj_get(argv[1]);
	if (fd < 0) {
		fprintf(stderr, "bpf_obj_get %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	len = strlen(argv[3]) / 2;
	if (len < 14 || len > sizeof(frame))
		return 2;
	for (i = 0; i < len; i++)
		sscanf(argv[3] + 2 * i, "%2hhx", &frame[i]);
	seconds = atof(argv[4]);
	CPU_ZERO(&set);
	CPU_SET(atoi(argv[5]), &set);
	sched_setaffinity(0, sizeof(set), &set);

	ctx.data_end = len;
	ctx.ingress_ifindex = atoi(argv[2]);
	start = now();
	for (;;) {
		LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame, .data_size_in = len,
			    .ctx_in = &ctx, .ctx_size_in = sizeof(ctx),
			    .flags = BPF_F_TEST_XDP_LIVE_FRAMES, .batch_size = 64, .repeat = chunk);
		double t = now();

		if (bpf_prog_test_run_opts(fd, &opts)) {
			fprintf(stderr, "test_run: %s\n", strerror(errno));
			return 1;
		}
		total += chunk;
		took = now() - t;
		left = seconds - (now() - start);
		if (left <= 0)
			break;
		/* the same pacing as xdpkit: ~1 s calls, the last one cut short for the deadline */
		{
			long long want = chunk, cap = (long long)(want * 0.9 * left / took);

			chunk = (long long)(want * 1.0 / took);
			if (chunk > (1LL << 26))
				chunk = 1LL << 26;
			if (chunk > cap)
				chunk = cap;
			if (chunk < 64)
				chunk = 64;
		}
	}
	printf("%lld %.6f\n", total, now() - start);
	return 0;
}
