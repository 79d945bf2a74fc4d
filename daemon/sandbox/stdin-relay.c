/* The stdin relay of attached spawns (stdin-relay.h): the caller's fd, read
 * without changing its file status flags (a tty or fifo is reopened
 * non-blocking, a socket read with MSG_DONTWAIT, a regular file or
 * /dev/null read as the pipe takes it), into a non-blocking pipe whose read
 * end is the sandbox's stdin. At most one buffer is in flight: a sandbox that
 * does not read stalls only its own stdin. */
#include "stdin-relay.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "macro.h"

#define RELAY_BUF (64 * 1024)

struct stdin_relay {
        int in_fd;               /* the caller's stdin, -1 once done */
        bool in_socket;
        bool in_pollable;        /* else read whenever the pipe takes more */
        bool in_eof;
        uv_poll_t in_poll;
        bool in_poll_init;
        int out_fd;              /* write end of the sandbox's stdin pipe, -1 once done */
        uv_poll_t out_poll;
        bool out_poll_init;
        unsigned open_handles;
        bool freed;              /* the owner let go: free when the handles are closed */
        size_t off, len;
        uint8_t buf[RELAY_BUF];
};

static void relay_handle_closed(uv_handle_t *h) {
        stdin_relay *r = h->data;
        if (--r->open_handles == 0 && r->freed)
                free(r);
}

static void relay_close_handle(stdin_relay *r, uv_poll_t *h, bool *flag) {
        if (!*flag)
                return;
        *flag = false;
        h->data = r;
        r->open_handles++;
        uv_close((uv_handle_t *) h, relay_handle_closed);
}

static void relay_close_in(stdin_relay *r) {
        relay_close_handle(r, &r->in_poll, &r->in_poll_init);
        r->in_fd = safe_close(r->in_fd);
        r->in_eof = true;
}

static void relay_close_out(stdin_relay *r) {
        relay_close_handle(r, &r->out_poll, &r->out_poll_init);
        r->out_fd = safe_close(r->out_fd);
}

/* The sandbox closed its stdin or everything is delivered: nothing more to do. */
static void relay_finish(stdin_relay *r) {
        relay_close_in(r);
        relay_close_out(r);
        r->off = r->len = 0;
}

static void relay_read(stdin_relay *r) {
        ssize_t n;
        if (r->in_fd < 0 || r->len > r->off)
                return;
        do
                n = r->in_socket ? recv(r->in_fd, r->buf, sizeof(r->buf), MSG_DONTWAIT) : read(r->in_fd, r->buf, sizeof(r->buf));
        while (n < 0 && errno == EINTR);
        if (n > 0) {
                r->off = 0;
                r->len = (size_t) n;
        } else if (n == 0 || errno != EAGAIN)
                relay_close_in(r); /* EOF, or an error that is the caller's EOF */
}

/* Returns false when the sandbox's end is gone. */
static bool relay_flush(stdin_relay *r) {
        while (r->len > r->off && r->out_fd >= 0) {
                ssize_t n = write(r->out_fd, r->buf + r->off, r->len - r->off);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return errno == EAGAIN;
                r->off += (size_t) n;
        }
        if (r->off == r->len)
                r->off = r->len = 0;
        return r->out_fd >= 0;
}

static void on_out_writable(uv_poll_t *h, int status, int events);
static void on_in_readable(uv_poll_t *h, int status, int events);

static void relay_update(stdin_relay *r) {
        if (r->out_fd < 0) {
                relay_finish(r);
                return;
        }
        bool pending = r->len > r->off;
        if (!pending && r->in_eof) {
                relay_finish(r); /* EOF reaches the sandbox */
                return;
        }
        bool want_out = pending || !r->in_pollable;
        if (r->out_poll_init) {
                if (want_out)
                        uv_poll_start(&r->out_poll, UV_WRITABLE, on_out_writable);
                else
                        uv_poll_stop(&r->out_poll);
        }
        if (r->in_poll_init) {
                if (!pending)
                        uv_poll_start(&r->in_poll, UV_READABLE | UV_DISCONNECT, on_in_readable);
                else
                        uv_poll_stop(&r->in_poll);
        }
}

static void on_out_writable(uv_poll_t *h, int status, int events) {
        stdin_relay *r = container_of(h, stdin_relay, out_poll);
        if (status < 0 || !relay_flush(r)) {
                relay_finish(r);
                return;
        }
        if (!r->in_pollable) {
                relay_read(r);
                if (!relay_flush(r)) {
                        relay_finish(r);
                        return;
                }
        }
        relay_update(r);
}

static void on_in_readable(uv_poll_t *h, int status, int events) {
        stdin_relay *r = container_of(h, stdin_relay, in_poll);
        if (status < 0)
                relay_close_in(r);
        else
                relay_read(r);
        if (!relay_flush(r)) {
                relay_finish(r);
                return;
        }
        relay_update(r);
}

/* An fd we may read without blocking the loop, leaving the caller's own description as it is. */
static int relay_prepare_in(stdin_relay *r, int fd) {
        struct stat st;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (S_ISSOCK(st.st_mode)) {
                r->in_socket = true;
                r->in_fd = fd;
                r->in_pollable = true;
                return 0;
        }
        if (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode)) {
                /* A new open file description: O_NONBLOCK here is ours alone. */
                char path[64];
                snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
                int nfd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
                if (nfd >= 0) {
                        close(fd);
                        r->in_fd = nfd;
                        r->in_pollable = true;
                        return 0;
                }
                /* A terminal read in its shared, blocking description could stall the loop: refuse. */
                if (!S_ISCHR(st.st_mode) || isatty(fd))
                        return -errno;
        } else if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode) && !S_ISDIR(st.st_mode))
                return -EINVAL; /* an eventfd, a timerfd...: its blocking read would stall the loop */
        /* Regular files, /dev/null and the like never block: read as the pipe drains. */
        r->in_fd = fd;
        r->in_pollable = false;
        return 0;
}

int stdin_relay_start(uv_loop_t *loop, int client_fd, int *ret_sandbox_fd, stdin_relay **ret) {
        int p[2], k;
        stdin_relay *r = calloc(1, sizeof(*r));
        if (!r) {
                safe_close(client_fd);
                return -ENOMEM;
        }
        r->in_fd = r->out_fd = -1;
        if (pipe2(p, O_CLOEXEC) < 0) {
                k = -errno;
                safe_close(client_fd);
                free(r);
                return k;
        }
        r->out_fd = p[1];
        (void) fcntl(r->out_fd, F_SETFL, O_NONBLOCK);
        k = relay_prepare_in(r, client_fd);
        if (k < 0) {
                safe_close(client_fd);
                safe_close(p[0]);
                safe_close(p[1]);
                free(r);
                return k;
        }
        if (r->in_pollable && uv_poll_init(loop, &r->in_poll, r->in_fd) == 0)
                r->in_poll_init = true;
        else
                r->in_pollable = false; /* epoll refuses it: treat it like a file */
        if (uv_poll_init(loop, &r->out_poll, r->out_fd) < 0) {
                relay_close_handle(r, &r->in_poll, &r->in_poll_init);
                safe_close(r->in_fd);
                safe_close(p[0]);
                safe_close(p[1]);
                r->freed = true;
                if (r->open_handles == 0)
                        free(r);
                return -EIO;
        }
        r->out_poll_init = true;
        relay_update(r);
        *ret_sandbox_fd = p[0];
        *ret = r;
        return 0;
}

void stdin_relay_free(stdin_relay *r) {
        if (!r)
                return;
        relay_finish(r);
        r->freed = true;
        if (r->open_handles == 0)
                free(r);
}
