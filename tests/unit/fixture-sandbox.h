/* Helpers on top of fixture.h shared by the fixture tests that spawn
 * sandboxes and read notifications: a spawn of `/bin/sh -c CMD` under a task,
 * a sandbox's state from sandbox.list, and a reader of the messages a
 * subscribed connection receives (notifications arrive on their own, so they
 * cannot go through fixture_call()), and a sandbox's egress proxy reached the
 * way its bridge reaches it. Header-only: no build change needed. */
#pragma once

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include "fixture.h"
#include "socket.h"

typedef struct fs_spawn_args {
        const char *task, *workspace, *cmd;
} fs_spawn_args;

static inline void fs_pack_str(msgpack_packer *pk, const char *s) {
        size_t n = strlen(s);
        msgpack_pack_str(pk, n);
        msgpack_pack_str_body(pk, s, n);
}

static inline void fs_pack_spawn(msgpack_packer *pk, void *arg) {
        const fs_spawn_args *a = arg;
        msgpack_pack_map(pk, 3);
        mp_pack_kv_str(pk, "task", a->task);
        mp_pack_kv_str(pk, "workspace", a->workspace);
        fs_pack_str(pk, "argv");
        msgpack_pack_array(pk, 3);
        fs_pack_str(pk, "/bin/sh");
        fs_pack_str(pk, "-c");
        fs_pack_str(pk, a->cmd);
}

/* sandbox.spawn of `/bin/sh -c cmd` under `task` in the fixture's workspace.
 * On success the id is copied to ret_id (when given) and true returned; r is
 * the reply either way (the caller frees it). */
static inline bool fs_spawn(fixture *f, int c, const char *task, const char *cmd, fixture_reply *r, char *ret_id,
                            size_t size) {
        fs_spawn_args a = { .task = task, .workspace = f->workspace, .cmd = cmd };
        if (!fixture_call(f, c, "sandbox.spawn", fs_pack_spawn, &a, r))
                return false;
        if (ret_id)
                ck_assert_ptr_nonnull(fixture_get_str(r->result, "id", ret_id, size));
        return true;
}

/* The same, failing the test unless the spawn succeeds. */
static inline void fs_spawn_ok(fixture *f, int c, const char *task, const char *cmd, char *ret_id, size_t size) {
        fixture_reply r;
        bool ok = fs_spawn(f, c, task, cmd, &r, ret_id, size);
        ck_assert_msg(ok, "spawn of '%s' failed: %s: %s", cmd, r.code, r.message);
        fixture_reply_free(&r);
}

/* The state sandbox.list gives for `id` ("" when it is not listed). */
static inline void fs_sandbox_state(fixture *f, int c, const char *id, char *buf, size_t size) {
        fixture_reply r;
        buf[0] = 0;
        ck_assert(fixture_call(f, c, "sandbox.list", NULL, NULL, &r));
        ck_assert_int_eq(r.result->type, MSGPACK_OBJECT_ARRAY);
        for (uint32_t i = 0; i < r.result->via.array.size; i++) {
                char sid[128];
                const msgpack_object *e = &r.result->via.array.ptr[i];
                if (fixture_get_str(e, "id", sid, sizeof(sid)) && strcmp(sid, id) == 0)
                        (void) fixture_get_str(e, "state", buf, size);
        }
        fixture_reply_free(&r);
}

/* ---- a connection's incoming messages, one at a time ---------------------- */

typedef struct fs_stream {
        int fd;
        char *buf;
        size_t len, cap;
} fs_stream;

static inline void fs_stream_init(fs_stream *s, int fd) {
        s->fd = fd;
        s->cap = 1 << 20;
        s->len = 0;
        s->buf = malloc(s->cap);
        ck_assert_ptr_nonnull(s->buf);
}

static inline void fs_stream_free(fs_stream *s) {
        free(s->buf);
        s->buf = NULL;
}

/* The next whole message on the stream, running the loop for up to `ms`:
 * true with *ret_msg owning a copy (msg->u.data is the message, msg->buf its
 * bytes; free it with fixture_reply_free), false on timeout. */
