/* Unit tests for policy/: every key of CONTRACT §6 with its type, the value
 * parsers, error reporting (file:line and key), the registry's search-path order. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "macro.h"
#include "policy.h"
#include "seccomp-profiles.h"
#include "unit.h"

#define HOME "/home/u"

static task_policy *parse_ok(const char *text) {
        policy_error e = {};
        task_policy *p = NULL;
        int r = policy_parse_buffer(text, strlen(text), "/t/x.task", NULL, HOME, &p, &e);
        ck_assert_msg(r == 0, "parse failed: %s:%u [%s] %s", e.file, e.line, e.key, e.message);
        ck_assert_ptr_nonnull(p);
        return p;
}

/* Parse expecting failure; returns the error. */
static policy_error parse_fail(const char *text) {
        policy_error e = {};
        task_policy *p = NULL;
        int r = policy_parse_buffer(text, strlen(text), "/t/x.task", NULL, HOME, &p, &e);
        ck_assert_msg(r == -EINVAL, "expected -EINVAL, got %d for:\n%s", r, text);
        ck_assert_ptr_null(p);
        ck_assert_str_eq(e.file, "/t/x.task");
        ck_assert_str_ne(e.message, "");
        return e;
}

START_TEST(test_builtins) {
        ck_assert_uint_eq(policy_n_builtins, 4);
        for (size_t i = 0; i < policy_n_builtins; i++) {
                _cleanup_task_policy_ task_policy *p = NULL;
                _cleanup_free_ char *source = NULL;
                policy_error e = {};
                ck_assert_int_ge(asprintf(&source, "builtin:%s.task", policy_builtins[i].name), 0);
                ck_assert_int_eq(policy_parse_buffer(policy_builtins[i].text, strlen(policy_builtins[i].text), source,
                                                     policy_builtins[i].name, HOME, &p, &e), 0);
                ck_assert_ptr_nonnull(p->description);
                ck_assert_ptr_nonnull(p->command);
                ck_assert_int_eq(p->network, NETWORK_NONE);
                ck_assert_ptr_null(p->vault_policies);
                ck_assert_str_eq(p->seccomp, "default");
                ck_assert(p->landlock);
                if (i > 0)
                        ck_assert_int_lt(strcmp(policy_builtins[i - 1].name, policy_builtins[i].name), 0);
        }
}
END_TEST

START_TEST(test_default_task) {
        _cleanup_task_policy_ task_policy *p = NULL;
        _cleanup_strv_free_ char **caps = NULL;
        const char *text = NULL;
        policy_error e = {};

        for (size_t i = 0; i < policy_n_builtins; i++)
                if (streq(policy_builtins[i].name, "default"))
                        text = policy_builtins[i].text;
        ck_assert_ptr_nonnull(text);
        ck_assert_int_eq(policy_parse_buffer(text, strlen(text), "builtin:default.task", "default", HOME, &p, &e), 0);
        ck_assert_str_eq(p->name, "default");
        ck_assert_int_eq(p->workspace, WORKSPACE_OVERLAY);
        ck_assert_int_eq(p->network, NETWORK_NONE);
        ck_assert_uint_eq(p->n_allow, 0);
        ck_assert_str_eq(p->command[0], "/bin/sh");
        ck_assert_ptr_null(p->command[1]);
        ck_assert_str_eq(p->hide_paths[0], HOME "/.ssh");
        ck_assert_uint_eq(p->token_ttl_usec, 15 * USEC_PER_MINUTE);
        caps = task_policy_capabilities(p);
        ck_assert_ptr_nonnull(caps);
        ck_assert_ptr_null(caps[0]);    /* default grants nothing beyond default */
        ck_assert_str_eq(task_policy_origin(p, "Network.Mode")->file, "builtin:default.task");
}
END_TEST

START_TEST(test_tmpfs_sizes_and_change_max) {
        _cleanup_task_policy_ task_policy *d = parse_ok("");
        ck_assert_uint_eq(d->tmp_size, POLICY_DEFAULT_TMP_SIZE);
        ck_assert_uint_eq(d->shm_size, POLICY_DEFAULT_SHM_SIZE);
        ck_assert_uint_eq(d->home_size, POLICY_DEFAULT_HOME_SIZE);
        ck_assert_uint_eq(d->change_max, POLICY_DEFAULT_CHANGE_MAX);
        _cleanup_task_policy_ task_policy *p =
                parse_ok("[Filesystem]\nTmpSize=2G\nShmSize=64M\nHomeSize=infinity\n[Limits]\nChangeMax=512M\n");
        ck_assert_uint_eq(p->tmp_size, UINT64_C(2) << 30);
        ck_assert_uint_eq(p->shm_size, UINT64_C(64) << 20);
        ck_assert_uint_eq(p->home_size, POLICY_INFINITY);
        ck_assert_uint_eq(p->change_max, UINT64_C(512) << 20);
        ck_assert_uint_eq(task_policy_origin(p, "Limits.ChangeMax")->line, 6);
        /* The canonical form (the policy hash in the audit log) tells them apart. */
        _cleanup_free_ char *a = task_policy_canonical(d), *b = task_policy_canonical(p);
        ck_assert_str_ne(a, b);
        ck_assert_ptr_nonnull(strstr(b, "Filesystem.TmpSize=2147483648\n"));
        static const char *const bad[] = { "[Filesystem]\nTmpSize=0\n", "[Filesystem]\nShmSize=12K\n",
                                           "[Filesystem]\nHomeSize=lots\n", "[Limits]\nChangeMax=-1\n" };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                policy_error e = parse_fail(bad[i]);
                ck_assert_uint_eq(e.line, 2);
                ck_assert_ptr_nonnull(strstr(e.message, "at least 1M"));
        }
}
END_TEST

