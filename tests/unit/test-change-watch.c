/* Unit tests for daemon/sandbox/change-watch.c on a real libuv loop and a real
 * directory: a layer under ChangeMax= never triggers, one that grows over it
 * triggers exactly once with what it uses, and freeing it (before a walk, or
 * from its own callback) leaves a loop that closes. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "change-watch.h"
#include "unit.h"

static uv_loop_t loop;
static char tmp[] = "/tmp/test-change-watch-XXXXXX";

static void setup(void) {
        strcpy(tmp, "/tmp/test-change-watch-XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(tmp));
        ck_assert_int_eq(uv_loop_init(&loop), 0);
}

static void teardown(void) {
        ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
        ck_assert_int_eq(uv_loop_close(&loop), 0);
        char cmd[200];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
        (void) !system(cmd);
}

/* Real blocks, not a sparse file: what a sandbox writing a file costs. */
static void write_file(const char *name, size_t n) {
        char p[300];
        snprintf(p, sizeof(p), "%s/%s", tmp, name);
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        ck_assert_int_ge(fd, 0);
        char block[4096];
        memset(block, 'x', sizeof(block));
        for (size_t off = 0; off < n; off += sizeof(block))
                ck_assert_int_eq(write(fd, block, sizeof(block)), sizeof(block));
        ck_assert_int_eq(fsync(fd), 0);
        close(fd);
}

typedef struct watch_test {
        unsigned calls;
        uint64_t used, limit;
        change_watch *w;
        bool free_in_cb;
        uv_timer_t grow, guard;
} watch_test;

static void on_over(void *userdata, uint64_t used, uint64_t limit) {
        watch_test *t = userdata;
        t->calls++;
        t->used = used;
        t->limit = limit;
        if (t->free_in_cb) {
                change_watch_free(t->w);
                t->w = NULL;
        }
}

static void on_guard(uv_timer_t *h) {
        ck_abort_msg("ChangeMax= did not trigger within 20 s");
}

/* The guard fails the test if the loop is still waiting for the callback;
 * unreferenced, it does not keep the loop alive by itself. */
static void guard_start(watch_test *t) {
        uv_timer_init(&loop, &t->guard);
        uv_timer_start(&t->guard, on_guard, 20000, 0);
        uv_unref((uv_handle_t *) &t->guard);
}

static void on_grow(uv_timer_t *h) {
        watch_test *t = h->data;
        /* Two ticks under the limit have passed: nothing was reported. */
        ck_assert_uint_eq(t->calls, 0);
        write_file("big", 1024 * 1024);
}

START_TEST(test_under_then_over_once) {
        watch_test t = { 0 };
        write_file("small", 16 * 1024);
        ck_assert_int_eq(change_watch_start(&loop, tmp, 256 * 1024, on_over, &t, &t.w), 0);
        guard_start(&t);
        uv_timer_init(&loop, &t.grow);
        t.grow.data = &t;
        uv_timer_start(&t.grow, on_grow, 2500, 0);
        /* The loop ends once the watch has reported: it does not walk again after that. */
        ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
        ck_assert_uint_eq(t.calls, 1);
        ck_assert_uint_eq(t.limit, 256 * 1024);
        ck_assert_uint_gt(t.used, 256 * 1024);
        change_watch_free(t.w);
        uv_close((uv_handle_t *) &t.grow, NULL);
        uv_close((uv_handle_t *) &t.guard, NULL);
        ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0); /* before `t` goes out of scope */
}
END_TEST

START_TEST(test_free_from_callback) {
        watch_test t = { .free_in_cb = true };
        write_file("big", 256 * 1024);
        ck_assert_int_eq(change_watch_start(&loop, tmp, 64 * 1024, on_over, &t, &t.w), 0);
        guard_start(&t);
        ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
        ck_assert_uint_eq(t.calls, 1);
        ck_assert_ptr_null(t.w);
        uv_close((uv_handle_t *) &t.guard, NULL);
        ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
}
END_TEST

START_TEST(test_free_before_first_walk) {
        watch_test t = { 0 };
        write_file("big", 256 * 1024);
        ck_assert_int_eq(change_watch_start(&loop, tmp, 1, on_over, &t, &t.w), 0);
        change_watch_free(t.w);
        change_watch_free(NULL);
        ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
        ck_assert_uint_eq(t.calls, 0);
}
END_TEST

static void on_stop(uv_timer_t *h) {
        uv_stop(h->loop);
}

START_TEST(test_missing_layer_never_triggers) {
        /* The upper dir is gone (discarded): nothing is used, nothing reported. */
        watch_test t = { 0 };
        char gone[300];
        snprintf(gone, sizeof(gone), "%s/gone", tmp);
        ck_assert_int_eq(change_watch_start(&loop, gone, 1, on_over, &t, &t.w), 0);
        uv_timer_init(&loop, &t.grow);
        uv_timer_start(&t.grow, on_stop, 2500, 0);
        ck_assert_int_ne(uv_run(&loop, UV_RUN_DEFAULT), 0);
        ck_assert_uint_eq(t.calls, 0);
        change_watch_free(t.w);
        uv_close((uv_handle_t *) &t.grow, NULL);
        ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
}
END_TEST

int main(void) {
        Suite *s = suite_create("change-watch");
        TCase *tc = tcase_create("change-watch");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, test_under_then_over_once);
        tcase_add_test(tc, test_free_from_callback);
        tcase_add_test(tc, test_free_before_first_walk);
        tcase_add_test(tc, test_missing_layer_never_triggers);
        suite_add_tcase(s, tc);
        return unit_run(s, false);
}
