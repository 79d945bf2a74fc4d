/* common/file.h: bounded reads refuse what is too large or not a regular
 * file; the replace writers leave the old file or the new one, never half,
 * and no temp file behind. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fd.h"
#include "file.h"
#include "macro.h"
#include "unit.h"

static char dir[64];
static int dir_fd = -1;

static void setup(void) {
        strcpy(dir, "/tmp/test-file-XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(dir));
        dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        ck_assert_int_ge(dir_fd, 0);
}

static void teardown(void) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        ck_assert_int_eq(system(cmd), 0);
        close(dir_fd);
}

static char *path_in(const char *name) {
        static char p[128];
        snprintf(p, sizeof(p), "%s/%s", dir, name);
        return p;
}

static void assert_contents(const char *name, const char *want) {
        _cleanup_free_ char *b = NULL;
        size_t n;
        ck_assert_int_eq(read_file_bounded(path_in(name), 1024, &b, &n), 0);
        ck_assert_uint_eq(n, strlen(want));
        ck_assert_str_eq(b, want);
}

static mode_t mode_of(const char *name) {
        struct stat st;
        ck_assert_int_eq(fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW), 0);
        return st.st_mode & 07777;
}

START_TEST(test_read_bounded) {
        ck_assert_int_eq(write_file(path_in("a"), "12345", 5, 0600, 0), 0);
        char *b = NULL;
        size_t n = 0;
        ck_assert_int_eq(read_file_bounded(path_in("a"), 4, &b, &n), -EFBIG);
        ck_assert_ptr_null(b);
        ck_assert_int_eq(read_file_bounded(path_in("a"), 5, &b, &n), 0);
        ck_assert_str_eq(b, "12345");
        free(b);
        ck_assert_int_eq(read_file_bounded(dir, 1 << 20, &b, &n), -EFBIG);          /* not a regular file */
        ck_assert_int_eq(read_file_bounded(path_in("none"), 10, &b, &n), -ENOENT);
        ck_assert_int_eq(symlinkat("a", dir_fd, "link"), 0);
        ck_assert_int_eq(read_file_bounded(path_in("link"), 10, &b, &n), -ELOOP);     /* O_NOFOLLOW */
}
END_TEST

START_TEST(test_write_file) {
        mode_t old = umask(0);
        ck_assert_int_eq(write_file(path_in("w"), "one", 3, 0640, 0), 0);
        ck_assert_uint_eq(mode_of("w"), 0640);
        ck_assert_int_eq(write_file(path_in("w"), "xy", 2, 0600, 0), 0);          /* truncates */
        assert_contents("w", "xy");
        ck_assert_int_eq(write_file(path_in("w"), "zz", 2, 0600, WRITE_FILE_EXCL), -EEXIST);
        assert_contents("w", "xy");
        ck_assert_int_eq(symlinkat("w", dir_fd, "l"), 0);
        ck_assert_int_eq(write_file(path_in("l"), "zz", 2, 0600, 0), -ELOOP);
        umask(old);
}
END_TEST

START_TEST(test_replace_at) {
        mode_t old = umask(0);
        ck_assert_int_eq(write_file_replace_at(dir_fd, "h.tmp", "h", "first", 5, 0600, WRITE_FILE_SYNC_DIR), 0);
        assert_contents("h", "first");
        ck_assert_uint_eq(mode_of("h"), 0600);
        ck_assert_int_eq(faccessat(dir_fd, "h.tmp", F_OK, 0), -1);
        ck_assert_int_eq(write_file_replace_at(dir_fd, "h.tmp", "h", "second", 6, 0644, 0), 0);
        assert_contents("h", "second");
        ck_assert_uint_eq(mode_of("h"), 0644);

        /* A failing rename (the target is a non-empty directory) leaves the
         * old state and removes the temp file. */
        ck_assert_int_eq(mkdirat(dir_fd, "d", 0700), 0);
        ck_assert_int_eq(write_file(path_in("d/x"), "", 0, 0600, 0), 0);
        ck_assert_int_lt(write_file_replace_at(dir_fd, "d.tmp", "d", "x", 1, 0600, 0), 0);
        ck_assert_int_eq(faccessat(dir_fd, "d.tmp", F_OK, 0), -1);

        /* EXCL on the temp file: someone else's temp file is refused and left alone. */
        ck_assert_int_eq(write_file(path_in("e.tmp"), "theirs", 6, 0600, 0), 0);
        ck_assert_int_eq(write_file_replace_at(dir_fd, "e.tmp", "e", "mine", 4, 0600, WRITE_FILE_EXCL), -EEXIST);
        assert_contents("e.tmp", "theirs");
        ck_assert_int_eq(faccessat(dir_fd, "e", F_OK, 0), -1);
        umask(old);
}
END_TEST