START_TEST(test_empty_is_defaults) {
        _cleanup_task_policy_ task_policy *p = parse_ok("");
        ck_assert_str_eq(p->name, "x");
        ck_assert_ptr_null(p->command);
        ck_assert_uint_eq(p->timeout_usec, 0);
        ck_assert_int_eq(p->workspace, WORKSPACE_OVERLAY);
        ck_assert_int_eq(p->network, NETWORK_NONE);
        ck_assert_uint_eq(p->token_ttl_usec, POLICY_DEFAULT_TOKEN_TTL_USEC);
        ck_assert_uint_eq(p->memory_max, 0);
        ck_assert_str_eq(p->seccomp, "default");
        ck_assert(p->landlock);
        ck_assert(!p->ask);
        ck_assert_uint_eq(p->ask_timeout_usec, POLICY_DEFAULT_ASK_TIMEOUT_USEC);
        ck_assert_ptr_null(task_policy_origin(p, "Task.Command"));
}
END_TEST

START_TEST(test_ask) {
        _cleanup_task_policy_ task_policy *p = parse_ok("[Network]\nMode=proxy\nAsk=yes\nAskTimeout=90s\n");
        _cleanup_task_policy_ task_policy *c = NULL;
        ck_assert(p->ask);
        ck_assert_uint_eq(p->ask_timeout_usec, 90 * USEC_PER_SEC);
        ck_assert_uint_eq(task_policy_origin(p, "Network.AskTimeout")->line, 4);
        ck_assert_int_eq(task_policy_copy(p, &c), 0);
        ck_assert(c->ask);
        ck_assert_uint_eq(c->ask_timeout_usec, 90 * USEC_PER_SEC);
        _cleanup_free_ char *canon = task_policy_canonical(p);
        ck_assert_ptr_nonnull(strstr(canon, "Network.Ask=yes\nNetwork.AskTimeout=90000000\n"));
}
END_TEST

static const char full[] =
        "# every key\n"
        "[Task]\n"
        "Description=Build the workspace\n"
        "Command=sh -c 'make -j4 && echo \"done here\"' x\\ y\n"
        "Timeout=30min\n"
        "Environment=CC=clang \"CFLAGS=-O2 -g\"\n"
        "Environment=LANG=C.UTF-8\n"
        "PassEnvironment=TERM COLORTERM\n"
        "\n"
        "[Filesystem]\n"
        "Workspace=ro\n"
        "ReadOnlyPaths=/usr /etc/ssl\n"
        "ReadOnlyPaths=~/.cargo\n"
        "WritablePaths=~/.cache/ccache //tmp/x/./y/\n"
        "HidePaths=~/.ssh ~/.aws ~/.gnupg ~\n"
        "\n"
        "[Network]\n"
        "Mode=proxy\n"
        "Allow=github.com:443\n"
        "Allow=*.NPMJS.org:443 10.0.0.1:8080 [::1]:443\n"
        "\n"
        "[Credentials]\n"
        "VaultPolicies=ci-read\n"
        "VaultPolicies=ci-write\n"
        "TTL=1h\n"
        "\n"
        "[Limits]\n"
        "MemoryMax=4G\n"
        "TasksMax=512\n"
        "CPUWeight=50\n"
        "CPUQuota=150%\n"
        "\n"
        "[Security]\n"
        "Seccomp=strict\n"
        "Landlock=no\n";

START_TEST(test_every_key) {
        _cleanup_task_policy_ task_policy *p = parse_ok(full);
        const policy_origin *o;

        ck_assert_str_eq(p->description, "Build the workspace");
        ck_assert_str_eq(p->command[0], "sh");
        ck_assert_str_eq(p->command[1], "-c");
        ck_assert_str_eq(p->command[2], "make -j4 && echo \"done here\"");
        ck_assert_str_eq(p->command[3], "x y");
        ck_assert_ptr_null(p->command[4]);
        ck_assert_uint_eq(p->timeout_usec, 30 * USEC_PER_MINUTE);
        ck_assert_uint_eq(strv_length(p->environment), 3);
        ck_assert_str_eq(p->environment[1], "CFLAGS=-O2 -g");
        ck_assert_str_eq(p->environment[2], "LANG=C.UTF-8");
        ck_assert_str_eq(p->pass_environment[1], "COLORTERM");
        ck_assert_int_eq(p->workspace, WORKSPACE_RO);
        ck_assert_uint_eq(strv_length(p->read_only_paths), 3);
        ck_assert_str_eq(p->read_only_paths[2], HOME "/.cargo");
        ck_assert_str_eq(p->writable_paths[0], HOME "/.cache/ccache");
        ck_assert_str_eq(p->writable_paths[1], "/tmp/x/y");
        ck_assert_str_eq(p->hide_paths[3], HOME);
        ck_assert_int_eq(p->network, NETWORK_PROXY);
        ck_assert_uint_eq(p->n_allow, 4);
        ck_assert_str_eq(p->allow[0].host, "github.com");
        ck_assert_uint_eq(p->allow[0].port, 443);
        ck_assert(!p->allow[0].wildcard);
        ck_assert_str_eq(p->allow[1].host, "npmjs.org");
        ck_assert(p->allow[1].wildcard);
        ck_assert(p->allow[2].is_ip);
        ck_assert_uint_eq(p->allow[2].port, 8080);
        ck_assert_str_eq(p->allow[3].host, "::1");
        ck_assert(p->allow[3].is_ip);
        ck_assert_uint_eq(strv_length(p->vault_policies), 2);
        ck_assert_uint_eq(p->token_ttl_usec, 3600 * USEC_PER_SEC);
        ck_assert_uint_eq(p->memory_max, UINT64_C(4) << 30);
        ck_assert_uint_eq(p->tasks_max, 512);
        ck_assert_uint_eq(p->cpu_weight, 50);
        ck_assert_uint_eq(p->cpu_quota_percent, 150);
        ck_assert_str_eq(p->seccomp, "strict");
        ck_assert(!p->landlock);

        o = task_policy_origin(p, "Network.Allow");
        ck_assert_ptr_nonnull(o);
        ck_assert_str_eq(o->file, "/t/x.task");
        ck_assert_uint_eq(o->line, 20);   /* the last assignment */
        ck_assert_uint_eq(task_policy_origin(p, "Task.Description")->line, 3);
        ck_assert_ptr_null(task_policy_origin(p, "Network.Nope"));
        ck_assert_ptr_null(task_policy_origin(p, "Allow"));
}
END_TEST

