/* A stand-in for libkrun.so.1, built by the krun tests (cc -shared), for hosts where no microVM
 * can boot. It is not a fake agent: it records every call and its arguments, checks what real
 * libkrun checks, and on krun_start_enter starts the configured exec the way Tether's namespace
 * backend does, so the whole boot path (runner -> agent -> hello -> exec -> stop) really runs.
 *
 * - Calls are appended, one line each, to calls.log in the directory this library was loaded
 *   from (found with dladdr), e.g.  krun_set_root(0, "/root/fs") = 0
 * - Like libkrun: krun_add_vsock_port2 with listen=true returns -EEXIST when the path exists;
 *   an unknown ctx is -ENOENT; krun_set_console_output twice is -EINVAL.
 * - Built with -DSTUB_BEFORE_V1_10 it lacks krun_add_vsock_port2, with -DSTUB_WITHOUT_V1_17 the
 *   plain-vsock calls, as older releases do.
 * - A file named no-libkrunfw beside the library makes krun_start_enter fail as libkrun does
 *   without its kernel bundle: it prints the same line and returns -ENOENT.
 * - krun_start_enter binds and listens on every listen=true port's path (libkrun's muxer does
 *   this), then runs the "guest": new PID, mount, UTS and IPC namespaces, pivot_root into the
 *   root, /proc mounted (libkrun's init mounts it first), console output on stdout/stderr, and execve(exec_path, [exec_path, args...], envp)
 *   with each argument "vsock:PORT" of a listening port rewritten to "fd:N" (the stub has no
 *   vsock: the listening socket itself is handed over as fd N). It waits for the guest and
 *   _exit()s with its status, as libkrun's VMM does; a guest that powered off (reboot(2) in a
 *   PID namespace ends it by SIGINT) exits 0.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_PORTS 8
#define MAX_ARGS 64

static struct {
    bool exists;
    uint8_t cpus;
    uint32_t ram_mib;
    char root[PATH_MAX];
    char exec_path[PATH_MAX];
    char *argv[MAX_ARGS];
    char *envp[MAX_ARGS];
    char console[PATH_MAX];
    struct { uint32_t port; char path[108]; bool listen; } ports[MAX_PORTS];
    int nports;
} ctx0;

static char *stub_dir(void) {
    static char dir[PATH_MAX];
    if (dir[0]) return dir;
    Dl_info info;
    if (dladdr((void *)stub_dir, &info) && info.dli_fname) {
        snprintf(dir, sizeof dir, "%s", info.dli_fname);
        char *slash = strrchr(dir, '/');
        if (slash) *slash = 0; else snprintf(dir, sizeof dir, ".");
    } else {
        snprintf(dir, sizeof dir, ".");
    }
    return dir;
}

static void record(const char *format, ...) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/calls.log", stub_dir());
    FILE *f = fopen(path, "a");
    if (!f) return;
    va_list ap;
    va_start(ap, format);
    vfprintf(f, format, ap);
    va_end(ap);
    fputc('\n', f);
    fclose(f);
}

/* ["a", "b"] for a NULL-terminated array, or NULL. */
static void format_array(char *out, size_t size, const char *const a[]) {
    if (!a) { snprintf(out, size, "NULL"); return; }
    size_t used = snprintf(out, size, "[");
    for (int i = 0; a[i] && used < size; i++)
        used += snprintf(out + used, size - used, "%s\"%s\"", i ? ", " : "", a[i]);
    if (used < size) snprintf(out + used, size - used, "]");
}

static bool stub_file(const char *name) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", stub_dir(), name);
    return access(path, F_OK) == 0;
}

int32_t krun_set_log_level(uint32_t level) { record("krun_set_log_level(%u) = 0", level); return 0; }

int32_t krun_create_ctx(void) {
    memset(&ctx0, 0, sizeof ctx0);
    ctx0.exists = true;
    record("krun_create_ctx() = 0");
    return 0;
}

int32_t krun_free_ctx(uint32_t id) {
    int32_t rc = (id == 0 && ctx0.exists) ? 0 : -ENOENT;
    ctx0.exists = false;
    record("krun_free_ctx(%u) = %d", id, rc);
    return rc;
}