START_TEST(test_replace_path) {
        ck_assert_int_eq(write_file_atomic(path_in("p"), "abc", 3), 0);
        assert_contents("p", "abc");
        ck_assert_uint_eq(mode_of("p") & 0077, 0);
        ck_assert_int_eq(write_file_replace(path_in("p"), "defg", 4, WRITE_FILE_SYNC_DIR), 0);
        assert_contents("p", "defg");
        ck_assert_int_eq(faccessat(dir_fd, "p.tmp", F_OK, 0), -1);
        /* The temp file is not followed through a planted symlink. */
        ck_assert_int_eq(symlinkat("target", dir_fd, "q.tmp"), 0);
        ck_assert_int_eq(write_file_atomic(path_in("q"), "x", 1), -ELOOP);
        ck_assert_int_eq(faccessat(dir_fd, "target", F_OK, AT_SYMLINK_NOFOLLOW), -1);
        char longp[PATH_MAX + 10];
        memset(longp, 'a', sizeof(longp) - 1);
        longp[sizeof(longp) - 1] = 0;
        ck_assert_int_eq(write_file_atomic(longp, "x", 1), -ENAMETOOLONG);
}
END_TEST

/* common/fd.h: reads gather short reads up to EOF or the size; fsync of a
 * directory refuses what is not one. */
START_TEST(test_fd_helpers) {
        int p[2];
        ck_assert_int_eq(pipe(p), 0);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                close(p[0]);
                for (int i = 0; i < 5; i++) {
                        if (fd_write_all(p[1], "abc", 3) < 0)
                                _exit(1);
                        usleep(20 * 1000); /* five separate short reads on the other side */
                }
                _exit(0);
        }
        close(p[1]);
        char buf[64];
        ck_assert_int_eq(fd_read_full(p[0], buf, 10), 10);          /* stops at the size */
        ck_assert_int_eq(memcmp(buf, "abcabcabca", 10), 0);
        ck_assert_int_eq(fd_read_full(p[0], buf, sizeof(buf)), 5);  /* and at EOF */
        ck_assert_int_eq(memcmp(buf, "bcabc", 5), 0);
        close(p[0]);
        int st;
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        ck_assert_int_eq(fd_read_full(-1, buf, 1), -EBADF);
        ck_assert_int_eq(fsync_directory(dir), 0);
        ck_assert_int_eq(write_file(path_in("f"), "", 0, 0600, 0), 0);
        ck_assert_int_eq(fsync_directory(path_in("f")), -ENOTDIR);
        ck_assert_int_eq(fsync_parent_directory(path_in("f")), 0);
        ck_assert_int_eq(fsync_parent_directory(path_in("none/f")), -ENOENT);
}
END_TEST

static Suite *file_suite(void) {
        Suite *s = suite_create("file");
        TCase *tc = tcase_create("core");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_read_bounded);
        tcase_add_test(tc, test_write_file);
        tcase_add_test(tc, test_replace_at);
        tcase_add_test(tc, test_replace_path);
        tcase_add_test(tc, test_fd_helpers);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return unit_run(file_suite(), false);
}
