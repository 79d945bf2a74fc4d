/* agentd-sandbox: read and validate the spec the daemon hands over on --spec-fd
 * (NUL-terminated key=value strings). Anything unknown or malformed fails closed. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helper.h"

int sandbox_fail(SandboxError *err, const char *step, int r, const char *fmt, ...) {
        va_list ap;

        err->step = step;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof(err->message), fmt, ap);
        va_end(ap);
        return r < 0 ? r : -EINVAL;
}

int spec_read(int fd, char **ret_buf, size_t *ret_size, SandboxError *err) {
        _cleanup_free_ char *buf = NULL;
        size_t size = 0, alloc = 0;
        struct stat st;

        /* A memfd tells us its size: one allocation, one read. */
        if (fstat(fd, &st) < 0)
                return sandbox_fail(err, "spec", -errno, "fd %d: %m", fd);
        if (S_ISREG(st.st_mode) && st.st_size > SPEC_MAX)
                return sandbox_fail(err, "spec", -E2BIG, "spec larger than %d bytes", SPEC_MAX);
        alloc = S_ISREG(st.st_mode) && st.st_size > 0 ? (size_t) st.st_size + 1 : 16384;

        for (;;) {
                ssize_t n;

                if (size == alloc) {
                        char *p;

                        if (alloc > SPEC_MAX)
                                return sandbox_fail(err, "spec", -E2BIG, "spec larger than %d bytes", SPEC_MAX);
                        alloc *= 2;
                        if (alloc > SPEC_MAX + 1)
                                alloc = SPEC_MAX + 1;
                        p = realloc(buf, alloc);
                        if (!p)
                                return sandbox_fail(err, "spec", -ENOMEM, "out of memory");
                        buf = p;
                }
                if (!buf) {
                        buf = malloc(alloc);
                        if (!buf)
                                return sandbox_fail(err, "spec", -ENOMEM, "out of memory");
                }
                /* pread on a memfd the daemon already wrote (offset at the end); read on a pipe. */
                n = S_ISREG(st.st_mode) ? pread(fd, buf + size, alloc - size, (off_t) size)
                                        : read(fd, buf + size, alloc - size);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return sandbox_fail(err, "spec", -errno, "read: %m");
                }
                if (n == 0)
                        break;
                size += (size_t) n;
        }
        if (size > SPEC_MAX)
                return sandbox_fail(err, "spec", -E2BIG, "spec larger than %d bytes", SPEC_MAX);
        if (size == 0)
                return sandbox_fail(err, "spec", -EINVAL, "empty spec");
        if (buf[size - 1] != '\0')
                return sandbox_fail(err, "spec", -EINVAL, "spec does not end with NUL");

        *ret_size = size;
        *ret_buf = TAKE_PTR(buf);
        return 0;
}

static int parse_fd(const char *key, const char *value, int *ret, SandboxError *err) {
        char *end;
        long v;

        errno = 0;
        v = strtol(value, &end, 10);
        if (errno || end == value || *end || v < 3 || v > 1 << 20)
                return sandbox_fail(err, "spec", -EINVAL, "%s: bad fd '%s'", key, value);
        if (fcntl((int) v, F_GETFD) < 0)
                return sandbox_fail(err, "spec", -EBADF, "%s: fd %ld is not open", key, v);
        *ret = (int) v;
        return 0;
}

static int parse_u64(const char *key, const char *value, uint64_t *ret, SandboxError *err) {
        char *end;
        unsigned long long v;

        errno = 0;
        v = strtoull(value, &end, 10);
        if (errno || end == value || *end || value[0] == '-')
                return sandbox_fail(err, "spec", -EINVAL, "%s: bad number '%.32s'", key, value);
        *ret = (uint64_t) v;
        return 0;
}

static int parse_bool(const char *key, const char *value, bool *ret, SandboxError *err) {
        if (streq(value, "1"))
                *ret = true;
        else if (streq(value, "0"))
                *ret = false;
        else
                return sandbox_fail(err, "spec", -EINVAL, "%s: expected 0 or 1, got '%s'", key, value);
        return 0;
}

