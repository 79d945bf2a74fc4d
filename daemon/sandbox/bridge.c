/* agentd-sandbox: the proxy bridge. The daemon's HTTP(S) egress proxy listens
 * on a host Unix socket (proxy_socket=); inside the sandbox, whose network
 * namespace has nothing but lo, it appears as TCP 127.0.0.1:proxy_port (and
 * [::1]:proxy_port when the namespace has IPv6).
 *
 * The init opens the socket node O_PATH before it leaves the host's root,
 * creates the listening sockets once lo is up (so a command that connects
 * right away finds them) and forks the bridge. The bridge drops every
 * capability, sets no_new_privs, is not dumpable and dies with the init; it
 * accepts TCP connections and relays each one to a fresh connection to the
 * proxy, reached through /proc/self/fd/N: nothing of the host's file system
 * is bound into the sandbox for it. One poll() loop, non-blocking sockets,
 * two bounded buffers per connection, half-closes passed on with
 * shutdown(SHUT_WR). */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "sandbox.h"

#define BRIDGE_MAX_CONNS 256
#define BRIDGE_BUF (64 * 1024) /* per direction: at most 32 MiB for a full table */
#define BRIDGE_RETRY_MS 10     /* the proxy's backlog was full: connect again after */
#define BRIDGE_CONNECT_MS 5000 /* ... and give up after */
#define BRIDGE_BACKOFF_MS 100  /* accept() ran out of fds or memory */

typedef struct Flow {
        char *buf;
        size_t off, len;
        bool eof;  /* the source is finished (EOF or error) */
        bool done; /* ... and everything was passed on, or the sink failed */
} Flow;

typedef struct Conn {
        int tcp, unx;
        bool connecting; /* unx not connected yet */
        bool failed;     /* reset the TCP side when closing */
        int64_t retry_at, give_up_at;
        Flow up;   /* tcp -> unx */
        Flow down; /* unx -> tcp */
} Conn;

typedef struct Bridge {
        int listeners[2];
        struct sockaddr_un proxy;
        socklen_t proxy_len;
        Conn conns[BRIDGE_MAX_CONNS];
        size_t n;
        int64_t accept_after;
        struct pollfd pfd[2 + 2 * BRIDGE_MAX_CONNS];
} Bridge;

int bridge_open_socket(const SandboxSpec *spec, SandboxError *err) {
        struct stat st;
        int fd;

        fd = open(spec->proxy_socket, O_PATH | O_CLOEXEC);
        if (fd < 0)
                return sandbox_fail(err, "proxy", -errno, "%s: %m", spec->proxy_socket);
        if (fstat(fd, &st) < 0) {
                int r = -errno;
                safe_close(fd);
                errno = -r;
                return sandbox_fail(err, "proxy", r, "%s: %m", spec->proxy_socket);
        }
        if (!S_ISSOCK(st.st_mode)) {
                safe_close(fd);
                return sandbox_fail(err, "proxy", -ENOTSOCK, "%s: not a socket", spec->proxy_socket);
        }
        return fd;
}

static int listen_on(int family, unsigned port, SandboxError *err) {
        _cleanup_close_ int fd = -1;
        union {
                struct sockaddr sa;
                struct sockaddr_in in;
                struct sockaddr_in6 in6;
        } a = {};
        socklen_t len;

        fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
                if (family == AF_INET6 && errno == EAFNOSUPPORT)
                        return -EAFNOSUPPORT;
                return sandbox_fail(err, "proxy", -errno, "socket: %m");
        }
        if (family == AF_INET) {
                a.in = (struct sockaddr_in) {
                        .sin_family = AF_INET,
                        .sin_port = htons((uint16_t) port),
                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                };
                len = sizeof(a.in);
        } else {
                if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &(int) { 1 }, sizeof(int)) < 0)
                        return sandbox_fail(err, "proxy", -errno, "IPV6_V6ONLY: %m");
                a.in6 = (struct sockaddr_in6) {
                        .sin6_family = AF_INET6,
                        .sin6_port = htons((uint16_t) port),
                        .sin6_addr = IN6ADDR_LOOPBACK_INIT,
                };
                len = sizeof(a.in6);
        }
        if (bind(fd, &a.sa, len) < 0) {
                /* No ::1 on lo (IPv6 disabled in the namespace): IPv4 only. */
                if (family == AF_INET6 && errno == EADDRNOTAVAIL)
                        return -EADDRNOTAVAIL;
                return sandbox_fail(err, "proxy", -errno, "bind %s:%u: %m", family == AF_INET ? "127.0.0.1" : "[::1]", port);
        }
        if (listen(fd, SOMAXCONN) < 0)
                return sandbox_fail(err, "proxy", -errno, "listen: %m");
        return TAKE_FD(fd);
}

