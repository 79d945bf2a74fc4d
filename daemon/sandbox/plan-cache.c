/* The per-task plan cache of plan-cache.h: entries keyed by the registry's
 * policy object (every reload replaces those and drops the cache through
 * pool_drain), valid while an inotify watch on every directory leading to a
 * probed path and a POLLPRI watch on /proc/self/mountinfo stay quiet. */
#include "plan-cache.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>
#include <linux/magic.h>

#include "core/log.h"
#include "macro.h"
#include "sandbox.h"
#include "spawn-guard.h"

#define WATCH_MASK (IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
#define RESOLVED_MAX 16

typedef struct entry {
        struct entry *next;
        const task_policy *policy;
        plan_cached c;
} entry;

typedef struct resolved {
        char *path, *canonical;
} resolved;

/* A directory entry on the way to a probed path: an event in watch wd about
 * `name` drops the cache; events about the directory's other entries do not
 * (a busy /tmp would otherwise drop it all the time). */
typedef struct watched {
        int wd;
        char *name;
} watched;

static entry *entries;
static resolved memo[RESOLVED_MAX];
static unsigned n_memo;
static watched *names;
static size_t n_names, cap_names;
static int inotify_fd = -1;
static int mountinfo_fd = -1;
static bool broken;          /* a watch could not be set up since the last clear: cache nothing */
static unsigned builds;

unsigned plan_cache_builds(void) {
        return builds;
}

static void entry_free(entry *e) {
        spawn_plan_done(&e->c.plan);
        strv_free(e->c.ro);
        strv_free(e->c.cow);
        free(e);
}

void plan_cache_clear(void) {
        for (entry *e = entries, *n; e; e = n) {
                n = e->next;
                entry_free(e);
        }
        entries = NULL;
        for (unsigned i = 0; i < n_memo; i++) {
                free(memo[i].path);
                free(memo[i].canonical);
        }
        n_memo = 0;
        for (size_t i = 0; i < n_names; i++)
                free(names[i].name);
        free(names);
        names = NULL;
        n_names = cap_names = 0;
        /* A new inotify instance: the old watches (and any queued events) go with the old one. */
        inotify_fd = safe_close(inotify_fd);
        broken = false;
}

void plan_cache_free(void) {
        plan_cache_clear();
        mountinfo_fd = safe_close(mountinfo_fd);
}

static bool relevant(const struct inotify_event *ev) {
        if (ev->mask & (IN_Q_OVERFLOW | IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED | IN_UNMOUNT))
                return true;
        for (size_t i = 0; i < n_names; i++)
                if (names[i].wd == ev->wd && ev->len > 0 && streq(names[i].name, ev->name))
                        return true;
        return false;
}

/* An event about an entry on the way to a probed path, or a mount table change: drop all. */
void plan_cache_check(manager *m) {
        (void) m;
        bool changed = false;
        if (inotify_fd >= 0) {
                char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
                ssize_t n;
                while ((n = read(inotify_fd, buf, sizeof(buf))) > 0)
                        for (char *p = buf; p < buf + n; p += sizeof(struct inotify_event) + ((struct inotify_event *) p)->len)
                                changed = changed || relevant((struct inotify_event *) p);
                if (n < 0 && errno != EAGAIN && errno != EINTR)
                        changed = true;
        }
        if (mountinfo_fd >= 0) {
                struct pollfd p = { .fd = mountinfo_fd, .events = POLLPRI };
                if (poll(&p, 1, 0) != 0)
                        changed = true; /* POLLPRI|POLLERR once per change (or an error: drop anyway) */
        }
        if (changed && (entries || n_memo))
                log_debug("plan cache: a watched directory or the mount table changed; dropping it");
        if (changed)
                plan_cache_clear();
}

/* The registry's own policy object (not a Vault spawn's copy), and no
 * seccomp profile file (its content can change in place: built per spawn). */
static bool usable(manager *m, const task_policy *p) {
        return p && m->tasks && policy_registry_find(m->tasks, p->name) == p && !(p->seccomp && p->seccomp[0] == '/');
}

const plan_cached *plan_cache_find(manager *m, const task_policy *p) {
        if (!usable(m, p) || broken)
                return NULL;
        for (entry *e = entries; e; e = e->next)
                if (e->policy == p)
                        return &e->c;
        return NULL;
}

