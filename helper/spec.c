/* agentd-sandbox: read and validate the spec the daemon hands over on --spec-fd
 * (NUL-terminated key=value strings). Anything unknown or malformed fails closed. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
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

/* Where each key's value goes: its SandboxSpec field (spec.def), whose type
 * the compiler checks against the key's kind. */
#define SPEC_FIELD_LIST char **
#define SPEC_FIELD_ENV char **
#define SPEC_FIELD_PATHS char **
#define SPEC_FIELD_LOWERS char **
#define SPEC_FIELD_PATH const char *
#define SPEC_FIELD_SOCKET const char *
#define SPEC_FIELD_PORT unsigned
#define SPEC_FIELD_U64 uint64_t
#define SPEC_FIELD_MODE workspace_mode
#define SPEC_FIELD_HOSTNAME const char *
#define SPEC_FIELD_BOOL bool
#define SPEC_FIELD_UMASK int
#define SPEC_FIELD_FD int

#define SPEC_KEY(name, kind, member)                                                                       \
        _Static_assert(__builtin_types_compatible_p(__typeof__(((SandboxSpec *) 0)->member), SPEC_FIELD_##kind), \
                       "SandboxSpec." #member " does not hold a " #kind);
#include "spec.def"
#undef SPEC_KEY

static const size_t spec_key_offsets[_SPEC_KEY_MAX] = {
#define SPEC_KEY(name, kind, member) [SPEC_KEY_##name] = offsetof(SandboxSpec, member),
#include "spec.def"
#undef SPEC_KEY
};

#define FIELD(spec, key, type) ((type *) ((char *) (spec) + spec_key_offsets[key]))

/* The key of entry p ("name=value"), or -1 when it names none. */
static int spec_key_find(const char *p, size_t len) {
        for (int k = 0; k < _SPEC_KEY_MAX; k++)
                if (strlen(spec_key_names[k]) == len && memcmp(p, spec_key_names[k], len) == 0)
                        return k;
        return -1;
}

static int parse_mode(const char *key, const char *value, workspace_mode *ret, SandboxError *err) {
        int m = workspace_mode_from_string(value);
        if (m < 0)
                return sandbox_fail(err, "spec", -EINVAL, "%s: unknown mode '%.32s'", key, value);
        *ret = (workspace_mode) m;
        return 0;
}

static int parse_port(const char *key, const char *value, unsigned *ret, SandboxError *err) {
        char *end;
        long v;

        errno = 0;
        v = strtol(value, &end, 10);
        if (errno || end == value || *end || v < 1 || v > 65535)
                return sandbox_fail(err, "spec", -EINVAL, "%s: bad port '%.16s'", key, value);
        *ret = (unsigned) v;
        return 0;
}

static int parse_umask(const char *key, const char *value, int *ret, SandboxError *err) {
        char *end;
        long v;

        errno = 0;
        v = strtol(value, &end, 8);
        if (errno || end == value || *end || v < 0 || v > 0777)
                return sandbox_fail(err, "spec", -EINVAL, "%s: bad mode '%.16s'", key, value);
        *ret = (int) v;
        return 0;
}

/* One entry's value into its field (vectors: the next slot, counted in n[]). */
static int parse_value(SandboxSpec *spec, SpecKey k, char *value, size_t *n, SandboxError *err) {
        const char *key = spec_key_names[k];
        int r;

        switch (spec_key_kinds[k]) {
        case SPEC_KIND_ENV:
                if (!strchr(value, '=') || value[0] == '=')
                        return sandbox_fail(err, "spec", -EINVAL, "%s entry '%.64s' is not KEY=VALUE", key, value);
                __attribute__((fallthrough));
        case SPEC_KIND_LIST:
                (*FIELD(spec, k, char **))[n[k]++] = value;
                return 0;
        case SPEC_KIND_LOWERS:
                if ((r = check_path(key, value, err)) < 0)
                        return r;
                /* overlayfs splits its options on ',' and lowerdir on ':' */
                if (strpbrk(value, ",:\\"))
                        return sandbox_fail(err, "spec", -EINVAL, "%s: path '%.256s' holds ',', ':' or '\\'", key, value);
                (*FIELD(spec, k, char **))[n[k]++] = value;
                return 0;
        case SPEC_KIND_PATHS:
                if ((r = check_path(key, value, err)) < 0)
                        return r;
                (*FIELD(spec, k, char **))[n[k]++] = value;
                return 0;
        case SPEC_KIND_SOCKET:
                if ((r = check_path(key, value, err)) < 0)
                        return r;
                if (strlen(value) >= SPEC_SUN_PATH_MAX) /* for the daemon's side */
                        return sandbox_fail(err, "spec", -ENAMETOOLONG, "%s: path too long for a socket", key);
                *FIELD(spec, k, const char *) = value;
                return 0;
        case SPEC_KIND_PATH:
                if ((r = check_path(key, value, err)) < 0)
                        return r;
                *FIELD(spec, k, const char *) = value;
                return 0;
        case SPEC_KIND_PORT:
                return parse_port(key, value, FIELD(spec, k, unsigned), err);
        case SPEC_KIND_U64:
                return parse_u64(key, value, FIELD(spec, k, uint64_t), err);
        case SPEC_KIND_MODE:
                if ((r = parse_mode(key, value, FIELD(spec, k, workspace_mode), err)) < 0)
                        return r;
                spec->workspace_mode_set = true;
                return 0;
        case SPEC_KIND_HOSTNAME:
                if (!*value || strlen(value) > 64)
                        return sandbox_fail(err, "spec", -EINVAL, "%s: bad length", key);
                *FIELD(spec, k, const char *) = value;
                return 0;
        case SPEC_KIND_BOOL:
                return parse_bool(key, value, FIELD(spec, k, bool), err);
        case SPEC_KIND_UMASK:
                return parse_umask(key, value, FIELD(spec, k, int), err);
        case SPEC_KIND_FD:
                return parse_fd(key, value, FIELD(spec, k, int), err);
        }
        return sandbox_fail(err, "spec", -EINVAL, "%s: no parser", key);
}

/* Fill the vectors in one pass: count first, then point into the buffer. */
int spec_parse(char *buf, size_t size, SandboxSpec *spec, SandboxError *err) {
        size_t count[_SPEC_KEY_MAX] = { 0 }, used[_SPEC_KEY_MAX] = { 0 }, total = 0, n_lists = 0;
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
                char *eq = strchr(p, '=');
                int k = eq ? spec_key_find(p, (size_t) (eq - p)) : -1;

                if (k < 0)
                        continue;
                if (spec_kind_repeats(spec_key_kinds[k])) {
                        count[k]++;
                        total++;
                } else if (k == SPEC_KEY_status_fd)
                        /* Known early, so even a later spec error is reported there. */
                        (void) parse_fd(spec_key_names[k], eq + 1, &spec->status_fd, err);
        }
        for (int k = 0; k < _SPEC_KEY_MAX; k++)
                n_lists += spec_kind_repeats(spec_key_kinds[k]);
        vec = calloc(total + n_lists, sizeof(char *));
        if (!vec)
                return sandbox_fail(err, "spec", -ENOMEM, "out of memory");
        for (int k = 0; k < _SPEC_KEY_MAX; k++)
                if (spec_kind_repeats(spec_key_kinds[k])) {
                        *FIELD(spec, k, char **) = vec;
                        vec += count[k] + 1;
                }

        for (char *p = buf, *next; p < buf + size; p = next) {
                char *eq = strchr(p, '=');
                int k;

                next = p + strlen(p) + 1;

                if (!eq)
                        return sandbox_fail(err, "spec", -EINVAL, "entry '%.64s' has no '='", p);
                k = spec_key_find(p, (size_t) (eq - p));
                if (k < 0) {
                        *eq = '\0';
                        return sandbox_fail(err, "spec", -EINVAL, "unknown key '%.64s'", p);
                }
                r = parse_value(spec, (SpecKey) k, eq + 1, used, err);
                if (r < 0)
                        return r;
        }

        if (count[SPEC_KEY_arg] == 0 || !*spec->argv[0])
                return sandbox_fail(err, "spec", -EINVAL, "no command (arg=) given");
        if (spec->status_fd < 0)
                return sandbox_fail(err, "spec", -EINVAL, "status_fd is required");
        if (spec->workspace_mode != WORKSPACE_NONE && !spec->workspace)
                return sandbox_fail(err, "spec", -EINVAL, "workspace is required unless workspace_mode=none");
        if (spec->workspace_mode == WORKSPACE_OVERLAY && (!spec->upper || !spec->work))
                return sandbox_fail(err, "spec", -EINVAL, "workspace_mode=overlay needs upper= and work=");
        if (count[SPEC_KEY_cow] > 0 && !spec->cow_dir)
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