#define CHECK_CTX(id) do { if ((id) != 0 || !ctx0.exists) return -ENOENT; } while (0)

int32_t krun_set_vm_config(uint32_t id, uint8_t cpus, uint32_t ram) {
    CHECK_CTX(id);
    ctx0.cpus = cpus; ctx0.ram_mib = ram;
    record("krun_set_vm_config(%u, %u, %u) = 0", id, cpus, ram);
    return 0;
}

int32_t krun_set_root(uint32_t id, const char *root) {
    CHECK_CTX(id);
    snprintf(ctx0.root, sizeof ctx0.root, "%s", root);
    record("krun_set_root(%u, \"%s\") = 0", id, root);
    return 0;
}

int32_t krun_set_exec(uint32_t id, const char *path, const char *const argv[], const char *const envp[]) {
    CHECK_CTX(id);
    char a[4096], e[4096];
    format_array(a, sizeof a, argv);
    format_array(e, sizeof e, envp);
    snprintf(ctx0.exec_path, sizeof ctx0.exec_path, "%s", path);
    int n = 0;
    ctx0.argv[n++] = strdup(path);
    for (int i = 0; argv && argv[i] && n < MAX_ARGS - 1; i++) ctx0.argv[n++] = strdup(argv[i]);
    ctx0.argv[n] = NULL;
    n = 0;
    for (int i = 0; envp && envp[i] && n < MAX_ARGS - 1; i++) ctx0.envp[n++] = strdup(envp[i]);
    ctx0.envp[n] = NULL;
    record("krun_set_exec(%u, \"%s\", %s, %s) = 0", id, path, a, e);
    return 0;
}

#ifndef STUB_BEFORE_V1_10
int32_t krun_add_vsock_port2(uint32_t id, uint32_t port, const char *path, bool listen) {
    CHECK_CTX(id);
    int32_t rc = 0;
    if (listen && access(path, F_OK) == 0) rc = -EEXIST;
    else if (ctx0.nports == MAX_PORTS || strlen(path) >= 108) rc = -EINVAL;
    else {
        ctx0.ports[ctx0.nports].port = port;
        snprintf(ctx0.ports[ctx0.nports].path, 108, "%s", path);
        ctx0.ports[ctx0.nports].listen = listen;
        ctx0.nports++;
    }
    record("krun_add_vsock_port2(%u, %u, \"%s\", %s) = %d", id, port, path, listen ? "true" : "false", rc);
    return rc;
}

#endif

int32_t krun_add_vsock_port(uint32_t id, uint32_t port, const char *path) {
    CHECK_CTX(id);
    record("krun_add_vsock_port(%u, %u, \"%s\") = 0", id, port, path);
    return 0;
}

int32_t krun_set_console_output(uint32_t id, const char *path) {
    CHECK_CTX(id);
    int32_t rc = ctx0.console[0] ? -EINVAL : 0;
    if (!rc) snprintf(ctx0.console, sizeof ctx0.console, "%s", path);
    record("krun_set_console_output(%u, \"%s\") = %d", id, path, rc);
    return rc;
}

int32_t krun_set_port_map(uint32_t id, const char *const port_map[]) {
    CHECK_CTX(id);
    char map[1024];
    format_array(map, sizeof map, port_map);
    record("krun_set_port_map(%u, %s) = 0", id, map);
    return 0;
}

#ifndef STUB_WITHOUT_V1_17
int32_t krun_disable_implicit_vsock(uint32_t id) {
    CHECK_CTX(id);
    record("krun_disable_implicit_vsock(%u) = 0", id);
    return 0;
}

int32_t krun_add_vsock(uint32_t id, uint32_t tsi) {
    CHECK_CTX(id);
    record("krun_add_vsock(%u, %u) = 0", id, tsi);
    return 0;
}
#endif

static void guest_fail(const char *what) {
    dprintf(2, "libkrun stub: guest setup: %s: %s\n", what, strerror(errno));
    _exit(125);   /* libkrun's init: cannot set up the environment */
}

