/* agentd-sandbox: build the sandbox's root file system in the init's private
 * mount namespace. Every source is first cloned into a detached mount (new
 * mount API), then attached beneath a fresh tmpfs through O_PATH descriptors
 * resolved without following symlinks, then the process pivots into it. */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "helper.h"

#define ATTR_RO (MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)
#define ATTR_RW (MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)
#define RESOLVE_SAFE (RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)
#define MAX_ENTRIES 256

typedef struct MountEntry {
        const char *path;    /* absolute path inside the sandbox */
        const char *symlink; /* create a symlink with this target instead of mounting */
        int fd;              /* detached mount */
        bool is_dir;
} MountEntry;

struct MountPlan {
        MountEntry entries[MAX_ENTRIES];
        size_t n;
};

static int openat2_safe(int dirfd, const char *path, int flags) {
        struct open_how how = {
                .flags = (uint64_t) (flags | O_CLOEXEC),
                .resolve = RESOLVE_SAFE,
        };
        int fd = (int) syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
        return fd < 0 ? -errno : fd;
}

static unsigned path_depth(const char *p) {
        unsigned d = 0;
        for (; *p; p++)
                d += *p == '/';
        return d;
}

/* type: S_IFDIR or S_IFREG when the caller knows what fd is (a file system
 * instance is a directory, a device node is not), 0 to ask fstat. */
static int plan_add(MountPlan *plan, const char *path, int fd, const char *symlink, mode_t type, SandboxError *err) {
        struct stat st = { .st_mode = type };

        if (plan->n >= MAX_ENTRIES) {
                safe_close(fd);
                return sandbox_fail(err, "mount", -E2BIG, "more than %d mounts", MAX_ENTRIES);
        }
        if (fd >= 0 && type == 0 && fstat(fd, &st) < 0) {
                int r = -errno;
                safe_close(fd);
                return sandbox_fail(err, "mount", r, "fstat %s: %m", path);
        }
        plan->entries[plan->n++] = (MountEntry) {
                .path = path,
                .fd = fd,
                .symlink = symlink,
                .is_dir = symlink || S_ISDIR(st.st_mode),
        };
        return 0;
}

/* The last message the kernel logged on an fs_context, for a useful error. */
static void fs_context_message(int fsfd, char *buf, size_t size) {
        ssize_t n = read(fsfd, buf, size - 1);
        buf[n > 0 ? n : 0] = '\0';
        if (n > 0 && buf[n - 1] == '\n')
                buf[n - 1] = '\0';
}

static int make_fs(const char *type, const char *const *opts, unsigned attr, const char *step, SandboxError *err) {
        _cleanup_close_ int fsfd = -1;
        char msg[256];
        int fd, r;

        fsfd = fsopen(type, FSOPEN_CLOEXEC);
        if (fsfd < 0)
                return sandbox_fail(err, step, -errno, "fsopen %s: %m", type);
        for (; opts && *opts; opts += 2)
                if (fsconfig(fsfd, opts[1] ? FSCONFIG_SET_STRING : FSCONFIG_SET_FLAG, opts[0], opts[1], 0) < 0) {
                        r = -errno;
                        fs_context_message(fsfd, msg, sizeof(msg));
                        errno = -r;
                        return sandbox_fail(err, step, r, "%s option %s%s%s: %s%s%m", type, opts[0],
                                            opts[1] ? "=" : "", opts[1] ?: "", msg, *msg ? ": " : "");
                }
        if (fsconfig(fsfd, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) {
                r = -errno;
                fs_context_message(fsfd, msg, sizeof(msg));
                errno = -r;
                return sandbox_fail(err, step, r, "create %s: %s%s%m", type, msg, *msg ? ": " : "");
        }
        fd = fsmount(fsfd, FSMOUNT_CLOEXEC, attr);
        if (fd < 0)
                return sandbox_fail(err, step, -errno, "fsmount %s: %m", type);
        return fd;
}

static int make_tmpfs(const char *mode, unsigned attr, SandboxError *err) {
        const char *opts[] = { "mode", mode, NULL };
        /* 1777 is tmpfs's own default for its root: one fsconfig call less. */
        return make_fs("tmpfs", streq(mode, "1777") ? NULL : opts, attr, "tmpfs", err);
}

/* A tmpfs the sandbox writes to: bounded (size 0 = the kernel's default, half of RAM). */
static int make_sized_tmpfs(const char *mode, uint64_t size, unsigned attr, SandboxError *err) {
        char sz[32];
        const char *opts[] = { "mode", mode, "size", sz, NULL };

        if (size == 0)
                return make_tmpfs(mode, attr, err);
        snprintf(sz, sizeof(sz), "%llu", (unsigned long long) size);
        return make_fs("tmpfs", opts, attr, "tmpfs", err);
}

/* Clone a host path (recursively) into a detached mount with the given attributes. */
static int clone_tree(const char *path, bool recursive, unsigned attr, const char *step, SandboxError *err) {
        _cleanup_close_ int fd = -1;
        struct mount_attr ma = { .attr_set = attr };

        fd = open_tree(AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (recursive ? AT_RECURSIVE : 0));
        if (fd < 0)
                return sandbox_fail(err, step, -errno, "%s: %m", path);
        if (attr && mount_setattr(fd, "", AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0), &ma, sizeof(ma)) < 0)
                return sandbox_fail(err, step, -errno, "%s: mount_setattr: %m", path);
        return TAKE_FD(fd);
}

