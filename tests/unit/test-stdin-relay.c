/* Unit tests for daemon/sandbox/stdin-relay.c on a real libuv loop: the
 * caller's stdin (a socket, a fifo, a file, /dev/null) copied byte for byte
 * into the sandbox's pipe with EOF at the end, the caller's own open file
 * description left as it was, fd kinds whose read would block the loop
 * refused, and a sandbox that closes its stdin ending the relay. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "stdin-relay.h"
#include "unit.h"

#define BIG (1024 * 1024 + 17)

static uv_loop_t loop;

static void setup(void) {
        signal(SIGPIPE, SIG_IGN); /* as agentd does: a closed pipe is EPIPE */
        ck_assert_int_eq(uv_loop_init(&loop), 0);
}

static void teardown(void) {
        ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
        ck_assert_int_eq(uv_loop_close(&loop), 0);
}

/* The sandbox's side: reads its stdin on the same loop until EOF. */
typedef struct reader {
        uv_poll_t poll;
        int fd;
        uint8_t *buf;
        size_t len;
        bool eof;
} reader;

static void on_readable(uv_poll_t *h, int status, int events) {
        reader *r = h->data;
        for (;;) {
                ssize_t n = read(r->fd, r->buf + r->len, BIG + 64 - r->len);
                if (n > 0) {
                        r->len += (size_t) n;
                        continue;
                }
                if (n == 0 || errno != EAGAIN) {
                        r->eof = true;
                        uv_close((uv_handle_t *) h, NULL);
                }
                return;
        }
}

