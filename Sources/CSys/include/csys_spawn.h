/* Spawning a child for the guest agent: clone with vfork semantics (CLONE_VM | CLONE_VFORK:
 * the caller is suspended until the child's execve or exit), set the child up with
 * async-signal-safe calls only, execve. One child is started at a time per process (a lock
 * around the child's stack). Everything the child needs (argv, envp, candidate paths, groups,
 * limits) is built by the caller BEFORE the call; the child allocates nothing and takes no locks.
 *
 * Contract
 * - All signals are blocked in the caller around the clone, so no handler runs in the child.
 * - The child, in this order (each step is a stage, see enum csys_spawn_stage):
 *     signals         every disposition back to SIG_DFL (the mask stays full until exec)
 *     setsid          a new session and process group (the group the agent signals)
 *     controllingTty  TIOCSCTTY on the pty slave, when there is one
 *     stdio           the three descriptors onto 0, 1, 2 (collisions with 0-2 handled)
 *     setrlimit       each limit, in the order given (before the uid change: raising a hard
 *                     limit needs privilege, and RLIMIT_NPROC is checked against the new user)
 *     capabilityBound, capabilitySets   when bound_capabilities is set: every capability
 *                     outside kept_capabilities leaves the bounding set (PR_CAPBSET_DROP, while
 *                     the child still has the agent's CAP_SETPCAP, so before the uid change),
 *                     the ambient set is cleared and the inheritable set cut down to the kept
 *                     ones (see csys_capability_bound and csys_capability_limit_sets)
 *     setgroups, setgid, setuid   when set_user is true, in that order (raw syscalls: the
 *                     child is single-threaded, and glibc's wrappers would broadcast)
 *     chdir           as the new user, so permissions are the user's
 *     closeFds        every descriptor above 2 marked close-on-exec (close_range(2), or a
 *                     loop up to RLIMIT_NOFILE where close_range is missing); the report pipe
 *                     stays usable until execve
 *     noNewPrivs      PR_SET_NO_NEW_PRIVS, when no_new_privs is set or there is a filter
 *     seccomp         the filter, when seccomp_filter is set (see below); last before exec
 *     exec            the signal mask emptied, then execve(2) on each candidate path in turn,
 *                     with execvp(3)'s rules: ENOENT, ENOTDIR, ESTALE, ENODEV, ETIMEDOUT move on
 *                     to the next candidate, EACCES is remembered and moves on, anything else
 *                     stops; at the end EACCES if any candidate said so, else the last error.
 *                     (ENOEXEC is reported, never retried through /bin/sh.)
 * - A failing step writes one struct csys_spawn_report (stage, errno) to the CLOEXEC report
 *   pipe and calls _exit(127). A successful execve closes the pipe: the parent reads EOF.
 *
 * Adding a child stage: add an enum value (and its case in the Swift SpawnStage, whose
 * init(child:) reads these numbers), a field in
 * csys_spawn_options, and the step in csys_spawn.c's child() at its place in the order above.
 */
#pragma once

#include <stdint.h>
#include <sys/types.h>
#include <sys/resource.h>

#include <linux/filter.h>   /* struct sock_fprog, for the seccomp hook */

/* Where a spawn failed. The numbers travel only between the child and the parent; the agent
 * turns them into SpawnStage, whose names the wire carries. */
enum csys_spawn_stage {
    CSYS_STAGE_NONE = 0,
    CSYS_STAGE_REPORT_PIPE,     /* parent: pipe2(2) for the report pipe */
    CSYS_STAGE_FORK,            /* parent: the child's stack (mmap) or clone(2) */
    CSYS_STAGE_SIGNALS,
    CSYS_STAGE_SETSID,
    CSYS_STAGE_CONTROLLING_TTY,
    CSYS_STAGE_STDIO,
    CSYS_STAGE_SETRLIMIT,
    CSYS_STAGE_CAPABILITY_BOUND,
    CSYS_STAGE_CAPABILITY_SETS,
    CSYS_STAGE_SETGROUPS,
    CSYS_STAGE_SETGID,
    CSYS_STAGE_SETUID,
    CSYS_STAGE_CHDIR,
    CSYS_STAGE_CLOSE_FDS,
    CSYS_STAGE_NO_NEW_PRIVS,
    CSYS_STAGE_SECCOMP,
    CSYS_STAGE_EXEC,
};


struct csys_rlimit {
    int resource;       /* RLIMIT_* */
    rlim_t soft;
    rlim_t hard;
};

struct csys_spawn_options {
    /* execve(2) candidates, tried in order (a single path, or argv[0] joined to each PATH entry). */
    const char *const *paths;
    int path_count;
    char *const *argv;          /* NULL-terminated, at least argv[0] */
    char *const *envp;          /* NULL-terminated, never NULL itself */
    int stdio[3];               /* descriptors for 0, 1, 2 (may be equal; may be below 3) */
    int controlling_tty;        /* the pty slave for TIOCSCTTY, or -1 */
    const char *cwd;            /* NULL: stay in the agent's directory */
    int set_user;               /* nonzero: setgroups(groups), setresgid(gid), setresuid(uid) */
    uid_t uid;
    gid_t gid;
    const gid_t *groups;
    int group_count;
    const struct csys_rlimit *rlimits;
    int rlimit_count;
    /* Nonzero: the stages capabilityBound and capabilitySets, with kept_capabilities (bit N is
     * capability N of linux/capability.h) as the most the command may ever hold. */
    int bound_capabilities;
    uint64_t kept_capabilities;
    /* Nonzero: PR_SET_NO_NEW_PRIVS before exec (set-user-ID bits and file capabilities then
     * grant nothing). Implied by a seccomp filter. */
    int no_new_privs;
    /* When non-NULL, the child installs this classic-BPF filter with
     * seccomp(SECCOMP_SET_MODE_FILTER) right before execve, after no_new_privs. The filter must
     * allow execve (and execveat), write and exit_group: the child still calls them after
     * installing it. The parent builds it; the child only passes it on. */
    const struct sock_fprog *seccomp_filter;
};