static int plan_system(MountPlan *plan, const SandboxSpec *spec, SandboxError *err) {
        static const char *const merged[] = { "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32" };
        static const char *const devices[] = { "/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty" };
        static char links[ELEMENTSOF(merged)][256];
        const char *devpts_opts[] = { "newinstance", NULL, "ptmxmode", "0666", "mode", "0620", NULL };
        int fd, r;

        fd = clone_tree("/usr", true, ATTR_RO, "mount /usr", err);
        if (fd < 0 || (r = plan_add(plan, "/usr", fd, NULL, 0, err)) < 0)
                return fd < 0 ? fd : r;
        fd = clone_tree("/etc", true, ATTR_RO, "mount /etc", err);
        if (fd < 0 || (r = plan_add(plan, "/etc", fd, NULL, 0, err)) < 0)
                return fd < 0 ? fd : r;

        for (size_t i = 0; i < ELEMENTSOF(merged); i++) {
                ssize_t n = readlink(merged[i], links[i], sizeof(links[i]) - 1);

                if (n >= 0) {
                        links[i][n] = '\0';
                        r = plan_add(plan, merged[i], -1, links[i], 0, err);
                } else if (errno == ENOENT)
                        continue;
                else if (errno == EINVAL) { /* a real directory */
                        fd = clone_tree(merged[i], true, ATTR_RO, "mount", err);
                        if (fd < 0)
                                return fd;
                        r = plan_add(plan, merged[i], fd, NULL, 0, err);
                } else
                        return sandbox_fail(err, "mount", -errno, "readlink %s: %m", merged[i]);
                if (r < 0)
                        return r;
        }

        fd = make_tmpfs("0755", ATTR_RW | MOUNT_ATTR_NOEXEC, err);
        if (fd < 0 || (r = plan_add(plan, "/dev", fd, NULL, S_IFDIR, err)) < 0)
                return fd < 0 ? fd : r;
        for (size_t i = 0; i < ELEMENTSOF(devices); i++) {
                fd = clone_tree(devices[i], false, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, "mount /dev", err);
                if (fd < 0 || (r = plan_add(plan, devices[i], fd, NULL, S_IFCHR, err)) < 0)
                        return fd < 0 ? fd : r;
        }
        fd = make_fs("devpts", devpts_opts, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, "mount /dev/pts", err);
        if (fd < 0 || (r = plan_add(plan, "/dev/pts", fd, NULL, S_IFDIR, err)) < 0)
                return fd < 0 ? fd : r;
        fd = make_sized_tmpfs("1777", spec->shm_size, ATTR_RW, err);
        if (fd < 0 || (r = plan_add(plan, "/dev/shm", fd, NULL, S_IFDIR, err)) < 0)
                return fd < 0 ? fd : r;
        r = plan_add(plan, "/dev/ptmx", -1, "pts/ptmx", 0, err);
        if (r >= 0)
                r = plan_add(plan, "/dev/fd", -1, "/proc/self/fd", 0, err);
        if (r >= 0)
                r = plan_add(plan, "/dev/stdin", -1, "/proc/self/fd/0", 0, err);
        if (r >= 0)
                r = plan_add(plan, "/dev/stdout", -1, "/proc/self/fd/1", 0, err);
        if (r >= 0)
                r = plan_add(plan, "/dev/stderr", -1, "/proc/self/fd/2", 0, err);
        if (r < 0)
                return r;

        /* proc of the new pid namespace: we are its pid 1 already. */
        fd = make_fs("proc", NULL, ATTR_RW | MOUNT_ATTR_NOEXEC, "mount /proc", err);
        if (fd < 0 || (r = plan_add(plan, "/proc", fd, NULL, S_IFDIR, err)) < 0)
                return fd < 0 ? fd : r;
        fd = make_sized_tmpfs("1777", spec->tmp_size, ATTR_RW, err);
        if (fd < 0 || (r = plan_add(plan, "/tmp", fd, NULL, S_IFDIR, err)) < 0)
                return fd < 0 ? fd : r;
        /* Only sockets and pid files belong here: a small fixed size, never half of RAM. */
        fd = make_sized_tmpfs("0755", SANDBOX_RUN_SIZE, ATTR_RW, err);
        if (fd < 0 || (r = plan_add(plan, "/run", fd, NULL, S_IFDIR, err)) < 0)
                return fd < 0 ? fd : r;
        return 0;
}

