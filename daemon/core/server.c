/* The msgpack-rpc server on the Unix socket. Connections are driven with
 * uv_poll and plain recvmsg/sendmsg so that file descriptors can travel with
 * requests and replies (SCM_RIGHTS). Each connection reads a message header
 * through the bounded scanner before anything is decoded. */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"
#include "socket.h"

#define READ_CHUNK (64 * 1024)
/* Stop reading from a peer that does not read its replies. */
#define OUT_HIGH_WATER (4u * 1024 * 1024)
#define OUT_HARD_LIMIT (64u * 1024 * 1024)
/* Host connections past MaxConnections that may still call credentials.revoke. */
#define REVOKE_RESERVE 8u
/* At most one "requests suppressed" audit record per sandbox and method per interval. */
#define SUPPRESSED_INTERVAL_MS 1000u

/* One entry per method: calls its handler with the decoded parameters. */
typedef int (*rpc_handler)(rpc_ctx *ctx, const void *params, rpc_error *err);
#define METHOD(name, ident, flags, params, cli, summary)                                 \
        static int call_##ident(rpc_ctx *ctx, const void *p, rpc_error *err) {          \
                return rpc_##ident(ctx, p, err);                                         \
        }
#include "methods.def"
#undef METHOD
static const rpc_handler handlers[_RPC_METHOD_MAX] = {
#define METHOD(name, ident, flags, params, cli, summary) [RPC_METHOD_##ident] = call_##ident,
#include "methods.def"
#undef METHOD
};

/* The parts' side of the server (server.h): set once by main.c. */
static server_hooks hooks;

void server_set_hooks(const server_hooks *h) {
        hooks = h ? *h : (server_hooks) {};
}

static bool hook_records_pending(void) {
        return hooks.records_pending && hooks.records_pending(hooks.userdata);
}

static int hook_can_record(agentd_error *err) {
        return hooks.can_record ? hooks.can_record(hooks.userdata, err) : 0;
}

static void hook_record_event(const char *type, const char *sandbox_id, json_object *fields) {
        if (hooks.record_event)
                hooks.record_event(hooks.userdata, type, sandbox_id, fields);
        else
                json_object_put(fields);
}

static void connection_close(connection *c);
static void connection_update_poll(connection *c);

/* The connection lifecycle, in one direction only:
 *   OPEN -> DRAINING -> CLOSED, or OPEN -> CLOSED.
 * Any reply may fail to send and close the connection underneath its caller
 * (the peer hung up), so nothing assigns a state except these two functions,
 * and nothing touches the poll handle once the state is CLOSED: its uv_close()
 * has begun and restarting it aborts libuv. */
static void connection_drain(connection *c) {
        if (c->state == CONNECTION_OPEN)
                c->state = CONNECTION_DRAINING;
}

connection *connection_ref(connection *c) {
        c->refcount++;
        return c;
}

static void on_conn_poll_closed(uv_handle_t *h) {
        connection *c = container_of((uv_poll_t *) h, connection, poll);
        connection_unref(c);
}

void connection_unref(connection *c) {
        if (!c || --c->refcount > 0)
                return;
        free(c->in);
        for (out_chunk *o = c->out_head, *n; o; o = n) {
                n = o->next;
                for (unsigned i = 0; i < o->n_fds; i++)
                        safe_close(o->fds[i]);
                free(o);
        }
        for (unsigned i = 0; i < c->n_rx_fds; i++)
                safe_close(c->rx_fds[i]);
        free(c->subscribe_sandbox);
        free(c->sandbox_id);
        free(c);
}

static void connection_close(connection *c) {
        if (c->state == CONNECTION_CLOSED)
                return;
        c->state = CONNECTION_CLOSED;
        if (hooks.connection_closed)
                hooks.connection_closed(hooks.userdata, c);
        list_del(&c->link);
        c->m->n_connections--;
        if (c->listener) {
                c->listener->n_connections--;
                c->m->n_sandbox_connections--;
                c->listener = NULL;
        }
        /* The poll handle holds a reference until its close callback. */
        uv_close((uv_handle_t *) &c->poll, on_conn_poll_closed);
        safe_close(c->fd);
        c->fd = -1;
}

