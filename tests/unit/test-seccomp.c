/* Unit tests for the seccomp builder: build `default` and `strict`, install the raw
 * program in a child with seccomp(2) (as the sandbox helper does, no libseccomp),
 * and check what fails with which errno and what still works. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "macro.h"
#include "seccomp-build.h"
#include "unit.h"

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#endif
#ifndef __NR_clone3
#define __NR_clone3 435
#endif

static int install(const void *bpf, size_t len) {
        struct sock_fprog prog = {
                .len = (unsigned short) (len / sizeof(struct sock_filter)),
                .filter = (struct sock_filter *) bpf,
        };
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                return -errno;
        if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
                return -errno;
        return 0;
}

/* The errno a call fails with (0 on success), computed in the child. */
#define EXPECT(call, want)                                                              \
        do {                                                                            \
                errno = 0;                                                              \
                long _r = (long) (call);                                                \
                int _e = _r < 0 ? errno : 0;                                            \
                if (_e != (want)) {                                                     \
                        fprintf(stderr, "%s: errno %d (%s), want %d\n", #call, _e,      \
                                strerror(_e), (want));                                  \
                        _exit(10);                                                      \
                }                                                                       \
        } while (0)

static void check_default(void) {
        char c = 'x';
        int fd;

        EXPECT(syscall(SYS_ptrace, 0 /* PTRACE_TRACEME */, 0, 0, 0), EPERM);
        EXPECT(syscall(SYS_keyctl, 0, 0, 0, 0, 0), EPERM);
        EXPECT(syscall(SYS_bpf, 0, NULL, 0), EPERM);
        EXPECT(unshare(CLONE_NEWUSER), EPERM);
        EXPECT(unshare(0), EPERM);
        EXPECT(setns(0, 0), EPERM);
        EXPECT(syscall(__NR_io_uring_setup, 1, NULL), EPERM);
        EXPECT(socket(AF_VSOCK, SOCK_STREAM, 0), EPERM);
        /* the upper half of a 32-bit argument is ignored by the kernel; so by the filter */
        EXPECT(syscall(SYS_socket, 0xf00000000UL | AF_VSOCK, SOCK_STREAM, 0), EPERM);
        EXPECT(ioctl(0, TIOCSTI, &c), EPERM);
        EXPECT(syscall(SYS_ioctl, 0, 0xabc00000000UL | TIOCSTI, &c), EPERM);
        EXPECT(syscall(SYS_mount, "none", "/", "tmpfs", 0, NULL), EPERM);
        EXPECT(syscall(SYS_clone, CLONE_NEWNET | SIGCHLD, NULL, NULL, NULL, 0), EPERM);
        EXPECT(syscall(__NR_clone3, NULL, 0), ENOSYS);
        EXPECT(syscall(SYS_personality, 0x0040000 /* ADDR_NO_RANDOMIZE */), EPERM);
        EXPECT(syscall(SYS_personality, 1), EPERM);
        EXPECT(syscall(SYS_personality, 0xfffffffe), EPERM);
        EXPECT(syscall(SYS_personality, 0xffffffff), 0);
        EXPECT(syscall(SYS_personality, 0), 0);
        EXPECT(syscall(SYS_chroot, "/"), EPERM);
        EXPECT(syscall(SYS_syslog, 3, NULL, 0), EPERM);

        /* still allowed */
        EXPECT(getpid(), 0);
        EXPECT(write(STDERR_FILENO, "", 0), 0);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                _exit(11);
        close(fd);
        /* fork() goes through clone (glibc falls back from clone3) without new namespaces */
        pid_t pid = fork();
        if (pid < 0)
                _exit(12);
        if (pid == 0)
                _exit(0);
        if (waitpid(pid, NULL, 0) != pid)
                _exit(13);
}

static void check_strict(void) {
        int fd;

        EXPECT(syscall(SYS_ptrace, 0, 0, 0, 0), EPERM);
        EXPECT(socket(AF_INET, SOCK_STREAM, 0), EPERM);
        EXPECT(socket(AF_INET6, SOCK_DGRAM, 0), EPERM);
        EXPECT(socket(AF_NETLINK, SOCK_RAW, 0), EPERM);
        EXPECT(syscall(SYS_personality, 0xffffffff), EPERM);
        EXPECT(setuid(getuid()), EPERM);
        EXPECT(unshare(CLONE_NEWUSER), EPERM);
        EXPECT(getpid(), 0);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                _exit(11);
        close(fd);
}

/* Fork, install the program, run fn; returns the child's wait status. */
static int run_filtered(const void *bpf, size_t len, void (*fn)(void)) {
        int status;
        pid_t pid = fork();

        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                if (install(bpf, len) < 0)
                        _exit(20);
                fn();
                _exit(0);
        }
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        return status;
}

START_TEST(test_default) {
        _cleanup_free_ void *bpf = NULL;
        _cleanup_error_ agentd_error error = {};
        size_t len = 0;
        int status;

        ck_assert_int_eq(seccomp_build_bpf("default", &bpf, &len, &error), 0);
        ck_assert(!error_is_set(&error));
        ck_assert_uint_gt(len, 0);
        ck_assert_uint_eq(len % sizeof(struct sock_filter), 0);
        status = run_filtered(bpf, len, check_default);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status 0x%x", status);
}
END_TEST

START_TEST(test_strict) {
        _cleanup_free_ void *bpf = NULL;
        size_t len = 0;
        int status;

        ck_assert_int_eq(seccomp_build_bpf("strict", &bpf, &len, NULL), 0);
        status = run_filtered(bpf, len, check_strict);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status 0x%x", status);
}
END_TEST

