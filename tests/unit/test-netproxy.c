/* Unit tests for daemon/lib/netproxy.c: the egress proxy on a real libuv loop. The
 * loop (proxy + a loopback "upstream" echo/HTTP server) runs on the test's main
 * thread; the sandbox side is a plain blocking client on a second thread, so
 * each test reads like a conversation. Shared state is only looked at by the
 * main thread after the client thread has been joined and the loop has ended. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <uv.h>

#include "macro.h"
#include "netproxy.h"
#include "policy.h"
#include "socket.h"
#include "unit.h"

#define MAX_EVENTS 64
#define BIG (4U * 1024U * 1024U)

typedef struct recorded_event {
        netproxy_event_kind kind;
        char host[256];
        uint16_t port;
        char address[64];
        char reason[256];
        char method[32];
        uint64_t up, down;
} recorded_event;

typedef struct upstream_conn {
        uv_tcp_t h;
        uv_shutdown_t shutdown;
        char head[8192];
        size_t head_len;
        bool http, decided, closing;
        uint64_t received;
        struct upstream_conn *next;
} upstream_conn;

typedef struct upstream_write {
        uv_write_t req;
        char data[];
} upstream_write;

static struct {
        uv_loop_t loop;
        netproxy *proxy;
        netproxy_relay_stats stats;  /* taken right before netproxy_free() */
        uv_tcp_t server;
        uint16_t port;
        uv_async_t async;
        atomic_bool want_remove, want_done, want_sample;
        atomic_size_t queued;        /* the upstream's unsent bytes at the last sample */
        atomic_uint_fast64_t received;   /* ... and the bytes it has received */
        atomic_uint n_samples;
        bool remove_on_deny;
        upstream_conn *conns;
        char dir[64], sock[128];

        recorded_event events[MAX_EVENTS];
        size_t n_events;
        char seen[8192];          /* what the upstream received from the first HTTP request */
        size_t seen_len;
        bool proxy_done;
} H;

/* ---- the loop side ---- */

static void on_event(const netproxy_event *ev, void *userdata) {
        recorded_event *r;

        ck_assert_uint_lt(H.n_events, MAX_EVENTS);
        r = &H.events[H.n_events++];
        *r = (recorded_event) { .kind = ev->kind, .port = ev->port, .up = ev->bytes_up, .down = ev->bytes_down };
        ck_assert_ptr_nonnull(ev->host);
        ck_assert_str_eq(ev->sandbox_id, "sb1");
        ck_assert_str_eq(ev->task, "build");
        snprintf(r->host, sizeof(r->host), "%s", ev->host);
        snprintf(r->address, sizeof(r->address), "%s", ev->address ?: "");
        snprintf(r->reason, sizeof(r->reason), "%s", ev->reason ?: "");
        snprintf(r->method, sizeof(r->method), "%s", ev->method ?: "");
        if (ev->kind == NETPROXY_DENIED) {
                ck_assert_ptr_null(ev->address);
                /* An automatic response that tears the sandbox down from inside the callback. */
                if (H.remove_on_deny)
                        netproxy_remove_sandbox(H.proxy, "sb1");
        }
}

static void upstream_closed(uv_handle_t *h) {
        upstream_conn *c = container_of((uv_tcp_t *) h, upstream_conn, h);
        for (upstream_conn **i = &H.conns; *i; i = &(*i)->next)
                if (*i == c) {
                        *i = c->next;
                        break;
                }
        free(c);
}

static void upstream_close(upstream_conn *c) {
        if (c->closing)
                return;
        c->closing = true;
        uv_close((uv_handle_t *) &c->h, upstream_closed);
}

static void upstream_written(uv_write_t *req, int status) {
        free(container_of(req, upstream_write, req));
}

static void upstream_shut(uv_shutdown_t *req, int status) {
        upstream_close(container_of(req, upstream_conn, shutdown));
}

static void upstream_send(upstream_conn *c, const char *data, size_t len) {
        upstream_write *w = malloc(sizeof(*w) + len);
        ck_assert_ptr_nonnull(w);
        memcpy(w->data, data, len);
        uv_buf_t b = uv_buf_init(w->data, (unsigned) len);
        if (uv_write(&w->req, (uv_stream_t *) &c->h, &b, 1, upstream_written) < 0) {
                free(w);
                upstream_close(c);
        }
}

static void upstream_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
        *buf = uv_buf_init(malloc(65536), 65536);
}

/* Echo, unless the connection starts with "GET ": then record the head and
 * answer a tiny HTTP response. The echo buffers without limit on purpose, so
 * the proxy's own backpressure is what keeps the proxy's memory bounded. */
static void upstream_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
        upstream_conn *c = container_of((uv_tcp_t *) s, upstream_conn, h);
        static const char response[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";

        if (nread < 0) {
                free(buf->base);
                if (nread == UV_EOF && !c->http && uv_shutdown(&c->shutdown, s, upstream_shut) == 0)
                        return;
                upstream_close(c);
                return;
        }
        if (!c->decided && c->head_len + (size_t) nread >= 4) {
                c->decided = true;
                c->http = c->head_len == 0 && memcmp(buf->base, "GET ", 4) == 0;
        }
        if (c->http) {
                size_t n = MIN((size_t) nread, sizeof(c->head) - c->head_len);
                memcpy(c->head + c->head_len, buf->base, n);
                c->head_len += n;
                if (memmem(c->head, c->head_len, "\r\n\r\n", 4) && H.seen_len == 0) {
                        memcpy(H.seen, c->head, c->head_len);
                        H.seen_len = c->head_len;
                        upstream_send(c, response, sizeof(response) - 1);
                        if (uv_shutdown(&c->shutdown, s, upstream_shut) < 0)
                                upstream_close(c);
                        uv_read_stop(s);
                }
        } else if (nread > 0) {
                c->received += (uint64_t) nread;
                upstream_send(c, buf->base, (size_t) nread);
        }
        free(buf->base);
}

static void on_upstream_connection(uv_stream_t *server, int status) {
        upstream_conn *c = calloc(1, sizeof(*c));

        ck_assert_int_eq(status, 0);
        ck_assert_ptr_nonnull(c);
        ck_assert_int_eq(uv_tcp_init(&H.loop, &c->h), 0);
        c->next = H.conns;
        H.conns = c;
        ck_assert_int_eq(uv_accept(server, (uv_stream_t *) &c->h), 0);
        ck_assert_int_eq(uv_read_start((uv_stream_t *) &c->h, upstream_alloc, upstream_read), 0);
}

static void on_proxy_done(void *userdata) {
        H.proxy_done = true;
        H.proxy = NULL;
        uv_close((uv_handle_t *) &H.server, NULL);
        uv_close((uv_handle_t *) &H.async, NULL);
        for (upstream_conn *c = H.conns; c; c = c->next)
                upstream_close(c);
}

