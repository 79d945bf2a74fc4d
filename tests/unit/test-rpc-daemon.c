/* rpc/rpc-daemon.c on a composed daemon (fixture.h): agentd.ping's and
 * agentd.status's fields, the sandbox counts before, during and after a
 * sandbox that really runs, the connection count, and the lockdown state as
 * revoke --all, agentd.unlock and a marker left by an earlier run set it.
 * (agentd.prune is audit/retention.c's, not this module's.) */
#include <check.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agentd-build.h"
#include "fixture.h"
#include "unit.h"

static fixture f;

static void status(int c, fixture_reply *r) {
        ck_assert_msg(fixture_call(&f, c, "agentd.status", NULL, NULL, r), "%s: %s", r->code, r->message);
        ck_assert_int_eq(r->result->type, MSGPACK_OBJECT_MAP);
}

START_TEST(test_ping) {
        fixture_init(&f);
        fixture_start(&f, NULL);
        int c = fixture_connect(&f);
        fixture_reply r;
        ck_assert(fixture_call(&f, c, "agentd.ping", NULL, NULL, &r));
        ck_assert_uint_eq(r.result->via.map.size, 3);
        char buf[64];
        ck_assert_str_eq(fixture_str(r.result, "version", buf, sizeof(buf)), AGENTD_VERSION);
        ck_assert_uint_eq(fixture_u64(r.result, "protocol"), AGENTD_PROTOCOL_VERSION);
        uint64_t up = fixture_u64(r.result, "uptime_ms");
        fixture_reply_free(&r);
        fixture_run(&f, 20);
        ck_assert(fixture_call(&f, c, "agentd.ping", NULL, NULL, &r));
        ck_assert_uint_ge(fixture_u64(r.result, "uptime_ms"), up + 20);
        fixture_reply_free(&r);
        close(c);
        fixture_stop(&f);
}
END_TEST

START_TEST(test_status_fields) {
        fixture_init(&f);
        fixture_start(&f, NULL);
        fixture_wait_status_prefix(&f, "audit", "ok (key sealed: ");
        int c = fixture_connect(&f);
        int c2 = fixture_connect(&f);
        fixture_reply r;
        status(c, &r);
        ck_assert_uint_eq(r.result->via.map.size, 19);
        char buf[PATH_MAX + 16], want[PATH_MAX + 16];
        ck_assert_str_eq(fixture_str(r.result, "version", buf, sizeof(buf)), AGENTD_VERSION);
        ck_assert_uint_eq(fixture_u64(r.result, "protocol"), AGENTD_PROTOCOL_VERSION);
        fixture_u64(r.result, "uptime_ms");
        ck_assert_uint_eq(fixture_u64(r.result, "sandboxes"), 0);
        ck_assert_uint_eq(fixture_u64(r.result, "sandboxes_listed"), 0);
        ck_assert_uint_eq(fixture_u64(r.result, "warm_sandboxes"), 0);
        ck_assert_uint_eq(fixture_u64(r.result, "plan_cache_builds"), 0);
        ck_assert(!fixture_bool(r.result, "locked_down"));
        /* No [Vault] Address=: unconfigured, and so nothing to revoke. */
        ck_assert_str_eq(fixture_str(r.result, "vault", buf, sizeof(buf)), "unconfigured");
        fixture_str(r.result, "tpm", buf, sizeof(buf));
        ck_assert_uint_eq(fixture_u64(r.result, "revocations_pending"), 0);
        ck_assert_str_eq(fixture_str(r.result, "audit", buf, sizeof(buf)), "ok (key sealed: software)");
        fixture_str(r.result, "cgroup", buf, sizeof(buf));
        ck_assert_msg(strncmp(buf, "ok", 2) == 0 || strncmp(buf, "unavailable: ", 13) == 0, "%s", buf);
        fixture_str(r.result, "cgroup_controllers", buf, sizeof(buf));
        /* Both of ours. */
        ck_assert_uint_eq(fixture_u64(r.result, "connections"), 2);
        ck_assert_uint_gt(fixture_u64(r.result, "open_fds"), 3);
        snprintf(want, sizeof(want), "%s/agentd", f.state_home);
        ck_assert_str_eq(fixture_str(r.result, "state_directory", buf, sizeof(buf)), want);
        /* The fixture binds no socket: as when systemd passes one. */
        ck_assert_str_eq(fixture_str(r.result, "socket", buf, sizeof(buf)), "(socket-activated)");
        /* No [Telemetry] Endpoint=: off. */
        const msgpack_object *t = fixture_get(r.result, "telemetry");
        ck_assert(t && t->type == MSGPACK_OBJECT_MAP);
        ck_assert_str_eq(fixture_str(t, "state", buf, sizeof(buf)), "off");
        fixture_reply_free(&r);

        /* One connection fewer once the daemon saw it close. */
        close(c2);
        for (int i = 0; i < 100; i++) {
                status(c, &r);
                uint64_t n = fixture_u64(r.result, "connections");
                fixture_reply_free(&r);
                if (n == 1)
                        break;
                ck_assert_int_lt(i, 99);
                fixture_run(&f, 10);
        }
        close(c);
        fixture_stop(&f);
}
END_TEST

