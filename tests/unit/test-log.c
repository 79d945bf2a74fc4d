/* Unit tests for daemon/core/log.c: the structured fields that let journalctl select
 * one sandbox's lines (AGENTD_SANDBOX=, AGENTD_TASK=, AGENTD_EVENT=), and their
 * form on the stderr fallback (this host has no journald to send them to). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "unit.h"

START_TEST(test_fields_exact) {
        log_sandbox_fields f;
        log_sandbox_fields_init(&f, "0a1b2c3d4e5f", "build", "spawn");
        ck_assert_str_eq(f.v[0], "AGENTD_SANDBOX=0a1b2c3d4e5f");
        ck_assert_str_eq(f.v[1], "AGENTD_TASK=build");
        ck_assert_str_eq(f.v[2], "AGENTD_EVENT=spawn");
        ck_assert_ptr_null(f.v[3]);
}
END_TEST

START_TEST(test_fields_missing_are_omitted) {
        log_sandbox_fields f;
        log_sandbox_fields_init(&f, "abc", NULL, "alert");
        ck_assert_str_eq(f.v[0], "AGENTD_SANDBOX=abc");
        ck_assert_str_eq(f.v[1], "AGENTD_EVENT=alert");
        ck_assert_ptr_null(f.v[2]);
        log_sandbox_fields_init(&f, NULL, NULL, NULL);
        ck_assert_ptr_null(f.v[0]);
}
END_TEST

START_TEST(test_fields_cannot_forge_fields) {
        /* A task name is the user's: it must not add a field or split a line. */
        log_sandbox_fields f;
        char longv[400];
        memset(longv, 'x', sizeof(longv) - 1);
        longv[sizeof(longv) - 1] = 0;
        log_sandbox_fields_init(&f, "id", "evil\nAGENTD_SANDBOX=other x", longv);
        ck_assert_str_eq(f.v[1], "AGENTD_TASK=evil_AGENTD_SANDBOX_other_x");
        ck_assert_uint_eq(strlen(f.v[2]), strlen("AGENTD_EVENT=") + LOG_FIELD_VALUE_MAX);
}
END_TEST

START_TEST(test_stderr_line_carries_fields) {
        char path[] = "/tmp/test-log-XXXXXX";
        int fd = mkstemp(path);
        ck_assert_int_ge(fd, 0);
        unlink(path);
        int saved = dup(STDERR_FILENO);
        ck_assert_int_eq(dup2(fd, STDERR_FILENO), STDERR_FILENO);
        setenv("AGENTD_LOG_TARGET", "stderr", 1);
        log_setup("agentd");
        log_sandbox(LOG_INFO, "0a1b2c3d4e5f", "build", "exit", "sandbox %s: exit_code=%d", "0a1b2c3d4e5f", 3);
        log_sandbox(LOG_DEBUG, "0a1b2c3d4e5f", "build", "noise", "below the level");
        fflush(stderr);
        dup2(saved, STDERR_FILENO);
        close(saved);
        char buf[512] = "", want[512];
        ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
        close(fd);
        ck_assert_int_gt(n, 0);
        snprintf(want, sizeof(want),
                 "agentd[%d]: info: sandbox 0a1b2c3d4e5f: exit_code=3 AGENTD_SANDBOX=0a1b2c3d4e5f AGENTD_TASK=build "
                 "AGENTD_EVENT=exit\n", (int) getpid());
        ck_assert_str_eq(buf, want);
}
END_TEST

static Suite *log_suite(void) {
        Suite *s = suite_create("log");
        TCase *tc = tcase_create("fields");
        tcase_add_test(tc, test_fields_exact);
        tcase_add_test(tc, test_fields_missing_are_omitted);
        tcase_add_test(tc, test_fields_cannot_forge_fields);
        tcase_add_test(tc, test_stderr_line_carries_fields);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return unit_run(log_suite(), true);
}