static void on_async(uv_async_t *a) {
        if (atomic_exchange(&H.want_sample, false)) {
                size_t q = 0;
                uint64_t got = 0;
                for (upstream_conn *c = H.conns; c; c = c->next) {
                        q += uv_stream_get_write_queue_size((uv_stream_t *) &c->h);
                        got += c->received;
                }
                atomic_store(&H.queued, q);
                atomic_store(&H.received, got);
                atomic_fetch_add(&H.n_samples, 1);
        }
        if (atomic_exchange(&H.want_remove, false))
                netproxy_remove_sandbox(H.proxy, "sb1");
        if (atomic_exchange(&H.want_done, false)) {
                H.stats = netproxy_get_relay_stats(H.proxy);
                netproxy_free(H.proxy, on_proxy_done, NULL);
        }
}

static void add_allow(policy_host *allow, size_t *n, const char *fmt, ...) _printf_(3, 4);
static void add_allow(policy_host *allow, size_t *n, const char *fmt, ...) {
        char buf[256];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);
        ck_assert_int_eq(policy_parse_host_port(buf, &allow[(*n)++]), 0);
}

static void setup(void) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        struct sockaddr_storage name;
        int namelen = sizeof(name);
        policy_host allow[8];
        size_t n = 0;

        memset(&H, 0, sizeof(H));
        ck_assert_int_eq(uv_loop_init(&H.loop), 0);
        ck_assert_int_eq(uv_tcp_init(&H.loop, &H.server), 0);
        ck_assert_int_eq(uv_tcp_bind(&H.server, (struct sockaddr *) &sa, 0), 0);
        ck_assert_int_eq(uv_listen((uv_stream_t *) &H.server, 64, on_upstream_connection), 0);
        ck_assert_int_eq(uv_tcp_getsockname(&H.server, (struct sockaddr *) &name, &namelen), 0);
        H.port = ntohs(((struct sockaddr_in *) &name)->sin_port);
        ck_assert_int_eq(uv_async_init(&H.loop, &H.async, on_async), 0);

        snprintf(H.dir, sizeof(H.dir), "/tmp/test-netproxy-XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(H.dir));
        snprintf(H.sock, sizeof(H.sock), "%s/proxy.sock", H.dir);

        /* Loopback is reachable only because it is named by IP; the names below
         * all resolve to places a name may not lead. */
        add_allow(allow, &n, "127.0.0.1:%u", (unsigned) H.port);
        add_allow(allow, &n, "allowed.test:%u", (unsigned) H.port);
        add_allow(allow, &n, "*.example.test:%u", (unsigned) H.port);
        add_allow(allow, &n, "github.com:443");

        ck_assert_int_eq(netproxy_new(&H.loop, on_event, NULL, &H.proxy), 0);
        ck_assert_int_eq(netproxy_set_resolver_override(H.proxy, "allowed.test", "127.0.0.1"), 0);
        ck_assert_int_eq(netproxy_set_resolver_override(H.proxy, "x.example.test", "127.0.0.1"), 0);
        ck_assert_int_eq(netproxy_set_resolver_override(H.proxy, "meta.example.test", "169.254.169.254"), 0);
        ck_assert_int_eq(netproxy_set_resolver_override(H.proxy, "v6.example.test", "::ffff:10.0.0.1"), 0);
        ck_assert_int_eq(netproxy_set_resolver_override(H.proxy, "broken.example.test", NULL), 0);
        ck_assert_int_eq(netproxy_add_sandbox(H.proxy, "sb1", "build", allow, n, H.sock), 0);
        ck_assert_int_eq(netproxy_add_sandbox(H.proxy, "sb1", "build", allow, n, H.sock), -EEXIST);
        for (size_t i = 0; i < n; i++)
                free(allow[i].host);
}

static void *client_main(void *arg) {
        void (*body)(void) = (void (*)(void)) arg;
        body();
        atomic_store(&H.want_done, true);
        uv_async_send(&H.async);
        return NULL;
}

/* Runs body on the client thread against a running loop, then checks that the
 * proxy closed everything it opened. */
static void run(void (*body)(void)) {
        pthread_t t;
        struct stat st;

        ck_assert_int_eq(pthread_create(&t, NULL, client_main, (void *) body), 0);
        ck_assert_int_eq(uv_run(&H.loop, UV_RUN_DEFAULT), 0);
        ck_assert_int_eq(pthread_join(t, NULL), 0);
        ck_assert(H.proxy_done);
        ck_assert_int_eq(uv_loop_close(&H.loop), 0);
        /* The socket is gone with its sandbox. */
        ck_assert_int_lt(stat(H.sock, &st), 0);
        ck_assert_int_eq(rmdir(H.dir), 0);
}

/* ---- the sandbox side (client thread) ---- */

static int unix_connect(void) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        ck_assert_int_ge(fd, 0);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", H.sock);
        ck_assert_int_eq(connect(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        return fd;
}

/* What the bridge does: one byte and the fds, then close. */
static void send_fds(int unx, const int *fds, size_t n) {
        ck_assert_uint_le(n, 8);
        ck_assert_int_eq(socket_send_fds(unx, "F", 1, fds, n, 0), 1);
}

/* A loopback TCP connection: *ret_client is the sandbox program's end, the
 * returned fd the bridge's accepted end. */
static int tcp_pair(int *ret_client) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(sa);
        int l, c, a;

        l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(l, 0);
        ck_assert_int_eq(bind(l, (struct sockaddr *) &sa, sizeof(sa)), 0);
        ck_assert_int_eq(listen(l, 1), 0);
        ck_assert_int_eq(getsockname(l, (struct sockaddr *) &sa, &len), 0);
        c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(c, 0);
        ck_assert_int_eq(connect(c, (struct sockaddr *) &sa, sizeof(sa)), 0);
        a = accept4(l, NULL, NULL, SOCK_CLOEXEC);
        ck_assert_int_ge(a, 0);
        close(l);
        *ret_client = c;
        return a;
}

static void set_timeouts(int fd) {
        struct timeval tv = { .tv_sec = 5 };

        ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
        ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)), 0);
}

/* A connection from inside the sandbox, handed to the proxy like the bridge does. */
static int client_connect(void) {
        int fd, accepted = tcp_pair(&fd), unx = unix_connect();

        send_fds(unx, &accepted, 1);
        close(unx);
        close(accepted);
        set_timeouts(fd);
        return fd;
}

static void send_all(int fd, const void *data, size_t len) {
        for (size_t off = 0; off < len;) {
                ssize_t k = send(fd, (const char *) data + off, len - off, MSG_NOSIGNAL);
                ck_assert_msg(k > 0, "send: %s", strerror(errno));
                off += (size_t) k;
        }
}

static void send_str(int fd, const char *s) {
        send_all(fd, s, strlen(s));
}

static void read_exact(int fd, void *buf, size_t len) {
        for (size_t off = 0; off < len;) {
                ssize_t k = read(fd, (char *) buf + off, len - off);
                ck_assert_msg(k > 0, "read: %zd after %zu of %zu bytes: %s", k, off, len, k < 0 ? strerror(errno) : "EOF");
                off += (size_t) k;
        }
}

/* Reads until the proxy closes. A reset after the data counts as closed: the
 * proxy may close with our unread bytes still queued. Times out (fails) after 5 s. */
