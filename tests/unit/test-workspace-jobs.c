/* sandbox/workspace-jobs.c and rpc/rpc-workspace.c on a composed daemon
 * (fixture.h): an overlay sandbox (the default task) writes files; sandbox.diff
 * lists its change layer, sandbox.promote copies it into the host workspace
 * (never a symlink out, a FIFO or a git hook unasked), sandbox.discard throws it
 * away and leaves the host untouched. */
#include <check.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fixture.h"
#include "unit.h"

static fixture f;

static void ws_path(const char *rel, char *buf, size_t size) {
        snprintf(buf, size, "%s/%s", f.workspace, rel);
}

static void ws_write(const char *rel, const char *text) {
        char p[PATH_MAX];
        ws_path(rel, p, sizeof(p));
        fixture_write_file(p, text);
}

/* The host workspace file's content is `want` (NULL: it does not exist). */
static void ws_is(const char *rel, const char *want) {
        char p[PATH_MAX];
        ws_path(rel, p, sizeof(p));
        char *text = fixture_read_file(p);
        if (!want)
                ck_assert_msg(!text && access(p, F_OK) < 0, "%s exists", rel);
        else {
                ck_assert_msg(text != NULL, "%s is missing", rel);
                ck_assert_str_eq(text, want);
        }
        free(text);
}

/* Runs the script in a fresh overlay sandbox, in the fixture's workspace, to its end. */
static void run(int c, const char *script, char id[16]) {
        fixture_spawn_sh(&f, c, NULL, script, id, 16);
        long long code = -1;
        fixture_wait(&f, c, id, &code, NULL);
        ck_assert_int_eq(code, 0);
}

/* The `key` of the entry for `path` in an array of maps with "path" (NULL: none). */
static const msgpack_object *entry(const msgpack_object *arr, const char *path) {
        ck_assert_int_eq(arr->type, MSGPACK_OBJECT_ARRAY);
        for (uint32_t i = 0; i < arr->via.array.size; i++) {
                const msgpack_object *e = &arr->via.array.ptr[i];
                char buf[PATH_MAX];
                if (e->type == MSGPACK_OBJECT_STR) {
                        if (e->via.str.size == strlen(path) && memcmp(e->via.str.ptr, path, e->via.str.size) == 0)
                                return e;
                } else if (fixture_get_str(e, "path", buf, sizeof(buf)) && strcmp(buf, path) == 0)
                        return e;
        }
        return NULL;
}

static void assert_change(const msgpack_object *diff, const char *path, const char *change) {
        const msgpack_object *e = entry(diff, path);
        ck_assert_msg(e != NULL, "%s not in the diff", path);
        char buf[32];
        ck_assert_ptr_nonnull(fixture_get_str(e, "change", buf, sizeof(buf)));
        ck_assert_msg(strcmp(buf, change) == 0, "%s: %s, want %s", path, buf, change);
}

static const char script[] = "echo new > n; echo B > b; rm a; mkdir -p d/e; echo deep > d/e/f";

/* A workspace with files a and b, and the script run over it to its end:
 * the host connection. */
static int run_script_over_a_and_b(char id[16]) {
        fixture_init(&f);
        ws_write("a", "a\n");
        ws_write("b", "b\n");
        fixture_start(&f, NULL);
        int c = fixture_connect(&f);
        run(c, script, id);
        return c;
}

START_TEST(test_diff_then_promote) {
        char id[16];
        int c = run_script_over_a_and_b(id);
        /* The sandbox wrote into its layer only. */
        ws_is("n", NULL);
        ws_is("b", "b\n");
        ws_is("a", "a\n");

        fixture_reply r;
        ck_assert(fixture_call_str(&f, c, &r, "sandbox.diff", "id", id, NULL));
        assert_change(r.result, "n", "added");
        assert_change(r.result, "b", "modified");
        assert_change(r.result, "a", "deleted");
        assert_change(r.result, "d/e/f", "added");
        ck_assert_ptr_null(entry(r.result, "nothing-else"));
        fixture_reply_free(&r);

        ck_assert(fixture_call_str(&f, c, &r, "sandbox.promote", "id", id, NULL));
        const msgpack_object *promoted = fixture_get(r.result, "promoted"), *conflicts = fixture_get(r.result, "conflicts");
        ck_assert_ptr_nonnull(promoted);
        ck_assert(conflicts && conflicts->type == MSGPACK_OBJECT_ARRAY && conflicts->via.array.size == 0);
        ck_assert_ptr_nonnull(entry(promoted, "n"));
        ck_assert_ptr_nonnull(entry(promoted, "b"));
        fixture_reply_free(&r);
        ws_is("n", "new\n");
        ws_is("b", "B\n");
        ws_is("a", NULL);
        ws_is("d/e/f", "deep\n");

        /* Promoted: nothing is left to review. */
        ck_assert(fixture_call_str(&f, c, &r, "sandbox.diff", "id", id, NULL));
        ck_assert_int_eq(r.result->via.array.size, 0);
        fixture_reply_free(&r);
        close(c);
        fixture_stop(&f);
}
END_TEST

