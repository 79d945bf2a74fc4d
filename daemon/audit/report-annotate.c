/* What a report needs of the records the audit part writes itself: the sandbox
 * a host request is about and who sent it (sandbox/report.c reads them back).
 * Moved out of report.c so the audit part does not include the sandbox part. */
#include "report-annotate.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "macro.h"

/* The peer's executable and command name, as /proc says now (the pid was
 * checked by SO_PEERCRED on connect; these are context for a person). */
static void add_peer(json_object *ev, const connection *c) {
        char p[64], exe[PATH_MAX];
        if (!c || c->peer.pid <= 0)
                return;
        json_object_object_add(ev, "peer_pid", json_object_new_int(c->peer.pid));
        json_object_object_add(ev, "peer_uid", json_object_new_int((int) c->peer.uid));
        snprintf(p, sizeof(p), "/proc/%d/exe", (int) c->peer.pid);
        ssize_t n = readlink(p, exe, sizeof(exe) - 1);
        if (n > 0)
                json_object_object_add(ev, "peer_exe", json_object_new_string_len(exe, (int) n));
        snprintf(p, sizeof(p), "/proc/%d/comm", (int) c->peer.pid);
        _cleanup_close_ int fd = open(p, O_RDONLY | O_CLOEXEC);
        char comm[32];
        n = fd >= 0 ? read(fd, comm, sizeof(comm) - 1) : -1;
        if (n > 0) {
                if (comm[n - 1] == '\n')
                        n--;
                json_object_object_add(ev, "peer_comm", json_object_new_string_len(comm, (int) n));
        }
}

void report_annotate_peer(json_object *ev, const connection *c) {
        add_peer(ev, c);
}

/* The sandbox a host request is about, so its report finds the request. */
static const char *rpc_target(const rpc_ctx *ctx, size_t *ret_len) {
        const char *id = rpc_params_str(ctx->method, ctx->args, "id");
        if (!id)
                id = rpc_params_str(ctx->method, ctx->args, "sandbox");
        size_t n = id ? strlen(id) : 0;
        if (n == 0 || n > 64)
                return NULL;
        *ret_len = n;
        return id;
}

bool report_rpc_annotates(const rpc_ctx *ctx) {
        size_t n;
        return rpc_target(ctx, &n) != NULL;
}

void report_annotate_rpc(json_object *ev, const rpc_ctx *ctx) {
        size_t n = 0;
        const char *id = rpc_target(ctx, &n);
        if (!id)
                return;
        json_object_object_add(ev, "target", json_object_new_string_len(id, (int) n));
        if (!ctx->conn->sandbox_id)
                add_peer(ev, ctx->conn);
}
