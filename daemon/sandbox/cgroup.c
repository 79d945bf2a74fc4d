/* cgroup v2 delegation. Under `systemctl --user` with Delegate=yes the
 * service's cgroup is ours: the daemon moves itself into a leaf
 * ("supervisor") so sandboxes can be siblings with controllers enabled.
 * Without a writable cgroup the daemon degrades and says so. */
#include "cgroup.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "sandbox-private.h"
#include "macro.h"

int cgroup_write(const char *dir, const char *file, const char *value) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, file);
        int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        ssize_t n = write(fd, value, strlen(value));
        int r = n < 0 ? -errno : 0;
        close(fd);
        return r;
}

static char *read_small(const char *path) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return NULL;
        char *buf = malloc(8192);
        ssize_t n = buf ? read(fd, buf, 8191) : -1;
        close(fd);
        if (n < 0) {
                free(buf);
                return NULL;
        }
        buf[n] = 0;
        return buf;
}

/* The cgroup2 mount point, from mountinfo. */
static char *cgroup2_mount(void) {
        FILE *f = fopen("/proc/self/mountinfo", "re");
        if (!f)
                return NULL;
        char line[4096];
        char *found = NULL;
        while (!found && fgets(line, sizeof(line), f)) {
                char *sep = strstr(line, " - ");
                if (!sep || strncmp(sep + 3, "cgroup2 ", 8) != 0)
                        continue;
                /* field 5 is the mount point */
                char *p = line;
                for (int i = 0; i < 4 && p; i++) {
                        p = strchr(p, ' ');
                        if (p)
                                p++;
                }
                if (!p)
                        continue;
                char *end = strchr(p, ' ');
                if (end)
                        found = strndup(p, (size_t) (end - p));
        }
        fclose(f);
        return found;
}

static char *own_cgroup(void) {
        _cleanup_free_ char *s = read_small("/proc/self/cgroup");
        if (!s)
                return NULL;
        for (char *line = strtok(s, "\n"); line; line = strtok(NULL, "\n"))
                if (strncmp(line, "0::", 3) == 0)
                        return strdup(line + 3);
        return NULL;
}

static void set_status(manager *m, const char *fmt, const char *arg) {
        free(m->sandboxes->cgroup.status);
        m->sandboxes->cgroup.status = NULL;
        (void) !asprintf(&m->sandboxes->cgroup.status, fmt, arg);
}

void cgroup_teardown(manager *m) {
        free(m->sandboxes->cgroup.root);
        free(m->sandboxes->cgroup.status);
        free(m->sandboxes->cgroup.controllers);
        m->sandboxes->cgroup.root = m->sandboxes->cgroup.status = m->sandboxes->cgroup.controllers = NULL;
}

void cgroup_setup(manager *m) {
        _cleanup_free_ char *mnt = cgroup2_mount();
        _cleanup_free_ char *own = own_cgroup();
        _cleanup_free_ char *root = NULL;
        _cleanup_free_ char *ctrls = NULL;

        if (!mnt) {
                set_status(m, "unavailable: %s", "no cgroup v2 hierarchy is mounted");
                goto fail;
        }
        if (m->config->cgroup_path)
                root = strdup(m->config->cgroup_path);
        else {
                if (!own) {
                        set_status(m, "unavailable: %s", "not in a cgroup v2 hierarchy");
                        goto fail;
                }
                /* Already moved into our supervisor leaf (a restart keeps the cgroup). */
                size_t ol = strlen(own);
                if (ol >= 11 && streq(own + ol - 11, "/supervisor"))
                        own[ol - 11] = 0;
                (void) !asprintf(&root, "%s%s", mnt, own);
        }
        if (!root)
                goto fail;

        char procs[4096];
        snprintf(procs, sizeof(procs), "%s/cgroup.procs", root);
        if (access(root, W_OK) < 0 || access(procs, W_OK) < 0) {
                set_status(m, "unavailable: cgroup %s is not delegated to this user (run under systemctl --user with Delegate=yes)",
                           root);
                goto fail;
        }

        /* Move ourselves into a leaf so the root may enable controllers for sandboxes. */
        char sup[4096], pid[32];
        snprintf(sup, sizeof(sup), "%s/supervisor", root);
        if (mkdir(sup, 0755) < 0 && errno != EEXIST) {
                set_status(m, "unavailable: cannot create the supervisor cgroup: %s", strerror(errno));
                goto fail;
        }
        snprintf(pid, sizeof(pid), "%d", (int) getpid());
        int r = cgroup_write(sup, "cgroup.procs", pid);
        if (r < 0) {
                char why[256];
                snprintf(why, sizeof(why), "cannot move agentd into %s: %s", sup, strerror(-r));
                set_status(m, "unavailable: %s", why);
                goto fail;
        }

        /* Enable what the parent gives us; none is fine, we just say so. */
        char path[4096];
        snprintf(path, sizeof(path), "%s/cgroup.controllers", root);
        ctrls = read_small(path);
        char enabled[256] = "";
        static const char *const wanted[] = { "memory", "pids", "cpu" };
        for (size_t i = 0; ctrls && i < ELEMENTSOF(wanted); i++) {
                char *hit = strstr(ctrls, wanted[i]);
                size_t wl = strlen(wanted[i]);
                if (!hit || (hit[wl] != ' ' && hit[wl] != '\n' && hit[wl] != 0))
                        continue;
                char v[32];
                snprintf(v, sizeof(v), "+%s", wanted[i]);
                if (cgroup_write(root, "cgroup.subtree_control", v) == 0) {
                        if (enabled[0])
                                strcat(enabled, " ");
                        strcat(enabled, wanted[i]);
                }
        }
        free(m->sandboxes->cgroup.controllers);
        m->sandboxes->cgroup.controllers = strdup(enabled);
        free(m->sandboxes->cgroup.root);
        m->sandboxes->cgroup.root = TAKE_PTR(root);
        if (enabled[0])
                set_status(m, "ok", NULL);
        else
                set_status(m, "ok (no controllers delegated: MemoryMax/TasksMax/CPU are not enforced; freeze and kill work)%s", "");
        log_info("cgroup: %s at %s", m->sandboxes->cgroup.status, m->sandboxes->cgroup.root);
        return;
fail:
        log_warning("cgroup: %s", m->sandboxes->cgroup.status ? m->sandboxes->cgroup.status : "unavailable");
        free(m->sandboxes->cgroup.root);
        m->sandboxes->cgroup.root = NULL;
        free(m->sandboxes->cgroup.controllers);
        m->sandboxes->cgroup.controllers = strdup("");
}

