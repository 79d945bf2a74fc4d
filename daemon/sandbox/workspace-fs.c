/* File-descriptor-relative helpers for the workspace walks (workspace-fs.h). */
#include "workspace-fs.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fd.h"
#include "macro.h"

/* Paths longer than this are opened a chunk of components at a time. */
#define CHUNK 2048

int ws_openat2_beneath(int dirfd, const char *path, int flags, mode_t mode) {
        struct open_how how = {
                .flags = (uint64_t) (flags | O_CLOEXEC | O_NOFOLLOW),
                .mode = mode,
                .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
        };
        int fd = (int) syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
        return fd < 0 ? -errno : fd;
}

int ws_open_beneath(int rootfd, const char *rel, int flags) {
        if (!rel[0])
                return ws_openat2_beneath(rootfd, ".", flags, 0);
        int cur = -1;
        const char *p = rel;
        while (strlen(p) >= CHUNK) {
                /* The last '/' within the chunk. */
                const char *cut = NULL;
                for (size_t i = CHUNK - 1; i > 0 && !cut; i--)
                        if (p[i] == '/')
                                cut = p + i;
                if (!cut) {
                        safe_close(cur);
                        return -ENAMETOOLONG;
                }
                _cleanup_free_ char *part = strndup(p, (size_t) (cut - p));
                if (!part) {
                        safe_close(cur);
                        return -ENOMEM;
                }
                int next = ws_openat2_beneath(cur >= 0 ? cur : rootfd, part, O_PATH | O_DIRECTORY, 0);
                safe_close(cur);
                if (next < 0)
                        return next;
                cur = next;
                p = cut + 1;
        }
        int fd = ws_openat2_beneath(cur >= 0 ? cur : rootfd, p, flags, 0);
        safe_close(cur);
        return fd;
}

int ws_open_parent(int rootfd, const char *rel, const char **ret_name) {
        const char *slash = strrchr(rel, '/');
        if (!slash) {
                *ret_name = rel;
                return ws_openat2_beneath(rootfd, ".", O_RDONLY | O_DIRECTORY, 0);
        }
        _cleanup_free_ char *parent = strndup(rel, (size_t) (slash - rel));
        if (!parent)
                return -ENOMEM;
        int fd = ws_open_beneath(rootfd, parent, O_RDONLY | O_DIRECTORY);
        if (fd >= 0)
                *ret_name = slash + 1;
        return fd;
}

int ws_stat_beneath(int rootfd, const char *rel, struct stat *ret) {
        const char *name;
        if (!rel[0])
                return fstat(rootfd, ret) < 0 ? -errno : 0;
        _cleanup_close_ int p = ws_open_parent(rootfd, rel, &name);
        if (p < 0)
                return p;
        return fstatat(p, name, ret, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

int ws_readlink_beneath(int rootfd, const char *rel, char **ret) {
        const char *name;
        _cleanup_close_ int p = ws_open_parent(rootfd, rel, &name);
        if (p < 0)
                return p;
        char buf[4096];
        ssize_t n = readlinkat(p, name, buf, sizeof(buf) - 1);
        if (n < 0)
                return -errno;
        char *t = strndup(buf, (size_t) n);
        if (!t)
                return -ENOMEM;
        *ret = t;
        return 0;
}

int ws_open_regular(int dirfd, const char *name, const struct stat *seen) {
        int fd = openat(dirfd, name, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
        if (fd < 0)
                return errno == ELOOP ? -ESTALE : -errno;
        struct stat st;
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_dev != seen->st_dev || st.st_ino != seen->st_ino) {
                close(fd);
                return -ESTALE;
        }
        return fd;
}

int ws_read_small(int dirfd, const char *name, bool follow, size_t max, char **ret) {
        _cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW));
        if (fd < 0)
                return -errno;
        int r = fd_check_regular(fd);
        if (r < 0)
                return r;
        char *b = malloc(max + 1);
        if (!b)
                return -ENOMEM;
        ssize_t got = fd_read_full(fd, b, max);
        if (got < 0) {
                free(b);
                return (int) got;
        }
        b[got] = 0;
        *ret = b;
        return 0;
}

DIR *ws_opendir_dup(int dirfd) {
        int d = fcntl(dirfd, F_DUPFD_CLOEXEC, 3);
        if (d < 0)
                return NULL;
        /* The DIR stream reads from offset 0 of a shared description: rewind it. */
        DIR *dir = fdopendir(d);
        if (!dir)
                safe_close(d);
        else
                rewinddir(dir);
        return dir;
}

char *ws_join(const char *rel, const char *name) {
        char *p = NULL;
        if (asprintf(&p, "%s%s%s", rel, rel[0] ? "/" : "", name) < 0)
                return NULL;
        return p;
}
