/* Whole-file reads and writes (see file.h). */
#include "file.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fd.h"
#include "macro.h"

int read_file_bounded(const char *path, size_t max, char **ret, size_t *ret_len) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        _cleanup_free_ char *b = NULL;
        struct stat st;
        ssize_t n;

        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (size_t) st.st_size > max)
                return -EFBIG;
        b = malloc((size_t) st.st_size + 1);
        if (!b)
                return -EIO;
        n = fd_read_full(fd, b, (size_t) st.st_size);
        if (n < 0)
                return -EIO;
        b[n] = 0;
        *ret = TAKE_PTR(b);
        *ret_len = (size_t) n;
        return 0;
}

static int write_fd_synced(int dir_fd, const char *path, const void *data, size_t len, mode_t mode, unsigned flags) {
        int oflags = O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY |
                     ((flags & WRITE_FILE_EXCL) ? O_EXCL : O_TRUNC);
        _cleanup_close_ int fd = openat(dir_fd, path, oflags, mode);
        int r;

        if (fd < 0)
                return -errno;
        r = fd_write_all(fd, data, len);
        if (r < 0)
                return r;
        if (fsync(fd) < 0)
                return -errno;
        return 0;
}

int write_file(const char *path, const void *data, size_t len, mode_t mode, unsigned flags) {
        return write_fd_synced(AT_FDCWD, path, data, len, mode, flags);
}

int write_file_replace_at(int dir_fd, const char *tmp_name, const char *name, const void *data, size_t len,
                          mode_t mode, unsigned flags) {
        int r = write_fd_synced(dir_fd, tmp_name, data, len, mode, flags);

        if (r == 0 && renameat(dir_fd, tmp_name, dir_fd, name) < 0)
                r = -errno;
        if (r < 0) {
                /* A temp file we did not create (EXCL refused it) is not ours to remove. */
                if (r != -EEXIST || !(flags & WRITE_FILE_EXCL))
                        (void) unlinkat(dir_fd, tmp_name, 0);
                return r;
        }
        if (!(flags & WRITE_FILE_SYNC_DIR))
                return 0;
        if (dir_fd == AT_FDCWD)
                return fsync_parent_directory(name);
        return fsync(dir_fd) < 0 ? -errno : 0;
}

int write_file_replace(const char *path, const void *data, size_t len, unsigned flags) {
        char tmp[PATH_MAX];

        if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int) sizeof(tmp))
                return -ENAMETOOLONG;
        return write_file_replace_at(AT_FDCWD, tmp, path, data, len, 0600, flags);
}

int mkdir_private(const char *path) {
        _cleanup_free_ char *copy = strdup(path);
        if (!copy)
                return -ENOMEM;
        for (char *p = copy + 1; *p; p++) {
                if (*p != '/')
                        continue;
                *p = 0;
                if (mkdir(copy, 0700) < 0 && errno != EEXIST)
                        return -errno;
                *p = '/';
        }
        if (mkdir(copy, 0700) < 0 && errno != EEXIST)
                return -errno;
        struct stat st;
        if (lstat(copy, &st) < 0)
                return -errno;
        if (!S_ISDIR(st.st_mode))
                return -ENOTDIR;
        if (st.st_uid != getuid())
                return -EPERM;
        if ((st.st_mode & 07777) != 0700 && chmod(copy, 0700) < 0)
                return -errno;
        return 0;
}
