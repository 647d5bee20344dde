/* A device allow-list for a cgroup v2 directory: a BPF_PROG_TYPE_CGROUP_DEVICE program built from
 * rules, loaded with bpf(BPF_PROG_LOAD) and attached with bpf(BPF_PROG_ATTACH). cgroup v2 has no
 * devices.allow file; on it the kernel asks the programs attached to a task's cgroup (and its
 * ancestors) whether a device node may be opened or created.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Device kinds and access bits, with the values the kernel passes the program
 * (BPF_DEVCG_DEV_* and BPF_DEVCG_ACC_* of linux/bpf.h). */
enum {
    CSYS_DEVICE_BLOCK = 1,
    CSYS_DEVICE_CHAR = 2,
};
enum {
    CSYS_DEVICE_MKNOD = 1,
    CSYS_DEVICE_READ = 2,
    CSYS_DEVICE_WRITE = 4,
};

/* The step csys_cgroup_device_attach failed at. */
enum {
    CSYS_DEVICE_STEP_LOAD = 1,   /* bpf(BPF_PROG_LOAD): the verifier refused, or no BPF here */
    CSYS_DEVICE_STEP_ATTACH = 2, /* bpf(BPF_PROG_ATTACH) */
};

/* One allowed device: kind, major and minor (-1: any), and the access bits it allows. */
struct csys_device_rule {
    int32_t kind;
    int64_t major;
    int64_t minor;
    uint32_t access;
};

/* Loads a program that allows exactly `rules` (everything else is denied) and attaches it to the
 * cgroup v2 directory open at `cgroup_fd` with BPF_F_ALLOW_MULTI: an init in the sandbox may
 * attach programs of its own below it, and the kernel runs them all (every one must allow).
 * The attachment keeps the program alive after its descriptor is closed, and the kernel drops it
 * with the cgroup. When the verifier refuses the program, its log goes to `log` (may be NULL).
 * Returns 0, or -errno with *failed_step one of CSYS_DEVICE_STEP_*. */
int csys_cgroup_device_attach(int cgroup_fd, const struct csys_device_rule *rules, int count,
                              char *log, size_t log_size, int *failed_step);

/* How many device programs are attached to the cgroup v2 directory open at `cgroup_fd` itself
 * (not its ancestors): bpf(BPF_PROG_QUERY). Returns the count or -errno. */
int csys_cgroup_device_program_count(int cgroup_fd);
