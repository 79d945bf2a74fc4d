/* audit/report.c on a composed daemon (fixture.h): sandbox.report of a
 * sandbox that really ran (the built helper, an overlay workspace) carries
 * its spawn and exit records, the request that asked, the host requests about
 * it and the files it changed (with their SHA-256); a discarded layer and a
 * broken chain say so; an unknown id is not_found, a malformed one
 * invalid_params. */
#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fixture.h"
#include "macro.h"
#include "unit.h"

static fixture f;

/* sha256("hello report\n") */
#define HELLO_SHA256 "60554760d6fc3857aedf174a08e106125383b42c1143b67405f1f99e146986d7"

static const char script[] = "echo 'hello report' > made.txt; exit 7";

static void run_sandbox(int c, char *id, size_t size) {
        fixture_spawn_sh(&f, c, "default", script, id, size);
        long long code = -1;
        fixture_wait(&f, c, id, &code, NULL);
        ck_assert_int_eq(code, 7);
}

static void report(int c, const char *id, fixture_reply *r) {
        ck_assert_msg(fixture_call_str(&f, c, r, "sandbox.report", "id", id, NULL), "%s: %s", r->code, r->message);
        ck_assert_int_eq(r->result->type, MSGPACK_OBJECT_MAP);
}

/* The entries of array `a` whose `key` is `value`. */
static unsigned count_with(const msgpack_object *a, const char *key, const char *value) {
        ck_assert(a && a->type == MSGPACK_OBJECT_ARRAY);
        unsigned n = 0;
        for (uint32_t i = 0; i < a->via.array.size; i++) {
                char buf[256];
                const char *v = fixture_get_str(&a->via.array.ptr[i], key, buf, sizeof(buf));
                n += v && strcmp(v, value) == 0;
        }
        return n;
}

static const msgpack_object *find_with(const msgpack_object *a, const char *key, const char *value) {
        for (uint32_t i = 0; a && i < a->via.array.size; i++) {
                char buf[256];
                const char *v = fixture_get_str(&a->via.array.ptr[i], key, buf, sizeof(buf));
                if (v && strcmp(v, value) == 0)
                        return &a->via.array.ptr[i];
        }
        return NULL;
}

static void start(void) {
        fixture_init(&f);
        fixture_start(&f, NULL);
        fixture_wait_status_prefix(&f, "audit", "ok (key sealed: ");
}

START_TEST(test_report_of_a_finished_sandbox) {
        start();
        int c = fixture_connect(&f);
        char id[64], buf[PATH_MAX];
        run_sandbox(c, id, sizeof(id));
        fixture_reply r;
        report(c, id, &r);
        const msgpack_object *rep = r.result;

        ck_assert_str_eq(fixture_str(rep, "id", buf, sizeof(buf)), id);
        ck_assert_str_eq(fixture_str(rep, "task", buf, sizeof(buf)), "default");
        ck_assert_str_eq(fixture_str(rep, "state", buf, sizeof(buf)), "exited");
        ck_assert_str_eq(fixture_str(rep, "workspace", buf, sizeof(buf)), f.workspace);
        ck_assert(fixture_bool(rep, "sandbox_record"));
        ck_assert_uint_gt(fixture_u64(rep, "started_at"), 0);

        const msgpack_object *ver = fixture_get(rep, "verification");
        ck_assert(fixture_bool(ver, "ok"));
        ck_assert(fixture_bool(ver, "chain_ok"));
        ck_assert_uint_gt(fixture_get(ver, "seqs")->via.array.size, 0);
        ck_assert_uint_eq(fixture_get(ver, "problems")->via.array.size, 0);

        /* Who asked: this process, on its socket pair. */
        ck_assert_uint_eq(fixture_u64(fixture_get(rep, "requested_by"), "pid"), (uint64_t) getpid());
        ck_assert_uint_eq(fixture_u64(fixture_get(rep, "requested_by"), "uid"), (uint64_t) getuid());
        const msgpack_object *pol = fixture_get(rep, "policy");
        ck_assert_str_eq(fixture_str(pol, "task", buf, sizeof(buf)), "default");
        ck_assert_uint_eq(strlen(fixture_str(pol, "sha256", buf, sizeof(buf))), 64);
        const msgpack_object *argv = fixture_get(rep, "argv");
        ck_assert(argv && argv->type == MSGPACK_OBJECT_ARRAY && argv->via.array.size == 3);
        ck_assert_int_eq(argv->via.array.ptr[2].via.str.size, strlen(script));
        ck_assert_int_eq(memcmp(argv->via.array.ptr[2].via.str.ptr, script, strlen(script)), 0);

        /* The exit record. */
        const msgpack_object *ex = fixture_get(rep, "exit");
        ck_assert(ex && ex->type == MSGPACK_OBJECT_MAP);
        ck_assert_uint_eq(fixture_u64(ex, "exit_code"), 7);
        ck_assert_uint_eq(fixture_u64(ex, "signal"), 0);
        ck_assert_str_eq(fixture_str(ex, "state", buf, sizeof(buf)), "exited");
        ck_assert_uint_gt(fixture_u64(ex, "seq"), fixture_u64(fixture_get(rep, "requested_by"), "seq"));

        /* The timeline holds both, in order. */
        const msgpack_object *tl = fixture_get(rep, "timeline");
        ck_assert_uint_eq(count_with(tl, "type", "sandbox.spawn"), 1);
        ck_assert_uint_eq(count_with(tl, "type", "sandbox.exit"), 1);
        ck_assert_str_eq(fixture_str(&tl->via.array.ptr[0], "type", buf, sizeof(buf)), "sandbox.spawn");

        /* The host's requests about it (by id): the wait. */
        const msgpack_object *req = fixture_get(rep, "requests");
        const msgpack_object *wait = find_with(req, "method", "sandbox.wait");
        ck_assert_ptr_nonnull(wait);
        /* "pending" when it waited, "ok" when the sandbox had already ended. */
        fixture_str(wait, "outcome", buf, sizeof(buf));
        ck_assert_msg(streq(buf, "pending") || streq(buf, "ok"), "wait outcome %s", buf);

        /* What it changed: the one file, in the layer, hashed. */
        const msgpack_object *ch = fixture_get(rep, "changes");
        ck_assert_str_eq(fixture_str(ch, "layer", buf, sizeof(buf)), "present");
        const msgpack_object *files = fixture_get(ch, "files");
        ck_assert_uint_eq(files->via.array.size, 1);
        const msgpack_object *made = &files->via.array.ptr[0];
        ck_assert_str_eq(fixture_str(made, "path", buf, sizeof(buf)), "made.txt");
        ck_assert_str_eq(fixture_str(made, "change", buf, sizeof(buf)), "added");
        ck_assert_str_eq(fixture_str(made, "type", buf, sizeof(buf)), "file");
        ck_assert_str_eq(fixture_str(made, "sha256", buf, sizeof(buf)), HELLO_SHA256);
        /* The host's copy is untouched. */
        snprintf(buf, sizeof(buf), "%s/made.txt", f.workspace);
        ck_assert_int_ne(access(buf, F_OK), 0);

        ck_assert_uint_eq(fixture_get(rep, "tokens")->via.array.size, 0);
        ck_assert_uint_eq(fixture_get(rep, "incidents")->via.array.size, 0);
        const msgpack_object *disc = fixture_get(rep, "discarded");
        ck_assert(disc && disc->type == MSGPACK_OBJECT_NIL);
        fixture_reply_free(&r);
        close(c);
        fixture_stop(&f);
}
END_TEST

