/* Starting a sandbox's first process in new namespaces (the namespace boot backend).
 *
 * csys_sandbox_clone() clone(2)s a child into new namespaces. The child waits for one byte on the
 * "go" pipe (so the parent can first place it in a cgroup), then, with async-signal-safe calls
 * only: optionally setsid(2)s, unshares a cgroup namespace, sets the hostname, brings up loopback, makes
 * every mount private, bind-mounts (or overlays) the rootfs onto the mount point, pivot_root(2)s
 * into it, detaches the old root, optionally mounts /proc, wires the descriptors of fd_map, resets signals and execve(2)s.
 * Any failing step writes a struct csys_boot_report to the CLOEXEC status pipe and _exit(127)s;
 * a successful exec closes that pipe, so the parent reads 0 bytes.
 */
#pragma once
#include <stdint.h>
#include <sys/types.h>

/* clone(2) namespace flags (kernel ABI values; the Glibc module is built without _GNU_SOURCE,
 * so <sched.h> does not give Swift the CLONE_NEW* macros). */
enum {
    CSYS_CLONE_NEWNS = 0x00020000,
    CSYS_CLONE_NEWCGROUP = 0x02000000,
    CSYS_CLONE_NEWUTS = 0x04000000,
    CSYS_CLONE_NEWIPC = 0x08000000,
    CSYS_CLONE_NEWPID = 0x20000000,
    CSYS_CLONE_NEWNET = 0x40000000,
    CSYS_CLONE_NEWUSER = 0x10000000,
};

/* Where a step failed; matches TetherBoot's BootStage. */
enum {
    CSYS_BOOT_STAGE_ROOTFS = 1,     /* the rootfs directory or mount point is unusable */
    CSYS_BOOT_STAGE_NAMESPACE = 2,  /* clone, unshare, sethostname, loopback, descriptors */
    CSYS_BOOT_STAGE_MOUNT = 3,      /* making mounts private, bind/overlay, pivot_root, detaching */
    CSYS_BOOT_STAGE_EXEC = 4,       /* execve of the first process (the agent) */
    CSYS_BOOT_STAGE_USER = 5,       /* becoming root of the new user namespace (setgroups, setresgid, setresuid) */
    CSYS_BOOT_STAGE_API_FS = 6,     /* /proc, /sys, /dev inside the new root, their masks and read-only parts */
};

struct csys_boot_report {
    int32_t stage;
    int32_t error;   /* errno */
};

struct csys_sandbox_spec {
    int clone_flags;             /* CLONE_NEW* flags; SIGCHLD is added */
    int new_cgroup_ns;           /* unshare(CLONE_NEWCGROUP) after "go" (the parent moved us) */
    int loopback_up;             /* with CLONE_NEWNET: set IFF_UP on lo */
    int parent_death_signal;     /* PR_SET_PDEATHSIG, 0 for none */
    int new_session;             /* setsid(2): away from the caller's terminal and its signals */
    int mount_proc;              /* after pivot_root: a procfs of the new PID namespace on /proc */
    const char *hostname;        /* NULL: leave as inherited */
    const char *rootfs;          /* NULL: no pivot_root (stay in the host's root) */
    const char *mountpoint;      /* where the root is mounted before pivot_root; NULL: rootfs */
    const char *overlay_options; /* non-NULL: mount overlayfs with these options on mountpoint
                                    instead of bind-mounting rootfs (lowerdir=rootfs,...) */
    const char *path;            /* the program, resolved inside the new root */
    char *const *argv;
    char *const *envp;
    const int *fd_map;           /* pairs {parent fd, child fd}; the child gets exactly these */
    int fd_map_pairs;

