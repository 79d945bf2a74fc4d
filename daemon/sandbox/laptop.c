/* Toolchains, caches, PATH, agentctl and hidden credential files for a sandbox:
 * see laptop.h. Decisions only (stat and access on the host); the helper mounts. */
#include <errno.h>
#include <ftw.h>
#include <grp.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agentd-build.h"
#include "laptop.h"
#include "macro.h"

#define LAPTOP_PATH_MAX 32768

static int strv_add(char ***v, const char *s) {
        size_t n = strv_length(*v);
        char **nv = realloc(*v, (n + 2) * sizeof(char *));

        if (!nv)
                return -ENOMEM;
        *v = nv;
        nv[n] = strdup(s);
        nv[n + 1] = NULL;
        return nv[n] ? 0 : -ENOMEM;
}

int laptop_strv_add(char ***v, const char *s) {
        return strv_add(v, s);
}

static bool strv_has(char *const *v, const char *s) {
        for (size_t i = 0; v && v[i]; i++)
                if (streq(v[i], s))
                        return true;
        return false;
}

static bool under(const char *prefix, const char *path) {
        size_t n = strlen(prefix);

        if (n == 1 && prefix[0] == '/')
                return true;
        return strncmp(prefix, path, n) == 0 && (path[n] == '/' || path[n] == 0);
}

/* Absolute, no empty, "." or ".." component, nothing a mount option or the spec
 * would misread (overlayfs splits its options on ',' and lowerdir on ':'). */
static bool path_plain(const char *p) {
        if (p[0] != '/' || strlen(p) >= PATH_MAX || strpbrk(p, ",:\\\n"))
                return false;
        for (const char *c = p; *c; c++) {
                if (*c != '/')
                        continue;
                if (c[1] == '/' || (c[1] == 0 && c != p) || (c[1] == '.' && (c[2] == '/' || c[2] == 0)) ||
                    (c[1] == '.' && c[2] == '.' && (c[3] == '/' || c[3] == 0)))
                        return false;
        }
        return true;
}

/* "~/x" against home; anything else is taken as it is. */
static int expand(const char *entry, const char *home, char **ret) {
        if (entry[0] == '~' && entry[1] == '/') {
                if (!home)
                        return -ENOENT;
                return asprintf(ret, "%s%s", home, entry + 1) < 0 ? -ENOMEM : 0;
        }
        *ret = strdup(entry);
        return *ret ? 0 : -ENOMEM;
}

/* Shown neither agentd's own directories nor anything holding them. */
static bool forbidden(const char *path, const char *home, const char *const *never) {
        if (home && under(path, home))
                return true; /* the home itself or an ancestor: every secret at once */
        for (size_t i = 0; never && never[i]; i++)
                if (under(path, never[i]) || under(never[i], path))
                        return true;
        return false;
}

/* Where a shown tree really is. The helper binds the path as spelled and the
 * kernel follows its symlinks, while the checks above and the hide list of
 * secrets work on spellings: a toolchain or cache that is (or passes through) a
 * symlink to ~/.ssh, the home, or agentd's state would be shown under another
 * name with nothing masked. So the resolved path is checked too: never
 * forbidden, never a secret or inside one, and, when it differs from the
 * spelling, holding no secret either (its hide would be at the wrong path).
 * Anything that fails is not shown (fail closed). */
static bool secret_overlap(const char *abs, const char *real, const char *home) {
        for (size_t i = 0; policy_secrets_paths[i]; i++) {
                _cleanup_free_ char *spelled = NULL, *shown = NULL;
                if (expand(policy_secrets_paths[i], home, &spelled) < 0)
                        return true;
                _cleanup_free_ char *res = realpath(spelled, NULL);
                if (under(spelled, real) || (res && under(res, real)))
                        return true; /* the tree is a secret or inside one */
                if (!res || !under(real, res))
                        continue;
                /* A secret inside the tree: shown at abs + the rest; hidden only if that is its own spelling. */
                if (asprintf(&shown, "%s%s", abs, res + strlen(real)) < 0 || !streq(shown, spelled))
                        return true;
        }
        return false;
}

