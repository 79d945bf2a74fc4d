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
#include <dirent.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdbool.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"

#define PROMOTE_TMP_PREFIX ".agentd-promote."
#define SWEEP_MAX_DEPTH 256

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

bool statedir_sandbox_id_valid(const char *id) {
        if (strlen(id) != 12)
                return false;
        for (const char *p = id; *p; p++)
                if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
                        return false;
        return true;
}

/* rm -r beneath dir_fd, making our own 0000 directories (overlay's work dir)
 * traversable; never follows a symlink. */
static int remove_tree_at(int dir_fd, const char *name, unsigned depth);

int statedir_remove_tree(int dir_fd, const char *name) {
        return remove_tree_at(dir_fd, name, 0);
}

static int remove_tree_at(int dir_fd, const char *name, unsigned depth) {
        if (unlinkat(dir_fd, name, 0) == 0 || errno == ENOENT)
                return 0;
        if (errno != EISDIR && errno != EPERM)
                return -errno;
        if (depth > SWEEP_MAX_DEPTH)
                return -ELOOP;
        (void) fchmodat(dir_fd, name, 0700, AT_SYMLINK_NOFOLLOW);
        int fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        DIR *d = fdopendir(fd);
        if (!d) {
                close(fd);
                return -ENOMEM;
        }
        struct dirent *de;
        int r = 0;
        while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
                        int k = remove_tree_at(dirfd(d), de->d_name, depth + 1);
                        if (k < 0 && r == 0)
                                r = k;
                }
        closedir(d);
        if (unlinkat(dir_fd, name, AT_REMOVEDIR) < 0 && r == 0)
                r = -errno;
        return r;
}

/* Removes promote's temporary files in ws_fd, then descends where the change
 * layer (up_fd) has a directory of the same name. */
static unsigned sweep_promote_temps(int up_fd, int ws_fd, unsigned depth) {
        unsigned n = 0;
        int dup_ws = fcntl(ws_fd, F_DUPFD_CLOEXEC, 3);
        DIR *w = dup_ws >= 0 ? fdopendir(dup_ws) : NULL;
        if (!w) {
                safe_close(dup_ws);
                return 0;
        }
        struct dirent *de;
        while ((de = readdir(w))) {
                if (strncmp(de->d_name, PROMOTE_TMP_PREFIX, strlen(PROMOTE_TMP_PREFIX)))
                        continue;
                struct stat st;
                if (fstatat(ws_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || st.st_uid != getuid() ||
                    !(S_ISREG(st.st_mode) || S_ISLNK(st.st_mode)))
                        continue;
                if (unlinkat(ws_fd, de->d_name, 0) == 0)
                        n++;
        }
        closedir(w);
        if (depth >= SWEEP_MAX_DEPTH)
                return n;
        int dup_up = fcntl(up_fd, F_DUPFD_CLOEXEC, 3);
        DIR *u = dup_up >= 0 ? fdopendir(dup_up) : NULL;
        if (!u) {
                safe_close(dup_up);
                return n;
        }
        while ((de = readdir(u))) {
                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                        continue;
                struct stat st;
                if (fstatat(up_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
                        continue;
                _cleanup_close_ int cu = openat(up_fd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                _cleanup_close_ int cw = openat(ws_fd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (cu >= 0 && cw >= 0)
                        n += sweep_promote_temps(cu, cw, depth + 1);
        }
        closedir(u);
        return n;
}

static unsigned sweep_one(int sb_fd, const char *id) {
        _cleanup_close_ int fd = openat(sb_fd, id, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return 0;
        struct stat st;
        if (fstatat(fd, "meta.json", &st, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT) {
                close(TAKE_FD(fd));
                int r = remove_tree_at(sb_fd, id, 0);
                if (r < 0) {
                        log_warning("cannot remove sandbox directory %s left without a record: %s", id, strerror(-r));
                        return 0;
                }
                log_notice("removed sandbox directory %s: it has no record (agentd stopped while it was being set up)", id);
                return 1;
        }
        _cleanup_close_ int up = openat(fd, "upper", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (up < 0)
                return 0;
        char meta[64];
        snprintf(meta, sizeof(meta), "/proc/self/fd/%d/meta.json", fd);
        json_object *o = json_object_from_file(meta), *v;
        const char *ws = o && json_object_object_get_ex(o, "workspace", &v) ? json_object_get_string(v) : NULL;
        unsigned n = 0;
        if (ws && ws[0] == '/') {
                _cleanup_close_ int wfd = open(ws, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (wfd >= 0)
                        n = sweep_promote_temps(up, wfd, 0);
                if (n > 0)
                        log_notice("removed %u temporary file(s) an interrupted promote of sandbox %s left in %s", n, id, ws);
        }
        json_object_put(o);
        return n;
}

unsigned statedir_sweep(const char *state_dir) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/sandboxes", state_dir);
        _cleanup_close_ int sb_fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sb_fd < 0)
                return 0;
        int dup = fcntl(sb_fd, F_DUPFD_CLOEXEC, 3);
        DIR *d = dup >= 0 ? fdopendir(dup) : NULL;
        if (!d) {
                safe_close(dup);
                return 0;
        }
        /* Names first: removing while reading a directory may skip entries. */
        char **ids = NULL;
        size_t n_ids = 0;
        struct dirent *de;
        while ((de = readdir(d)))
                if (statedir_sandbox_id_valid(de->d_name)) {
                        char **nv = realloc(ids, (n_ids + 1) * sizeof(*ids));
                        if (!nv)
                                break;
                        ids = nv;
                        if ((ids[n_ids] = strdup(de->d_name)))
                                n_ids++;
                }
        closedir(d);
        unsigned n = 0;
        for (size_t i = 0; i < n_ids; i++) {
                n += sweep_one(sb_fd, ids[i]);
                free(ids[i]);
        }
        free(ids);
        return n;
}
