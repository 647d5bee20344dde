/* libseccomp (Debian's libseccomp-dev; the static libseccomp.a lets the static agent link it).
 * Function-like macros and composite constants are wrapped so Swift can use them. */
#pragma once
#include <seccomp.h>
#include <unistd.h>
#include <sys/syscall.h>

static inline uint32_t cseccomp_act_errno(uint16_t err) { return SCMP_ACT_ERRNO(err); }
static inline uint32_t cseccomp_act_allow(void) { return SCMP_ACT_ALLOW; }
static inline uint32_t cseccomp_act_trap(void) { return SCMP_ACT_TRAP; }
static inline uint32_t cseccomp_act_kill_process(void) { return SCMP_ACT_KILL_PROCESS; }
static inline uint32_t cseccomp_arch_x86_64(void) { return SCMP_ARCH_X86_64; }
static inline uint32_t cseccomp_arch_x86(void) { return SCMP_ARCH_X86; }
static inline uint32_t cseccomp_arch_x32(void) { return SCMP_ARCH_X32; }
static inline uint32_t cseccomp_arch_aarch64(void) { return SCMP_ARCH_AARCH64; }
static inline uint32_t cseccomp_arch_arm(void) { return SCMP_ARCH_ARM; }

/* An argument comparison: arg N masked with `mask` equals `datum` (SCMP_CMP_MASKED_EQ),
 * or arg N equals `datum` (SCMP_CMP_EQ) when mask is 0. */
static inline struct scmp_arg_cmp cseccomp_arg(unsigned int arg, uint64_t mask, uint64_t datum) {
    struct scmp_arg_cmp cmp;
    cmp.arg = arg;
    cmp.op = mask ? SCMP_CMP_MASKED_EQ : SCMP_CMP_EQ;
    cmp.datum_a = mask ? mask : datum;
    cmp.datum_b = mask ? datum : 0;
    return cmp;
}

/* memfd_create(2) without _GNU_SOURCE: where seccomp_export_bpf writes the program. */
static inline int cseccomp_memfd(const char *name) { return (int)syscall(SYS_memfd_create, name, 1u /* MFD_CLOEXEC */); }
