/* The spawned child of the guest agent. See csys_spawn.h for the contract and the stage order.
 * The child shares the agent's memory until its execve (vfork semantics): between clone and
 * execve only async-signal-safe calls and raw syscalls are made, and it writes nothing but its
 * own stack (and errno, which the suspended agent reads only after a failed clone). */
#define _GNU_SOURCE
#include "csys.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef TIOCGPTPEER
#define TIOCGPTPEER _IO('T', 0x41)
#endif

/* Writes (stage, errno) to the report pipe and ends the child. Never returns. */
static void fail(int report_fd, int stage, int error) {
    struct csys_spawn_report report = { stage, error };
    const char *p = (const char *)&report;
    size_t left = sizeof report;
    while (left > 0) {
        ssize_t n = write(report_fd, p, left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        p += n;
        left -= (size_t)n;
    }
    _exit(127);
}

/* Moves a descriptor below 3 out of the way of the stdio dup2s, keeping it close-on-exec. */
static int above_stdio(int fd) {
    return fd >= 0 && fd < 3 ? fcntl(fd, F_DUPFD_CLOEXEC, 3) : fd;
}

/* Marks every descriptor from 3 up close-on-exec. */
static int mark_cloexec_from_3(void) {
    if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) == 0) return 0;
    if (errno != ENOSYS && errno != EINVAL) return -1;
    /* Kernels before 5.11: walk up to the descriptor limit (EBADF just means "not open"). */
    struct rlimit limit;
    long max = 65536;
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY && (long)limit.rlim_cur < max)
        max = (long)limit.rlim_cur;
    for (long fd = 3; fd < max; fd++) {
        int flags = fcntl((int)fd, F_GETFD);
        if (flags >= 0 && !(flags & FD_CLOEXEC)) fcntl((int)fd, F_SETFD, flags | FD_CLOEXEC);
    }
    return 0;
}

static void child(const struct csys_spawn_options *o, int report_fd) {
    /* The report pipe must survive the stdio dup2s even if the agent's 0-2 were closed. */
    report_fd = above_stdio(report_fd);
    if (report_fd < 0) _exit(127);

    /* signals: the mask is still full (the parent blocked everything around fork). */
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        struct sigaction action;
        memset(&action, 0, sizeof action);
        action.sa_handler = SIG_DFL;
        /* glibc reserves two real-time signals and refuses them with EINVAL: not ours to reset. */
        (void)sigaction(sig, &action, NULL);
    }

    if (setsid() < 0) fail(report_fd, CSYS_STAGE_SETSID, errno);

    if (o->controlling_tty >= 0 && ioctl(o->controlling_tty, TIOCSCTTY, 0) < 0)
        fail(report_fd, CSYS_STAGE_CONTROLLING_TTY, errno);

    /* stdio: first move every source below 3 that is not already in place above 2, so that
     * no dup2 overwrites a source another slot still needs. */
    int source[3] = { o->stdio[0], o->stdio[1], o->stdio[2] };
    for (int i = 0; i < 3; i++) {
        int fd = source[i];
        if (fd < 0 || fd == i || fd >= 3) continue;
        int moved = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (moved < 0) fail(report_fd, CSYS_STAGE_STDIO, errno);
        for (int j = 0; j < 3; j++) if (source[j] == fd) source[j] = moved;
    }
    for (int i = 0; i < 3; i++) {
        if (source[i] < 0) fail(report_fd, CSYS_STAGE_STDIO, EBADF);
        if (source[i] == i) {
            if (fcntl(i, F_SETFD, 0) < 0) fail(report_fd, CSYS_STAGE_STDIO, errno);
        } else {
            int r;
            do { r = dup2(source[i], i); } while (r < 0 && errno == EINTR);
            if (r < 0) fail(report_fd, CSYS_STAGE_STDIO, errno);
        }
    }

    for (int i = 0; i < o->rlimit_count; i++) {
        struct rlimit limit = { o->rlimits[i].soft, o->rlimits[i].hard };
        if (setrlimit(o->rlimits[i].resource, &limit) < 0) fail(report_fd, CSYS_STAGE_SETRLIMIT, errno);
    }

    /* Before the uid change: dropping from the bounding set needs CAP_SETPCAP, which a
     * change away from uid 0 takes away. */
    if (o->bound_capabilities) {
        int result = csys_capability_bound(o->kept_capabilities);
        if (result < 0) fail(report_fd, CSYS_STAGE_CAPABILITY_BOUND, -result);
        result = csys_capability_limit_sets(o->kept_capabilities, 0);
        if (result < 0) fail(report_fd, CSYS_STAGE_CAPABILITY_SETS, -result);
    }

    if (o->set_user) {
        if (syscall(SYS_setgroups, (size_t)o->group_count, o->groups) < 0)
            fail(report_fd, CSYS_STAGE_SETGROUPS, errno);
        if (syscall(SYS_setresgid, o->gid, o->gid, o->gid) < 0)
            fail(report_fd, CSYS_STAGE_SETGID, errno);
        if (syscall(SYS_setresuid, o->uid, o->uid, o->uid) < 0)
            fail(report_fd, CSYS_STAGE_SETUID, errno);
    }

    if (o->cwd != NULL && chdir(o->cwd) < 0) fail(report_fd, CSYS_STAGE_CHDIR, errno);

    if (mark_cloexec_from_3() < 0) fail(report_fd, CSYS_STAGE_CLOSE_FDS, errno);

    /* Required for a filter installed without CAP_SYS_ADMIN, and what makes the capability
     * bound hold: an execve can no longer grant anything (set-user-ID, file capabilities). */
    if (o->no_new_privs || o->seccomp_filter != NULL) {
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) fail(report_fd, CSYS_STAGE_NO_NEW_PRIVS, errno);
    }
    /* Last: every call the child still makes from here on must pass the filter. */
    if (o->seccomp_filter != NULL) {
        if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, o->seccomp_filter) < 0)
            fail(report_fd, CSYS_STAGE_SECCOMP, errno);
    }

    sigset_t empty;
    sigemptyset(&empty);
    if (sigprocmask(SIG_SETMASK, &empty, NULL) < 0) fail(report_fd, CSYS_STAGE_SIGNALS, errno);

    int denied = 0, last = ENOENT;
    for (int i = 0; i < o->path_count; i++) {
        execve(o->paths[i], o->argv, o->envp);
        last = errno;
        switch (last) {
        case EACCES: denied = 1; continue;
        case ENOENT: case ENOTDIR: case ESTALE: case ENODEV: case ETIMEDOUT: continue;
        default: fail(report_fd, CSYS_STAGE_EXEC, last);
        }
    }
    fail(report_fd, CSYS_STAGE_EXEC, denied ? EACCES : last);
}

