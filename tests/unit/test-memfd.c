/* common/memfd.h: the data is all there, from offset 0, and nobody can
 * change it: writes, resizes and further seals are refused. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fd.h"
#include "memfd.h"
#include "unit.h"

START_TEST(test_sealed_contents) {
        size_t len = 300000; /* larger than one write of a pipe, several pages */
        char *data = malloc(len), *back = malloc(len + 1);
        for (size_t i = 0; i < len; i++)
                data[i] = (char) (i * 13);
        int fd = memfd_new_sealed("test", data, len);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
        ck_assert_int_eq(fcntl(fd, F_GET_SEALS), MEMFD_SEALS);
        ck_assert_int_eq(read(fd, back, len + 1), (ssize_t) len); /* rewound, and no more than written */
        ck_assert_int_eq(memcmp(data, back, len), 0);

        ck_assert_int_eq(pwrite(fd, "x", 1, 0), -1);
        ck_assert_int_eq(errno, EPERM);
        ck_assert_int_eq(ftruncate(fd, 1), -1);
        ck_assert_int_eq(errno, EPERM);
        ck_assert_int_eq(fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE), -1);
        ck_assert_int_eq(errno, EPERM);
        ck_assert_ptr_eq(mmap(NULL, 4096, PROT_WRITE, MAP_SHARED, fd, 0), MAP_FAILED);

        int ro = fd_reopen(fd, O_RDONLY);
        ck_assert_int_ge(ro, 0);
        ck_assert_int_eq(fcntl(ro, F_GETFL) & O_ACCMODE, O_RDONLY);
        ck_assert_int_eq(fcntl(ro, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
        ck_assert_int_eq(read(ro, back, 4), 4);
        ck_assert_int_eq(memcmp(data, back, 4), 0);
        close(ro);
        close(fd);
        free(data);
        free(back);
}
END_TEST

START_TEST(test_empty) {
        int fd = memfd_new_sealed("empty", NULL, 0);
        ck_assert_int_ge(fd, 0);
        char c;
        ck_assert_int_eq(read(fd, &c, 1), 0);
        ck_assert_int_eq(fcntl(fd, F_GET_SEALS), MEMFD_SEALS);
        close(fd);
        ck_assert_int_eq(fd_reopen(-1, O_RDONLY), -ENOENT);
}
END_TEST

static Suite *memfd_suite(void) {
        Suite *s = suite_create("memfd");
        TCase *tc = tcase_create("core");
        tcase_add_test(tc, test_sealed_contents);
        tcase_add_test(tc, test_empty);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return unit_run(memfd_suite(), false);
}