int32_t krun_start_enter(uint32_t id) {
    if (id != 0 || !ctx0.exists) { record("krun_start_enter(%u) = %d", id, -ENOENT); return -ENOENT; }
    if (stub_file("no-libkrunfw")) {
        fprintf(stderr, "Couldn't find or load libkrunfw.so.5\n");
        ctx0.exists = false;   /* consumed, as in libkrun */
        record("krun_start_enter(%u) = %d", id, -ENOENT);
        return -ENOENT;
    }
    record("krun_start_enter(%u)", id);

    /* libkrun's muxer: bind and listen on each listen=true port's path. */
    int listeners[MAX_PORTS];
    for (int i = 0; i < ctx0.nports; i++) {
        listeners[i] = -1;
        if (!ctx0.ports[i].listen) continue;
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
        snprintf(addr.sun_path, sizeof addr.sun_path, "%s", ctx0.ports[i].path);
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        if (s < 0 || bind(s, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(s, 5) < 0) {
            fprintf(stderr, "libkrun stub: listening on %s: %s\n", addr.sun_path, strerror(errno));
            return -EINVAL;
        }
        listeners[i] = s;
    }

    /* "vsock:PORT" arguments of listening ports become "fd:N", N = 3 + port index. */
    static char rewritten[MAX_PORTS][32];
    for (int a = 1; ctx0.argv[a]; a++) {
        for (int i = 0; i < ctx0.nports; i++) {
            char want[32];
            snprintf(want, sizeof want, "vsock:%u", ctx0.ports[i].port);
            if (ctx0.ports[i].listen && strcmp(ctx0.argv[a], want) == 0) {
                snprintf(rewritten[i], sizeof rewritten[i], "fd:%d", 3 + i);
                ctx0.argv[a] = rewritten[i];
            }
        }
    }

    fflush(NULL);
    long pid = syscall(SYS_clone, (unsigned long)(CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | SIGCHLD),
                       NULL, NULL, NULL, NULL);
    if (pid < 0) { fprintf(stderr, "libkrun stub: clone: %s\n", strerror(errno)); return -errno; }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);   /* the VM dies with the VMM process */
        setsid();
        if (ctx0.console[0]) {
            int c = open(ctx0.console, O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (c < 0) guest_fail("console");
            dup2(c, 1); dup2(c, 2);
            if (c > 2) close(c);
        }
        int null = open("/dev/null", O_RDONLY);
        if (null >= 0) { dup2(null, 0); if (null > 2) close(null); }
        for (int i = 0; i < ctx0.nports; i++)
            if (listeners[i] >= 0 && dup2(listeners[i], 3 + i) < 0) guest_fail("dup2");
        for (int fd = 3 + ctx0.nports; fd < 1024; fd++) close(fd);
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) guest_fail("private mounts");
        if (mount(ctx0.root, ctx0.root, NULL, MS_BIND | MS_REC, NULL) < 0) guest_fail("bind root");
        if (chdir(ctx0.root) < 0) guest_fail("chdir root");
        if (syscall(SYS_pivot_root, ".", ".") < 0) guest_fail("pivot_root");
        if (umount2(".", MNT_DETACH) < 0) guest_fail("detach old root");
        if (chdir("/") < 0) guest_fail("chdir /");
        /* libkrun's init mounts /proc (with sysfs, devtmpfs, cgroup2 ...) before it execs a
         * KRUN_INIT_PID1 workload; the agent needs /proc before main (argv, runtime path). */
        if (mkdir("/proc", 0555) < 0 && errno != EEXIST) guest_fail("mkdir /proc");
        if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) guest_fail("mount /proc");
        execve(ctx0.exec_path, ctx0.argv, ctx0.envp);
        _exit(errno == ENOENT ? 127 : 126);   /* as libkrun's init */
    }
    for (int i = 0; i < ctx0.nports; i++) if (listeners[i] >= 0) close(listeners[i]);
    int status = 0;
    while (waitpid((pid_t)pid, &status, 0) < 0 && errno == EINTR) {}
    int code = WIFEXITED(status) ? WEXITSTATUS(status)
             : (WTERMSIG(status) == SIGINT ? 0 : 128 + WTERMSIG(status));
    record("guest ended: status %d", code);
    _exit(code);
}
