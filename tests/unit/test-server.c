/* Unit tests for daemon/core/server.c, the connection state machine, on socket
 * pairs served by the real server code in a real libuv loop: a request in and
 * its reply out, messages split across reads and several in one, errors that
 * keep the stream and errors that end it, the audit gate and group commit,
 * file descriptors both ways, the broker socket's rules, and hang-ups (with a
 * deferred call still outstanding). The rest of the daemon is this file's
 * fixture: handlers that answer the way real ones do, and the server's hooks
 * (server.h: a counter, and two flags the tests move). */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "log.h"
#include "macro.h"
#include "server.h"
#include "socket.h"
#include "unit.h"

/* ---- what server.c needs from the rest of the daemon --------------------- */

static unsigned n_audit, n_suppressed, n_closed_hook;
static char last_audit_type[64], last_outcome[64];
static bool records_pending, audit_broken;

static void fake_record_event(void *userdata, const char *type, const char *sandbox, json_object *fields) {
        json_object *v;
        n_audit++;
        n_suppressed += strcmp(type, "rpc.suppressed") == 0;
        snprintf(last_audit_type, sizeof(last_audit_type), "%s", type);
        if (json_object_object_get_ex(fields, "outcome", &v))
                snprintf(last_outcome, sizeof(last_outcome), "%s", json_object_get_string(v));
        json_object_put(fields);
}

static void fake_connection_closed(void *userdata, connection *c) {
        n_closed_hook++;
}

static bool fake_records_pending(void *userdata) {
        return records_pending;
}

static int fake_can_record(void *userdata, agentd_error *err) {
        if (!audit_broken)
                return 0;
        return error_set(err, ERROR_BACKEND_UNAVAILABLE, ENOSPC, "the state filesystem is full");
}

/* audit/auditlog.c's record of a request: here the same counters as an event. */
static void fake_record_rpc(void *userdata, const rpc_ctx *ctx, const char *outcome) {
        n_audit++;
        snprintf(last_audit_type, sizeof(last_audit_type), "%s", "rpc");
        snprintf(last_outcome, sizeof(last_outcome), "%s", outcome);
}

static const server_hooks fake_hooks = {
        .records_pending = fake_records_pending,
        .can_record = fake_can_record,
        .record_rpc = fake_record_rpc,
        .record_event = fake_record_event,
        .connection_closed = fake_connection_closed,
};

static uint64_t fake_now = 1000;
uint64_t now_msec(void) {
        return fake_now;
}

/* ---- handlers ------------------------------------------------------------ */

static unsigned calls[_RPC_METHOD_MAX];
static rpc_call *deferred;
static struct stat got_fd_st;
static bool got_fd;

static int fixture_handler(rpc_ctx *ctx, rpc_error *err, unsigned id) {
        int fd;
        calls[id]++;
        switch (id) {
        case RPC_METHOD_agentd_status:
                /* A handler bug: two objects where one is expected. */
                msgpack_pack_nil(ctx->pk);
                msgpack_pack_nil(ctx->pk);
                return 0;
        case RPC_METHOD_task_show:
                rpc_error_set(err, RPC_E_NOT_FOUND, "no task by that name");
                return -ENOENT;
        case RPC_METHOD_task_list:
                return -ENOMEM; /* a failure without a message */
        case RPC_METHOD_sandbox_wait:
                deferred = rpc_ctx_defer(ctx);
                return deferred ? 0 : -ENOMEM;
        case RPC_METHOD_sandbox_logs:
                /* Takes the request's fd, answers with one of its own. */
                fd = connection_take_fd(ctx->conn);
                got_fd = fd >= 0 && fstat(fd, &got_fd_st) == 0;
                safe_close(fd);
                fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                ck_assert_int_ge(fd, 0);
                ctx->reply_fds[ctx->n_reply_fds++] = fd;
                msgpack_pack_map(ctx->pk, 1);
                mp_pack_kv_bool(ctx->pk, "got_fd", got_fd);
                return 0;
        default:
                msgpack_pack_map(ctx->pk, 1);
                mp_pack_kv_str(ctx->pk, "answered", rpc_methods[id].name);
                return 0;
        }
}

