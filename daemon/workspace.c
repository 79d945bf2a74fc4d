/* Workspace review on the overlay upper layer. Overlayfs (userxattr mode, as
 * an unprivileged user mounts it) records a deletion as a 0:0 character
 * device ("whiteout") and a directory that replaced a lower one with the
 * xattr user.overlay.opaque=y. Everything here walks by file descriptor,
 * never follows a symlink, and resolves host paths beneath the workspace
 * with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS), so a sandbox that
 * plants symlinks cannot make promote write outside the workspace. */
#include "workspace.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "macro.h"

#define MAX_CHANGES 1000000

static int openat2_beneath(int dirfd, const char *path, int flags, mode_t mode) {
        struct open_how how = {
                .flags = (uint64_t) (flags | O_CLOEXEC | O_NOFOLLOW),
                .mode = mode,
                .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
        };
        int fd = (int) syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
        return fd < 0 ? -errno : fd;
}

const char *ws_change_kind_to_string(ws_change_kind k) {
        switch (k) {
        case WS_ADDED: return "added";
        case WS_MODIFIED: return "modified";
        case WS_DELETED: return "deleted";
        }
        return "?";
}

/* Files the host executes or obeys later: a sandbox could persist through them. */
bool ws_path_is_guarded(const char *rel) {
        const char *base = strrchr(rel, '/');
        base = base ? base + 1 : rel;
        static const char *const names[] = { ".gitattributes", ".gitmodules", ".envrc", ".git", ".gitconfig",
                                             ".editorconfig", ".npmrc", ".pre-commit-config.yaml" };
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (streq(base, names[i]))
                        return true;
        /* Any component .vscode/.idea/.devcontainer, or .git/{hooks,config,info} anywhere. */
        const char *p = rel;
        while (*p) {
                const char *e = strchrnul(p, '/');
                size_t n = (size_t) (e - p);
                if ((n == 7 && !strncmp(p, ".vscode", 7)) || (n == 5 && !strncmp(p, ".idea", 5)) ||
                    (n == 13 && !strncmp(p, ".devcontainer", 13)))
                        return true;
                if (n == 4 && !strncmp(p, ".git", 4) && *e == '/') {
                        const char *q = e + 1;
                        if (!strncmp(q, "hooks", 5) && (q[5] == '/' || q[5] == 0))
                                return true;
                        if (!strncmp(q, "config", 6) && (q[6] == '/' || q[6] == 0))
                                return true;
                        if (!strncmp(q, "info", 4) && (q[4] == '/' || q[4] == 0))
                                return true;
                }
                p = *e ? e + 1 : e;
        }
        return false;
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

static int changes_add(ws_changes *c, const char *rel, ws_change_kind k, char type) {
        if (c->n >= MAX_CHANGES)
                return -E2BIG;
        if (c->n == c->cap) {
                size_t ncap = c->cap ? c->cap * 2 : 64;
                ws_change *n = realloc(c->v, ncap * sizeof(*n));
                if (!n)
                        return -ENOMEM;
                c->v = n;
                c->cap = ncap;
        }
        char *p = strdup(rel);
        if (!p)
                return -ENOMEM;
        c->v[c->n++] = (ws_change) { .path = p, .change = k, .type = type, .guarded = ws_path_is_guarded(rel) };
        return 0;
}

void ws_changes_free(ws_changes *c) {
        for (size_t i = 0; i < c->n; i++)
                free(c->v[i].path);
        free(c->v);
        memset(c, 0, sizeof(*c));
}

static int same_content(int dfa, const char *na, int dfb, const char *nb, const struct stat *sa, const struct stat *sb) {
        if (S_ISLNK(sa->st_mode)) {
                char ta[4096], tb[4096];
                ssize_t la = readlinkat(dfa, na, ta, sizeof(ta));
                ssize_t lb = readlinkat(dfb, nb, tb, sizeof(tb));
                return la >= 0 && la == lb && memcmp(ta, tb, (size_t) la) == 0;
        }
        if (!S_ISREG(sa->st_mode))
                return 0;
        if (sa->st_size != sb->st_size || (sa->st_mode & 07777) != (sb->st_mode & 07777))
                return 0;
        /* A running sandbox may have made it a FIFO since the stat: opening
         * never waits, and only regular files are read. */
        _cleanup_close_ int a = openat(dfa, na, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
        _cleanup_close_ int b = openat(dfb, nb, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
        struct stat fa, fb;
        if (a < 0 || b < 0 || fstat(a, &fa) < 0 || fstat(b, &fb) < 0 || !S_ISREG(fa.st_mode) || !S_ISREG(fb.st_mode))
                return 0;
        static _Thread_local char ba[65536], bb[65536]; /* the report walks the layer in a worker thread */
        for (;;) {
                ssize_t ra = read(a, ba, sizeof(ba));
                if (ra <= 0)
                        return ra == 0;
                size_t got = 0;
                while (got < (size_t) ra) {
                        ssize_t rb = read(b, bb + got, (size_t) ra - got);
                        if (rb <= 0)
                                return 0;
                        got += (size_t) rb;
                }
                if (memcmp(ba, bb, (size_t) ra) != 0)
                        return 0;
        }
}

static int join(char *out, size_t n, const char *rel, const char *name) {
        int r = rel[0] ? snprintf(out, n, "%s/%s", rel, name) : snprintf(out, n, "%s", name);
        return r < 0 || (size_t) r >= n ? -ENAMETOOLONG : 0;
}

/* A DIR stream on a copy of dirfd, so the caller keeps its fd. */
static DIR *opendir_dup(int dirfd) {
        int d = fcntl(dirfd, F_DUPFD_CLOEXEC, 3);
        if (d < 0)
                return NULL;
        DIR *dir = fdopendir(d);
        if (!dir)
                safe_close(d);
        return dir;
}

/* Every entry under a host directory, reported as deleted (an opaque dir replaced them). */
static int host_only_deleted(int hostfd, int upfd, const char *rel, ws_changes *out) {
        DIR *dir = opendir_dup(hostfd);
        if (!dir)
                return -errno;
        struct dirent *de;
        int r = 0;
        while ((de = readdir(dir))) {
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                struct stat st;
                if (fstatat(upfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0)
                        continue; /* the upper has its own version */
                struct stat hs;
                if (fstatat(hostfd, de->d_name, &hs, AT_SYMLINK_NOFOLLOW) < 0)
                        continue;
                char p[4096];
                if ((r = join(p, sizeof(p), rel, de->d_name)) < 0 || (r = changes_add(out, p, WS_DELETED, type_of(hs.st_mode))) < 0)
                        break;
        }
        closedir(dir);
        return r;
}

static int walk(int upfd, int hostfd, const char *rel, ws_changes *out, unsigned depth) {
        if (depth > 256)
                return -ELOOP;
        DIR *dir = opendir_dup(upfd);
        if (!dir)
                return -errno;
        struct dirent *de;
        int r = 0;
        while (r == 0 && (de = readdir(dir))) {
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                char p[4096];
                if ((r = join(p, sizeof(p), rel, de->d_name)) < 0)
                        break;
                struct stat us, hs;
                if (fstatat(upfd, de->d_name, &us, AT_SYMLINK_NOFOLLOW) < 0)
                        continue;
                bool host = hostfd >= 0 && fstatat(hostfd, de->d_name, &hs, AT_SYMLINK_NOFOLLOW) == 0;

                if (is_whiteout(&us)) {
                        if (host)
                                r = changes_add(out, p, WS_DELETED, type_of(hs.st_mode));
                        continue;
                }
                if (S_ISDIR(us.st_mode)) {
                        _cleanup_close_ int sub = openat(upfd, de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
                        if (sub < 0) {
                                r = -errno;
                                break;
                        }
                        _cleanup_close_ int hsub = -1;
                        if (host && S_ISDIR(hs.st_mode))
                                hsub = openat(hostfd, de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
                        if (hsub < 0) {
                                /* New directory (or one replacing a file): everything inside is new. */
                                r = changes_add(out, p, host ? WS_MODIFIED : WS_ADDED, 'd');
                                if (r == 0)
                                        r = walk(sub, -1, p, out, depth + 1);
                        } else {
                                if (is_opaque(sub))
                                        r = host_only_deleted(hsub, sub, p, out);
                                if (r == 0)
                                        r = walk(sub, hsub, p, out, depth + 1);
                        }
                        continue;
                }
                if (!host)
                        r = changes_add(out, p, WS_ADDED, type_of(us.st_mode));
                else if (type_of(us.st_mode) != type_of(hs.st_mode) ||
                         !same_content(upfd, de->d_name, hostfd, de->d_name, &us, &hs))
                        r = changes_add(out, p, WS_MODIFIED, type_of(us.st_mode));
        }
        closedir(dir);
        return r;
}

static int cmp_change(const void *a, const void *b) {
        return strcmp(((const ws_change *) a)->path, ((const ws_change *) b)->path);
}

int workspace_diff(const char *workspace, const char *upper, ws_changes *ret, char **ret_error) {
        ws_changes c = { 0 };
        _cleanup_close_ int up = open(upper, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (up < 0) {
                int r = -errno;
                (void) !asprintf(ret_error, "the sandbox's change layer %s: %s", upper, strerror(errno));
                return r;
        }
        /* The host tree may be gone: then everything is "added". */
        _cleanup_close_ int host = open(workspace, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        int r = walk(up, host, "", &c, 0);
        if (r < 0) {
                (void) !asprintf(ret_error, "reading the change layer: %s", strerror(-r));
                ws_changes_free(&c);
                return r;
        }
        if (c.n > 1)
                qsort(c.v, c.n, sizeof(ws_change), cmp_change);
        *ret = c;
        return 0;
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
        if (!l->v[l->n].path || !l->v[l->n].detail)
                return -ENOMEM;
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

static int64_t ctime_ns(const struct stat *st) {
        return (int64_t) st->st_ctim.tv_sec * 1000000000 + st->st_ctim.tv_nsec;
}

/* Splits "a/b/c" into the parent fd (resolved beneath the workspace without
 * symlinks, created with the upper's modes if missing) and "c". */
static int open_parent(int wsfd, int upfd, const char *rel, bool create, const char **ret_name) {
        const char *slash = strrchr(rel, '/');
        *ret_name = slash ? slash + 1 : rel;
        if (!slash)
                return fcntl(wsfd, F_DUPFD_CLOEXEC, 3);
        char parent[4096];
        snprintf(parent, sizeof(parent), "%.*s", (int) (slash - rel), rel);
        int fd = openat2_beneath(wsfd, parent, O_RDONLY | O_DIRECTORY, 0);
        if (fd != -ENOENT || !create)
                return fd;
        /* Create missing parents one by one, each beneath the last. */
        int cur = fcntl(wsfd, F_DUPFD_CLOEXEC, 3);
        char *save = NULL, *p = parent, built[4096] = "";
        for (char *comp = strtok_r(p, "/", &save); comp && cur >= 0; comp = strtok_r(NULL, "/", &save)) {
                if (built[0])
                        strncat(built, "/", sizeof(built) - strlen(built) - 1);
                strncat(built, comp, sizeof(built) - strlen(built) - 1);
                struct stat ust;
                mode_t mode = 0755;
                if (fstatat(upfd, built, &ust, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(ust.st_mode))
                        mode = ust.st_mode & 0777;
                if (mkdirat(cur, comp, mode) < 0 && errno != EEXIST) {
                        int r = -errno;
                        close(cur);
                        return r;
                }
                int next = openat2_beneath(cur, comp, O_RDONLY | O_DIRECTORY, 0);
                close(cur);
                cur = next;
        }
        return cur;
}

/* Any entry in the subtree changed on the host after the sandbox started? */
static bool subtree_changed_since(int dirfd, const char *name, int64_t since, unsigned depth) {
        struct stat st;
        if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return false;
        if (ctime_ns(&st) > since)
                return true;
        if (!S_ISDIR(st.st_mode) || depth > 256)
                return false;
        int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return true;
        DIR *d = fdopendir(fd);
        if (!d) {
                close(fd);
                return true;
        }
        bool changed = false;
        struct dirent *de;
        while (!changed && (de = readdir(d)))
                if (!streq(de->d_name, ".") && !streq(de->d_name, ".."))
                        changed = subtree_changed_since(fd, de->d_name, since, depth + 1);
        closedir(d);
        return changed;
}

static int remove_at(int dirfd, const char *name, unsigned depth) {
        struct stat st;
        if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return errno == ENOENT ? 0 : -errno;
        if (!S_ISDIR(st.st_mode))
                return unlinkat(dirfd, name, 0) < 0 && errno != ENOENT ? -errno : 0;
        if (depth > 256)
                return -ELOOP;
        /* The overlay's work dir holds a mode-000 directory: make it listable. */
        if ((st.st_mode & 0700) != 0700)
                (void) fchmodat(dirfd, name, (st.st_mode & 07777) | 0700, 0);
        int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        DIR *d = fdopendir(fd);
        if (!d) {
                close(fd);
                return -errno;
        }
        int r = 0;
        struct dirent *de;
        while ((de = readdir(d)))
                if (!streq(de->d_name, ".") && !streq(de->d_name, "..")) {
                        int k = remove_at(fd, de->d_name, depth + 1);
                        if (k < 0 && r == 0)
                                r = k;
                }
        closedir(d);
        if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT && r == 0)
                r = -errno;
        return r;
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
        return remove_at(parent, slash + 1, 0);
}

/* A symlink may be promoted only if it stays inside the workspace. */
static bool symlink_stays_inside(const char *workspace, const char *rel, const char *target) {
        char buf[8192];
        if (target[0] == '/')
                snprintf(buf, sizeof(buf), "%s", target);
        else {
                const char *slash = strrchr(rel, '/');
                snprintf(buf, sizeof(buf), "%s/%.*s%s%s", workspace, slash ? (int) (slash - rel) : 0, rel,
                         slash ? "/" : "", target);
        }
        /* Normalise lexically: the host side is resolved without symlinks anyway. */
        char out[8192];
        size_t o = 0;
        for (const char *p = buf; *p;) {
                while (*p == '/')
                        p++;
                const char *e = strchrnul(p, '/');
                size_t n = (size_t) (e - p);
                if (n == 0)
                        break;
                if (n == 1 && p[0] == '.') {
                } else if (n == 2 && p[0] == '.' && p[1] == '.') {
                        while (o > 0 && out[--o] != '/')
                                ;
                } else if (o + n + 2 < sizeof(out)) {
                        out[o++] = '/';
                        memcpy(out + o, p, n);
                        o += n;
                }
                p = e;
        }
        out[o] = 0;
        size_t wl = strlen(workspace);
        return strncmp(out, workspace, wl) == 0 && (out[wl] == '/' || out[wl] == 0);
}

static void hex(const unsigned char *d, size_t n, char *out) {
        for (size_t i = 0; i < n; i++)
                sprintf(out + 2 * i, "%02x", d[i]);
}

/* Copies an upper file into place atomically: temp file, fsync, rename. */
static int install_file(int parent, const char *name, int src, mode_t mode, char sha[65]) {
        char tmp[64];
        uint64_t rnd;
        if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
                rnd = (uint64_t) getpid();
        snprintf(tmp, sizeof(tmp), ".agentd-promote.%016llx", (unsigned long long) rnd);
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
        static char buf[131072];
        int r = 0;
        for (;;) {
                ssize_t n = read(src, buf, sizeof(buf));
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        break;
                }
                if (n == 0)
                        break;
                EVP_DigestUpdate(md, buf, (size_t) n);
                for (ssize_t off = 0; off < n;) {
                        ssize_t w = write(out, buf + off, (size_t) (n - off));
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
        /* setuid/setgid bits never cross from a sandbox to the host. */
        if (r == 0 && fchmod(out, mode & 0777) < 0)
                r = -errno;
        if (r == 0 && fsync(out) < 0)
                r = -errno;
        close(out);
        if (r == 0 && renameat(parent, tmp, parent, name) < 0)
                r = -errno;
        if (r < 0)
                unlinkat(parent, tmp, 0);
        return r;
}

static int promote_one(const char *workspace, int wsfd, int upfd, const ws_change *c, int64_t since,
                       ws_promote_result *res) {
        const char *name;
        char why[300];
        _cleanup_close_ int parent = open_parent(wsfd, upfd, c->path, c->change != WS_DELETED, &name);
        if (parent < 0) {
                if (c->change == WS_DELETED && parent == -ENOENT)
                        return items_add(&res->promoted, c->path, ""); /* already gone */
                snprintf(why, sizeof(why), parent == -ELOOP || parent == -EXDEV
                                 ? "a parent directory on the host is a symlink: not followed"
                                 : "cannot open the parent directory on the host: %s", strerror(-parent));
                return items_add(&res->conflicts, c->path, why);
        }
        struct stat hs;
        bool host = fstatat(parent, name, &hs, AT_SYMLINK_NOFOLLOW) == 0;

        if (c->change == WS_DELETED) {
                if (!host)
                        return items_add(&res->promoted, c->path, "");
                if (subtree_changed_since(parent, name, since, 0))
                        return items_add(&res->conflicts, c->path, "changed on the host since the sandbox started");
                int r = remove_at(parent, name, 0);
                if (r < 0) {
                        snprintf(why, sizeof(why), "cannot delete: %s", strerror(-r));
                        return items_add(&res->conflicts, c->path, why);
                }
                return items_add(&res->promoted, c->path, "");
        }

        if (host && ctime_ns(&hs) > since && !(S_ISDIR(hs.st_mode) && c->type == 'd'))
                return items_add(&res->conflicts, c->path, c->change == WS_ADDED ? "created on the host since the sandbox started"
                                                                                  : "changed on the host since the sandbox started");
        struct stat us;
        if (fstatat(upfd, c->path, &us, AT_SYMLINK_NOFOLLOW) < 0)
                return items_add(&res->conflicts, c->path, "gone from the change layer");

        if (c->type == 'd') {
                if (host && !S_ISDIR(hs.st_mode)) {
                        if (unlinkat(parent, name, 0) < 0)
                                return items_add(&res->conflicts, c->path, "cannot replace the host file with a directory");
                        host = false;
                }
                if (!host && mkdirat(parent, name, us.st_mode & 0777) < 0 && errno != EEXIST) {
                        snprintf(why, sizeof(why), "mkdir: %s", strerror(errno));
                        return items_add(&res->conflicts, c->path, why);
                }
                return items_add(&res->promoted, c->path, "");
        }
        char target[4096] = "";
        if (c->type == 'l') {
                /* Check the link before touching anything on the host. */
                ssize_t n = readlinkat(upfd, c->path, target, sizeof(target) - 1);
                if (n < 0)
                        return items_add(&res->conflicts, c->path, "cannot read the symlink");
                target[n] = 0;
                if (!symlink_stays_inside(workspace, c->path, target)) {
                        snprintf(why, sizeof(why), "symlink points outside the workspace (-> %.200s): not promoted", target);
                        return items_add(&res->conflicts, c->path, why);
                }
        } else if (c->type != 'f')
                return items_add(&res->conflicts, c->path, "not a regular file, directory or symlink: not promoted");
        if (host && S_ISDIR(hs.st_mode)) {
                if (subtree_changed_since(parent, name, since, 0))
                        return items_add(&res->conflicts, c->path, "changed on the host since the sandbox started");
                int r = remove_at(parent, name, 0);
                if (r < 0)
                        return items_add(&res->conflicts, c->path, "cannot replace the host directory");
        }
        if (c->type == 'l') {
                char tmp[64];
                snprintf(tmp, sizeof(tmp), ".agentd-promote.l%d", (int) getpid());
                (void) unlinkat(parent, tmp, 0);
                if (symlinkat(target, parent, tmp) < 0 || renameat(parent, tmp, parent, name) < 0) {
                        snprintf(why, sizeof(why), "cannot create the symlink: %s", strerror(errno));
                        (void) unlinkat(parent, tmp, 0);
                        return items_add(&res->conflicts, c->path, why);
                }
                return items_add(&res->promoted, c->path, "");
        }
        _cleanup_close_ int src = openat2_beneath(upfd, c->path, O_RDONLY, 0);
        if (src < 0)
                return items_add(&res->conflicts, c->path, "cannot open it in the change layer");
        char sha[65];
        int r = install_file(parent, name, src, us.st_mode, sha);
        if (r < 0) {
                snprintf(why, sizeof(why), "cannot write: %s", strerror(-r));
                return items_add(&res->conflicts, c->path, why);
        }
        return items_add(&res->promoted, c->path, sha);
}

int workspace_promote(const char *workspace, const char *upper, int64_t started_at_ns, char *const *paths,
                      bool include_hooks, ws_promote_result *ret, char **ret_error) {
        ws_changes c = { 0 };
        ws_promote_result res = { 0 };
        int r = workspace_diff(workspace, upper, &c, ret_error);
        if (r < 0)
                return r;
        _cleanup_close_ int wsfd = open(workspace, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        _cleanup_close_ int upfd = open(upper, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (wsfd < 0 || upfd < 0) {
                r = -errno;
                (void) !asprintf(ret_error, "cannot open %s: %s", wsfd < 0 ? workspace : upper, strerror(errno));
                ws_changes_free(&c);
                return r;
        }
        /* Creations parents-first, then deletions children-first. */
        for (int pass = 0; pass < 2 && r >= 0; pass++) {
                for (size_t k = 0; k < c.n && r >= 0; k++) {
                        const ws_change *ch = &c.v[pass == 0 ? k : c.n - 1 - k];
                        if ((ch->change == WS_DELETED) != (pass == 1) || !selected(ch->path, paths))
                                continue;
                        if (ch->guarded && !include_hooks) {
                                r = items_add(&res.guarded, ch->path, ws_change_kind_to_string(ch->change));
                                continue;
                        }
                        r = promote_one(workspace, wsfd, upfd, ch, started_at_ns, &res);
                }
        }
        ws_changes_free(&c);
        if (r < 0) {
                (void) !asprintf(ret_error, "promote: %s", strerror(-r));
                ws_promote_result_free(&res);
                return r;
        }
        *ret = res;
        return 0;
}
