/* Reporting a seccomp SCMP_ACT_TRAP: the kernel sends SIGSYS to the offending thread. */
#pragma once

/* Installs a SIGSYS handler that writes one line to stderr,
 *   "<prefix>: seccomp blocked forbidden syscall <name> (<nr>); terminating",
 * then dies of SIGSYS (default action), so supervisors see how it ended. `names[i]` is the
 * name of syscall `numbers[i]`; the strings are copied. Returns 0 or -errno. */
int csys_report_sigsys(const char *prefix, const int *numbers, const char *const *names, int count);

/* syscall(2) with six arguments, for calls that have no libc wrapper or are hidden by it
 * (tests probe a filter with it). Returns the result, or -1 with errno set, like syscall(2). */
long csys_raw_syscall(long number, long a, long b, long c, long d, long e, long f);