static void counts(int c, uint64_t *active, uint64_t *listed) {
        fixture_reply r;
        status(c, &r);
        *active = fixture_u64(r.result, "sandboxes");
        *listed = fixture_u64(r.result, "sandboxes_listed");
        fixture_reply_free(&r);
}

START_TEST(test_status_counts_sandboxes) {
        fixture_init(&f);
        fixture_start(&f, NULL);
        fixture_wait_status_prefix(&f, "audit", "ok (key sealed: ");
        int c = fixture_connect(&f);
        fixture_reply r;
        uint64_t active, listed;
        counts(c, &active, &listed);
        ck_assert_uint_eq(active, 0);
        ck_assert_uint_eq(listed, 0);

        char id[64];
        fixture_spawn_sh(&f, c, "default", "sleep 60", id, sizeof(id));
        counts(c, &active, &listed);
        ck_assert_uint_eq(active, 1);
        ck_assert_uint_eq(listed, 1);

        fixture_call_ok(&f, c, "sandbox.kill", "id", id, NULL);
        ck_assert(fixture_call_str(&f, c, &r, "sandbox.wait", "id", id, NULL));
        ck_assert_uint_eq(fixture_u64(r.result, "signal"), SIGTERM);
        fixture_reply_free(&r);
        /* Ended: no longer active, still listed. */
        counts(c, &active, &listed);
        ck_assert_uint_eq(active, 0);
        ck_assert_uint_eq(listed, 1);
        close(c);
        fixture_stop(&f);
}
END_TEST

static bool locked(int c) {
        fixture_reply r;
        status(c, &r);
        bool b = fixture_bool(r.result, "locked_down");
        fixture_reply_free(&r);
        return b;
}

static void pack_revoke_all(msgpack_packer *pk, void *arg) {
        msgpack_pack_map(pk, 1);
        mp_pack_kv_bool(pk, "all", true);
}

START_TEST(test_status_lockdown) {
        fixture_init(&f);
        fixture_start(&f, NULL);
        fixture_wait_status_prefix(&f, "audit", "ok (key sealed: ");
        int c = fixture_connect(&f);
        fixture_reply r;
        ck_assert(!locked(c));
        ck_assert_msg(fixture_call(&f, c, "credentials.revoke", pack_revoke_all, NULL, &r), "%s: %s", r.code, r.message);
        fixture_reply_free(&r);
        ck_assert(locked(c));
        const char *argv[] = { "/bin/sh", "-c", "true", NULL };
        ck_assert(!fixture_spawn(&f, c, &(fixture_spawn_req) { .task = "default", .workspace = f.workspace, .argv = argv }, NULL, 0, &r));
        ck_assert_str_eq(r.code, "locked_down");
        fixture_reply_free(&r);

        ck_assert(fixture_call(&f, c, "agentd.unlock", NULL, NULL, &r));
        ck_assert(fixture_bool(r.result, "was_locked_down"));
        fixture_reply_free(&r);
        ck_assert(!locked(c));
        close(c);
        fixture_stop(&f);
}
END_TEST

START_TEST(test_status_lockdown_from_an_earlier_run) {
        fixture_init(&f);
        /* The marker an earlier daemon left in the state directory. */
        char path[PATH_MAX + 32];
        snprintf(path, sizeof(path), "%s/agentd", f.state_home);
        ck_assert_int_eq(mkdir(path, 0700), 0);
        snprintf(path, sizeof(path), "%s/agentd/lockdown", f.state_home);
        int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        ck_assert_int_ge(fd, 0);
        close(fd);
        fixture_start(&f, NULL);
        int c = fixture_connect(&f);
        ck_assert(locked(c));
        close(c);
        fixture_stop(&f);
}
END_TEST

int main(void) {
        Suite *s = suite_create("rpc-daemon");
        TCase *tc = tcase_create("rpc-daemon");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_ping);
        tcase_add_test(tc, test_status_fields);
        tcase_add_test(tc, test_status_counts_sandboxes);
        tcase_add_test(tc, test_status_lockdown);
        tcase_add_test(tc, test_status_lockdown_from_an_earlier_run);
        suite_add_tcase(s, tc);
        return unit_run(s, false);
}
