/* The cgroup v2 device allow-list: see csys_cgroup_device.h. */
#include "csys_cgroup_device.h"

#include <errno.h>
#include <linux/bpf.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Far more than the allow-lists Tether writes. The program has 6 instructions before the rules,
 * at most 8 per rule, and 2 after them. */
#define MAX_RULES 256
#define MAX_INSNS_FOR(rules) (8 + (rules) * 8)

static long bpf_call(int command, union bpf_attr *attr) {
    return syscall(SYS_bpf, command, attr, sizeof(*attr));
}

static struct bpf_insn instruction(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
    struct bpf_insn insn;
    memset(&insn, 0, sizeof(insn));
    insn.code = code;
    insn.dst_reg = dst;
    insn.src_reg = src;
    insn.off = off;
    insn.imm = imm;
    return insn;
}

/* r[dst] = *(u32 *)(r[src] + off) */
static struct bpf_insn load_word(uint8_t dst, uint8_t src, int16_t off) {
    return instruction(BPF_LDX | BPF_MEM | BPF_W, dst, src, off, 0);
}

/* if r[dst] != imm goto +off */
static struct bpf_insn jump_if_not_equal(uint8_t dst, int32_t imm, int16_t off) {
    return instruction(BPF_JMP | BPF_JNE | BPF_K, dst, 0, off, imm);
}

/* The program, in registers: r2 the device kind, r3 the access asked for, r4 the major, r5 the
 * minor (all from struct bpf_cgroup_dev_ctx in r1). One block per rule, each ending in
 * "return 1" (allow); a mismatch jumps to the next block. After the last block, "return 0": the
 * kernel then refuses the open or mknod with EPERM. */
static int build_program(const struct csys_device_rule *rules, int count, struct bpf_insn *program) {
    int n = 0;
    /* access_type is (BPF_DEVCG_ACC_* << 16) | BPF_DEVCG_DEV_*. 32-bit ALU operations clear
     * the upper half of the register, so the comparisons below see only these bits. */
    program[n++] = load_word(2, 1, offsetof(struct bpf_cgroup_dev_ctx, access_type));
    program[n++] = instruction(BPF_ALU | BPF_MOV | BPF_X, 3, 2, 0, 0);
    program[n++] = instruction(BPF_ALU | BPF_AND | BPF_K, 2, 0, 0, 0xffff);
    program[n++] = instruction(BPF_ALU | BPF_RSH | BPF_K, 3, 0, 0, 16);
    program[n++] = load_word(4, 1, offsetof(struct bpf_cgroup_dev_ctx, major));
    program[n++] = load_word(5, 1, offsetof(struct bpf_cgroup_dev_ctx, minor));

    for (int i = 0; i < count; i++) {
        const struct csys_device_rule *rule = &rules[i];
        int checksAccess = (rule->access & 7) != 7;
        /* Instructions in this block: the kind test, the optional major, minor and access
         * tests, then "r0 = 1; exit". Jumps skip to the first instruction after the block. */
        int length = 1 + (rule->major >= 0) + (rule->minor >= 0) + (checksAccess ? 3 : 0) + 2;
        int end = n + length;
        program[n] = jump_if_not_equal(2, rule->kind, (int16_t)(end - n - 1));
        n++;
        if (rule->major >= 0) {
            program[n] = jump_if_not_equal(4, (int32_t)rule->major, (int16_t)(end - n - 1));
            n++;
        }
        if (rule->minor >= 0) {
            program[n] = jump_if_not_equal(5, (int32_t)rule->minor, (int16_t)(end - n - 1));
            n++;
        }
        if (checksAccess) {
            /* r1 = asked & ~allowed: any bit left is access the rule does not give. */
            program[n++] = instruction(BPF_ALU | BPF_MOV | BPF_X, 1, 3, 0, 0);
            program[n++] = instruction(BPF_ALU | BPF_AND | BPF_K, 1, 0, 0, (int32_t)(~rule->access & 7));
            program[n] = jump_if_not_equal(1, 0, (int16_t)(end - n - 1));
            n++;
        }
        program[n++] = instruction(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, 1);
        program[n++] = instruction(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
    }
    program[n++] = instruction(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, 0);
    program[n++] = instruction(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
    return n;
}

static int load_program(const struct bpf_insn *program, int length, char *log, size_t log_size) {
    /* The kernel requires a license string; it only matters for GPL-only helpers, and this
     * program calls no helper at all. */
    static const char license[] = "GPL";
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
    attr.insns = (uint64_t)(uintptr_t)program;
    attr.insn_cnt = (uint32_t)length;
    attr.license = (uint64_t)(uintptr_t)license;
    int fd = (int)bpf_call(BPF_PROG_LOAD, &attr);
    if (fd >= 0 || log == NULL || log_size < 2 || (errno != EACCES && errno != EINVAL)) return fd;
    /* Refused by the verifier: load again, only to get its reasons. */
    int first = errno;
    log[0] = 0;
    attr.log_level = 1;
    attr.log_buf = (uint64_t)(uintptr_t)log;
    attr.log_size = (uint32_t)(log_size > UINT32_MAX ? UINT32_MAX : log_size);
    fd = (int)bpf_call(BPF_PROG_LOAD, &attr);
    if (fd >= 0) return fd;
    errno = first;
    return -1;
}

int csys_cgroup_device_attach(int cgroup_fd, const struct csys_device_rule *rules, int count,
                              char *log, size_t log_size, int *failed_step) {
    *failed_step = CSYS_DEVICE_STEP_LOAD;
    if (count < 0 || count > MAX_RULES) return -E2BIG;
    for (int i = 0; i < count; i++) {
        if ((rules[i].kind != CSYS_DEVICE_BLOCK && rules[i].kind != CSYS_DEVICE_CHAR)
            || rules[i].major > INT32_MAX || rules[i].minor > INT32_MAX) return -EINVAL;
    }
    int saved = errno;
    struct bpf_insn *program = calloc(MAX_INSNS_FOR(count), sizeof(*program));
    if (program == NULL) return -ENOMEM;
    int length = build_program(rules, count, program);
    int program_fd = load_program(program, length, log, log_size);
    free(program);
    if (program_fd < 0) {
        int error = errno;
        errno = saved;
        return -error;
    }
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.target_fd = (uint32_t)cgroup_fd;
    attr.attach_bpf_fd = (uint32_t)program_fd;
    attr.attach_type = BPF_CGROUP_DEVICE;
    attr.attach_flags = BPF_F_ALLOW_MULTI;
    *failed_step = CSYS_DEVICE_STEP_ATTACH;
    int result = bpf_call(BPF_PROG_ATTACH, &attr) == 0 ? 0 : -errno;
    /* The attachment holds its own reference to the program. */
    close(program_fd);
    errno = saved;
    return result;
}

int csys_cgroup_device_program_count(int cgroup_fd) {
    int saved = errno;
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.query.target_fd = (uint32_t)cgroup_fd;
    attr.query.attach_type = BPF_CGROUP_DEVICE;
    int result = bpf_call(BPF_PROG_QUERY, &attr) == 0 ? (int)attr.query.prog_cnt : -errno;
    errno = saved;
    return result;
}
