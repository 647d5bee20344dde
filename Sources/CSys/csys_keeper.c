#define _GNU_SOURCE
#include "csys_keeper.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

/* The program's side of the fork: descriptors, session, signals, exec. Async-signal-safe only. */
static void program_main(const char *path, const char *const argv[], const char *const envp[], const int *fd_map, int pairs) {
    int highest = 2;
    for (int i = 0; i < pairs; i++) if (fd_map[2 * i + 1] > highest) highest = fd_map[2 * i + 1];
    int parked[64];
    if (pairs > 64) _exit(127);
    for (int i = 0; i < pairs; i++)
        if ((parked[i] = fcntl(fd_map[2 * i], F_DUPFD_CLOEXEC, highest + 1)) < 0) _exit(127);
    syscall(SYS_close_range, 0U, ~0U, CLOSE_RANGE_CLOEXEC);
    for (int i = 0; i < pairs; i++) {
        int r;
        do { r = dup2(parked[i], fd_map[2 * i + 1]); } while (r < 0 && errno == EINTR);
        if (r < 0) _exit(127);
    }
    setsid();
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < _NSIG; sig++) sigaction(sig, &dfl, NULL);
    sigset_t empty;
    sigemptyset(&empty);
    sigprocmask(SIG_SETMASK, &empty, NULL);
    /* execve(2) takes char *const[]; it does not write through them. */
    execve(path, (char *const *)argv, (char *const *)envp);
    _exit(127);
}

/* Ends the keeper the way the program ended. */
static void end_like(int status) {
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        signal(sig, SIG_DFL);
        sigset_t only;
        sigemptyset(&only);
        sigaddset(&only, sig);
        sigprocmask(SIG_UNBLOCK, &only, NULL);
        kill(getpid(), sig);
        _exit(128 + sig);   /* a signal whose default is to be ignored */
    }
    _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 1);
}

static int reap(pid_t pid) {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    return status;
}

static void keeper_main(pid_t caller, const char *path, const char *const argv[], const char *const envp[],
                        const int *fd_map, int pairs, int report) {
    /* SIGTERM (and the like) arrive on a signalfd; SIGCHLD stays blocked (the pidfd says it). */
    sigset_t handled;
    sigemptyset(&handled);
    sigaddset(&handled, SIGTERM);
    sigaddset(&handled, SIGINT);
    sigaddset(&handled, SIGHUP);
    sigaddset(&handled, SIGCHLD);
    sigprocmask(SIG_BLOCK, &handled, NULL);
    setsid();   /* away from the caller's terminal: ^C there is not for us */

    long program = syscall(SYS_clone, (unsigned long)SIGCHLD, NULL, NULL, NULL, NULL);
    if (program == 0) program_main(path, argv, envp, fd_map, pairs);
    int32_t told = program > 0 ? (int32_t)program : -errno;
    ssize_t n;
    do { n = write(report, &told, sizeof told); } while (n < 0 && errno == EINTR);
    if (program < 0) _exit(127);

    /* Nothing of the caller's stays open here: its lock, sockets and the program's descriptors. */
    syscall(SYS_close_range, 3U, ~0U, 0U);
    int watch_caller = (int)syscall(SYS_pidfd_open, caller, 0);
    int watch_program = (int)syscall(SYS_pidfd_open, (pid_t)program, 0);
    sigdelset(&handled, SIGCHLD);
    int signals = signalfd(-1, &handled, SFD_CLOEXEC);
    /* The caller may have ended before its pidfd was opened: then we are someone else's child. */
    if (watch_caller < 0 || getppid() != caller || watch_program < 0 || signals < 0) {
        kill((pid_t)program, SIGKILL);
        reap((pid_t)program);
        _exit(1);
    }
    struct pollfd fds[3] = {
        { .fd = watch_caller, .events = POLLIN }, { .fd = watch_program, .events = POLLIN }, { .fd = signals, .events = POLLIN },
    };
    for (;;) {
        if (poll(fds, 3, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (fds[1].revents) end_like(reap((pid_t)program));
        if (fds[0].revents) {
            kill((pid_t)program, SIGKILL);
            reap((pid_t)program);
            _exit(1);
        }
        if (fds[2].revents) {
            struct signalfd_siginfo info;
            while (read(signals, &info, sizeof info) < 0 && errno == EINTR) {}
            kill((pid_t)program, SIGTERM);
            struct pollfd ended = { .fd = watch_program, .events = POLLIN };
            if (poll(&ended, 1, 1000) <= 0) kill((pid_t)program, SIGKILL);
            end_like(reap((pid_t)program));
        }
    }
    kill((pid_t)program, SIGKILL);
    end_like(reap((pid_t)program));
}

pid_t csys_spawn_kept(const char *path, const char *const argv[], const char *const envp[],
                      const int *fd_map, int fd_map_pairs, pid_t *program_pid) {
    int saved = errno;
    int report[2];
    if (pipe2(report, O_CLOEXEC) < 0) { int e = errno; errno = saved; return -e; }
    pid_t caller = getpid();
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    long keeper = syscall(SYS_clone, (unsigned long)SIGCHLD, NULL, NULL, NULL, NULL);
    if (keeper == 0) {
        close(report[0]);
        keeper_main(caller, path, argv, envp, fd_map, fd_map_pairs, report[1]);
        _exit(127);
    }
    int e = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(report[1]);
    if (keeper < 0) { close(report[0]); errno = saved; return -e; }
    int32_t told = -EIO;
    size_t got = 0;
    while (got < sizeof told) {
        ssize_t n = read(report[0], (char *)&told + got, sizeof told - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(report[0]);
    if (got != sizeof told || told < 0) {
        /* The keeper could not start the program: it exits by itself; reap it here. */
        while (waitpid((pid_t)keeper, NULL, 0) < 0 && errno == EINTR) {}
        errno = saved;
        return got == sizeof told ? told : -EIO;
    }
    *program_pid = (pid_t)told;
    errno = saved;
    return (pid_t)keeper;
}
