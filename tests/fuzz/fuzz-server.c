/* libFuzzer target for the RPC server's connection state machine
 * (daemon/core/server.c): the input is a script of peer actions on real socket
 * pairs served by the real server code in a real libuv loop — connect, send
 * bytes (partial messages, garbage, fds), half-close, hang up, read replies
 * or not — interleaved with loop iterations, late replies and errors of
 * deferred calls, and broadcasts. The method handlers are this file's: each
 * answers in one of the ways real handlers do (a result, an error, a failure
 * without a message, a deferred reply, a reply with an fd, a malformed reply),
 * chosen by the script. At the end every connection must be gone and the loop
 * must close (uv_loop_close() == 0); ASan checks for leaks and misuse. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <json-c/json.h>

#include "core/log.h"
#include "macro.h"
#include "core/server.h"
#include "socket.h"

#define MAX_PEERS 6
#define MAX_PENDING 64

/* ---- the script ---------------------------------------------------------- */

typedef struct script {
        const uint8_t *p;
        size_t left;
} script;

static uint8_t next(script *s) {
        if (s->left == 0)
                return 0;
        s->left--;
        return *s->p++;
}

/* ---- what server.c needs from the rest of the daemon --------------------- */

static void fake_record_event(void *userdata, const char *type, const char *sandbox, json_object *fields) {
        json_object_put(fields);
}

static void fake_connection_closed(void *userdata, connection *c) {
}

/* The audit log's side of the group commit and the fail-closed gate, moved by
 * the script: records pending (replies are held until the commit releases
 * them) and a log that cannot record (state-changing calls are refused). */
static bool audit_records_pending, audit_cannot_record;

static bool fake_records_pending(void *userdata) {
        return audit_records_pending;
}

static int fake_can_record(void *userdata, agentd_error *err) {
        if (!audit_cannot_record)
                return 0;
        return error_set(err, ERROR_BACKEND_UNAVAILABLE, ENOSPC, "the state filesystem is full (fuzzed)");
}

static void fake_record_rpc(void *userdata, const rpc_ctx *ctx, const char *outcome) {
}

static const server_hooks fake_hooks = {
        .records_pending = fake_records_pending,
        .can_record = fake_can_record,
        .record_rpc = fake_record_rpc,
        .record_event = fake_record_event,
        .connection_closed = fake_connection_closed,
};

/* A clock the script moves, so rate limits are reached and recovered from. */
static uint64_t fake_now = 1;
uint64_t now_msec(void) {
        return fake_now;
}

/* The broker socket of one sandbox (its listening side is not needed). */
static char sandbox_name[] = "sandbox-1";
static sandbox_listener listener;

static rpc_call *pending[MAX_PENDING];
static unsigned n_pending;
static unsigned handler_mode;

static void pack_empty_map(msgpack_packer *pk, void *userdata) {
        msgpack_pack_map(pk, 0);
}

static int fuzz_handler(rpc_ctx *ctx, rpc_error *err, unsigned id) {
        int fd;
        switch ((id + handler_mode) % 7) {
        case 0:
                if (id == RPC_METHOD_events_subscribe)
                        ctx->conn->subscribed = true;
                msgpack_pack_map(ctx->pk, 0);
                return 0;
        case 1:
                rpc_error_set(err, RPC_E_NOT_FOUND, "no such thing");
                return -ENOENT;
        case 2:
                return -ENOMEM;
        case 3:
                if (n_pending >= MAX_PENDING) {
                        rpc_error_set(err, RPC_E_LIMIT_EXCEEDED, "fuzz: too many pending");
                        return -ENOBUFS;
                }
                pending[n_pending] = rpc_ctx_defer(ctx);
                if (!pending[n_pending])
                        return -ENOMEM;
                n_pending++;
                return 0;
        case 4:
                fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                if (fd >= 0)
                        ctx->reply_fds[ctx->n_reply_fds++] = fd;
                msgpack_pack_nil(ctx->pk);
                return 0;
        case 5:
                /* A request's fd, as sandbox.spawn takes them. */
                safe_close(connection_take_fd(ctx->conn));
                /* A handler bug: two objects where one is expected. */
                msgpack_pack_nil(ctx->pk);
                msgpack_pack_nil(ctx->pk);
                return 0;
        default:
                /* An error after an fd was staged: the fd must not leak. */
                fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                if (fd >= 0)
                        ctx->reply_fds[ctx->n_reply_fds++] = fd;
                rpc_error_set(err, RPC_E_POLICY_DENIED, "denied");
                return -EPERM;
        }
}

