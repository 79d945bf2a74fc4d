/* Unit tests for the one error object (common/error.c). */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "unit.h"

/* Two levels below the caller, as a part would set and a handler would wrap. */
static int open_workspace(agentd_error *err) {
        return error_set(err, ERROR_NOT_FOUND, ENOENT, "no directory '%s'", "/nope");
}

static int spawn(agentd_error *err) {
        int r = open_workspace(err);
        if (r < 0)
                return error_wrap(err, "workspace");
        return 0;
}

START_TEST(test_set_returns_negative_errno) {
        _cleanup_error_ agentd_error err = {};
        ck_assert(!error_is_set(&err));
        ck_assert_str_eq(error_message(&err), "");
        ck_assert_int_eq(error_set(&err, ERROR_LIMIT_EXCEEDED, E2BIG, "at most %d", 3), -E2BIG);
        ck_assert(error_is_set(&err));
        ck_assert_int_eq(err.code, ERROR_LIMIT_EXCEEDED);
        ck_assert_int_eq(err.errnum, E2BIG);
        ck_assert_str_eq(error_message(&err), "at most 3");
        ck_assert_str_eq(error_reason(&err, -ENOENT), "at most 3");
        ck_assert_str_eq(error_reason(NULL, -ENOENT), strerror(ENOENT));
        /* -errno is accepted as well; 0 never turns into a success. */
        ck_assert_int_eq(error_set(&err, ERROR_INTERNAL, -EPERM, "x"), -EPERM);
        ck_assert_int_eq(err.errnum, EPERM);
        ck_assert_int_eq(error_set(&err, ERROR_INVALID_PARAMS, 0, "bad"), -EINVAL);
        ck_assert_int_eq(err.code, ERROR_INVALID_PARAMS);
        ck_assert_str_eq(error_message(&err), "bad");
        /* Setting it again may quote the old message: it is formatted before it is freed. */
        error_set(&err, ERROR_INTERNAL, EIO, "again: %s", err.message);
        ck_assert_str_eq(error_message(&err), "again: bad");
}
END_TEST

START_TEST(test_wrap_prefixes_context) {
        _cleanup_error_ agentd_error err = {};
        ck_assert_int_eq(spawn(&err), -ENOENT);
        ck_assert_int_eq(error_wrap(&err, "spawn"), -ENOENT);
        ck_assert_str_eq(error_message(&err), "spawn: workspace: no directory '/nope'");
        ck_assert_int_eq(err.code, ERROR_NOT_FOUND);
        ck_assert_int_eq(err.errnum, ENOENT);
}
END_TEST

START_TEST(test_null_and_unset) {
        /* A caller that does not want the detail passes NULL: the errno still comes back. */
        ck_assert_int_eq(spawn(NULL), -EIO);
        ck_assert_int_eq(open_workspace(NULL), -ENOENT);
        ck_assert_int_eq(error_set(NULL, ERROR_INTERNAL, ENOMEM, "x"), -ENOMEM);
        /* Wrapping nothing is a bug, but it must not report success. */
        agentd_error unset = {};
        ck_assert_int_eq(error_wrap(&unset, "what"), -EIO);
        ck_assert(!error_is_set(&unset));
        ck_assert_int_eq(error_wrap(NULL, "what"), -EIO);
        error_free(NULL);
        error_free(&unset);
}
END_TEST

START_TEST(test_move_and_free) {
        agentd_error a = {}, b = {};
        error_set(&a, ERROR_BACKEND_UNAVAILABLE, EHOSTUNREACH, "vault: down");
        error_set(&b, ERROR_INTERNAL, EIO, "old");
        ck_assert_int_eq(error_move(&b, &a), -EHOSTUNREACH);
        ck_assert(!error_is_set(&a));
        ck_assert_ptr_null(a.message);
        ck_assert_int_eq(b.code, ERROR_BACKEND_UNAVAILABLE);
        ck_assert_str_eq(error_message(&b), "vault: down");
        error_free(&b);
        ck_assert(!error_is_set(&b));
        ck_assert_ptr_null(b.message);
        /* Moving into NULL drops it. */
        error_set(&a, ERROR_INTERNAL, EIO, "dropped");
        ck_assert_int_eq(error_move(NULL, &a), -EIO);
        ck_assert_ptr_null(a.message);
}
END_TEST

START_TEST(test_code_names) {
        /* CONTRACT §2: the wire's codes, by these exact names. */
        ck_assert_str_eq(error_code_to_string(ERROR_INVALID_REQUEST), "invalid_request");
        ck_assert_str_eq(error_code_to_string(ERROR_NOT_FOUND), "not_found");
        ck_assert_str_eq(error_code_to_string(ERROR_LOCKED_DOWN), "locked_down");
        ck_assert_str_eq(error_code_to_string(ERROR_BACKEND_UNAVAILABLE), "backend_unavailable");
        ck_assert_str_eq(error_code_to_string(ERROR_SPAWN_FAILED), "spawn_failed");
        ck_assert_str_eq(error_code_to_string((error_code) 999), "internal");
        ck_assert_int_eq(error_code_to_errno(ERROR_NOT_FOUND), ENOENT);
        ck_assert_int_eq(error_code_to_errno(ERROR_INVALID_PARAMS), EINVAL);
        ck_assert_int_eq(error_code_to_errno(ERROR_INTERNAL), EIO);
}
END_TEST

START_TEST(test_long_messages_are_whole) {
        _cleanup_error_ agentd_error err = {};
        char big[3000];
        memset(big, 'a', sizeof(big) - 1);
        big[sizeof(big) - 1] = 0;
        error_set(&err, ERROR_INTERNAL, EIO, "%s", big);
        error_wrap(&err, "outer");
        ck_assert_uint_eq(strlen(error_message(&err)), strlen("outer: ") + sizeof(big) - 1);
}
END_TEST

static Suite *error_suite(void) {
        Suite *s = suite_create("error");
        TCase *tc = tcase_create("core");
        tcase_add_test(tc, test_set_returns_negative_errno);
        tcase_add_test(tc, test_wrap_prefixes_context);
        tcase_add_test(tc, test_null_and_unset);
        tcase_add_test(tc, test_move_and_free);
        tcase_add_test(tc, test_code_names);
        tcase_add_test(tc, test_long_messages_are_whole);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return unit_run(error_suite(), false);
}
