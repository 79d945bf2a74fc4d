/* Workspace review on the overlay upper layer. Overlayfs (userxattr mode, as
 * an unprivileged user mounts it) records a deletion as a 0:0 character
 * device ("whiteout") and a directory that replaced a lower one with the
 * xattr user.overlay.opaque=y. Everything here walks by file descriptor
 * with an explicit stack (no recursion, no depth limit), never follows a
 * symlink, opens files O_NONBLOCK and checks they are what the walk saw,
 * and resolves host paths beneath the workspace with
 * openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS), so a sandbox that plants
 * symlinks or FIFOs cannot make promote write outside the workspace or stall. */
#include "workspace.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "macro.h"
#include "quote.h"
#include "workspace-fs.h"
#include "workspace-guard.h"

#define MAX_CHANGES 1000000
#define MAX_SYMLINK_HOPS 40
#define COPY_BUF (128 * 1024)

int64_t ws_now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

const char *ws_change_kind_to_string(ws_change_kind k) {
        switch (k) {
        case WS_ADDED: return "added";
        case WS_MODIFIED: return "modified";
        case WS_DELETED: return "deleted";
        }
        return "?";
}

static char type_of(mode_t m) {
        if (S_ISREG(m))
                return 'f';
        if (S_ISDIR(m))
                return 'd';
        if (S_ISLNK(m))
                return 'l';
        return 'o';
}

static bool is_whiteout(const struct stat *st) {
        return S_ISCHR(st->st_mode) && st->st_rdev == makedev(0, 0);
}

static bool is_opaque(int fd) {
        char v[4];
        ssize_t n = fgetxattr(fd, "user.overlay.opaque", v, sizeof(v));
        if (n == 1 && v[0] == 'y')
                return true;
        n = fgetxattr(fd, "trusted.overlay.opaque", v, sizeof(v));
        return n == 1 && v[0] == 'y';
}

static int changes_add(ws_changes *c, char *rel_owned, ws_change_kind k, char type, bool guarded) {
        if (!rel_owned)
                return -ENOMEM;
        if (c->n >= MAX_CHANGES) {
                free(rel_owned);
                return -E2BIG;
        }
        if (c->n == c->cap) {
                size_t ncap = c->cap ? c->cap * 2 : 64;
                ws_change *n = realloc(c->v, ncap * sizeof(*n));
                if (!n) {
                        free(rel_owned);
                        return -ENOMEM;
                }
                c->v = n;
                c->cap = ncap;
        }
        c->v[c->n++] = (ws_change) { .path = rel_owned, .change = k, .type = type, .guarded = guarded };
        return 0;
}

void ws_changes_free(ws_changes *c) {
        for (size_t i = 0; i < c->n; i++)
                free(c->v[i].path);
        free(c->v);
        strv_free(c->guard_prefixes);
        memset(c, 0, sizeof(*c));
}

/* ---- diff -------------------------------------------------------------- */

/* A directory of the upper layer waiting to be read. */
typedef struct pending_dir {
        char *rel;
        bool host_dir;         /* the host has a directory here too */
        bool guarded;          /* inherited from a guarded ancestor */
        bool report;           /* add a change entry for the directory itself */
        ws_change_kind kind;
} pending_dir;

typedef struct walk {
        int up, host;
        ws_budget *budget;
        unsigned ticks;
        ws_changes *out;
        pending_dir *stack;
        size_t n, cap;
        char *buf_a, *buf_b;
} walk;

bool ws_budget_spent(ws_budget *b) {
        return b && ws_now_ns() > atomic_load(&b->deadline_ns);
}

static int walk_tick(walk *w) {
        if ((++w->ticks & 255) == 0 && ws_budget_spent(w->budget))
                return -ETIMEDOUT;
        return 0;
}

static int walk_push(walk *w, char *rel_owned, bool host_dir, bool guarded, bool report, ws_change_kind kind) {
        if (!rel_owned)
                return -ENOMEM;
        if (w->n == w->cap) {
                size_t ncap = w->cap ? w->cap * 2 : 64;
                pending_dir *n = realloc(w->stack, ncap * sizeof(*n));
                if (!n) {
                        free(rel_owned);
                        return -ENOMEM;
                }
                w->stack = n;
                w->cap = ncap;
        }
        w->stack[w->n++] = (pending_dir) { rel_owned, host_dir, guarded, report, kind };
        return 0;
}

static bool guarded_entry(const walk *w, bool parent_guarded, const char *rel, const char *name) {
        return parent_guarded || ws_name_is_guarded(name, strlen(name)) ||
               ws_guard_prefix_match(w->out->guard_prefixes, rel);
}

/* Same content and mode? Files are opened without blocking and must be the
 * inodes the walk saw; anything else counts as changed. */