#if defined(__SANITIZE_ADDRESS__)
#define CSYS_ADDRESS_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CSYS_ADDRESS_SANITIZER 1
#endif
#endif
#ifndef CSYS_ADDRESS_SANITIZER
#define CSYS_ADDRESS_SANITIZER 0
#endif

struct child_start {
    const struct csys_spawn_options *options;
    int report_read;
    int report_write;
};

static int child_entry(void *argument) {
    const struct child_start *start = argument;
    close(start->report_read);
    child(start->options, start->report_write);
    _exit(127);
}

/* The child's stack while it shares the agent's memory. One is enough: CLONE_VFORK suspends
 * the calling thread until the child has called execve or exited, and the lock keeps a second
 * thread (the agent has one loop thread; a benchmark or test process may have several) from
 * starting a child on the same stack meanwhile. */
static void *child_stack;
static pthread_mutex_t child_stack_lock = PTHREAD_MUTEX_INITIALIZER;
enum { CHILD_STACK_BYTES = 256 << 10 };

pid_t csys_spawn(const struct csys_spawn_options *options, int *report_fd, int *failed_stage) {
    int saved = errno;
    pthread_mutex_lock(&child_stack_lock);
    if (child_stack == NULL) {
        void *stack = mmap(NULL, CHILD_STACK_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
        if (stack == MAP_FAILED) {
            int error = errno;
            pthread_mutex_unlock(&child_stack_lock);
            errno = saved;
            *failed_stage = CSYS_STAGE_FORK;
            return -error;
        }
        child_stack = stack;
    }
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) {
        int error = errno;
        pthread_mutex_unlock(&child_stack_lock);
        errno = saved;
        *failed_stage = CSYS_STAGE_REPORT_PIPE;
        return -error;
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    /* vfork semantics, as posix_spawn(3) does it: no copy of the agent's page tables and no
     * copy-on-write faults afterwards in either process, which fork(2) costs on every exec.
     * No CLONE_SIGHAND: the child's resets of signal dispositions are its own. */
    struct child_start start = { options, fds[0], fds[1] };
#if CSYS_ADDRESS_SANITIZER
    /* Under AddressSanitizer (the fuzz builds) the child's instrumented code and ASan's
     * interceptors (sigaction keeps a table) would write ASan's state shared with this
     * process; seen as a "deadly signal" after ~30,000 fuzzed execs. fork(2) keeps it apart. */
    pid_t pid = fork();
    if (pid == 0) child_entry(&start);
#else
    pid_t pid = clone(child_entry, (char *)child_stack + CHILD_STACK_BYTES, CLONE_VM | CLONE_VFORK | SIGCHLD, &start);
#endif
    int error = errno;
    pthread_mutex_unlock(&child_stack_lock);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        errno = saved;
        *failed_stage = CSYS_STAGE_FORK;
        return -error;
    }
    /* Nonblocking, so the agent's loop can watch it instead of waiting for the exec. */
    int flags = fcntl(fds[0], F_GETFL);
    if (flags >= 0) fcntl(fds[0], F_SETFL, flags | O_NONBLOCK);
    *report_fd = fds[0];
    errno = saved;
    return pid;
}