/* Filesystems whose changes inotify may not see (another machine's, a FUSE daemon's). */
static bool remote_fs(long type) {
        static const long remote[] = {
                NFS_SUPER_MAGIC, SMB_SUPER_MAGIC, 0xff534d42 /* CIFS */, 0xfe534d42 /* SMB2 */, 0x65735546 /* FUSE */,
                0x01021997 /* V9FS */, 0x00c36400 /* CEPH */, CODA_SUPER_MAGIC, AFS_SUPER_MAGIC, 0x6b414653 /* AFS_FS */,
                0x47504653 /* GPFS */, 0x0bd00bd0 /* LUSTRE */, NCP_SUPER_MAGIC,
        };
        for (size_t i = 0; i < ELEMENTSOF(remote); i++)
                if (type == remote[i])
                        return true;
        return false;
}

static int watch_ready(void) {
        if (mountinfo_fd < 0) {
                mountinfo_fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
                if (mountinfo_fd < 0)
                        return -errno;
        }
        if (inotify_fd < 0) {
                inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
                if (inotify_fd < 0)
                        return -errno;
        }
        return 0;
}

static int remember(int wd, const char *name, size_t len) {
        for (size_t i = 0; i < n_names; i++)
                if (names[i].wd == wd && strlen(names[i].name) == len && strncmp(names[i].name, name, len) == 0)
                        return 0;
        if (n_names == cap_names) {
                size_t cap = cap_names ? cap_names * 2 : 64;
                watched *nw = realloc(names, cap * sizeof(*nw));
                if (!nw)
                        return -ENOMEM;
                names = nw;
                cap_names = cap;
        }
        names[n_names].wd = wd;
        names[n_names].name = strndup(name, len);
        if (!names[n_names].name)
                return -ENOMEM;
        n_names++;
        return 0;
}

/* Watches each directory on the way to `path` ("/", "/a", "/a/b" for
 * /a/b/c) for events about the next component. It stops at the first one
 * that does not exist: its parent is watched for it to appear. */
static int watch_ancestors(const char *path) {
        char buf[PATH_MAX];
        if (!path || path[0] != '/' || strlen(path) >= sizeof(buf))
                return 0;
        snprintf(buf, sizeof(buf), "%s", path);
        for (char *comp = buf + 1;;) {
                while (*comp == '/')
                        comp++;
                if (!*comp)
                        return 0;
                char *end = strchrnul(comp, '/');
                /* The directory holding comp: buf up to comp (the root for the first). */
                char saved = *comp;
                *comp = 0;
                int wd = inotify_add_watch(inotify_fd, buf, WATCH_MASK);
                int e = errno;
                struct statfs sfs;
                bool remote = wd >= 0 && statfs(buf, &sfs) == 0 && remote_fs((long) sfs.f_type);
                *comp = saved;
                if (wd < 0)
                        return e == ENOENT || e == ENOTDIR ? 0 : -e; /* a missing one: its parent's entry is watched */
                if (remote)
                        return -EREMOTE;
                int r = remember(wd, comp, (size_t) (end - comp));
                if (r < 0)
                        return r;
                if (!*end)
                        return 0;
                comp = end;
        }
}

/* path with its first symlink component replaced by the link's target (the
 * rest appended): 1 and *ret, or 0 when no component is a symlink. */
static int next_hop(const char *path, char **ret) {
        char buf[PATH_MAX], target[PATH_MAX];
        snprintf(buf, sizeof(buf), "%s", path);
        for (char *end = buf + 1;; end++) {
                if (*end != '/' && *end != 0)
                        continue;
                char saved = *end;
                *end = 0;
                struct stat st;
                bool link = lstat(buf, &st) == 0 && S_ISLNK(st.st_mode);
                if (link) {
                        ssize_t n = readlink(buf, target, sizeof(target) - 1);
                        if (n <= 0)
                                return -EINVAL;
                        target[n] = 0;
                        char *slash = strrchr(buf, '/');
                        *slash = 0; /* the link's directory ("" for the root) */
                        int k = target[0] == '/' ? asprintf(ret, "%s%s%s", target, saved ? "/" : "", saved ? end + 1 : "")
                                                 : asprintf(ret, "%s/%s%s%s", buf, target, saved ? "/" : "", saved ? end + 1 : "");
                        return k < 0 ? -ENOMEM : strlen(*ret) >= PATH_MAX ? (free(*ret), -ENAMETOOLONG) : 1;
                }
                *end = saved;
                if (!saved)
                        return 0;
        }
}

/* The path as spelled and every symlink on the way to what it resolves to,
 * hop by hop (a -> b/l2 -> c: a link in the middle of a chain is on neither
 * the spelled nor the resolved path, yet retargeting it changes what a bind
 * of the spelling shows). */