#if defined(__x86_64__)
static void call_x32_getpid(void) {
        /* an x32 syscall number: native arch, foreign ABI */
        syscall(0x40000000 | 39);
        _exit(30);
}

static void call_i386_getpid(void) {
        long r;
        __asm__ volatile("int $0x80" : "=a"(r) : "a"(20L) : "memory");
        _exit(r > 0 ? 31 : 32);
}

START_TEST(test_foreign_abi_killed) {
        _cleanup_free_ void *bpf = NULL;
        size_t len = 0;
        int status;

        ck_assert_int_eq(seccomp_build_bpf("default", &bpf, &len, NULL), 0);

        status = run_filtered(bpf, len, call_x32_getpid);
        ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS, "x32 call: status 0x%x", status);

        /* i386 via int 0x80: without the filter, find out if the kernel has IA-32 at all */
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0)
                call_i386_getpid();
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        if (WIFEXITED(status) && WEXITSTATUS(status) == 31) {
                status = run_filtered(bpf, len, call_i386_getpid);
                ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS, "i386 call: status 0x%x", status);
        }
}
END_TEST
#endif

START_TEST(test_memfd) {
        _cleanup_free_ void *bpf = NULL, *copy = NULL;
        _cleanup_close_ int fd = -1;
        size_t len = 0;
        struct stat st;

        ck_assert_int_eq(seccomp_build_bpf("strict", &bpf, &len, NULL), 0);
        ck_assert_int_eq(seccomp_build_memfd("strict", &fd, NULL), 0);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(fstat(fd, &st), 0);
        ck_assert_uint_eq((size_t) st.st_size, len);
        copy = malloc(len);
        ck_assert_int_eq(pread(fd, copy, len, 0), (ssize_t) len);
        ck_assert_int_eq(memcmp(copy, bpf, len), 0);
        /* sealed: neither writable nor resizable */
        ck_assert_int_eq(fcntl(fd, F_GET_SEALS) & (F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL),
                         F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL);
        ck_assert_int_eq(pwrite(fd, "x", 1, 0), -1);
        ck_assert_int_eq(errno, EPERM);
        ck_assert_int_eq(ftruncate(fd, 0), -1);
}
END_TEST

START_TEST(test_profile_file) {
        static const char text[] = "include default\ngetppid eperm\nsocket eperm arg0 == AF_INET\n";
        char path[] = "/tmp/test-seccomp-XXXXXX";
        _cleanup_free_ void *bpf = NULL;
        _cleanup_error_ agentd_error error = {};
        size_t len = 0;
        int fd, status;

        fd = mkstemp(path);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t) strlen(text));
        close(fd);
        ck_assert_int_eq(seccomp_build_bpf(path, &bpf, &len, &error), 0);

        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                if (install(bpf, len) < 0)
                        _exit(20);
                EXPECT(syscall(SYS_getppid), EPERM);
                EXPECT(socket(AF_INET, SOCK_STREAM, 0), EPERM);
                EXPECT(syscall(SYS_ptrace, 0, 0, 0, 0), EPERM);
                EXPECT(getpid(), 0);
                _exit(0);
        }
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status 0x%x", status);

        /* an unknown syscall in a file is the author's typo: refuse it */
        fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(write(fd, "\nfrobnicate eperm\n", 18), 18);
        close(fd);
        free(bpf);
        bpf = NULL;
        ck_assert_int_eq(seccomp_build_bpf(path, &bpf, &len, &error), -EINVAL);
        ck_assert_ptr_nonnull(strstr(error_message(&error), "frobnicate"));
        ck_assert_int_eq(error.code, ERROR_POLICY_DENIED);
        error_free(&error);

        fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(write(fd, "\n\nptrace maybe\n", 15), 15);
        close(fd);
        ck_assert_int_eq(seccomp_build_bpf(path, &bpf, &len, &error), -EINVAL);
        ck_assert_ptr_nonnull(strstr(error_message(&error), ":3:"));
        unlink(path);
}
END_TEST

START_TEST(test_unknown_profile) {
        _cleanup_error_ agentd_error error = {};
        void *bpf = NULL;
        size_t len = 0;
        int fd = -1;

        ck_assert_int_eq(seccomp_build_bpf("relaxed", &bpf, &len, &error), -ENOENT);
        ck_assert_ptr_null(bpf);
        ck_assert_ptr_nonnull(strstr(error_message(&error), "relaxed"));
        ck_assert_int_eq(error.code, ERROR_POLICY_DENIED);
        error_free(&error);
        ck_assert_int_eq(seccomp_build_bpf("off", &bpf, &len, &error), -EINVAL);
        ck_assert_int_eq(error.code, ERROR_POLICY_DENIED);
        error_free(&error);
        ck_assert_int_eq(seccomp_build_bpf("/nonexistent/profile", &bpf, &len, &error), -ENOENT);
        ck_assert_ptr_nonnull(strstr(error_message(&error), "/nonexistent/profile"));
        ck_assert_int_eq(seccomp_build_memfd("relaxed", &fd, NULL), -ENOENT);
        ck_assert_int_eq(fd, -1);
}
END_TEST

static Suite *seccomp_suite(void) {
        Suite *s = suite_create("seccomp");
        TCase *tc = tcase_create("build");

        tcase_add_test(tc, test_default);
        tcase_add_test(tc, test_strict);
#if defined(__x86_64__)
        tcase_add_test(tc, test_foreign_abi_killed);
#endif
        tcase_add_test(tc, test_memfd);
        tcase_add_test(tc, test_profile_file);
        tcase_add_test(tc, test_unknown_profile);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return unit_run(seccomp_suite(), false);
}