static size_t read_all(int fd, char *buf, size_t cap) {
        size_t n = 0;
        for (;;) {
                ssize_t k = read(fd, buf + n, cap - 1 - n);
                if (k == 0 || (k < 0 && errno == ECONNRESET))
                        break;
                ck_assert_msg(k > 0, "read: %s", strerror(errno));
                n += (size_t) k;
                ck_assert_uint_lt(n, cap - 1);
        }
        buf[n] = '\0';
        return n;
}

/* One request on a fresh connection; the whole answer up to close. */
static void exchange(const char *request, char *buf, size_t cap) {
        int fd = client_connect();
        send_str(fd, request);
        read_all(fd, buf, cap);
        close(fd);
}

static const char established[] = "HTTP/1.1 200 Connection established\r\n\r\n";

static void body_connect_allowed(void) {
        char req[256], buf[64];
        _cleanup_free_ char *big = malloc(BIG), *back = malloc(BIG);
        int fd = client_connect();

        ck_assert_ptr_nonnull(big);
        ck_assert_ptr_nonnull(back);
        /* Bytes right behind the head belong to the tunnel. */
        snprintf(req, sizeof(req),
                 "CONNECT 127.0.0.1:%u HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nProxy-Authorization: Basic eDp5\r\n\r\nearly",
                 (unsigned) H.port, (unsigned) H.port);
        send_str(fd, req);
        read_exact(fd, buf, sizeof(established) - 1 + 5);
        ck_assert(memcmp(buf, established, sizeof(established) - 1) == 0);
        ck_assert(memcmp(buf + sizeof(established) - 1, "early", 5) == 0);

        send_str(fd, "hello");
        read_exact(fd, buf, 5);
        ck_assert(memcmp(buf, "hello", 5) == 0);

        /* Write all before reading any: only works if nothing deadlocks while
         * the proxy holds back one side. */
        for (size_t i = 0; i < BIG; i++)
                big[i] = (char) (i * 7 + i / 251);
        send_all(fd, big, BIG);
        read_exact(fd, back, BIG);
        ck_assert(memcmp(big, back, BIG) == 0);

        /* Half-close goes through; the echo then closes, and so does the tunnel. */
        ck_assert_int_eq(shutdown(fd, SHUT_WR), 0);
        ck_assert_int_eq(read(fd, buf, sizeof(buf)), 0);
        close(fd);
}

START_TEST(test_connect_allowed) {
        setup();
        run(body_connect_allowed);
        ck_assert_uint_eq(H.n_events, 2);
        ck_assert_int_eq(H.events[0].kind, NETPROXY_ALLOWED);
        ck_assert_str_eq(H.events[0].host, "127.0.0.1");
        ck_assert_uint_eq(H.events[0].port, H.port);
        ck_assert_str_eq(H.events[0].address, "127.0.0.1");
        ck_assert_str_eq(H.events[0].method, "CONNECT");
        ck_assert_int_eq(H.events[1].kind, NETPROXY_CLOSED);
        ck_assert_str_eq(H.events[1].address, "127.0.0.1");
        ck_assert_uint_eq(H.events[1].up, 5 + 5 + BIG);
        ck_assert_uint_eq(H.events[1].down, 5 + 5 + BIG);
}
END_TEST

/* The same tunnel relayed by splice(2) and by the copy path (the default):
 * the audit's byte counts are exact on both, and the path was the one asked for. */
static void check_tunnel_counts(void) {
        ck_assert_uint_eq(H.n_events, 2);
        ck_assert_int_eq(H.events[1].kind, NETPROXY_CLOSED);
        ck_assert_uint_eq(H.events[1].up, 5 + 5 + BIG);
        ck_assert_uint_eq(H.events[1].down, 5 + 5 + BIG);
}

/* Payload through the relay, prefixes not included: up "hello" + BIG (the
 * "early" bytes are the forwarded prefix), down the echo of all of it. */
#define TUNNEL_PAYLOAD ((uint64_t) (5 + BIG) + (5 + 5 + BIG))

START_TEST(test_connect_splice_counts) {
        setup();
        netproxy_set_splice(H.proxy, true);
        run(body_connect_allowed);
        check_tunnel_counts();
        ck_assert_uint_eq(H.stats.spliced_dirs, 2);
        ck_assert_uint_eq(H.stats.copied_dirs, 0);
        ck_assert_uint_eq(H.stats.spliced_bytes, TUNNEL_PAYLOAD);
        ck_assert_uint_eq(H.stats.copied_bytes, 0);
}
END_TEST

START_TEST(test_connect_copy_counts) {
        setup();
        run(body_connect_allowed);      /* the default path */
        check_tunnel_counts();
        ck_assert_uint_eq(H.stats.spliced_dirs, 0);
        ck_assert_uint_eq(H.stats.copied_dirs, 2);
        ck_assert_uint_eq(H.stats.copied_bytes, TUNNEL_PAYLOAD);
        ck_assert_uint_eq(H.stats.spliced_bytes, 0);
}
END_TEST

/* Bulk: a direction whose reads fill its starting buffer gets a big one
 * from the pool, and reads more than the old fixed 256 KiB at once. */
START_TEST(test_bulk_grows) {
        setup();
        run(body_connect_allowed);
        check_tunnel_counts();
        ck_assert_uint_eq(H.stats.grown_dirs, 2);
        ck_assert_uint_gt(H.stats.max_held, 256U * 1024U);
        ck_assert_uint_le(H.stats.max_held, 1024U * 1024U);
}
END_TEST

/* The pool is bounded: with room for one big buffer, the second bulk
 * direction relays through 256 KiB instead, and every byte still arrives. */
START_TEST(test_bulk_pool_limit) {
        setup();
        netproxy_set_relay_pool(H.proxy, 1);
        run(body_connect_allowed);
        check_tunnel_counts();
        ck_assert_uint_eq(H.stats.grown_dirs, 1);
        ck_assert_uint_eq(H.stats.copied_bytes, TUNNEL_PAYLOAD);
}
END_TEST

START_TEST(test_relay_size_bounds) {
        setup();
        ck_assert_int_eq(netproxy_set_relay_size(H.proxy, 1024, 1U << 20), -EINVAL);
        ck_assert_int_eq(netproxy_set_relay_size(H.proxy, 1U << 20, 1024), -EINVAL);
        ck_assert_int_eq(netproxy_set_relay_size(H.proxy, 64U << 20, 1U << 20), -EINVAL);
        ck_assert_int_eq(netproxy_set_relay_size(NULL, 1U << 20, 1U << 20), -EINVAL);
        /* A small big buffer: bulk directions relay in 8 KiB steps, exactly. */
        ck_assert_int_eq(netproxy_set_relay_size(H.proxy, 8192, 8192), 0);
        run(body_connect_allowed);
        check_tunnel_counts();
        ck_assert_uint_le(H.stats.max_held, 8192);
}
END_TEST

/* ---- back-pressure: a reader that stops ---- */

#define STALL (48U * 1024U * 1024U)
/* What may sit between the echo and the stopped reader: the kernel's socket
 * buffers on both of agentd's sockets and the reader's, plus the relay's. */
#define STALL_SLACK (32U * 1024U * 1024U)