START_TEST(test_capabilities_and_canonical) {
        _cleanup_task_policy_ task_policy *p = parse_ok(full), *q = parse_ok(full), *c = NULL;
        _cleanup_strv_free_ char **caps = task_policy_capabilities(p);
        _cleanup_free_ char *a = task_policy_canonical(p), *b = task_policy_canonical(q), *d = NULL;
        static const char *const want[] = {
                "readable: /usr", "network: github.com:443", "network: *.npmjs.org:443", "network: [::1]:443",
                "credentials: ci-read", "credentials-ttl: 1h", "environment: CC", "pass-environment: TERM",
                "memory: 4G", "tasks: 512", "cpu-quota: 150%", "landlock: off", "writable: " HOME "/.cache/ccache",
        };

        ck_assert_ptr_nonnull(caps);
        for (size_t i = 0; i < ELEMENTSOF(want); i++) {
                bool found = false;
                for (char **c2 = caps; *c2; c2++)
                        found = found || streq(*c2, want[i]);
                ck_assert_msg(found, "capability '%s' missing", want[i]);
        }
        for (char **c2 = caps; *c2; c2++)
                ck_assert_msg(strncmp(*c2, "seccomp", 7) != 0, "strict is not a capability: %s", *c2);

        ck_assert_ptr_nonnull(a);
        ck_assert_str_eq(a, b);
        ck_assert_ptr_nonnull(strstr(a, "Network.Allow=github.com:443 *.npmjs.org:443 10.0.0.1:8080 [::1]:443\n"));
        ck_assert_int_eq(task_policy_copy(p, &c), 0);
        d = task_policy_canonical(c);
        ck_assert_str_eq(a, d);
        ck_assert_ptr_eq(task_policy_origin(c, "Network.Allow")->file, c->source);
        free(c->seccomp);
        c->seccomp = strdup("default");
        free(d);
        d = task_policy_canonical(c);
        ck_assert_str_ne(a, d);
}
END_TEST

START_TEST(test_seccomp_off_capability) {
        _cleanup_task_policy_ task_policy *p = parse_ok("[Security]\nSeccomp=off\n");
        _cleanup_task_policy_ task_policy *q = parse_ok("[Security]\nSeccomp=~/prof.seccomp\n");
        _cleanup_strv_free_ char **a = task_policy_capabilities(p), **b = task_policy_capabilities(q);
        ck_assert(!task_policy_seccomp_enabled(p));
        ck_assert_str_eq(a[0], "seccomp: off");
        ck_assert_str_eq(q->seccomp, HOME "/prof.seccomp");
        ck_assert_str_eq(b[0], "seccomp: profile " HOME "/prof.seccomp");
}
END_TEST

START_TEST(test_toolchains_key) {
        _cleanup_task_policy_ task_policy *none = parse_ok("");
        _cleanup_task_policy_ task_policy *a = parse_ok("[Filesystem]\nToolchains=auto\n");
        _cleanup_task_policy_ task_policy *paths = parse_ok("[Filesystem]\nToolchains=auto\nToolchains=~/t /opt/x\n");
        _cleanup_task_policy_ task_policy *off = parse_ok("[Filesystem]\nToolchains=~/t\nToolchains=none\n");
        _cleanup_task_policy_ task_policy *c = NULL;
        _cleanup_free_ char *ca = NULL, *cc = NULL;
        policy_error e;

        ck_assert(!task_policy_toolchains_enabled(none));
        ck_assert(a->toolchains_auto && !a->toolchains && task_policy_toolchains_enabled(a));
        ck_assert(!paths->toolchains_auto);
        ck_assert_str_eq(paths->toolchains[0], HOME "/t");
        ck_assert_str_eq(paths->toolchains[1], "/opt/x");
        ck_assert(!task_policy_toolchains_enabled(off));
        ck_assert_int_eq(task_policy_copy(a, &c), 0);
        ck_assert(c->toolchains_auto);
        ca = task_policy_canonical(a);
        cc = task_policy_canonical(paths);
        ck_assert_ptr_nonnull(strstr(ca, "Filesystem.Toolchains=auto\n"));
        ck_assert_ptr_nonnull(strstr(cc, "Filesystem.Toolchains="));
        ck_assert_ptr_nonnull(strstr(strstr(cc, "Filesystem.Toolchains="), "/opt/x"));
        ck_assert_ptr_null(strstr(cc, "Filesystem.Toolchains=auto"));
        e = parse_fail("[Filesystem]\nToolchains=auto ~/x\n");
        ck_assert_str_eq(e.key, "Filesystem.Toolchains");
        ck_assert_ptr_nonnull(strstr(e.message, "must stand alone"));
        e = parse_fail("[Filesystem]\nToolchains=relative/x\n");
        ck_assert_uint_eq(e.line, 2);
        /* every embedded location list is non-empty and made of ~/ or absolute paths */
        const char *const *lists[] = { policy_toolchains_paths, policy_caches_paths, policy_secrets_paths };
        for (size_t i = 0; i < ELEMENTSOF(lists); i++) {
                ck_assert_ptr_nonnull(lists[i][0]);
                for (const char *const *l = lists[i]; *l; l++)
                        ck_assert_msg((*l)[0] == '/' || strncmp(*l, "~/", 2) == 0, "%s", *l);
        }
}
END_TEST

START_TEST(test_allow_sets) {
        _cleanup_task_policy_ task_policy *p = parse_ok("[Network]\nMode=proxy\nAllow=@crates x.org:443 @pypi\n");
        policy_error e;
        bool crates = false, pypi = false;

        ck_assert_ptr_nonnull(policy_allow_set_find("npm"));
        ck_assert_ptr_null(policy_allow_set_find("nope"));
        for (size_t i = 0; i < p->n_allow; i++) {
                crates |= streq(p->allow[i].host, "index.crates.io") && p->allow[i].port == 443;
                pypi |= streq(p->allow[i].host, "files.pythonhosted.org");
        }
        ck_assert(crates && pypi);
        e = parse_fail("[Network]\nAllow=@nope\n");
        ck_assert_ptr_nonnull(strstr(e.message, "unknown set '@nope'"));
        ck_assert_ptr_nonnull(strstr(e.message, "@crates"));
}
END_TEST

