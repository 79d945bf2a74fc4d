/* audit/telemetry.c on a composed daemon (fixture.h): off by default; with
 * [Telemetry] Endpoint= it posts OTLP/HTTP JSON to /v1/logs, /v1/traces and
 * /v1/metrics, which a small HTTP collector in this test (a thread on
 * 127.0.0.1) receives: the events of a sandbox that really ran, its span, the
 * counters, with paths as keyed hashes and arguments only when asked. A
 * collector that refuses connections, never answers or answers 500 neither
 * blocks nor fails requests: agentd.status says "failing" and counts the
 * records dropped; the queue is bounded by QueueMax. */
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fixture.h"
#include "unit.h"

static fixture f;

/* ---- the collector ---------------------------------------------------- */

#define COLLECTOR_CONNS 16
#define COLLECTOR_REQS 256

typedef struct collector_conn {
        int fd;
        char *buf;
        size_t len, cap;
        bool continued;   /* "100 Continue" sent for the request in buf */
} collector_conn;

typedef struct collector {
        int listen_fd;
        uint16_t port;
        int stop_pipe[2];
        pthread_t thread;
        bool accepting;           /* false: a black hole (connections wait in the backlog) */
        atomic_int status;        /* the answer: 200, 500, ... */
        pthread_mutex_t lock;
        unsigned n;               /* requests received */
        char *path[COLLECTOR_REQS];
        char *body[COLLECTOR_REQS];
        collector_conn conn[COLLECTOR_CONNS];
} collector;

static collector col;

static void conn_close(collector_conn *c) {
        close(c->fd);
        free(c->buf);
        *c = (collector_conn) { .fd = -1 };
}

