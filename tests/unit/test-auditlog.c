/* audit/auditlog.c on a composed daemon (fixture.h): every request that
 * reaches its handler leaves an "rpc" record (method, peer, outcome) that
 * audit.query shows; audit.verify passes on a fresh log and names the record a
 * changed byte broke; state-changing requests are refused while the log cannot
 * record ([Audit] MinFreeSpace above what the filesystem has), read-only and
 * containment methods still pass; audit.query pages with limit/before and
 * refuses a limit outside 1..10000. No TPM here: the key is sealed with the
 * software key, as on any machine without one. */
#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"
#include "fixture.h"
#include "unit.h"

static fixture f;

static void start(const char *config) {
        fixture_init(&f);
        fixture_start(&f, config);
        fixture_wait_status_prefix(&f, "audit", "ok (key sealed: ");
}

/* The records of the reply, as an array. */
static const msgpack_object *records(const fixture_reply *r, uint32_t *n) {
        *n = r->result->via.array.size;
        return r->result->via.array.ptr;
}

static void assert_rpc_record(const msgpack_object *rec, const char *method, const char *outcome) {
        char buf[128];
        ck_assert_str_eq(fixture_str(rec, "type", buf, sizeof(buf)), "rpc");
        const msgpack_object *fields = fixture_get(rec, "fields");
        ck_assert_str_eq(fixture_str(fields, "method", buf, sizeof(buf)), method);
        ck_assert_str_eq(fixture_str(fields, "outcome", buf, sizeof(buf)), outcome);
        ck_assert_uint_eq(fixture_u64(fields, "peer_pid"), (uint64_t) getpid());
        ck_assert_uint_eq(fixture_u64(fields, "peer_uid"), (uint64_t) getuid());
        /* A host request: no sandbox. */
        const msgpack_object *sb = fixture_get(rec, "sandbox");
        ck_assert(sb && sb->type == MSGPACK_OBJECT_NIL);
}

START_TEST(test_every_request_has_an_rpc_record) {
        start(NULL);
        int c = fixture_connect(&f);
        fixture_reply r;
        fixture_call_ok(&f, c, "agentd.ping", NULL);
        fixture_call_fails(&f, c, "not_found", "task.show", "name", "nosuch", NULL);
        fixture_call_fails(&f, c, "not_found", "sandbox.kill", "id", "nosuch", NULL);
        fixture_call_ok(&f, c, "task.list", NULL);

        /* The page is taken before audit.query's own record is written. */
        fixture_audit_query(&f, c, &(fixture_query) { .limit = 4 }, &r);
        uint32_t n;
        const msgpack_object *rec = records(&r, &n);
        ck_assert_uint_eq(n, 4);
        assert_rpc_record(&rec[0], "agentd.ping", "ok");
        assert_rpc_record(&rec[1], "task.show", "not_found");
        assert_rpc_record(&rec[2], "sandbox.kill", "not_found");
        assert_rpc_record(&rec[3], "task.list", "ok");
        uint64_t last = fixture_u64(&rec[3], "seq");
        fixture_reply_free(&r);

        /* The query itself: an async method, recorded as "pending" when it went ahead. */
        fixture_audit_query(&f, c, &(fixture_query) { .limit = 1 }, &r);
        rec = records(&r, &n);
        ck_assert_uint_eq(n, 1);
        assert_rpc_record(&rec[0], "audit.query", "pending");
        ck_assert_uint_eq(fixture_u64(&rec[0], "seq"), last + 1);
        fixture_reply_free(&r);
        close(c);
        fixture_stop(&f);
}
END_TEST

/* The seq of the first record whose line holds `needle` in the log's first file, and its offset there. */
static uint64_t find_line(const char *path, const char *needle, off_t *ret_off) {
        FILE *fp = fopen(path, "re");
        ck_assert_ptr_nonnull(fp);
        char *line = NULL;
        size_t cap = 0;
        off_t off = 0;
        uint64_t seq = 0;
        for (ssize_t n; (n = getline(&line, &cap, fp)) > 0; off += n) {
                const char *p = strstr(line, needle);
                if (p) {
                        ck_assert_int_eq(sscanf(line, "{\"seq\":%lu,", &seq), 1);
                        *ret_off = off + (p - line);
                        break;
                }
        }
        free(line);
        fclose(fp);
        ck_assert_uint_gt(seq, 0);
        return seq;
}