static inline bool fs_stream_next(fixture *f, fs_stream *s, unsigned ms, fixture_reply *ret_msg) {
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
                if (s->len > 0) {
                        msgpack_unpacked u;
                        size_t off = 0;
                        msgpack_unpacked_init(&u);
                        msgpack_unpack_return ur = msgpack_unpack_next(&u, s->buf, s->len, &off);
                        msgpack_unpacked_destroy(&u);
                        if (ur == MSGPACK_UNPACK_SUCCESS) {
                                memset(ret_msg, 0, sizeof(*ret_msg));
                                ret_msg->buf = malloc(off);
                                ck_assert_ptr_nonnull(ret_msg->buf);
                                memcpy(ret_msg->buf, s->buf, off);
                                memmove(s->buf, s->buf + off, s->len - off);
                                s->len -= off;
                                size_t o2 = 0;
                                msgpack_unpacked_init(&ret_msg->u);
                                ck_assert_int_eq(msgpack_unpack_next(&ret_msg->u, ret_msg->buf, off, &o2),
                                                 MSGPACK_UNPACK_SUCCESS);
                                return true;
                        }
                }
                (void) uv_run(&f->loop, UV_RUN_NOWAIT);
                ck_assert_uint_lt(s->len, s->cap);
                ssize_t n = recv(s->fd, s->buf + s->len, s->cap - s->len, MSG_DONTWAIT);
                if (n > 0) {
                        s->len += (size_t) n;
                        continue;
                }
                ck_assert_msg(n < 0 && errno == EAGAIN, "the subscribed connection ended: %zd", n);
                clock_gettime(CLOCK_MONOTONIC, &t);
                if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 >= (long) ms)
                        return false;
                poll(&(struct pollfd) { .fd = s->fd, .events = POLLIN }, 1, 1);
        }
}

/* A notification [2, method, [params]]: its method copied to `method` and its
 * params map returned; NULL when `msg` is not a notification. */
static inline const msgpack_object *fs_notification(const fixture_reply *msg, char *method, size_t size) {
        const msgpack_object *o = &msg->u.data;
        if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 3 || o->via.array.ptr[0].via.u64 != 2 ||
            o->via.array.ptr[1].type != MSGPACK_OBJECT_STR)
                return NULL;
        snprintf(method, size, "%.*s", (int) o->via.array.ptr[1].via.str.size, o->via.array.ptr[1].via.str.ptr);
        const msgpack_object *p = &o->via.array.ptr[2];
        if (p->type == MSGPACK_OBJECT_ARRAY && p->via.array.size == 1)
                return &p->via.array.ptr[0];
        return p;
}

/* ---- a sandbox's egress proxy, reached as its bridge reaches it ----------- */

/* What helper/bridge.c does for a program inside that connects to the proxy
 * port: a loopback TCP connection whose accepted end goes over the sandbox's
 * proxy.sock (one byte and the fd). The program's end, non-blocking. */
static inline int fs_proxy_connect(fixture *f, const char *sandbox_id) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(sa);
        int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(l, 0);
        ck_assert_int_eq(bind(l, (struct sockaddr *) &sa, sizeof(sa)), 0);
        ck_assert_int_eq(listen(l, 1), 0);
        ck_assert_int_eq(getsockname(l, (struct sockaddr *) &sa, &len), 0);
        int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(c, 0);
        ck_assert_int_eq(connect(c, (struct sockaddr *) &sa, sizeof(sa)), 0);
        int a = accept4(l, NULL, NULL, SOCK_CLOEXEC);
        ck_assert_int_ge(a, 0);
        close(l);

        struct sockaddr_un su = { .sun_family = AF_UNIX };
        snprintf(su.sun_path, sizeof(su.sun_path), "%s/agentd/sandboxes/%s/proxy.sock", f->state_home, sandbox_id);
        int u = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(u, 0);
        ck_assert_msg(connect(u, (struct sockaddr *) &su, sizeof(su)) == 0, "connect %s: %s", su.sun_path, strerror(errno));
        ck_assert_int_eq(socket_send_fds(u, "F", 1, &a, 1, 0), 1);
        close(u);
        close(a);
        ck_assert_int_eq(fcntl(c, F_SETFL, O_NONBLOCK), 0);
        return c;
}