/* The workspace exactly as agentd checked it (a canonical path): resolved
 * again with no symlink allowed anywhere, so a component swapped for a
 * symlink after the check (towards agentd's runtime dir, say) fails here
 * instead of being followed. The mounts then take it through this fd. */
static int open_checked_workspace(const char *path, char *ret_src, size_t size, SandboxError *err) {
        _cleanup_close_ int root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
        int fd;

        if (root < 0)
                return sandbox_fail(err, "workspace", -errno, "/: %m");
        fd = openat2_safe(root, path + 1, O_PATH | O_DIRECTORY);
        if (fd < 0) {
                errno = -fd;
                return sandbox_fail(err, "workspace", fd, "%s: %m%s", path,
                                    fd == -ELOOP || fd == -EXDEV ? " (changed into a symlink since agentd checked it)" : "");
        }
        snprintf(ret_src, size, "/proc/self/fd/%d", fd);
        return fd;
}

/* Package caches: the host directory is the lower layer of an overlay whose
 * upper and work directories are the sandbox's own (cow_dir/<i>/), so writes
 * never reach the host's cache. */
static int plan_cow(MountPlan *plan, const SandboxSpec *spec, SandboxError *err) {
        for (size_t i = 0; spec->cow[i]; i++) {
                char upper[4096], work[4096];
                int fd, r;

                if ((size_t) snprintf(upper, sizeof(upper), "%s/%zu/upper", spec->cow_dir, i) >= sizeof(upper) ||
                    (size_t) snprintf(work, sizeof(work), "%s/%zu/work", spec->cow_dir, i) >= sizeof(work))
                        return sandbox_fail(err, "cache", -ENAMETOOLONG, "cow_dir: path too long");
                const char *opts[] = { "lowerdir", spec->cow[i], "upperdir", upper, "workdir", work,
                                       "userxattr", NULL, NULL };
                fd = make_fs("overlay", opts, ATTR_RW, "cache", err);
                if (fd < 0 || (r = plan_add(plan, spec->cow[i], fd, NULL, S_IFDIR, err)) < 0)
                        return fd < 0 ? fd : r;
        }
        return 0;
}