int connection_take_fd(connection *c) {
        if (c->n_rx_fds == 0)
                return -1;
        int fd = c->rx_fds[0];
        memmove(c->rx_fds, c->rx_fds + 1, (c->n_rx_fds - 1) * sizeof(int));
        c->n_rx_fds--;
        return fd;
}

#define FLUSH_IOV_MAX 64

/* Replies without fds go out together (one sendmsg for all that are queued:
 * pipelined requests, or those a batch held); a reply with fds goes alone, its
 * fds with its first byte. */
static int flush_output(connection *c) {
        while (c->out_head) {
                out_chunk *o = c->out_head;
                bool with_fds = o->n_fds > 0 && o->off == 0;
                struct iovec iov[FLUSH_IOV_MAX];
                size_t n_iov = 0;
                for (out_chunk *k = o; k && n_iov < (with_fds ? 1 : FLUSH_IOV_MAX) && (k == o || k->n_fds == 0); k = k->next)
                        iov[n_iov++] = (struct iovec) { k->data + k->off, k->len - k->off };
                struct msghdr mh = { .msg_iov = iov, .msg_iovlen = n_iov };
                union {
                        struct cmsghdr align;
                        char buf[SOCKET_CMSG_SPACE(3)];
                } cm;
                if (with_fds && socket_cmsg_put_fds(&mh, cm.buf, sizeof(cm.buf), o->fds, o->n_fds) < 0)
                        return -EINVAL;
                ssize_t n = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                return 0;
                        return -errno;
                }
                if (with_fds) {
                        for (unsigned i = 0; i < o->n_fds; i++)
                                safe_close(o->fds[i]);
                        o->n_fds = 0;
                }
                c->out_bytes -= (size_t) n;
                for (size_t left = (size_t) n; left > 0;) {
                        out_chunk *k = c->out_head;
                        size_t take = left < k->len - k->off ? left : k->len - k->off;
                        k->off += take;
                        left -= take;
                        if (k->off == k->len) {
                                c->out_head = k->next;
                                if (!c->out_head)
                                        c->out_tail = NULL;
                                free(k);
                        }
                }
        }
        return 0;
}

/* Connections whose replies wait for the audit batch (auditlog.c commits it
 * once per loop iteration, then calls server_release_held()). */
static list_head held_conns = { &held_conns, &held_conns };

static void connection_hold(connection *c) {
        if (c->held)
                return;
        c->held = true;
        list_add_tail(&held_conns, &connection_ref(c)->held_link);
}

void server_release_held(manager *m) {
        while (!list_empty(&held_conns)) {
                connection *c = container_of(held_conns.next, connection, held_link);
                list_del(&c->held_link);
                c->held = false;
                if (c->state != CONNECTION_CLOSED) {
                        if (flush_output(c) < 0)
                                connection_close(c);
                        else
                                connection_update_poll(c);
                }
                connection_unref(c);
        }
}

int connection_send(connection *c, const void *data, size_t len, const int *fds, unsigned n_fds) {
        if (c->state == CONNECTION_CLOSED) {
                for (unsigned i = 0; i < n_fds; i++)
                        safe_close(fds[i]);
                return -ENOTCONN;
        }
        if (c->out_bytes + len > OUT_HARD_LIMIT) {
                log_warning("peer pid %d does not read its replies; closing the connection", (int) c->peer.pid);
                for (unsigned i = 0; i < n_fds; i++)
                        safe_close(fds[i]);
                connection_close(c);
                return -ENOBUFS;
        }
        out_chunk *o = malloc(sizeof(out_chunk) + len);
        if (!o) {
                for (unsigned i = 0; i < n_fds; i++)
                        safe_close(fds[i]);
                return -ENOMEM;
        }
        o->next = NULL;
        o->len = len;
        o->off = 0;
        o->n_fds = n_fds > 3 ? 3 : n_fds;
        for (unsigned i = 0; i < o->n_fds; i++)
                o->fds[i] = fds[i];
        memcpy(o->data, data, len);
        if (c->out_tail)
                c->out_tail->next = o;
        else
                c->out_head = o;
        c->out_tail = o;
        c->out_bytes += len;

        /* Group commit: a reply never goes out before the records written for it. */
        if (hook_records_pending()) {
                connection_hold(c);
                return 0;
        }
        int r = flush_output(c);
        if (r < 0) {
                connection_close(c);
                return r;
        }
        connection_update_poll(c);
        return 0;
}