static int64_t now_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void conn_close(Conn *c) {
        if (c->failed) /* the client learns that something broke: RST, not a clean EOF */
                (void) setsockopt(c->tcp, SOL_SOCKET, SO_LINGER, &(struct linger) { .l_onoff = 1 }, sizeof(struct linger));
        safe_close(c->tcp);
        safe_close(c->unx);
        free(c->up.buf); /* both buffers */
}

/* One read and one write per round: a busy connection cannot starve the rest. */
static void flow_pump(Conn *c, Flow *f, int src, int dst) {
        ssize_t n;

        if (f->done)
                return;
        if (!f->eof && f->len < BRIDGE_BUF) {
                n = recv(src, f->buf + f->len, BRIDGE_BUF - f->len, MSG_DONTWAIT);
                if (n > 0)
                        f->len += (size_t) n;
                else if (n == 0)
                        f->eof = true;
                else if (errno != EAGAIN && errno != EINTR) {
                        f->eof = true;
                        c->failed = true;
                }
        }
        if (f->len > f->off) {
                n = send(dst, f->buf + f->off, f->len - f->off, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (n > 0) {
                        f->off += (size_t) n;
                        if (f->off == f->len)
                                f->off = f->len = 0;
                } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
                        /* The sink is gone: drop what it would have got, stop reading. */
                        f->off = f->len = 0;
                        f->eof = f->done = true;
                        c->failed = true;
                        return;
                }
        }
        if (f->eof && f->len == 0) {
                (void) shutdown(dst, SHUT_WR);
                f->done = true;
        }
}

/* What a direction waits for: room to read its source, or a drained sink.
 * Every unfinished direction waits for one of them, so nothing stalls. */
static short flow_src_events(const Flow *f) {
        return !f->done && !f->eof && f->len < BRIDGE_BUF ? POLLIN : 0;
}

static short flow_dst_events(const Flow *f) {
        return !f->done && f->len > f->off ? POLLOUT : 0;
}

/* 0: connected; 1: the proxy's backlog is full, try again later; <0: failed. */
static int conn_connect(Bridge *b, Conn *c) {
        if (connect(c->unx, (const struct sockaddr *) &b->proxy, b->proxy_len) == 0)
                return 0;
        if (errno == EAGAIN || errno == EINTR)
                return 1;
        return -errno;
}

static void bridge_accept(Bridge *b, int listener, int64_t now) {
        while (b->n < BRIDGE_MAX_CONNS) {
                Conn *c = &b->conns[b->n];
                char *buf;
                int fd, r;

                fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) {
                        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                                b->accept_after = now + BRIDGE_BACKOFF_MS;
                        if (errno == EAGAIN || errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                            errno == ENOMEM || errno == EINTR)
                                return;
                        continue; /* ECONNABORTED and the like: the next one */
                }
                (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int) { 1 }, sizeof(int));
                buf = malloc(2 * BRIDGE_BUF);
                *c = (Conn) {
                        .tcp = fd,
                        .unx = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0),
                        .up.buf = buf,
                        .down.buf = buf ? buf + BRIDGE_BUF : NULL,
                        .failed = true,
                };
                if (!buf || c->unx < 0 || (r = conn_connect(b, c)) < 0) {
                        conn_close(c);
                        if (!buf || c->unx < 0)
                                b->accept_after = now + BRIDGE_BACKOFF_MS;
                        continue;
                }
                c->failed = false;
                c->connecting = r > 0;
                c->retry_at = now + BRIDGE_RETRY_MS;
                c->give_up_at = now + BRIDGE_CONNECT_MS;
                b->n++;
        }
}