static int plan_user(MountPlan *plan, const SandboxSpec *spec, SandboxError *err) {
        _cleanup_close_ int wsfd = -1;
        char ws_src[64];
        int fd, r;

        if (spec->home) {
                fd = make_sized_tmpfs("0700", spec->home_size, ATTR_RW, err);
                if (fd < 0 || (r = plan_add(plan, spec->home, fd, NULL, S_IFDIR, err)) < 0)
                        return fd < 0 ? fd : r;
        }

        if (spec->workspace_mode != WORKSPACE_NONE) {
                wsfd = open_checked_workspace(spec->workspace, ws_src, sizeof(ws_src), err);
                if (wsfd < 0)
                        return wsfd;
        }
        switch (spec->workspace_mode) {
        case WORKSPACE_OVERLAY: {
                const char *opts[] = { "lowerdir", ws_src, "upperdir", spec->upper,
                                       "workdir", spec->work, "userxattr", NULL, NULL };
                fd = make_fs("overlay", opts, ATTR_RW, "workspace", err);
                break;
        }
        case WORKSPACE_RO:
                fd = clone_tree(ws_src, true, ATTR_RO, "workspace", err);
                break;
        case WORKSPACE_RW:
                fd = clone_tree(ws_src, true, ATTR_RW, "workspace", err);
                break;
        case WORKSPACE_NONE:
        default:
                fd = -ENOENT;
        }
        if (spec->workspace_mode != WORKSPACE_NONE) {
                if (fd < 0)
                        return fd;
                r = plan_add(plan, spec->workspace, fd, NULL,
                             spec->workspace_mode == WORKSPACE_OVERLAY ? S_IFDIR : 0, err);
                if (r < 0)
                        return r;
                if (!plan->entries[plan->n - 1].is_dir)
                        return sandbox_fail(err, "workspace", -ENOTDIR, "%s: %s", spec->workspace, strerror(ENOTDIR));
        }

        /* Just the socket node, read-only (connect() needs no writable mount). */
        if (spec->broker_socket) {
                struct stat st;

                fd = clone_tree(spec->broker_socket, false, ATTR_RO | MOUNT_ATTR_NOEXEC, "broker", err);
                if (fd < 0)
                        return fd;
                if (fstat(fd, &st) < 0) {
                        r = -errno;
                        safe_close(fd);
                        return sandbox_fail(err, "broker", r, "%s: %s", spec->broker_socket, strerror(-r));
                }
                if (!S_ISSOCK(st.st_mode)) {
                        safe_close(fd);
                        return sandbox_fail(err, "broker", -ENOTSOCK, "%s: not a socket", spec->broker_socket);
                }
                r = plan_add(plan, SANDBOX_BROKER_PATH, fd, NULL, S_IFSOCK, err);
                if (r < 0)
                        return r;
        }

        for (char **p = spec->ro; *p; p++) {
                fd = clone_tree(*p, true, ATTR_RO, "bind ro", err);
                if (fd < 0 || (r = plan_add(plan, *p, fd, NULL, 0, err)) < 0)
                        return fd < 0 ? fd : r;
        }
        for (char **p = spec->rw; *p; p++) {
                fd = clone_tree(*p, true, ATTR_RW, "bind rw", err);
                if (fd < 0 || (r = plan_add(plan, *p, fd, NULL, 0, err)) < 0)
                        return fd < 0 ? fd : r;
        }
        r = plan_cow(plan, spec, err);
        if (r < 0)
                return r;
        if (spec->agentctl) {
                fd = clone_tree(spec->agentctl, false, ATTR_RO, "agentctl", err);
                if (fd < 0 || (r = plan_add(plan, SANDBOX_AGENTCTL_PATH, fd, NULL, 0, err)) < 0)
                        return fd < 0 ? fd : r;
                if (plan->entries[plan->n - 1].is_dir)
                        return sandbox_fail(err, "agentctl", -EISDIR, "%s: not a file", spec->agentctl);
        }
        return 0;
}

/* Open (creating as needed) the mount point for path beneath rootfd, one
 * component at a time, refusing symlinks anywhere on the way. */
