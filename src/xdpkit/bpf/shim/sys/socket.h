/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* Stands in for the C library's <sys/socket.h> when compiling BPF C.
 *
 * BPF C is compiled without the host C library's headers (they do not work for -target bpf),
 * but the kernel's uapi <linux/if.h>, which <linux/icmp.h> includes, includes <sys/socket.h>
 * for struct sockaddr. This header gives exactly what the uapi headers need, on the kernel's
 * own types, and nothing else.
 */
#ifndef XDPKIT_SHIM_SYS_SOCKET_H
#define XDPKIT_SHIM_SYS_SOCKET_H

#include <linux/socket.h>

typedef __kernel_sa_family_t sa_family_t;

struct sockaddr {
	sa_family_t sa_family;
	char sa_data[14];
};

#endif