    /* With CSYS_CLONE_NEWUSER in clone_flags the parent writes the id maps while the child waits
     * for "go"; the child then makes itself uid and gid 0 of the new namespace. */
    int set_groups;              /* setgroups(0, NULL) too (not where the parent denied setgroups) */
    int receive_root;            /* "go" carries a mount fd (SCM_RIGHTS): the root to pivot into,
                                    built by the parent (csys_overlay_root); rootfs is then unused */
    const char *layer_tmpfs;     /* non-NULL: tmpfs options; mounted on layer_dir before the overlay */
    const char *layer_dir;       /* with layer_tmpfs: where the tmpfs goes; upper/ and work/ are made in it */
    int api_filesystems;         /* build /proc, /sys and /dev in the new root before pivot_root,
                                    with the masked and read-only paths of a confined sandbox */
    int new_sysfs;               /* with api_filesystems: a new read-only sysfs (own network namespace);
                                    0: a read-only recursive bind of the host's /sys */
    const char *devpts_options;  /* with api_filesystems: the devpts instance on /dev/pts */
    const char *const *cgroup_mounts; /* with api_filesystems: NULL, or {dir, fstype, options}
                                    triples ended by NULL, mounted read-only under /sys/fs/cgroup
                                    (a dir of "" mounts on /sys/fs/cgroup itself) */
    uint64_t bounding_drop;      /* capabilities (bit N = CAP number N) dropped from the bounding set
                                    after the id change, for the sandbox's whole tree */
    int exec_fd;                 /* >= 0: execveat(exec_fd, "", AT_EMPTY_PATH) instead of `path`
                                    (the program as opened by the parent, not as the root shows it) */
    const char *const *sysctls;  /* NULL, or {path, value} pairs ended by NULL, written after
                                    loopback_up (the new network namespace's knobs) */

    /* An existing network namespace instead of CLONE_NEWNET (the egress network, whose rules
     * live in a namespace the guest's root has no capability over). Always set both: -1 is
     * "none". With join_netns_fd >= 0 the child is cloned by a short-lived intermediate that
     * setns(2)es first (into join_userns_fd, when >= 0, then join_netns_fd) and clones the child
     * as the caller's own child (CLONE_PARENT): its new user namespace is then created inside
     * join_userns_fd's. clone_flags must not hold CLONE_NEWNET then. */
    int join_netns_fd;
    int join_userns_fd;
    /* With join_userns_fd: the child's uid_map and gid_map, written by the intermediate (which
     * is root of join_userns_fd's namespace; the caller is not in the child's parent namespace
     * and may not write them). Ids are those of join_userns_fd's namespace. */
    const char *inner_uid_map;
    const char *inner_gid_map;
};

/* Returns the child's pid (in the caller's PID namespace) or -errno from pipe2/clone. On success
 * *go_fd is the write end of the go pipe (write one byte, then close) and *status_fd the read end
 * of the status pipe (0 bytes: the exec happened; a csys_boot_report: it failed). Both CLOEXEC. */
pid_t csys_sandbox_clone(const struct csys_sandbox_spec *spec, int *go_fd, int *status_fd);

/* Lets the child of csys_sandbox_clone go: one byte on the go socket, with `pass_fd` attached
 * (SCM_RIGHTS) when it is >= 0. Returns 0 or -errno. */
int csys_sandbox_go(int go_fd, int pass_fd);

/* The parent's half of a confined root (mount API, kernel 5.12 and later; needs CAP_SYS_ADMIN):
 * csys_idmapped_tree: a detached, read-only, nosuid, nodev copy of the tree at `path` whose ids
 *   are shifted into the user namespace `userns_fd` (files the host's root owns look owned by the
 *   namespace's root), as a mount fd.
 * csys_tmpfs_tree: a detached tmpfs mounted with `options` ("size=...,mode=..."), as a mount fd.
 * csys_overlay_root: a detached overlay of `lower` (read-only) under `upper`/`work`, nosuid and
 *   nodev, as a mount fd; paths may be /proc/self/fd/N of the fds above.
 * Each returns the fd (CLOEXEC) or -errno. */
int csys_idmapped_tree(const char *path, int userns_fd);
int csys_tmpfs_tree(const char *options);
int csys_overlay_root(const char *lower, const char *upper, const char *work, const char *extra_options);

/* pivot_root(2) has no glibc wrapper; exposed for tests of the namespace steps. */
int csys_pivot_root(const char *new_root, const char *put_old);

/* Attaches `image` (a file) to a free loop device with LO_FLAGS_AUTOCLEAR; returns the device's
 * fd (CLOEXEC; *number is N of /dev/loopN) or -errno. */
int csys_loop_attach(const char *image, int *number);
/* A detached ext4 mount (nosuid, nodev) of `device`, as a mount fd, or -errno. */
int csys_ext4_tree(const char *device);

/* Opens `path` inside the directory `root` as if `root` were "/" (openat2 RESOLVE_IN_ROOT: an
 * absolute or ".." symlink in the tree cannot lead out of it), read-only and CLOEXEC; the fd
 * or -errno. */
int csys_open_in_root(const char *root, const char *path);
