/* A small blocking msgpack-rpc client for agentctl. */
#pragma once

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct rpc_client {
        int fd;
        uint32_t next_msgid;
        msgpack_unpacker unpacker;
        /* Called for server notifications that arrive while waiting. */
        void (*on_notification)(const char *method, size_t len, const msgpack_object *params, void *userdata);
        void *userdata;
        bool interruptible;      /* return -EINTR from waits (to forward a signal) */
        int received_fds[4];
        unsigned n_received_fds;
} rpc_client;

typedef struct rpc_result {
        msgpack_unpacked unpacked;
        const msgpack_object *error;    /* [kind, "code: message"], or NULL */
        const msgpack_object *result;
        char code[64];
        char message[512];
} rpc_result;

/* Returns -errno if the daemon cannot be reached. */
int rpc_client_connect(rpc_client *c, const char *path);
void rpc_client_close(rpc_client *c);
/* params: a packed map (or NULL for []); fds are sent with the request.
 * Returns 0 with *res filled (error or result), or -errno on a transport failure. */
int rpc_client_call(rpc_client *c, const char *method, const char *params, size_t params_len,
                    const int *fds, unsigned n_fds, rpc_result *res);
/* After rpc_client_call returned -EINTR (interruptible): waits on for the same response. */
int rpc_client_resume(rpc_client *c, rpc_result *res);
/* Reads and dispatches notifications until fn returns true or the peer closes. */
int rpc_client_pump(rpc_client *c, int timeout_ms);
void rpc_result_done(rpc_result *res);
