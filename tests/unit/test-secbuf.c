/* common/secbuf.h: a buffer that may hold secrets is wiped whenever memory
 * leaves it — when it grows and when it is freed — never realloc'd. */
#include <check.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Look at every block before it goes back to malloc: it must be all zeros. */
static unsigned n_freed, n_freed_dirty;
static void checking_free(void *p);
#define SECBUF_FREE checking_free
#include "secbuf.h"
#include "unit.h"

static size_t tracked_cap;
static void checking_free(void *p) {
        const unsigned char *c = p;
        bool dirty = false;
        for (size_t i = 0; i < tracked_cap; i++)
                dirty |= c[i] != 0;
        n_freed++;
        n_freed_dirty += dirty;
        free(p);
}

START_TEST(test_grow_wipes_old_blocks) {
        secbuf b = { 0 };
        char chunk[100];
        memset(chunk, 'T', sizeof(chunk));   /* "token" bytes */
        n_freed = n_freed_dirty = 0;
        for (int i = 0; i < 200; i++) {
                tracked_cap = b.cap;          /* the block about to be replaced, if it is */
                ck_assert_int_eq(secbuf_append(&b, chunk, sizeof(chunk), 1 << 20), 0);
        }
        ck_assert_uint_eq(b.len, 20000);
        ck_assert_uint_eq(strlen(b.data), 20000);
        ck_assert_uint_ge(n_freed, 5);        /* it did grow, several times */
        ck_assert_uint_eq(n_freed_dirty, 0);
        tracked_cap = b.cap;
        secbuf_wipe_free(&b);
        ck_assert_uint_eq(n_freed_dirty, 0);
        ck_assert_ptr_null(b.data);
        ck_assert_uint_eq(b.len, 0);
}
END_TEST

START_TEST(test_limits) {
        secbuf b = { 0 };
        tracked_cap = 0;
        ck_assert_int_eq(secbuf_append(&b, "abc", 3, 4), 0);
        ck_assert_str_eq(b.data, "abc");
        ck_assert_int_eq(secbuf_append(&b, "de", 2, 4), -EFBIG);
        ck_assert_str_eq(b.data, "abc");
        ck_assert_int_eq(secbuf_append(&b, "d", 1, 4), 0);
        ck_assert_str_eq(b.data, "abcd");
        ck_assert_int_eq(secbuf_append(&b, "x", SIZE_MAX, SIZE_MAX), -EFBIG);
        tracked_cap = b.cap;
        secbuf_wipe_free(&b);
        secbuf_wipe_free(&b);                 /* idempotent */
}
END_TEST

static Suite *secbuf_suite(void) {
        Suite *s = suite_create("secbuf");
        TCase *tc = tcase_create("core");
        tcase_add_test(tc, test_grow_wipes_old_blocks);
        tcase_add_test(tc, test_limits);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return unit_run(secbuf_suite(), false);
}
