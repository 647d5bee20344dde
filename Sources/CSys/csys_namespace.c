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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <grp.h>
#include <linux/mount.h>
#include <linux/loop.h>
#include <linux/openat2.h>
#include <stdlib.h>

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

/* The go message, both ends: one byte, and room for one descriptor (SCM_RIGHTS). */
struct go_message {
    char byte;
    struct iovec io;
    union { char buffer[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } control;
    struct msghdr header;
};

static void go_message_init(struct go_message *m, int with_descriptor) {
    memset(m, 0, sizeof *m);
    m->byte = 1;
    m->io.iov_base = &m->byte;
    m->io.iov_len = 1;
    m->header.msg_iov = &m->io;
    m->header.msg_iovlen = 1;
    if (with_descriptor) {
        m->header.msg_control = m->control.buffer;
        m->header.msg_controllen = sizeof m->control.buffer;
    }
}

/* Receives the go byte and, when one is attached, a descriptor (SCM_RIGHTS). Returns the byte
 * count (1 when the parent said go) and stores the descriptor in *fd (-1 when none came). */
static ssize_t receive_go(int go_read, int *fd) {
    struct go_message m;
    go_message_init(&m, 1);
    ssize_t n;
    do { n = recvmsg(go_read, &m.header, MSG_CMSG_CLOEXEC); } while (n < 0 && errno == EINTR);
    *fd = -1;
    struct cmsghdr *header = CMSG_FIRSTHDR(&m.header);
    if (n == 1 && header && header->cmsg_level == SOL_SOCKET && header->cmsg_type == SCM_RIGHTS)
        memcpy(fd, CMSG_DATA(header), sizeof(int));
    return n;
}

/* dst = a + b, truncated to size (snprintf is not async-signal-safe). */
static void join(char *dst, size_t size, const char *a, const char *b) {
    size_t i = 0;
    for (; *a && i + 1 < size; a++) dst[i++] = *a;
    for (; *b && i + 1 < size; b++) dst[i++] = *b;
    dst[i] = 0;
}

/* Writes `text` to an existing file (a /proc knob) in one write(2); 0 or -1 with errno. */
static int write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t length = strlen(text);
    ssize_t n;
    do { n = write(fd, text, length); } while (n < 0 && errno == EINTR);
    int e = errno;
    close(fd);
    if (n == (ssize_t)length) return 0;
    errno = n < 0 ? e : EIO;
    return -1;
}

/* A file the sandbox must not read: the host's /dev/null bound over it (if it exists). */
static int mask_file(const char *path) {
    struct stat st;
    if (lstat(path, &st) < 0) return errno == ENOENT ? 0 : -1;
    if (S_ISDIR(st.st_mode))
        /* An empty read-only tmpfs hides a directory. */
        return mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0,mode=0555");
    return mount("/dev/null", path, NULL, MS_BIND, NULL);
}

/* A path the sandbox may read but not write: bound onto itself, then remounted read-only. A
 * bind remount must repeat the flags of the mount it copies (here procfs: nosuid, nodev,
 * noexec), or a user namespace gets EPERM for trying to clear them. */
static int read_only(const char *path) {
    struct stat st;
    if (lstat(path, &st) < 0) return errno == ENOENT ? 0 : -1;
    if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) < 0) return -1;
    return mount(NULL, path, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
}

/* Creates `path` as a mount point (a directory, or an empty file for a device node). */
static int make_mount_point(const char *path, int directory) {
    if (directory) return mkdir(path, 0755) < 0 && errno != EEXIST ? -1 : 0;
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) return -1;
    close(fd);
    return 0;
}

static const char *const masked_paths[] = {
    "proc/kcore", "proc/keys", "proc/timer_list", "proc/timer_stats", "proc/sched_debug",
    "proc/latency_stats", "proc/acpi", "proc/asound", "proc/scsi", "proc/interrupts",
    "sys/firmware", "sys/devices/virtual/powercap", NULL,
};
static const char *const read_only_paths[] = {
    "proc/sys", "proc/sysrq-trigger", "proc/irq", "proc/bus", "proc/fs", NULL,
};
/* The host's device nodes a sandbox gets (bound, not made: mknod is not allowed in a user
 * namespace, and nodes on a filesystem mounted inside one do not open anyway). */