/* The echo upstream's unsent bytes, as the loop thread sees them now. */
static size_t upstream_queued(void) {
        unsigned n0 = atomic_load(&H.n_samples);

        atomic_store(&H.want_sample, true);
        ck_assert_int_eq(uv_async_send(&H.async), 0);
        for (int i = 0; atomic_load(&H.n_samples) == n0; i++) {
                ck_assert_int_lt(i, 5000);
                usleep(1000);
        }
        return atomic_load(&H.queued);
}

static size_t stall_queued[2];

static void body_backpressure(void) {
        char buf[64];
        _cleanup_free_ char *data = malloc(STALL), *back = malloc(STALL);
        int fd = client_connect();
        char req[256];

        ck_assert_ptr_nonnull(data);
        ck_assert_ptr_nonnull(back);
        snprintf(req, sizeof(req), "CONNECT 127.0.0.1:%u HTTP/1.1\r\n\r\n", (unsigned) H.port);
        send_str(fd, req);
        read_exact(fd, buf, sizeof(established) - 1);
        /* The echo takes everything (it buffers without limit); nothing is read back yet. */
        for (size_t i = 0; i < STALL; i++)
                data[i] = (char) (i * 13 + i / 4093);
        send_all(fd, data, STALL);
        /* Everything has reached the echo (the way up is not blocked)... */
        for (int i = 0;; i++) {
                (void) upstream_queued();
                if (atomic_load(&H.received) >= STALL)
                        break;
                ck_assert_int_lt(i, 500);
                usleep(10 * 1000);
        }
        /* ... and the way down has settled. */
        usleep(300 * 1000);
        stall_queued[0] = upstream_queued();
        usleep(300 * 1000);
        stall_queued[1] = upstream_queued();

        read_exact(fd, back, STALL);
        ck_assert(memcmp(data, back, STALL) == 0);
        ck_assert_int_eq(shutdown(fd, SHUT_WR), 0);
        ck_assert_int_eq(read(fd, buf, sizeof(buf)), 0);
        close(fd);
}

/* While the reader stops, the proxy stops taking from the upstream (what the
 * echo could not send stays with the echo, and does not shrink), it holds at
 * most one buffer or pipe per direction, and once the reader resumes every
 * byte arrives and is counted exactly. */
static void check_backpressure(size_t max_held) {
        ck_assert_uint_gt(stall_queued[0], STALL - STALL_SLACK);
        ck_assert_uint_eq(stall_queued[0], stall_queued[1]);
        ck_assert_uint_le(H.stats.max_held, max_held);
        ck_assert_uint_eq(H.n_events, 2);
        ck_assert_int_eq(H.events[1].kind, NETPROXY_CLOSED);
        ck_assert_uint_eq(H.events[1].up, STALL);
        ck_assert_uint_eq(H.events[1].down, STALL);
}

START_TEST(test_backpressure_copy) {
        setup();
        run(body_backpressure);
        check_backpressure(1024U * 1024U);
        ck_assert_uint_eq(H.stats.copied_bytes, 2 * (uint64_t) STALL);
        ck_assert_uint_ge(H.stats.grown_dirs, 1);
}
END_TEST

START_TEST(test_backpressure_splice) {
        setup();
        netproxy_set_splice(H.proxy, true);
        run(body_backpressure);
        check_backpressure(1024U * 1024U);
        ck_assert_uint_eq(H.stats.spliced_bytes, 2 * (uint64_t) STALL);
}
END_TEST

static char answer[32768];

static void body_denied_port(void) {
        char req[256];
        unsigned other = H.port == 65535 ? 65534U : H.port + 1U;

        snprintf(req, sizeof(req), "CONNECT 127.0.0.1:%u HTTP/1.1\r\n\r\n", other);
        exchange(req, answer, sizeof(answer));
}

START_TEST(test_connect_other_port) {
        char want[256];

        setup();
        run(body_denied_port);
        ck_assert_msg(strncmp(answer, "HTTP/1.1 403 Forbidden\r\n", 24) == 0, "%s", answer);
        ck_assert_ptr_nonnull(strstr(answer, "\r\nX-Agentd-Denied: 1\r\n"));
        ck_assert_ptr_nonnull(strstr(answer, "\r\nContent-Type: text/plain"));
        ck_assert_ptr_nonnull(strstr(answer, "denied by task 'build' (not in Network Allow=)"));
        snprintf(want, sizeof(want), "Allowed: 127.0.0.1:%u, allowed.test:%u, *.example.test:%u, github.com:443\n",
                 (unsigned) H.port, (unsigned) H.port, (unsigned) H.port);
        ck_assert_msg(strstr(answer, want), "%s", answer);
        ck_assert_uint_eq(H.n_events, 1);
        ck_assert_int_eq(H.events[0].kind, NETPROXY_DENIED);
        ck_assert_str_eq(H.events[0].reason, "not in Allow= of task build");
        ck_assert_str_eq(H.events[0].host, "127.0.0.1");
}
END_TEST

static void body_other_host(void) {
        exchange("CONNECT Evil.COM.:443 HTTP/1.1\r\nHost: evil.com:443\r\n\r\n", answer, sizeof(answer));
}

START_TEST(test_connect_other_host) {
        setup();
        run(body_other_host);
        ck_assert_msg(strncmp(answer, "HTTP/1.1 403 Forbidden\r\n", 24) == 0, "%s", answer);
        ck_assert_ptr_nonnull(strstr(answer, "agentd: egress to evil.com:443 denied by task 'build' (not in Network Allow=)"));
        ck_assert_uint_eq(H.n_events, 1);
        ck_assert_int_eq(H.events[0].kind, NETPROXY_DENIED);
        ck_assert_str_eq(H.events[0].host, "evil.com");
        ck_assert_uint_eq(H.events[0].port, 443);
}
END_TEST

/* Names that pass Allow= but resolve where a name may not lead. */
static const struct {
        const char *host;
        const char *status;
        const char *reason;
} rebinding_cases[] = {
        { "allowed.test", "403", "resolves to a loopback address 127.0.0.1" },
        { "ALLOWED.test.", "403", "resolves to a loopback address 127.0.0.1" },
        { "x.example.test", "403", "resolves to a loopback address 127.0.0.1" },
        { "meta.example.test", "403", "resolves to a link-local address 169.254.169.254" },
        { "v6.example.test", "403", "resolves to a private address ::ffff:10.0.0.1" },
        { "broken.example.test", "502", "DNS lookup failed" },
        { "example.test", "403", "not in Allow= of task build" },     /* *. is strict subdomains */
        { "[::1]", "403", "not in Allow= of task build" },            /* only 127.0.0.1 is named */
        { "[::ffff:127.0.0.1]", "403", "not in Allow= of task build" },
};
static char rebinding_answers[ELEMENTSOF(rebinding_cases)][4096];

static void body_rebinding(void) {
        for (size_t i = 0; i < ELEMENTSOF(rebinding_cases); i++) {
                char req[256];
                snprintf(req, sizeof(req), "CONNECT %s:%u HTTP/1.1\r\n\r\n", rebinding_cases[i].host, (unsigned) H.port);
                exchange(req, rebinding_answers[i], sizeof(rebinding_answers[i]));
        }
}

