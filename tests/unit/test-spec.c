/* The spec between the daemon and the helper: what the daemon's writer
 * (helper/spec-write.c, spec_put_<key>()) writes, the helper's parser
 * (helper/spec.c) reads back into the SandboxSpec field spec.def names —
 * every key, driven by the same X-macro, so a new key is tested as soon as it
 * is declared. */
#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "helper.h"
#include "spec.h"
#include "unit.h"

/* A value per key, distinct per key so a swapped field shows. */
static void value_path(SpecKey k, char *buf, size_t n) {
        snprintf(buf, n, "/spec-test/%s", spec_key_names[k]);
}

static int bpf_memfd(void) {
        /* One instruction: BPF_RET|BPF_K SECCOMP_RET_ALLOW. */
        struct sock_filter insn = { 0x06, 0, 0, 0x7fff0000 };
        int fd = memfd_create("spec-test-bpf", MFD_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(write(fd, &insn, sizeof(insn)), (ssize_t) sizeof(insn));
        return fd;
}

/* Per kind: write two values (repeated kinds) or one, then check the field. */
typedef struct fixture {
        SpecWriter w;
        int fds[_SPEC_KEY_MAX];
} fixture;

static void put_LIST(fixture *f, SpecKey k) {
        char a[64], b[64];
        snprintf(a, sizeof(a), "%s-one", spec_key_names[k]);
        snprintf(b, sizeof(b), "%s two", spec_key_names[k]);
        spec_write_str(&f->w, k, a);
        spec_write_str(&f->w, k, b);
}
static void check_LIST(SpecKey k, char **v) {
        char a[64], b[64];
        snprintf(a, sizeof(a), "%s-one", spec_key_names[k]);
        snprintf(b, sizeof(b), "%s two", spec_key_names[k]);
        ck_assert_ptr_nonnull(v);
        ck_assert_str_eq(v[0], a);
        ck_assert_str_eq(v[1], b);
        ck_assert_ptr_null(v[2]);
}
static void put_ENV(fixture *f, SpecKey k) {
        spec_write_str(&f->w, k, "A_VAR=1");
        spec_write_str(&f->w, k, "B_VAR=x=y z");
}
static void check_ENV(SpecKey k, char **v) {
        (void) k;
        ck_assert_str_eq(v[0], "A_VAR=1");
        ck_assert_str_eq(v[1], "B_VAR=x=y z");
        ck_assert_ptr_null(v[2]);
}
static void put_PATHS(fixture *f, SpecKey k) {
        char a[96], b[96];
        value_path(k, a, sizeof(a));
        snprintf(b, sizeof(b), "%s/second", a);
        spec_write_str(&f->w, k, a);
        spec_write_str(&f->w, k, b);
}
static void check_PATHS(SpecKey k, char **v) {
        char a[96], b[96];
        value_path(k, a, sizeof(a));
        snprintf(b, sizeof(b), "%s/second", a);
        ck_assert_str_eq(v[0], a);
        ck_assert_str_eq(v[1], b);
        ck_assert_ptr_null(v[2]);
}
#define put_LOWERS put_PATHS
#define check_LOWERS check_PATHS
static void put_PATH(fixture *f, SpecKey k) {
        char a[96];
        value_path(k, a, sizeof(a));
        spec_write_str(&f->w, k, a);
}
static void check_PATH(SpecKey k, const char *v) {
        char a[96];
        value_path(k, a, sizeof(a));
        ck_assert_str_eq(v, a);
}
#define put_SOCKET put_PATH
#define check_SOCKET check_PATH
static void put_PORT(fixture *f, SpecKey k) {
        spec_write_u64(&f->w, k, 1000 + k);
}
static void check_PORT(SpecKey k, unsigned v) {
        ck_assert_uint_eq(v, 1000 + k);
}
static void put_U64(fixture *f, SpecKey k) {
        spec_write_u64(&f->w, k, (UINT64_C(1) << 40) + k);
}
static void check_U64(SpecKey k, uint64_t v) {
        ck_assert_uint_eq(v, (UINT64_C(1) << 40) + k);
}
static void put_MODE(fixture *f, SpecKey k) {
        spec_write_mode(&f->w, k, WORKSPACE_RO);
}
static void check_MODE(SpecKey k, workspace_mode v) {
        (void) k;
        ck_assert_int_eq(v, WORKSPACE_RO);
}
static void put_HOSTNAME(fixture *f, SpecKey k) {
        char a[64];
        snprintf(a, sizeof(a), "host-%d", (int) k);
        spec_write_str(&f->w, k, a);
}
static void check_HOSTNAME(SpecKey k, const char *v) {
        char a[64];
        snprintf(a, sizeof(a), "host-%d", (int) k);
        ck_assert_str_eq(v, a);
}
static void put_BOOL(fixture *f, SpecKey k) {
        spec_write_bool(&f->w, k, true); /* the parser's default is false */
}
static void check_BOOL(SpecKey k, bool v) {
        (void) k;
        ck_assert(v);
}
static void put_UMASK(fixture *f, SpecKey k) {
        spec_write_umask(&f->w, k, 0027);
}
static void check_UMASK(SpecKey k, int v) {
        (void) k;
        ck_assert_int_eq(v, 0027);
}
static void put_FD(fixture *f, SpecKey k) {
        /* The parser checks that the fd is open; seccomp_fd is read as a program. */
        f->fds[k] = k == SPEC_KEY_seccomp_fd ? bpf_memfd() : fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
        ck_assert_int_ge(f->fds[k], 3);
        spec_write_u64(&f->w, k, (uint64_t) f->fds[k]);
}
#define check_FD(k, v) ck_assert_int_eq((v), fx.fds[k])

START_TEST(test_every_key_round_trips) {
        fixture fx = { 0 };
        SandboxSpec spec;
        SandboxError err = { 0 };

#define SPEC_KEY(name, kind, member) put_##kind(&fx, SPEC_KEY_##name);
#include "spec.def"
#undef SPEC_KEY
        ck_assert(!fx.w.oom);
        /* Every key of spec.def is in what the writer wrote. */
        for (int k = 0; k < _SPEC_KEY_MAX; k++) {
                char needle[64];
                size_t n = (size_t) snprintf(needle, sizeof(needle), "%s=", spec_key_names[k]);
                bool found = false;
                for (const char *p = fx.w.buf; p < fx.w.buf + fx.w.len && !found; p += strlen(p) + 1)
                        found = strncmp(p, needle, n) == 0;
                ck_assert_msg(found, "key %s not written", spec_key_names[k]);
        }

        ck_assert_int_eq(spec_parse(fx.w.buf, fx.w.len, &spec, &err), 0);
#define SPEC_KEY(name, kind, member) check_##kind(SPEC_KEY_##name, spec.member);
#include "spec.def"
#undef SPEC_KEY
        ck_assert(spec.workspace_mode_set);
        ck_assert_uint_eq(spec.seccomp_len, 1);
        for (int k = 0; k < _SPEC_KEY_MAX; k++)
                if (fx.fds[k] > 0)
                        close(fx.fds[k]);
        free(spec.argv); /* one allocation holds every vector */
        free(spec.seccomp_insns);
        free(fx.w.buf);
}
END_TEST

/* The smallest spec the daemon writes for each workspace mode parses to it. */
START_TEST(test_workspace_modes) {
        for (int m = 0; m < _WORKSPACE_MODE_MAX; m++) {
                SpecWriter w = { 0 };
                SandboxSpec spec;
                SandboxError err = { 0 };
                int status = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);

                spec_put_arg(&w, "/bin/true");
                spec_put_workspace_mode(&w, (workspace_mode) m);
                spec_put_workspace(&w, "/ws");
                spec_put_upper(&w, "/state/upper");
                spec_put_work(&w, "/state/work");
                spec_put_unsafe_no_seccomp(&w, true);
                spec_put_status_fd(&w, status);
                ck_assert(!w.oom);
                ck_assert_int_eq(spec_parse(w.buf, w.len, &spec, &err), 0);
                ck_assert_int_eq(spec.workspace_mode, m);
                ck_assert_str_eq(workspace_mode_to_string(spec.workspace_mode),
                                 m == WORKSPACE_OVERLAY ? "overlay" : m == WORKSPACE_RO ? "ro" : m == WORKSPACE_RW ? "rw" : "none");
                if (m == WORKSPACE_NONE)
                        ck_assert_ptr_null(spec.workspace);
                else
                        ck_assert_str_eq(spec.workspace, "/ws");
                free(spec.argv);
                free(w.buf);
                close(status);
        }
        ck_assert_int_eq(workspace_mode_from_string("bogus"), -22);
}
END_TEST