static void reader_start(reader *r, int fd) {
        memset(r, 0, sizeof(*r));
        r->fd = fd;
        r->buf = malloc(BIG + 64);
        ck_assert_int_eq(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
        ck_assert_int_eq(uv_poll_init(&loop, &r->poll, fd), 0);
        r->poll.data = r;
        ck_assert_int_eq(uv_poll_start(&r->poll, UV_READABLE | UV_DISCONNECT, on_readable), 0);
}

static void pattern(uint8_t *p, size_t n) {
        for (size_t i = 0; i < n; i++)
                p[i] = (uint8_t) (i * 31 + 7);
}

typedef struct writer {
        int fd;
        size_t n;
} writer;

/* The caller typing into its end (blocking writes), then closing it. */
static void *write_all(void *userdata) {
        writer *w = userdata;
        uint8_t *p = malloc(w->n);
        pattern(p, w->n);
        for (size_t off = 0; off < w->n;) {
                ssize_t k = write(w->fd, p + off, w->n - off);
                if (k <= 0)
                        break;
                off += (size_t) k;
        }
        close(w->fd);
        free(p);
        return NULL;
}

static void expect_pattern(const reader *r, size_t n) {
        ck_assert_uint_eq(r->len, n);
        uint8_t *want = malloc(n + 1);
        pattern(want, n);
        ck_assert_int_eq(memcmp(r->buf, want, n), 0);
        free(want);
}

/* Relays `in` to the end; returns what the sandbox read. */
static void relay_all(int in, reader *r) {
        int sandbox_fd = -1;
        stdin_relay *relay = NULL;
        ck_assert_int_eq(stdin_relay_start(&loop, in, &sandbox_fd, &relay), 0);
        ck_assert_ptr_nonnull(relay);
        reader_start(r, sandbox_fd);
        ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
        ck_assert(r->eof);
        close(sandbox_fd);
        stdin_relay_free(relay);
}

/* The caller types BIG bytes into `write_end` (closed after) from a thread
 * while `in` is relayed: the sandbox must read exactly them, then EOF. */
static void relay_typed(int in, int write_end) {
        writer w = { write_end, BIG };
        pthread_t t;
        reader r;

        pthread_create(&t, NULL, write_all, &w);
        relay_all(in, &r);
        pthread_join(t, NULL);
        expect_pattern(&r, BIG);
        free(r.buf);
}

START_TEST(test_socket_bytes_and_eof) {
        int sv[2];
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        relay_typed(sv[0], sv[1]);
}
END_TEST

START_TEST(test_fifo_description_untouched) {
        int p[2];
        ck_assert_int_eq(pipe(p), 0);
        /* The caller keeps its own reference to the same description. */
        int callers = dup(p[0]);
        relay_typed(p[0], p[1]);
        /* Read non-blocking through a description of its own: the caller's stays blocking. */
        ck_assert_int_eq(fcntl(callers, F_GETFL) & O_NONBLOCK, 0);
        close(callers);
}
END_TEST

START_TEST(test_regular_file) {
        char path[] = "/tmp/test-stdin-relay-XXXXXX";
        int fd = mkstemp(path);
        ck_assert_int_ge(fd, 0);
        unlink(path);
        uint8_t *p = malloc(BIG);
        pattern(p, BIG);
        ck_assert_int_eq(write(fd, p, BIG), BIG);
        free(p);
        ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
        reader r;
        relay_all(fd, &r);
        expect_pattern(&r, BIG);
        free(r.buf);
}
END_TEST

START_TEST(test_dev_null_is_eof) {
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        reader r;
        relay_all(fd, &r);
        ck_assert_uint_eq(r.len, 0);
        free(r.buf);
}
END_TEST

START_TEST(test_refused_kinds) {
        /* An eventfd's read blocks until someone writes: it would stall the loop. */
        int fd = eventfd(0, EFD_CLOEXEC);
        int sandbox_fd = -1;
        stdin_relay *relay = NULL;
        ck_assert_int_eq(stdin_relay_start(&loop, fd, &sandbox_fd, &relay), -EINVAL);
        ck_assert_int_eq(sandbox_fd, -1);
        ck_assert_ptr_null(relay);
        /* The fd is taken on failure too. */
        ck_assert_int_eq(fcntl(fd, F_GETFD), -1);
        ck_assert_int_eq(errno, EBADF);
        fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(stdin_relay_start(&loop, fd, &sandbox_fd, &relay), -EINVAL);
        ck_assert_ptr_null(relay);
        stdin_relay_free(NULL);
}
END_TEST

static void on_give_up(uv_timer_t *t) {
        ck_abort_msg("the relay did not end after the sandbox closed its stdin");
}

START_TEST(test_sandbox_closes_stdin) {
        int sv[2];
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        int sandbox_fd = -1;
        stdin_relay *relay = NULL;
        ck_assert_int_eq(stdin_relay_start(&loop, sv[0], &sandbox_fd, &relay), 0);
        close(sandbox_fd);
        /* The caller types on: the relay notices the pipe is gone and stops,
         * closing its end of the caller's socket. */
        ck_assert_int_eq(write(sv[1], "more", 4), 4);
        uv_timer_t guard;
        uv_timer_init(&loop, &guard);
        uv_timer_start(&guard, on_give_up, 10000, 0);
        uv_unref((uv_handle_t *) &guard);
        ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
        char c;
        ck_assert_int_eq(read(sv[1], &c, 1), 0); /* the relay's end is closed: EOF */
        uv_close((uv_handle_t *) &guard, NULL);
        close(sv[1]);
        stdin_relay_free(relay);
        ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0); /* before `guard` goes out of scope */
}
END_TEST

START_TEST(test_free_while_relaying) {
        int sv[2];
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        int sandbox_fd = -1;
        stdin_relay *relay = NULL;
        ck_assert_int_eq(stdin_relay_start(&loop, sv[0], &sandbox_fd, &relay), 0);
        ck_assert_int_eq(write(sv[1], "abc", 3), 3);
        ck_assert_int_eq(uv_run(&loop, UV_RUN_NOWAIT), 1);
        /* The sandbox ended: freed with the caller's end still open; handles close on the loop. */
        stdin_relay_free(relay);
        ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
        char buf[8];
        ck_assert_int_eq(read(sandbox_fd, buf, sizeof(buf)), 3);
        ck_assert_int_eq(read(sandbox_fd, buf, sizeof(buf)), 0);
        close(sandbox_fd);
        close(sv[1]);
}
END_TEST

int main(void) {
        Suite *s = suite_create("stdin-relay");
        TCase *tc = tcase_create("stdin-relay");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_socket_bytes_and_eof);
        tcase_add_test(tc, test_fifo_description_untouched);
        tcase_add_test(tc, test_regular_file);
        tcase_add_test(tc, test_dev_null_is_eof);
        tcase_add_test(tc, test_refused_kinds);
        tcase_add_test(tc, test_sandbox_closes_stdin);
        tcase_add_test(tc, test_free_while_relaying);
        suite_add_tcase(s, tc);
        return unit_run(s, false);
}