START_TEST(test_verify_passes_then_names_a_changed_byte) {
        start(NULL);
        int c = fixture_connect(&f);
        fixture_reply r;
        fixture_call_ok(&f, c, "agentd.ping", NULL);
        fixture_call_ok(&f, c, "task.list", NULL);

        ck_assert(fixture_call(&f, c, "audit.verify", NULL, NULL, &r));
        ck_assert(fixture_bool(r.result, "ok"));
        uint64_t n_records = fixture_u64(r.result, "records");
        ck_assert_uint_ge(n_records, 3);
        ck_assert_ptr_null(fixture_get(r.result, "first_bad_seq"));
        fixture_reply_free(&r);

        /* One byte of the ping's record, changed on disk behind the daemon's back. */
        char path[PATH_MAX + 64];
        snprintf(path, sizeof(path), "%s/agentd/audit/audit-000001.jsonl", f.state_home);
        off_t off = 0;
        uint64_t seq = find_line(path, "\"method\":\"agentd.ping\"", &off);
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(pwrite(fd, "\"method\":\"agentd.pinG\"", 22, off), 22);
        close(fd);

        ck_assert(fixture_call(&f, c, "audit.verify", NULL, NULL, &r));
        ck_assert(!fixture_bool(r.result, "ok"));
        ck_assert_uint_eq(fixture_u64(r.result, "first_bad_seq"), seq);
        char why[256];
        ck_assert_str_ne(fixture_str(r.result, "reason", why, sizeof(why)), "");
        fixture_reply_free(&r);
        close(c);
        fixture_stop(&f);
}
END_TEST

static void assert_refused_for_audit(int c, const char *method, fixture_pack_fn pack, void *arg) {
        fixture_reply r;
        ck_assert_msg(!fixture_call(&f, c, method, pack, arg, &r), "%s went ahead", method);
        ck_assert_str_eq(r.code, "backend_unavailable");
        char want[128];
        snprintf(want, sizeof(want), "%s refused: the audit log cannot record it", method);
        ck_assert_msg(strstr(r.message, want) && strstr(r.message, "MinFreeSpace="), "%s", r.message);
        fixture_reply_free(&r);
}

START_TEST(test_state_changes_refused_while_the_log_cannot_record) {
        /* About a petabyte must stay free: no test machine has it. */
        fixture_init(&f);
        fixture_start(&f, "[Audit]\nMinFreeSpace=1000000G\n");
        fixture_wait_status_prefix(&f, "audit", "failing: the state filesystem is full");
        int c = fixture_connect(&f);
        assert_refused_for_audit(c, "agentd.unlock", NULL, NULL);
        const char *argv[] = { "/bin/true", NULL };
        assert_refused_for_audit(c, "sandbox.spawn", fixture_pack_spawn,
                                 &(fixture_spawn_req) { .task = "default", .workspace = f.workspace, .argv = argv });

        /* Read-only methods pass. */
        fixture_reply r;
        fixture_call_ok(&f, c, "agentd.ping", NULL);
        fixture_call_ok(&f, c, "task.list", NULL);
        fixture_call_ok(&f, c, "audit.verify", NULL);
        /* So do containment methods: they reach their handlers. */
        fixture_call_fails(&f, c, "not_found", "sandbox.kill", "id", "nosuch", NULL);
        ck_assert(!fixture_call_str(&f, c, &r, "credentials.revoke", "sandbox", "nosuch", NULL));
        ck_assert_str_ne(r.code, "backend_unavailable");
        fixture_reply_free(&r);
        fixture_call_ok(&f, c, "agentd.prune", NULL);

        /* The records of what went ahead are still written. */
        fixture_audit_query(&f, c, &(fixture_query) { .limit = 1 }, &r);
        char method[64];
        ck_assert_str_eq(fixture_record_method(&r.result->via.array.ptr[0], method, sizeof(method)), "agentd.prune");
        fixture_reply_free(&r);

        /* Space enough again (a reload): state changes go ahead. */
        char path[PATH_MAX + 32], *text = NULL;
        snprintf(path, sizeof(path), "%s/agentd.conf", f.config_dir);
        ck_assert_int_ge(asprintf(&text, "[Audit]\nMinFreeSpace=0\n[Daemon]\nSandboxHelper=%s\n", FIXTURE_HELPER), 0);
        FILE *fp = fopen(path, "we");
        ck_assert_ptr_nonnull(fp);
        fputs(text, fp);
        ck_assert_int_eq(fclose(fp), 0);
        free(text);
        ck_assert_int_eq(daemon_reload(&f.m), 0);
        ck_assert_msg(fixture_call(&f, c, "agentd.unlock", NULL, NULL, &r), "%s: %s", r.code, r.message);
        ck_assert(!fixture_bool(r.result, "was_locked_down"));
        fixture_reply_free(&r);
        char st[256];
        ck_assert_str_eq(fixture_status_str(&f, "audit", st, sizeof(st)), "ok (key sealed: software)");
        close(c);
        fixture_stop(&f);
}
END_TEST