/* What the parser refuses, with the message the helper reports. */
static void expect_refused(SpecWriter *w, const char *extra, const char *message) {
        SandboxSpec spec = { 0 };
        SandboxError err = { 0 };
        char *buf = malloc(w->len + strlen(extra) + 1);

        ck_assert_ptr_nonnull(buf);
        memcpy(buf, w->buf, w->len);
        memcpy(buf + w->len, extra, strlen(extra) + 1);
        ck_assert_int_lt(spec_parse(buf, w->len + strlen(extra) + 1, &spec, &err), 0);
        ck_assert_str_eq(err.step, "spec");
        ck_assert_str_eq(err.message, message);
        free(spec.argv);
        free(buf);
}

START_TEST(test_refusals) {
        SpecWriter w = { 0 };
        char sock[SPEC_SUN_PATH_MAX + 32];

        spec_put_arg(&w, "/bin/true");
        spec_put_workspace_mode(&w, WORKSPACE_NONE);
        spec_put_unsafe_no_seccomp(&w, true);
        expect_refused(&w, "frobnicate=1", "unknown key 'frobnicate'");
        expect_refused(&w, "ro=relative/path", "ro: path 'relative/path' is not absolute");
        expect_refused(&w, "hide=/a/../b", "hide: path '/a/../b' is not canonical");
        expect_refused(&w, "cow=/a,b", "cow: path '/a,b' holds ',', ':' or '\\'");
        expect_refused(&w, "env=NOVALUE", "env entry 'NOVALUE' is not KEY=VALUE");
        expect_refused(&w, "workspace_mode=sideways", "workspace_mode: unknown mode 'sideways'");
        expect_refused(&w, "proxy_port=70000", "proxy_port: bad port '70000'");
        expect_refused(&w, "umask=999", "umask: bad mode '999'");
        expect_refused(&w, "landlock=yes", "landlock: expected 0 or 1, got 'yes'");
        expect_refused(&w, "no-equals-sign", "entry 'no-equals-sign' has no '='");
        /* A socket path one byte too long for sun_path (the daemon's side cannot bind it). */
        memset(sock, 'a', sizeof(sock));
        memcpy(sock, "broker_socket=/", 15);
        sock[14 + SPEC_SUN_PATH_MAX] = 0; /* a value of SPEC_SUN_PATH_MAX bytes: no room for the NUL */
        expect_refused(&w, sock, "broker_socket: path too long for a socket");
        free(w.buf);
}
END_TEST

static Suite *spec_suite(void) {
        Suite *s = suite_create("spec");
        TCase *tc = tcase_create("core");
        tcase_add_test(tc, test_every_key_round_trips);
        tcase_add_test(tc, test_workspace_modes);
        tcase_add_test(tc, test_refusals);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return unit_run(spec_suite(), false);
}