START_TEST(test_report_after_discard) {
        start();
        int c = fixture_connect(&f);
        char id[64], buf[256];
        run_sandbox(c, id, sizeof(id));
        fixture_reply r;
        ck_assert_msg(fixture_call_str(&f, c, &r, "sandbox.discard", "id", id, NULL), "%s: %s", r.code, r.message);
        fixture_reply_free(&r);
        report(c, id, &r);
        ck_assert_str_eq(fixture_str(fixture_get(r.result, "changes"), "layer", buf, sizeof(buf)), "discarded");
        const msgpack_object *disc = fixture_get(r.result, "discarded");
        ck_assert(disc && disc->type == MSGPACK_OBJECT_MAP);
        ck_assert_uint_eq(fixture_u64(fixture_get(disc, "by"), "pid"), (uint64_t) getpid());
        fixture_reply_free(&r);
        close(c);
        fixture_stop(&f);
}
END_TEST

START_TEST(test_report_names_a_broken_chain) {
        start();
        int c = fixture_connect(&f);
        char id[64];
        run_sandbox(c, id, sizeof(id));
        /* The exit record's exit code, changed on disk. */
        char path[PATH_MAX + 64];
        snprintf(path, sizeof(path), "%s/agentd/audit/audit-000001.jsonl", f.state_home);
        FILE *fp = fopen(path, "re");
        ck_assert_ptr_nonnull(fp);
        char *line = NULL;
        size_t cap = 0;
        off_t off = 0, at = -1;
        uint64_t seq = 0;
        for (ssize_t n; (n = getline(&line, &cap, fp)) > 0; off += n) {
                char *p = strstr(line, "\"exit_code\":7");
                if (p && strstr(line, "\"type\":\"sandbox.exit\"")) {
                        ck_assert_int_eq(sscanf(line, "{\"seq\":%lu,", &seq), 1);
                        at = off + (p - line) + 12;
                        break;
                }
        }
        free(line);
        fclose(fp);
        ck_assert_int_ge(at, 0);
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(pwrite(fd, "0", 1, at), 1);
        close(fd);

        fixture_reply r;
        report(c, id, &r);
        const msgpack_object *ver = fixture_get(r.result, "verification");
        ck_assert(!fixture_bool(ver, "ok"));
        ck_assert(!fixture_bool(ver, "chain_ok"));
        ck_assert_uint_eq(fixture_u64(ver, "first_bad_seq"), seq);
        ck_assert_uint_ge(fixture_get(ver, "problems")->via.array.size, 1);
        fixture_reply_free(&r);
        close(c);
        fixture_stop(&f);
}
END_TEST

START_TEST(test_report_unknown_and_bad_ids) {
        start();
        int c = fixture_connect(&f);
        fixture_reply r;
        fixture_call_fails(&f, c, "not_found", "sandbox.report", "id", "nosuch-1", NULL);
        static const char *const bad[] = { "", "../x", "UPPER", "a b",
                                           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" /* 65 */ };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                ck_assert(!fixture_call_str(&f, c, &r, "sandbox.report", "id", bad[i], NULL));
                ck_assert_msg(strcmp(r.code, "invalid_params") == 0, "'%s': %s", bad[i], r.code);
                fixture_reply_free(&r);
        }
        close(c);
        fixture_stop(&f);
}
END_TEST

int main(void) {
        Suite *s = suite_create("report");
        TCase *tc = tcase_create("report");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_report_of_a_finished_sandbox);
        tcase_add_test(tc, test_report_after_discard);
        tcase_add_test(tc, test_report_names_a_broken_chain);
        tcase_add_test(tc, test_report_unknown_and_bad_ids);
        suite_add_tcase(s, tc);
        return unit_run(s, false);
}
