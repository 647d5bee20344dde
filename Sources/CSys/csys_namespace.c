#define _GNU_SOURCE
#include "csys_namespace.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

int csys_pivot_root(const char *new_root, const char *put_old) {
    int saved = errno;
    int result = syscall(SYS_pivot_root, new_root, put_old) < 0 ? -errno : 0;
    errno = saved;
    return result;
}

static void child_fail(int status_fd, int stage, int error) {
    struct csys_boot_report report = { stage, error };
    ssize_t n;
    do { n = write(status_fd, &report, sizeof report); } while (n < 0 && errno == EINTR);
    _exit(127);
}

/* Marks every descriptor close-on-exec (close_range(2), or one fcntl per fd on old kernels). */
static void cloexec_all(void) {
    if (syscall(SYS_close_range, 0U, ~0U, CLOSE_RANGE_CLOEXEC) == 0) return;
    for (int fd = 0; fd < 65536; fd++) {
        int flags = fcntl(fd, F_GETFD);
        if (flags >= 0) fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
    }
}

/* Runs in the child only: async-signal-safe calls, no allocation, no locks. */
static void child_main(const struct csys_sandbox_spec *spec, int go_read, int status_write) {
    char byte;
    ssize_t n;
    do { n = read(go_read, &byte, 1); } while (n < 0 && errno == EINTR);
    if (n != 1) _exit(126);   /* the parent gave up before "go": nothing to report to */
    close(go_read);

    if (spec->parent_death_signal && prctl(PR_SET_PDEATHSIG, spec->parent_death_signal) < 0)
        child_fail(status_write, CSYS_BOOT_STAGE_NAMESPACE, errno);
    if (spec->new_session && setsid() < 0)
        child_fail(status_write, CSYS_BOOT_STAGE_NAMESPACE, errno);
    if (spec->new_cgroup_ns && unshare(CLONE_NEWCGROUP) < 0)
        child_fail(status_write, CSYS_BOOT_STAGE_NAMESPACE, errno);
    if (spec->hostname && sethostname(spec->hostname, strlen(spec->hostname)) < 0)
        child_fail(status_write, CSYS_BOOT_STAGE_NAMESPACE, errno);
    if (spec->loopback_up) {
        int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct ifreq ifr;
        memset(&ifr, 0, sizeof ifr);
        memcpy(ifr.ifr_name, "lo", 3);
        if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) < 0) child_fail(status_write, CSYS_BOOT_STAGE_NAMESPACE, errno);
        ifr.ifr_flags |= IFF_UP;
        if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) child_fail(status_write, CSYS_BOOT_STAGE_NAMESPACE, errno);
        close(s);
    }

    if (spec->rootfs) {
        const char *target = spec->mountpoint ? spec->mountpoint : spec->rootfs;
        /* Private first, so nothing below propagates back to the host's mount table. */
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
            child_fail(status_write, CSYS_BOOT_STAGE_MOUNT, errno);
        if (spec->overlay_options) {
            if (mount("overlay", target, "overlay", 0, spec->overlay_options) < 0)
                child_fail(status_write, CSYS_BOOT_STAGE_MOUNT, errno);
        } else {
            /* pivot_root needs the new root to be a mount point: bind it onto itself. */
            if (mount(spec->rootfs, target, NULL, MS_BIND | MS_REC, NULL) < 0)
                child_fail(status_write, errno == ENOENT || errno == ENOTDIR ? CSYS_BOOT_STAGE_ROOTFS : CSYS_BOOT_STAGE_MOUNT, errno);
        }
        if (chdir(target) < 0) child_fail(status_write, CSYS_BOOT_STAGE_ROOTFS, errno);
        /* pivot_root(".", "."): the old root ends up stacked on the new one, then is detached,
         * so the rootfs needs no directory for it (pivot_root(2), NOTES). */
        if (syscall(SYS_pivot_root, ".", ".") < 0) child_fail(status_write, CSYS_BOOT_STAGE_MOUNT, errno);
        if (umount2(".", MNT_DETACH) < 0) child_fail(status_write, CSYS_BOOT_STAGE_MOUNT, errno);
        if (chdir("/") < 0) child_fail(status_write, CSYS_BOOT_STAGE_MOUNT, errno);
        if (spec->mount_proc) {
            if (mkdir("/proc", 0555) < 0 && errno != EEXIST) child_fail(status_write, CSYS_BOOT_STAGE_MOUNT, errno);
            if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
                child_fail(status_write, CSYS_BOOT_STAGE_MOUNT, errno);
        }
    }

    /* Descriptors: park every source above all targets (CLOEXEC), mark everything CLOEXEC,
     * then dup2 each onto its target (dup2 clears CLOEXEC on the new fd). The status pipe
     * stays open until the exec closes it. */
    int highest = 2;
    for (int i = 0; i < spec->fd_map_pairs; i++)
        if (spec->fd_map[2 * i + 1] > highest) highest = spec->fd_map[2 * i + 1];
    int parked[64];
    if (spec->fd_map_pairs > 64) child_fail(status_write, CSYS_BOOT_STAGE_NAMESPACE, E2BIG);
    for (int i = 0; i < spec->fd_map_pairs; i++) {
        parked[i] = fcntl(spec->fd_map[2 * i], F_DUPFD_CLOEXEC, highest + 1);
        if (parked[i] < 0) child_fail(status_write, CSYS_BOOT_STAGE_NAMESPACE, errno);
    }
    /* The status pipe must not be one of the targets. */
    if (status_write <= highest) {
        int moved = fcntl(status_write, F_DUPFD_CLOEXEC, highest + 1);
        if (moved < 0) child_fail(status_write, CSYS_BOOT_STAGE_NAMESPACE, errno);
        status_write = moved;
    }
    cloexec_all();
    for (int i = 0; i < spec->fd_map_pairs; i++) {
        int r;
        do { r = dup2(parked[i], spec->fd_map[2 * i + 1]); } while (r < 0 && errno == EINTR);
        if (r < 0) child_fail(status_write, CSYS_BOOT_STAGE_NAMESPACE, errno);
    }

    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < _NSIG; sig++) sigaction(sig, &dfl, NULL);   /* EINVAL for KILL/STOP: fine */
    sigset_t empty;
    sigemptyset(&empty);
    sigprocmask(SIG_SETMASK, &empty, NULL);

    execve(spec->path, spec->argv, spec->envp);
    child_fail(status_write, CSYS_BOOT_STAGE_EXEC, errno);
}

