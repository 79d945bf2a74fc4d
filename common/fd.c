/* Small fd helpers (see fd.h). */
#include "fd.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "macro.h"

int fd_write_all(int fd, const void *data, size_t len) {
        const char *p = data;

        while (len > 0) {
                ssize_t n = write(fd, p, len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        return -EIO;
                p += n;
                len -= (size_t) n;
        }
        return 0;
}

ssize_t fd_read_full(int fd, void *buf, size_t size) {
        char *p = buf;
        size_t n = 0;

        while (n < size) {
                ssize_t k = read(fd, p + n, size - n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        break;
                n += (size_t) k;
        }
        return (ssize_t) n;
}

int fd_check_regular(int fd) {
        struct stat st;

        if (fstat(fd, &st) < 0)
                return -errno;
        return S_ISREG(st.st_mode) ? 0 : -EBADFD;
}

int fsync_directory(const char *path) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        if (fd < 0)
                return -errno;
        if (fsync(fd) < 0)
                return -errno;
        return 0;
}

int fsync_parent_directory(const char *path) {
        char dir[PATH_MAX];
        const char *slash = strrchr(path, '/');
        size_t n;

        if (!slash)
                return fsync_directory(".");
        n = slash == path ? 1 : (size_t) (slash - path);
        if (n >= sizeof(dir))
                return -ENAMETOOLONG;
        memcpy(dir, path, n);
        dir[n] = 0;
        return fsync_directory(dir);
}

int fd_reopen(int fd, int flags) {
        char path[sizeof("/proc/self/fd/") + 3 * sizeof(int)];
        int r;

        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        r = open(path, flags | O_CLOEXEC);
        return r < 0 ? -errno : r;
}