#define METHOD(name, ident, flags, params, cli, summary) \
        int rpc_##ident(rpc_ctx *ctx, const rpc_##ident##_params *p, rpc_error *err) \
        { return fuzz_handler(ctx, err, RPC_METHOD_##ident); }
#include "methods.def"
#undef METHOD

static void finish_pending(unsigned how) {
        if (n_pending == 0)
                return;
        rpc_call *call = pending[--n_pending];
        switch (how % 3) {
        case 0:
                rpc_call_reply(call, pack_empty_map, NULL);
                break;
        case 1:
                rpc_call_error(call, RPC_E_BACKEND_UNAVAILABLE, "late failure");
                break;
        default:
                rpc_call_free(call);
        }
}

/* ---- peers --------------------------------------------------------------- */

static int peers[MAX_PEERS];
static unsigned n_peers;

static void peer_open(manager *m, script *s) {
        uint8_t flags = next(s);
        int sv[2];
        if (n_peers >= MAX_PEERS || socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
                return;
        if (flags & 2) {
                /* Small buffers: replies back up, the server stops reading. */
                int sz = 4096;
                (void) setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
                (void) setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
        }
        if (server_adopt(m, sv[0], (flags & 1) ? &listener : NULL) < 0) {
                close(sv[1]);
                return;
        }
        peers[n_peers++] = sv[1];
}

static void peer_drop(unsigned k) {
        close(peers[k]);
        peers[k] = peers[--n_peers];
}

static void peer_send(script *s) {
        if (n_peers == 0)
                return;
        unsigned k = next(s) % n_peers;
        uint8_t len = next(s);
        bool with_fd = len & 0x80;
        size_t n = len & 0x7f;
        if (n > s->left)
                n = s->left;
        int fd = -1;
        if (with_fd && n > 0)
                fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        (void) socket_send_fds(peers[k], s->p, n, &fd, fd >= 0 ? 1 : 0, MSG_DONTWAIT);
        safe_close(fd);
        s->p += n;
        s->left -= n;
}

static void peer_read(script *s) {
        static uint8_t sink[65536];
        if (n_peers == 0)
                return;
        unsigned k = next(s) % n_peers;
        /* Closes any fds that came along: no room for them. */
        size_t n_fds = 0;
        (void) socket_recv_fds(peers[k], sink, sizeof(sink), NULL, &n_fds, 0, MSG_DONTWAIT, NULL);
}

static void pack_event(msgpack_packer *pk, void *userdata) {
        msgpack_pack_map(pk, 0);
}

/* ---- one run ------------------------------------------------------------- */

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        log_set_max_level(LOG_EMERG);
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        uv_loop_t loop;
        agentd_config config = {
                .max_connections = 3, .max_in_flight = 3, .max_connections_per_sandbox = 2, .sandbox_request_rate = 2,
        };
        manager m = { .loop = &loop, .config = &config, .listen_fd = -1 };
        script s = { data, size };

        if (uv_loop_init(&loop) < 0)
                return 0;
        list_init(&m.connections);
        proto_limits_default(&m.limits);
        m.limits.max_message = 2048;
        n_peers = n_pending = handler_mode = 0;
        memset(&listener, 0, sizeof(listener));
        listener.m = &m;
        listener.sandbox_id = sandbox_name;
        server_set_hooks(&fake_hooks);
        fake_now = 1;
        audit_records_pending = audit_cannot_record = false;

        while (s.left > 0) {
                uint8_t op = next(&s);
                switch (op % 14) {
                case 0: peer_open(&m, &s); break;
                case 1: case 2: case 3: peer_send(&s); break;
                case 4: if (n_peers) (void) shutdown(peers[next(&s) % n_peers], SHUT_WR); break;
                case 5: if (n_peers) peer_drop(next(&s) % n_peers); break;
                case 6: case 7: (void) uv_run(&loop, UV_RUN_NOWAIT); break;
                case 8: finish_pending(next(&s)); break;
                case 9: peer_read(&s); break;
                case 10: server_broadcast(&m, (next(&s) & 1) ? "sandbox-1" : NULL, "sandbox.state", pack_event, NULL); break;
                case 11: fake_now += 100u * next(&s); break;
                case 12:
                        switch (next(&s) % 4) {
                        case 0: audit_records_pending = true; break;
                        case 1: audit_records_pending = false; server_release_held(&m); break;
                        case 2: audit_cannot_record = !audit_cannot_record; break;
                        default: handler_mode = next(&s); break;
                        }
                        break;
                default: handler_mode = next(&s); break;
                }
        }

        /* Every peer hangs up: every connection must notice and go away, even
         * those with deferred calls still outstanding. */
        audit_records_pending = false;
        server_release_held(&m);
        while (n_peers > 0)
                peer_drop(0);
        for (int i = 0; i < 1000 && m.n_connections > 0; i++)
                (void) uv_run(&loop, UV_RUN_NOWAIT);
        if (m.n_connections != 0 || m.n_sandbox_connections != 0 || listener.n_connections != 0)
                abort();
        while (n_pending > 0)
                finish_pending(n_pending);
        server_close_all(&m);
        (void) uv_run(&loop, UV_RUN_DEFAULT);
        if (uv_loop_close(&loop) != 0)
                abort();
        return 0;
}
