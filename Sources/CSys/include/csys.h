/* CSys: the C the Swift side cannot do safely or cannot import.
 *
 * - Linux headers the Glibc module leaves out (epoll, signalfd, timerfd, eventfd, prctl, vsock).
 * - Constants and macros Swift cannot import (function-like macros, values whose type differs
 *   between glibc and musl).
 * - Code that must run between fork and exec (only async-signal-safe calls): see csys_spawn.h.
 *
 * Conventions: every function is prefixed csys_, returns a value or -errno, and leaves the
 * caller's errno as it found it unless it says otherwise.
 */
#pragma once

#include <stdint.h>
#include <sys/types.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <linux/vm_sockets.h>

#include "csys_spawn.h"
#include "csys_namespace.h"
#include "csys_keeper.h"
#include "csys_seccomp.h"
#include "csys_early_init.h"
#include "csys_cgroup_device.h"
#include "csys_regex.h"
#include "csys_listening.h"
#include "csys_files.h"
#include "csys_sha256.h"

/* Wait-status macros (function-like, so not importable). */
static inline int csys_wifexited(int status) { return WIFEXITED(status); }
static inline int csys_wexitstatus(int status) { return WEXITSTATUS(status); }
static inline int csys_wifsignaled(int status) { return WIFSIGNALED(status); }
static inline int csys_wtermsig(int status) { return WTERMSIG(status); }
static inline int csys_wcoredump(int status) { return WCOREDUMP(status); }

/* SIGRTMIN is a function call in glibc (the C library reserves some real-time signals). */
static inline int csys_sigrtmin(void) { return SIGRTMIN; }

/* pidfd_open(2) has no glibc wrapper before 2.36; Debian 12 has 2.36 but musl does not. */
int csys_pidfd_open(pid_t pid, unsigned int flags);

/* GNU extensions the Glibc module does not declare (it is built without _GNU_SOURCE). */
int csys_pipe2(int fds[2], int flags);
int csys_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);
int csys_dup3(int oldfd, int newfd, int flags);
/* splice(2) of up to `length` bytes between a socket and a pipe, without waiting
 * (SPLICE_F_NONBLOCK | SPLICE_F_MOVE), EINTR retried: the bytes moved, 0 at EOF, or -errno. */
long csys_splice(int from, int to, unsigned long length);
/* sched_getaffinity / sched_setaffinity of the calling thread, the mask as `size` bytes (bit n
 * of byte n / 8 for CPU n): 0 or -errno. */
int csys_thread_affinity_get(unsigned char *mask, size_t size);
int csys_thread_affinity_set(const unsigned char *mask, size_t size);

/* The thread's errno, settable (Swift can read errno but not portably assign it). */
void csys_set_errno(int value);