static void send_packed_error(connection *c, bool have_msgid, uint32_t msgid, rpc_error_code code, const char *message) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        rpc_pack_error_response(&pk, have_msgid, msgid, code, message);
        (void) connection_send(c, sb.data, sb.size, NULL, 0);
        msgpack_sbuffer_destroy(&sb);
}

/* ---- async calls ------------------------------------------------------ */

rpc_call *rpc_ctx_defer(rpc_ctx *ctx) {
        rpc_call *call = calloc(1, sizeof(*call));
        if (!call)
                return NULL;
        call->conn = connection_ref(ctx->conn);
        call->msgid = ctx->msg->msgid;
        call->method = ctx->method;
        ctx->conn->in_flight++;
        ctx->async = call;
        return call;
}

void rpc_call_free(rpc_call *call) {
        if (!call)
                return;
        call->conn->in_flight--;
        connection_update_poll(call->conn);
        connection_unref(call->conn);
        free(call);
}

void rpc_call_reply(rpc_call *call, void (*pack)(msgpack_packer *pk, void *userdata), void *userdata) {
        rpc_call_reply_fds(call, pack, userdata, NULL, 0);
}

void rpc_call_reply_fds(rpc_call *call, void (*pack)(msgpack_packer *pk, void *userdata), void *userdata, const int *fds,
                        unsigned n_fds) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        rpc_pack_response_header(&pk, call->msgid);
        pack(&pk, userdata);
        (void) connection_send(call->conn, sb.data, sb.size, fds, n_fds);
        msgpack_sbuffer_destroy(&sb);
        rpc_call_free(call);
}

void rpc_call_error(rpc_call *call, rpc_error_code code, const char *message) {
        send_packed_error(call->conn, true, call->msgid, code, message);
        rpc_call_free(call);
}

void server_broadcast(manager *m, const char *sandbox_id, const char *method,
                      void (*pack)(msgpack_packer *pk, void *userdata), void *userdata) {
        list_head *i, *t;
        msgpack_sbuffer sb;
        msgpack_packer pk;
        bool packed = false;

        msgpack_sbuffer_init(&sb);
        list_for_each_safe(i, t, &m->connections) {
                connection *c = container_of(i, connection, link);
                if (!c->subscribed || c->state != CONNECTION_OPEN)
                        continue;
                if (c->subscribe_sandbox && sandbox_id && strcmp(c->subscribe_sandbox, sandbox_id) != 0)
                        continue;
                /* A subscriber that does not keep up loses events, not the daemon's memory. */
                if (c->out_bytes > OUT_HIGH_WATER)
                        continue;
                if (!packed) {
                        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
                        rpc_pack_notification_header(&pk, method);
                        msgpack_pack_array(&pk, 1);
                        pack(&pk, userdata);
                        packed = true;
                }
                (void) connection_send(c, sb.data, sb.size, NULL, 0);
        }
        msgpack_sbuffer_destroy(&sb);
}

/* ---- sandbox request rate -------------------------------------------- */

static void audit_suppressed(manager *m, const char *sandbox_id, const rpc_method *method, rate_bucket *b) {
        json_object *ev = json_object_new_object();
        json_object_object_add(ev, "method", json_object_new_string(method->name));
        json_object_object_add(ev, "suppressed", json_object_new_int64((int64_t) b->suppressed));
        json_object_object_add(ev, "interval_ms", json_object_new_int64((int64_t) (now_msec() - b->suppressed_since_ms)));
        hook_record_event("rpc.suppressed", sandbox_id, ev);
        b->suppressed = 0;
}

/* A token bucket per sandbox and method (SandboxRequestRate per second, a
 * burst of twice that): a sandbox looping on a method gets limit_exceeded and
 * one audit record per interval counting what was refused, instead of one
 * record per request. Returns false when the request is over the rate. */
