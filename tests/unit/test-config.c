/* core/config.c: agentd.conf's defaults, each kind of key, what is refused
 * (as file:line), and a reload on a composed daemon (fixture.h) that keeps the
 * previous configuration when the new file is broken and takes a good one. The
 * parser is driven through config_load() (core/config.h); the reload through
 * daemon_reload() (core/daemon.h, SIGHUP's path in main.c), observed as the
 * server's MaxMessageSize. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "daemon.h"
#include "fixture.h"
#include "unit.h"

static fixture f;
static char conf_path[PATH_MAX + 32];

static void write_conf(const char *text, size_t len) {
        FILE *fp = fopen(conf_path, "we");
        ck_assert_ptr_nonnull(fp);
        ck_assert_uint_eq(fwrite(text, 1, len, fp), len);
        ck_assert_int_eq(fclose(fp), 0);
}

static void setup(void) {
        fixture_init(&f);
        snprintf(conf_path, sizeof(conf_path), "%s/agentd.conf", f.config_dir);
}

static void teardown(void) {
        fixture_stop(&f);
}

/* config_load() of `text`: its return; the configuration in *ret on success,
 * the error text in why. */
static int load(const char *text, agentd_config **ret, char *why, size_t whylen) {
        write_conf(text, strlen(text));
        _cleanup_error_ agentd_error err = {};
        *ret = NULL;
        int r = config_load(conf_path, f.home, ret, &err);
        snprintf(why, whylen, "%s", error_is_set(&err) ? error_message(&err) : "");
        if (r < 0) {
                ck_assert_ptr_null(*ret);
                ck_assert_int_eq(err.code, ERROR_INVALID_PARAMS);
        }
        return r;
}

/* `text` is refused at `line` with a message holding `what`. */
static void assert_refused(const char *text, unsigned line, const char *what) {
        agentd_config *c = NULL;
        char why[512], want[PATH_MAX + 64];
        ck_assert_int_lt(load(text, &c, why, sizeof(why)), 0);
        snprintf(want, sizeof(want), "%s:%u: ", conf_path, line);
        ck_assert_msg(strncmp(why, want, strlen(want)) == 0, "'%s' does not start with '%s'", why, want);
        ck_assert_msg(strstr(why, what) != NULL, "'%s' does not say '%s'", why, what);
}

START_TEST(test_defaults_without_a_file) {
        agentd_config *c = NULL;
        _cleanup_error_ agentd_error err = {};
        /* No file at the path: not an error, every key at its default. */
        ck_assert_int_eq(config_load(conf_path, f.home, &c, &err), 0);
        ck_assert(!error_is_set(&err));
        char want[PATH_MAX + 16];
        snprintf(want, sizeof(want), "%s/agentd", f.state_home);
        ck_assert_str_eq(c->state_directory, want);
        ck_assert_uint_eq(c->max_message_size, 1024 * 1024);
        ck_assert_uint_eq(c->max_connections, 512);
        ck_assert_uint_eq(c->max_in_flight, 32);
        ck_assert_uint_eq(c->max_connections_per_sandbox, 8);
        ck_assert_uint_eq(c->sandbox_request_rate, 20);
        ck_assert_uint_eq(c->max_sandboxes, 1024);
        ck_assert_uint_eq(c->log_limit, 1024 * 1024);
        ck_assert_uint_eq(c->proxy_port, 3128);
        ck_assert_uint_eq(c->proxy_header_timeout_ms, 10000);
        ck_assert(!c->require_limits);
        ck_assert_uint_eq(c->warm_sandboxes, 0);
        ck_assert_uint_eq(c->warm_idle_sec, 300);
        ck_assert_uint_eq(c->egress_denials, 20);
        ck_assert_uint_eq(c->egress_window_s, 60);
        ck_assert_uint_eq(c->audit_min_free, 1024 * 1024);
        ck_assert_uint_eq(c->audit_file_size, 16u * 1024 * 1024);
        ck_assert_uint_eq(c->retention_sandbox_days, 30);
        ck_assert_uint_eq(c->retention_sandbox_records, 1000);
        ck_assert_uint_eq(c->retention_audit_days, 365);
        ck_assert_uint_eq(c->retention_audit_max, (size_t) 1024 * 1024 * 1024);
        ck_assert_ptr_null(c->cgroup_path);
        ck_assert_ptr_null(c->sandbox_helper);
        ck_assert_ptr_null(c->vault_address);
        ck_assert_ptr_null(c->vault_namespace);
        ck_assert_ptr_null(c->vault_ca_certificate);
        ck_assert_str_eq(c->vault_approle_path, "approle");
        ck_assert_str_eq(c->tpm_tcti, "device:/dev/tpmrm0");
        ck_assert(!c->tpm_allow_software_key);
        ck_assert_ptr_null(c->telemetry_endpoint);
        ck_assert(!c->telemetry_include_arguments);
        ck_assert_uint_eq(c->telemetry_queue_max, 2048);
        ck_assert_uint_eq(c->telemetry_flush_interval_ms, 1000);
        config_free(c);

        /* An empty file and no path at all: the same defaults. */
        char why[512];
        ck_assert_int_eq(load("", &c, why, sizeof(why)), 0);
        ck_assert_uint_eq(c->max_message_size, 1024 * 1024);
        config_free(c);
        ck_assert_int_eq(config_load(NULL, f.home, &c, NULL), 0);
        ck_assert_uint_eq(c->max_connections, 512);
        config_free(c);
}
END_TEST

