/* Where a sandbox may have its workspace. The caller names the directory,
 * but some places are never a workspace: kernel pseudo-filesystems (a
 * writable /proc or /sys is the host's), agentd's own runtime, socket,
 * config and state directories (a sandbox given the socket can spawn a
 * writable sandbox elsewhere), and everything that contains them: / and the
 * home directory. The path is resolved once through an O_PATH descriptor, and
 * both the filesystem check and the path rules use what that descriptor
 * names, so a symlink cannot dodge a rule. */
#include "spawn-guard.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <linux/magic.h>

#include "cgroup.h"
#include "macro.h"

/* Kernel filesystems whose files are the host's state, not anybody's project. */
static const struct {
        unsigned long magic;
        const char *name;
} pseudo_fs[] = {
        { PROC_SUPER_MAGIC, "proc" },         { SYSFS_MAGIC, "sysfs" },
        { CGROUP_SUPER_MAGIC, "cgroup" },     { CGROUP2_SUPER_MAGIC, "cgroup2" },
        { DEBUGFS_MAGIC, "debugfs" },         { TRACEFS_MAGIC, "tracefs" },
        { SECURITYFS_MAGIC, "securityfs" },   { DEVPTS_SUPER_MAGIC, "devpts" },
        { BPF_FS_MAGIC, "bpf" },              { PSTOREFS_MAGIC, "pstore" },
        { EFIVARFS_MAGIC, "efivarfs" },       { SELINUX_MAGIC, "selinuxfs" },
        { SMACK_MAGIC, "smackfs" },           { NSFS_MAGIC, "nsfs" },
        { BINFMTFS_MAGIC, "binfmt_misc" },    { HUGETLBFS_MAGIC, "hugetlbfs" },
        { 0x62656570 /* CONFIGFS_MAGIC */, "configfs" },
        { 0x65735543 /* FUSECTL_SUPER_MAGIC */, "fusectl" },
        { 0x19800202 /* MQUEUE_MAGIC */, "mqueue" },
};

static bool path_within(const char *dir, const char *path) {
        size_t n = strlen(dir);
        if (n == 1 && dir[0] == '/')
                return true;
        return strncmp(dir, path, n) == 0 && (path[n] == '/' || path[n] == 0);
}

/* The canonical spelling of a protected directory: resolved if it exists (a
 * symlinked runtime dir is protected where it really is), else as given. */
static char *protected_path(const char *p) {
        if (!p || p[0] != '/')
                return NULL;
        char *r = realpath(p, NULL);
        return r ? r : strdup(p);
}

static char *dir_of(const char *file) {
        if (!file)
                return NULL;
        char *d = strdup(file);
        char *slash = d ? strrchr(d, '/') : NULL;
        if (!slash) {
                free(d);
                return NULL;
        }
        if (slash == d)
                slash[1] = 0;
        else
                *slash = 0;
        return d;
}

static const char *fs_name(unsigned long magic) {
        for (size_t i = 0; i < ELEMENTSOF(pseudo_fs); i++)
                if (pseudo_fs[i].magic == magic)
                        return pseudo_fs[i].name;
        return NULL;
}

/* One of agentd's own directories: the workspace may be neither it, nor inside it, nor above it. */
static int check_protected(const spawn_guard *g, const char *ws, const char *dir, const char *what, rpc_error *err) {
        _cleanup_free_ char *p = g->resolve && dir && dir[0] == '/' ? g->resolve(dir) : protected_path(dir);
        if (!p)
                return 0;
        const char *rel = NULL;
        if (streq(ws, p))
                rel = "is";
        else if (path_within(p, ws))
                rel = "is inside";
        else if (path_within(ws, p))
                rel = "contains";
        if (!rel)
                return 0;
        rpc_error_set(err, RPC_E_POLICY_DENIED,
                      "workspace %.300s %s %s (%.300s): a sandbox must never reach agentd's own files; use a project directory",
                      ws, rel, what, p);
        return -EPERM;
}

spawn_guard spawn_guard_of(const manager *m) {
        return (spawn_guard) {
                .home = m->home,
                .runtime_dir = getenv("XDG_RUNTIME_DIR"),
                .socket_path = m->socket_path,
                .config_path = m->config_path,
                .task_dir = m->task_dirs ? m->task_dirs[0] : NULL,
                .state_dir = m->config->state_directory,
                .require_limits = m->config->require_limits,
        };
}

int spawn_workspace_resolve(manager *m, const char *requested, char **ret_path, rpc_error *err) {
        spawn_guard g = spawn_guard_of(m);
        return spawn_guard_workspace(&g, requested, ret_path, err);
}