static bool sandbox_rate_admit(connection *c, const rpc_method *method) {
        sandbox_listener *l = c->listener;
        unsigned rate = c->m->config->sandbox_request_rate;
        if (!l || rate == 0)
                return true;
        rate_bucket *b = &l->rate[method->id];
        uint64_t now = now_msec();
        double burst = 2.0 * rate;
        if (b->last_ms == 0)
                b->tokens = burst;
        else
                b->tokens += (double) (now - b->last_ms) * rate / 1000.0;
        if (b->tokens > burst)
                b->tokens = burst;
        b->last_ms = now;
        bool admit = b->tokens >= 1.0;
        if (admit)
                b->tokens -= 1.0;
        else if (b->suppressed++ == 0)
                b->suppressed_since_ms = now;
        if (b->suppressed > 0 && (admit || now - b->suppressed_since_ms >= SUPPRESSED_INTERVAL_MS))
                audit_suppressed(c->m, l->sandbox_id, method, b);
        return admit;
}

/* ---- dispatch ---------------------------------------------------------- */

/* A reply packs into a buffer on the stack (no allocation per request); one
 * that outgrows it moves to the heap. */
typedef struct reply_buf {
        char *data;
        size_t size, alloc;
        char inline_data[1024];
} reply_buf;

static void reply_buf_init(reply_buf *b) {
        b->data = b->inline_data;
        b->size = 0;
        b->alloc = sizeof(b->inline_data);
}

static int reply_buf_write(void *userdata, const char *buf, size_t len) {
        reply_buf *b = userdata;
        if (b->alloc - b->size < len) {
                size_t n = b->alloc;
                while (n - b->size < len) {
                        if (n > SIZE_MAX / 2)
                                return -1;
                        n *= 2;
                }
                char *p = b->data == b->inline_data ? malloc(n) : realloc(b->data, n);
                if (!p)
                        return -1;
                if (b->data == b->inline_data)
                        memcpy(p, b->inline_data, b->size);
                b->data = p;
                b->alloc = n;
        }
        memcpy(b->data + b->size, buf, len);
        b->size += len;
        return 0;
}

static void reply_buf_done(reply_buf *b) {
        if (b->data != b->inline_data)
                free(b->data);
}

/* The checks a request passes before its handler runs, in order: a known
 * method, valid parameters for this peer, the connection's and the sandbox's
 * limits, and (for what changes state) an audit log that can record it. A
 * refused request is answered here and gets < 0. */
static int dispatch_admit(connection *c, const rpc_message *msg, const rpc_method **ret_method, rpc_params_any *args,
                          rpc_error *err) {
        manager *m = c->m;
        const rpc_method *method = rpc_method_find(msg->method, msg->method_len);
        if (!method) {
                char text[160];
                snprintf(text, sizeof(text), "unknown method '%.*s'", (int) msg->method_len, msg->method);
                send_packed_error(c, true, msg->msgid, RPC_E_METHOD_NOT_FOUND, text);
                return -EPERM;
        }
        if (rpc_params_decode(method, msg->params, msg->unpacked.zone, args, err) < 0 ||
            rpc_method_check_peer(method, c->sandbox_id != NULL, err) < 0) {
                send_packed_error(c, true, msg->msgid, err->code, error_message(err));
                return -EPERM;
        }
        if (c->revoke_only && method->id != RPC_METHOD_credentials_revoke) {
                char text[200];
                snprintf(text, sizeof(text), "too many connections (MaxConnections=%u): only credentials.revoke is served on this one",
                         m->config->max_connections);
                send_packed_error(c, true, msg->msgid, RPC_E_LIMIT_EXCEEDED, text);
                connection_drain(c);
                return -EPERM;
        }
        if (!sandbox_rate_admit(c, method)) {
                char text[200];
                snprintf(text, sizeof(text), "%s called too often from this sandbox (SandboxRequestRate=%u per second)",
                         method->name, m->config->sandbox_request_rate);
                send_packed_error(c, true, msg->msgid, RPC_E_LIMIT_EXCEEDED, text);
                return -EPERM;
        }
        if ((method->flags & RPC_ASYNC) && c->in_flight >= m->config->max_in_flight) {
                send_packed_error(c, true, msg->msgid, RPC_E_LIMIT_EXCEEDED,
                                  "too many requests in flight on this connection (MaxRequestsInFlight)");
                return -EPERM;
        }

        /* Evidence fails closed: what changes state waits until it can be recorded. */
        if (!(method->flags & (RPC_READ_ONLY | RPC_CONTAINMENT))) {
                _cleanup_error_ agentd_error why = {};
                if (hook_can_record(&why) < 0) {
                        error_wrap(&why, "%s refused: the audit log cannot record it", method->name);
                        send_packed_error(c, true, msg->msgid, RPC_E_BACKEND_UNAVAILABLE, error_message(&why));
                        return -EPERM;
                }
        }
        *ret_method = method;
        return 0;
}