START_TEST(test_default_path_follows_xdg) {
        char *p = config_default_path();
        char want[PATH_MAX + 32];
        snprintf(want, sizeof(want), "%s/agentd.conf", f.config_dir);
        ck_assert_str_eq(p, want);
        free(p);
        /* Without $XDG_CONFIG_HOME: ~/.config. */
        unsetenv("XDG_CONFIG_HOME");
        p = config_default_path();
        snprintf(want, sizeof(want), "%s/.config/agentd/agentd.conf", f.home);
        ck_assert_str_eq(p, want);
        free(p);
}
END_TEST

START_TEST(test_bool_keys) {
        static const struct {
                const char *v;
                bool want;
        } cases[] = {
                { "yes", true }, { "true", true }, { "1", true }, { "on", true }, { "YES", true },
                { "no", false }, { "false", false }, { "0", false }, { "off", false }, { "Off", false },
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                char text[256], why[512];
                snprintf(text, sizeof(text), "[Daemon]\nRequireLimits=%s\n[TPM]\nAllowSoftwareKey=%s\n"
                         "[Telemetry]\nIncludeArguments=%s\n", cases[i].v, cases[i].v, cases[i].v);
                agentd_config *c = NULL;
                ck_assert_msg(load(text, &c, why, sizeof(why)) == 0, "%s: %s", cases[i].v, why);
                ck_assert_int_eq(c->require_limits, cases[i].want);
                ck_assert_int_eq(c->tpm_allow_software_key, cases[i].want);
                ck_assert_int_eq(c->telemetry_include_arguments, cases[i].want);
                config_free(c);
        }
        assert_refused("[Daemon]\nRequireLimits=maybe\n", 2, "bad value for RequireLimits=: \"maybe\"");
        assert_refused("[Daemon]\nRequireLimits=\n", 2, "bad value for RequireLimits=");
}
END_TEST

