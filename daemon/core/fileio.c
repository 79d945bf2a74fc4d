/* Bounded reads and atomic (temp + fsync + rename) writes, O_NOFOLLOW throughout. */
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

int read_file_bounded(const char *path, size_t max, char **ret, size_t *ret_len) {
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        struct stat st;
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (size_t) st.st_size > max) {
                close(fd);
                return -EFBIG;
        }
        char *b = malloc((size_t) st.st_size + 1);
        ssize_t n = b ? read(fd, b, (size_t) st.st_size) : -1;
        close(fd);
        if (n < 0) {
                free(b);
                return -EIO;
        }
        b[n] = 0;
        *ret = b;
        *ret_len = (size_t) n;
        return 0;
}

int write_file_atomic(const char *path, const void *data, size_t len) {
        char tmp[PATH_MAX];
        if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int) sizeof(tmp))
                return -ENAMETOOLONG;
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return -errno;
        int r = 0;
        if (write(fd, data, len) != (ssize_t) len || fsync(fd) < 0)
                r = -EIO;
        close(fd);
        if (r == 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0)
                unlink(tmp);
        return r;
}
