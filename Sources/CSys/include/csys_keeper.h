/* A helper program that must end with its caller however the caller ends (the egress
 * network's pasta), even when the program changes its own credentials, which clears
 * PR_SET_PDEATHSIG.
 *
 * csys_spawn_kept() forks a keeper: a small process of ours that starts the program as its own
 * child and then waits on pidfds of its parent (the caller) and of that child, and on SIGTERM:
 * - the caller ends (SIGKILL included): the keeper SIGKILLs the program, reaps it, exits;
 * - SIGTERM to the keeper: it passes SIGTERM on, SIGKILLs after a second, reaps, and ends as
 *   the program ended;
 * - the program ends: the keeper ends the same way (the same exit status, or killed by the same
 *   signal), so the caller, which reaps the keeper, reads the program's own ending.
 * The program gets exactly the descriptors of fd_map ({caller fd, program fd} pairs), a new
 * session, default signal dispositions and an empty signal mask. The keeper keeps none of the
 * caller's other descriptors (no lock or socket of the caller outlives it through the keeper).
 */
#pragma once
#include <sys/types.h>

/* Returns the keeper's pid (the caller's child, to reap) or -errno; *program_pid is the
 * program's pid (for display and for signals meant for the program itself). An exec failure
 * shows as the keeper exiting with status 127. */
pid_t csys_spawn_kept(const char *path, const char *const argv[], const char *const envp[],
                      const int *fd_map, int fd_map_pairs, pid_t *program_pid);