int spawn_guard_workspace(const spawn_guard *g, const char *requested, char **ret_path, rpc_error *err) {
        if (!requested || requested[0] != '/') {
                rpc_error_set(err, RPC_E_INVALID_PARAMS, "parameter 'workspace' must be an absolute directory");
                return -EINVAL;
        }
        _cleanup_close_ int fd = open(requested, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) {
                int r = -errno;
                rpc_error_set(err, RPC_E_INVALID_PARAMS, "workspace %.300s: %s", requested,
                              r == -ENOTDIR ? "not a directory" : strerror(-r));
                return r;
        }
        char link[64], ws[PATH_MAX];
        snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, ws, sizeof(ws) - 1);
        if (n <= 0 || ws[0] != '/') {
                /* Unreachable from our root (another mount namespace, a deleted dir). */
                rpc_error_set(err, RPC_E_INVALID_PARAMS, "workspace %.300s: cannot resolve it to a path", requested);
                return -ENOENT;
        }
        ws[n] = 0;

        if (streq(ws, "/")) {
                rpc_error_set(err, RPC_E_POLICY_DENIED,
                              "workspace / is the root directory: it holds the home directory and agentd's own files; use a project directory");
                return -EPERM;
        }
        struct statfs sfs;
        if (fstatfs(fd, &sfs) < 0) {
                int r = -errno;
                rpc_error_set(err, RPC_E_INVALID_PARAMS, "workspace %.300s: statfs: %s", ws, strerror(-r));
                return r;
        }
        const char *pseudo = fs_name((unsigned long) sfs.f_type);
        if (pseudo) {
                rpc_error_set(err, RPC_E_POLICY_DENIED,
                              "workspace %.300s is on a kernel pseudo-filesystem (%s): its files are the host's state, never a workspace",
                              ws, pseudo);
                return -EPERM;
        }
        /* By path too: a tmpfs mounted somewhere in them (/dev/shm, a v1 /sys/fs/cgroup) is still the host's. */
        static const char *const kernel_trees[] = { "/proc", "/sys", "/dev" };
        for (size_t i = 0; i < ELEMENTSOF(kernel_trees); i++)
                if (path_within(kernel_trees[i], ws)) {
                        rpc_error_set(err, RPC_E_POLICY_DENIED, "workspace %.300s is in the kernel's tree %s: never a workspace", ws,
                                      kernel_trees[i]);
                        return -EPERM;
                }
        if (g->home && path_within(ws, g->home)) {
                rpc_error_set(err, RPC_E_POLICY_DENIED,
                              "workspace %.300s is %s (%.300s), which holds every secret and agentd's own config and state; "
                              "use a project directory",
                              ws, streq(ws, g->home) ? "the home directory" : "an ancestor of the home directory", g->home);
                return -EPERM;
        }

        _cleanup_free_ char *config_dir = dir_of(g->config_path);
        _cleanup_free_ char *socket_dir = dir_of(g->socket_path);
        const struct {
                const char *dir, *what;
        } rules[] = {
                { g->runtime_dir, "the runtime directory $XDG_RUNTIME_DIR" },
                { socket_dir, "the directory of agentd's socket" },
                { config_dir, "agentd's config directory" },
                { g->task_dir, "agentd's task directory" },
                { g->state_dir, "agentd's state directory" },
        };
        for (size_t i = 0; i < ELEMENTSOF(rules); i++) {
                int r = check_protected(g, ws, rules[i].dir, rules[i].what, err);
                if (r < 0)
                        return r;
        }
        char *p = strdup(ws);
        if (!p)
                return -ENOMEM;
        *ret_path = p;
        return 0;
}

/* ---- limits ---------------------------------------------------------------- */

unsigned task_limits_asked(const task_policy *p) {
        unsigned asked = 0;
        if (p->memory_max && p->memory_max != POLICY_INFINITY)
                asked |= CGROUP_LIMIT_MEMORY;
        if (p->tasks_max && p->tasks_max != POLICY_INFINITY)
                asked |= CGROUP_LIMIT_PIDS;
        if (p->cpu_weight || p->cpu_quota_percent)
                asked |= CGROUP_LIMIT_CPU;
        return asked;
}

static void limits_list(unsigned bits, char *buf, size_t size) {
        snprintf(buf, size, "%s%s%s", bits & CGROUP_LIMIT_MEMORY ? "MemoryMax " : "",
                 bits & CGROUP_LIMIT_CPU ? "CPUWeight/CPUQuota " : "", bits & CGROUP_LIMIT_PIDS ? "TasksMax " : "");
        size_t n = strlen(buf);
        if (n > 0)
                buf[n - 1] = 0;
}