static bool same_content(walk *w, int dfa, const char *na, const struct stat *sa, int dfb, const char *nb,
                         const struct stat *sb) {
        if (S_ISLNK(sa->st_mode)) {
                char ta[4096], tb[4096];
                ssize_t la = readlinkat(dfa, na, ta, sizeof(ta));
                ssize_t lb = readlinkat(dfb, nb, tb, sizeof(tb));
                return la >= 0 && la == lb && memcmp(ta, tb, (size_t) la) == 0;
        }
        if (!S_ISREG(sa->st_mode))
                return false;
        if (sa->st_size != sb->st_size || (sa->st_mode & 07777) != (sb->st_mode & 07777))
                return false;
        _cleanup_close_ int a = ws_open_regular(dfa, na, sa);
        _cleanup_close_ int b = ws_open_regular(dfb, nb, sb);
        if (a < 0 || b < 0)
                return false;
        for (;;) {
                ssize_t ra = read(a, w->buf_a, COPY_BUF);
                if (ra <= 0)
                        return ra == 0 && read(b, w->buf_b, 1) == 0;
                size_t got = 0;
                while (got < (size_t) ra) {
                        ssize_t rb = read(b, w->buf_b + got, (size_t) ra - got);
                        if (rb <= 0)
                                return false;
                        got += (size_t) rb;
                }
                if (memcmp(w->buf_a, w->buf_b, (size_t) ra) != 0)
                        return false;
        }
}

