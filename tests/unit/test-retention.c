/* Unit tests for daemon/audit/retention-records.c: which ended sandboxes'
 * records go (older than SandboxDays=, beyond the newest SandboxRecords=),
 * which stay (incident snapshots, still in use), on a temporary state dir. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "retention.h"
#include "unit.h"

static char tmp[] = "/tmp/test-retention-XXXXXX";

static void setup(void) {
        strcpy(tmp, "/tmp/test-retention-XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(tmp));
        char p[300];
        snprintf(p, sizeof(p), "%s/sandboxes", tmp);
        ck_assert_int_eq(mkdir(p, 0700), 0);
}

static void teardown(void) {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
        (void) !system(cmd);
}

/* A record started at `started` whose meta.json was last written `age_days` ago. */
static void record(const char *id, unsigned started, unsigned age_days) {
        char p[400];
        snprintf(p, sizeof(p), "%s/sandboxes/%s", tmp, id);
        ck_assert_int_eq(mkdir(p, 0700), 0);
        snprintf(p, sizeof(p), "%s/sandboxes/%s/upper", tmp, id);
        ck_assert_int_eq(mkdir(p, 0700), 0);
        snprintf(p, sizeof(p), "%s/sandboxes/%s/meta.json", tmp, id);
        FILE *f = fopen(p, "w");
        fprintf(f, "{\"id\": \"%s\", \"started_at\": %u, \"state\": \"exited\"}", id, started);
        fclose(f);
        struct timespec t[2] = { { .tv_sec = time(NULL) - (time_t) age_days * 86400 } };
        t[1] = t[0];
        ck_assert_int_eq(utimensat(AT_FDCWD, p, t, 0), 0);
}

static bool kept(const char *id) {
        char p[400];
        struct stat st;
        snprintf(p, sizeof(p), "%s/sandboxes/%s", tmp, id);
        return stat(p, &st) == 0;
}

/* The daemon's side: which records are still in use, and which were asked. */
static const char *in_use;
static char asked[8][16];
static unsigned n_asked;

static int forget(void *userdata, const char *id) {
        ck_assert_ptr_eq(userdata, &n_asked);
        if (n_asked < 8)
                snprintf(asked[n_asked++], sizeof(asked[0]), "%s", id);
        return in_use && strcmp(in_use, id) == 0 ? -EBUSY : 0;
}

START_TEST(test_by_age) {
        record("aaaaaaaaaaa1", 100, 40);
        record("aaaaaaaaaaa2", 200, 10);
        record("aaaaaaaaaaa3", 300, 0);
        prune_result res = { 0 };
        retention_prune_records(tmp, 30, 0, forget, &n_asked, &res);
        ck_assert_uint_eq(res.sandboxes_removed, 1);
        ck_assert_uint_eq(res.sandboxes_kept_evidence, 0);
        ck_assert(!kept("aaaaaaaaaaa1"));
        ck_assert(kept("aaaaaaaaaaa2") && kept("aaaaaaaaaaa3"));
        ck_assert_uint_eq(n_asked, 1);
        ck_assert_str_eq(asked[0], "aaaaaaaaaaa1");
}
END_TEST

START_TEST(test_by_count_newest_kept) {
        /* started_at decides, not the name or the file time. */
        record("bbbbbbbbbbb1", 500, 1);
        record("bbbbbbbbbbb2", 100, 1);
        record("bbbbbbbbbbb3", 300, 1);
        record("bbbbbbbbbbb4", 400, 1);
        prune_result res = { 0 };
        retention_prune_records(tmp, 0, 2, forget, &n_asked, &res);
        ck_assert_uint_eq(res.sandboxes_removed, 2);
        ck_assert(kept("bbbbbbbbbbb1") && kept("bbbbbbbbbbb4"));
        ck_assert(!kept("bbbbbbbbbbb2") && !kept("bbbbbbbbbbb3"));
}
END_TEST

START_TEST(test_evidence_and_in_use_stay) {
        record("ccccccccccc1", 100, 90);
        record("ccccccccccc2", 200, 90);
        record("ccccccccccc3", 300, 90);
        char p[400];
        snprintf(p, sizeof(p), "%s/sandboxes/ccccccccccc1/snapshots", tmp);
        ck_assert_int_eq(mkdir(p, 0700), 0);
        in_use = "ccccccccccc2";
        prune_result res = { 0 };
        retention_prune_records(tmp, 30, 0, forget, &n_asked, &res);
        ck_assert_uint_eq(res.sandboxes_removed, 1);
        ck_assert_uint_eq(res.sandboxes_kept_evidence, 1);
        ck_assert(kept("ccccccccccc1") && kept("ccccccccccc2"));
        ck_assert(!kept("ccccccccccc3"));
        /* Evidence is never even offered to the daemon to forget. */
        for (unsigned i = 0; i < n_asked; i++)
                ck_assert_str_ne(asked[i], "ccccccccccc1");
}
END_TEST

START_TEST(test_no_rules_no_records) {
        record("ddddddddddd1", 100, 3650);
        /* Not a record: no meta.json, or not an id. */
        char p[400];
        snprintf(p, sizeof(p), "%s/sandboxes/ddddddddddd2", tmp);
        ck_assert_int_eq(mkdir(p, 0700), 0);
        snprintf(p, sizeof(p), "%s/sandboxes/.hidden000000", tmp);
        ck_assert_int_eq(mkdir(p, 0700), 0);
        prune_result res = { 0 };
        retention_prune_records(tmp, 0, 0, forget, &n_asked, &res);
        ck_assert_uint_eq(res.sandboxes_removed, 0);
        ck_assert(kept("ddddddddddd1"));
        retention_prune_records(tmp, 1, 0, forget, &n_asked, &res);
        ck_assert_uint_eq(res.sandboxes_removed, 1);
        ck_assert(!kept("ddddddddddd1") && kept("ddddddddddd2") && kept(".hidden000000"));
        /* No state directory yet: nothing happens. */
        prune_result none = { 0 };
        retention_prune_records("/nonexistent-dir-for-test", 1, 1, forget, &n_asked, &none);
        ck_assert_uint_eq(none.sandboxes_removed, 0);
}
END_TEST

int main(void) {
        Suite *s = suite_create("retention");
        TCase *tc = tcase_create("retention");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_by_age);
        tcase_add_test(tc, test_by_count_newest_kept);
        tcase_add_test(tc, test_evidence_and_in_use_stay);
        tcase_add_test(tc, test_no_rules_no_records);
        suite_add_tcase(s, tc);
        return unit_run(s, false);
}