int csys_spawn_read_report(int report_fd, struct csys_spawn_report *report) {
    int saved = errno;
    size_t have = 0;
    int result;
    for (;;) {
        ssize_t n = read(report_fd, (char *)report + have, sizeof *report - have);
        if (n > 0) {
            have += (size_t)n;
            if (have == sizeof *report) { result = 1; break; }
            continue;
        }
        if (n == 0) { result = have == 0 ? 0 : -EPROTO; break; }
        if (errno == EINTR) continue;
        /* A partial report cannot be left half-read: the child wrote it in one write of
         * 8 bytes (atomic below PIPE_BUF), so EAGAIN here means nothing arrived yet. */
        result = -errno;
        break;
    }
    errno = saved;
    return result;
}

int csys_rlimit_resource(const char *name) {
    static const struct { const char *name; int resource; } table[] = {
        { "nofile", RLIMIT_NOFILE }, { "nproc", RLIMIT_NPROC }, { "as", RLIMIT_AS },
        { "core", RLIMIT_CORE }, { "cpu", RLIMIT_CPU }, { "fsize", RLIMIT_FSIZE },
        { "stack", RLIMIT_STACK }, { "data", RLIMIT_DATA }, { "memlock", RLIMIT_MEMLOCK },
        { "rss", RLIMIT_RSS }, { "nice", RLIMIT_NICE }, { "rtprio", RLIMIT_RTPRIO },
        { "msgqueue", RLIMIT_MSGQUEUE }, { "sigpending", RLIMIT_SIGPENDING },
        { "locks", RLIMIT_LOCKS },
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(table[i].name, name) == 0) return table[i].resource;
    return -1;
}