/* Every entry under a host directory that the upper lacks is deleted (an opaque dir replaced them). */
static int host_only_deleted(walk *w, int hostfd, int upfd, const char *rel, bool guarded) {
        DIR *dir = ws_opendir_dup(hostfd);
        if (!dir)
                return -errno;
        struct dirent *de;
        int r = 0;
        while (r == 0 && (de = readdir(dir))) {
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                struct stat st, hs;
                if (fstatat(upfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0)
                        continue; /* the upper has its own version */
                if (fstatat(hostfd, de->d_name, &hs, AT_SYMLINK_NOFOLLOW) < 0)
                        continue;
                char *p = ws_join(rel, de->d_name);
                r = changes_add(w->out, p, WS_DELETED, type_of(hs.st_mode),
                                p && guarded_entry(w, guarded, p, de->d_name));
        }
        closedir(dir);
        return r;
}

/* Reads one upper directory: its entries become changes, its subdirectories pending work. */
static int walk_dir(walk *w, pending_dir *d) {
        _cleanup_close_ int upfd = ws_open_beneath(w->up, d->rel, O_RDONLY | O_DIRECTORY);
        if (upfd < 0)
                /* Replaced while we walked (only a running sandbox does that): its
                 * entry is already reported; the root must open. */
                return d->rel[0] && (upfd == -ENOENT || upfd == -ENOTDIR || upfd == -ELOOP) ? 0 : upfd;
        _cleanup_close_ int hostfd = -1;
        if (d->host_dir && w->host >= 0)
                hostfd = ws_open_beneath(w->host, d->rel, O_RDONLY | O_DIRECTORY);
        bool guarded = d->guarded || ws_dir_looks_like_gitdir(upfd) || (hostfd >= 0 && ws_dir_looks_like_gitdir(hostfd));
        int r = 0;
        if (d->report && (r = changes_add(w->out, strdup(d->rel), d->kind, 'd', guarded)) < 0)
                return r;
        if (hostfd >= 0 && is_opaque(upfd) && (r = host_only_deleted(w, hostfd, upfd, d->rel, guarded)) < 0)
                return r;

        DIR *dir = ws_opendir_dup(upfd);
        if (!dir)
                return -errno;
        struct dirent *de;
        while (r == 0 && (de = readdir(dir))) {
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                if ((r = walk_tick(w)) < 0)
                        break;
                struct stat us, hs;
                if (fstatat(upfd, de->d_name, &us, AT_SYMLINK_NOFOLLOW) < 0)
                        continue;
                bool host = hostfd >= 0 && fstatat(hostfd, de->d_name, &hs, AT_SYMLINK_NOFOLLOW) == 0;
                char *p = ws_join(d->rel, de->d_name);
                if (!p) {
                        r = -ENOMEM;
                        break;
                }
                bool g = guarded_entry(w, guarded, p, de->d_name);

                if (is_whiteout(&us)) {
                        if (host)
                                r = changes_add(w->out, p, WS_DELETED, type_of(hs.st_mode), g);
                        else
                                free(p);
                } else if (S_ISDIR(us.st_mode)) {
                        bool host_dir = host && S_ISDIR(hs.st_mode);
                        /* A new directory (or one replacing a file) is a change; everything inside is new. */
                        r = walk_push(w, p, host_dir, g, !host_dir, host ? WS_MODIFIED : WS_ADDED);
                } else if (!host)
                        r = changes_add(w->out, p, WS_ADDED, type_of(us.st_mode), g);
                else if (type_of(us.st_mode) != type_of(hs.st_mode) ||
                         !same_content(w, upfd, de->d_name, &us, hostfd, de->d_name, &hs))
                        r = changes_add(w->out, p, WS_MODIFIED, type_of(us.st_mode), g);
                else
                        free(p);
        }
        closedir(dir);
        return r;
}

static int cmp_change(const void *a, const void *b) {
        return strcmp(((const ws_change *) a)->path, ((const ws_change *) b)->path);
}

int workspace_diff(const char *workspace, const char *upper, ws_budget *budget, ws_changes *ret, agentd_error *err) {
        ws_changes c = { 0 };
        _cleanup_close_ int up = open(upper, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (up < 0) {
                return error_set(err, ERROR_INTERNAL, errno, "the sandbox's change layer %s: %s", upper, strerror(errno));
        }
        /* The host tree may be gone: then everything is "added". */
        _cleanup_close_ int host = open(workspace, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        int r = ws_guard_discover(workspace, &c.guard_prefixes);
        if (r < 0) {
                return error_set(err, ERROR_INTERNAL, r, "reading the workspace's git configuration: %s", strerror(-r));
        }
        walk w = { .up = up, .host = host, .budget = budget, .out = &c };
        w.buf_a = malloc(COPY_BUF);
        w.buf_b = malloc(COPY_BUF);
        r = w.buf_a && w.buf_b ? walk_push(&w, strdup(""), host >= 0, false, false, WS_ADDED) : -ENOMEM;
        while (r == 0 && w.n > 0) {
                pending_dir d = w.stack[--w.n];
                r = walk_dir(&w, &d);
                free(d.rel);
        }
        while (w.n > 0)
                free(w.stack[--w.n].rel);
        free(w.stack);
        free(w.buf_a);
        free(w.buf_b);
        if (r < 0) {
                if (r == -ETIMEDOUT)
                        error_set(err, ERROR_LIMIT_EXCEEDED, r, "reading the change layer took longer than the time limit");
                else
                        error_set(err, ERROR_INTERNAL, r, "reading the change layer: %s", strerror(-r));
                ws_changes_free(&c);
                return r;
        }
        if (c.n > 1)
                qsort(c.v, c.n, sizeof(ws_change), cmp_change);
        *ret = c;
        return 0;
}

/* ---- tree helpers ------------------------------------------------------ */

typedef struct tree_frame {
        char *rel;
        bool expanded;
} tree_frame;

typedef struct tree_stack {
        tree_frame *v;
        size_t n, cap;
} tree_stack;

static int tree_push(tree_stack *s, char *rel_owned) {
        if (!rel_owned)
                return -ENOMEM;
        if (s->n == s->cap) {
                size_t ncap = s->cap ? s->cap * 2 : 16;
                tree_frame *n = realloc(s->v, ncap * sizeof(*n));
                if (!n) {
                        free(rel_owned);
                        return -ENOMEM;
                }
                s->v = n;
                s->cap = ncap;
        }
        s->v[s->n++] = (tree_frame) { rel_owned, false };
        return 0;
}

static void tree_stack_free(tree_stack *s) {
        while (s->n > 0)
                free(s->v[--s->n].rel);
        free(s->v);
}

static int unlink_beneath(int rootfd, const char *rel, int flags) {
        const char *name;
        _cleanup_close_ int p = ws_open_parent(rootfd, rel, &name);
        if (p < 0)
                return p;
        return unlinkat(p, name, flags) < 0 && errno != ENOENT ? -errno : 0;
}

/* Removes dirfd/name and everything beneath it, children first, without recursion. */
static int remove_at(int dirfd, const char *name) {
        struct stat st;
        if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return errno == ENOENT ? 0 : -errno;
        if (!S_ISDIR(st.st_mode))
                return unlinkat(dirfd, name, 0) < 0 && errno != ENOENT ? -errno : 0;
        tree_stack s = { 0 };
        int r = tree_push(&s, strdup(name)), first_error = 0;
        while (r == 0 && s.n > 0) {
                size_t top = s.n - 1;
                if (s.v[top].expanded) {
                        int k = unlink_beneath(dirfd, s.v[top].rel, AT_REMOVEDIR);
                        if (k < 0 && first_error == 0)
                                first_error = k;
                        free(s.v[--s.n].rel);
                        continue;
                }
                s.v[top].expanded = true;
                struct stat ds;
                /* The overlay's work dir holds a mode-000 directory: make it listable. */
                if (ws_stat_beneath(dirfd, s.v[top].rel, &ds) == 0 && (ds.st_mode & 0700) != 0700) {
                        const char *n;
                        _cleanup_close_ int p = ws_open_parent(dirfd, s.v[top].rel, &n);
                        if (p >= 0)
                                (void) fchmodat(p, n, (ds.st_mode & 07777) | 0700, 0);
                }
                _cleanup_close_ int fd = ws_open_beneath(dirfd, s.v[top].rel, O_RDONLY | O_DIRECTORY);
                if (fd < 0) {
                        if (first_error == 0 && fd != -ENOENT)
                                first_error = fd;
                        continue;
                }
                DIR *d = ws_opendir_dup(fd);
                if (!d) {
                        if (first_error == 0)
                                first_error = -errno;
                        continue;
                }
                struct dirent *de;
                while (r == 0 && (de = readdir(d))) {
                        if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                                continue;
                        struct stat es;
                        if (fstatat(fd, de->d_name, &es, AT_SYMLINK_NOFOLLOW) < 0)
                                continue;
                        if (S_ISDIR(es.st_mode))
                                r = tree_push(&s, ws_join(s.v[top].rel, de->d_name));
                        else if (unlinkat(fd, de->d_name, 0) < 0 && errno != ENOENT && first_error == 0)
                                first_error = -errno;
                }
                closedir(d);
        }
        tree_stack_free(&s);
        return r < 0 ? r : first_error;
}

int workspace_remove_tree(const char *path) {
        _cleanup_free_ char *copy = strdup(path);
        if (!copy)
                return -ENOMEM;
        char *slash = strrchr(copy, '/');
        if (!slash || slash == copy)
                return -EINVAL;
        *slash = 0;
        _cleanup_close_ int parent = open(copy, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (parent < 0)
                return errno == ENOENT ? 0 : -errno;
        return remove_at(parent, slash + 1);
}

static int64_t ctime_ns(const struct stat *st) {
        return (int64_t) st->st_ctim.tv_sec * 1000000000 + st->st_ctim.tv_nsec;
}

/* Any entry in the subtree dirfd/name changed on the host after the sandbox started? */
static bool subtree_changed_since(int dirfd, const char *name, int64_t since) {
        struct stat st;
        if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return false;
        if (ctime_ns(&st) > since)
                return true;
        if (!S_ISDIR(st.st_mode))
                return false;
        tree_stack s = { 0 };
        bool changed = tree_push(&s, strdup(name)) < 0;
        while (!changed && s.n > 0) {
                _cleanup_free_ char *rel = s.v[--s.n].rel;
                _cleanup_close_ int fd = ws_open_beneath(dirfd, rel, O_RDONLY | O_DIRECTORY);
                DIR *d = fd >= 0 ? ws_opendir_dup(fd) : NULL;
                if (!d) {
                        changed = true;
                        break;
                }
                struct dirent *de;
                while (!changed && (de = readdir(d))) {
                        if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                                continue;
                        struct stat es;
                        if (fstatat(fd, de->d_name, &es, AT_SYMLINK_NOFOLLOW) < 0)
                                continue;
                        if (ctime_ns(&es) > since)
                                changed = true;
                        else if (S_ISDIR(es.st_mode))
                                changed = tree_push(&s, ws_join(rel, de->d_name)) < 0;
                }
                closedir(d);
        }
        tree_stack_free(&s);
        return changed;
}

/* ---- promote ----------------------------------------------------------- */

static int items_add(ws_items *l, const char *path, const char *detail) {
        if (l->n == l->cap) {
                size_t ncap = l->cap ? l->cap * 2 : 16;
                ws_item *n = realloc(l->v, ncap * sizeof(*n));
                if (!n)
                        return -ENOMEM;
                l->v = n;
                l->cap = ncap;
        }
        l->v[l->n].path = strdup(path);
        l->v[l->n].detail = strdup(detail ? detail : "");
        if (!l->v[l->n].path || !l->v[l->n].detail) {
                free(l->v[l->n].path);
                free(l->v[l->n].detail);
                return -ENOMEM;
        }
        l->n++;
        return 0;
}

static void items_free(ws_items *l) {
        for (size_t i = 0; i < l->n; i++) {
                free(l->v[i].path);
                free(l->v[i].detail);
        }
        free(l->v);
        memset(l, 0, sizeof(*l));
}

void ws_promote_result_free(ws_promote_result *r) {
        items_free(&r->promoted);
        items_free(&r->conflicts);
        items_free(&r->guarded);
}

static bool selected(const char *path, char *const *paths) {
        if (!paths)
                return true;
        for (size_t i = 0; paths[i]; i++) {
                const char *s = paths[i];
                while (s[0] == '.' && s[1] == '/')
                        s += 2;
                size_t n = strlen(s);
                while (n > 1 && s[n - 1] == '/')
                        n--;
                if (strncmp(path, s, n) == 0 && (path[n] == 0 || path[n] == '/'))
                        return true;
        }
        return false;
}

/* The sandbox's mode bits, without setuid/setgid/sticky and without group or
 * other write permission the host file did not already have. */
static mode_t promoted_mode(mode_t upper, const struct stat *host) {
        mode_t allowed = host ? host->st_mode & 022 : 0;
        return (upper & 0755) | (upper & allowed);
}

/* A file written to a temporary name, renamed into place after one syncfs()
 * for the whole batch instead of one fsync per file. */
typedef struct pending_file {
        int parent;
        char tmp[64];
        char *name, *path;
        char sha[65];
} pending_file;

#define PENDING_MAX 256

typedef struct promote_ctx {
        const char *workspace;
        char *wsreal;
        int wsfd, upfd;
        int64_t since;
        bool include_hooks;
        const ws_changes *c;
        const bool *applied;   /* per change: selected and not held back */
        char **guard_prefixes;
        char *buf;
        ws_promote_result *res;
        pending_file pending[PENDING_MAX];
        size_t n_pending;
} promote_ctx;

static bool held_back(const promote_ctx *p, const char *rel) {
        return !p->include_hooks && (ws_path_is_guarded(rel) || ws_guard_prefix_match(p->guard_prefixes, rel));
}

/* Opens the parent of rel beneath the workspace without symlinks; with
 * create, makes missing directories (mode from the upper layer) one by one,
 * each beneath the last, but never a guarded one that is held back. */
static int open_parent(promote_ctx *p, const char *rel, bool create, const char **ret_name) {
        const char *slash = strrchr(rel, '/');
        int fd = ws_open_parent(p->wsfd, rel, ret_name);
        if (fd != -ENOENT || !create || !slash)
                return fd;
        _cleanup_free_ char *parent = strndup(rel, (size_t) (slash - rel));
        if (!parent)
                return -ENOMEM;
        int cur = fcntl(p->wsfd, F_DUPFD_CLOEXEC, 3);
        for (char *e = parent; cur >= 0;) {
                e = strchrnul(e, '/');
                char saved = *e;
                *e = 0;
                const char *comp = strrchr(parent, '/');
                comp = comp ? comp + 1 : parent;
                int next = ws_openat2_beneath(cur, comp, O_RDONLY | O_DIRECTORY, 0);
                if (next == -ENOENT) {
                        struct stat ust;
                        mode_t mode = 0755;
                        if (held_back(p, parent)) {
                                close(cur);
                                return -EPERM;
                        }
                        if (ws_stat_beneath(p->upfd, parent, &ust) == 0 && S_ISDIR(ust.st_mode))
                                mode = promoted_mode(ust.st_mode, NULL);
                        if (mkdirat(cur, comp, mode) < 0 && errno != EEXIST) {
                                int r = -errno;
                                close(cur);
                                return r;
                        }
                        next = ws_openat2_beneath(cur, comp, O_RDONLY | O_DIRECTORY, 0);
                        if (next >= 0)
                                (void) fchmod(next, mode);
                }
                close(cur);
                cur = next;
                if (!saved)
                        break;
                *e++ = saved;
        }
        return cur;
}

/* ---- symlinks in the final tree ----

 * A promoted symlink must resolve inside the workspace in the tree as it
 * will be after this promote: the host tree with every applied change (the
 * upper layer's version of a changed path, nothing for a deletion). The
 * target is resolved component by component like the kernel does, following
 * every symlink it meets (the host's and the promoted ones), with ".." taken
 * after resolution; a ".." above the workspace, an absolute path outside it
 * or too many links refuse the link. Missing components are taken lexically. */

static ssize_t find_change(const ws_changes *c, const char *rel) {
        size_t lo = 0, hi = c->n;
        while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                int k = strcmp(c->v[mid].path, rel);
                if (k == 0)
                        return (ssize_t) mid;
                if (k < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return -1;
}

/* Type of rel in the final tree ('d', 'l', 'f', 'o', or 0 when absent); for 'l' its target. */
static char final_lookup(const promote_ctx *p, const char *rel, char **ret_target) {
        ssize_t i = find_change(p->c, rel);
        int root = p->wsfd;
        if (i >= 0 && p->applied[i]) {
                if (p->c->v[i].change == WS_DELETED)
                        return 0;
                root = p->upfd;
        }
        struct stat st;
        if (ws_stat_beneath(root, rel, &st) < 0)
                return 0;
        char t = type_of(st.st_mode);
        if (t == 'l' && ws_readlink_beneath(root, rel, ret_target) < 0)
                return 'o';
        return t;
}

/* Strips the workspace from an absolute target; NULL when it lies outside. */
static const char *inside_abs(const promote_ctx *p, const char *abs) {
        const char *roots[2] = { p->workspace, p->wsreal };
        for (size_t i = 0; i < 2; i++) {
                if (!roots[i])
                        continue;
                size_t n = strlen(roots[i]);
                while (n > 1 && roots[i][n - 1] == '/')
                        n--;
                if (!strncmp(abs, roots[i], n) && (abs[n] == 0 || abs[n] == '/'))
                        return abs + n;
        }
        return NULL;
}

static bool symlink_resolves_inside(const promote_ctx *p, const char *link_rel, const char *target) {
        const char *slash = strrchr(link_rel, '/');
        _cleanup_free_ char *cur = strndup(link_rel, slash ? (size_t) (slash - link_rel) : 0);
        _cleanup_free_ char *rest = NULL;
        if (target[0] == '/') {
                const char *in = inside_abs(p, target);
                if (!in)
                        return false;
                cur[0] = 0;
                rest = strdup(in);
        } else
                rest = strdup(target);
        if (!cur || !rest)
                return false;
        unsigned hops = 0;
        bool missing = false;
        const char *s = rest;
        while (*s) {
                while (*s == '/')
                        s++;
                const char *e = strchrnul(s, '/');
                size_t n = (size_t) (e - s);
                if (n == 0 || (n == 1 && s[0] == '.')) {
                        s = e;
                        continue;
                }
                if (n == 2 && s[0] == '.' && s[1] == '.') {
                        if (!cur[0])
                                return false; /* above the workspace */
                        char *up = strrchr(cur, '/');
                        if (up)
                                *up = 0;
                        else
                                cur[0] = 0;
                        s = e;
                        continue;
                }
                _cleanup_free_ char *comp = strndup(s, n);
                char *cand = comp ? ws_join(cur, comp) : NULL;
                if (!cand)
                        return false;
                s = e;
                char *t = NULL;
                char type = missing ? 0 : final_lookup(p, cand, &t);
                if (type == 'l') {
                        free(cand);
                        if (++hops > MAX_SYMLINK_HOPS) {
                                free(t);
                                return false;
                        }
                        char *nrest = NULL;
                        const char *base = t;
                        if (t[0] == '/') {
                                base = inside_abs(p, t);
                                cur[0] = 0;
                        }
                        if (!base || asprintf(&nrest, "%s%s", base, s) < 0) {
                                free(t);
                                return false;
                        }
                        free(t);
                        free(rest);
                        rest = nrest;
                        s = rest;
                        continue;
                }
                free(t);
                /* A file with more to come fails with ENOTDIR: like a missing one, it cannot lead out. */
                if (type != 'd')
                        missing = true;
                free(cur);
                cur = cand;
        }
        return true;
}

static void hex(const unsigned char *d, size_t n, char *out) {
        for (size_t i = 0; i < n; i++)
                sprintf(out + 2 * i, "%02x", d[i]);
}

/* Copies an upper file to a temporary name beside its destination and
 * hashes it; flush_pending() makes it durable and renames it into place. */
static int write_temp(promote_ctx *p, int parent, int src, mode_t mode, char tmp[64], char sha[65]) {
        uint64_t rnd;
        if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
                rnd = (uint64_t) getpid();
        snprintf(tmp, 64, ".agentd-promote.%016llx", (unsigned long long) rnd);
        int out = openat(parent, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (out < 0)
                return -errno;
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
                EVP_MD_CTX_free(md);
                close(out);
                unlinkat(parent, tmp, 0);
                return -ENOMEM;
        }
        int r = 0;
        for (;;) {
                ssize_t n = read(src, p->buf, COPY_BUF);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        break;
                }
                if (n == 0)
                        break;
                EVP_DigestUpdate(md, p->buf, (size_t) n);
                for (ssize_t off = 0; off < n;) {
                        ssize_t w = write(out, p->buf + off, (size_t) (n - off));
                        if (w < 0) {
                                r = -errno;
                                break;
                        }
                        off += w;
                }
                if (r < 0)
                        break;
        }
        unsigned char dg[32];
        unsigned int dl = 0;
        EVP_DigestFinal_ex(md, dg, &dl);
        EVP_MD_CTX_free(md);
        hex(dg, 32, sha);
        if (r == 0 && fchmod(out, mode) < 0)
                r = -errno;
        close(out);
        if (r < 0)
                unlinkat(parent, tmp, 0);
        return r;
}

/* One syncfs() for the batch, then every rename: each file is either the old
 * content or the complete new one, also after a crash. */
static int flush_pending(promote_ctx *p) {
        if (p->n_pending == 0)
                return 0;
        int sync_r = syncfs(p->wsfd) < 0 ? -errno : 0;
        int r = 0;
        for (size_t i = 0; i < p->n_pending; i++) {
                pending_file *f = &p->pending[i];
                int k = sync_r;
                if (k == 0 && renameat(f->parent, f->tmp, f->parent, f->name) < 0)
                        k = -errno;
                if (k < 0) {
                        (void) unlinkat(f->parent, f->tmp, 0);
                        char why[200];
                        snprintf(why, sizeof(why), "cannot write: %s", strerror(-k));
                        if (r == 0)
                                r = items_add(&p->res->conflicts, f->path, why);
                } else if (r == 0)
                        r = items_add(&p->res->promoted, f->path, f->sha);
                safe_close(f->parent);
                free(f->name);
                free(f->path);
        }
        p->n_pending = 0;
        return r;
}

static int conflict(promote_ctx *p, const char *path, const char *fmt, ...) _printf_(3, 4);
static int conflict(promote_ctx *p, const char *path, const char *fmt, ...) {
        char why[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, sizeof(why), fmt, ap);
        va_end(ap);
        return items_add(&p->res->conflicts, path, why);
}

/* The parent directory of c->path on the host could not be opened (parent_err). */
static int promote_no_parent(promote_ctx *p, const ws_change *c, int parent_err) {
        if (c->change == WS_DELETED && parent_err == -ENOENT)
                return items_add(&p->res->promoted, c->path, ""); /* already gone */
        if (parent_err == -EPERM)
                return conflict(p, c->path, "its parent directory is guarded and held back: pass include_hooks");
        if (parent_err == -ELOOP || parent_err == -EXDEV)
                return conflict(p, c->path, "a parent directory on the host is a symlink: not followed");
        return conflict(p, c->path, "cannot open the parent directory on the host: %s", strerror(-parent_err));
}

/* Deleted in the sandbox: deleted on the host unless it changed there meanwhile. */
static int promote_deletion(promote_ctx *p, const ws_change *c, int parent, const char *name, bool host) {
        if (!host)
                return items_add(&p->res->promoted, c->path, "");
        if (subtree_changed_since(parent, name, p->since))
                return conflict(p, c->path, "changed on the host since the sandbox started");
        int r = remove_at(parent, name);
        if (r < 0)
                return conflict(p, c->path, "cannot delete: %s", strerror(-r));
        return items_add(&p->res->promoted, c->path, "");
}

/* A directory: made on the host (replacing a file there) with the promoted mode. */
static int promote_directory(promote_ctx *p, const ws_change *c, int parent, const char *name, const struct stat *hs,
                             const struct stat *us) {
        bool host = hs != NULL;
        if (!S_ISDIR(us->st_mode))
                return conflict(p, c->path, "changed type in the change layer");
        if (host && !S_ISDIR(hs->st_mode)) {
                if (unlinkat(parent, name, 0) < 0)
                        return conflict(p, c->path, "cannot replace the host file with a directory");
        }
        mode_t mode = promoted_mode(us->st_mode, hs);
        if (!(host && S_ISDIR(hs->st_mode))) {
                if (mkdirat(parent, name, mode) < 0 && errno != EEXIST)
                        return conflict(p, c->path, "mkdir: %s", strerror(errno));
                (void) fchmodat(parent, name, mode, AT_SYMLINK_NOFOLLOW);
        }
        return items_add(&p->res->promoted, c->path, "");
}

/* Reads and checks the symlink in the change layer into *ret_target, before
 * anything on the host is touched: it must resolve inside the workspace.
 * 1 to go on; 0 when recorded as a conflict; -ENOMEM. */
static int promote_read_symlink(promote_ctx *p, const ws_change *c, const struct stat *us, char **ret_target) {
        if (!S_ISLNK(us->st_mode) || ws_readlink_beneath(p->upfd, c->path, ret_target) < 0)
                return conflict(p, c->path, "cannot read the symlink");
        if (!symlink_resolves_inside(p, c->path, *ret_target)) {
                _cleanup_free_ char *q = quote_path(*ret_target);
                return conflict(p, c->path, "symlink resolves outside the workspace (-> %.300s): not promoted",
                                q ? q : "?");
        }
        return 1;
}

/* Creates the symlink under a temporary name and renames it into place. */
static int promote_symlink(promote_ctx *p, const ws_change *c, int parent, const char *name, const char *target) {
        char tmp[64];
        uint64_t rnd;
        if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
                rnd = (uint64_t) getpid();
        snprintf(tmp, sizeof(tmp), ".agentd-promote.l%016llx", (unsigned long long) rnd);
        if (symlinkat(target, parent, tmp) < 0 || renameat(parent, tmp, parent, name) < 0) {
                int e = errno;
                (void) unlinkat(parent, tmp, 0);
                return conflict(p, c->path, "cannot create the symlink: %s", strerror(e));
        }
        return items_add(&p->res->promoted, c->path, "");
}

/* A regular file: written to a temporary file beside its place and queued;
 * flush_pending() renames the batch into place. Takes *parent on success. */
static int promote_file(promote_ctx *p, const ws_change *c, int *parent, const char *name, int uparent, const char *uname,
                        const struct stat *hs, const struct stat *us) {
        _cleanup_close_ int src = ws_open_regular(uparent, uname, us);
        if (src < 0)
                return conflict(p, c->path, src == -ESTALE ? "replaced in the change layer while promoting: not promoted"
                                                           : "cannot open it in the change layer");
        if (p->n_pending == PENDING_MAX) {
                int r = flush_pending(p);
                if (r < 0)
                        return r;
        }
        pending_file *f = &p->pending[p->n_pending];
        int r = write_temp(p, *parent, src, promoted_mode(us->st_mode, hs && S_ISREG(hs->st_mode) ? hs : NULL), f->tmp, f->sha);
        if (r < 0)
                return conflict(p, c->path, "cannot write: %s", strerror(-r));
        f->name = strdup(name);
        f->path = strdup(c->path);
        if (!f->name || !f->path) {
                (void) unlinkat(*parent, f->tmp, 0);
                free(f->name);
                free(f->path);
                return -ENOMEM;
        }
        f->parent = TAKE_FD(*parent);
        p->n_pending++;
        return 0;
}

static int promote_one(promote_ctx *p, const ws_change *c) {
        const char *name;
        _cleanup_close_ int parent = open_parent(p, c->path, c->change != WS_DELETED, &name);
        if (parent < 0)
                return promote_no_parent(p, c, parent);
        struct stat hs;
        bool host = fstatat(parent, name, &hs, AT_SYMLINK_NOFOLLOW) == 0;

        if (c->change == WS_DELETED)
                return promote_deletion(p, c, parent, name, host);

        if (host && ctime_ns(&hs) > p->since && !(S_ISDIR(hs.st_mode) && c->type == 'd'))
                return conflict(p, c->path, c->change == WS_ADDED ? "created on the host since the sandbox started"
                                                                  : "changed on the host since the sandbox started");
        const char *uname;
        _cleanup_close_ int uparent = ws_open_parent(p->upfd, c->path, &uname);
        struct stat us;
        if (uparent < 0 || fstatat(uparent, uname, &us, AT_SYMLINK_NOFOLLOW) < 0)
                return conflict(p, c->path, "gone from the change layer");

        if (c->type == 'd')
                return promote_directory(p, c, parent, name, host ? &hs : NULL, &us);
        _cleanup_free_ char *target = NULL;
        if (c->type == 'l') {
                int r = promote_read_symlink(p, c, &us, &target);
                if (r <= 0)
                        return r;
        } else if (c->type != 'f' || !S_ISREG(us.st_mode))
                return conflict(p, c->path, "not a regular file, directory or symlink: not promoted");
        if (host && S_ISDIR(hs.st_mode)) {
                if (subtree_changed_since(parent, name, p->since))
                        return conflict(p, c->path, "changed on the host since the sandbox started");
                int r = remove_at(parent, name);
                if (r < 0)
                        return conflict(p, c->path, "cannot replace the host directory");
        }
        if (c->type == 'l')
                return promote_symlink(p, c, parent, name, target);
        return promote_file(p, c, &parent, name, uparent, uname, host ? &hs : NULL, &us);
}

int workspace_promote(const char *workspace, const char *upper, int64_t started_at_ns, char *const *paths,
                      bool include_hooks, ws_budget *budget, ws_promote_result *ret, agentd_error *err) {
        ws_changes c = { 0 };
        ws_promote_result res = { 0 };
        int r = workspace_diff(workspace, upper, budget, &c, err);
        if (r < 0)
                return r;
        _cleanup_close_ int wsfd = open(workspace, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        _cleanup_close_ int upfd = open(upper, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (wsfd < 0 || upfd < 0) {
                r = error_set(err, ERROR_INTERNAL, errno, "cannot open %s: %s", wsfd < 0 ? workspace : upper, strerror(errno));
                ws_changes_free(&c);
                return r;
        }
        _cleanup_free_ bool *applied = calloc(c.n ? c.n : 1, sizeof(bool));
        _cleanup_free_ promote_ctx *p = calloc(1, sizeof(promote_ctx));
        _cleanup_free_ char *buf = malloc(COPY_BUF);
        if (!applied || !p || !buf) {
                ws_changes_free(&c);
                return -ENOMEM;
        }
        *p = (promote_ctx) {
                .workspace = workspace, .wsreal = realpath(workspace, NULL), .wsfd = wsfd, .upfd = upfd,
                .since = started_at_ns, .include_hooks = include_hooks, .c = &c, .applied = applied,
                .guard_prefixes = c.guard_prefixes, .buf = buf, .res = &res,
        };
        for (size_t k = 0; k < c.n; k++)
                applied[k] = selected(c.v[k].path, paths) && !(c.v[k].guarded && !include_hooks);
        /* Creations parents-first, then deletions children-first. */
        bool late = false;
        for (int pass = 0; pass < 2 && r >= 0; pass++) {
                for (size_t k = 0; k < c.n && r >= 0; k++) {
                        size_t i = pass == 0 ? k : c.n - 1 - k;
                        const ws_change *ch = &c.v[i];
                        if ((ch->change == WS_DELETED) != (pass == 1) || !selected(ch->path, paths))
                                continue;
                        if (!applied[i])
                                r = items_add(&res.guarded, ch->path, ws_change_kind_to_string(ch->change));
                        else if (late || ws_budget_spent(budget)) {
                                late = true;
                                r = conflict(p, ch->path, "not applied: the promote reached its time limit");
                        } else
                                r = promote_one(p, ch);
                }
                /* Files land before the deletion pass, and before we answer. */
                int k = flush_pending(p);
                if (r >= 0)
                        r = k;
        }
        free(p->wsreal);
        ws_changes_free(&c);
        if (r < 0) {
                error_set(err, ERROR_INTERNAL, r, "promote: %s", strerror(-r));
                ws_promote_result_free(&res);
                return r;
        }
        *ret = res;
        return 0;
}