static int open_mountpoint_walk(int rootfd, const char *path, bool is_dir, SandboxError *err) {
        _cleanup_close_ int dirfd = -1;
        char comp[256];
        const char *p = path;
        int fd;

        dirfd = fcntl(rootfd, F_DUPFD_CLOEXEC, 3);
        if (dirfd < 0)
                return sandbox_fail(err, "mount", -errno, "dup: %m");
        while (*p == '/')
                p++;
        while (*p) {
                size_t l = strcspn(p, "/");
                bool last = p[l] == '\0';

                if (l >= sizeof(comp))
                        return sandbox_fail(err, "mount", -ENAMETOOLONG, "%s: component too long", path);
                memcpy(comp, p, l);
                comp[l] = '\0';
                p += l;
                while (*p == '/')
                        p++;

                fd = openat2_safe(dirfd, comp, O_PATH | O_NOFOLLOW | (last && !is_dir ? 0 : O_DIRECTORY));
                if (fd == -ENOENT) {
                        if (last && !is_dir) {
                                fd = openat(dirfd, comp, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
                                if (fd >= 0)
                                        close(fd);
                        } else
                                fd = mkdirat(dirfd, comp, 0755);
                        if (fd < 0 && errno != EEXIST)
                                return sandbox_fail(err, "mount", -errno, "create mount point %s: %m", path);
                        fd = openat2_safe(dirfd, comp, O_PATH | O_NOFOLLOW | (last && !is_dir ? 0 : O_DIRECTORY));
                }
                if (fd < 0) {
                        errno = -fd;
                        return sandbox_fail(err, "mount", fd, "mount point %s%s: %m", path,
                                            fd == -ELOOP || fd == -EXDEV ? " crosses a symlink" : "");
                }
                safe_close(dirfd);
                dirfd = fd;
        }
        return TAKE_FD(dirfd);
}

/* The directory last opened as a parent, kept for its siblings (/dev/null,
 * /dev/zero, ...). Entries are placed shallowest first, so by the time an
 * entry at depth d is placed every mount at depth < d is in place and its
 * parent directory cannot be covered any more. */
typedef struct ParentCache {
        const char *path; /* prefix of an entry's path, len bytes */
        size_t len;
        int fd;
} ParentCache;

/* The directory that will hold path's last component (borrowed, not to be
 * closed): the root itself, the cached parent, or the parent opened in one
 * openat2 (same RESOLVE_ flags as the walk, so a symlink anywhere still
 * fails); only a parent that does not exist yet is created by the walk. */
static int parent_dir(int rootfd, const char *path, ParentCache *cache, SandboxError *err) {
        size_t len = (size_t) (strrchr(path, '/') - path);
        char dir[4096];
        int fd;

        if (len == 0)
                return rootfd;
        if (cache->fd >= 0 && cache->len == len && strncmp(cache->path, path, len) == 0)
                return cache->fd;
        if (len >= sizeof(dir))
                return sandbox_fail(err, "mount", -ENAMETOOLONG, "%s: path too long", path);
        memcpy(dir, path, len);
        dir[len] = '\0';
        fd = openat2_safe(rootfd, dir + 1, O_PATH | O_DIRECTORY | O_NOFOLLOW);
        if (fd == -ENOENT)
                fd = open_mountpoint_walk(rootfd, dir, true, err);
        else if (fd < 0) {
                errno = -fd;
                return sandbox_fail(err, "mount", fd, "mount point %s%s: %m", path,
                                    fd == -ELOOP || fd == -EXDEV ? " crosses a symlink" : "");
        }
        if (fd < 0)
                return fd;
        safe_close(cache->fd);
        *cache = (ParentCache) { .path = path, .len = len, .fd = fd };
        return fd;
}

/* The mount point itself, created in its parent when missing: mkdirat first
 * (a fresh root has none of them), and for a file the O_EXCL|O_NOFOLLOW
 * creation's fd is the mount point already (it cannot be anything else). */
static int open_mountpoint(int rootfd, const char *path, bool is_dir, ParentCache *cache, SandboxError *err) {
        const char *name = strrchr(path, '/') + 1;
        int parent, fd, r = 0;

        if (!*name) { /* "/" */
                fd = fcntl(rootfd, F_DUPFD_CLOEXEC, 3);
                return fd < 0 ? sandbox_fail(err, "mount", -errno, "dup: %m") : fd;
        }
        parent = parent_dir(rootfd, path, cache, err);
        if (parent < 0)
                return parent;
        if (is_dir) {
                if (mkdirat(parent, name, 0755) < 0 && errno != EEXIST)
                        r = -errno;
        } else {
                fd = openat(parent, name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
                if (fd >= 0)
                        return fd;
                if (errno != EEXIST)
                        r = -errno;
        }
        fd = openat2_safe(parent, name, O_PATH | O_NOFOLLOW | (is_dir ? O_DIRECTORY : 0));
        if (fd == -ENOENT && r < 0) {
                errno = -r;
                return sandbox_fail(err, "mount", r, "create mount point %s: %m", path);
        }
        if (fd < 0) {
                errno = -fd;
                return sandbox_fail(err, "mount", fd, "mount point %s%s: %m", path,
                                    fd == -ELOOP || fd == -EXDEV ? " crosses a symlink" : "");
        }
        return fd;
}

static int place_entry(int rootfd, MountEntry *e, ParentCache *cache, SandboxError *err) {
        _cleanup_close_ int target = -1;

        if (e->symlink) {
                int parent = parent_dir(rootfd, e->path, cache, err);

                if (parent < 0)
                        return parent;
                if (symlinkat(e->symlink, parent, strrchr(e->path, '/') + 1) < 0)
                        return sandbox_fail(err, "mount", -errno, "symlink %s: %m", e->path);
                return 0;
        }
        target = open_mountpoint(rootfd, e->path, e->is_dir, cache, err);
        if (target < 0)
                return target;
        if (move_mount(e->fd, "", target, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
                return sandbox_fail(err, "mount", -errno, "attach %s: %m", e->path);
        e->fd = safe_close(e->fd);
        return 0;
}

/* Mask a path: an empty read-only tmpfs over a directory, an empty read-only
 * file over anything else. A symlink on the way is refused; a symlink as the
 * last component is followed as the sandbox would follow it (resolved inside
 * the new root), so what it reaches is masked. */
/* A clone of one empty 0444 file on a read-only tmpfs, made once per sandbox
 * (*cache holds that tmpfs): reads see nothing, writes fail with EROFS. */
static int empty_file(int *cache, SandboxError *err) {
        struct mount_attr ro = { .attr_set = MOUNT_ATTR_RDONLY };
        int fd;

        if (*cache < 0) {
                _cleanup_close_ int mnt = make_tmpfs("0755", ATTR_RW | MOUNT_ATTR_NOEXEC, err);

                if (mnt < 0)
                        return mnt;
                fd = openat(mnt, "empty", O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0444);
                if (fd < 0)
                        return sandbox_fail(err, "hide", -errno, "empty file: %m");
                close(fd);
                if (mount_setattr(mnt, "", AT_EMPTY_PATH, &ro, sizeof(ro)) < 0)
                        return sandbox_fail(err, "hide", -errno, "empty file: mount_setattr: %m");
                *cache = TAKE_FD(mnt);
        }
        fd = open_tree(*cache, "empty", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
        return fd < 0 ? sandbox_fail(err, "hide", -errno, "empty file: %m") : fd;
}

static int hide_path(int rootfd, const char *path, int *empty_cache, SandboxError *err) {
        _cleanup_close_ int target = -1, src = -1;
        struct stat st;

        target = openat2_safe(rootfd, path + 1, O_PATH | O_NOFOLLOW);
        if (target >= 0 && fstat(target, &st) == 0 && S_ISLNK(st.st_mode)) {
                struct open_how how = {
                        .flags = O_PATH | O_CLOEXEC,
                        .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
                };
                safe_close(target);
                target = (int) syscall(SYS_openat2, rootfd, path + 1, &how, sizeof(how));
                if (target < 0)
                        target = -errno;
        }
        if (target == -ENOENT)
                return 0;
        if (target < 0) {
                errno = -target;
                return sandbox_fail(err, "hide", target, "%s: %m", path);
        }
        if (fstat(target, &st) < 0)
                return sandbox_fail(err, "hide", -errno, "%s: %m", path);
        if (S_ISDIR(st.st_mode))
                src = make_tmpfs("0755", ATTR_RO | MOUNT_ATTR_NOEXEC, err);
        else
                src = empty_file(empty_cache, err);
        if (src < 0)
                return src;
        if (move_mount(src, "", target, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
                return sandbox_fail(err, "hide", -errno, "%s: %m", path);
        return 0;
}

static void plan_free(MountPlan *plan) {
        for (size_t i = 0; i < plan->n; i++)
                safe_close(plan->entries[i].fd);
        free(plan);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(MountPlan *, plan_free);

/* Phase one, the same for every spawn of a task: the system part of the new
 * root (/usr, /etc, /dev, /proc, /tmp, /run) cloned or created as detached
 * mounts, nothing attached yet (so nothing of the host is covered). Nothing
 * of the user's (workspace, home, binds, sockets) is looked at here: a warm
 * sandbox stops after this phase. */
int mounts_plan_system(const SandboxSpec *spec, MountPlan **ret_plan, SandboxError *err) {
        _cleanup_(plan_freep) MountPlan *plan = NULL;
        int r;

        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
                return sandbox_fail(err, "mount", -errno, "make / private: %m");
        plan = calloc(1, sizeof(*plan));
        if (!plan)
                return sandbox_fail(err, "mount", -ENOMEM, "out of memory");
        r = plan_system(plan, spec, err);
        if (r < 0)
                return r;
        *ret_plan = TAKE_PTR(plan);
        return 0;
}

/* Phase two, per spawn: the user's mounts (home, workspace, sockets, binds,
 * caches, agentctl) join the plan, then everything is attached beneath a
 * fresh tmpfs, the hidden paths are masked, and the init pivots into it and
 * makes the root read-only. Takes the plan. */
int mounts_finish_root(const SandboxSpec *spec, MountPlan *plan_in, SandboxError *err) {
        _cleanup_(plan_freep) MountPlan *plan = plan_in;
        _cleanup_close_ int rootfd = -1;
        ParentCache cache = { .fd = -1 };
        int empty_cache = -1;
        struct mount_attr ro = { .attr_set = MOUNT_ATTR_RDONLY };
        int r;

        /* Clone every source before anything is covered: the sources may live anywhere. */
        r = plan_user(plan, spec, err);
        if (r >= 0) {
                rootfd = make_tmpfs("0755", ATTR_RW, err);
                if (rootfd < 0)
                        r = rootfd;
                else if (move_mount(rootfd, "", AT_FDCWD, "/tmp", MOVE_MOUNT_F_EMPTY_PATH) < 0)
                        r = sandbox_fail(err, "mount", -errno, "attach new root: %m");
        }

        /* Parents before children; a stable order keeps later entries on top. */
        for (size_t i = 1; r >= 0 && i < plan->n; i++) {
                MountEntry e = plan->entries[i];
                unsigned d = path_depth(e.path);
                size_t j = i;

                for (; j > 0 && path_depth(plan->entries[j - 1].path) > d; j--)
                        plan->entries[j] = plan->entries[j - 1];
                plan->entries[j] = e;
        }
        for (size_t i = 0; r >= 0 && i < plan->n; i++)
                r = place_entry(rootfd, &plan->entries[i], &cache, err);
        cache.fd = safe_close(cache.fd);
        for (char **h = spec->hide; r >= 0 && *h; h++)
                r = hide_path(rootfd, *h, &empty_cache, err);
        empty_cache = safe_close(empty_cache);
        if (r < 0)
                return r;

        /* pivot_root(".", ".") stacks the old root under the new one; detach it. */
        if (fchdir(rootfd) < 0)
                return sandbox_fail(err, "pivot_root", -errno, "chdir: %m");
        if (syscall(SYS_pivot_root, ".", ".") < 0)
                return sandbox_fail(err, "pivot_root", -errno, "%m");
        if (umount2(".", MNT_DETACH) < 0)
                return sandbox_fail(err, "pivot_root", -errno, "detach old root: %m");
        if (chdir("/") < 0)
                return sandbox_fail(err, "pivot_root", -errno, "chdir /: %m");

        /* The root and /dev themselves become read-only; the tmpfs mounts on them stay writable. */
        if (mount_setattr(AT_FDCWD, "/", 0, &ro, sizeof(ro)) < 0 ||
            mount_setattr(AT_FDCWD, "/dev", 0, &ro, sizeof(ro)) < 0)
                return sandbox_fail(err, "mount", -errno, "make root read-only: %m");
        return 0;
}

int mounts_build_root(const SandboxSpec *spec, SandboxError *err) {
        MountPlan *plan = NULL;
        int r = mounts_plan_system(spec, &plan, err);

        return r < 0 ? r : mounts_finish_root(spec, plan, err);
}
