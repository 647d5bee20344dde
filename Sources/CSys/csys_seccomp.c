#define _GNU_SOURCE
#include "csys_seccomp.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>

/* Filled once before the filter is loaded and only read in the handler afterwards. */
#define MAX_TRAPPED 64
static char report_prefix[128];
static int trapped_numbers[MAX_TRAPPED];
static char trapped_names[MAX_TRAPPED][32];
static int trapped_count;

static void put(const char *s) {
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, s, n);
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

static void put_number(int value) {
    char digits[16];
    int i = sizeof digits - 1;
    unsigned int v = value < 0 ? (unsigned int)-value : (unsigned int)value;
    digits[i] = 0;
    do { digits[--i] = (char)('0' + v % 10); v /= 10; } while (v && i > 1);
    if (value < 0) digits[--i] = '-';
    put(digits + i);
}

/* Only async-signal-safe calls: write, sigaction, sigprocmask, raise. */
static void on_sigsys(int sig, siginfo_t *info, void *context) {
    (void)context;
    const char *name = "?";
    for (int i = 0; i < trapped_count; i++) {
        if (trapped_numbers[i] == info->si_syscall) name = trapped_names[i];
    }
    put(report_prefix);
    put(": seccomp blocked forbidden syscall ");
    put(name);
    put(" (");
    put_number(info->si_syscall);
    put("); terminating\n");
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigaction(sig, &dfl, NULL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    raise(sig);
    _exit(128 + sig);
}

int csys_report_sigsys(const char *prefix, const int *numbers, const char *const *names, int count) {
    int saved = errno;
    if (count > MAX_TRAPPED) count = MAX_TRAPPED;
    strncpy(report_prefix, prefix, sizeof report_prefix - 1);
    for (int i = 0; i < count; i++) {
        trapped_numbers[i] = numbers[i];
        strncpy(trapped_names[i], names[i], sizeof trapped_names[i] - 1);
    }
    trapped_count = count;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_sigsys;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    int result = sigaction(SIGSYS, &action, NULL) < 0 ? -errno : 0;
    errno = saved;
    return result;
}

long csys_raw_syscall(long number, long a, long b, long c, long d, long e, long f) {
    return syscall(number, a, b, c, d, e, f);
}