int csys_openpty(unsigned short rows, unsigned short cols, int *master, int *slave, int *failed_stage) {
    int saved = errno;
    int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    int error = 0;
    if (m < 0) { *failed_stage = CSYS_PTY_STAGE_OPEN; error = errno; goto out; }
    if (unlockpt(m) < 0) { *failed_stage = CSYS_PTY_STAGE_UNLOCK; error = errno; goto close_master; }
    int s = ioctl(m, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (s < 0 && (errno == EINVAL || errno == ENOTTY)) {
        char name[64];
        if (ptsname_r(m, name, sizeof name) != 0) { *failed_stage = CSYS_PTY_STAGE_OPEN_SLAVE; error = errno; goto close_master; }
        s = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
    }
    if (s < 0) { *failed_stage = CSYS_PTY_STAGE_OPEN_SLAVE; error = errno; goto close_master; }
    struct winsize size = { .ws_row = rows, .ws_col = cols };
    if (ioctl(m, TIOCSWINSZ, &size) < 0) { *failed_stage = CSYS_PTY_STAGE_WINSIZE; error = errno; goto close_both; }
    int flags = fcntl(m, F_GETFL);
    if (flags < 0 || fcntl(m, F_SETFL, flags | O_NONBLOCK) < 0) { *failed_stage = CSYS_PTY_STAGE_NONBLOCK; error = errno; goto close_both; }
    *master = m;
    *slave = s;
    errno = saved;
    return 0;
close_both:
    close(s);
close_master:
    close(m);
out:
    errno = saved;
    return -error;
}

int csys_set_winsize(int fd, unsigned short rows, unsigned short cols) {
    int saved = errno;
    struct winsize size = { .ws_row = rows, .ws_col = cols };
    int result = ioctl(fd, TIOCSWINSZ, &size) < 0 ? -errno : 0;
    errno = saved;
    return result;
}

int csys_terminal_eof(int fd, unsigned char *veof, int *canonical) {
    int saved = errno;
    struct termios t;
    int result = 0;
    if (tcgetattr(fd, &t) < 0) {
        result = -errno;
    } else {
        *veof = t.c_cc[VEOF];
        *canonical = (t.c_lflag & ICANON) != 0;
    }
    errno = saved;
    return result;
}

int csys_readable_bytes(int fd) {
    int saved = errno;
    int count = 0;
    int result = ioctl(fd, FIONREAD, &count) < 0 ? -errno : count;
    errno = saved;
    return result;
}

int csys_set_pipe_size(int fd, int bytes) {
    int saved = errno;
    int result = fcntl(fd, F_SETPIPE_SZ, bytes);
    if (result < 0) result = -errno;
    errno = saved;
    return result;
}

/* capget(2)/capset(2) through syscall(2): glibc has no wrapper, libcap is not a dependency.
 * Version 3: two 32-bit words per set. */
static int read_capabilities(struct __user_cap_data_struct data[2]) {
    struct __user_cap_header_struct header = { _LINUX_CAPABILITY_VERSION_3, 0 };
    return syscall(SYS_capget, &header, data) < 0 ? -errno : 0;
}

static uint64_t combine(uint32_t low, uint32_t high) { return (uint64_t)high << 32 | low; }

int csys_capability_get(uint64_t *effective, uint64_t *permitted, uint64_t *inheritable) {
    int saved = errno;
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    int result = read_capabilities(data);
    if (result == 0) {
        *effective = combine(data[0].effective, data[1].effective);
        *permitted = combine(data[0].permitted, data[1].permitted);
        *inheritable = combine(data[0].inheritable, data[1].inheritable);
    }
    errno = saved;
    return result;
}

int csys_capability_bound(uint64_t kept) {
    int saved = errno;
    uint64_t effective = 0, permitted = 0, inheritable = 0;
    int result = csys_capability_get(&effective, &permitted, &inheritable);
    for (int cap = 0; result == 0 && cap < 64; cap++) {
        if (kept & (UINT64_C(1) << cap)) continue;
        int present = prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
        /* EINVAL: past the last capability this kernel knows (they are numbered densely). */
        if (present < 0 && errno == EINVAL) break;
        if (present < 0) { result = -errno; break; }
        if (present == 0) continue;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0) continue;
        /* Without CAP_SETPCAP: acceptable only for a capability the caller does not hold. */
        if (errno == EPERM && !(permitted & (UINT64_C(1) << cap))) continue;
        result = -errno;
    }
    errno = saved;
    return result;
}

int csys_capability_limit_sets(uint64_t kept, int limit_permitted) {
    int saved = errno;
    int result = 0;
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL) result = -errno;
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    if (result == 0) result = read_capabilities(data);
    if (result == 0) {
        for (int word = 0; word < 2; word++) {
            uint32_t mask = (uint32_t)(kept >> (32 * word));
            data[word].inheritable &= mask;
            if (limit_permitted) {
                data[word].permitted &= mask;
                data[word].effective &= mask;
            }
        }
        struct __user_cap_header_struct header = { _LINUX_CAPABILITY_VERSION_3, 0 };
        if (syscall(SYS_capset, &header, data) < 0) result = -errno;
    }
    errno = saved;
    return result;
}

int csys_capability_in_bounding_set(int cap) {
    int saved = errno;
    int result = prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
    if (result < 0) result = -errno;
    errno = saved;
    return result;
}

int csys_set_dumpable(int value) {
    int saved = errno;
    int result = prctl(PR_SET_DUMPABLE, value, 0, 0, 0) < 0 ? -errno : 0;
    errno = saved;
    return result;
}

int csys_set_mmap_threshold(int bytes) { return mallopt(M_MMAP_THRESHOLD, bytes); }

int csys_reboot_power_off(void) {
    int saved = errno;
    int result = reboot(RB_POWER_OFF) < 0 ? -errno : 0;
    errno = saved;
    return result;
}

dev_t csys_makedev(unsigned int major, unsigned int minor) { return makedev(major, minor); }

int csys_set_child_subreaper(void) {
    int saved = errno;
    int result = prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0 ? -errno : 0;
    errno = saved;
    return result;
}