/* Every request is evidence: who asked what, and how it went (audit/auditlog.c). */
static void audit_rpc(const rpc_ctx *ctx, int r, const rpc_error *err) {
        if (!hooks.record_rpc)
                return;
        hooks.record_rpc(hooks.userdata, ctx,
                         r < 0 ? rpc_error_code_to_string(error_is_set(err) ? err->code : RPC_E_INTERNAL)
                               : ctx->async ? "pending" : "ok");
}

static void dispatch(connection *c, const uint8_t *buf, size_t len) {
        manager *m = c->m;
        rpc_message msg;
        _cleanup_error_ rpc_error err = {};

        if (rpc_message_decode(&msg, buf, len, &err) < 0) {
                if (msg.have_msgid)
                        send_packed_error(c, true, msg.msgid, err.code, error_message(&err));
                else {
                        /* The stream is in sync but we cannot say which request this was. */
                        send_packed_error(c, false, 0, err.code, error_message(&err));
                        connection_drain(c);
                }
                rpc_message_done(&msg);
                return;
        }
        if (msg.type != RPC_REQUEST) {
                /* Notifications and responses from clients carry nothing we act on. */
                rpc_message_done(&msg);
                return;
        }

        const rpc_method *method;
        rpc_params_any args;
        if (dispatch_admit(c, &msg, &method, &args, &err) < 0) {
                rpc_message_done(&msg);
                return;
        }

        reply_buf sb;
        msgpack_packer pk;
        reply_buf_init(&sb);
        msgpack_packer_init(&pk, &sb, reply_buf_write);
        rpc_pack_response_header(&pk, msg.msgid);

        rpc_ctx ctx = {
                .m = m, .conn = c, .msg = &msg, .args = &args, .method = method, .pk = &pk,
        };
        connection_ref(c);
        int r = handlers[method->id](&ctx, &args, &err);
        audit_rpc(&ctx, r, &err);
        if (r < 0) {
                if (!error_is_set(&err))
                        rpc_error_set(&err, RPC_E_INTERNAL, "%s failed: %s", method->name, strerror(-r));
                if (err.code == RPC_E_INTERNAL)
                        log_error("%s: %s", method->name, error_message(&err));
                for (unsigned i = 0; i < ctx.n_reply_fds; i++)
                        safe_close(ctx.reply_fds[i]);
                if (ctx.async)
                        rpc_call_error(ctx.async, err.code, error_message(&err));
                else
                        send_packed_error(c, true, msg.msgid, err.code, error_message(&err));
        } else if (!ctx.async) {
                /* A handler that packed a wrong count would desynchronise the
                 * client's stream: check the reply is exactly one object. */
                proto_scanner check;
                proto_limits unlimited = { .max_message = SIZE_MAX / 2, .max_depth = PROTO_MAX_DEPTH, .max_elements = SIZE_MAX / 2 };
                size_t got = 0;
                proto_scan_error e;
                proto_scanner_reset(&check);
                if (proto_scan(&check, &unlimited, (const uint8_t *) sb.data, sb.size, &got, &e) != 1 || got != sb.size) {
                        log_error("%s: handler produced a malformed reply (bug)", method->name);
                        for (unsigned i = 0; i < ctx.n_reply_fds; i++)
                                safe_close(ctx.reply_fds[i]);
                        send_packed_error(c, true, msg.msgid, RPC_E_INTERNAL, "internal error: malformed reply");
                } else
                        (void) connection_send(c, sb.data, sb.size, ctx.reply_fds, ctx.n_reply_fds);
        }
        reply_buf_done(&sb);
        rpc_message_done(&msg);
        connection_unref(c);
}

