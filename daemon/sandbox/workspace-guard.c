/* Guarded paths: what a sandbox could use to get code run by the host later
 * (git's hooks, config and indirections, editor tasks, direnv, agentd's own
 * configuration). Promote shows them and holds them back unless the user
 * passes include_hooks; a guarded directory holds back everything beneath it. */
#include "workspace-guard.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "macro.h"
#include "workspace-fs.h"
#include "workspace.h"

bool ws_name_is_guarded(const char *name, size_t n) {
        static const char *const names[] = {
                ".git", ".gitattributes", ".gitmodules", ".gitconfig", ".envrc", ".editorconfig", ".npmrc",
                ".pre-commit-config.yaml", ".vscode", ".idea", ".devcontainer", "agentd.conf",
        };
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (strlen(names[i]) == n && !memcmp(name, names[i], n))
                        return true;
        /* agentd's task policies. */
        return n > 5 && !memcmp(name + n - 5, ".task", 5);
}

bool ws_path_is_guarded(const char *rel) {
        for (const char *p = rel; *p;) {
                const char *e = strchrnul(p, '/');
                if (ws_name_is_guarded(p, (size_t) (e - p)))
                        return true;
                p = *e ? e + 1 : e;
        }
        return false;
}

bool ws_guard_prefix_match(char *const *prefixes, const char *rel) {
        size_t rl = strlen(rel);
        for (size_t i = 0; prefixes && prefixes[i]; i++) {
                const char *g = prefixes[i];
                size_t gl = strlen(g);
                if (gl == 0)
                        return true; /* the workspace itself */
                if (rl >= gl && !memcmp(rel, g, gl) && (rel[gl] == 0 || rel[gl] == '/'))
                        return true;
                if (gl > rl && !memcmp(rel, g, rl) && g[rl] == '/')
                        return true;
        }
        return false;
}

bool ws_dir_looks_like_gitdir(int dirfd) {
        struct stat st;
        bool head = fstatat(dirfd, "HEAD", &st, AT_SYMLINK_NOFOLLOW) == 0;
        bool objects = fstatat(dirfd, "objects", &st, AT_SYMLINK_NOFOLLOW) == 0;
        bool refs = fstatat(dirfd, "refs", &st, AT_SYMLINK_NOFOLLOW) == 0;
        bool commondir = fstatat(dirfd, "commondir", &st, AT_SYMLINK_NOFOLLOW) == 0;
        return commondir || (head && (objects || refs)) || (objects && refs);
}

/* Lexically normalised absolute path of p (relative to base when not absolute). */
static char *normalise(const char *base, const char *p) {
        _cleanup_free_ char *in = NULL;
        if (asprintf(&in, "%s/%s", p[0] == '/' ? "" : base, p) < 0)
                return NULL;
        char *out = malloc(strlen(in) + 2);
        if (!out)
                return NULL;
        size_t o = 0;
        for (const char *s = in; *s;) {
                while (*s == '/')
                        s++;
                const char *e = strchrnul(s, '/');
                size_t n = (size_t) (e - s);
                if (n == 0 || (n == 1 && s[0] == '.')) {
                } else if (n == 2 && s[0] == '.' && s[1] == '.') {
                        while (o > 0 && out[--o] != '/')
                                ;
                } else {
                        out[o++] = '/';
                        memcpy(out + o, s, n);
                        o += n;
                }
                s = e;
        }
        if (o == 0)
                out[o++] = '/';
        out[o] = 0;
        return out;
}

typedef struct guard_list {
        char **v;
        size_t n;
        const char *ws, *wsreal;
} guard_list;

/* Records abs (absolute, normalised) when it lies inside the workspace,
 * also when it names it through a symlink (its longest existing prefix is
 * resolved). */
