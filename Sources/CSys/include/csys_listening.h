/* Whether a TCP socket listens on a port, asked of the kernel through sock_diag(7)
 * (NETLINK_SOCK_DIAG, inet_diag_req_v2 for TCP_LISTEN only, IPv4 and IPv6).
 *
 * A dump restricted to TCP_LISTEN walks only the kernel's listening hash, where reading
 * /proc/net/tcp walks every bucket of the established hash too (milliseconds on a host with a
 * lot of memory, whatever few sockets there are). linux/inet_diag.h is not in the Glibc module.
 */
#pragma once

#include <stdint.h>

/* 1 when some TCP socket of the caller's network namespace is in LISTEN on `port` (any local
 * address, IPv4 or IPv6), 0 when none is, -errno when the kernel could not be asked (no
 * sock_diag: the caller falls back to /proc/net/tcp). */
int csys_tcp_port_listening(uint16_t port);