/* Consumes every complete message in the input buffer. */
static void process_input(connection *c) {
        size_t consumed = 0;

        while (c->state == CONNECTION_OPEN && consumed < c->in_len) {
                size_t msglen;
                proto_scan_error e;
                int r = proto_scan(&c->scan, &c->m->limits, c->in + consumed, c->in_len - consumed, &msglen, &e);
                if (r == 0)
                        break;
                if (r < 0) {
                        /* The stream cannot be resynchronised: answer if we can, then close. */
                        rpc_error_code code = e == PROTO_SCAN_MALFORMED ? RPC_E_INVALID_REQUEST : RPC_E_LIMIT_EXCEEDED;
                        char text[200];
                        if (e == PROTO_SCAN_TOO_BIG)
                                snprintf(text, sizeof(text), "%s (MaxMessageSize=%zu)", proto_scan_error_to_string(e),
                                         c->m->limits.max_message);
                        else if (e == PROTO_SCAN_TOO_DEEP)
                                snprintf(text, sizeof(text), "%s (depth %u)", proto_scan_error_to_string(e),
                                         c->m->limits.max_depth);
                        else if (e == PROTO_SCAN_TOO_MANY)
                                snprintf(text, sizeof(text), "%s (%zu objects)", proto_scan_error_to_string(e),
                                         c->m->limits.max_elements);
                        else
                                snprintf(text, sizeof(text), "not a msgpack-rpc message: %s", proto_scan_error_to_string(e));
                        log_notice("closing connection of pid %d: %s", (int) c->peer.pid, text);
                        send_packed_error(c, c->scan.have_msgid, c->scan.msgid, code, text);
                        connection_drain(c);
                        c->in_len = 0;
                        return;
                }
                proto_scanner_reset(&c->scan);
                dispatch(c, c->in + consumed, msglen);
                /* Requests may carry secrets (broker.enroll): leave no copy behind. */
                explicit_zero(c->in + consumed, msglen);
                consumed += msglen;
        }
        if (consumed > 0) {
                memmove(c->in, c->in + consumed, c->in_len - consumed);
                c->in_len -= consumed;
        }
}

static int read_input(connection *c) {
        if (c->in_cap - c->in_len < READ_CHUNK) {
                size_t ncap = c->in_len + READ_CHUNK;
                uint8_t *n = realloc(c->in, ncap);
                if (!n)
                        return -ENOMEM;
                c->in = n;
                c->in_cap = ncap;
        }
        union {
                struct cmsghdr h;
                char buf[CMSG_SPACE(sizeof(int) * CONN_MAX_RX_FDS)];
        } cm;
        struct iovec iov = { c->in + c->in_len, c->in_cap - c->in_len };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf, .msg_controllen = sizeof(cm.buf) };
        ssize_t n = recvmsg(c->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0)
                return errno == EAGAIN || errno == EINTR ? 0 : -errno;
        size_t n_rx = c->n_rx_fds;
        socket_cmsg_take_fds(&mh, c->rx_fds, &n_rx, CONN_MAX_RX_FDS, NULL);
        c->n_rx_fds = (unsigned) n_rx;
        if (mh.msg_flags & MSG_CTRUNC)
                log_notice("peer pid %d sent more file descriptors than accepted; extra ones closed", (int) c->peer.pid);
        if (n == 0)
                return -ECONNRESET;
        c->in_len += (size_t) n;
        return 1;
}

static void on_conn_poll(uv_poll_t *h, int status, int events);