static int guard_add_lexical(guard_list *g, const char *abs);
static int guard_add_abs(guard_list *g, const char *abs) {
        int r = guard_add_lexical(g, abs);
        if (r != 0)
                return r < 0 ? r : 0;
        _cleanup_free_ char *head = strdup(abs);
        if (!head)
                return -ENOMEM;
        for (char *slash = NULL;; *slash = 0) {
                _cleanup_free_ char *real = realpath(head[0] ? head : "/", NULL);
                if (real) {
                        _cleanup_free_ char *joined = NULL;
                        if (asprintf(&joined, "%s%s", streq(real, "/") ? "" : real, abs + strlen(head)) < 0)
                                return -ENOMEM;
                        r = guard_add_lexical(g, joined);
                        return r < 0 ? r : 0;
                }
                slash = strrchr(head, '/');
                if (!slash)
                        return 0;
        }
}

/* 1 when recorded, 0 when outside. */
static int guard_add_lexical(guard_list *g, const char *abs) {
        const char *roots[2] = { g->ws, g->wsreal };
        for (size_t i = 0; i < 2; i++) {
                if (!roots[i])
                        continue;
                size_t rl = strlen(roots[i]);
                if (strncmp(abs, roots[i], rl) != 0 || (abs[rl] != 0 && abs[rl] != '/'))
                        continue;
                const char *rel = abs[rl] ? abs + rl + 1 : "";
                char **nv = realloc(g->v, (g->n + 2) * sizeof(char *));
                if (!nv)
                        return -ENOMEM;
                g->v = nv;
                if (!(g->v[g->n] = strdup(rel)))
                        return -ENOMEM;
                g->v[++g->n] = NULL;
                return 1;
        }
        return 0;
}

static void trim(char **s) {
        while (isspace((unsigned char) **s))
                (*s)++;
        size_t n = strlen(*s);
        while (n > 0 && isspace((unsigned char) (*s)[n - 1]))
                (*s)[--n] = 0;
        if (n >= 2 && (*s)[0] == '"' && (*s)[n - 1] == '"') {
                (*s)[n - 1] = 0;
                (*s)++;
        }
}

