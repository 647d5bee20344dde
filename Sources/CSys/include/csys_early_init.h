/* Before main: procfs for a PID 1 started without it.
 *
 * A kernel execs init with no /proc mounted, and the Swift runtime's own static initializers
 * read /proc/self (to locate itself) before any Swift code runs: without /proc a static Swift
 * binary dies as PID 1 before main. csys_early_init.c has a constructor of priority 101 (before
 * the default-priority C++ initializers of the runtime; the static link orders .init_array by
 * priority) that, only when getpid() == 1 and /proc/self does not exist, creates /proc if
 * needed and mounts procfs there. In any other process it does nothing.
 *
 * If procfs cannot be mounted there, no Swift code can run to say why, so the constructor
 * itself writes the boot error (the agent's format: /.tether/boot-error.json and a line on
 * stderr, stage "mkdir /proc" or "mount /proc") and _exit(1)s.
 */
#pragma once

/* 1 if the constructor mounted /proc in this process, else 0. */
int csys_early_proc_mounted(void);