START_TEST(test_discard_leaves_the_host_alone) {
        char id[16];
        int c = run_script_over_a_and_b(id);
        fixture_call_ok(&f, c, "sandbox.discard", "id", id, NULL);
        ws_is("a", "a\n");
        ws_is("b", "b\n");
        ws_is("n", NULL);
        /* The layer is gone, and the record says so. */
        fixture_call_fails(&f, c, "not_found", "sandbox.diff", "id", id, NULL);
        fixture_call_fails(&f, c, "not_found", "sandbox.promote", "id", id, NULL);
        char meta[PATH_MAX];
        fixture_sandbox_path(&f, id, "meta.json", meta, sizeof(meta));
        char *text = fixture_read_file(meta);
        ck_assert(text && strstr(text, "\"discarded\":true"));
        free(text);
        ws_is("n", NULL);
        close(c);
        fixture_stop(&f);
}
END_TEST

START_TEST(test_promote_and_discard_wait_for_the_end) {
        fixture_init(&f);
        fixture_start(&f, NULL);
        int c = fixture_connect(&f);
        char id[16];
        fixture_spawn_sh(&f, c, NULL, "echo x > x; exec sleep 60", id, sizeof(id));
        fixture_call_fails(&f, c, "policy_denied", "sandbox.promote", "id", id, NULL);
        fixture_call_fails(&f, c, "policy_denied", "sandbox.discard", "id", id, NULL);
        ws_is("x", NULL);
        close(c);
        fixture_stop(&f);
}
END_TEST

START_TEST(test_hostile_names_are_not_promoted) {
        fixture_init(&f);
        char gitdir[PATH_MAX], outside[PATH_MAX];
        ws_path(".git", gitdir, sizeof(gitdir));
        ck_assert_int_eq(mkdir(gitdir, 0700), 0);
        ws_path(".git/hooks", gitdir, sizeof(gitdir));
        ck_assert_int_eq(mkdir(gitdir, 0700), 0);
        snprintf(outside, sizeof(outside), "%s/outside.txt", f.root);
        fixture_write_file(outside, "outside\n");
        fixture_start(&f, NULL);
        int c = fixture_connect(&f);
        char id[16], cmd[PATH_MAX + 200];
        snprintf(cmd, sizeof(cmd), "ln -s %s out; mkfifo fifo; echo hook > .git/hooks/pre-commit; echo ok > fine", outside);
        run(c, cmd, id);

        fixture_reply r;
        ck_assert(fixture_call_str(&f, c, &r, "sandbox.promote", "id", id, NULL));
        const msgpack_object *promoted = fixture_get(r.result, "promoted"), *conflicts = fixture_get(r.result, "conflicts"),
                             *guarded = fixture_get(r.result, "guarded");
        ck_assert_ptr_nonnull(entry(promoted, "fine"));
        ck_assert_ptr_nonnull(entry(conflicts, "out"));
        ck_assert_ptr_null(entry(promoted, "out"));
        const msgpack_object *fifo = entry(conflicts, "fifo");
        ck_assert_ptr_nonnull(fifo);
        char reason[128];
        ck_assert_ptr_nonnull(fixture_get_str(fifo, "reason", reason, sizeof(reason)));
        ck_assert_str_eq(reason, "not a regular file, directory or symlink: not promoted");
        ck_assert_ptr_nonnull(entry(guarded, ".git/hooks/pre-commit"));
        ck_assert_ptr_null(entry(promoted, ".git/hooks/pre-commit"));
        fixture_reply_free(&r);

        ws_is("fine", "ok\n");
        ws_is(".git/hooks/pre-commit", NULL);
        char p[PATH_MAX];
        struct stat st;
        ws_path("out", p, sizeof(p));
        ck_assert_int_lt(lstat(p, &st), 0);
        ws_path("fifo", p, sizeof(p));
        ck_assert_int_lt(lstat(p, &st), 0);
        char *text = fixture_read_file(outside);
        ck_assert_str_eq(text, "outside\n");
        free(text);
        close(c);
        fixture_stop(&f);
}
END_TEST

int main(void) {
        Suite *s = suite_create("workspace-jobs");
        TCase *tc = tcase_create("workspace-jobs");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_diff_then_promote);
        tcase_add_test(tc, test_discard_leaves_the_host_alone);
        tcase_add_test(tc, test_promote_and_discard_wait_for_the_end);
        tcase_add_test(tc, test_hostile_names_are_not_promoted);
        suite_add_tcase(s, tc);
        return unit_run(s, false);
}