static bool resolved_ok(const char *abs, const char *home, const char *const *never) {
        _cleanup_free_ char *real = realpath(abs, NULL);
        if (!real)
                return false;
        if (!path_plain(real) || forbidden(real, home, never))
                return false;
        /* Agentd's directories as they resolve, too (never[] is spelled). */
        for (size_t i = 0; never && never[i]; i++) {
                _cleanup_free_ char *n = realpath(never[i], NULL);
                if (n && (under(real, n) || under(n, real)))
                        return false;
        }
        _cleanup_free_ char *rhome = home ? realpath(home, NULL) : NULL;
        if (rhome && under(real, rhome))
                return false;
        return !secret_overlap(abs, real, home);
}

static bool exists(const char *path) {
        struct stat st;
        return stat(path, &st) == 0;
}

static bool is_dir(const char *path) {
        struct stat st;
        return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The system part of the root is visible as it is; a toolchain there needs no bind. */
static bool in_system_root(const char *path) {
        return under("/usr", path) || under("/etc", path);
}

/* A cache that does not exist yet inside a shown (read-only) toolchain tree,
 * such as ~/.cargo/registry before the first download: the tool would fail to
 * create it inside, so create it, empty, on the host (as the tool itself would
 * have) and show it through the copy-on-write layer like any other cache. */
static bool make_cache_in_tree(char *const *trees, const char *path) {
        char buf[PATH_MAX];
        size_t base = 0;

        for (size_t i = 0; trees && trees[i]; i++)
                if (under(trees[i], path) && !streq(trees[i], path) && strlen(trees[i]) > base)
                        base = strlen(trees[i]);
        if (is_dir(path))
                return true;
        if (base == 0 || strlen(path) >= sizeof(buf))
                return false;
        snprintf(buf, sizeof(buf), "%s", path);
        for (char *c = buf + base + 1; ; c++) {
                bool end = *c == 0;
                if (*c != '/' && !end)
                        continue;
                *c = 0;
                if (mkdir(buf, 0755) < 0 && errno != EEXIST)
                        return false;
                if (end)
                        break;
                *c = '/';
        }
        return is_dir(path);
}

static int add_toolchains(laptop_plan *plan, const task_policy *p, const char *home, const char *const *never) {
        const char *const *auto_list = p->toolchains_auto ? policy_toolchains_paths : NULL;
        char *const *paths = p->toolchains_auto ? NULL : p->toolchains;
        int r;

        for (size_t i = 0; (auto_list && auto_list[i]) || (paths && paths[i]); i++) {
                _cleanup_free_ char *abs = NULL;

                r = expand(auto_list ? auto_list[i] : paths[i], home, &abs);
                if (r == -ENOMEM)
                        return r;
                if (r < 0 || !path_plain(abs) || in_system_root(abs) || forbidden(abs, home, never) ||
                    !exists(abs) || strv_has(plan->ro, abs) || !resolved_ok(abs, home, never))
                        continue;
                r = strv_add(&plan->ro, abs);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; policy_caches_paths[i]; i++) {
                _cleanup_free_ char *abs = NULL;

                r = expand(policy_caches_paths[i], home, &abs);
                if (r == -ENOMEM)
                        return r;
                if (r < 0 || !path_plain(abs) || forbidden(abs, home, never) || !make_cache_in_tree(plan->ro, abs) || !resolved_ok(abs, home, never))
                        continue;
                r = strv_add(&plan->cow, abs);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int add_secrets(laptop_plan *plan, const char *home) {
        for (size_t i = 0; policy_secrets_paths[i]; i++) {
                _cleanup_free_ char *abs = NULL;
                struct stat st;
                int r = expand(policy_secrets_paths[i], home, &abs);

                if (r == -ENOMEM)
                        return r;
                /* Only what exists can be seen; a broken symlink is masked too. */
                if (r < 0 || !path_plain(abs) || lstat(abs, &st) < 0)
                        continue;
                r = strv_add(&plan->hide, abs);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* The agentctl client, where it was installed: next to agentd in bindir, or in
 * the build tree (daemon/agentd -> client/agentctl). Found once. */
static const char *find_agentctl(void) {
        static char found[PATH_MAX];
        static bool looked;
        char self[PATH_MAX], *slash;
        ssize_t n;

        if (looked)
                return found[0] ? found : NULL;
        looked = true;
        n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n > 0) {
                self[n] = 0;
                slash = strrchr(self, '/');
                if (slash) {
                        *slash = 0;
                        snprintf(found, sizeof(found), "%s/agentctl", self);
                        if (access(found, X_OK) == 0 && path_plain(found))
                                return found;
                        snprintf(found, sizeof(found), "%s/../client/agentctl", self);
                        char *real = realpath(found, NULL);
                        found[0] = 0;
                        if (real && access(real, X_OK) == 0 && path_plain(real))
                                snprintf(found, sizeof(found), "%s", real);
                        free(real);
                        if (found[0])
                                return found;
                }
        }
        snprintf(found, sizeof(found), "%s/agentctl", AGENTD_BINDIR);
        if (access(found, X_OK) == 0 && path_plain(found))
                return found;
        found[0] = 0;
        return NULL;
}

static bool visible_inside(const laptop_plan *plan, const task_policy *p, const char *workspace, const char *dir) {
        static const char *const system[] = { "/usr", "/bin", "/sbin" };

        for (size_t i = 0; plan->hide && plan->hide[i]; i++)
                if (under(plan->hide[i], dir))
                        return false;
        for (size_t i = 0; i < ELEMENTSOF(system); i++)
                if (under(system[i], dir))
                        return true;
        if (workspace && under(workspace, dir))
                return true;
        for (char *const *l = plan->ro; l && *l; l++)
                if (under(*l, dir))
                        return true;
        for (char *const *l = plan->cow; l && *l; l++)
                if (under(*l, dir))
                        return true;
        for (char *const *l = p->read_only_paths; l && *l; l++)
                if (under(*l, dir))
                        return true;
        for (char *const *l = p->writable_paths; l && *l; l++)
                if (under(*l, dir))
                        return true;
        return false;
}

/* The caller's PATH, keeping the directories that exist and are visible inside,
 * in order and once; then the defaults; then agentctl's directory. */
static int build_path(laptop_plan *plan, const task_policy *p, const char *caller_path, const char *workspace) {
        _cleanup_strv_free_ char **dirs = NULL;
        _cleanup_free_ char *copy = NULL;
        char *save = NULL;
        size_t len = 0;
        int r;

        if (caller_path && strlen(caller_path) < LAPTOP_PATH_MAX) {
                copy = strdup(caller_path);
                if (!copy)
                        return -ENOMEM;
                for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
                        size_t l = strlen(d);
                        if (l > 1 && d[l - 1] == '/')
                                d[l - 1] = 0;
                        if (!path_plain(d) || strv_has(dirs, d) || !visible_inside(plan, p, workspace, d) || !is_dir(d))
                                continue;
                        r = strv_add(&dirs, d);
                        if (r < 0)
                                return r;
                }
        }
        char defaults[] = LAPTOP_DEFAULT_PATH;
        for (char *d = strtok_r(defaults, ":", &save); d; d = strtok_r(NULL, ":", &save))
                if (!strv_has(dirs, d) && (r = strv_add(&dirs, d)) < 0)
                        return r;
        if (plan->agentctl && !strv_has(dirs, LAPTOP_AGENTCTL_DIR) && (r = strv_add(&dirs, LAPTOP_AGENTCTL_DIR)) < 0)
                return r;

        for (size_t i = 0; dirs[i]; i++)
                len += strlen(dirs[i]) + 1;
        plan->path = malloc(len + 1);
        if (!plan->path)
                return -ENOMEM;
        plan->path[0] = 0;
        for (size_t i = 0; dirs[i]; i++) {
                if (i)
                        strcat(plan->path, ":");
                strcat(plan->path, dirs[i]);
        }
        return 0;
}

void laptop_plan_done(laptop_plan *plan) {
        strv_free(plan->ro);
        strv_free(plan->cow);
        strv_free(plan->hide);
        free(plan->path);
        free(plan->note);
        *plan = (laptop_plan) { 0 };
}

int laptop_toolchains_build(const task_policy *p, const char *home, const char *const *never, laptop_plan *plan) {
        if (!task_policy_toolchains_enabled(p))
                return 0;
        return add_toolchains(plan, p, home, never);
}

int laptop_plan_finish(const task_policy *p, const char *home, const char *caller_path, const char *workspace,
                       laptop_plan *plan) {
        int r = add_secrets(plan, home);
        if (r < 0)
                return r;
        plan->agentctl = find_agentctl();
        return build_path(plan, p, caller_path, workspace);
}

int laptop_plan_build(const task_policy *p, const char *home, const char *caller_path, const char *workspace,
                      const char *const *never, laptop_plan *ret) {
        laptop_plan plan = { 0 };
        int r = laptop_toolchains_build(p, home, never, &plan);
        if (r >= 0)
                r = laptop_plan_finish(p, home, caller_path, workspace, &plan);
        if (r < 0) {
                laptop_plan_done(&plan);
                return r;
        }
        *ret = plan;
        return 0;
}

int laptop_make_cow_dirs(const char *sandbox_dir, size_t n) {
        char path[PATH_MAX];

        if (n == 0)
                return 0;
        snprintf(path, sizeof(path), "%s/cow", sandbox_dir);
        if (mkdir(path, 0700) < 0 && errno != EEXIST)
                return -errno;
        for (size_t i = 0; i < n; i++) {
                static const char *const sub[] = { "", "/upper", "/work" };
                for (size_t j = 0; j < ELEMENTSOF(sub); j++) {
                        if ((size_t) snprintf(path, sizeof(path), "%s/cow/%zu%s", sandbox_dir, i, sub[j]) >= sizeof(path))
                                return -ENAMETOOLONG;
                        if (mkdir(path, 0700) < 0)
                                return -errno;
                }
        }
        return 0;
}

/* ---- files whose group the sandbox cannot map ------------------------------ */

#define GROUP_SCAN_MAX 4096
#define GROUP_NAMES_MAX 5

typedef struct group_scan {
        gid_t groups[NGROUPS_MAX];
        int n_groups;
        unsigned seen, found;
        char names[GROUP_NAMES_MAX][PATH_MAX];
        gid_t gids[GROUP_NAMES_MAX];
        bool truncated;
} group_scan;

static group_scan *scan_ctx;

static bool is_other_group(const group_scan *g, gid_t gid) {
        if (gid == getgid())
                return false;
        for (int i = 0; i < g->n_groups; i++)
                if (g->groups[i] == gid)
                        return true;
        return false;
}

static int scan_one(const char *path, const struct stat *st, int type, struct FTW *ftw) {
        group_scan *g = scan_ctx;

        if (++g->seen > GROUP_SCAN_MAX) {
                g->truncated = true;
                return 1;
        }
        if ((type == FTW_F || type == FTW_D) && is_other_group(g, st->st_gid)) {
                if (g->found < GROUP_NAMES_MAX) {
                        snprintf(g->names[g->found], sizeof(g->names[0]), "%s", path);
                        g->gids[g->found] = st->st_gid;
                }
                g->found++;
        }
        return 0;
}

int laptop_group_note(const char *workspace, bool overlay, char **ret) {
        _cleanup_free_ group_scan *g = NULL;
        _cleanup_free_ char *list = NULL;
        size_t len = 0;
        FILE *f;

        *ret = NULL;
        if (!workspace || !overlay)
                return 0;
        g = calloc(1, sizeof(*g));
        if (!g)
                return -ENOMEM;
        g->n_groups = getgroups(NGROUPS_MAX, g->groups);
        if (g->n_groups <= 0 || (g->n_groups == 1 && g->groups[0] == getgid()))
                return 0; /* no other group: nothing can be unmapped (the common case costs nothing) */
        scan_ctx = g;
        (void) nftw(workspace, scan_one, 16, FTW_PHYS | FTW_MOUNT);
        scan_ctx = NULL;
        if (g->found == 0)
                return 0;

        f = open_memstream(&list, &len);
        if (!f)
                return -ENOMEM;
        for (unsigned i = 0; i < g->found && i < GROUP_NAMES_MAX; i++) {
                struct group *gr = getgrgid(g->gids[i]);
                const char *rel = g->names[i] + strlen(workspace);
                fprintf(f, "%s%s (group %s)", i ? ", " : "", *rel ? rel + 1 : ".", gr ? gr->gr_name : "?");
        }
        if (g->found > GROUP_NAMES_MAX)
                fprintf(f, " and %u more", g->found - GROUP_NAMES_MAX);
        if (fclose(f) != 0)
                return -ENOMEM;
        if (asprintf(ret, "%u file%s in the workspace belong%s to another of your groups, which the sandbox "
                     "cannot map (only your own uid and gid are): %s will be read-only inside (writing fails "
                     "with EOVERFLOW, \"Value too large for defined data type\"); chgrp them to your own group "
                     "or use a task with Workspace=rw%s",
                     g->found, g->found == 1 ? "" : "s", g->found == 1 ? "s" : "", list,
                     g->truncated ? " (only the first entries were scanned)" : "") < 0)
                return -ENOMEM;
        return 0;
}