static int watch_path(const char *path) {
        if (!path || path[0] != '/' || strlen(path) >= PATH_MAX)
                return 0;
        _cleanup_free_ char *cur = strdup(path);
        if (!cur)
                return -ENOMEM;
        for (int hops = 0;; hops++) {
                int r = watch_ancestors(cur);
                if (r < 0)
                        return r;
                if (hops >= 40)
                        return -ELOOP; /* as the kernel gives up: watch nothing more, cache nothing */
                char *next = NULL;
                r = next_hop(cur, &next);
                if (r <= 0)
                        return r;
                free(cur);
                cur = next;
        }
}

/* "~/x" against home, else as it is; NULL when it cannot be expanded. */
static char *expand(const char *entry, const char *home) {
        char *r = NULL;
        if (entry[0] == '~' && entry[1] == '/') {
                if (!home || asprintf(&r, "%s%s", home, entry + 1) < 0)
                        return NULL;
                return r;
        }
        return strdup(entry);
}

static int watch_list(const char *const *list, const char *home) {
        for (size_t i = 0; list && list[i]; i++) {
                _cleanup_free_ char *abs = expand(list[i], home);
                int r = abs ? watch_path(abs) : 0;
                if (r < 0)
                        return r;
        }
        return 0;
}

int plan_cache_watch(manager *m, const task_policy *p, const char *const *never) {
        int r;
        if (!usable(m, p))
                return -ENOENT;
        if (broken)
                return -EREMOTE;
        r = watch_ready();
        if (r >= 0)
                r = watch_path(m->home);
        if (r >= 0)
                r = watch_list(never, m->home);
        if (r >= 0) {
                /* The task-path check resolves agentd's directories too. */
                spawn_guard g = spawn_guard_of(m);
                const char *own[] = { g.runtime_dir, g.socket_path, g.config_path, g.task_dir, g.state_dir, NULL };
                r = watch_list(own, m->home);
        }
        if (r >= 0)
                r = watch_list((const char *const *) p->read_only_paths, m->home);
        if (r >= 0)
                r = watch_list((const char *const *) p->writable_paths, m->home);
        if (r >= 0)
                r = watch_list((const char *const *) p->hide_paths, m->home);
        if (r >= 0 && task_policy_toolchains_enabled(p))
                r = watch_list(p->toolchains_auto ? policy_toolchains_paths : (const char *const *) p->toolchains, m->home);
        if (r >= 0)
                r = watch_list(policy_caches_paths, m->home);
        if (r < 0) {
                if (!broken)
                        log_debug("plan cache: not caching task %s: %s", p->name, strerror(-r));
                broken = true; /* until the next clear: a partial watch set proves nothing */
        }
        return r;
}

const plan_cached *plan_cache_store(manager *m, const task_policy *p, spawn_plan *plan, char *const *ro, char *const *cow) {
        entry *e = calloc(1, sizeof(*e));
        if (!e || !usable(m, p) || broken) {
                free(e);
                return NULL;
        }
        size_t nro = strv_length(ro), ncow = strv_length(cow);
        e->c.ro = calloc(nro + 1, sizeof(char *));
        e->c.cow = calloc(ncow + 1, sizeof(char *));
        bool oom = !e->c.ro || !e->c.cow;
        for (size_t i = 0; !oom && i < nro; i++)
                oom = !(e->c.ro[i] = strdup(ro[i]));
        for (size_t i = 0; !oom && i < ncow; i++)
                oom = !(e->c.cow[i] = strdup(cow[i]));
        if (oom) {
                e->c.plan = (spawn_plan) SPAWN_PLAN_INIT;
                entry_free(e);
                return NULL;
        }
        e->policy = p;
        e->c.plan = *plan;
        *plan = (spawn_plan) SPAWN_PLAN_INIT;
        e->next = entries;
        entries = e;
        builds++;
        return &e->c;
}

char *plan_cache_resolve(const char *path) {
        if (!path || path[0] != '/')
                return NULL;
        for (unsigned i = 0; i < n_memo && !broken; i++)
                if (streq(memo[i].path, path))
                        return strdup(memo[i].canonical);
        /* Watch first, then resolve: a change in between is seen at the next check. */
        bool full = n_memo >= RESOLVED_MAX;
        bool keep = !broken && !full && watch_ready() >= 0 && watch_path(path) >= 0;
        if (!keep && !full)
                broken = true;
        char *r = realpath(path, NULL);
        if (!r)
                r = strdup(path);
        if (!r || !keep)
                return r;
        resolved *x = &memo[n_memo];
        x->path = strdup(path);
        x->canonical = strdup(r);
        if (x->path && x->canonical)
                n_memo++;
        else {
                free(x->path);
                free(x->canonical);
        }
        return r;
}
