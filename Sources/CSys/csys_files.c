#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/fsuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "csys_files.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif

int csys_setfsuid(uid_t uid) { return setfsuid(uid); }
int csys_setfsgid(gid_t gid) { return setfsgid(gid); }

int csys_setgroups(size_t count, const gid_t *groups) {
    int saved = errno;
    int rc = setgroups(count, groups) == 0 ? 0 : -errno;
    errno = saved;
    return rc;
}

int csys_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags) {
    int saved = errno;
    long rc = syscall(SYS_renameat2, olddirfd, oldpath, newdirfd, newpath, flags);
    int result = rc == 0 ? 0 : -errno;
    errno = saved;
    return result;
}

unsigned int csys_rename_noreplace(void) { return RENAME_NOREPLACE; }

int csys_o_tmpfile(void) { return O_TMPFILE; }

int csys_o_path(void) { return O_PATH; }

int csys_start_writeback(int fd) {
    int saved = errno;
    int result = sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE) < 0 ? -errno : 0;
    errno = saved;
    return result;
}

int csys_inotify_init1(int flags) {
    int saved = errno;
    int fd = inotify_init1(flags);
    int result = fd >= 0 ? fd : -errno;
    errno = saved;
    return result;
}

int csys_inotify_add_watch(int fd, const char *path, uint32_t mask) {
    int saved = errno;
    int wd = inotify_add_watch(fd, path, mask);
    int result = wd >= 0 ? wd : -errno;
    errno = saved;
    return result;
}

int csys_inotify_rm_watch(int fd, int wd) {
    int saved = errno;
    int rc = inotify_rm_watch(fd, wd) == 0 ? 0 : -errno;
    errno = saved;
    return rc;
}
int csys_at_empty_path(void) { return AT_EMPTY_PATH; }