/* A loopback listener (non-blocking); its port in *ret_port. */
static inline int fs_listen(uint16_t *ret_port) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(sa);
        int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        ck_assert_int_ge(l, 0);
        ck_assert_int_eq(bind(l, (struct sockaddr *) &sa, sizeof(sa)), 0);
        ck_assert_int_eq(listen(l, 8), 0);
        ck_assert_int_eq(getsockname(l, (struct sockaddr *) &sa, &len), 0);
        *ret_port = ntohs(sa.sin_port);
        return l;
}

typedef struct fs_reader {
        int fd;
        char buf[8192];
        size_t len;
        const char *needle;
        bool eof;
} fs_reader;

static inline bool fs_reader_pred(void *arg) {
        fs_reader *r = arg;
        ssize_t n = -1;
        while (r->len + 1 < sizeof(r->buf) && (n = recv(r->fd, r->buf + r->len, sizeof(r->buf) - 1 - r->len, MSG_DONTWAIT)) > 0)
                r->len += (size_t) n;
        r->buf[r->len] = 0;
        if (n == 0)
                r->eof = true;
        return strstr(r->buf, r->needle) != NULL || r->eof;
}

/* Reads from a non-blocking fd, running the loop, until `needle` is in what
 * was read (true), or the end of the stream or `ms` pass (false). What was
 * read is in r->buf. */
static inline bool fs_read_until(fixture *f, fs_reader *r, int fd, const char *needle, unsigned ms) {
        memset(r, 0, sizeof(*r));
        r->fd = fd;
        r->needle = needle;
        (void) fixture_run_until(f, ms, fs_reader_pred, r);
        return strstr(r->buf, needle) != NULL;
}

typedef struct fs_acceptor {
        int listener, fd;
} fs_acceptor;

static inline bool fs_accept_pred(void *arg) {
        fs_acceptor *a = arg;
        a->fd = accept4(a->listener, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        return a->fd >= 0;
}

/* Accepts on a non-blocking listener, running the loop (-1 after `ms`). */
static inline int fs_accept(fixture *f, int listener, unsigned ms) {
        fs_acceptor a = { .listener = listener, .fd = -1 };
        (void) fixture_run_until(f, ms, fs_accept_pred, &a);
        return a.fd;
}

/* ---- audit records ---------------------------------------------------- */

typedef struct fs_audit_q {
        fixture *f;
        int c;
        const char *sandbox, *type;
        const char *needles[4];   /* each must be in the record as msgpack_object_print() prints it */
        char found[4096];         /* the record that matched, printed */
} fs_audit_q;

/* audit.query for the sandbox: is there a record of `type` with every needle?
 * (A predicate for fixture_run_until: the log is written off the loop.) */
static inline bool fs_audited(void *arg) {
        fs_audit_q *q = arg;
        fixture_reply r;
        bool found = false;
        ck_assert(fixture_call_str(q->f, q->c, &r, "audit.query", "sandbox", q->sandbox, NULL));
        ck_assert_int_eq(r.result->type, MSGPACK_OBJECT_ARRAY);
        char *text = malloc(65536);
        ck_assert_ptr_nonnull(text);
        for (uint32_t i = 0; i < r.result->via.array.size && !found; i++) {
                const msgpack_object *rec = &r.result->via.array.ptr[i];
                char type[64];
                if (!fixture_get_str(rec, "type", type, sizeof(type)) || strcmp(type, q->type) != 0)
                        continue;
                int n = msgpack_object_print_buffer(text, 65536, *rec);
                text[n > 0 && n < 65536 ? n : 0] = 0;
                found = true;
                for (size_t k = 0; k < 4 && q->needles[k]; k++)
                        found = found && strstr(text, q->needles[k]) != NULL;
                if (found)
                        snprintf(q->found, sizeof(q->found), "%s", text);
        }
        free(text);
        fixture_reply_free(&r);
        return found;
}