static void connection_update_poll(connection *c) {
        if (c->state == CONNECTION_CLOSED || uv_is_closing((uv_handle_t *) &c->poll))
                return;
        if (c->state == CONNECTION_DRAINING && !c->out_head) {
                connection_close(c);
                return;
        }
        int ev = 0;
        if (c->state == CONNECTION_OPEN && c->out_bytes < OUT_HIGH_WATER && !c->m->shutting_down)
                ev |= UV_READABLE;
        if (c->out_head && !c->held)    /* held output is flushed by server_release_held() */
                ev |= UV_WRITABLE;
        if (ev == c->poll_events && c->poll_active)
                return;
        c->poll_events = ev;
        if (ev) {
                if (uv_poll_start(&c->poll, ev, on_conn_poll) < 0) {
                        connection_close(c);
                        return;
                }
                c->poll_active = true;
        } else {
                uv_poll_stop(&c->poll);
                c->poll_active = false;
        }
}

static void on_conn_poll(uv_poll_t *h, int status, int events) {
        connection *c = container_of(h, connection, poll);

        connection_ref(c);
        if (status < 0) {
                connection_close(c);
                goto out;
        }
        if (events & UV_WRITABLE) {
                if (flush_output(c) < 0) {
                        connection_close(c);
                        goto out;
                }
        }
        if ((events & UV_READABLE) && c->state == CONNECTION_OPEN) {
                int r = read_input(c);
                if (r < 0) {
                        connection_close(c);
                        goto out;
                }
                process_input(c);
        }
        connection_update_poll(c);
out:
        connection_unref(c);
}

int server_adopt(manager *m, int fd, sandbox_listener *l) {
        const char *sandbox_id = l ? l->sandbox_id : NULL;
        struct ucred cred;
        socklen_t len = sizeof(cred);

        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
                int r = -errno;
                log_error("SO_PEERCRED failed: %m");
                close(fd);
                return r;
        }
        connection *c = calloc(1, sizeof(*c));
        if (!c) {
                close(fd);
                return -ENOMEM;
        }
        c->m = m;
        c->fd = fd;
        c->refcount = 1;
        c->peer = cred;
        c->state = CONNECTION_OPEN;
        int r = sandbox_id && !(c->sandbox_id = strdup(sandbox_id)) ? -ENOMEM : uv_poll_init(m->loop, &c->poll, fd);
        if (r < 0) {
                /* The poll handle was never initialised: nothing to uv_close(). */
                free(c->sandbox_id);
                free(c);
                close(fd);
                return r;
        }
        proto_scanner_reset(&c->scan);
        list_add_tail(&m->connections, &c->link);
        m->n_connections++;
        if (l) {
                c->listener = l;
                l->n_connections++;
                m->n_sandbox_connections++;
        }
        /* Sandboxes draw on their own allowances, so they cannot crowd out the host's clients. */
        unsigned n_host = m->n_connections - m->n_sandbox_connections;

        if (cred.uid != getuid()) {
                m->n_refused_uid++;
                log_warning("refused connection from pid %d uid %u: not the daemon's user (uid %u)",
                            (int) cred.pid, cred.uid, getuid());
                send_packed_error(c, false, 0, RPC_E_UNAUTHORIZED, "peer uid differs from the daemon's");
                connection_drain(c);
        } else if (l && l->n_connections > m->config->max_connections_per_sandbox) {
                log_warning("refused connection from sandbox %s: MaxConnectionsPerSandbox=%u reached", l->sandbox_id,
                            m->config->max_connections_per_sandbox);
                send_packed_error(c, false, 0, RPC_E_LIMIT_EXCEEDED,
                                  "too many connections from this sandbox (MaxConnectionsPerSandbox)");
                connection_drain(c);
        } else if (!l && n_host > m->config->max_connections + REVOKE_RESERVE) {
                log_warning("refused connection from pid %d: MaxConnections=%u reached", (int) cred.pid,
                            m->config->max_connections);
                send_packed_error(c, false, 0, RPC_E_LIMIT_EXCEEDED, "too many connections (MaxConnections)");
                connection_drain(c);
        } else if (!l && n_host > m->config->max_connections) {
                /* An incident response must get through even when the host's clients are at the limit. */
                log_warning("connection from pid %d over MaxConnections=%u: only credentials.revoke is served on it",
                            (int) cred.pid, m->config->max_connections);
                c->revoke_only = true;
        }
        connection_update_poll(c);
        return 0;
}