START_TEST(test_size_keys) {
        char why[512];
        agentd_config *c = NULL;
        ck_assert_int_eq(load("[Daemon]\nMaxMessageSize=64K\nLogLimit=3M\n[Audit]\nMinFreeSpace=2G\nFileSize=4096\n"
                              "[Retention]\nAuditMaxSize=5k\n", &c, why, sizeof(why)), 0);
        ck_assert_uint_eq(c->max_message_size, 64 * 1024);
        ck_assert_uint_eq(c->log_limit, 3 * 1024 * 1024);
        ck_assert_uint_eq(c->audit_min_free, 2ull * 1024 * 1024 * 1024);
        ck_assert_uint_eq(c->audit_file_size, 4096);
        ck_assert_uint_eq(c->retention_audit_max, 5 * 1024);
        config_free(c);
        /* The range's ends are in it. */
        ck_assert_int_eq(load("[Daemon]\nMaxMessageSize=1024\n", &c, why, sizeof(why)), 0);
        ck_assert_uint_eq(c->max_message_size, 1024);
        config_free(c);
        ck_assert_int_eq(load("[Daemon]\nMaxMessageSize=64M\n", &c, why, sizeof(why)), 0);
        ck_assert_uint_eq(c->max_message_size, 64u * 1024 * 1024);
        config_free(c);

        assert_refused("[Daemon]\nMaxMessageSize=1023\n", 2, "bad value for MaxMessageSize=: \"1023\"");
        assert_refused("[Daemon]\nMaxMessageSize=65537K\n", 2, "MaxMessageSize=");
        assert_refused("[Daemon]\nLogLimit=-1\n", 2, "bad value for LogLimit=");
        assert_refused("[Daemon]\nLogLimit=12T\n", 2, "bad value for LogLimit=");
        assert_refused("[Daemon]\nLogLimit=K\n", 2, "bad value for LogLimit=");
        assert_refused("[Daemon]\nLogLimit=99999999999999999999\n", 2, "bad value for LogLimit=");
        /* Overflows size_t only once multiplied. */
        assert_refused("[Audit]\nMinFreeSpace=18446744073709551615G\n", 2, "bad value for MinFreeSpace=");
        assert_refused("[Audit]\nFileSize=4095\n", 2, "bad value for FileSize=");
}
END_TEST

/* The "duration" keys are whole numbers of the unit their name says (Sec, Ms, Days). */
START_TEST(test_number_and_duration_keys) {
        char why[512];
        agentd_config *c = NULL;
        ck_assert_int_eq(load("[Daemon]\nMaxConnections=7\nSandboxRequestRate=0\nProxyPort=65535\n"
                              "ProxyHeaderTimeoutMs=100\nMaxSandboxes=0\n"
                              "[Pool]\nWarmSandboxes=16\nWarmIdleSec=1\n"
                              "[Response]\nEgressDenials=0\nEgressWindowSec=3600\n"
                              "[Retention]\nSandboxDays=0\nAuditDays=1000000\n"
                              "[Telemetry]\nQueueMax=16\nFlushIntervalMs=600000\n", &c, why, sizeof(why)), 0);
        ck_assert_uint_eq(c->max_connections, 7);
        ck_assert_uint_eq(c->sandbox_request_rate, 0);
        ck_assert_uint_eq(c->proxy_port, 65535);
        ck_assert_uint_eq(c->proxy_header_timeout_ms, 100);
        ck_assert_uint_eq(c->max_sandboxes, 0);
        ck_assert_uint_eq(c->warm_sandboxes, 16);
        ck_assert_uint_eq(c->warm_idle_sec, 1);
        ck_assert_uint_eq(c->egress_denials, 0);
        ck_assert_uint_eq(c->egress_window_s, 3600);
        ck_assert_uint_eq(c->retention_sandbox_days, 0);
        ck_assert_uint_eq(c->retention_audit_days, 1000000);
        ck_assert_uint_eq(c->telemetry_queue_max, 16);
        ck_assert_uint_eq(c->telemetry_flush_interval_ms, 600000);
        config_free(c);

        assert_refused("[Daemon]\nMaxConnections=0\n", 2, "bad value for MaxConnections=: \"0\"");
        assert_refused("[Daemon]\nProxyPort=65536\n", 2, "bad value for ProxyPort=");
        assert_refused("[Daemon]\nProxyHeaderTimeoutMs=99\n", 2, "bad value for ProxyHeaderTimeoutMs=");
        assert_refused("[Pool]\nWarmSandboxes=17\n", 2, "bad value for WarmSandboxes=");
        assert_refused("[Pool]\nWarmIdleSec=0\n", 2, "bad value for WarmIdleSec=");
        assert_refused("[Response]\nEgressWindowSec=1m\n", 2, "bad value for EgressWindowSec=: \"1m\"");
        assert_refused("[Retention]\nAuditDays=1000001\n", 2, "bad value for AuditDays=");
        assert_refused("[Retention]\nSandboxDays=-1\n", 2, "bad value for SandboxDays=");
        assert_refused("[Telemetry]\nFlushIntervalMs=9\n", 2, "bad value for FlushIntervalMs=");
        assert_refused("[Telemetry]\nQueueMax=15\n", 2, "bad value for QueueMax=");
}
END_TEST