/* A uint64 parser: each good string gives its value; each bad one fails
 * and leaves the output alone. */
typedef struct u64_case {
        const char *s;
        uint64_t v;
} u64_case;

static void check_u64_parser(int (*parse)(const char *, uint64_t *), const u64_case *ok, size_t n_ok,
                             const char *const *bad, size_t n_bad) {
        for (size_t i = 0; i < n_ok; i++) {
                uint64_t v = 1234;
                ck_assert_msg(parse(ok[i].s, &v) == 0, "%s", ok[i].s);
                ck_assert_uint_eq(v, ok[i].v);
        }
        for (size_t i = 0; i < n_bad; i++) {
                uint64_t v = 1234;
                ck_assert_msg(parse(bad[i], &v) < 0, "%s", bad[i]);
                ck_assert_uint_eq(v, 1234);
        }
}

START_TEST(test_durations) {
        static const u64_case ok[] = {
                { "2s", 2 * USEC_PER_SEC }, { "15min", 15 * USEC_PER_MINUTE }, { "1h", 3600 * USEC_PER_SEC },
                { "500ms", 500000 }, { "90", 90 * USEC_PER_SEC }, { "1h 30min", 5400 * USEC_PER_SEC },
                { "1d", 86400 * USEC_PER_SEC }, { "10us", 10 }, { "2 min", 120 * USEC_PER_SEC }, { "0", 0 },
        };
        static const char *const bad[] = { "", "abc", "5x", "-1s", "1.5h", "s", "99999999999999999999", "1h x",
                                           "18446744073709551615h" };
        check_u64_parser(policy_parse_duration, ok, ELEMENTSOF(ok), bad, ELEMENTSOF(bad));
        {
                _cleanup_task_policy_ task_policy *p = parse_ok("[Task]\nTimeout=500ms\n[Credentials]\nTTL=90\n");
                ck_assert_uint_eq(p->timeout_usec, 500000);
                ck_assert_uint_eq(p->token_ttl_usec, 90 * USEC_PER_SEC);
        }
}
END_TEST

START_TEST(test_sizes) {
        static const u64_case ok[] = {
                { "4G", UINT64_C(4) << 30 }, { "512M", UINT64_C(512) << 20 }, { "1K", 1024 }, { "1000", 1000 },
                { "infinity", POLICY_INFINITY }, { "2T", UINT64_C(2) << 40 }, { "1GiB", UINT64_C(1) << 30 },
                { "3k", 3072 },
        };
        static const char *const bad[] = { "", "G", "4X", "-1", "4 G", "1.5G", "99999999999E", "4Gx", "inf" };
        check_u64_parser(policy_parse_size, ok, ELEMENTSOF(ok), bad, ELEMENTSOF(bad));
        {
                _cleanup_task_policy_ task_policy *p = parse_ok("[Limits]\nMemoryMax=infinity\nTasksMax=infinity\n");
                _cleanup_task_policy_ task_policy *q = parse_ok("[Limits]\nMemoryMax=1048576\n");
                ck_assert_uint_eq(p->memory_max, POLICY_INFINITY);
                ck_assert_uint_eq(p->tasks_max, POLICY_INFINITY);
                ck_assert_uint_eq(q->memory_max, 1048576);
        }
}
END_TEST

START_TEST(test_booleans) {
        static const char *const yes[] = { "yes", "true", "1", "on", "YES", "True" };
        static const char *const no[] = { "no", "false", "0", "off", "No", "OFF" };
        bool b;
        for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
                _cleanup_free_ char *t = NULL;
                task_policy *p;
                b = false;
                ck_assert_int_eq(policy_parse_bool(yes[i], &b), 0);
                ck_assert(b);
                ck_assert_int_ge(asprintf(&t, "[Security]\nLandlock=%s\n", no[i]), 0);
                p = parse_ok(t);
                ck_assert(!p->landlock);
                task_policy_free(p);
                b = true;
                ck_assert_int_eq(policy_parse_bool(no[i], &b), 0);
                ck_assert(!b);
        }
        b = true;
        ck_assert_int_eq(policy_parse_bool("maybe", &b), -EINVAL);
        ck_assert_int_eq(policy_parse_bool("", &b), -EINVAL);
        ck_assert(b);
}
END_TEST

START_TEST(test_lists) {
        _cleanup_task_policy_ task_policy *p = parse_ok(
                "[Filesystem]\n"
                "HidePaths=/a /b\n"
                "HidePaths=/c\n"
                "ReadOnlyPaths=/x\n"
                "ReadOnlyPaths=\n"      /* reset */
                "ReadOnlyPaths=/y \"/with space\"\n"
                "[Network]\n"
                "Mode=proxy\n"
                "Allow=a.com:1\n"
                "Allow=\n"
                "Allow=b.com:2\n"
                "[Credentials]\n"
                "VaultPolicies=x\n"
                "VaultPolicies=none\n");
        ck_assert_uint_eq(strv_length(p->hide_paths), 3);
        ck_assert_str_eq(p->hide_paths[2], "/c");
        ck_assert_uint_eq(strv_length(p->read_only_paths), 2);
        ck_assert_str_eq(p->read_only_paths[0], "/y");
        ck_assert_str_eq(p->read_only_paths[1], "/with space");
        ck_assert_uint_eq(p->n_allow, 1);
        ck_assert_str_eq(p->allow[0].host, "b.com");
        ck_assert_ptr_null(p->vault_policies);
}
END_TEST