static void on_listen_poll(uv_poll_t *h, int status, int events) {
        manager *m = container_of(h, manager, listen_poll);
        if (status < 0)
                return;
        for (int i = 0; i < 64; i++) {
                int fd = accept4(m->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) {
                        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                                log_warning("accept failed: %m");
                        /* EMFILE: leave it pending; the next poll retries. */
                        return;
                }
                (void) server_adopt(m, fd, NULL);
        }
}

static void on_sandbox_listen_poll(uv_poll_t *h, int status, int events) {
        sandbox_listener *l = container_of(h, sandbox_listener, poll);
        if (status < 0)
                return;
        for (int i = 0; i < 16; i++) {
                int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0)
                        return;
                (void) server_adopt(l->m, fd, l);
        }
}

int server_listen_sandbox(manager *m, const char *sandbox_id, const char *path, sandbox_listener **ret) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);
        sandbox_listener *l = calloc(1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        l->m = m;
        l->sandbox_id = strdup(sandbox_id);
        l->path = strdup(path);
        l->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int r = 0;
        if (!l->sandbox_id || !l->path || l->fd < 0)
                r = l->fd < 0 ? -errno : -ENOMEM;
        if (r == 0) {
                (void) unlink(path);
                mode_t old = umask(0177);
                if (bind(l->fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 || listen(l->fd, 16) < 0)
                        r = -errno;
                umask(old);
        }
        if (r == 0)
                r = uv_poll_init(m->loop, &l->poll, l->fd);
        if (r == 0)
                r = uv_poll_start(&l->poll, UV_READABLE, on_sandbox_listen_poll);
        if (r < 0) {
                safe_close(l->fd);
                free(l->sandbox_id);
                free(l->path);
                free(l);
                return r;
        }
        *ret = l;
        return 0;
}

static void on_sandbox_listener_closed(uv_handle_t *h) {
        sandbox_listener *l = container_of((uv_poll_t *) h, sandbox_listener, poll);
        safe_close(l->fd);
        free(l->sandbox_id);
        free(l->path);
        free(l);
}

void server_close_sandbox(sandbox_listener *l) {
        if (!l)
                return;
        (void) unlink(l->path);
        /* Live connections from the sandbox end too: it is gone. */
        list_head *i, *t;
        list_for_each_safe(i, t, &l->m->connections) {
                connection *c = container_of(i, connection, link);
                if (c->listener == l)
                        connection_close(c);
        }
        for (size_t k = 0; k < ELEMENTSOF(l->rate); k++)
                if (l->rate[k].suppressed > 0)
                        audit_suppressed(l->m, l->sandbox_id, &rpc_methods[k], &l->rate[k]);
        uv_close((uv_handle_t *) &l->poll, on_sandbox_listener_closed);
}

int server_listen(manager *m) {
        int r = uv_poll_init(m->loop, &m->listen_poll, m->listen_fd);
        if (r < 0)
                return r;
        r = uv_poll_start(&m->listen_poll, UV_READABLE, on_listen_poll);
        if (r < 0)
                return r;
        m->listening = true;
        return 0;
}

void server_stop_listening(manager *m) {
        if (!m->listening)
                return;
        m->listening = false;
        uv_close((uv_handle_t *) &m->listen_poll, NULL);
        /* Only the socket this process bound: the path may belong to someone
         * else by now (systemd's socket unit, another agentd). */
        struct stat st;
        if (!m->socket_activated && m->socket_bound && m->socket_path && lstat(m->socket_path, &st) == 0 &&
            st.st_dev == m->socket_dev && st.st_ino == m->socket_ino)
                unlink(m->socket_path);
        safe_close(m->listen_fd);
        m->listen_fd = -1;
}

/* Shutdown: every connection replies what is queued (best effort) and closes. */
void server_close_all(manager *m) {
        list_head *i, *t;
        list_for_each_safe(i, t, &m->connections) {
                connection *c = container_of(i, connection, link);
                connection_ref(c);
                (void) flush_output(c);
                connection_close(c);
                connection_unref(c);
        }
}
