/* Unit tests for daemon/core/notify-status.c: the STATUS= line as systemd
 * receives it, on a datagram socket named by $NOTIFY_SOCKET (as the service
 * manager's is), sent only when it changes. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "notify-status.h"
#include "unit.h"

static char tmp[] = "/tmp/test-notify-XXXXXX";
static char sock_path[256];
static int sock = -1;

static void setup(void) {
        strcpy(tmp, "/tmp/test-notify-XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(tmp));
        snprintf(sock_path, sizeof(sock_path), "%s/notify", tmp);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        strcpy(sa.sun_path, sock_path);
        sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(sock, 0);
        ck_assert_int_eq(bind(sock, (struct sockaddr *) &sa, sizeof(sa)), 0);
        setenv("NOTIFY_SOCKET", sock_path, 1);
}

static void teardown(void) {
        close(sock);
        unlink(sock_path);
        rmdir(tmp);
}

/* The next datagram, or "" when none is waiting. */
static const char *received(void) {
        static char buf[1024];
        ssize_t n = recv(sock, buf, sizeof(buf) - 1, MSG_DONTWAIT);
        if (n < 0) {
                ck_assert_int_eq(errno, EAGAIN);
                n = 0;
        }
        buf[n] = 0;
        return buf;
}

START_TEST(test_status_line_sent) {
        daemon_status st = { .n_sandboxes = 2, .n_live = 1, .vault = "ok" };
        ck_assert_int_gt(daemon_status_send(&st), 0);
        ck_assert_str_eq(received(), "STATUS=serving, 2 sandboxes (1 running), vault: ok");
}
END_TEST

START_TEST(test_sent_only_when_changed) {
        daemon_status st = { .n_sandboxes = 1, .n_live = 0, .vault = "unconfigured" };
        ck_assert_int_gt(daemon_status_send(&st), 0);
        ck_assert_str_eq(received(), "STATUS=serving, 1 sandbox (0 running), vault: unconfigured");
        /* The watchdog tick with nothing new says nothing. */
        ck_assert_int_eq(daemon_status_send(&st), 0);
        ck_assert_str_eq(received(), "");
        st.vault = "logging in";
        ck_assert_int_gt(daemon_status_send(&st), 0);
        ck_assert_str_eq(received(), "STATUS=serving, 1 sandbox (0 running), vault: logging in");
        st.locked_down = true;
        ck_assert_int_gt(daemon_status_send(&st), 0);
        ck_assert_str_eq(received(), "STATUS=serving, 1 sandbox (0 running), vault: logging in, LOCKED DOWN (agentctl unlock)");
}
END_TEST

START_TEST(test_stopping) {
        daemon_status st = { .stopping = true, .n_sandboxes = 5, .n_live = 1, .vault = NULL };
        ck_assert_int_gt(daemon_status_send(&st), 0);
        ck_assert_str_eq(received(), "STATUS=stopping, 1 sandbox still running");
        st.n_live = 3;
        ck_assert_int_gt(daemon_status_send(&st), 0);
        ck_assert_str_eq(received(), "STATUS=stopping, 3 sandboxes still running");
}
END_TEST

START_TEST(test_newline_cannot_end_the_assignment) {
        /* A Vault state with a newline would add a second assignment (e.g. READY=1). */
        daemon_status st = { .n_sandboxes = 0, .vault = "error: x\nREADY=1" };
        ck_assert_int_gt(daemon_status_send(&st), 0);
        ck_assert_str_eq(received(), "STATUS=serving, 0 sandboxes (0 running), vault: error: x READY=1");
}
END_TEST

START_TEST(test_without_notify_socket) {
        unsetenv("NOTIFY_SOCKET");
        daemon_status st = { .n_sandboxes = 3, .vault = "ok" };
        ck_assert_int_eq(daemon_status_send(&st), 0);
        ck_assert_str_eq(received(), "");
}
END_TEST

START_TEST(test_format_bounded) {
        daemon_status st = { .n_sandboxes = 10, .n_live = 2, .vault = "ok", .locked_down = true };
        char small[16];
        int n = daemon_status_format(&st, small, sizeof(small));
        ck_assert_int_eq(n, (int) strlen("serving, 10 sandboxes (2 running), vault: ok, LOCKED DOWN (agentctl unlock)"));
        ck_assert_str_eq(small, "serving, 10 san");
}
END_TEST

int main(void) {
        Suite *s = suite_create("notify-status");
        TCase *tc = tcase_create("notify-status");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_status_line_sent);
        tcase_add_test(tc, test_sent_only_when_changed);
        tcase_add_test(tc, test_stopping);
        tcase_add_test(tc, test_newline_cannot_end_the_assignment);
        tcase_add_test(tc, test_without_notify_socket);
        tcase_add_test(tc, test_format_bounded);
        suite_add_tcase(s, tc);
        return unit_run(s, false);
}