START_TEST(test_rebinding) {
        setup();
        run(body_rebinding);
        ck_assert_uint_eq(H.n_events, ELEMENTSOF(rebinding_cases));
        for (size_t i = 0; i < ELEMENTSOF(rebinding_cases); i++) {
                const char *a = rebinding_answers[i];
                ck_assert_msg(strncmp(a + 9, rebinding_cases[i].status, 3) == 0, "%s: %s", rebinding_cases[i].host, a);
                ck_assert_int_eq(H.events[i].kind, NETPROXY_DENIED);
                ck_assert_str_eq(H.events[i].reason, rebinding_cases[i].reason);
                if (streq(rebinding_cases[i].status, "403"))
                        ck_assert_ptr_nonnull(strstr(a, "X-Agentd-Denied: 1"));
        }
        ck_assert_str_eq(H.events[1].host, "allowed.test");   /* normalised */
        ck_assert_ptr_nonnull(strstr(rebinding_answers[0], "allowed.test resolves to a loopback address 127.0.0.1, "
                                                           "which only an Allow= entry naming that IP permits"));
        ck_assert_str_eq(H.events[7].host, "::1");
}
END_TEST

static void body_get(void) {
        char req[512];
        snprintf(req, sizeof(req),
                 "GET http://127.0.0.1:%u/path?q=1#frag HTTP/1.1\r\n"
                 "Host: evil.example\r\n"
                 "Proxy-Authorization: Basic Zm9v\r\n"
                 "Proxy-Connection: keep-alive\r\n"
                 "Accept: */*\r\n"
                 "Connection: keep-alive\r\n"
                 "\r\n",
                 (unsigned) H.port);
        exchange(req, answer, sizeof(answer));
}

