/* Blocking msgpack-rpc client: one request at a time, notifications handed
 * to a callback while waiting for the matching response. */
#include "rpc-client.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "macro.h"
#include "proto.h"
#include "socket.h"

int rpc_client_connect(rpc_client *c, const char *path) {
        memset(c, 0, sizeof(*c));
        c->fd = -1;
        c->next_msgid = 1;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        c->fd = fd;
        if (!msgpack_unpacker_init(&c->unpacker, 64 * 1024)) {
                close(fd);
                return -ENOMEM;
        }
        return 0;
}

void rpc_client_close(rpc_client *c) {
        if (c->fd >= 0) {
                close(c->fd);
                msgpack_unpacker_destroy(&c->unpacker);
        }
        for (unsigned i = 0; i < c->n_received_fds; i++)
                safe_close(c->received_fds[i]);
        c->n_received_fds = 0;
        c->fd = -1;
}

/* Reads more bytes into the unpacker, keeping fds that arrive. */
static int read_more(rpc_client *c, int timeout_ms) {
        if (timeout_ms >= 0) {
                struct pollfd p = { .fd = c->fd, .events = POLLIN };
                int r = poll(&p, 1, timeout_ms);
                if (r < 0)
                        return -errno;
                if (r == 0)
                        return -ETIMEDOUT;
        }
        if (msgpack_unpacker_buffer_capacity(&c->unpacker) < 4096 &&
            !msgpack_unpacker_reserve_buffer(&c->unpacker, 64 * 1024))
                return -ENOMEM;
        size_t n_fds = c->n_received_fds;
        /* EINTR goes up: the caller may have a signal to forward. */
        ssize_t n = socket_recv_fds(c->fd, msgpack_unpacker_buffer(&c->unpacker), msgpack_unpacker_buffer_capacity(&c->unpacker),
                                    c->received_fds, &n_fds, ELEMENTSOF(c->received_fds), 0, NULL);
        if (n < 0)
                return (int) n;
        c->n_received_fds = (unsigned) n_fds;
        if (n == 0)
                return -ECONNRESET;
        msgpack_unpacker_buffer_consumed(&c->unpacker, (size_t) n);
        return 1;
}

/* Waits for the response to msgid (or, with msgid 0, for any notification). */
static int wait_response(rpc_client *c, uint32_t msgid, rpc_result *res, int timeout_ms) {
        for (;;) {
                msgpack_unpacked u;
                msgpack_unpacked_init(&u);
                msgpack_unpack_return ur;
                while ((ur = msgpack_unpacker_next(&c->unpacker, &u)) == MSGPACK_UNPACK_SUCCESS) {
                        const msgpack_object *o = &u.data;
                        if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size < 3)
                                continue;
                        const msgpack_object *a = o->via.array.ptr;
                        if (a[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER && a[0].via.u64 == RPC_NOTIFICATION &&
                            a[1].type == MSGPACK_OBJECT_STR) {
                                const msgpack_object *params = NULL;
                                if (a[2].type == MSGPACK_OBJECT_ARRAY && a[2].via.array.size == 1)
                                        params = &a[2].via.array.ptr[0];
                                if (c->on_notification)
                                        c->on_notification(a[1].via.str.ptr, a[1].via.str.size, params, c->userdata);
                                if (msgid == 0) {
                                        msgpack_unpacked_destroy(&u);
                                        return 0;
                                }
                                continue;
                        }
                        if (o->via.array.size == 4 && a[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
                            a[0].via.u64 == RPC_RESPONSE && msgid != 0 &&
                            ((a[1].type == MSGPACK_OBJECT_POSITIVE_INTEGER && a[1].via.u64 == msgid) ||
                             a[1].type == MSGPACK_OBJECT_NIL)) {
                                res->unpacked = u;
                                res->error = a[2].type == MSGPACK_OBJECT_NIL ? NULL : &a[2];
                                res->result = &a[3];
                                res->code[0] = res->message[0] = 0;
                                if (res->error && rpc_error_parse(res->error, res->code, sizeof(res->code),
                                                                  res->message, sizeof(res->message)) < 0) {
                                        snprintf(res->code, sizeof(res->code), "internal");
                                        snprintf(res->message, sizeof(res->message), "agentd sent an error of unknown shape");
                                }
                                return 0;
                        }
                }
                msgpack_unpacked_destroy(&u);
                if (ur == MSGPACK_UNPACK_PARSE_ERROR)
                        return -EBADMSG;
                int r = read_more(c, timeout_ms);
                if (r == -EINTR && !c->interruptible)
                        continue;
                if (r < 0)
                        return r;
        }
}

int rpc_client_call(rpc_client *c, const char *method, const char *params, size_t params_len,
                    const int *fds, unsigned n_fds, rpc_result *res) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        uint32_t id = c->next_msgid++;

        memset(res, 0, sizeof(*res));
        msgpack_unpacked_init(&res->unpacked);
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        rpc_pack_request_header(&pk, id, method);
        if (params) {
                msgpack_pack_array(&pk, 1);
                msgpack_sbuffer_write(&sb, params, params_len);
        } else
                msgpack_pack_array(&pk, 0);
        int r = socket_send_all_fds(c->fd, sb.data, sb.size, fds, n_fds, 0);
        msgpack_sbuffer_destroy(&sb);
        msgpack_unpacked_destroy(&res->unpacked);
        if (r < 0) {
                /* The daemon may have answered and closed first (a refused
                 * peer): its reason is more useful than EPIPE. */
                if ((r == -EPIPE || r == -ECONNRESET) && wait_response(c, id, res, 1000) == 0)
                        return 0;
                return r;
        }
        return wait_response(c, id, res, -1);
}

int rpc_client_resume(rpc_client *c, rpc_result *res) {
        rpc_result_done(res);
        return wait_response(c, c->next_msgid - 1, res, -1);
}

int rpc_client_pump(rpc_client *c, int timeout_ms) {
        return wait_response(c, 0, NULL, timeout_ms);
}

void rpc_result_done(rpc_result *res) {
        msgpack_unpacked_destroy(&res->unpacked);
        memset(res, 0, sizeof(*res));
}