START_TEST(test_home_expansion) {
        char *s = NULL;
        ck_assert_int_eq(policy_expand_path("~", "/home/a", &s), 0);
        ck_assert_str_eq(s, "/home/a");
        free(s);
        ck_assert_int_eq(policy_expand_path("~/x//y/", "/home/a", &s), 0);
        ck_assert_str_eq(s, "/home/a/x/y");
        free(s);
        s = NULL;
        ck_assert_int_eq(policy_expand_path("~root/x", "/home/a", &s), -EINVAL);
        ck_assert_int_eq(policy_expand_path("~/x", NULL, &s), -EINVAL);
        ck_assert_int_eq(policy_expand_path("relative", "/home/a", &s), -EINVAL);
        ck_assert_int_eq(policy_expand_path("/a/../etc", "/home/a", &s), -EINVAL);
        ck_assert_ptr_null(s);

        {
                policy_error e = {};
                task_policy *p = NULL;
                const char *t = "[Filesystem]\nHidePaths=~/.ssh\n";
                ck_assert_int_eq(policy_parse_buffer(t, strlen(t), "/t/h.task", NULL, NULL, &p, &e), -EINVAL);
                ck_assert_uint_eq(e.line, 2);
                ck_assert_str_eq(e.key, "Filesystem.HidePaths");
        }
}
END_TEST

START_TEST(test_hosts) {
        static const struct {
                const char *s, *host;
                uint16_t port;
                bool wildcard, is_ip;
        } ok[] = {
                { "github.com:443", "github.com", 443, false, false },
                { "*.npmjs.org:443", "npmjs.org", 443, true, false },
                { "Registry.NPMJS.org:80", "registry.npmjs.org", 80, false, false },
                { "127.0.0.1:8080", "127.0.0.1", 8080, false, true },
                { "[::1]:443", "::1", 443, false, true },
                { "[2001:db8::1]:65535", "2001:db8::1", 65535, false, true },
                { "localhost:1", "localhost", 1, false, false },
        };
        static const char *const bad[] = {
                "github.com", "github.com:", "github.com:0", "github.com:65536", "github.com:x", ":443",
                "::1:443", "[::1]443", "[::1]", "[nothost]:1", "*.com:443", "*:443", "a.*.com:443",
                "*.1.2.3.4:1", "bad_host!:1", "-a.com:1", "a..com:1", "1.2.3:80", "a.com:443x", "",
        };
        for (size_t i = 0; i < ELEMENTSOF(ok); i++) {
                policy_host h = {};
                ck_assert_msg(policy_parse_host_port(ok[i].s, &h) == 0, "%s", ok[i].s);
                ck_assert_str_eq(h.host, ok[i].host);
                ck_assert_uint_eq(h.port, ok[i].port);
                ck_assert(h.wildcard == ok[i].wildcard);
                ck_assert(h.is_ip == ok[i].is_ip);
                free(h.host);
        }
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                policy_host h = {};
                ck_assert_msg(policy_parse_host_port(bad[i], &h) < 0, "'%s' accepted", bad[i]);
                ck_assert_ptr_null(h.host);
        }
        {
                policy_host w = {};
                ck_assert_int_eq(policy_parse_host_port("*.npmjs.org:443", &w), 0);
                ck_assert(policy_host_match(&w, "registry.npmjs.org", 443));
                ck_assert(policy_host_match(&w, "A.B.NPMJS.ORG", 443));
                ck_assert(!policy_host_match(&w, "npmjs.org", 443));
                ck_assert(!policy_host_match(&w, "evilnpmjs.org", 443));
                ck_assert(!policy_host_match(&w, "registry.npmjs.org", 80));
                free(w.host);
        }
}
END_TEST

START_TEST(test_command_split) {
        char **v = NULL;
        ck_assert_int_eq(policy_split_words("  a 'b c'  \"d \\\"e\\\" $x\" f\\ g ''", &v), 0);
        ck_assert_uint_eq(strv_length(v), 5);
        ck_assert_str_eq(v[0], "a");
        ck_assert_str_eq(v[1], "b c");
        ck_assert_str_eq(v[2], "d \"e\" $x");
        ck_assert_str_eq(v[3], "f g");
        ck_assert_str_eq(v[4], "");
        strv_free(v);
        v = NULL;
        ck_assert_int_eq(policy_split_words("a 'b", &v), -EINVAL);
        ck_assert_int_eq(policy_split_words("a \"b", &v), -EINVAL);
        ck_assert_int_eq(policy_split_words("a\\", &v), -EINVAL);
        ck_assert_ptr_null(v);
        {
                _cleanup_task_policy_ task_policy *p = parse_ok("[Task]\nCommand=sh -c \"a ; b # c\"  # comment\n");
                ck_assert_uint_eq(strv_length(p->command), 3);
                ck_assert_str_eq(p->command[2], "a ; b # c");
        }
}
END_TEST

START_TEST(test_contract_sketch) {
        /* the CONTRACT §6 example, inline comments included */
        _cleanup_task_policy_ task_policy *p = parse_ok(
                "[Task]\nDescription=Build the workspace\nCommand=make -j4\nTimeout=30min\n\n"
                "[Filesystem]\nWorkspace=overlay          # overlay (copy-on-write; default) | ro | rw | none\n"
                "ReadOnlyPaths=/usr /etc/ssl\nHidePaths=~/.ssh ~/.aws ~/.gnupg\n\n"
                "[Network]\nMode=none                  # none (default) | proxy\n\n"
                "[Credentials]\nVaultPolicies=ci-read      # none: the sandbox gets no token\nTTL=15min\n\n"
                "[Limits]\nMemoryMax=4G\nTasksMax=512\n\n"
                "[Security]\nSeccomp=default            # default | strict | a profile file\nLandlock=yes\n");
        ck_assert_int_eq(p->workspace, WORKSPACE_OVERLAY);
        ck_assert_str_eq(p->vault_policies[0], "ci-read");
        ck_assert_ptr_null(p->vault_policies[1]);
}
END_TEST

START_TEST(test_long_lines_and_continuation) {
        /* inih's own buffer is 200 bytes; a longer line must stay one line */
        _cleanup_free_ char *t = NULL, *d = malloc(3001);
        ck_assert_ptr_nonnull(d);
        memset(d, 'x', 3000);
        d[3000] = 0;
        memcpy(d + 2500, "Seccomp=off", 11);
        ck_assert_int_ge(asprintf(&t, "[Task]\nDescription=%s\n   [Security]\n  Landlock=no\n", d), 0);
        {
                _cleanup_task_policy_ task_policy *p = parse_ok(t);
                ck_assert_uint_eq(strlen(p->description), 3000);
                ck_assert_str_eq(p->seccomp, "default");
                ck_assert(!p->landlock);
        }
        /* an indented line is a line of its own, never a continuation */
        {
                policy_error e = parse_fail("[Task]\nCommand=a\n  b\n");
                ck_assert_uint_eq(e.line, 3);
        }
        {
                policy_error e = parse_fail("[Task]\nCommand=a\n  Command=b\n");
                ck_assert_uint_eq(e.line, 3);
                ck_assert_str_eq(e.key, "Task.Command");
        }
}
END_TEST