START_TEST(test_string_path_and_url_keys) {
        char why[512];
        agentd_config *c = NULL;
        ck_assert_int_eq(load("[Daemon]\nStateDirectory=~/st\nCgroupPath=/sys/fs/cgroup/x\n"
                              "SandboxHelper=/usr/lib/agentd/agentd-sandbox   # inline comment\n"
                              "[Vault]\nAddress=https://vault.example:8200\nNamespace=team ; with a comment\n"
                              "AppRolePath=\n"
                              "[TPM]\nTCTI=swtpm:port=2321\n"
                              "[Telemetry]\nEndpoint=http://127.0.0.1:4318\n", &c, why, sizeof(why)), 0);
        char want[PATH_MAX + 16];
        snprintf(want, sizeof(want), "%s/st", f.home);
        ck_assert_str_eq(c->state_directory, want);
        ck_assert_str_eq(c->cgroup_path, "/sys/fs/cgroup/x");
        ck_assert_str_eq(c->sandbox_helper, "/usr/lib/agentd/agentd-sandbox");
        ck_assert_str_eq(c->vault_address, "https://vault.example:8200");
        ck_assert_str_eq(c->vault_namespace, "team");
        ck_assert_ptr_null(c->vault_approle_path);   /* empty: unset */
        ck_assert_str_eq(c->tpm_tcti, "swtpm:port=2321");
        ck_assert_str_eq(c->telemetry_endpoint, "http://127.0.0.1:4318");
        config_free(c);
        /* An absolute path stays as it is; a '#' not after a blank is part of the value. */
        ck_assert_int_eq(load("[Daemon]\nStateDirectory=/var/tmp/st#1\n[Telemetry]\nEndpoint=\n", &c, why, sizeof(why)), 0);
        ck_assert_str_eq(c->state_directory, "/var/tmp/st#1");
        ck_assert_ptr_null(c->telemetry_endpoint);
        config_free(c);

        assert_refused("[Daemon]\nStateDirectory=relative/dir\n", 2, "StateDirectory= must be an absolute path");
        assert_refused("[Telemetry]\nEndpoint=ftp://host/\n", 2, "Endpoint= must be an http:// or https:// URL");
}
END_TEST

START_TEST(test_unknown_and_syntax_refused_at_their_line) {
        assert_refused("[Daemon]\nMaxConnections=5\n\n[Nope]\nX=1\n", 4, "unknown section [Nope]");
        /* An unknown section without keys too (inih does not call the handler for it). */
        assert_refused("[Daemon]\nMaxConnections=5\n  [Deamon]\n", 3, "unknown section [Deamon]");
        /* The first error in the file is the one named. */
        assert_refused("[Daemon]\nBogusKey=1\n[Nope]\n", 2, "unknown key BogusKey= in [Daemon]");
        assert_refused("# comment\n[Daemon]\nMaxConnections=5\nBogusKey=1\n", 4, "unknown key BogusKey= in [Daemon]");
        /* A key of another section is unknown where it stands. */
        assert_refused("[Vault]\nMaxConnections=5\n", 2, "unknown key MaxConnections= in [Vault]");
        /* Keys before any section. */
        assert_refused("MaxConnections=5\n", 1, "unknown key MaxConnections= in []");
        assert_refused("[Daemon]\nMaxConnections=5\nthis line has no equals sign\n", 3, "syntax error");
        /* A bad line applies nothing: the key before it does not count either
         * (the caller gets no configuration at all). */
        agentd_config *c = NULL;
        char why[512];
        ck_assert_int_lt(load("[Daemon]\nMaxConnections=5\nMaxSandboxes=x\n", &c, why, sizeof(why)), 0);
        ck_assert_ptr_null(c);
}
END_TEST

