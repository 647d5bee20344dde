/* The files subsystem's calls the Glibc module does not declare (it is built without
 * _GNU_SOURCE): per-thread filesystem credentials, renameat2, O_TMPFILE, sync_file_range and
 * inotify. */
#pragma once

#include <sys/types.h>
#include <stdint.h>
#include <sys/inotify.h>

/* setfsuid(2)/setfsgid(2): return the previous id (they report no error; call twice to check). */
int csys_setfsuid(uid_t uid);
int csys_setfsgid(gid_t gid);
/* setgroups(2); 0 or -errno. */
int csys_setgroups(size_t count, const gid_t *groups);

/* renameat2(2) with flags (RENAME_NOREPLACE); 0 or -errno. */
int csys_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags);
unsigned int csys_rename_noreplace(void);

/* AT_EMPTY_PATH (a GNU extension) for linkat(2) of an open descriptor. */
int csys_at_empty_path(void);

/* O_TMPFILE is __O_TMPFILE | O_DIRECTORY, a macro Swift does not import. */
int csys_o_tmpfile(void);

/* O_PATH (a GNU extension): a descriptor that names a file without opening it for IO. */
int csys_o_path(void);

/* sync_file_range(2) of the whole file with SYNC_FILE_RANGE_WRITE: starts the writeback of
 * its dirty pages without waiting for it; 0 or -errno. */
int csys_start_writeback(int fd);

/* inotify(7); a descriptor or watch descriptor, or -errno. */
int csys_inotify_init1(int flags);
int csys_inotify_add_watch(int fd, const char *path, uint32_t mask);
int csys_inotify_rm_watch(int fd, int wd);