START_TEST(test_get_absolute) {
        char want[256];
        static const char response[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";

        setup();
        run(body_get);
        ck_assert_str_eq(answer, response);
        snprintf(want, sizeof(want), "GET /path?q=1 HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nAccept: */*\r\nConnection: close\r\n\r\n",
                 (unsigned) H.port);
        H.seen[H.seen_len] = '\0';
        ck_assert_str_eq(H.seen, want);
        ck_assert_uint_eq(H.n_events, 2);
        ck_assert_int_eq(H.events[0].kind, NETPROXY_ALLOWED);
        ck_assert_str_eq(H.events[0].method, "GET");
        ck_assert_int_eq(H.events[1].kind, NETPROXY_CLOSED);
        ck_assert_uint_eq(H.events[1].up, strlen(want));
        ck_assert_uint_eq(H.events[1].down, sizeof(response) - 1);
}
END_TEST

static const char *const malformed[] = {
        "garbage\r\n\r\n",
        "\r\n\r\n",
        "GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "CONNECT nohost HTTP/1.1\r\n\r\n",
        "CONNECT :443 HTTP/1.1\r\n\r\n",
        "CONNECT 127.0.0.1:99999 HTTP/1.1\r\n\r\n",
        "CONNECT 127.0.0.1:0 HTTP/1.1\r\n\r\n",
        "CONNECT 127.0.0.1:8x HTTP/1.1\r\n\r\n",
        "CONNECT 2130706433:443 HTTP/1.1\r\n\r\n",
        "CONNECT 0x7f.1:443 HTTP/1.1\r\n\r\n",
        "CONNECT a..b:443 HTTP/1.1\r\n\r\n",
        "CONNECT [fe80::1%eth0]:443 HTTP/1.1\r\n\r\n",
        "CONNECT [::1:443 HTTP/1.1\r\n\r\n",
        "CONNECT ::1:443 HTTP/1.1\r\n\r\n",
        "CONNECT github.com:443 HTTP/2.0\r\n\r\n",
        "CONNECT github.com:443 HTTP/1.1 extra\r\n\r\n",
        "CONNECT github.com:443 HTTP/1.1\r\nBad Header\r\n\r\n",
        "CONNECT github.com:443 HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
        "CONNECT github.com:443 HTTP/1.1\r\nX: a\nY: b\r\n\r\n",
        "GET http://user@github.com:443/ HTTP/1.1\r\n\r\n",
        "GET https://github.com/ HTTP/1.1\r\n\r\n",
        "GET http:///x HTTP/1.1\r\n\r\n",
        "GET ftp://github.com/ HTTP/1.1\r\n\r\n",
};
static char malformed_answers[ELEMENTSOF(malformed)][1024];

static void body_malformed(void) {
        for (size_t i = 0; i < ELEMENTSOF(malformed); i++)
                exchange(malformed[i], malformed_answers[i], sizeof(malformed_answers[i]));
}

START_TEST(test_malformed) {
        setup();
        run(body_malformed);
        for (size_t i = 0; i < ELEMENTSOF(malformed); i++)
                ck_assert_msg(strncmp(malformed_answers[i], "HTTP/1.1 400 Bad Request\r\n", 26) == 0, "%s -> %s",
                              malformed[i], malformed_answers[i]);
        /* Too malformed to name a host: no decision, no event. */
        ck_assert_uint_eq(H.n_events, 0);
}
END_TEST

static void body_too_large(void) {
        size_t len = 20 * 1024;
        _cleanup_free_ char *req = malloc(len + 64);
        int fd = client_connect();
        size_t n;

        ck_assert_ptr_nonnull(req);
        n = (size_t) sprintf(req, "CONNECT github.com:443 HTTP/1.1\r\nX-Big: ");
        memset(req + n, 'a', len);
        n += len;
        memcpy(req + n, "\r\n\r\n", 4);
        n += 4;
        /* The proxy may close before taking it all: ignore send errors. */
        (void) send(fd, req, n, MSG_NOSIGNAL);
        read_all(fd, answer, sizeof(answer));
        close(fd);
}

START_TEST(test_header_too_large) {
        setup();
        run(body_too_large);
        ck_assert_msg(strncmp(answer, "HTTP/1.1 431 ", 13) == 0, "%s", answer);
        ck_assert_uint_eq(H.n_events, 0);
}
END_TEST

static double now_sec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static double slowloris_elapsed;

static void body_slowloris(void) {
        static const char req[] = "CONNECT github.com:443 HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        int fd = client_connect();
        double start = now_sec();

        for (size_t i = 0; i < sizeof(req) - 1; i++) {
                struct pollfd pfd = { .fd = fd, .events = POLLIN };
                /* Readable means the proxy has answered or hung up. */
                if (poll(&pfd, 1, 100) > 0)
                        break;
                if (send(fd, req + i, 1, MSG_NOSIGNAL) != 1)
                        break;
        }
        read_all(fd, answer, sizeof(answer));
        slowloris_elapsed = now_sec() - start;
        close(fd);
}

START_TEST(test_slowloris) {
        setup();
        netproxy_set_header_timeout_ms(H.proxy, 500);
        run(body_slowloris);
        ck_assert_msg(strncmp(answer, "HTTP/1.1 408 ", 13) == 0, "%s", answer);
        /* The request would take ~8 s at this pace; the deadline is not reset by progress. */
        ck_assert_msg(slowloris_elapsed >= 0.45 && slowloris_elapsed < 3.0, "elapsed %f", slowloris_elapsed);
        ck_assert_uint_eq(H.n_events, 0);
}
END_TEST

static void body_remove(void) {
        char req[256], buf[64];
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = client_connect(), fd2;
        ssize_t k;

        snprintf(req, sizeof(req), "CONNECT 127.0.0.1:%u HTTP/1.1\r\n\r\n", (unsigned) H.port);
        send_str(fd, req);
        read_exact(fd, buf, sizeof(established) - 1);
        send_str(fd, "abc");
        read_exact(fd, buf, 3);
        ck_assert(memcmp(buf, "abc", 3) == 0);

        atomic_store(&H.want_remove, true);
        uv_async_send(&H.async);
        /* The live tunnel is cut (EOF or reset, not our 5 s timeout). */
        k = read(fd, buf, sizeof(buf));
        ck_assert_msg(k == 0 || (k < 0 && errno == ECONNRESET), "read %zd: %s", k, strerror(errno));
        close(fd);

        /* And nobody can connect any more. */
        fd2 = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", H.sock);
        ck_assert_int_lt(connect(fd2, (struct sockaddr *) &sa, sizeof(sa)), 0);
        close(fd2);
}

START_TEST(test_remove_sandbox) {
        setup();
        run(body_remove);
        ck_assert_uint_eq(H.n_events, 2);
        ck_assert_int_eq(H.events[0].kind, NETPROXY_ALLOWED);
        ck_assert_int_eq(H.events[1].kind, NETPROXY_CLOSED);
        ck_assert_uint_eq(H.events[1].up, 3);
        ck_assert_uint_eq(H.events[1].down, 3);
}
END_TEST

static void body_remove_on_deny(void) {
        int fd = client_connect();
        ssize_t k;
        char buf[64];

        send_str(fd, "CONNECT evil.com:443 HTTP/1.1\r\n\r\n");
        k = read(fd, buf, sizeof(buf));
        ck_assert_msg(k == 0 || (k < 0 && errno == ECONNRESET), "read %zd", k);
        close(fd);
}

START_TEST(test_remove_from_callback) {
        setup();
        H.remove_on_deny = true;
        run(body_remove_on_deny);
        ck_assert_uint_eq(H.n_events, 1);
        ck_assert_int_eq(H.events[0].kind, NETPROXY_DENIED);
}
END_TEST

static void body_limit(void) {
        int a = client_connect(), b = client_connect(), c;
        char buf[16];

        /* Make sure both are accepted before the third arrives. */
        send_str(a, "CONN");
        send_str(b, "CONN");
        usleep(200 * 1000);
        c = client_connect();
        read_all(c, answer, sizeof(answer));
        close(c);
        /* The two slots are still usable. */
        send_str(a, "ECT evil.com:443 HTTP/1.1\r\n\r\n");
        ck_assert_int_eq(read(a, buf, 12), 12);
        ck_assert(memcmp(buf, "HTTP/1.1 403", 12) == 0);
        close(a);
        close(b);
}

START_TEST(test_connection_limit) {
        setup();
        netproxy_set_max_connections(H.proxy, 2);
        run(body_limit);
        ck_assert_msg(strncmp(answer, "HTTP/1.1 503 ", 13) == 0, "%s", answer);
        ck_assert_ptr_nonnull(strstr(answer, "limit 2"));
}
END_TEST

/* The proxy hung up on a handoff connection: EOF or a reset, not our timeout. */
static void assert_hung_up(int fd) {
        char buf[16];
        ssize_t k = read(fd, buf, sizeof(buf));
        ck_assert_msg(k == 0 || (k < 0 && errno == ECONNRESET), "read %zd: %s", k, k < 0 ? strerror(errno) : "");
}

static void body_bad_handoffs(void) {
        int unx, p[2], c1, c2, a1, a2, u, l;
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

        /* One byte, no fd. */
        unx = unix_connect();
        set_timeouts(unx);
        send_fds(unx, NULL, 0);
        assert_hung_up(unx);
        close(unx);

        /* A pipe, a Unix socket, an unconnected and a listening TCP socket: not a client connection. */
        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
        u = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        c1 = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_eq(bind(l, (struct sockaddr *) &sa, sizeof(sa)), 0);
        ck_assert_int_eq(listen(l, 1), 0);
        int bad[] = { p[0], u, c1, l };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                unx = unix_connect();
                set_timeouts(unx);
                send_fds(unx, &bad[i], 1);
                assert_hung_up(unx);
                close(unx);
        }
        /* The proxy kept no reference: the pipe's write end sees the read end gone. */
        close(p[0]);
        {
                struct pollfd pfd = { .fd = p[1], .events = POLLOUT };
                ck_assert_int_eq(poll(&pfd, 1, 0), 1);
                ck_assert(pfd.revents & POLLERR);
        }
        close(p[1]);
        close(u);
        close(c1);
        close(l);

        /* Two client sockets in one handoff: both refused, both closed. */
        a1 = tcp_pair(&c1);
        a2 = tcp_pair(&c2);
        unx = unix_connect();
        set_timeouts(unx);
        send_fds(unx, (int[]) { a1, a2 }, 2);
        close(a1);
        close(a2);
        assert_hung_up(unx);
        close(unx);
        set_timeouts(c1);
        set_timeouts(c2);
        assert_hung_up(c1);
        assert_hung_up(c2);
        close(c1);
        close(c2);

        /* And the sandbox's socket still works. */
        body_denied_port();
}

START_TEST(test_bad_handoffs) {
        setup();
        run(body_bad_handoffs);
        ck_assert_msg(strncmp(answer, "HTTP/1.1 403 Forbidden\r\n", 24) == 0, "%s", answer);
        ck_assert_uint_eq(H.n_events, 1);
        ck_assert_int_eq(H.events[0].kind, NETPROXY_DENIED);
}
END_TEST

static double handoff_elapsed;

static void body_handoff_timeout(void) {
        int unx = unix_connect();
        double start = now_sec();

        /* Connected, never sends: dropped at the head deadline (nobody to answer). */
        set_timeouts(unx);
        assert_hung_up(unx);
        handoff_elapsed = now_sec() - start;
        close(unx);
}

START_TEST(test_handoff_timeout) {
        setup();
        netproxy_set_header_timeout_ms(H.proxy, 300);
        run(body_handoff_timeout);
        ck_assert_msg(handoff_elapsed >= 0.25 && handoff_elapsed < 3.0, "elapsed %f", handoff_elapsed);
        ck_assert_uint_eq(H.n_events, 0);
}
END_TEST

static uint64_t get_total;