START_TEST(test_errors) {
        static const struct {
                const char *text;
                unsigned line;
                const char *key;
        } cases[] = {
                { "[Task]\n[Nope]\nX=1\n", 2, "" },                                           /* unknown section */
                { "[Task]\nDescription=a\nFrobnicate=yes\n", 3, "Task.Frobnicate" },           /* unknown key */
                { "[Network]\nMode=open\n", 2, "Network.Mode" },                               /* bad value */
                { "[Task]\nCommand=a\nTimeout=1h\nCommand=b\n", 4, "Task.Command" },           /* repeated scalar */
                { "[Network]\nMode=proxy\nAllow=a.com:443 github.com\n", 3, "Network.Allow" }, /* missing port */
                { "[Network]\nAllow=a.com:443\n", 2, "Network.Allow" },                        /* Allow without proxy */
                { "[Network]\nAsk=yes\n", 2, "Network.Ask" },                                  /* Ask without proxy */
                { "[Network]\nMode=proxy\nAsk=perhaps\n", 3, "Network.Ask" },
                { "[Network]\nMode=proxy\nAskTimeout=0\n", 3, "Network.AskTimeout" },
                { "[Network]\nMode=proxy\nAskTimeout=2h\n", 3, "Network.AskTimeout" },
                { "Command=x\n", 1, "" },                                                      /* outside a section */
                { "[Task]\nthis is not ini\n", 2, "" },
                { "[Task\n", 1, "" },
                { "[Task]x\n", 1, "" },
                { "[Task]\nCommand:x\n", 2, "" },
                { "[Task]\n=x\n", 2, "" },
                { "[Task]\nCommand=\n", 2, "Task.Command" },
                { "[Task]\nCommand='a\n", 2, "Task.Command" },
                { "[Task]\nTimeout=soon\n", 2, "Task.Timeout" },
                { "[Task]\nEnvironment=NOEQUALS\n", 2, "Task.Environment" },
                { "[Task]\nEnvironment=1A=b\n", 2, "Task.Environment" },
                { "[Task]\nPassEnvironment=A-B\n", 2, "Task.PassEnvironment" },
                { "[Filesystem]\nWorkspace=copy\n", 2, "Filesystem.Workspace" },
                { "[Filesystem]\nReadOnlyPaths=relative/path\n", 2, "Filesystem.ReadOnlyPaths" },
                { "[Filesystem]\nWritablePaths=/a/../b\n", 2, "Filesystem.WritablePaths" },
                { "[Credentials]\nVaultPolicies=root\n", 2, "Credentials.VaultPolicies" },
                { "[Credentials]\nVaultPolicies=a none\n", 2, "Credentials.VaultPolicies" },
                { "[Credentials]\nTTL=0\n", 2, "Credentials.TTL" },
                { "[Limits]\nMemoryMax=4Q\n", 2, "Limits.MemoryMax" },
                { "[Limits]\nMemoryMax=0\n", 2, "Limits.MemoryMax" },
                { "[Limits]\nTasksMax=4K\n", 2, "Limits.TasksMax" },
                { "[Limits]\nCPUWeight=0\n", 2, "Limits.CPUWeight" },
                { "[Limits]\nCPUQuota=150\n", 2, "Limits.CPUQuota" },
                { "[Security]\nSeccomp=relaxed\n", 2, "Security.Seccomp" },
                { "[Security]\nLandlock=maybe\n", 2, "Security.Landlock" },
                { "[Security]\nLandlock=yes\nLandlock=no\n", 3, "Security.Landlock" },
                { "[Task]\nDescription=a\x01\n", 2, "" },                                      /* control char */
                { "[Task]\nDescription=\xff\xfe\n", 2, "" },                                   /* invalid UTF-8 */
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                policy_error e = parse_fail(cases[i].text);
                ck_assert_msg(e.line == cases[i].line, "case %zu: line %u, want %u (%s)", i, e.line, cases[i].line,
                              e.message);
                ck_assert_msg(streq(e.key, cases[i].key), "case %zu: key '%s', want '%s'", i, e.key, cases[i].key);
        }
        {
                policy_error e = parse_fail("[Task]\nCommand=a\nCommand=b\n");
                ck_assert_ptr_nonnull(strstr(e.message, "line 2"));
        }
}
END_TEST

START_TEST(test_binary_and_huge) {
        static const char bin[] = "[Task]\nDescription=a\0b\n";
        policy_error e = {};
        task_policy *p = NULL;
        char *big, *line;
        char path[] = "/tmp/test-policy-XXXXXX";
        int fd;

        ck_assert_int_eq(policy_parse_buffer(bin, sizeof(bin) - 1, "/t/b.task", NULL, HOME, &p, &e), -EINVAL);
        ck_assert_uint_eq(e.line, 2);
        ck_assert_ptr_nonnull(strstr(e.message, "NUL"));

        /* a line longer than 4096 bytes */
        line = malloc(5000);
        ck_assert_ptr_nonnull(line);
        memset(line, 'a', 4999);
        memcpy(line, "[Task]\nDescription=", 19);
        line[4999] = 0;
        memset(&e, 0, sizeof(e));
        ck_assert_int_eq(policy_parse_buffer(line, strlen(line), "/t/l.task", NULL, HOME, &p, &e), -EINVAL);
        ck_assert_uint_eq(e.line, 2);
        ck_assert_ptr_nonnull(strstr(e.message, "4096"));
        free(line);

        /* a 2 MiB file: refused with a clear error, before parsing */
        big = malloc(2 * 1024 * 1024);
        ck_assert_ptr_nonnull(big);
        for (size_t i = 0; i < 2 * 1024 * 1024; i++)
                big[i] = (i % 64 == 63) ? '\n' : '#';
        memset(&e, 0, sizeof(e));
        ck_assert_int_eq(policy_parse_buffer(big, 2 * 1024 * 1024, "/t/big.task", NULL, HOME, &p, &e), -EINVAL);
        ck_assert_ptr_nonnull(strstr(e.message, "too large"));

        fd = mkstemp(path);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(write(fd, big, 2 * 1024 * 1024), 2 * 1024 * 1024);
        close(fd);
        memset(&e, 0, sizeof(e));
        ck_assert_int_eq(policy_parse_file(path, "big", HOME, &p, &e), -EFBIG);
        ck_assert_str_eq(e.file, path);
        ck_assert_ptr_nonnull(strstr(e.message, "too large"));
        ck_assert_ptr_null(p);
        unlink(path);
        free(big);

        ck_assert_int_eq(policy_parse_file("/nonexistent/x.task", NULL, HOME, &p, &e), -ENOENT);
        ck_assert_str_eq(e.file, "/nonexistent/x.task");
}
END_TEST