START_TEST(test_nul_byte_refused) {
        static const char text[] = "[Daemon]\nMaxConnections=5\nMax\0Sandboxes=3\n";
        write_conf(text, sizeof(text) - 1);
        agentd_config *c = NULL;
        _cleanup_error_ agentd_error err = {};
        ck_assert_int_eq(config_load(conf_path, f.home, &c, &err), -EINVAL);
        ck_assert_ptr_null(c);
        ck_assert_int_eq(err.code, ERROR_INVALID_PARAMS);
        char want[PATH_MAX + 64];
        snprintf(want, sizeof(want), "%s:3: NUL byte at offset 29", conf_path);
        ck_assert_msg(strncmp(error_message(&err), want, strlen(want)) == 0, "%s", error_message(&err));
}
END_TEST

/* The bound is 1 MiB: a file of exactly that size is read, one byte more is refused. */
static void write_comment_file(size_t size) {
        static const char head[] = "[Daemon]\nMaxConnections=9\n";
        char *text = malloc(size);
        ck_assert_ptr_nonnull(text);
        memcpy(text, head, sizeof(head) - 1);
        /* Then comment lines of 64 bytes (the last one shorter). */
        for (size_t i = sizeof(head) - 1, len; i < size; i += len) {
                len = size - i < 64 ? size - i : 64;
                memset(text + i, 'x', len);
                text[i] = '#';
                text[i + len - 1] = '\n';
        }
        write_conf(text, size);
        free(text);
}

START_TEST(test_over_size_refused) {
        agentd_config *c = NULL;
        _cleanup_error_ agentd_error err = {};
        write_comment_file(1024 * 1024);
        ck_assert_int_eq(config_load(conf_path, f.home, &c, &err), 0);
        ck_assert_uint_eq(c->max_connections, 9);
        config_free(c);
        c = NULL;

        write_comment_file(1024 * 1024 + 1);
        ck_assert_int_eq(config_load(conf_path, f.home, &c, &err), -EFBIG);
        ck_assert_ptr_null(c);
        ck_assert_int_eq(err.code, ERROR_INVALID_PARAMS);
        char want[PATH_MAX + 64];
        snprintf(want, sizeof(want), "%s:0: larger than 1048576 bytes", conf_path);
        ck_assert_str_eq(error_message(&err), want);
}
END_TEST

START_TEST(test_unreadable_path_refused) {
        /* A directory where the file should be: it opens but cannot be read. */
        ck_assert_int_eq(mkdir(conf_path, 0700), 0);
        agentd_config *c = NULL;
        _cleanup_error_ agentd_error err = {};
        ck_assert_int_lt(config_load(conf_path, f.home, &c, &err), 0);
        ck_assert_ptr_null(c);
        ck_assert(error_is_set(&err));
        ck_assert_ptr_nonnull(strstr(error_message(&err), conf_path));
}
END_TEST

/* --- reload on a composed daemon --------------------------------------- */

static void pack_big_check(msgpack_packer *pk, void *arg) {
        size_t n = *(size_t *) arg;
        static const char head[] = "[Task]\nCommand=/bin/true\n";
        char *text = malloc(n + 1);
        ck_assert_ptr_nonnull(text);
        memcpy(text, head, sizeof(head) - 1);
        for (size_t i = sizeof(head) - 1; i < n; i++)
                text[i] = i % 60 == 59 ? '\n' : '#';
        text[n] = 0;
        msgpack_pack_map(pk, 1);
        mp_pack_kv_str(pk, "text", text);
        free(text);
}

/* task.check of about `n` bytes on a fresh connection: NULL when the server
 * answered it, else (limit_exceeded) the limit the refusal named, in buf. */
static const char *refused_limit(size_t n, char *buf, size_t size) {
        int c = fixture_connect(&f);
        fixture_reply r;
        const char *ret = NULL;
        if (!fixture_call(&f, c, "task.check", pack_big_check, &n, &r)) {
                ck_assert_msg(strcmp(r.code, "limit_exceeded") == 0, "%s: %s", r.code, r.message);
                const char *p = strstr(r.message, "MaxMessageSize=");
                ck_assert_ptr_nonnull(p);
                snprintf(buf, size, "%s", p);
                ret = buf;
        }
        fixture_reply_free(&r);
        close(c);
        return ret;
}

