/* The msgpack-rpc server: listening socket, connections, dispatch. */
#pragma once

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "manager.h"
#include "proto.h"

struct json_object;

#define CONN_MAX_RX_FDS 8

typedef enum connection_state {
        CONNECTION_OPEN,
        CONNECTION_DRAINING,     /* replying what is queued, then closing */
        CONNECTION_CLOSED,       /* fd closed, waiting for the last reference */
} connection_state;

typedef struct out_chunk {
        struct out_chunk *next;
        size_t len, off;
        int fds[3];
        unsigned n_fds;
        uint8_t data[];
} out_chunk;

struct connection {
        manager *m;
        list_head link;
        unsigned refcount;
        connection_state state;
        int fd;
        uv_poll_t poll;
        bool poll_active;
        int poll_events;
        struct ucred peer;

        uint8_t *in;
        size_t in_len, in_cap;
        proto_scanner scan;

        out_chunk *out_head, *out_tail;
        size_t out_bytes;

        int rx_fds[CONN_MAX_RX_FDS];
        unsigned n_rx_fds;

        unsigned in_flight;
        struct sandbox_listener *listener;  /* the broker socket it came in on; NULL for the host socket */
        bool revoke_only;         /* over MaxConnections, in the slots kept for credentials.revoke */
        char *sandbox_id;         /* set for connections on a sandbox's broker socket */
        bool subscribed;
        char *subscribe_sandbox;

        /* Replies queued behind audit records not yet written (group commit):
         * on server.c's held list, with a reference, until server_release_held(). */
        bool held;
        list_head held_link;
};

/* A request being answered; async handlers keep it (and so a connection
 * reference) until they reply. */
typedef struct rpc_call {
        connection *conn;
        uint32_t msgid;
        const rpc_method *method;
} rpc_call;

typedef struct rpc_ctx {
        manager *m;
        connection *conn;
        const rpc_message *msg;
        const void *args;         /* the decoded rpc_<ident>_params, for hooks run for every method */
        const rpc_method *method;
        msgpack_packer *pk;       /* pack exactly one result object into it */
        int reply_fds[3];         /* fds to send along with the reply */
        unsigned n_reply_fds;
        rpc_call *async;          /* set by rpc_ctx_defer() */
} rpc_ctx;

/* Handlers: rpc_<ident>(ctx, p, err) gets its parameters decoded into p (see
 * methods.def); returns 0 after packing the result, or a negative errno with err set. */
#define METHOD(name, ident, flags, params, cli, summary) \
        int rpc_##ident(rpc_ctx *ctx, const rpc_##ident##_params *p, rpc_error *err);
#include "methods.def"
#undef METHOD

/* What the server asks of the parts above it, which core/ does not include:
 * main.c sets them (server_set_hooks()) when it starts the parts, before the
 * socket is polled. Each gets the hooks' userdata; a NULL hook is a part that
 * is not there: nothing pending, nothing to record, nothing to tell. */
typedef struct server_hooks {
        void *userdata;
        /* Audit records not yet written: replies are held until server_release_held(). */
        bool (*records_pending)(void *userdata);
        /* 0 when a state-changing request may go ahead because its record can be
         * written; else a negative errno with err set. */
        int (*can_record)(void *userdata, agentd_error *err);
        /* The record of one request and how it went ("ok", "pending" or an error code). */
        void (*record_rpc)(void *userdata, const struct rpc_ctx *ctx, const char *outcome);
        /* An audit event (type, sandbox id or NULL); takes the reference to fields. */
        void (*record_event)(void *userdata, const char *type, const char *sandbox_id, struct json_object *fields);
        /* A connection is closing: whatever refers to it lets go. */
        void (*connection_closed)(void *userdata, connection *c);
} server_hooks;
void server_set_hooks(const server_hooks *hooks);

int server_listen(manager *m);
/* Serves an accepted (non-blocking) socket; l is the sandbox broker socket it
 * came in on, or NULL for the host socket. */
int server_adopt(manager *m, int fd, struct sandbox_listener *l);

/* Requests from one sandbox for one method: a token bucket, and how many were
 * refused since the last audit record saying so. */
typedef struct rate_bucket {
        uint64_t last_ms;
        double tokens;
        uint64_t suppressed;
        uint64_t suppressed_since_ms;
} rate_bucket;

/* A listening socket inside one sandbox (the credential broker): connections
 * on it speak the same protocol but may only call sandbox methods, and are
 * identified as that sandbox. Its connections come from a small allowance of
 * their own (MaxConnectionsPerSandbox), never from the host's. */
typedef struct sandbox_listener {
        manager *m;
        uv_poll_t poll;
        int fd;
        char *sandbox_id;
        char *path;
        unsigned n_connections;
        rate_bucket rate[_RPC_METHOD_MAX];
} sandbox_listener;
int server_listen_sandbox(manager *m, const char *sandbox_id, const char *path, sandbox_listener **ret);
void server_close_sandbox(sandbox_listener *l);
void server_stop_listening(manager *m);
void server_close_all(manager *m);

connection *connection_ref(connection *c);
void connection_unref(connection *c);
/* Takes an fd the client sent with its request (SCM_RIGHTS), or -1. */
int connection_take_fd(connection *c);
int connection_send(connection *c, const void *data, size_t len, const int *fds, unsigned n_fds);
/* Sends the replies held back for the audit batch (call after auditlog_commit()). */
void server_release_held(manager *m);

/* Reply later: returns a call object the handler keeps. */
rpc_call *rpc_ctx_defer(rpc_ctx *ctx);
/* pack(pk, userdata) packs the result; or pass an error. Frees the call. */
void rpc_call_reply(rpc_call *call, void (*pack)(msgpack_packer *pk, void *userdata), void *userdata);
/* The same, sending fds along (SCM_RIGHTS); they are closed here in any case. */
void rpc_call_reply_fds(rpc_call *call, void (*pack)(msgpack_packer *pk, void *userdata), void *userdata, const int *fds,
                        unsigned n_fds);
void rpc_call_error(rpc_call *call, rpc_error_code code, const char *message);
void rpc_call_free(rpc_call *call);

/* Notifications to every subscribed connection (sandbox filter: id or NULL). */
void server_broadcast(manager *m, const char *sandbox_id, const char *method,
                      void (*pack)(msgpack_packer *pk, void *userdata), void *userdata);