/* Mount paths must be absolute and canonical: no "." or ".." components, no
 * doubled or trailing slashes. Symlinks are refused later, while mounting. */
static int check_path(const char *key, const char *value, SandboxError *err) {
        const char *p;

        if (value[0] != '/')
                return sandbox_fail(err, "spec", -EINVAL, "%s: path '%s' is not absolute", key, value);
        if (strlen(value) >= 4096)
                return sandbox_fail(err, "spec", -ENAMETOOLONG, "%s: path too long", key);
        for (p = value; *p; p++) {
                if (*p != '/')
                        continue;
                if (p[1] == '/' || (p[1] == '\0' && p != value) ||
                    (p[1] == '.' && (p[2] == '/' || p[2] == '\0')) ||
                    (p[1] == '.' && p[2] == '.' && (p[3] == '/' || p[3] == '\0')))
                        return sandbox_fail(err, "spec", -EINVAL, "%s: path '%s' is not canonical", key, value);
        }
        return 0;
}

static int parse_seccomp(SandboxSpec *spec, SandboxError *err) {
        struct stat st;
        size_t size = 0;
        char *buf;

        if (fstat(spec->seccomp_fd, &st) < 0)
                return sandbox_fail(err, "seccomp", -errno, "fstat: %m");
        /* BPF_MAXINSNS is 4096 instructions of 8 bytes. */
        buf = malloc(4096 * sizeof(struct sock_filter) + 1);
        if (!buf)
                return sandbox_fail(err, "seccomp", -ENOMEM, "out of memory");
        for (;;) {
                ssize_t n = S_ISREG(st.st_mode)
                                    ? pread(spec->seccomp_fd, buf + size, 4096 * sizeof(struct sock_filter) + 1 - size, (off_t) size)
                                    : read(spec->seccomp_fd, buf + size, 4096 * sizeof(struct sock_filter) + 1 - size);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        free(buf);
                        return sandbox_fail(err, "seccomp", -errno, "read: %m");
                }
                if (n == 0 || size + (size_t) n > 4096 * sizeof(struct sock_filter)) {
                        size += (size_t) n;
                        break;
                }
                size += (size_t) n;
        }
        if (size == 0 || size % sizeof(struct sock_filter) || size > 4096 * sizeof(struct sock_filter)) {
                free(buf);
                return sandbox_fail(err, "seccomp", -EINVAL, "program of %zu bytes is not 1..4096 instructions", size);
        }
        spec->seccomp_insns = (struct sock_filter *) buf;
        spec->seccomp_len = (unsigned short) (size / sizeof(struct sock_filter));
        return 0;
}