#define METHOD(name, ident, flags, params, cli, summary) \
        int rpc_##ident(rpc_ctx *ctx, const rpc_##ident##_params *p, rpc_error *err) \
        { return fixture_handler(ctx, err, RPC_METHOD_##ident); }
#include "methods.def"
#undef METHOD

/* ---- the daemon and its peers ---------------------------------------------- */

static uv_loop_t loop;
static agentd_config config;
static manager m;
static sandbox_listener listener;
static char sandbox_name[] = "0123456789ab";

typedef struct peer {
        int fd;
        uint8_t buf[65536];
        size_t len;
        int fds[4];
        size_t n_fds;
} peer;

static void setup(void) {
        ck_assert_int_eq(uv_loop_init(&loop), 0);
        config = (agentd_config) {
                .max_connections = 4, .max_in_flight = 2, .max_connections_per_sandbox = 2, .sandbox_request_rate = 2,
        };
        m = (manager) { .loop = &loop, .config = &config, .listen_fd = -1 };
        list_init(&m.connections);
        proto_limits_default(&m.limits);
        m.limits.max_message = 4096;
        memset(&listener, 0, sizeof(listener));
        listener.m = &m;
        listener.sandbox_id = sandbox_name;
        server_set_hooks(&fake_hooks);
}

static void pump(unsigned rounds) {
        for (unsigned i = 0; i < rounds; i++)
                (void) uv_run(&loop, UV_RUN_NOWAIT);
}

static void teardown(void) {
        /* Every connection is gone (the tests closed their peers) and the loop closes. */
        for (int i = 0; i < 100 && m.n_connections > 0; i++)
                pump(1);
        ck_assert_uint_eq(m.n_connections, 0);
        ck_assert_uint_eq(m.n_sandbox_connections, 0);
        server_close_all(&m);
        ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
        ck_assert_int_eq(uv_loop_close(&loop), 0);
}

static void peer_open(peer *p, sandbox_listener *l) {
        int sv[2];
        memset(p, 0, sizeof(*p));
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
        ck_assert_int_eq(server_adopt(&m, sv[0], l), 0);
        p->fd = sv[1];
}

static void peer_close(peer *p) {
        for (unsigned i = 0; i < p->n_fds; i++)
                close(p->fds[i]);
        close(p->fd);
        p->fd = -1;
}

static void peer_send(peer *p, const void *data, size_t len, int fd) {
        ck_assert_int_eq(socket_send_fds(p->fd, data, len, &fd, fd >= 0 ? 1 : 0, 0), (ssize_t) len);
}

/* A request [0, msgid, method, [params]]; params: {key: value}, or {} without a key. */
static msgpack_sbuffer *request(uint32_t msgid, const char *method, const char *key, const char *value) {
        static msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_destroy(&sb);
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        rpc_pack_request_header(&pk, msgid, method);
        msgpack_pack_array(&pk, 1);
        msgpack_pack_map(&pk, key ? 1 : 0);
        if (key)
                mp_pack_kv_str(&pk, key, value);
        return &sb;
}

static void send_request(peer *p, uint32_t msgid, const char *method) {
        msgpack_sbuffer *sb = request(msgid, method, NULL, NULL);
        peer_send(p, sb->data, sb->size, -1);
}

/* Reads what has arrived (keeping fds); false at EOF. */
static bool peer_read(peer *p) {
        ssize_t n = socket_recv_fds(p->fd, p->buf + p->len, sizeof(p->buf) - p->len, p->fds, &p->n_fds,
                                    ELEMENTSOF(p->fds), MSG_DONTWAIT, NULL);
        if (n < 0) {
                ck_assert_int_eq(n, -EAGAIN);
                return true;
        }
        p->len += (size_t) n;
        return n > 0;
}

/* The next message from the daemon, pumping the loop until it is there;
 * false when none comes (EOF, or nothing after `rounds` iterations). */
static bool next_message(peer *p, msgpack_unpacked *u, unsigned rounds) {
        for (unsigned i = 0; i <= rounds; i++) {
                size_t off = 0;
                if (p->len > 0 && msgpack_unpack_next(u, (const char *) p->buf, p->len, &off) == MSGPACK_UNPACK_SUCCESS) {
                        memmove(p->buf, p->buf + off, p->len - off);
                        p->len -= off;
                        return true;
                }
                pump(1);
                if (!peer_read(p))
                        return false;
                if (i > 10)
                        usleep(1000);
        }
        return false;
}

/* The reply to msgid: 0 and *ret_result (owned by u), or the error's code and message. */
typedef struct reply {
        msgpack_unpacked u;
        bool have_msgid;
        uint32_t msgid;
        unsigned kind;
        char code[64], message[512];
        const msgpack_object *result;
} reply;

static void expect_reply(peer *p, reply *r) {
        memset(r, 0, sizeof(*r));
        msgpack_unpacked_init(&r->u);
        ck_assert_msg(next_message(p, &r->u, 1000), "no reply");
        const msgpack_object *o = &r->u.data;
        ck_assert_int_eq(o->type, MSGPACK_OBJECT_ARRAY);
        ck_assert_uint_eq(o->via.array.size, 4);
        ck_assert_uint_eq(o->via.array.ptr[0].via.u64, 1);
        r->have_msgid = o->via.array.ptr[1].type == MSGPACK_OBJECT_POSITIVE_INTEGER;
        r->msgid = r->have_msgid ? (uint32_t) o->via.array.ptr[1].via.u64 : 0;
        const msgpack_object *e = &o->via.array.ptr[2];
        if (e->type != MSGPACK_OBJECT_NIL) {
                r->kind = (unsigned) e->via.array.ptr[0].via.u64;
                ck_assert_int_eq(rpc_error_parse(e, r->code, sizeof(r->code), r->message, sizeof(r->message)), 0);
                ck_assert_int_eq(o->via.array.ptr[3].type, MSGPACK_OBJECT_NIL);
        } else
                r->result = &o->via.array.ptr[3];
}

static void reply_done(reply *r) {
        msgpack_unpacked_destroy(&r->u);
}

/* A successful reply to msgid from the default handler of `method`. */
static void expect_answered(peer *p, uint32_t msgid, const char *method) {
        reply r;
        expect_reply(p, &r);
        ck_assert_msg(r.code[0] == 0, "%s: %s: %s", method, r.code, r.message);
        ck_assert_uint_eq(r.msgid, msgid);
        ck_assert_int_eq(r.result->type, MSGPACK_OBJECT_MAP);
        ck_assert_uint_eq(r.result->via.map.size, 1);
        ck_assert(mp_str_eq(&r.result->via.map.ptr[0].val, method));
        reply_done(&r);
}

static void expect_error(peer *p, uint32_t msgid, const char *code, const char *message_part) {
        reply r;
        expect_reply(p, &r);
        ck_assert_str_eq(r.code, code);
        ck_assert_msg(strstr(r.message, message_part), "'%s' lacks '%s'", r.message, message_part);
        if (msgid)
                ck_assert_uint_eq(r.msgid, msgid);
        reply_done(&r);
}

/* Nothing more arrives, and the daemon has hung up. */
static void expect_hangup(peer *p) {
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        ck_assert_msg(!next_message(p, &u, 2000), "a message after the end");
        msgpack_unpacked_destroy(&u);
        char c;
        ck_assert_int_eq(recv(p->fd, &c, 1, MSG_DONTWAIT), 0);
}

/* Nothing has arrived (yet). */
static void expect_silence(peer *p) {
        pump(20);
        ck_assert(peer_read(p));
        ck_assert_uint_eq(p->len, 0);
}

/* ---- tests ----------------------------------------------------------------- */

START_TEST(test_request_reply) {
        peer p;
        peer_open(&p, NULL);
        ck_assert_uint_eq(m.n_connections, 1);
        send_request(&p, 7, "agentd.ping");
        expect_answered(&p, 7, "agentd.ping");
        ck_assert_uint_eq(calls[RPC_METHOD_agentd_ping], 1);
        /* Every request is evidence. */
        ck_assert_uint_eq(n_audit, 1);
        ck_assert_str_eq(last_audit_type, "rpc");
        ck_assert_str_eq(last_outcome, "ok");
        /* The connection stays for the next one. */
        send_request(&p, 8, "sandbox.list");
        expect_answered(&p, 8, "sandbox.list");
        ck_assert_uint_eq(m.n_connections, 1);
        peer_close(&p);
}
END_TEST

START_TEST(test_partial_frames) {
        peer p;
        peer_open(&p, NULL);
        msgpack_sbuffer *sb = request(21, "task.show", "name", "build");
        size_t n = sb->size;
        uint8_t copy[256];
        memcpy(copy, sb->data, n);
        /* One byte per read: nothing is dispatched before the last one. */
        for (size_t i = 0; i + 1 < n; i++) {
                peer_send(&p, copy + i, 1, -1);
                pump(2);
        }
        expect_silence(&p);
        ck_assert_uint_eq(calls[RPC_METHOD_task_show], 0);
        peer_send(&p, copy + n - 1, 1, -1);
        expect_error(&p, 21, "not_found", "no task by that name");
        ck_assert_uint_eq(calls[RPC_METHOD_task_show], 1);

        /* Two requests and half of a third in one write, the rest in the next:
         * the replies come in order, each once. */
        uint8_t both[1024];
        size_t len = 0;
        uint32_t ids[3] = { 31, 32, 33 };
        for (int k = 0; k < 3; k++) {
                sb = request(ids[k], "agentd.ping", NULL, NULL);
                memcpy(both + len, sb->data, sb->size);
                len += sb->size;
        }
        size_t cut = len - 3;
        peer_send(&p, both, cut, -1);
        expect_answered(&p, 31, "agentd.ping");
        expect_answered(&p, 32, "agentd.ping");
        expect_silence(&p);
        peer_send(&p, both + cut, len - cut, -1);
        expect_answered(&p, 33, "agentd.ping");
        ck_assert_uint_eq(calls[RPC_METHOD_agentd_ping], 3);
        peer_close(&p);
}
END_TEST

START_TEST(test_errors_that_keep_the_stream) {
        peer p;
        peer_open(&p, NULL);
        send_request(&p, 1, "agentd.nope");
        reply r;
        expect_reply(&p, &r);
        ck_assert_str_eq(r.code, "method_not_found");
        ck_assert_str_eq(r.message, "unknown method 'agentd.nope'");
        ck_assert_uint_eq(r.kind, 1);
        reply_done(&r);
        /* A required parameter missing: refused before the handler. */
        send_request(&p, 2, "task.show");
        expect_error(&p, 2, "invalid_params", "name");
        ck_assert_uint_eq(calls[RPC_METHOD_task_show], 0);
        /* A method of the broker socket, asked on the host's. */
        send_request(&p, 3, "credentials.get");
        expect_error(&p, 3, "unauthorized", "only answered on a sandbox's broker socket");
        ck_assert_uint_eq(calls[RPC_METHOD_credentials_get], 0);
        /* A handler that fails without saying why, and one that packs a broken reply. */
        send_request(&p, 4, "task.list");
        expect_error(&p, 4, "internal", "task.list failed: Cannot allocate memory");
        ck_assert_str_eq(last_outcome, "internal");
        send_request(&p, 5, "agentd.status");
        expect_error(&p, 5, "internal", "malformed reply");
        /* Still in sync. */
        send_request(&p, 6, "agentd.ping");
        expect_answered(&p, 6, "agentd.ping");
        peer_close(&p);
}
END_TEST

START_TEST(test_garbage_ends_the_connection) {
        peer p;
        peer_open(&p, NULL);
        /* 0xc1 is never valid msgpack: the stream cannot be resynchronised. */
        const uint8_t junk[] = { 0xc1, 0x00, 0x01 };
        peer_send(&p, junk, sizeof(junk), -1);
        reply r;
        expect_reply(&p, &r);
        ck_assert_str_eq(r.code, "invalid_request");
        ck_assert(!r.have_msgid);
        reply_done(&r);
        expect_hangup(&p);
        pump(5);
        ck_assert_uint_eq(m.n_connections, 0);
        ck_assert_uint_eq(n_closed_hook, 1);
        peer_close(&p);
}
END_TEST

START_TEST(test_oversized_message_refused_before_reading_it) {
        peer p;
        peer_open(&p, NULL);
        /* A request whose header declares a string longer than MaxMessageSize. */
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        rpc_pack_request_header(&pk, 9, "task.check");
        msgpack_pack_array(&pk, 1);
        msgpack_pack_map(&pk, 1);
        mp_pack_cstr(&pk, "text");
        msgpack_pack_str(&pk, 1 << 20);
        peer_send(&p, sb.data, sb.size, -1);
        msgpack_sbuffer_destroy(&sb);
        reply r;
        expect_reply(&p, &r);
        ck_assert_str_eq(r.code, "limit_exceeded");
        ck_assert_msg(strstr(r.message, "MaxMessageSize=4096"), "%s", r.message);
        ck_assert(r.have_msgid);
        ck_assert_uint_eq(r.msgid, 9);
        reply_done(&r);
        expect_hangup(&p);
        ck_assert_uint_eq(calls[RPC_METHOD_task_check], 0);
        peer_close(&p);
}
END_TEST

START_TEST(test_audit_gate_fails_closed) {
        peer p;
        peer_open(&p, NULL);
        audit_broken = true;
        send_request(&p, 1, "agentd.unlock");
        expect_error(&p, 1, "backend_unavailable",
                     "agentd.unlock refused: the audit log cannot record it: the state filesystem is full");
        ck_assert_uint_eq(calls[RPC_METHOD_agentd_unlock], 0);
        /* What changes nothing, and containment, still go through. */
        send_request(&p, 2, "agentd.ping");
        expect_answered(&p, 2, "agentd.ping");
        send_request(&p, 3, "credentials.revoke");
        expect_answered(&p, 3, "credentials.revoke");
        audit_broken = false;
        send_request(&p, 4, "agentd.unlock");
        expect_answered(&p, 4, "agentd.unlock");
        peer_close(&p);
}
END_TEST

START_TEST(test_group_commit_holds_replies) {
        peer p;
        peer_open(&p, NULL);
        records_pending = true;
        send_request(&p, 1, "agentd.ping");
        pump(5);
        ck_assert_uint_eq(calls[RPC_METHOD_agentd_ping], 1);
        /* The reply waits for the records written for it. */
        expect_silence(&p);
        records_pending = false;
        server_release_held(&m);
        expect_answered(&p, 1, "agentd.ping");
        /* A peer gone while held: released without a crash, the connection goes. */
        records_pending = true;
        send_request(&p, 2, "agentd.ping");
        pump(5);
        peer_close(&p);
        pump(5);
        records_pending = false;
        server_release_held(&m);
}
END_TEST

START_TEST(test_fds_both_ways) {
        peer p;
        peer_open(&p, NULL);
        char path[] = "/tmp/test-server-XXXXXX";
        int fd = mkstemp(path);
        ck_assert_int_ge(fd, 0);
        unlink(path);
        struct stat want;
        ck_assert_int_eq(fstat(fd, &want), 0);
        msgpack_sbuffer *sb = request(5, "sandbox.logs", "id", "0123456789ab");
        peer_send(&p, sb->data, sb->size, fd);
        close(fd);
        reply r;
        expect_reply(&p, &r);
        ck_assert_msg(r.code[0] == 0, "%s: %s", r.code, r.message);
        reply_done(&r);
        ck_assert(got_fd);
        ck_assert_uint_eq(got_fd_st.st_ino, want.st_ino);
        ck_assert_uint_eq(got_fd_st.st_dev, want.st_dev);
        /* The reply's fd came along with it. */
        ck_assert_uint_eq(p.n_fds, 1);
        struct stat st, null_st;
        ck_assert_int_eq(fstat(p.fds[0], &st), 0);
        ck_assert_int_eq(stat("/dev/null", &null_st), 0);
        ck_assert_uint_eq(st.st_rdev, null_st.st_rdev);
        /* An fd nobody takes is closed with the connection, not leaked. */
        int extra = open("/dev/null", O_RDONLY | O_CLOEXEC);
        sb = request(6, "agentd.ping", NULL, NULL);
        peer_send(&p, sb->data, sb->size, extra);
        close(extra);
        expect_answered(&p, 6, "agentd.ping");
        peer_close(&p);
}
END_TEST

static void pack_nil(msgpack_packer *pk, void *userdata) {
        msgpack_pack_nil(pk);
}

START_TEST(test_hangup_with_a_deferred_call) {
        peer p;
        peer_open(&p, NULL);
        msgpack_sbuffer *sb = request(11, "sandbox.wait", "id", "0123456789ab");
        peer_send(&p, sb->data, sb->size, -1);
        pump(5);
        rpc_call *first = deferred;
        ck_assert_ptr_nonnull(first);
        ck_assert_str_eq(last_outcome, "pending");
        expect_silence(&p);
        /* MaxRequestsInFlight=2 deferred calls per connection. */
        sb = request(12, "sandbox.wait", "id", "0123456789ab");
        peer_send(&p, sb->data, sb->size, -1);
        pump(5);
        rpc_call *second = deferred;
        sb = request(13, "sandbox.wait", "id", "0123456789ab");
        peer_send(&p, sb->data, sb->size, -1);
        expect_error(&p, 13, "limit_exceeded", "MaxRequestsInFlight");
        ck_assert_uint_eq(calls[RPC_METHOD_sandbox_wait], 2);
        rpc_call_error(second, RPC_E_NOT_FOUND, "gone");
        expect_error(&p, 12, "not_found", "gone");

        /* The client gives up: the connection closes at once, the call outlives it. */
        peer_close(&p);
        for (int i = 0; i < 100 && m.n_connections > 0; i++)
                pump(1);
        ck_assert_uint_eq(m.n_connections, 0);
        ck_assert_uint_eq(n_closed_hook, 1);
        /* The late answer goes nowhere, and frees the call and the connection. */
        rpc_call_reply(first, pack_nil, NULL);
}
END_TEST

START_TEST(test_half_close_still_answered) {
        peer p;
        peer_open(&p, NULL);
        send_request(&p, 3, "agentd.ping");
        ck_assert_int_eq(shutdown(p.fd, SHUT_WR), 0);
        expect_answered(&p, 3, "agentd.ping");
        expect_hangup(&p);
        peer_close(&p);
}
END_TEST

START_TEST(test_broker_socket_rules) {
        peer p;
        peer_open(&p, &listener);
        ck_assert_uint_eq(m.n_sandbox_connections, 1);
        ck_assert_uint_eq(listener.n_connections, 1);
        send_request(&p, 1, "sandbox.list");
        expect_error(&p, 1, "unauthorized", "sandbox.list is not available from inside a sandbox");
        send_request(&p, 2, "credentials.get");
        expect_answered(&p, 2, "credentials.get");
        /* SandboxRequestRate=2: a burst of 4, then refused until time passes. */
        for (uint32_t id = 3; id <= 5; id++) {
                send_request(&p, id, "credentials.get");
                expect_answered(&p, id, "credentials.get");
        }
        send_request(&p, 6, "credentials.get");
        expect_error(&p, 6, "limit_exceeded", "SandboxRequestRate=2");
        fake_now += 1000;
        send_request(&p, 7, "credentials.get");
        expect_answered(&p, 7, "credentials.get");
        /* The refusal is summed up in one record once requests are admitted again. */
        ck_assert_uint_eq(n_suppressed, 1);
        ck_assert_str_eq(last_audit_type, "rpc");
        ck_assert_uint_eq(calls[RPC_METHOD_credentials_get], 5);

        /* MaxConnectionsPerSandbox=2: the third is told so and closed. */
        peer q, r;
        peer_open(&q, &listener);
        peer_open(&r, &listener);
        expect_error(&r, 0, "limit_exceeded", "MaxConnectionsPerSandbox");
        expect_hangup(&r);
        send_request(&q, 1, "credentials.get");
        expect_answered(&q, 1, "credentials.get");
        peer_close(&p);
        peer_close(&q);
        peer_close(&r);
}
END_TEST

START_TEST(test_over_max_connections_revoke_only) {
        peer p[5];
        for (int i = 0; i < 5; i++)
                peer_open(&p[i], NULL);
        /* MaxConnections=4: the fifth may only revoke. */
        send_request(&p[4], 1, "credentials.revoke");
        expect_answered(&p[4], 1, "credentials.revoke");
        send_request(&p[4], 2, "agentd.ping");
        expect_error(&p[4], 2, "limit_exceeded", "only credentials.revoke is served on this one");
        expect_hangup(&p[4]);
        send_request(&p[0], 3, "agentd.ping");
        expect_answered(&p[0], 3, "agentd.ping");
        for (int i = 0; i < 5; i++)
                peer_close(&p[i]);
}
END_TEST

int main(void) {
        Suite *s = suite_create("server");
        TCase *tc = tcase_create("server");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_request_reply);
        tcase_add_test(tc, test_partial_frames);
        tcase_add_test(tc, test_errors_that_keep_the_stream);
        tcase_add_test(tc, test_garbage_ends_the_connection);
        tcase_add_test(tc, test_oversized_message_refused_before_reading_it);
        tcase_add_test(tc, test_audit_gate_fails_closed);
        tcase_add_test(tc, test_group_commit_holds_replies);
        tcase_add_test(tc, test_fds_both_ways);
        tcase_add_test(tc, test_hangup_with_a_deferred_call);
        tcase_add_test(tc, test_half_close_still_answered);
        tcase_add_test(tc, test_broker_socket_rules);
        tcase_add_test(tc, test_over_max_connections_revoke_only);
        suite_add_tcase(s, tc);
        return unit_run(s, false);
}