static void status_str(const char *key, char *buf, size_t size) {
        int c = fixture_connect(&f);
        fixture_reply r;
        ck_assert(fixture_call(&f, c, "agentd.status", NULL, NULL, &r));
        ck_assert_ptr_nonnull(fixture_get_str(r.result, key, buf, size));
        fixture_reply_free(&r);
        close(c);
}

static void rewrite_config(const char *text) {
        char *full = NULL;
        ck_assert_int_ge(asprintf(&full, "%s[Daemon]\nSandboxHelper=%s\n", text, FIXTURE_HELPER), 0);
        write_conf(full, strlen(full));
        free(full);
}

START_TEST(test_reload_keeps_old_on_error_and_takes_a_good_file) {
        fixture_start(&f, "[Daemon]\nMaxMessageSize=2K\n");
        char buf[128];
        ck_assert_ptr_nonnull(refused_limit(4000, buf, sizeof(buf)));
        ck_assert_str_eq(buf, "MaxMessageSize=2048)");
        ck_assert_ptr_null(refused_limit(1000, buf, sizeof(buf)));

        /* Broken: refused as a whole; the size it names is not taken either. */
        rewrite_config("[Daemon]\nMaxMessageSize=8K\nBogusKey=1\n");
        ck_assert_int_eq(daemon_reload(&f.m), -EINVAL);
        ck_assert_ptr_nonnull(refused_limit(4000, buf, sizeof(buf)));
        ck_assert_str_eq(buf, "MaxMessageSize=2048)");

        /* A NUL byte in an otherwise good file: the same. */
        static const char nul[] = "[Daemon]\nMaxMessageSize=8K\n\0";
        write_conf(nul, sizeof(nul) - 1);
        ck_assert_int_eq(daemon_reload(&f.m), -EINVAL);
        ck_assert_ptr_nonnull(refused_limit(4000, buf, sizeof(buf)));

        /* Good: taken at once, by connections made after it. */
        rewrite_config("[Daemon]\nMaxMessageSize=8K\n");
        ck_assert_int_eq(daemon_reload(&f.m), 0);
        ck_assert_ptr_null(refused_limit(4000, buf, sizeof(buf)));
        ck_assert_ptr_nonnull(refused_limit(9000, buf, sizeof(buf)));
        ck_assert_str_eq(buf, "MaxMessageSize=8192)");

        /* The state directory is fixed for the life of the process. */
        char state[PATH_MAX + 16], now[PATH_MAX + 16];
        status_str("state_directory", state, sizeof(state));
        rewrite_config("[Daemon]\nStateDirectory=/var/tmp/elsewhere\n");
        ck_assert_int_eq(daemon_reload(&f.m), 0);
        status_str("state_directory", now, sizeof(now));
        ck_assert_str_eq(now, state);
        /* ... while the rest of the file took effect: back to the default size. */
        ck_assert_ptr_null(refused_limit(9000, buf, sizeof(buf)));
}
END_TEST

int main(void) {
        Suite *s = suite_create("config");
        TCase *tc = tcase_create("config");
        tcase_set_timeout(tc, 60);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_defaults_without_a_file);
        tcase_add_test(tc, test_default_path_follows_xdg);
        tcase_add_test(tc, test_bool_keys);
        tcase_add_test(tc, test_size_keys);
        tcase_add_test(tc, test_number_and_duration_keys);
        tcase_add_test(tc, test_string_path_and_url_keys);
        tcase_add_test(tc, test_unknown_and_syntax_refused_at_their_line);
        tcase_add_test(tc, test_nul_byte_refused);
        tcase_add_test(tc, test_over_size_refused);
        tcase_add_test(tc, test_unreadable_path_refused);
        tcase_add_test(tc, test_reload_keeps_old_on_error_and_takes_a_good_file);
        suite_add_tcase(s, tc);
        return unit_run(s, false);
}
