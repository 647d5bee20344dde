#define _GNU_SOURCE
#include "csys_early_init.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

static int early_proc_mounted = 0;

int csys_early_proc_mounted(void) { return early_proc_mounted; }

/* Only libc calls that need no initialised runtime: this runs before the Swift runtime and
 * before any C++ static object exists. */
static void put(int fd, const char *text) {
    size_t left = strlen(text);
    while (left > 0) {
        ssize_t n = write(fd, text, left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        text += n;
        left -= (size_t)n;
    }
}

static void put_int(int fd, int value) {
    char digits[16];
    int i = (int)sizeof(digits);
    unsigned int v = value < 0 ? (unsigned int)-value : (unsigned int)value;
    digits[--i] = '\0';
    do { digits[--i] = (char)('0' + v % 10); v /= 10; } while (v != 0 && i > 1);
    if (value < 0 && i > 0) digits[--i] = '-';
    put(fd, digits + i);
}

/* The agent's BootError JSON ({"stage", "errno", "message"}); the strings here need no escaping. */
static void put_report(int fd, const char *stage, int error) {
    put(fd, "{\"stage\": \"");
    put(fd, stage);
    put(fd, "\", \"errno\": ");
    put_int(fd, error);
    put(fd, ", \"message\": \"cannot mount proc on /proc before the runtime starts: ");
    put(fd, strerror(error));
    put(fd, "\"}\n");
}

static void fail(const char *stage, int error) {
    put(2, "tether-agent: boot failed: ");
    put_report(2, stage, error);
    mkdir("/.tether", 0755);
    int fd = open("/.tether/boot-error.json", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
        put_report(fd, stage, error);
        close(fd);
    }
    _exit(1);
}

__attribute__((constructor(101), used))
static void csys_early_init(void) {
    if (getpid() != 1) return;
    int saved = errno;
    struct stat st;
    if (stat("/proc/self", &st) == 0) {
        errno = saved;
        return;
    }
    if (mkdir("/proc", 0555) != 0 && errno != EEXIST) fail("mkdir /proc", errno);
    /* The same flags as the agent's own /proc mount (Boot.proc), which then finds it in place. */
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0) fail("mount /proc", errno);
    early_proc_mounted = 1;
    errno = saved;
}