/* Handles every complete request in c's buffer; false when the connection is to close. */
static bool conn_process(collector_conn *c) {
        for (;;) {
                char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
                if (!end)
                        return true;
                size_t head = (size_t) (end - c->buf) + 4;
                *end = 0;
                size_t body_len = 0;
                for (char *l = strstr(c->buf, "\r\n"); l; l = strstr(l + 2, "\r\n"))
                        if (strncasecmp(l + 2, "Content-Length:", 15) == 0)
                                body_len = strtoul(l + 17, NULL, 10);
                bool expect = strcasestr(c->buf, "\r\nExpect: 100-continue") != NULL;
                *end = '\r';
                if (c->len < head + body_len) {
                        if (expect && !c->continued) {
                                static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
                                if (write(c->fd, cont, sizeof(cont) - 1) < 0)
                                        return false;
                                c->continued = true;
                        }
                        return true;
                }
                char method[16] = "", path[256] = "";
                if (sscanf(c->buf, "%15s %255s", method, path) != 2)
                        return false;
                pthread_mutex_lock(&col.lock);
                if (col.n < COLLECTOR_REQS) {
                        col.path[col.n] = strdup(path);
                        col.body[col.n] = strndup(c->buf + head, body_len);
                        col.n++;
                }
                pthread_mutex_unlock(&col.lock);
                char reply[128];
                int st = atomic_load(&col.status);
                int n = snprintf(reply, sizeof(reply), "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                                 "Content-Length: 2\r\n\r\n{}", st, st == 200 ? "OK" : "Error");
                if (write(c->fd, reply, (size_t) n) != n)
                        return false;
                memmove(c->buf, c->buf + head + body_len, c->len - head - body_len);
                c->len -= head + body_len;
                c->continued = false;
        }
}

static void conn_read(collector_conn *c) {
        if (c->cap - c->len < 65536) {
                c->cap = c->cap * 2 + 65536;
                c->buf = realloc(c->buf, c->cap);
                ck_assert_ptr_nonnull(c->buf);
        }
        ssize_t n = read(c->fd, c->buf + c->len, c->cap - c->len - 1);
        if (n <= 0) {
                conn_close(c);
                return;
        }
        c->len += (size_t) n;
        if (!conn_process(c))
                conn_close(c);
}

static void *collector_main(void *arg) {
        (void) arg;
        for (;;) {
                struct pollfd p[2 + COLLECTOR_CONNS];
                int np = 0;
                p[np++] = (struct pollfd) { .fd = col.stop_pipe[0], .events = POLLIN };
                p[np++] = (struct pollfd) { .fd = col.accepting ? col.listen_fd : -1, .events = POLLIN };
                for (int i = 0; i < COLLECTOR_CONNS; i++)
                        p[np++] = (struct pollfd) { .fd = col.conn[i].fd, .events = POLLIN };
                if (poll(p, (nfds_t) np, -1) < 0 && errno != EINTR)
                        break;
                if (p[0].revents)
                        break;
                if (p[1].revents & POLLIN) {
                        int fd = accept4(col.listen_fd, NULL, NULL, SOCK_CLOEXEC);
                        for (int i = 0; fd >= 0 && i < COLLECTOR_CONNS; i++)
                                if (col.conn[i].fd < 0) {
                                        col.conn[i].fd = fd;
                                        fd = -1;
                                }
                        if (fd >= 0)
                                close(fd);
                }
                for (int i = 0; i < COLLECTOR_CONNS; i++)
                        if (p[2 + i].revents && col.conn[i].fd >= 0)
                                conn_read(&col.conn[i]);
        }
        return NULL;
}

/* A listening socket on 127.0.0.1 (any port); accepting or a black hole. */
static void collector_start(bool accepting) {
        memset(&col, 0, sizeof(col));
        for (int i = 0; i < COLLECTOR_CONNS; i++)
                col.conn[i].fd = -1;
        col.accepting = accepting;
        atomic_store(&col.status, 200);
        pthread_mutex_init(&col.lock, NULL);
        col.listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(col.listen_fd, 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        ck_assert_int_eq(bind(col.listen_fd, (struct sockaddr *) &a, sizeof(a)), 0);
        ck_assert_int_eq(listen(col.listen_fd, 16), 0);
        socklen_t al = sizeof(a);
        ck_assert_int_eq(getsockname(col.listen_fd, (struct sockaddr *) &a, &al), 0);
        col.port = ntohs(a.sin_port);
        ck_assert_int_eq(pipe2(col.stop_pipe, O_CLOEXEC), 0);
        ck_assert_int_eq(pthread_create(&col.thread, NULL, collector_main, NULL), 0);
}

static void collector_stop(void) {
        ck_assert_int_eq(write(col.stop_pipe[1], "x", 1), 1);
        pthread_join(col.thread, NULL);
        for (int i = 0; i < COLLECTOR_CONNS; i++)
                if (col.conn[i].fd >= 0)
                        conn_close(&col.conn[i]);
        close(col.listen_fd);
        close(col.stop_pipe[0]);
        close(col.stop_pipe[1]);
        for (unsigned i = 0; i < col.n; i++) {
                free(col.path[i]);
                free(col.body[i]);
        }
        pthread_mutex_destroy(&col.lock);
}

/* Whether a request to `path` whose body holds every one of needles (NULL-ended) came. */
static bool collector_got(const char *path, const char *const *needles) {
        bool found = false;
        pthread_mutex_lock(&col.lock);
        for (unsigned i = 0; i < col.n && !found; i++) {
                if (strcmp(col.path[i], path) != 0)
                        continue;
                found = true;
                for (const char *const *n = needles; *n; n++)
                        found = found && strstr(col.body[i], *n) != NULL;
        }
        pthread_mutex_unlock(&col.lock);
        return found;
}

/* Whether any body holds s, as it is or with its slashes escaped (json-c's "\/"). */
static bool collector_saw(const char *s) {
        char esc[2 * PATH_MAX], *o = esc;
        for (const char *p = s; *p && o < esc + sizeof(esc) - 3; p++) {
                if (*p == '/')
                        *o++ = '\\';
                *o++ = *p;
        }
        *o = 0;
        bool found = false;
        pthread_mutex_lock(&col.lock);
        for (unsigned i = 0; i < col.n && !found; i++)
                found = strstr(col.body[i], s) != NULL || strstr(col.body[i], esc) != NULL;
        pthread_mutex_unlock(&col.lock);
        return found;
}

typedef struct expect {
        const char *path;
        const char *needles[8];
} expect;

static bool got_pred(void *arg) {
        const expect *e = arg;
        return collector_got(e->path, e->needles);
}

static void wait_for(const char *path, const char *const *needles) {
        expect e = { .path = path };
        for (size_t i = 0; needles[i]; i++)
                e.needles[i] = needles[i];
        ck_assert_msg(fixture_run_until(&f, 30000, got_pred, &e), "no %s request with '%s'...", path, needles[0]);
}

/* ---- the daemon ------------------------------------------------------- */

static const char script[] = "echo secret-argument-$((6*7)) >/dev/null; exit 3";

static void run_sandbox(int c, char *id, size_t size) {
        fixture_spawn_sh(&f, c, "default", script, id, size);
        long long code = -1;
        fixture_wait(&f, c, id, &code, NULL);
        ck_assert_int_eq(code, 3);
}

/* agentd.status "telemetry" on connection c; the reply stays in r. */
static const msgpack_object *telemetry_status(int c, fixture_reply *r) {
        ck_assert(fixture_call(&f, c, "agentd.status", NULL, NULL, r));
        const msgpack_object *t = fixture_get(r->result, "telemetry");
        ck_assert(t && t->type == MSGPACK_OBJECT_MAP);
        return t;
}

static void start_with_endpoint(uint16_t port, const char *extra) {
        char conf[512];
        snprintf(conf, sizeof(conf), "[Telemetry]\nEndpoint=http://127.0.0.1:%u\nFlushIntervalMs=10\n%s", port,
                 extra ? extra : "");
        fixture_init(&f);
        fixture_start(&f, conf);
        fixture_wait_audit_ready(&f);
}

typedef struct state_wait {
        int c;
        const char *prefix;
} state_wait;

static bool state_is(void *arg) {
        state_wait *w = arg;
        fixture_reply r;
        char buf[700];
        const msgpack_object *t = telemetry_status(w->c, &r);
        bool ok = strncmp(fixture_str(t, "state", buf, sizeof(buf)), w->prefix, strlen(w->prefix)) == 0;
        fixture_reply_free(&r);
        return ok;
}

static void wait_state(int c, const char *prefix) {
        state_wait w = { c, prefix };
        ck_assert_msg(fixture_run_until(&f, 30000, state_is, &w), "telemetry never '%s...'", prefix);
}

static uint64_t status_u64(int c, const char *key) {
        fixture_reply r;
        uint64_t v = fixture_u64(telemetry_status(c, &r), key);
        fixture_reply_free(&r);
        return v;
}

typedef struct count_wait {
        int c;
        const char *key;
        uint64_t min;
} count_wait;

static bool count_reached(void *arg) {
        count_wait *w = arg;
        return status_u64(w->c, w->key) >= w->min;
}

/* Runs the loop until agentd.status's telemetry `key` is at least min (the
 * collector's answer is counted when the daemon reads it, after the collector
 * has the request). */
static void wait_count(int c, const char *key, uint64_t min) {
        count_wait w = { c, key, min };
        ck_assert_msg(fixture_run_until(&f, 30000, count_reached, &w), "telemetry %s stays below %llu", key,
                      (unsigned long long) min);
}

START_TEST(test_off_by_default) {
        fixture_init(&f);
        fixture_start(&f, NULL);
        fixture_wait_audit_ready(&f);
        int c = fixture_connect(&f);
        char id[64], buf[64];
        run_sandbox(c, id, sizeof(id));
        fixture_reply r;
        const msgpack_object *t = telemetry_status(c, &r);
        ck_assert_uint_eq(t->via.map.size, 1);
        ck_assert_str_eq(fixture_str(t, "state", buf, sizeof(buf)), "off");
        fixture_reply_free(&r);
        /* No key made, nothing sent anywhere. */
        char key[PATH_MAX + 32];
        snprintf(key, sizeof(key), "%s/agentd/telemetry.key", f.state_home);
        ck_assert_int_ne(access(key, F_OK), 0);
        close(c);
        fixture_stop(&f);
}
END_TEST

START_TEST(test_exports_a_sandbox_redacted) {
        collector_start(true);
        start_with_endpoint(col.port, NULL);
        int c = fixture_connect(&f);
        char id[64], buf[256];
        run_sandbox(c, id, sizeof(id));
        fixture_reply r;
        fixture_call_ok(&f, c, "agentd.ping", NULL);

        char sid[128];
        snprintf(sid, sizeof(sid), "{\"stringValue\":\"%s\"}", id);
        /* The events, as log records of service agentd, about this sandbox. */
        wait_for("/v1/logs", (const char *[]) { "\"resourceLogs\"", "\"service.name\"", "{\"stringValue\":\"sandbox.spawn\"}",
                                                "\"agentd.workspace.hmac\",\"value\":{\"stringValue\":\"hmac-sha256:",
                                                "\"agentd.argc\",\"value\":{\"intValue\":\"3\"}", sid, NULL });
        wait_for("/v1/logs", (const char *[]) { "{\"stringValue\":\"sandbox.exit\"}",
                                                "\"process.exit.code\",\"value\":{\"intValue\":\"3\"}", NULL });
        /* Its life as a span. */
        wait_for("/v1/traces", (const char *[]) { "\"resourceSpans\"", "\"name\":\"agentd.sandbox\"", sid, NULL });
        /* The counters. */
        wait_for("/v1/metrics", (const char *[]) { "\"name\":\"agentd.sandboxes.spawned\"", "\"asInt\":\"1\"", NULL });

        /* What stays here: the workspace path, the arguments, the requests. */
        ck_assert(!collector_saw(f.workspace));
        ck_assert(!collector_saw("secret-argument"));
        ck_assert(!collector_saw("agentd.ping"));

        wait_count(c, "sent_logs", 2);
        wait_count(c, "sent_spans", 1);
        wait_count(c, "sent_metrics", 1);
        const msgpack_object *t = telemetry_status(c, &r);
        snprintf(sid, sizeof(sid), "ok: exporting to http://127.0.0.1:%u", col.port);
        ck_assert_str_eq(fixture_str(t, "state", buf, sizeof(buf)), sid);
        ck_assert_str_eq(fixture_str(t, "endpoint", buf, sizeof(buf)), sid + strlen("ok: exporting to "));
        ck_assert_uint_eq(fixture_u64(t, "dropped"), 0);
        fixture_reply_free(&r);
        /* The per-machine key of the hashes. */
        char key[PATH_MAX + 32];
        struct stat st;
        snprintf(key, sizeof(key), "%s/agentd/telemetry.key", f.state_home);
        ck_assert_int_eq(stat(key, &st), 0);
        ck_assert_int_eq(st.st_mode & 0777, 0600);
        ck_assert_int_eq(st.st_size, 32);
        close(c);
        fixture_stop(&f);
        collector_stop();
}
END_TEST

START_TEST(test_arguments_only_when_asked) {
        collector_start(true);
        start_with_endpoint(col.port, "IncludeArguments=yes\n");
        int c = fixture_connect(&f);
        char id[64];
        run_sandbox(c, id, sizeof(id));
        wait_for("/v1/logs", (const char *[]) { "\"process.command_args\"", "secret-argument-$((6*7))", NULL });
        ck_assert(!collector_saw(f.workspace));
        close(c);
        fixture_stop(&f);
        collector_stop();
}
END_TEST

START_TEST(test_refused_connections_do_not_fail_requests) {
        /* A port nobody listens on. */
        collector_start(true);
        uint16_t port = col.port;
        collector_stop();
        start_with_endpoint(port, NULL);
        int c = fixture_connect(&f);
        char id[64];
        run_sandbox(c, id, sizeof(id));
        fixture_call_ok(&f, c, "task.list", NULL);
        wait_state(c, "failing: ");
        wait_count(c, "dropped_failed", 1);
        ck_assert_uint_eq(status_u64(c, "sent_logs"), 0);
        /* And the daemon goes on serving. */
        run_sandbox(c, id, sizeof(id));
        close(c);
        fixture_stop(&f);
}
END_TEST

static void pack_revoke_all(msgpack_packer *pk, void *arg) {
        msgpack_pack_map(pk, 1);
        mp_pack_kv_bool(pk, "all", true);
}

START_TEST(test_a_silent_collector_does_not_block) {
        /* Connections are taken by the kernel and never answered. */
        collector_start(false);
        start_with_endpoint(col.port, "QueueMax=16\n");
        int c = fixture_connect(&f);
        char id[64];
        run_sandbox(c, id, sizeof(id));
        /* Revocations and unlocks make exported events while every batch waits. */
        fixture_reply r;
        for (int i = 0; i < 8; i++) {
                ck_assert_msg(fixture_call(&f, c, "credentials.revoke", pack_revoke_all, NULL, &r), "%s: %s", r.code,
                              r.message);
                fixture_reply_free(&r);
                fixture_call_ok(&f, c, "agentd.unlock", NULL);
                run_sandbox(c, id, sizeof(id));
        }
        /* Every request was answered while the batches wait (their 10 s
         * timeout is not a test of ours); the queue holds at most QueueMax. */
        ck_assert_uint_le(status_u64(c, "queued"), 16);
        ck_assert_uint_gt(status_u64(c, "dropped_queue_full"), 0);
        ck_assert_uint_eq(status_u64(c, "sent_logs"), 0);
        close(c);
        fixture_stop(&f);
        collector_stop();
}
END_TEST

START_TEST(test_collector_errors_then_recovery) {
        collector_start(true);
        atomic_store(&col.status, 500);
        start_with_endpoint(col.port, NULL);
        int c = fixture_connect(&f);
        char id[64];
        run_sandbox(c, id, sizeof(id));
        wait_state(c, "failing: the collector answered HTTP 500 on /v1/");
        wait_count(c, "dropped_failed", 1);
        fixture_reply r;
        const msgpack_object *t = telemetry_status(c, &r);
        ck_assert_uint_eq(fixture_u64(t, "dropped"), fixture_u64(t, "dropped_failed") + fixture_u64(t, "dropped_queue_full"));
        fixture_reply_free(&r);

        atomic_store(&col.status, 200);
        run_sandbox(c, id, sizeof(id));
        wait_state(c, "ok: exporting to ");
        wait_count(c, "sent_logs", 1);
        close(c);
        fixture_stop(&f);
        collector_stop();
}
END_TEST

int main(void) {
        Suite *s = suite_create("telemetry");
        TCase *tc = tcase_create("telemetry");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_off_by_default);
        tcase_add_test(tc, test_exports_a_sandbox_redacted);
        tcase_add_test(tc, test_arguments_only_when_asked);
        tcase_add_test(tc, test_refused_connections_do_not_fail_requests);
        tcase_add_test(tc, test_a_silent_collector_does_not_block);
        tcase_add_test(tc, test_collector_errors_then_recovery);
        suite_add_tcase(s, tc);
        return unit_run(s, false);
}
