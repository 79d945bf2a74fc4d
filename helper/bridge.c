/* agentd-sandbox: the proxy bridge. The daemon's HTTP(S) egress proxy listens
 * on a host Unix socket (proxy_socket=); inside the sandbox, whose network
 * namespace has nothing but lo, it appears as TCP 127.0.0.1:proxy_port (and
 * [::1]:proxy_port when the namespace has IPv6).
 *
 * The init opens the socket node O_PATH before it leaves the host's root,
 * creates the listening sockets once lo is up (so a command that connects
 * right away finds them) and forks the bridge. The bridge drops every
 * capability, sets no_new_privs, is not dumpable and dies with the init; it
 * accepts TCP connections and hands each accepted socket to the proxy over a
 * fresh connection to the proxy socket, reached through /proc/self/fd/N
 * (nothing of the host's file system is bound into the sandbox for it): one
 * byte with the fd attached (SCM_RIGHTS), then it closes its copies. The
 * proxy then reads and writes the sandbox's TCP socket itself, so no byte of
 * the payload passes through here (a relay hop here cost half the
 * throughput). The bridge holds a connection only until the proxy's backlog
 * takes it, so its table is small. */
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

#include "helper.h"
#include "socket.h"

#define BRIDGE_MAX_PENDING 64  /* connections waiting for room in the proxy's backlog */
#define BRIDGE_RETRY_MS 10     /* the proxy's backlog was full: connect again after */
#define BRIDGE_CONNECT_MS 5000 /* ... and give up after */
#define BRIDGE_BACKOFF_MS 100  /* accept() ran out of fds or memory */

typedef struct Pending {
        int tcp, unx;
        int64_t retry_at, give_up_at;
} Pending;

typedef struct Bridge {
        int listeners[2];
        struct sockaddr_un proxy;
        socklen_t proxy_len;
        Pending pending[BRIDGE_MAX_PENDING];
        size_t n;
        int64_t accept_after;
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

/* The client learns that the proxy is unreachable: a reset, not a clean EOF. */
static void tcp_reset(int fd) {
        (void) setsockopt(fd, SOL_SOCKET, SO_LINGER, &(struct linger) { .l_onoff = 1 }, sizeof(struct linger));
        safe_close(fd);
}

/* 0: handed over; 1: the proxy's backlog is full, try again later; <0: failed.
 * On a fresh connection the one byte always fits, so sending cannot block. */
static int handoff(const Bridge *b, int unx, int tcp) {
        ssize_t n;

        if (connect(unx, (const struct sockaddr *) &b->proxy, b->proxy_len) < 0)
                return errno == EAGAIN || errno == EINTR ? 1 : -errno;
        n = socket_send_fds(unx, "F", 1, &tcp, 1, MSG_DONTWAIT);
        if (n != 1)
                return n < 0 ? (int) n : -EIO;
        return 0;
}

/* Finishes a connection whose handoff is done (r == 0) or failed (r < 0). */
static void finish(int tcp, int unx, int r) {
        safe_close(unx);
        if (r < 0)
                tcp_reset(tcp);
        else
                safe_close(tcp); /* the proxy holds the socket now */
}

static void bridge_accept(Bridge *b, int listener, int64_t now) {
        while (b->n < BRIDGE_MAX_PENDING) {
                int tcp, unx, r;

                tcp = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (tcp < 0) {
                        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                                b->accept_after = now + BRIDGE_BACKOFF_MS;
                        if (errno == EAGAIN || errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                            errno == ENOMEM || errno == EINTR)
                                return;
                        continue; /* ECONNABORTED and the like: the next one */
                }
                /* Socket options travel with the socket: set here, where it is ours. */
                (void) setsockopt(tcp, IPPROTO_TCP, TCP_NODELAY, &(int) { 1 }, sizeof(int));
                unx = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
                if (unx < 0) {
                        tcp_reset(tcp);
                        b->accept_after = now + BRIDGE_BACKOFF_MS;
                        return;
                }
                r = handoff(b, unx, tcp);
                if (r > 0) {
                        b->pending[b->n++] = (Pending) {
                                .tcp = tcp,
                                .unx = unx,
                                .retry_at = now + BRIDGE_RETRY_MS,
                                .give_up_at = now + BRIDGE_CONNECT_MS,
                        };
                        continue;
                }
                finish(tcp, unx, r);
        }
}

static _Noreturn void bridge_loop(Bridge *b) {
        struct pollfd pfd[2];

        for (;;) {
                int64_t now = now_ms(), wake = -1;
                bool accepting = b->n < BRIDGE_MAX_PENDING && now >= b->accept_after;
                int timeout, n;

                for (size_t i = 0; i < 2; i++) {
                        pfd[i].fd = accepting ? b->listeners[i] : -1;
                        pfd[i].events = POLLIN;
                }
                if (!accepting && b->n < BRIDGE_MAX_PENDING)
                        wake = b->accept_after;
                for (size_t i = 0; i < b->n; i++)
                        if (wake < 0 || b->pending[i].retry_at < wake)
                                wake = b->pending[i].retry_at;
                timeout = wake < 0 ? -1 : wake <= now ? 0 : (int) (wake - now);

                n = poll(pfd, 2, timeout);
                if (n < 0) {
                        if (errno == EINTR || errno == EAGAIN)
                                continue;
                        _exit(1);
                }
                now = now_ms();

                /* Backwards, so the last one can fill a finished one's slot. */
                for (size_t i = b->n; i-- > 0;) {
                        Pending *c = &b->pending[i];
                        int r;

                        if (now < c->retry_at)
                                continue;
                        r = handoff(b, c->unx, c->tcp);
                        if (r > 0 && now < c->give_up_at) {
                                c->retry_at = now + BRIDGE_RETRY_MS;
                                continue;
                        }
                        finish(c->tcp, c->unx, r > 0 ? -ETIMEDOUT : r);
                        *c = b->pending[--b->n];
                }

                if (accepting)
                        for (size_t i = 0; i < 2; i++)
                                if (b->listeners[i] >= 0 && (pfd[i].revents & POLLIN))
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