/* A large response through absolute-URI HTTP: the byte counts are exact. */
static void body_get_big(void) {
        char req[256];
        _cleanup_free_ char *buf = malloc(BIG + 4096);
        int fd = client_connect();
        size_t n = 0;

        ck_assert_ptr_nonnull(buf);
        /* Not "GET ": the echo upstream sends the rewritten head and the body back. */
        snprintf(req, sizeof(req), "PUT http://127.0.0.1:%u/x HTTP/1.1\r\nContent-Length: %u\r\n\r\n", (unsigned) H.port,
                 BIG);
        send_str(fd, req);
        memset(buf, 'b', BIG);
        send_all(fd, buf, BIG);
        ck_assert_int_eq(shutdown(fd, SHUT_WR), 0);
        for (;;) {
                ssize_t k = read(fd, buf + n, BIG + 4096 - n);
                ck_assert_msg(k >= 0, "read: %s", strerror(errno));
                if (k == 0)
                        break;
                n += (size_t) k;
        }
        get_total = n;
        close(fd);
}

START_TEST(test_put_big_counts) {
        setup();
        run(body_get_big);
        ck_assert_uint_eq(H.n_events, 2);
        ck_assert_int_eq(H.events[1].kind, NETPROXY_CLOSED);
        ck_assert_str_eq(H.events[1].method, "PUT");
        /* The echo returns exactly what the upstream got. */
        ck_assert_uint_gt(H.events[1].up, BIG);
        ck_assert_uint_eq(H.events[1].up, H.events[1].down);
        ck_assert_uint_eq(H.events[1].down, get_total);
}
END_TEST

/* ---- Network.Ask: held connections ---- */

typedef enum hold_mode { HOLD_THEN_ALLOW, HOLD_THEN_DENY, ALLOW_NOW, DENY_NOW } hold_mode;

static struct {
        hold_mode mode;
        unsigned n;
        uint64_t conn_id, timeout_ms;
        char host[64], what_sandbox[16];
        uint16_t port;
        uv_timer_t timer;
        int release_r, again_r, unknown_r;
} HOLD;

static void on_hold_timer_closed(uv_handle_t *h) {
}

/* The daemon answers later, from the loop. */
static void on_hold_timer(uv_timer_t *t) {
        HOLD.release_r = netproxy_release(H.proxy, HOLD.conn_id, HOLD.mode == HOLD_THEN_ALLOW, "approval ap-1 denied");
        HOLD.again_r = netproxy_release(H.proxy, HOLD.conn_id, true, NULL);
        HOLD.unknown_r = netproxy_release(H.proxy, HOLD.conn_id + 1000, true, NULL);
        uv_close((uv_handle_t *) t, on_hold_timer_closed);
}

static netproxy_verdict on_hold(const netproxy_hold *h, void *userdata) {
        HOLD.n++;
        HOLD.conn_id = h->conn_id;
        HOLD.timeout_ms = h->timeout_ms;
        HOLD.port = h->port;
        snprintf(HOLD.host, sizeof(HOLD.host), "%s", h->host);
        snprintf(HOLD.what_sandbox, sizeof(HOLD.what_sandbox), "%s", h->sandbox_id);
        switch (HOLD.mode) {
        case ALLOW_NOW:
                return NETPROXY_VERDICT_ALLOW;
        case DENY_NOW:
                return NETPROXY_VERDICT_DENY;
        default:
                ck_assert_int_eq(uv_timer_init(&H.loop, &HOLD.timer), 0);
                ck_assert_int_eq(uv_timer_start(&HOLD.timer, on_hold_timer, 50, 0), 0);
                return NETPROXY_VERDICT_HOLD;
        }
}

static void setup_ask(hold_mode mode) {
        setup();
        memset(&HOLD, 0, sizeof(HOLD));
        HOLD.mode = mode;
        netproxy_set_hold_cb(H.proxy, on_hold, NULL);
        ck_assert_int_eq(netproxy_set_ask(H.proxy, "nope", 1000), -ENOENT);
        ck_assert_int_eq(netproxy_set_ask(H.proxy, "sb1", 7000), 0);
}

/* A destination Allow= does not name: a listener of the client thread's own. */
static void body_held(void) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(sa);
        char req[128], buf[64];
        int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), fd, u;

        ck_assert_int_ge(l, 0);
        ck_assert_int_eq(bind(l, (struct sockaddr *) &sa, sizeof(sa)), 0);
        ck_assert_int_eq(listen(l, 1), 0);
        ck_assert_int_eq(getsockname(l, (struct sockaddr *) &sa, &len), 0);
        fd = client_connect();
        snprintf(req, sizeof(req), "CONNECT 127.0.0.1:%u HTTP/1.1\r\n\r\n", (unsigned) ntohs(sa.sin_port));
        send_str(fd, req);
        if (HOLD.mode == HOLD_THEN_DENY || HOLD.mode == DENY_NOW) {
                read_all(fd, answer, sizeof(answer));
                close(fd);
                close(l);
                return;
        }
        read_exact(fd, buf, sizeof(established) - 1);
        ck_assert(memcmp(buf, established, sizeof(established) - 1) == 0);
        u = accept4(l, NULL, NULL, SOCK_CLOEXEC);
        ck_assert_int_ge(u, 0);
        send_str(fd, "hi");
        read_exact(u, buf, 2);
        ck_assert(memcmp(buf, "hi", 2) == 0);
        close(u);
        close(fd);
        close(l);
}

START_TEST(test_held_then_allowed) {
        setup_ask(HOLD_THEN_ALLOW);
        run(body_held);
        ck_assert_uint_eq(HOLD.n, 1);
        ck_assert_str_eq(HOLD.host, "127.0.0.1");
        ck_assert_str_eq(HOLD.what_sandbox, "sb1");
        ck_assert_uint_eq(HOLD.timeout_ms, 7000);
        ck_assert_int_eq(HOLD.release_r, 0);
        ck_assert_int_eq(HOLD.again_r, -EBUSY);
        ck_assert_int_eq(HOLD.unknown_r, -ENOENT);
        ck_assert_uint_eq(H.n_events, 2);
        ck_assert_int_eq(H.events[0].kind, NETPROXY_ALLOWED);
        ck_assert_uint_eq(H.events[0].port, HOLD.port);
        ck_assert_int_eq(H.events[1].kind, NETPROXY_CLOSED);
        ck_assert_uint_eq(H.events[1].up, 2);
}
END_TEST

START_TEST(test_held_then_denied) {
        setup_ask(HOLD_THEN_DENY);
        run(body_held);
        ck_assert_uint_eq(HOLD.n, 1);
        ck_assert_int_eq(HOLD.release_r, 0);
        /* Answered once: the 403 may already be written and the connection gone. */
        ck_assert(HOLD.again_r == -EBUSY || HOLD.again_r == -ENOENT);
        ck_assert_msg(strncmp(answer, "HTTP/1.1 403 Forbidden\r\n", 24) == 0, "%s", answer);
        ck_assert_ptr_nonnull(strstr(answer, "(not in Network Allow=; approval ap-1 denied)"));
        ck_assert_uint_eq(H.n_events, 1);
        ck_assert_int_eq(H.events[0].kind, NETPROXY_DENIED);
        ck_assert_str_eq(H.events[0].reason, "approval ap-1 denied");
}
END_TEST

