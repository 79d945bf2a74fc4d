/* Unit tests for daemon/core/statedir.c: one daemon per state directory (the
 * flock against a second instance, in another process as it would be), and the
 * start-up sweep of what a crashed predecessor left, in a temporary directory. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "statedir.h"
#include "unit.h"

static char tmp[] = "/tmp/test-statedir-XXXXXX";

static void setup(void) {
        strcpy(tmp, "/tmp/test-statedir-XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(tmp));
}

static void teardown(void) {
        char cmd[256];
        snprintf(cmd, sizeof(cmd), "chmod -R u+rwx %s 2>/dev/null; rm -rf %s", tmp, tmp);
        (void) !system(cmd);
}

static void put(const char *rel, const char *text) {
        char p[512];
        snprintf(p, sizeof(p), "%s/%s", tmp, rel);
        FILE *f = fopen(p, "w");
        ck_assert_msg(f != NULL, "%s: %s", p, strerror(errno));
        fputs(text, f);
        fclose(f);
}

static void dir(const char *rel) {
        char p[512];
        snprintf(p, sizeof(p), "%s/%s", tmp, rel);
        ck_assert_msg(mkdir(p, 0700) == 0, "%s: %s", p, strerror(errno));
}

static bool there(const char *rel) {
        char p[512];
        struct stat st;
        snprintf(p, sizeof(p), "%s/%s", tmp, rel);
        return lstat(p, &st) == 0;
}

/* A second instance, in a process of its own: what statedir_lock() answers it
 * (0 when it got the lock), and the holder pid it was told. */
static int lock_from_child(pid_t *ret_holder) {
        int pfd[2];
        ck_assert_int_eq(pipe(pfd), 0);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                pid_t holder = 0;
                int r = statedir_lock(tmp, &holder);
                int out[2] = { r >= 0 ? 0 : r, (int) holder };
                (void) !write(pfd[1], out, sizeof(out));
                _exit(0);
        }
        close(pfd[1]);
        int out[2] = { 1, 0 };
        ck_assert_int_eq(read(pfd[0], out, sizeof(out)), sizeof(out));
        close(pfd[0]);
        ck_assert_int_eq(waitpid(pid, NULL, 0), pid);
        *ret_holder = (pid_t) out[1];
        return out[0];
}

START_TEST(test_lock_excludes_second_instance) {
        pid_t holder = -1;
        int fd = statedir_lock(tmp, &holder);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(holder, -1); /* written only when refused */
        ck_assert_int_eq(fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
        char path[512], buf[32] = "", want[32];
        snprintf(path, sizeof(path), "%s/agentd.lock", tmp);
        struct stat st;
        ck_assert_int_eq(stat(path, &st), 0);
        ck_assert_uint_eq(st.st_mode & 07777, 0600);
        int rfd = open(path, O_RDONLY);
        ck_assert_int_gt(read(rfd, buf, sizeof(buf) - 1), 0);
        close(rfd);
        snprintf(want, sizeof(want), "%d\n", (int) getpid());
        ck_assert_str_eq(buf, want);

        ck_assert_int_eq(lock_from_child(&holder), -EBUSY);
        ck_assert_int_eq(holder, getpid());
        /* Even this process's own second attempt is refused (a second manager). */
        ck_assert_int_eq(statedir_lock(tmp, NULL), -EBUSY);

        close(fd);
        ck_assert_int_eq(lock_from_child(&holder), 0);
}
END_TEST

START_TEST(test_lock_freed_when_holder_dies) {
        int pfd[2];
        ck_assert_int_eq(pipe(pfd), 0);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                close(pfd[0]);
                int fd = statedir_lock(tmp, NULL);
                (void) !write(pfd[1], &fd, sizeof(fd));
                pause();
                _exit(0);
        }
        close(pfd[1]);
        int fd = -1;
        ck_assert_int_eq(read(pfd[0], &fd, sizeof(fd)), sizeof(fd));
        close(pfd[0]);
        ck_assert_int_ge(fd, 0);
        pid_t holder = 0;
        ck_assert_int_eq(statedir_lock(tmp, &holder), -EBUSY);
        ck_assert_int_eq(holder, pid);
        /* A crash (SIGKILL) leaves no stale lock behind. */
        kill(pid, SIGKILL);
        ck_assert_int_eq(waitpid(pid, NULL, 0), pid);
        int k = statedir_lock(tmp, NULL);
        ck_assert_int_ge(k, 0);
        close(k);
}
END_TEST

START_TEST(test_lock_errors) {
        ck_assert_int_eq(statedir_lock("/nonexistent-dir-for-test", NULL), -ENOENT);
        /* A symlink planted as the lock file is not followed. */
        char path[512];
        snprintf(path, sizeof(path), "%s/agentd.lock", tmp);
        ck_assert_int_eq(symlink("/tmp", path), 0);
        ck_assert_int_eq(statedir_lock(tmp, NULL), -ELOOP);
}
END_TEST