START_TEST(test_names) {
        policy_error e = {};
        task_policy *p = NULL;
        ck_assert(policy_name_is_valid("a"));
        ck_assert(policy_name_is_valid("build-2.x_y"));
        ck_assert(!policy_name_is_valid(""));
        ck_assert(!policy_name_is_valid(".."));
        ck_assert(!policy_name_is_valid("a/b"));
        ck_assert(!policy_name_is_valid("a b"));
        ck_assert(!policy_name_is_valid("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")); /* 65 */
        ck_assert_int_eq(policy_parse_buffer("", 0, "/t/bad name.task", NULL, HOME, &p, &e), -EINVAL);
        ck_assert_ptr_nonnull(strstr(e.message, "task name"));
}
END_TEST

/* The registry: a temporary user dir and "etc" dir over the built-ins. */
static char tmpdir[64];

static void write_file(const char *dir, const char *name, const char *text) {
        _cleanup_free_ char *p = NULL;
        FILE *f;
        ck_assert_int_ge(asprintf(&p, "%s/%s/%s", tmpdir, dir, name), 0);
        f = fopen(p, "we");
        ck_assert_ptr_nonnull(f);
        fputs(text, f);
        fclose(f);
}

static void registry_setup(void) {
        char user[128], etc[128];
        strcpy(tmpdir, "/tmp/test-policy-reg-XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(tmpdir));
        snprintf(user, sizeof(user), "%s/user", tmpdir);
        snprintf(etc, sizeof(etc), "%s/etc", tmpdir);
        ck_assert_int_eq(mkdir(user, 0700), 0);
        ck_assert_int_eq(mkdir(etc, 0700), 0);
}

static void registry_teardown(void) {
        _cleanup_free_ char *cmd = NULL;
        ck_assert_int_ge(asprintf(&cmd, "rm -rf '%s'", tmpdir), 0);
        ck_assert_int_eq(system(cmd), 0);
}

START_TEST(test_registry_order) {
        _cleanup_policy_registry_ policy_registry *r = NULL;
        _cleanup_free_ char *user = NULL, *etc = NULL, *missing = NULL;
        const task_policy *t;

        ck_assert_int_ge(asprintf(&user, "%s/user", tmpdir), 0);
        ck_assert_int_ge(asprintf(&etc, "%s/etc", tmpdir), 0);
        ck_assert_int_ge(asprintf(&missing, "%s/missing", tmpdir), 0);
        const char *dirs[] = { user, missing, etc, NULL };

        write_file("user", "build.task", "[Task]\nDescription=user build\n");
        write_file("etc", "build.task", "[Task]\nDescription=etc build\n");
        write_file("etc", "test.task", "[Task]\nDescription=etc test\n");
        write_file("etc", "lint.task", "[Task]\nDescription=etc lint\n");
        write_file("etc", "notatask.txt", "garbage");

        ck_assert_int_eq(policy_registry_load(dirs, HOME, NULL, &r), 0);
        ck_assert_uint_eq(policy_registry_n_errors(r), 0);
        ck_assert_uint_eq(policy_registry_count(r), 5);   /* build default lint shell test */
        ck_assert_str_eq(policy_registry_get(r, 0)->name, "build");
        ck_assert_str_eq(policy_registry_get(r, 1)->name, "default");
        ck_assert_str_eq(policy_registry_get(r, 2)->name, "lint");
        ck_assert_str_eq(policy_registry_get(r, 4)->name, "test");
        ck_assert_ptr_null(policy_registry_get(r, 5));

        t = policy_registry_find(r, "build");
        ck_assert_str_eq(t->description, "user build");
        ck_assert_ptr_nonnull(strstr(t->source, "/user/build.task"));
        t = policy_registry_find(r, "test");
        ck_assert_str_eq(t->description, "etc test");
        t = policy_registry_find(r, "default");
        ck_assert_str_eq(t->source, "builtin:default.task");
        ck_assert_ptr_null(policy_registry_find(r, "nope"));
}
END_TEST

START_TEST(test_registry_broken) {
        _cleanup_policy_registry_ policy_registry *r1 = NULL, *r2 = NULL, *r3 = NULL;
        _cleanup_free_ char *user = NULL, *etc = NULL;
        const policy_error *e;

        ck_assert_int_ge(asprintf(&user, "%s/user", tmpdir), 0);
        ck_assert_int_ge(asprintf(&etc, "%s/etc", tmpdir), 0);
        const char *dirs[] = { user, etc, NULL };

        write_file("user", "test.task", "[Task]\nDescription=good test\n");
        write_file("user", "lint.task", "[Task]\nDescription=good lint\n");
        ck_assert_int_eq(policy_registry_load(dirs, HOME, NULL, &r1), 0);
        ck_assert_str_eq(policy_registry_find(r1, "lint")->description, "good lint");

        /* lint breaks; an etc lint exists but must not take over; test stays good */
        write_file("user", "lint.task", "[Task]\nDescription=x\nBogus=1\n");
        write_file("etc", "lint.task", "[Task]\nDescription=etc lint\n");
        write_file("user", "aaa.task", "[Nope]\n");
        write_file("user", "bad name.task", "[Task]\n");
        ck_assert_int_eq(policy_registry_load(dirs, HOME, NULL, &r2), 0);
        ck_assert_uint_eq(policy_registry_n_errors(r2), 3);
        ck_assert_ptr_null(policy_registry_find(r2, "lint"));
        ck_assert_ptr_null(policy_registry_find(r2, "aaa"));
        ck_assert_str_eq(policy_registry_find(r2, "test")->description, "good test");
        ck_assert_ptr_nonnull(policy_registry_find(r2, "default"));
        e = policy_registry_error(r2, 0);   /* files in name order */
        ck_assert_ptr_nonnull(strstr(e->file, "/user/aaa.task"));
        ck_assert_uint_eq(e->line, 1);
        e = policy_registry_error(r2, 2);
        ck_assert_ptr_nonnull(strstr(e->file, "/user/lint.task"));
        ck_assert_uint_eq(e->line, 3);
        ck_assert_str_eq(e->key, "Task.Bogus");
        ck_assert_ptr_null(policy_registry_error(r2, 3));

        /* with the previous registry, the broken task keeps its old definition */
        ck_assert_int_eq(policy_registry_load(dirs, HOME, r1, &r3), 0);
        ck_assert_uint_eq(policy_registry_n_errors(r3), 3);
        ck_assert_str_eq(policy_registry_find(r3, "lint")->description, "good lint");
        ck_assert_str_eq(task_policy_origin(policy_registry_find(r3, "lint"), "Task.Description")->file,
                         policy_registry_find(r3, "lint")->source);
        ck_assert_ptr_null(policy_registry_find(r3, "aaa"));
}
END_TEST

START_TEST(test_seccomp_profile_file) {
        static const char text[] =
                "# custom\n"
                "include default\n"
                "socket eperm arg0 == AF_INET   # no IPv4\n"
                "ioctl eperm arg1 & 0xffffffff == TIOCSTI\n"
                "clone eperm arg0 & CLONE_NEWUSER == CLONE_NEWUSER\n"
                "getppid enosys\n"
                "mmap kill arg2 >= 7\n";
        _cleanup_(seccomp_profile_file_freep) seccomp_profile_file *f = NULL;
        policy_error e = {};
        const seccomp_rule *last;

        ck_assert_int_eq(seccomp_profile_parse_buffer(text, strlen(text), "/p", &f, &e), 0);
        ck_assert_uint_gt(f->n_rules, 50);
        last = &f->rules[f->n_rules - 1];
        ck_assert_str_eq(last->syscall, "mmap");
        ck_assert_int_eq(last->action, SECCOMP_ACTION_KILL);
        ck_assert_uint_eq(last->n_conds, 1);
        ck_assert_uint_eq(last->conds[0].arg, 2);
        ck_assert_int_eq(last->conds[0].op, SECCOMP_CMP_GE);
        ck_assert_uint_eq(last->conds[0].value, 7);
        ck_assert_int_eq(f->rules[f->n_rules - 4].conds[0].op, SECCOMP_CMP_MASKED_EQ);
        ck_assert_uint_eq(f->rules[f->n_rules - 4].conds[0].mask, 0xffffffff);

        static const char *const bad[] = {
                "ptrace\n", "ptrace allow\n", "ptrace eperm arg9 == 1\n", "ptrace eperm arg0 ~ 1\n",
                "ptrace eperm arg0 == 1 arg0 == 2\n", "ptrace eperm arg0 &\n", "include relaxed\n", "Bad-Name eperm\n",
                "ptrace eperm arg0 == NOPE\n",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                seccomp_profile_file *g = NULL;
                memset(&e, 0, sizeof(e));
                ck_assert_msg(seccomp_profile_parse_buffer(bad[i], strlen(bad[i]), "/p", &g, &e) == -EINVAL, "%s", bad[i]);
                ck_assert_uint_eq(e.line, 1);
                ck_assert_ptr_null(g);
        }
        ck_assert_ptr_nonnull(seccomp_profile_find("default"));
        ck_assert_ptr_nonnull(seccomp_profile_find("strict"));
        ck_assert_ptr_null(seccomp_profile_find("off"));
}
END_TEST

static Suite *policy_suite(void) {
        Suite *s = suite_create("policy");
        TCase *tc = tcase_create("parse");
        TCase *reg = tcase_create("registry");

        tcase_add_test(tc, test_builtins);
        tcase_add_test(tc, test_default_task);
        tcase_add_test(tc, test_empty_is_defaults);
        tcase_add_test(tc, test_tmpfs_sizes_and_change_max);
        tcase_add_test(tc, test_every_key);
        tcase_add_test(tc, test_capabilities_and_canonical);
        tcase_add_test(tc, test_seccomp_off_capability);
        tcase_add_test(tc, test_durations);
        tcase_add_test(tc, test_sizes);
        tcase_add_test(tc, test_booleans);
        tcase_add_test(tc, test_lists);
        tcase_add_test(tc, test_home_expansion);
        tcase_add_test(tc, test_hosts);
        tcase_add_test(tc, test_command_split);
        tcase_add_test(tc, test_contract_sketch);
        tcase_add_test(tc, test_long_lines_and_continuation);
        tcase_add_test(tc, test_errors);
        tcase_add_test(tc, test_ask);
        tcase_add_test(tc, test_binary_and_huge);
        tcase_add_test(tc, test_names);
        tcase_add_test(tc, test_seccomp_profile_file);
        tcase_add_test(tc, test_toolchains_key);
        tcase_add_test(tc, test_allow_sets);
        suite_add_tcase(s, tc);

        tcase_add_checked_fixture(reg, registry_setup, registry_teardown);
        tcase_add_test(reg, test_registry_order);
        tcase_add_test(reg, test_registry_broken);
        suite_add_tcase(s, reg);
        return s;
}

int main(void) {
        return unit_run(policy_suite(), false);
}