START_TEST(test_hold_verdicts_now) {
        setup_ask(ALLOW_NOW);
        run(body_held);
        ck_assert_uint_eq(HOLD.n, 1);
        ck_assert_uint_eq(H.n_events, 2);
        ck_assert_int_eq(H.events[0].kind, NETPROXY_ALLOWED);

        setup_ask(DENY_NOW);
        run(body_held);
        ck_assert_uint_eq(HOLD.n, 1);
        ck_assert_msg(strncmp(answer, "HTTP/1.1 403 Forbidden\r\n", 24) == 0, "%s", answer);
        ck_assert_uint_eq(H.n_events, 1);
        ck_assert_str_eq(H.events[0].reason, "not in Allow= of task build, and cannot ask");
}
END_TEST

static const char *classify(const char *ip) {
        struct sockaddr_storage ss = {};

        if (strchr(ip, ':')) {
                struct sockaddr_in6 *s = (struct sockaddr_in6 *) &ss;
                s->sin6_family = AF_INET6;
                ck_assert_int_eq(inet_pton(AF_INET6, ip, &s->sin6_addr), 1);
        } else {
                struct sockaddr_in *s = (struct sockaddr_in *) &ss;
                s->sin_family = AF_INET;
                ck_assert_int_eq(inet_pton(AF_INET, ip, &s->sin_addr), 1);
        }
        return netproxy_address_class((struct sockaddr *) &ss);
}

START_TEST(test_address_class) {
        static const struct {
                const char *ip, *cls;
        } cases[] = {
                { "127.0.0.1", "a loopback address" },
                { "127.255.1.2", "a loopback address" },
                { "10.1.2.3", "a private address" },
                { "172.16.0.1", "a private address" },
                { "172.31.255.255", "a private address" },
                { "172.32.0.1", NULL },
                { "192.168.1.1", "a private address" },
                { "169.254.169.254", "a link-local address" },
                { "100.64.0.1", "a shared (CGNAT) address" },
                { "100.127.255.255", "a shared (CGNAT) address" },
                { "100.128.0.1", NULL },
                { "0.0.0.0", "an unspecified address" },
                { "0.1.2.3", "a reserved address" },
                { "224.0.0.1", "a multicast address" },
                { "255.255.255.255", "a broadcast address" },
                { "240.0.0.1", "a reserved address" },
                { "192.0.0.170", "a reserved address" },
                { "198.18.0.1", "a reserved address" },
                { "198.19.255.255", "a reserved address" },
                { "198.20.0.1", NULL },
                { "8.8.8.8", NULL },
                { "140.82.112.3", NULL },
                { "::1", "a loopback address" },
                { "::", "an unspecified address" },
                { "::ffff:127.0.0.1", "a loopback address" },
                { "::ffff:169.254.169.254", "a link-local address" },
                { "::ffff:8.8.8.8", NULL },
                { "::10.0.0.1", "a private address" },
                { "64:ff9b::a9fe:a9fe", "a link-local address" },
                { "64:ff9b::808:808", NULL },
                { "64:ff9b:1::1", "a private address" },
                { "2002:c0a8:0101::1", "a private address" },
                { "fd00::1", "a private address" },
                { "fc00::1", "a private address" },
                { "fe80::1", "a link-local address" },
                { "fec0::1", "a private address" },
                { "ff02::1", "a multicast address" },
                { "2001:4860:4860::8888", NULL },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                const char *got = classify(cases[i].ip);
                if (!cases[i].cls)
                        ck_assert_msg(!got, "%s: %s", cases[i].ip, got);
                else
                        ck_assert_msg(got && streq(got, cases[i].cls), "%s: %s", cases[i].ip, got ?: "(public)");
        }
}
END_TEST

static void set_flag(void *userdata) {
        *(bool *) userdata = true;
}

START_TEST(test_lifecycle) {
        uv_loop_t loop;
        netproxy *p = NULL;
        bool done = false;
        policy_host h;
        char dir[] = "/tmp/test-netproxy-XXXXXX", path[128], longpath[256];

        ck_assert_ptr_nonnull(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/s", dir);
        memset(longpath, 'x', sizeof(longpath) - 1);
        longpath[0] = '/';
        longpath[sizeof(longpath) - 1] = '\0';
        ck_assert_int_eq(policy_parse_host_port("github.com:443", &h), 0);
        ck_assert_int_eq(uv_loop_init(&loop), 0);

        /* Nothing open: done runs at once. */
        ck_assert_int_eq(netproxy_new(&loop, NULL, NULL, &p), 0);
        netproxy_free(p, NULL, NULL);
        ck_assert_int_eq(netproxy_new(&loop, NULL, NULL, &p), 0);
        ck_assert_int_eq(netproxy_add_sandbox(p, "a", "t", &h, 1, longpath), -ENAMETOOLONG);
        ck_assert_int_eq(netproxy_add_sandbox(p, "a", "t", &h, 1, "/nonexistent-dir/s"), -ENOENT);
        ck_assert_int_eq(netproxy_add_sandbox(p, "a", "t", &h, 1, path), 0);
        {
                struct stat st;
                ck_assert_int_eq(stat(path, &st), 0);
                ck_assert(S_ISSOCK(st.st_mode));
                ck_assert_uint_eq(st.st_mode & 0777, 0600);
        }
        netproxy_remove_sandbox(p, "nope");
        netproxy_free(p, set_flag, &done);
        ck_assert(!done);        /* the listener closes on the loop */
        ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
        ck_assert(done);
        ck_assert_int_eq(uv_loop_close(&loop), 0);
        ck_assert_int_lt(access(path, F_OK), 0);
        ck_assert_int_eq(rmdir(dir), 0);
        free(h.host);
}
END_TEST

static Suite *netproxy_suite(void) {
        Suite *s = suite_create("netproxy");
        TCase *tc = tcase_create("core");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_address_class);
        tcase_add_test(tc, test_lifecycle);
        tcase_add_test(tc, test_connect_allowed);
        tcase_add_test(tc, test_connect_splice_counts);
        tcase_add_test(tc, test_connect_copy_counts);
        tcase_add_test(tc, test_bulk_grows);
        tcase_add_test(tc, test_bulk_pool_limit);
        tcase_add_test(tc, test_relay_size_bounds);
        tcase_add_test(tc, test_backpressure_copy);
        tcase_add_test(tc, test_backpressure_splice);
        tcase_add_test(tc, test_connect_other_port);
        tcase_add_test(tc, test_connect_other_host);
        tcase_add_test(tc, test_rebinding);
        tcase_add_test(tc, test_get_absolute);
        tcase_add_test(tc, test_malformed);
        tcase_add_test(tc, test_header_too_large);
        tcase_add_test(tc, test_slowloris);
        tcase_add_test(tc, test_remove_sandbox);
        tcase_add_test(tc, test_remove_from_callback);
        tcase_add_test(tc, test_connection_limit);
        tcase_add_test(tc, test_bad_handoffs);
        tcase_add_test(tc, test_handoff_timeout);
        tcase_add_test(tc, test_put_big_counts);
        tcase_add_test(tc, test_held_then_allowed);
        tcase_add_test(tc, test_held_then_denied);
        tcase_add_test(tc, test_hold_verdicts_now);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return unit_run(netproxy_suite(), false);
}