START_TEST(test_sweep_removes_unrecorded_sandboxes) {
        dir("sandboxes");
        /* A spawn cut short: no meta.json, an overlay work dir of mode 0000. */
        dir("sandboxes/0123456789ab");
        dir("sandboxes/0123456789ab/work");
        dir("sandboxes/0123456789ab/work/work");
        put("sandboxes/0123456789ab/work/work/f", "x");
        char p[512];
        snprintf(p, sizeof(p), "%s/sandboxes/0123456789ab/work/work", tmp);
        ck_assert_int_eq(chmod(p, 0), 0);
        /* A symlink in it pointing outside: removed, never followed. */
        dir("outside");
        put("outside/keep", "keep");
        snprintf(p, sizeof(p), "%s/outside", tmp);
        char l[512];
        snprintf(l, sizeof(l), "%s/sandboxes/0123456789ab/out", tmp);
        ck_assert_int_eq(symlink(p, l), 0);
        /* A recorded sandbox, and names that are not sandbox ids: left alone. */
        dir("sandboxes/aaaaaaaaaaaa");
        put("sandboxes/aaaaaaaaaaaa/meta.json", "{}");
        dir("sandboxes/not-a-sandbox");
        dir("sandboxes/ABCDEF012345");

        ck_assert_uint_eq(statedir_sweep(tmp), 1);
        ck_assert(!there("sandboxes/0123456789ab"));
        ck_assert(there("outside/keep"));
        ck_assert(there("sandboxes/aaaaaaaaaaaa/meta.json"));
        ck_assert(there("sandboxes/not-a-sandbox"));
        ck_assert(there("sandboxes/ABCDEF012345"));
        /* Nothing left to do the second time. */
        ck_assert_uint_eq(statedir_sweep(tmp), 0);
}
END_TEST

START_TEST(test_sweep_removes_promote_temps_where_the_layer_reaches) {
        char meta[600];
        dir("ws");
        dir("ws/src");
        dir("ws/other");
        put("ws/.agentd-promote.1", "partial");
        put("ws/src/.agentd-promote.2", "partial");
        put("ws/other/.agentd-promote.3", "not under the layer");
        put("ws/src/.agentd-promote", "not the prefix");
        put("ws/src/main.c", "user's file");
        dir("ws/src/.agentd-promote.dir");
        char fifo[512];
        snprintf(fifo, sizeof(fifo), "%s/ws/src/.agentd-promote.fifo", tmp);
        ck_assert_int_eq(mkfifo(fifo, 0600), 0);
        char p[512];
        snprintf(p, sizeof(p), "%s/ws/.agentd-promote.link", tmp);
        ck_assert_int_eq(symlink("/nonexistent", p), 0);
        dir("sandboxes");
        dir("sandboxes/bbbbbbbbbbbb");
        dir("sandboxes/bbbbbbbbbbbb/upper");
        dir("sandboxes/bbbbbbbbbbbb/upper/src");
        snprintf(meta, sizeof(meta), "{\"workspace\": \"%s/ws\"}", tmp);
        put("sandboxes/bbbbbbbbbbbb/meta.json", meta);

        ck_assert_uint_eq(statedir_sweep(tmp), 3);
        ck_assert(!there("ws/.agentd-promote.1"));
        ck_assert(!there("ws/.agentd-promote.link"));
        ck_assert(!there("ws/src/.agentd-promote.2"));
        ck_assert(there("ws/other/.agentd-promote.3"));
        ck_assert(there("ws/src/.agentd-promote"));
        ck_assert(there("ws/src/main.c"));
        ck_assert(there("ws/src/.agentd-promote.dir"));
        ck_assert(there("ws/src/.agentd-promote.fifo")); /* not a file promote writes */
        ck_assert(there("sandboxes/bbbbbbbbbbbb/meta.json"));
}
END_TEST

START_TEST(test_sweep_without_state) {
        ck_assert_uint_eq(statedir_sweep(tmp), 0);
        ck_assert_uint_eq(statedir_sweep("/nonexistent-dir-for-test"), 0);
}
END_TEST

START_TEST(test_remove_tree) {
        dir("t");
        dir("t/a");
        dir("t/a/b");
        put("t/a/b/c", "x");
        put("t/f", "y");
        int fd = open(tmp, O_RDONLY | O_DIRECTORY);
        ck_assert_int_eq(statedir_remove_tree(fd, "t"), 0);
        ck_assert(!there("t"));
        /* Gone already is fine; a file is removed as well. */
        ck_assert_int_eq(statedir_remove_tree(fd, "t"), 0);
        put("g", "z");
        ck_assert_int_eq(statedir_remove_tree(fd, "g"), 0);
        ck_assert(!there("g"));
        close(fd);
}
END_TEST

int main(void) {
        Suite *s = suite_create("statedir");
        TCase *tc = tcase_create("statedir");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_lock_excludes_second_instance);
        tcase_add_test(tc, test_lock_freed_when_holder_dies);
        tcase_add_test(tc, test_lock_errors);
        tcase_add_test(tc, test_sweep_removes_unrecorded_sandboxes);
        tcase_add_test(tc, test_sweep_removes_promote_temps_where_the_layer_reaches);
        tcase_add_test(tc, test_sweep_without_state);
        tcase_add_test(tc, test_remove_tree);
        suite_add_tcase(s, tc);
        return unit_run(s, false);
}