/* core.hooksPath and core.fsmonitor (when it names a program) of one config file. */
static int guard_from_config(guard_list *g, const char *path, const char *worktree, const char *home) {
        _cleanup_free_ char *text = NULL;
        if (ws_read_small(AT_FDCWD, path, true, 1 << 20, &text) < 0)
                return 0;
        bool core = false;
        for (char *save = NULL, *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                trim(&line);
                if (line[0] == '[') {
                        char *end = strchr(line, ']');
                        core = end && end - line == 5 && !strncasecmp(line + 1, "core", 4);
                        continue;
                }
                char *eq = strchr(line, '=');
                if (!core || !eq || line[0] == '#' || line[0] == ';')
                        continue;
                *eq = 0;
                char *key = line, *val = eq + 1;
                /* A '#' or ';' outside double quotes starts a comment. */
                bool quoted = false;
                for (char *q = val; *q; q++) {
                        if (*q == '"')
                                quoted = !quoted;
                        else if (!quoted && (*q == '#' || *q == ';')) {
                                *q = 0;
                                break;
                        }
                }
                trim(&key);
                trim(&val);
                bool hooks = !strcasecmp(key, "hookspath"), fsmon = !strcasecmp(key, "fsmonitor");
                if ((!hooks && !fsmon) || !val[0])
                        continue;
                if (fsmon && (!strcasecmp(val, "true") || !strcasecmp(val, "false")))
                        continue;
                _cleanup_free_ char *expanded = NULL;
                if (val[0] == '~' && val[1] == '/' && home && asprintf(&expanded, "%s/%s", home, val + 2) < 0)
                        return -ENOMEM;
                _cleanup_free_ char *abs = normalise(worktree, expanded ? expanded : val);
                if (!abs)
                        return -ENOMEM;
                int r = guard_add_abs(g, abs);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* The repository that contains the workspace: its gitdir (following a .git
 * file's gitdir:) and the worktree root, or -ENOENT. */
static int find_gitdir(const char *start, char **ret_gitdir, char **ret_worktree) {
        _cleanup_free_ char *dir = strdup(start);
        if (!dir)
                return -ENOMEM;
        for (;;) {
                _cleanup_free_ char *dotgit = NULL;
                if (asprintf(&dotgit, "%s/.git", streq(dir, "/") ? "" : dir) < 0)
                        return -ENOMEM;
                struct stat st;
                /* git follows a .git symlink to its directory. */
                if (lstat(dotgit, &st) == 0 && S_ISLNK(st.st_mode) && stat(dotgit, &st) == 0 && S_ISDIR(st.st_mode)) {
                        char *real = realpath(dotgit, NULL);
                        if (!real)
                                return -errno;
                        *ret_gitdir = real;
                        *ret_worktree = TAKE_PTR(dir);
                        return 0;
                }
                if (lstat(dotgit, &st) == 0 && S_ISDIR(st.st_mode)) {
                        *ret_gitdir = TAKE_PTR(dotgit);
                        *ret_worktree = TAKE_PTR(dir);
                        return 0;
                }
                _cleanup_free_ char *text = NULL;
                if (lstat(dotgit, &st) == 0 && S_ISREG(st.st_mode) && ws_read_small(AT_FDCWD, dotgit, false, 4096, &text) == 0 &&
                    !strncmp(text, "gitdir:", 7)) {
                        char *v = text + 7;
                        trim(&v);
                        char *gd = normalise(dir, v);
                        if (!gd)
                                return -ENOMEM;
                        *ret_gitdir = gd;
                        *ret_worktree = TAKE_PTR(dir);
                        return 0;
                }
                char *slash = strrchr(dir, '/');
                if (!slash || streq(dir, "/"))
                        return -ENOENT;
                if (slash == dir)
                        slash[1] = 0;
                else
                        *slash = 0;
        }
}

int ws_guard_discover(const char *workspace, char ***ret_prefixes) {
        _cleanup_free_ char *wsreal = realpath(workspace, NULL);
        guard_list g = { .ws = workspace, .wsreal = wsreal };
        const char *home = getenv("HOME");
        _cleanup_free_ char *gitdir = NULL, *worktree = NULL, *common = NULL;
        int r = 0;
        if (find_gitdir(wsreal ? wsreal : workspace, &gitdir, &worktree) == 0) {
                r = guard_add_abs(&g, gitdir);
                _cleanup_free_ char *cd = NULL, *cdpath = NULL;
                if (r == 0 && asprintf(&cdpath, "%s/commondir", gitdir) >= 0 &&
                    ws_read_small(AT_FDCWD, cdpath, true, 4096, &cd) == 0) {
                        char *v = cd;
                        trim(&v);
                        common = normalise(gitdir, v);
                        if (common)
                                r = guard_add_abs(&g, common);
                }
                _cleanup_free_ char *cfg = NULL, *wtcfg = NULL;
                if (r == 0 && asprintf(&cfg, "%s/config", common ? common : gitdir) >= 0)
                        r = guard_from_config(&g, cfg, worktree, home);
                if (r == 0 && asprintf(&wtcfg, "%s/config.worktree", gitdir) >= 0)
                        r = guard_from_config(&g, wtcfg, worktree, home);
        }
        /* User and system configs apply to every repository. */
        const char *xdg = getenv("XDG_CONFIG_HOME");
        _cleanup_free_ char *user = NULL, *xdgcfg = NULL;
        if (r == 0 && home && asprintf(&user, "%s/.gitconfig", home) >= 0)
                r = guard_from_config(&g, user, worktree ? worktree : workspace, home);
        if (r == 0 && (xdg || home) &&
            asprintf(&xdgcfg, "%s%s/git/config", xdg ? xdg : home, xdg ? "" : "/.config") >= 0)
                r = guard_from_config(&g, xdgcfg, worktree ? worktree : workspace, home);
        if (r == 0)
                r = guard_from_config(&g, "/etc/gitconfig", worktree ? worktree : workspace, home);
        if (r < 0) {
                strv_free(g.v);
                return r;
        }
        if (!g.v && !(g.v = calloc(1, sizeof(char *))))
                return -ENOMEM;
        *ret_prefixes = g.v;
        return 0;
}