static _Noreturn void bridge_loop(Bridge *b) {
        for (;;) {
                int64_t now = now_ms(), wake = -1;
                bool accepting = b->n < BRIDGE_MAX_CONNS && now >= b->accept_after;
                int timeout, n;

                for (size_t i = 0; i < 2; i++) {
                        b->pfd[i].fd = accepting ? b->listeners[i] : -1;
                        b->pfd[i].events = POLLIN;
                }
                if (!accepting && b->n < BRIDGE_MAX_CONNS)
                        wake = b->accept_after;
                for (size_t i = 0; i < b->n; i++) {
                        Conn *c = &b->conns[i];
                        struct pollfd *t = &b->pfd[2 + 2 * i], *u = t + 1;

                        if (c->connecting) {
                                t->fd = u->fd = -1;
                                if (wake < 0 || c->retry_at < wake)
                                        wake = c->retry_at;
                                continue;
                        }
                        t->events = flow_src_events(&c->up) | flow_dst_events(&c->down);
                        u->events = flow_src_events(&c->down) | flow_dst_events(&c->up);
                        /* An fd nobody waits on stays out: its POLLHUP would spin us. */
                        t->fd = t->events ? c->tcp : -1;
                        u->fd = u->events ? c->unx : -1;
                }
                timeout = wake < 0 ? -1 : wake <= now ? 0 : (int) (wake - now);

                n = poll(b->pfd, 2 + 2 * b->n, timeout);
                if (n < 0) {
                        if (errno == EINTR || errno == EAGAIN)
                                continue;
                        _exit(1);
                }
                now = now_ms();

                /* Backwards, so the last connection can fill a closed one's slot. */
                for (size_t i = b->n; i-- > 0;) {
                        Conn *c = &b->conns[i];
                        struct pollfd *t = &b->pfd[2 + 2 * i], *u = t + 1;

                        if (c->connecting) {
                                int r;

                                if (now < c->retry_at)
                                        continue;
                                r = conn_connect(b, c);
                                if (r > 0 && now < c->give_up_at) {
                                        c->retry_at = now + BRIDGE_RETRY_MS;
                                        continue;
                                }
                                if (r != 0) {
                                        c->failed = true;
                                        c->up.done = c->down.done = true;
                                } else
                                        c->connecting = false;
                        } else if ((t->fd >= 0 && t->revents) || (u->fd >= 0 && u->revents)) {
                                flow_pump(c, &c->up, c->tcp, c->unx);
                                flow_pump(c, &c->down, c->unx, c->tcp);
                        }
                        if (c->up.done && c->down.done) {
                                conn_close(c);
                                *c = b->conns[--b->n];
                        }
                }

                if (accepting)
                        for (size_t i = 0; i < 2; i++)
                                if (b->listeners[i] >= 0 && (b->pfd[i].revents & POLLIN))
                                        bridge_accept(b, b->listeners[i], now);
        }
}

/* Close every fd but the sorted, distinct fds in keep[]. */
static void close_all_but(const int *keep, size_t n) {
        unsigned from = 0;

        for (size_t i = 0; i < n; i++) {
                if (keep[i] < 0)
                        continue;
                if ((unsigned) keep[i] > from)
                        syscall(SYS_close_range, from, (unsigned) keep[i] - 1, 0);
                from = (unsigned) keep[i] + 1;
        }
        syscall(SYS_close_range, from, ~0U, 0);
}