pid_t csys_sandbox_clone(const struct csys_sandbox_spec *spec, int *go_fd, int *status_fd) {
    int saved = errno;
    int go[2], status[2];
    if (pipe2(go, O_CLOEXEC) < 0) { int e = errno; errno = saved; return -e; }
    if (pipe2(status, O_CLOEXEC) < 0) {
        int e = errno;
        close(go[0]); close(go[1]);
        errno = saved;
        return -e;
    }

    /* No signal handler of the parent may run in the child before it resets them. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    /* Raw clone without a new stack behaves like fork(2) (the child runs on a copy of this
     * stack); glibc's clone() wrapper would need a separate stack and a function. The other
     * arguments are NULL, so their order (which differs between architectures) does not matter. */
    long pid = syscall(SYS_clone, (unsigned long)(spec->clone_flags | SIGCHLD), NULL, NULL, NULL, NULL);
    if (pid == 0) {
        close(go[1]);
        close(status[0]);
        child_main(spec, go[0], status[1]);
        _exit(127);
    }
    int e = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(go[0]);
    close(status[1]);
    if (pid < 0) {
        close(go[1]);
        close(status[0]);
        errno = saved;
        return -e;
    }
    *go_fd = go[1];
    *status_fd = status[0];
    errno = saved;
    return (pid_t)pid;
}
