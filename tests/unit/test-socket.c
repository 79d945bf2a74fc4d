/* common/socket.h: fds travel with their message, arrive close-on-exec, and
 * the ones that do not fit are closed, never leaked. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "macro.h"
#include "socket.h"
#include "unit.h"

static bool fd_is_open(int fd) {
        return fcntl(fd, F_GETFD) >= 0;
}

static int n_open_fds(void) {
        DIR *d = opendir("/proc/self/fd");
        int n = 0;
        ck_assert_ptr_nonnull(d);
        while (readdir(d))
                n++;
        closedir(d);
        return n;
}

/* Two fds whose identity we can check on the far side: pipe ends. */
static void same_file(int a, int b) {
        struct stat sa, sb;
        ck_assert_int_eq(fstat(a, &sa), 0);
        ck_assert_int_eq(fstat(b, &sb), 0);
        ck_assert_uint_eq(sa.st_ino, sb.st_ino);
        ck_assert_uint_eq(sa.st_dev, sb.st_dev);
}

START_TEST(test_send_recv_fds) {
        int sp[2], p[2];
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
        ck_assert_int_eq(pipe(p), 0);
        ck_assert_int_eq(socket_send_fds(sp[0], "hi", 2, p, 2, 0), 2);

        char buf[8];
        int fds[4];
        size_t n = 0;
        SocketFdsInfo info;
        ck_assert_int_eq(socket_recv_fds(sp[1], buf, sizeof(buf), fds, &n, ELEMENTSOF(fds), 0, &info), 2);
        ck_assert_int_eq(memcmp(buf, "hi", 2), 0);
        ck_assert_uint_eq(n, 2);
        ck_assert_uint_eq(info.n_rights, 1);
        ck_assert_uint_eq(info.n_closed, 0);
        ck_assert(!info.foreign);
        ck_assert_int_eq(info.msg_flags & MSG_CTRUNC, 0);
        same_file(fds[0], p[0]);
        same_file(fds[1], p[1]);
        /* MSG_CMSG_CLOEXEC: a received fd never leaks into an exec'd child. */
        ck_assert_int_eq(fcntl(fds[0], F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
        ck_assert_int_eq(fcntl(fds[1], F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
        for (int i = 0; i < 2; i++) {
                close(fds[i]);
                close(p[i]);
                close(sp[i]);
        }
}
END_TEST

/* More fds than the receiver has room for: the kernel drops the surplus
 * (MSG_CTRUNC) and none of them stays open in the receiver. */
START_TEST(test_recv_surplus_truncated) {
        int sp[2], p[2], q[2];
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp), 0);
        ck_assert_int_eq(pipe(p), 0);
        ck_assert_int_eq(pipe(q), 0);
        int out[4] = { p[0], p[1], q[0], q[1] };
        ck_assert_int_eq(socket_send_fds(sp[0], "x", 1, out, 4, 0), 1);

        int before = n_open_fds();
        char c;
        int fds[2] = { -1, -1 };
        size_t n = 1; /* one slot already taken: room for one more */
        fds[0] = 1000;
        SocketFdsInfo info;
        ck_assert_int_eq(socket_recv_fds(sp[1], &c, 1, fds, &n, 2, 0, &info), 1);
        ck_assert_uint_eq(n, 2);
        ck_assert_int_eq(fds[0], 1000);
        same_file(fds[1], p[0]);
        ck_assert_int_eq(info.msg_flags & MSG_CTRUNC, MSG_CTRUNC);
        /* Exactly the one kept was installed: no surplus fd lingers. */
        ck_assert_int_eq(n_open_fds(), before + 1);
        close(fds[1]);
        for (int i = 0; i < 2; i++) {
                close(p[i]);
                close(q[i]);
                close(sp[i]);
        }
}
END_TEST

/* Room for one, two sent: CMSG_SPACE's padding lets the second in, and it
 * is closed and counted, so "exactly one" stays checkable. */
START_TEST(test_recv_padding_surplus) {
        int sp[2], p[2];
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
        ck_assert_int_eq(pipe(p), 0);
        ck_assert_int_eq(socket_send_fds(sp[0], "x", 1, p, 2, 0), 1);
        close(p[1]);
        int before = n_open_fds();
        char c;
        int fd = -1;
        size_t n = 0;
        SocketFdsInfo info;
        ck_assert_int_eq(socket_recv_fds(sp[1], &c, 1, &fd, &n, 1, 0, &info), 1);
        ck_assert_uint_eq(n, 1);
        same_file(fd, p[0]);
        ck_assert_uint_eq(info.n_closed + ((info.msg_flags & MSG_CTRUNC) ? 1 : 0), 1);
        ck_assert_int_eq(n_open_fds(), before + 1);
        /* The write end's last reference is gone: the read end sees EOF. */
        ck_assert_int_eq(read(fd, &c, 1), 0);
        close(fd);
        close(p[0]);
        close(sp[0]);
        close(sp[1]);
}
END_TEST

/* socket_cmsg_take_fds closes what does not fit the caller's array. */
START_TEST(test_take_closes_surplus) {
        int p[2], q[2];
        ck_assert_int_eq(pipe(p), 0);
        ck_assert_int_eq(pipe(q), 0);
        int in[3] = { p[0], p[1], q[0] };
        union {
                struct cmsghdr align;
                char buf[SOCKET_CMSG_SPACE(3)];
        } control;
        struct msghdr mh = {};
        ck_assert_int_eq(socket_cmsg_put_fds(&mh, control.buf, sizeof(control.buf), in, 3), 0);
        ck_assert_int_eq(socket_cmsg_put_fds(&mh, control.buf, SOCKET_CMSG_SPACE(2), in, 3), -ENOBUFS);
        int got[2];
        size_t n = 0;
        SocketFdsInfo info;
        socket_cmsg_take_fds(&mh, got, &n, 2, &info);
        ck_assert_uint_eq(n, 2);
        ck_assert_int_eq(got[0], p[0]);
        ck_assert_int_eq(got[1], p[1]);
        ck_assert_uint_eq(info.n_rights, 1);
        ck_assert_uint_eq(info.n_closed, 1);
        ck_assert(!fd_is_open(q[0]));
        ck_assert(fd_is_open(q[1]));
        close(p[0]);
        close(p[1]);
        close(q[1]);
}
END_TEST

/* A message larger than the socket buffer goes out whole; the fds ride the
 * first chunk only, so the receiver gets exactly one of each. */
START_TEST(test_send_all_large) {
        int sp[2], p[2];
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
        int small = 4096;
        ck_assert_int_eq(setsockopt(sp[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
        ck_assert_int_eq(pipe(p), 0);
        size_t len = 1 << 20;
        char *data = malloc(len), *back = malloc(len);
        for (size_t i = 0; i < len; i++)
                data[i] = (char) (i * 7);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0)
                _exit(socket_send_all_fds(sp[0], data, len, p, 1, 0) == 0 ? 0 : 1);
        close(sp[0]);
        size_t got = 0, n = 0;
        int fds[4];
        while (got < len) {
                ssize_t k = socket_recv_fds(sp[1], back + got, len - got, fds, &n, 4, 0, NULL);
                ck_assert_int_gt(k, 0);
                got += (size_t) k;
        }
        ck_assert_int_eq(memcmp(data, back, len), 0);
        ck_assert_uint_eq(n, 1);
        same_file(fds[0], p[0]);
        int st;
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        char c;
        ck_assert_int_eq(socket_recv_fds(sp[1], &c, 1, fds, &n, 4, 0, NULL), 0); /* end of stream */
        close(fds[0]);
        close(sp[1]);
        close(p[0]);
        close(p[1]);
        free(data);
        free(back);
}
END_TEST

START_TEST(test_errors) {
        int sp[2];
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
        int many[SOCKET_FDS_MAX + 1] = {};
        ck_assert_int_eq(socket_send_fds(sp[0], "x", 1, many, SOCKET_FDS_MAX + 1, 0), -EINVAL);
        close(sp[1]);
        ck_assert_int_eq(socket_send_fds(sp[0], "x", 1, NULL, 0, 0), -EPIPE); /* MSG_NOSIGNAL: no SIGPIPE */
        char c;
        size_t n = 0;
        int fds[1];
        ck_assert_int_eq(socket_recv_fds(sp[0], &c, 1, fds, &n, 1, MSG_DONTWAIT, NULL), 0);
        ck_assert_int_eq(socket_recv_fds(-1, &c, 1, fds, &n, 1, 0, NULL), -EBADF);
        close(sp[0]);
}
END_TEST

static Suite *socket_suite(void) {
        Suite *s = suite_create("socket");
        TCase *tc = tcase_create("core");
        tcase_add_test(tc, test_send_recv_fds);
        tcase_add_test(tc, test_recv_surplus_truncated);
        tcase_add_test(tc, test_recv_padding_surplus);
        tcase_add_test(tc, test_take_closes_surplus);
        tcase_add_test(tc, test_send_all_large);
        tcase_add_test(tc, test_errors);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return unit_run(socket_suite(), true);
}