/* What a failed child writes to the report pipe. */
struct csys_spawn_report {
    int32_t stage;
    int32_t error;
};

/* Starts a child. Returns its pid and stores the read end of the report pipe (O_CLOEXEC |
 * O_NONBLOCK) in *report_fd; the caller watches it (EOF: the exec happened; a report: it did
 * not, and the child exits 127). On failure returns -errno and stores the stage
 * (CSYS_STAGE_REPORT_PIPE or CSYS_STAGE_FORK) in *failed_stage; no child exists then. */
pid_t csys_spawn(const struct csys_spawn_options *options, int *report_fd, int *failed_stage);

/* Reads a report pipe: 1 and *report filled (the exec failed), 0 at EOF (it happened),
 * -EAGAIN when neither is known yet, or -errno. Leaves errno as it was. */
int csys_spawn_read_report(int report_fd, struct csys_spawn_report *report);

/* RLIMIT_* for a name (nofile nproc as core cpu fsize stack data memlock rss nice rtprio
 * msgqueue sigpending locks), or -1 for an unknown name. */
int csys_rlimit_resource(const char *name);

/* A pseudo-terminal pair, both ends O_CLOEXEC, the master O_NONBLOCK, the window size set
 * before anyone uses it. The slave is opened with TIOCGPTPEER (no path lookup) where the
 * kernel has it, else by its /dev/pts name. Returns 0, or -errno with *failed_stage one of
 * CSYS_PTY_STAGE_*. */
enum csys_pty_stage {
    CSYS_PTY_STAGE_OPEN = 1,    /* posix_openpt(3): open /dev/ptmx */
    CSYS_PTY_STAGE_UNLOCK,      /* unlockpt(3) */
    CSYS_PTY_STAGE_OPEN_SLAVE,  /* TIOCGPTPEER, or ptsname + open */
    CSYS_PTY_STAGE_WINSIZE,     /* TIOCSWINSZ */
    CSYS_PTY_STAGE_NONBLOCK,    /* fcntl(2) O_NONBLOCK on the master */
};
int csys_openpty(unsigned short rows, unsigned short cols, int *master, int *slave, int *failed_stage);

/* TIOCSWINSZ. Returns 0 or -errno. */
int csys_set_winsize(int fd, unsigned short rows, unsigned short cols);

/* The terminal's end-of-file character (VEOF) and whether it is in canonical mode, from
 * tcgetattr(3) on the master. Returns 0 or -errno. */
int csys_terminal_eof(int fd, unsigned char *veof, int *canonical);

/* Bytes ready to read (FIONREAD), or -errno. */
int csys_readable_bytes(int fd);

/* F_SETPIPE_SZ, best effort: returns the new size or -errno. */
int csys_set_pipe_size(int fd, int bytes);

/* Capabilities (capabilities(7)). Both are async-signal-safe (prctl and raw capget/capset
 * only), so the spawn child uses them between clone and execve, and the agent on itself.
 *
 * csys_capability_bound: drops every capability the kernel knows that is outside `kept`
 * (bit N = capability N) from the calling thread's bounding set. Dropping needs CAP_SETPCAP;
 * a caller without it (an agent run as an ordinary user) cannot drop, and that is accepted
 * for a capability that is not in its permitted set either: with no_new_privs set before the
 * next execve (every guest command gets it), nothing can grant it that capability again
 * (set-user-ID and file capabilities are ignored). Any other failure returns -errno.
 *
 * csys_capability_limit_sets: clears the ambient set (PR_CAP_AMBIENT_CLEAR_ALL; EINVAL from a
 * kernel before 4.3, which has no ambient set, is not an error) and cuts the inheritable set
 * down to `kept`: at an execve by root the new permitted set is the bounding set plus the
 * inheritable one. With limit_permitted, the permitted and effective sets too (the agent on
 * itself; a spawn child keeps the agent's until its execve, it still needs CAP_SETUID).
 * Returns 0 or -errno. */
int csys_capability_bound(uint64_t kept);
int csys_capability_limit_sets(uint64_t kept, int limit_permitted);

/* The capability sets of the calling thread as capget(2) reports them (bit N = capability
 * N). Returns 0 or -errno. */
int csys_capability_get(uint64_t *effective, uint64_t *permitted, uint64_t *inheritable);

/* PR_CAPBSET_READ: 1 when capability `cap` is in the calling thread's bounding set, 0 when
 * not, -EINVAL past the last capability the kernel knows. */
int csys_capability_in_bounding_set(int cap);

/* prctl(PR_SET_DUMPABLE, value): 0 makes /proc/PID/{mem,environ,fd,...} of this process
 * root's alone and refuses ptrace without CAP_SYS_PTRACE. Returns 0 or -errno. */
int csys_set_dumpable(int value);

/* mallopt(M_MMAP_THRESHOLD, bytes): allocations of `bytes` and more are mapped and unmapped
 * whole, and glibc stops raising that threshold to the largest block freed. Returns mallopt's
 * 1 on success, 0 on failure. */
int csys_set_mmap_threshold(int bytes);

/* TIOCSCTTY-free helpers the Glibc module does not export. */
int csys_reboot_power_off(void);          /* reboot(2) RB_POWER_OFF; -errno on failure */
dev_t csys_makedev(unsigned int major, unsigned int minor);
int csys_set_child_subreaper(void);       /* prctl(PR_SET_CHILD_SUBREAPER, 1) */