int spawn_limits_check(manager *m, const task_policy *p, unsigned unenforced, const char *no_cgroup_why, char **note,
                       agentd_error *err) {
        spawn_guard g = spawn_guard_of(m);
        return spawn_guard_limits(&g, p, unenforced, no_cgroup_why, note, err);
}

int spawn_guard_limits(const spawn_guard *g, const task_policy *p, unsigned unenforced, const char *no_cgroup_why,
                       char **note, agentd_error *err) {
        /* TasksMax holds anyway: the helper sets RLIMIT_NPROC from it. */
        unsigned missing = unenforced & ~CGROUP_LIMIT_PIDS;
        char what[64];

        limits_list(missing, what, sizeof(what));
        if (missing && g->require_limits) {
                return error_set(err, ERROR_BACKEND_UNAVAILABLE, EOPNOTSUPP,
                                 "task '%s' sets %s, which cannot be enforced here (%s%s), and agentd.conf says RequireLimits=yes",
                                 p->name, what, no_cgroup_why ? "cgroup " : "", no_cgroup_why ? no_cgroup_why : *note ? *note : "?");
        }
        if (!no_cgroup_why)
                return 0; /* the cgroup's own note says what it could not apply */
        free(*note);
        *note = NULL;
        int r;
        if (missing)
                r = asprintf(note, "%s not enforced (cgroup %s)%s", what, no_cgroup_why,
                             unenforced & CGROUP_LIMIT_PIDS ? "; TasksMax held by RLIMIT_NPROC only" : "");
        else if (unenforced & CGROUP_LIMIT_PIDS)
                r = asprintf(note, "TasksMax held by RLIMIT_NPROC only (cgroup %s)", no_cgroup_why);
        else
                r = asprintf(note, "none set; not enforced (cgroup %s)", no_cgroup_why);
        if (r < 0)
                *note = NULL;
        return 0;
}

/* ---- the task's own paths ------------------------------------------------------ */

int spawn_task_paths_check(manager *m, const task_policy *p, char ***ret_hide, rpc_error *err) {
        spawn_guard g = spawn_guard_of(m);
        return spawn_guard_task_paths(&g, p, ret_hide, err);
}

int spawn_guard_task_paths(const spawn_guard *g, const task_policy *p, char ***ret_hide, rpc_error *err) {
        _cleanup_free_ char *socket_dir = dir_of(g->socket_path);
        _cleanup_free_ char *config_dir = dir_of(g->config_path);
        const struct {
                const char *dir, *what;
                bool writes_only;     /* only a writable bind matters */
        } rules[] = {
                { g->runtime_dir, "the runtime directory $XDG_RUNTIME_DIR", false },
                { socket_dir, "the directory of agentd's socket", false },
                { g->state_dir, "agentd's state directory", false },
                { config_dir, "agentd's config directory", true },
        };
        const struct {
                char **paths;
                const char *key;
                bool writable;
        } keys[] = {
                { p->read_only_paths, "ReadOnlyPaths", false },
                { p->writable_paths, "WritablePaths", true },
        };
        _cleanup_strv_free_ char **hide = calloc(ELEMENTSOF(rules) + 1, sizeof(char *));
        size_t n_hide = 0;

        if (!hide)
                return -ENOMEM;
        for (size_t r = 0; r < ELEMENTSOF(rules); r++) {
                _cleanup_free_ char *d = protected_path(rules[r].dir);
                bool below = false;
                if (!d)
                        continue;
                for (size_t k = 0; k < ELEMENTSOF(keys); k++) {
                        if (rules[r].writes_only && !keys[k].writable)
                                continue;
                        for (char **i = keys[k].paths; i && *i; i++) {
                                _cleanup_free_ char *c = protected_path(*i);
                                if (!c)
                                        continue;
                                if (path_within(d, c)) {
                                        rpc_error_set(err, RPC_E_POLICY_DENIED,
                                                      "task '%s': %s=%.300s is %s%s (%.300s), which a sandbox never sees", p->name,
                                                      keys[k].key, c, streq(c, d) ? "" : "inside ", rules[r].what, d);
                                        return -EPERM;
                                }
                                below |= path_within(c, d);
                        }
                }
                /* A path above it is fine; the directory itself is masked inside. */
                if (below && !(hide[n_hide++] = TAKE_PTR(d)))
                        return -ENOMEM;
        }
        *ret_hide = TAKE_PTR(hide);
        return 0;
}