static bool has_controller(manager *m, const char *name) {
        if (!m->sandboxes->cgroup.controllers)
                return false;
        char *hit = strstr(m->sandboxes->cgroup.controllers, name);
        return hit && (hit[strlen(name)] == ' ' || hit[strlen(name)] == 0);
}

int cgroup_create_sandbox(manager *m, const char *id, cgroup_limits *lim, char **ret_path, int *ret_fd,
                          char **ret_note) {
        _cleanup_free_ char *path = NULL;
        char note[512] = "";

        if (!m->sandboxes->cgroup.root)
                return -EOPNOTSUPP;
        if (asprintf(&path, "%s/sb-%s", m->sandboxes->cgroup.root, id) < 0)
                return -ENOMEM;
        if (mkdir(path, 0755) < 0)
                return -errno;

        char v[64];
        if (lim->memory_max) {
                if (has_controller(m, "memory")) {
                        if (lim->memory_max == UINT64_MAX)
                                snprintf(v, sizeof(v), "max");
                        else
                                snprintf(v, sizeof(v), "%llu", (unsigned long long) lim->memory_max);
                        /* A write that failed is a limit that does not hold: say so, never "enforced". */
                        if (cgroup_write(path, "memory.max", v) < 0) {
                                lim->unenforced |= CGROUP_LIMIT_MEMORY;
                                strcat(note, "MemoryMax not enforced (memory.max refused it); ");
                        }
                        (void) cgroup_write(path, "memory.swap.max", "0"); /* absent without swap accounting */
                } else {
                        lim->unenforced |= CGROUP_LIMIT_MEMORY;
                        strcat(note, "MemoryMax not enforced (no memory controller); ");
                }
        }
        if (lim->tasks_max) {
                if (has_controller(m, "pids")) {
                        snprintf(v, sizeof(v), "%llu", (unsigned long long) lim->tasks_max);
                        if (cgroup_write(path, "pids.max", v) < 0) {
                                lim->unenforced |= CGROUP_LIMIT_PIDS;
                                strcat(note, "TasksMax held by RLIMIT_NPROC only (pids.max refused it); ");
                        }
                } else {
                        lim->unenforced |= CGROUP_LIMIT_PIDS;
                        strcat(note, "TasksMax held by RLIMIT_NPROC only (no pids controller); ");
                }
        }
        if (lim->cpu_weight || lim->cpu_quota_percent) {
                if (has_controller(m, "cpu")) {
                        int r = 0;
                        if (lim->cpu_weight) {
                                snprintf(v, sizeof(v), "%u", lim->cpu_weight);
                                r = cgroup_write(path, "cpu.weight", v);
                        }
                        if (r >= 0 && lim->cpu_quota_percent) {
                                snprintf(v, sizeof(v), "%u 100000", lim->cpu_quota_percent * 1000);
                                r = cgroup_write(path, "cpu.max", v);
                        }
                        if (r < 0) {
                                lim->unenforced |= CGROUP_LIMIT_CPU;
                                strcat(note, "CPU limits not enforced (the cpu controller refused them); ");
                        }
                } else {
                        lim->unenforced |= CGROUP_LIMIT_CPU;
                        strcat(note, "CPU limits not enforced (no cpu controller); ");
                }
        }
        int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) {
                int r = -errno;
                rmdir(path);
                return r;
        }
        size_t nl = strlen(note);
        if (nl >= 2)
                note[nl - 2] = 0;
        *ret_note = nl ? strdup(note) : NULL;
        *ret_fd = fd;
        *ret_path = TAKE_PTR(path);
        return 0;
}

int cgroup_kill(const char *dir) {
        return cgroup_write(dir, "cgroup.kill", "1");
}

int cgroup_freeze(const char *dir, bool freeze) {
        return cgroup_write(dir, "cgroup.freeze", freeze ? "1" : "0");
}

int cgroup_wait_frozen(const char *dir, unsigned timeout_ms) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/cgroup.events", dir);
        for (unsigned waited = 0;; waited++) {
                _cleanup_free_ char *ev = read_small(path);
                if (!ev)
                        return -errno ? -errno : -EIO;
                if (strstr(ev, "frozen 1"))
                        return 0;
                if (waited >= timeout_ms)
                        return -ETIMEDOUT;
                usleep(1000);
        }
}

int cgroup_remove(const char *dir) {
        if (rmdir(dir) < 0)
                return -errno;
        return 0;
}