/* audit.query {limit: limit} (sent even when 0: fixture_query leaves 0 out) is refused. */
static void pack_limit(msgpack_packer *pk, void *arg) {
        msgpack_pack_map(pk, 1);
        mp_pack_kv_u64(pk, "limit", *(const uint64_t *) arg);
}

static void assert_limit_refused(int c, uint64_t limit) {
        fixture_reply r;
        ck_assert(!fixture_call(&f, c, "audit.query", pack_limit, &limit, &r));
        ck_assert_str_eq(r.code, "invalid_params");
        ck_assert_ptr_nonnull(strstr(r.message, "limit must be 1..10000"));
        fixture_reply_free(&r);
}

START_TEST(test_query_pages_and_bounds) {
        start(NULL);
        int c = fixture_connect(&f);
        fixture_reply r;
        for (int i = 0; i < 10; i++) {
                fixture_call_ok(&f, c, "agentd.ping", NULL);
        }
        /* The newest 4, oldest first, with consecutive seqs. */
        fixture_audit_query(&f, c, &(fixture_query) { .limit = 4 }, &r);
        uint32_t n;
        const msgpack_object *rec = records(&r, &n);
        ck_assert_uint_eq(n, 4);
        uint64_t first = fixture_u64(&rec[0], "seq");
        for (uint32_t i = 0; i < n; i++) {
                char m[64];
                ck_assert_uint_eq(fixture_u64(&rec[i], "seq"), first + i);
                ck_assert_str_eq(fixture_record_method(&rec[i], m, sizeof(m)), "agentd.ping");
        }
        fixture_reply_free(&r);

        /* The page before it: the 4 records just older. */
        fixture_audit_query(&f, c, &(fixture_query) { .limit = 4, .before = first }, &r);
        rec = records(&r, &n);
        ck_assert_uint_eq(n, 4);
        for (uint32_t i = 0; i < n; i++)
                ck_assert_uint_eq(fixture_u64(&rec[i], "seq"), first - 4 + i);
        fixture_reply_free(&r);

        /* Nothing before the first record. */
        fixture_audit_query(&f, c, &(fixture_query) { .before = 1 }, &r);
        ck_assert_uint_eq(r.result->via.array.size, 0);
        fixture_reply_free(&r);

        /* Default (1000) and the upper bound hold the whole log: from seq 1 on. */
        fixture_audit_query(&f, c, &(fixture_query) { .limit = 10000 }, &r);
        rec = records(&r, &n);
        ck_assert_uint_ge(n, 14);
        ck_assert_uint_eq(fixture_u64(&rec[0], "seq"), 1);
        ck_assert_uint_eq(fixture_u64(&rec[n - 1], "seq"), n);
        fixture_reply_free(&r);

        /* A sandbox that never was: an empty page. */
        fixture_audit_query(&f, c, &(fixture_query) { .sandbox = "nosuch" }, &r);
        ck_assert_uint_eq(r.result->via.array.size, 0);
        fixture_reply_free(&r);

        /* limit outside 1..10000. */
        static const uint64_t bad[] = { 10001, 1u << 31 };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                assert_limit_refused(c, bad[i]);
        }
        close(c);
        fixture_stop(&f);
}
END_TEST

START_TEST(test_query_limit_zero_refused) {
        start(NULL);
        int c = fixture_connect(&f);
        assert_limit_refused(c, 0);
        close(c);
        fixture_stop(&f);
}
END_TEST

int main(void) {
        Suite *s = suite_create("auditlog");
        TCase *tc = tcase_create("auditlog");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_every_request_has_an_rpc_record);
        tcase_add_test(tc, test_verify_passes_then_names_a_changed_byte);
        tcase_add_test(tc, test_state_changes_refused_while_the_log_cannot_record);
        tcase_add_test(tc, test_query_pages_and_bounds);
        tcase_add_test(tc, test_query_limit_zero_refused);
        suite_add_tcase(s, tc);
        return unit_run(s, false);
}
