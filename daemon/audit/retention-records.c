/* Retention of ended sandboxes' records (retention.h): which go, by age and
 * count, and their removal; the caller says which are still in use. */
#include "retention.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/statedir.h"
#include "macro.h"

typedef struct record {
        char id[16];
        uint64_t started_at;
        int64_t mtime;      /* meta.json's: written last when the sandbox ended */
} record;

static int cmp_newest_first(const void *a, const void *b) {
        const record *x = a, *y = b;
        return x->started_at > y->started_at ? -1 : x->started_at < y->started_at;
}

static bool has_snapshots(int sb_fd, const char *id) {
        char p[64];
        snprintf(p, sizeof(p), "%s/snapshots", id);
        struct stat st;
        return fstatat(sb_fd, p, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

/* Records on disk, with what the rules need. */
static int list_records(int sb_fd, record **ret, size_t *ret_n) {
        int dfd = fcntl(sb_fd, F_DUPFD_CLOEXEC, 3);
        DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
        if (!d) {
                safe_close(dfd);
                return -errno;
        }
        record *v = NULL;
        size_t n = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (strlen(de->d_name) != 12 || de->d_name[0] == '.')
                        continue;
                char p[PATH_MAX];
                snprintf(p, sizeof(p), "/proc/self/fd/%d/%s/meta.json", sb_fd, de->d_name);
                struct stat st;
                if (stat(p, &st) < 0)
                        continue;
                /* Every record: one still "running" on disk whose sandbox is not live
                 * in memory died with an earlier agentd (sandbox_forget() refuses live ones). */
                json_object *o = json_object_from_file(p), *x;
                uint64_t started = o && json_object_object_get_ex(o, "started_at", &x) ? (uint64_t) json_object_get_int64(x) : 0;
                json_object_put(o);
                record *nv = realloc(v, (n + 1) * sizeof(*v));
                if (!nv) {
                        closedir(d);
                        free(v);
                        return -ENOMEM;
                }
                v = nv;
                snprintf(v[n].id, sizeof(v[n].id), "%s", de->d_name);
                v[n].started_at = started;
                v[n].mtime = st.st_mtim.tv_sec;
                n++;
        }
        closedir(d);
        *ret = v;
        *ret_n = n;
        return 0;
}

void retention_prune_records(const char *state_dir, unsigned days, unsigned records, retention_forget_fn forget,
                             void *userdata, prune_result *res) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/sandboxes", state_dir);
        _cleanup_close_ int sb_fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sb_fd < 0)
                return;
        _cleanup_free_ record *v = NULL;
        size_t n = 0;
        if (list_records(sb_fd, &v, &n) < 0)
                return;
        qsort(v, n, sizeof(*v), cmp_newest_first);
        int64_t cutoff = days > 0 ? (int64_t) time(NULL) - (int64_t) days * 86400 : 0;
        for (size_t i = 0; i < n; i++) {
                bool too_many = records > 0 && i >= records;
                bool too_old = cutoff > 0 && v[i].mtime < cutoff;
                if (!too_many && !too_old)
                        continue;
                if (has_snapshots(sb_fd, v[i].id)) {
                        res->sandboxes_kept_evidence++;
                        continue;
                }
                /* Still in use in memory (a waiter, a live process): next time. */
                if (forget(userdata, v[i].id) < 0)
                        continue;
                int r = statedir_remove_tree(sb_fd, v[i].id);
                if (r < 0)
                        log_warning("retention: cannot remove sandbox %s: %s", v[i].id, strerror(-r));
                else
                        res->sandboxes_removed++;
        }
}
