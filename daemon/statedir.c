/* One daemon per state directory. Two daemons on one state directory kill each
 * other's sandboxes, mark each other's records "killed" and interleave their
 * appends into one audit chain (a seq gap that never heals), so the second
 * one must stop before it touches anything: flock(2) on a lock file, taken
 * right after the directory exists. The kernel drops the lock when the holder
 * dies, however it dies, so a crash never leaves a stale lock. */
#include "statedir.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "macro.h"

static pid_t read_holder(int fd) {
        char buf[32] = "";
        ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
        if (n <= 0)
                return 0;
        buf[n] = 0;
        long pid = strtol(buf, NULL, 10);
        return pid > 0 ? (pid_t) pid : 0;
}

int statedir_lock(const char *dir, pid_t *ret_holder) {
        char path[4096];
        if ((size_t) snprintf(path, sizeof(path), "%s/agentd.lock", dir) >= sizeof(path))
                return -ENAMETOOLONG;
        _cleanup_close_ int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
        if (fd < 0)
                return -errno;
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                int r = -errno;
                if (r == -EWOULDBLOCK) {
                        if (ret_holder)
                                *ret_holder = read_holder(fd);
                        return -EBUSY;
                }
                return r;
        }
        /* The pid is only a hint for the message a second instance prints (best
         * effort: a full disk must not stop us); the lock is the flock. */
        char buf[32];
        int n = snprintf(buf, sizeof(buf), "%d\n", (int) getpid());
        if (ftruncate(fd, 0) == 0)
                (void) !pwrite(fd, buf, (size_t) n, 0);
        return TAKE_FD(fd);
}