static const char *const device_nodes[] = { "null", "zero", "full", "random", "urandom", "tty", NULL };
static const char *const device_links[][2] = {
    { "ptmx", "pts/ptmx" }, { "fd", "/proc/self/fd" }, { "stdin", "/proc/self/fd/0" },
    { "stdout", "/proc/self/fd/1" }, { "stderr", "/proc/self/fd/2" }, { "core", "/proc/kcore" }, { NULL, NULL },
};

/* The sandbox's own cgroups (the cgroup namespace makes them the roots it sees), read-only:
 * the guest can read its limits and usage but neither write them nor mount a hierarchy of its
 * own (guest commands lack the capability). Best effort: a hierarchy that does not mount
 * leaves its directory empty, which costs the guest a view, not confinement. */
static void cgroup_filesystems(const char *const *mounts) {
    const unsigned long flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;
    char target[128];
    if (mounts[0] && mounts[0][0] == 0) {
        mount("cgroup2", "sys/fs/cgroup", mounts[1], flags, mounts[2][0] ? mounts[2] : NULL);
        return;
    }
    if (mount("tmpfs", "sys/fs/cgroup", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=64k") < 0) return;
    for (int i = 0; mounts[i] && mounts[i + 1] && mounts[i + 2]; i += 3) {
        join(target, sizeof target, "sys/fs/cgroup/", mounts[i]);
        if (mkdir(target, 0755) < 0 && errno != EEXIST) continue;
        mount("cgroup", target, mounts[i + 1], flags, mounts[i + 2][0] ? mounts[i + 2] : NULL);
    }
    mount(NULL, "sys/fs/cgroup", NULL, MS_REMOUNT | flags, "mode=0755,size=64k");
}

/* /proc, /sys and /dev of a confined sandbox, relative to the current directory (the new root),
 * before pivot_root: the kernel lets a user namespace mount procfs and sysfs only while a fully
 * visible instance is in its mount namespace (mount_too_revealing), which the host's still is. */
static void api_filesystems(const struct csys_sandbox_spec *spec, int status_write) {
#define FAIL_API() child_fail(status_write, CSYS_BOOT_STAGE_API_FS, errno)
    if (make_mount_point("proc", 1) < 0) FAIL_API();
    if (mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) FAIL_API();
    if (make_mount_point("sys", 1) < 0) FAIL_API();
    if (spec->new_sysfs) {
        if (mount("sysfs", "sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) FAIL_API();
    } else {
        /* The host's network namespace: a new sysfs would need it to be ours. Bind the host's,
         * read-only all the way down (mount_setattr: MS_REMOUNT would change the top only). */
        if (mount("/sys", "sys", NULL, MS_BIND | MS_REC, NULL) < 0) FAIL_API();
        struct mount_attr attr;
        memset(&attr, 0, sizeof attr);
        attr.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
        if (syscall(SYS_mount_setattr, AT_FDCWD, "sys", AT_RECURSIVE, &attr, sizeof attr) < 0) FAIL_API();
    }
    if (spec->cgroup_mounts) cgroup_filesystems(spec->cgroup_mounts);
    for (int i = 0; read_only_paths[i]; i++)
        if (read_only(read_only_paths[i]) < 0) FAIL_API();
    for (int i = 0; masked_paths[i]; i++)
        if (mask_file(masked_paths[i]) < 0) FAIL_API();

    if (make_mount_point("dev", 1) < 0) FAIL_API();
    if (mount("tmpfs", "dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=256k") < 0) FAIL_API();
    char target[64], source[64];
    for (int i = 0; device_nodes[i]; i++) {
        join(target, sizeof target, "dev/", device_nodes[i]);
        join(source, sizeof source, "/dev/", device_nodes[i]);
        if (make_mount_point(target, 0) < 0) FAIL_API();
        if (mount(source, target, NULL, MS_BIND, NULL) < 0) FAIL_API();
    }
    for (int i = 0; device_links[i][0]; i++) {
        join(target, sizeof target, "dev/", device_links[i][0]);
        if (symlink(device_links[i][1], target) < 0 && errno != EEXIST) FAIL_API();
    }
    if (make_mount_point("dev/pts", 1) < 0) FAIL_API();
    if (mount("devpts", "dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
              spec->devpts_options ? spec->devpts_options : "newinstance,ptmxmode=0666,mode=0620") < 0) FAIL_API();
    if (make_mount_point("dev/shm", 1) < 0) FAIL_API();
    if (mount("shm", "dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") < 0) FAIL_API();
#undef FAIL_API
}

/* Runs in the child only: async-signal-safe calls, no allocation, no locks. */
static void child_main(const struct csys_sandbox_spec *spec, int go_read, int status_write) {
    int root_fd = -1;
    ssize_t n = receive_go(go_read, &root_fd);
    if (n != 1) _exit(126);   /* the parent gave up before "go": nothing to report to */
    close(go_read);
    if (spec->receive_root && root_fd < 0) child_fail(status_write, CSYS_BOOT_STAGE_MOUNT, EBADF);

    if (spec->clone_flags & CSYS_CLONE_NEWUSER) {
        /* The parent has written the maps: become the namespace's root, so what we create is
         * owned by the ids the host gave it (our host uid is not mapped in there). */
        if (spec->set_groups && setgroups(0, NULL) < 0) child_fail(status_write, CSYS_BOOT_STAGE_USER, errno);
        if (setresgid(0, 0, 0) < 0) child_fail(status_write, CSYS_BOOT_STAGE_USER, errno);
        if (setresuid(0, 0, 0) < 0) child_fail(status_write, CSYS_BOOT_STAGE_USER, errno);
    }
    for (int cap = 0; cap < 64; cap++)
        if ((spec->bounding_drop >> cap) & 1) {
            /* EINVAL: a capability this kernel does not know; nothing to drop. */
            if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL) child_fail(status_write, CSYS_BOOT_STAGE_USER, errno);
        }
    /* After the id change: changing credentials clears the parent-death signal. */
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
    for (int i = 0; spec->sysctls && spec->sysctls[i] && spec->sysctls[i + 1]; i += 2)
        if (write_file(spec->sysctls[i], spec->sysctls[i + 1]) < 0) child_fail(status_write, CSYS_BOOT_STAGE_NAMESPACE, errno);

    if (spec->rootfs || root_fd >= 0) {
        /* Private first, so nothing below propagates back to the host's mount table. */
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
            child_fail(status_write, CSYS_BOOT_STAGE_MOUNT, errno);
        if (root_fd >= 0) {
            /* The parent built the root (an overlay over an idmapped image): attach it on top
             * of / (any directory would do; / always exists) and step into it. */
            if (syscall(SYS_move_mount, root_fd, "", AT_FDCWD, "/", MOVE_MOUNT_F_EMPTY_PATH) < 0)
                child_fail(status_write, CSYS_BOOT_STAGE_MOUNT, errno);
            if (fchdir(root_fd) < 0) child_fail(status_write, CSYS_BOOT_STAGE_MOUNT, errno);
            close(root_fd);
        } else {
            const char *target = spec->mountpoint ? spec->mountpoint : spec->rootfs;
            if (spec->layer_tmpfs && spec->layer_dir) {
                char path[4096];
                if (mount("tmpfs", spec->layer_dir, "tmpfs", MS_NOSUID | MS_NODEV, spec->layer_tmpfs) < 0)
                    child_fail(status_write, CSYS_BOOT_STAGE_MOUNT, errno);
                join(path, sizeof path, spec->layer_dir, "/upper");
                if (mkdir(path, 0755) < 0 && errno != EEXIST) child_fail(status_write, CSYS_BOOT_STAGE_MOUNT, errno);
                join(path, sizeof path, spec->layer_dir, "/work");
                if (mkdir(path, 0755) < 0 && errno != EEXIST) child_fail(status_write, CSYS_BOOT_STAGE_MOUNT, errno);
            }
            if (spec->overlay_options) {
                if (mount("overlay", target, "overlay", MS_NOSUID | MS_NODEV, spec->overlay_options) < 0)
                    child_fail(status_write, CSYS_BOOT_STAGE_MOUNT, errno);
            } else {
                /* pivot_root needs the new root to be a mount point: bind it onto itself. */
                if (mount(spec->rootfs, target, NULL, MS_BIND | MS_REC, NULL) < 0)
                    child_fail(status_write, errno == ENOENT || errno == ENOTDIR ? CSYS_BOOT_STAGE_ROOTFS : CSYS_BOOT_STAGE_MOUNT, errno);
            }
            if (chdir(target) < 0) child_fail(status_write, CSYS_BOOT_STAGE_ROOTFS, errno);
        }
        if (spec->api_filesystems) api_filesystems(spec, status_write);
        /* pivot_root(".", "."): the old root ends up stacked on the new one, then is detached,
         * so the rootfs needs no directory for it (pivot_root(2), NOTES). */
        if (syscall(SYS_pivot_root, ".", ".") < 0) child_fail(status_write, CSYS_BOOT_STAGE_MOUNT, errno);
        if (umount2(".", MNT_DETACH) < 0) child_fail(status_write, CSYS_BOOT_STAGE_MOUNT, errno);
        if (chdir("/") < 0) child_fail(status_write, CSYS_BOOT_STAGE_MOUNT, errno);
        if (spec->mount_proc && !spec->api_filesystems) {
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

    if (spec->exec_fd >= 0) {
        syscall(SYS_execveat, spec->exec_fd, "", spec->argv, spec->envp, AT_EMPTY_PATH);
        /* A script's interpreter opens the program as /dev/fd/N, which a close-on-exec fd no
         * longer is by then (ENOENT): only then keep the fd open across the exec. */
        if (errno == ENOENT && fcntl(spec->exec_fd, F_SETFD, 0) == 0)
            syscall(SYS_execveat, spec->exec_fd, "", spec->argv, spec->envp, AT_EMPTY_PATH);
    } else {
        execve(spec->path, spec->argv, spec->envp);
    }
    child_fail(status_write, CSYS_BOOT_STAGE_EXEC, errno);
}

/* Clones the sandbox's child (child_main); `extra` is added to the clone flags. */
static long clone_child(const struct csys_sandbox_spec *spec, int go[2], int status[2], unsigned long extra) {
    /* Raw clone without a new stack behaves like fork(2) (the child runs on a copy of this
     * stack); glibc's clone() wrapper would need a separate stack and a function. The other
     * arguments are NULL, so their order (which differs between architectures) does not matter. */
    long pid = syscall(SYS_clone, (unsigned long)(spec->clone_flags | SIGCHLD) | extra, NULL, NULL, NULL, NULL);
    if (pid == 0) {
        close(go[0]);
        close(status[0]);
        child_main(spec, go[1], status[1]);
        _exit(127);
    }
    return pid;
}

/* What the intermediate reports: the child's pid (0: none) and the errno of a failed step. */
struct joined_child { int32_t pid; int32_t error; };

/* Writes /proc/PID/NAME (an id map). */
static int write_proc_file(long pid, const char *name, const char *text) {
    char digits[24], path[64];
    int length = 0;
    do { digits[length++] = (char)('0' + pid % 10); pid /= 10; } while (pid > 0 && length < 20);
    char number[24];
    for (int i = 0; i < length; i++) number[i] = digits[length - 1 - i];
    number[length] = 0;
    join(path, sizeof path, "/proc/", number);
    char full[96];
    join(full, sizeof full, path, name);
    return write_file(full, text);
}

/* The intermediate (a fresh, single-threaded clone of the caller): joins the namespaces, clones
 * the child as the caller's child (CLONE_PARENT), writes its maps, reports, exits. setns(2) into
 * a user namespace is refused to a multithreaded process and cannot be undone, which is why the
 * caller does not do this itself. */
static void intermediate_main(const struct csys_sandbox_spec *spec, int go[2], int status[2], int report) {
    struct joined_child result = { 0, 0 };
    if (spec->join_userns_fd >= 0 && setns(spec->join_userns_fd, CLONE_NEWUSER) < 0) result.error = errno;
    else if (setns(spec->join_netns_fd, CLONE_NEWNET) < 0) result.error = errno;
    else {
        long pid = clone_child(spec, go, status, CLONE_PARENT);
        if (pid < 0) result.error = errno;
        else {
            result.pid = (int32_t)pid;
            /* setgroups: a namespace made inside one whose setgroups is "deny" inherits it. */
            if (spec->inner_uid_map && write_proc_file(pid, "/uid_map", spec->inner_uid_map) < 0) result.error = errno;
            else if (spec->inner_gid_map && write_proc_file(pid, "/gid_map", spec->inner_gid_map) < 0) result.error = errno;
        }
    }
    ssize_t n;
    do { n = write(report, &result, sizeof result); } while (n < 0 && errno == EINTR);
    _exit(0);
}

/* Runs the intermediate and returns the child's pid, or -errno (the child, if one was made
 * before a later step failed, is killed and reaped). */
static long clone_joined(const struct csys_sandbox_spec *spec, int go[2], int status[2]) {
    int report[2];
    if (pipe2(report, O_CLOEXEC) < 0) return -errno;
    long middle = syscall(SYS_clone, (unsigned long)SIGCHLD, NULL, NULL, NULL, NULL);
    if (middle == 0) {
        close(report[0]);
        intermediate_main(spec, go, status, report[1]);
        _exit(127);
    }
    int e = errno;
    close(report[1]);
    if (middle < 0) { close(report[0]); return -e; }
    struct joined_child result = { 0, EIO };
    size_t got = 0;
    while (got < sizeof result) {
        ssize_t n = read(report[0], (char *)&result + got, sizeof result - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(report[0]);
    while (waitpid((pid_t)middle, NULL, 0) < 0 && errno == EINTR) {}
    /* Its SIGCHLD would read as "something happened" to a caller that waits on a signalfd for
     * SIGCHLD (the supervisor): take it out of the queue, as for any helper we reap ourselves. */
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    struct timespec none = { 0, 0 };
    sigtimedwait(&chld, NULL, &none);
    if (got != sizeof result) { result.pid = 0; result.error = EIO; }
    if (result.error != 0) {
        if (result.pid > 0) {
            kill(result.pid, SIGKILL);
            while (waitpid(result.pid, NULL, 0) < 0 && errno == EINTR) {}
        }
        return -result.error;
    }
    return result.pid;
}

pid_t csys_sandbox_clone(const struct csys_sandbox_spec *spec, int *go_fd, int *status_fd) {
    int saved = errno;
    int go[2], status[2];
    /* "go" is a socket so that it can carry the root's mount fd to the child. */
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, go) < 0) { int e = errno; errno = saved; return -e; }
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
    long pid = spec->join_netns_fd >= 0 ? clone_joined(spec, go, status) : clone_child(spec, go, status, 0);
    int e = spec->join_netns_fd >= 0 ? (int)-pid : errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(go[1]);
    close(status[1]);
    if (pid < 0) {
        close(go[0]);
        close(status[0]);
        errno = saved;
        return -e;
    }
    *go_fd = go[0];
    *status_fd = status[0];
    errno = saved;
    return (pid_t)pid;
}

int csys_sandbox_go(int go_fd, int pass_fd) {
    int saved = errno;
    struct go_message m;
    go_message_init(&m, pass_fd >= 0);
    if (pass_fd >= 0) {
        struct cmsghdr *header = CMSG_FIRSTHDR(&m.header);
        header->cmsg_level = SOL_SOCKET;
        header->cmsg_type = SCM_RIGHTS;
        header->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(header), &pass_fd, sizeof(int));
    }
    ssize_t n;
    do { n = sendmsg(go_fd, &m.header, MSG_NOSIGNAL); } while (n < 0 && errno == EINTR);
    int result = n == 1 ? 0 : -(n < 0 ? errno : EIO);
    errno = saved;
    return result;
}

int csys_idmapped_tree(const char *path, int userns_fd) {
    int saved = errno;
    int tree = (int)syscall(SYS_open_tree, AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
    if (tree < 0) { int e = errno; errno = saved; return -e; }
    struct mount_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    attr.userns_fd = (uint64_t)userns_fd;
    if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) < 0) {
        int e = errno;
        close(tree);
        errno = saved;
        return -e;
    }
    errno = saved;
    return tree;
}

/* fsopen + fsconfig(key=value for each comma-separated option) + create + fsmount. */
static int new_tree(const char *type, const char *const *keys, const char *const *values, int count, const char *options) {
    int fs = (int)syscall(SYS_fsopen, type, FSOPEN_CLOEXEC);
    if (fs < 0) return -errno;
    int result = 0;
    for (int i = 0; i < count && result == 0; i++)
        if (syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, keys[i], values[i], 0) < 0) result = -errno;
    if (result == 0 && options) {
        char copy[512];
        if (strlen(options) >= sizeof copy) result = -E2BIG;
        else {
            strcpy(copy, options);
            char *save = NULL;
            for (char *option = strtok_r(copy, ",", &save); option && result == 0; option = strtok_r(NULL, ",", &save)) {
                char *equals = strchr(option, '=');
                long r;
                if (equals) { *equals = 0; r = syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, option, equals + 1, 0); }
                else r = syscall(SYS_fsconfig, fs, FSCONFIG_SET_FLAG, option, NULL, 0);
                if (r < 0) result = -errno;
            }
        }
    }
    if (result == 0 && syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) result = -errno;
    if (result == 0) {
        int tree = (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
        result = tree < 0 ? -errno : tree;
    }
    close(fs);
    return result;
}

int csys_tmpfs_tree(const char *options) {
    int saved = errno;
    int result = new_tree("tmpfs", NULL, NULL, 0, options);
    errno = saved;
    return result;
}

int csys_overlay_root(const char *lower, const char *upper, const char *work, const char *extra_options) {
    int saved = errno;
    const char *keys[] = { "lowerdir", "upperdir", "workdir" };
    const char *values[] = { lower, upper, work };
    int result = new_tree("overlay", keys, values, 3, extra_options);
    errno = saved;
    return result;
}

int csys_loop_attach(const char *image, int *number) {
    int saved = errno;
    int control = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (control < 0) { int e = errno; errno = saved; return -e; }
    int backing = open(image, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (backing < 0) { int e = errno; close(control); errno = saved; return -e; }
    int result = -EBUSY;
    /* Another process may take the free device between GET_FREE and CONFIGURE: try again. */
    for (int attempt = 0; attempt < 16 && result == -EBUSY; attempt++) {
        int n = ioctl(control, LOOP_CTL_GET_FREE);
        if (n < 0) { result = -errno; break; }
        char path[32] = "/dev/loop";
        char digits[12];
        int length = 0;
        do { digits[length++] = (char)('0' + n % 10); n /= 10; } while (n > 0);
        size_t at = strlen(path);
        while (length > 0) path[at++] = digits[--length];
        path[at] = 0;
        int loop = open(path, O_RDWR | O_CLOEXEC);
        if (loop < 0) { result = -errno; break; }
        struct loop_config config;
        memset(&config, 0, sizeof config);
        config.fd = (uint32_t)backing;
        /* AUTOCLEAR: the device frees itself once its last user (the sandbox's mount) is gone. */
        config.info.lo_flags = LO_FLAGS_AUTOCLEAR;
        if (ioctl(loop, LOOP_CONFIGURE, &config) < 0) {
            result = -errno;
            close(loop);
            continue;
        }
        *number = atoi(path + 9);
        result = loop;
    }
    close(backing);
    close(control);
    errno = saved;
    return result;
}

int csys_ext4_tree(const char *device) {
    int saved = errno;
    const char *keys[] = { "source" };
    const char *values[] = { device };
    int result = new_tree("ext4", keys, values, 1, NULL);
    errno = saved;
    return result;
}

int csys_open_in_root(const char *root, const char *path) {
    int saved = errno;
    int directory = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (directory < 0) { int e = errno; errno = saved; return -e; }
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = O_RDONLY | O_CLOEXEC;
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    int fd = (int)syscall(SYS_openat2, directory, path, &how, sizeof how);
    int e = errno;
    close(directory);
    errno = saved;
    return fd < 0 ? -e : fd;
}
