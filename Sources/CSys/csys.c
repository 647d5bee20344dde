#define _GNU_SOURCE
#include "csys.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

int csys_thread_affinity_get(unsigned char *mask, size_t size) {
    int saved = errno;
    int result = sched_getaffinity(0, size, (cpu_set_t *)(void *)mask) < 0 ? -errno : 0;
    errno = saved;
    return result;
}

int csys_thread_affinity_set(const unsigned char *mask, size_t size) {
    int saved = errno;
    int result = sched_setaffinity(0, size, (const cpu_set_t *)(const void *)mask) < 0 ? -errno : 0;
    errno = saved;
    return result;
}

int csys_pidfd_open(pid_t pid, unsigned int flags) {
    int saved = errno;
    long fd = syscall(SYS_pidfd_open, pid, flags);
    int result = fd < 0 ? -errno : (int)fd;
    errno = saved;
    return result;
}

void csys_set_errno(int value) { errno = value; }

int csys_pipe2(int fds[2], int flags) {
    int saved = errno;
    int result = pipe2(fds, flags) < 0 ? -errno : 0;
    errno = saved;
    return result;
}

int csys_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    int saved = errno;
    int result;
    do { result = accept4(fd, addr, len, flags); } while (result < 0 && errno == EINTR);
    if (result < 0) result = -errno;
    errno = saved;
    return result;
}

long csys_splice(int from, int to, unsigned long length) {
    int saved = errno;
    ssize_t result;
    do { result = splice(from, NULL, to, NULL, length, SPLICE_F_NONBLOCK | SPLICE_F_MOVE); } while (result < 0 && errno == EINTR);
    long value = result < 0 ? -errno : (long)result;
    errno = saved;
    return value;
}

int csys_dup3(int oldfd, int newfd, int flags) {
    int saved = errno;
    int result;
    do { result = dup3(oldfd, newfd, flags); } while (result < 0 && errno == EINTR);
    if (result < 0) result = -errno;
    errno = saved;
    return result;
}