static int cmp_int(const void *a, const void *b) {
        return *(const int *) a - *(const int *) b;
}

static _Noreturn void bridge_child(const SandboxSpec *spec, Bridge *b, int socket_fd, int ready) {
        SandboxError err = {};
        sigset_t all;
        int keep[4] = { b->listeners[0], b->listeners[1], socket_fd, ready };

        /* Tied to the init (pid 1 here): if it is gone already, so are we. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 || getppid() != 1)
                _exit(1);
        /* Nothing to handle: no EINTR, no SIGPIPE (MSG_NOSIGNAL anyway). */
        sigfillset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        (void) prctl(PR_SET_NAME, "agentd-proxy", 0, 0, 0);

        /* No stdio (holding the caller's pipes open), no status channel, no spec fds. */
        qsort(keep, ELEMENTSOF(keep), sizeof(int), cmp_int);
        close_all_but(keep, ELEMENTSOF(keep));
        /* The command's environment is none of our business. */
        for (char **e = spec->envp; *e; e++)
                explicit_zero(*e, strlen(*e));

        if (confine_drop_capabilities(&err) < 0 || /* and no_new_privs */
            (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0 && sandbox_fail(&err, "proxy", -errno, "dumpable: %m") < 0)) {
                dprintf(ready, "%s: %s", err.step, err.message);
                _exit(1);
        }
        if (write(ready, "R", 1) != 1)
                _exit(1);
        close(ready);
        bridge_loop(b);
}

/* In the init, lo up: listen, fork the bridge. Returns the fd on which
 * bridge_wait_ready learns that the bridge is set up. */
int bridge_start(const SandboxSpec *spec, int socket_fd, SandboxError *err) {
        static Bridge bridge; /* zero pages, touched only in the bridge */
        Bridge *b = &bridge;
        int pipefd[2], r;
        pid_t pid;

        b->listeners[0] = b->listeners[1] = -1;
        r = listen_on(AF_INET, spec->proxy_port, err);
        if (r < 0)
                return r;
        b->listeners[0] = r;
        r = listen_on(AF_INET6, spec->proxy_port, err);
        if (r < 0 && r != -EAFNOSUPPORT && r != -EADDRNOTAVAIL) {
                safe_close(b->listeners[0]);
                return r;
        }
        b->listeners[1] = r < 0 ? -1 : r;

        b->proxy.sun_family = AF_UNIX;
        r = snprintf(b->proxy.sun_path, sizeof(b->proxy.sun_path), "/proc/self/fd/%d", socket_fd);
        b->proxy_len = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + (size_t) r + 1);

        if (pipe2(pipefd, O_CLOEXEC) < 0) {
                r = sandbox_fail(err, "proxy", -errno, "pipe: %m");
                goto out;
        }
        pid = fork();
        if (pid < 0) {
                r = sandbox_fail(err, "proxy", -errno, "fork: %m");
                safe_close(pipefd[0]);
                safe_close(pipefd[1]);
                goto out;
        }
        if (pid == 0)
                bridge_child(spec, b, socket_fd, pipefd[1]);
        safe_close(pipefd[1]);
        r = pipefd[0];
out:
        /* Only the bridge keeps the listeners: if it dies, connecting fails at once. */
        safe_close(b->listeners[0]);
        safe_close(b->listeners[1]);
        return r;
}

int bridge_wait_ready(int ready_fd, SandboxError *err) {
        char buf[sizeof(err->message)];
        ssize_t n;

        do
                n = read(ready_fd, buf, sizeof(buf) - 1);
        while (n < 0 && errno == EINTR);
        if (n == 1 && buf[0] == 'R')
                return 0;
        if (n <= 0)
                return sandbox_fail(err, "proxy", n < 0 ? -errno : -ECHILD, "bridge exited during setup");
        buf[n] = '\0';
        return sandbox_fail(err, "proxy", -EIO, "bridge: %s", buf);
}