/* Fill three vectors in one pass: count first, then point into the buffer. */
int spec_parse(char *buf, size_t size, SandboxSpec *spec, SandboxError *err) {
        size_t n_arg = 0, n_env = 0, n_ro = 0, n_rw = 0, n_hide = 0, i_arg = 0, i_env = 0, i_ro = 0, i_rw = 0, i_hide = 0;
        size_t n_cow = 0, i_cow = 0;
        char **vec;
        int r;

        *spec = (SandboxSpec) {
                .workspace_mode = WORKSPACE_OVERLAY,
                .hostname = "agentd",
                .seccomp_fd = -1,
                .cgroup_fd = -1,
                .status_fd = -1,
                .umask = -1,
        };

        for (char *p = buf; p < buf + size; p += strlen(p) + 1) {
                if (strncmp(p, "arg=", 4) == 0)
                        n_arg++;
                else if (strncmp(p, "env=", 4) == 0)
                        n_env++;
                else if (strncmp(p, "ro=", 3) == 0)
                        n_ro++;
                else if (strncmp(p, "rw=", 3) == 0)
                        n_rw++;
                else if (strncmp(p, "hide=", 5) == 0)
                        n_hide++;
                else if (strncmp(p, "cow=", 4) == 0)
                        n_cow++;
                else if (strncmp(p, "status_fd=", 10) == 0)
                        /* Known early, so even a later spec error is reported there. */
                        (void) parse_fd("status_fd", p + 10, &spec->status_fd, err);
        }
        vec = calloc(n_arg + n_env + n_ro + n_rw + n_hide + n_cow + 6, sizeof(char *));
        if (!vec)
                return sandbox_fail(err, "spec", -ENOMEM, "out of memory");
        spec->argv = vec;
        spec->envp = spec->argv + n_arg + 1;
        spec->ro = spec->envp + n_env + 1;
        spec->rw = spec->ro + n_ro + 1;
        spec->hide = spec->rw + n_rw + 1;
        spec->cow = spec->hide + n_hide + 1;

        for (char *p = buf, *next; p < buf + size; p = next) {
                char *eq = strchr(p, '='), *value;

                next = p + strlen(p) + 1;

                if (!eq)
                        return sandbox_fail(err, "spec", -EINVAL, "entry '%.64s' has no '='", p);
                *eq = '\0';
                value = eq + 1;

                if (streq(p, "arg"))
                        spec->argv[i_arg++] = value;
                else if (streq(p, "env")) {
                        if (!strchr(value, '=') || value[0] == '=')
                                return sandbox_fail(err, "spec", -EINVAL, "env entry '%.64s' is not KEY=VALUE", value);
                        spec->envp[i_env++] = value;
                } else if (streq(p, "ro") || streq(p, "rw") || streq(p, "hide")) {
                        r = check_path(p, value, err);
                        if (r < 0)
                                return r;
                        if (streq(p, "ro"))
                                spec->ro[i_ro++] = value;
                        else if (streq(p, "rw"))
                                spec->rw[i_rw++] = value;
                        else
                                spec->hide[i_hide++] = value;
                } else if (streq(p, "cow")) {
                        r = check_path(p, value, err);
                        if (r < 0)
                                return r;
                        /* overlayfs splits its options on ',' and lowerdir on ':' */
                        if (strpbrk(value, ",:\\"))
                                return sandbox_fail(err, "spec", -EINVAL, "cow: path '%.256s' holds ',', ':' or '\\'", value);
                        spec->cow[i_cow++] = value;
                } else if (streq(p, "cow_dir") || streq(p, "agentctl")) {
                        r = check_path(p, value, err);
                        if (r < 0)
                                return r;
                        if (streq(p, "cow_dir"))
                                spec->cow_dir = value;
                        else
                                spec->agentctl = value;
                } else if (streq(p, "workspace") || streq(p, "upper") || streq(p, "work") || streq(p, "home")) {
                        r = check_path(p, value, err);
                        if (r < 0)
                                return r;
                        if (streq(p, "workspace"))
                                spec->workspace = value;
                        else if (streq(p, "upper"))
                                spec->upper = value;
                        else if (streq(p, "work"))
                                spec->work = value;
                        else
                                spec->home = value;
                } else if (streq(p, "proxy_socket") || streq(p, "broker_socket")) {
                        r = check_path(p, value, err);
                        if (r < 0)
                                return r;
                        if (strlen(value) >= 108) /* sizeof(sun_path), for the daemon's side */
                                return sandbox_fail(err, "spec", -ENAMETOOLONG, "%s: path too long for a socket", p);
                        if (streq(p, "proxy_socket"))
                                spec->proxy_socket = value;
                        else
                                spec->broker_socket = value;
                } else if (streq(p, "proxy_port")) {
                        char *end;
                        long v;

                        errno = 0;
                        v = strtol(value, &end, 10);
                        if (errno || end == value || *end || v < 1 || v > 65535)
                                return sandbox_fail(err, "spec", -EINVAL, "proxy_port: bad port '%.16s'", value);
                        spec->proxy_port = (unsigned) v;
                } else if (streq(p, "tmp_size") || streq(p, "shm_size") || streq(p, "home_size") || streq(p, "nproc")) {
                        r = parse_u64(p, value, streq(p, "tmp_size")    ? &spec->tmp_size
                                                : streq(p, "shm_size")  ? &spec->shm_size
                                                : streq(p, "home_size") ? &spec->home_size
                                                                        : &spec->nproc,
                                      err);
                        if (r < 0)
                                return r;
                } else if (streq(p, "workspace_mode")) {
                        if (streq(value, "overlay"))
                                spec->workspace_mode = WORKSPACE_OVERLAY;
                        else if (streq(value, "ro"))
                                spec->workspace_mode = WORKSPACE_RO;
                        else if (streq(value, "rw"))
                                spec->workspace_mode = WORKSPACE_RW;
                        else if (streq(value, "none"))
                                spec->workspace_mode = WORKSPACE_NONE;
                        else
                                return sandbox_fail(err, "spec", -EINVAL, "workspace_mode: unknown mode '%.32s'", value);
                        spec->workspace_mode_set = true;
                } else if (streq(p, "hostname")) {
                        if (!*value || strlen(value) > 64)
                                return sandbox_fail(err, "spec", -EINVAL, "hostname: bad length");
                        spec->hostname = value;
                } else if (streq(p, "landlock")) {
                        r = parse_bool(p, value, &spec->landlock, err);
                        if (r < 0)
                                return r;
                } else if (streq(p, "tty")) {
                        r = parse_bool(p, value, &spec->tty, err);
                        if (r < 0)
                                return r;
                } else if (streq(p, "unsafe_no_seccomp")) {
                        r = parse_bool(p, value, &spec->unsafe_no_seccomp, err);
                        if (r < 0)
                                return r;
                } else if (streq(p, "umask")) {
                        char *end;
                        long v;

                        errno = 0;
                        v = strtol(value, &end, 8);
                        if (errno || end == value || *end || v < 0 || v > 0777)
                                return sandbox_fail(err, "spec", -EINVAL, "umask: bad mode '%.16s'", value);
                        spec->umask = (int) v;
                } else if (streq(p, "seccomp_fd")) {
                        r = parse_fd(p, value, &spec->seccomp_fd, err);
                        if (r < 0)
                                return r;
                } else if (streq(p, "cgroup_fd")) {
                        r = parse_fd(p, value, &spec->cgroup_fd, err);
                        if (r < 0)
                                return r;
                } else if (streq(p, "status_fd")) {
                        r = parse_fd(p, value, &spec->status_fd, err);
                        if (r < 0)
                                return r;
                } else
                        return sandbox_fail(err, "spec", -EINVAL, "unknown key '%.64s'", p);
        }

        if (n_arg == 0 || !*spec->argv[0])
                return sandbox_fail(err, "spec", -EINVAL, "no command (arg=) given");
        if (spec->status_fd < 0)
                return sandbox_fail(err, "spec", -EINVAL, "status_fd is required");
        if (spec->workspace_mode != WORKSPACE_NONE && !spec->workspace)
                return sandbox_fail(err, "spec", -EINVAL, "workspace is required unless workspace_mode=none");
        if (spec->workspace_mode == WORKSPACE_OVERLAY && (!spec->upper || !spec->work))
                return sandbox_fail(err, "spec", -EINVAL, "workspace_mode=overlay needs upper= and work=");
        if (n_cow > 0 && !spec->cow_dir)
                return sandbox_fail(err, "spec", -EINVAL, "cow= needs cow_dir=");
        if (!spec->proxy_socket != !spec->proxy_port)
                return sandbox_fail(err, "spec", -EINVAL, "proxy_socket and proxy_port go together");
        if (spec->workspace_mode == WORKSPACE_NONE)
                spec->workspace = NULL;
        if (spec->workspace && streq(spec->workspace, "/"))
                return sandbox_fail(err, "spec", -EINVAL, "workspace may not be /");
        if (spec->home && streq(spec->home, "/"))
                return sandbox_fail(err, "spec", -EINVAL, "home may not be /");
        if (spec->seccomp_fd >= 0) {
                r = parse_seccomp(spec, err);
                if (r < 0)
                        return r;
        } else if (!spec->unsafe_no_seccomp)
                return sandbox_fail(err, "seccomp", -EPERM, "no seccomp_fd given (and not unsafe_no_seccomp=1)");
        return 0;
}

const char *spec_env_get(const SandboxSpec *spec, const char *key) {
        size_t l = strlen(key);

        for (char **e = spec->envp; *e; e++)
                if (strncmp(*e, key, l) == 0 && (*e)[l] == '=')
                        return *e + l + 1;
        return NULL;
}
