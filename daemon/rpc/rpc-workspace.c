/* sandbox.diff / sandbox.promote / sandbox.discard: reviewing what a sandbox
 * changed before anything reaches the real workspace. The handlers check the
 * request; the walks run as workspace jobs (sandbox/workspace-jobs.c) on the
 * thread pool, which answer the call. */
#include <errno.h>
#include <string.h>

#include "core/server.h"
#include "policy.h"
#include "sandbox/sandbox.h"
#include "sandbox/workspace-jobs.h"

static sandbox *lookup_layer(rpc_ctx *ctx, const char *id, rpc_error *err) {
        sandbox *s = sandbox_find(ctx->m, id);
        if (!s) {
                rpc_error_set(err, RPC_E_NOT_FOUND, "no sandbox with id '%.64s'", id);
                return NULL;
        }
        if (s->workspace_mode != WORKSPACE_OVERLAY) {
                rpc_error_set(err, RPC_E_NOT_FOUND, "sandbox %s has no change layer (its workspace was not copy-on-write)", s->id);
                return NULL;
        }
        if (s->discarded) {
                rpc_error_set(err, RPC_E_NOT_FOUND, "sandbox %s: its changes were discarded", s->id);
                return NULL;
        }
        return s;
}

/* lookup_layer() of a sandbox that has ended: -ENOENT, or -EBUSY with
 * `advice` (what to do first) while it still runs. */
static int lookup_ended_layer(rpc_ctx *ctx, const char *id, const char *advice, sandbox **ret, rpc_error *err) {
        sandbox *s = lookup_layer(ctx, id, err);
        if (!s)
                return -ENOENT;
        if (!sandbox_ended(s)) {
                rpc_error_set(err, RPC_E_POLICY_DENIED, "sandbox %s is still running: %s", s->id, advice);
                return -EBUSY;
        }
        *ret = s;
        return 0;
}

int rpc_sandbox_diff(rpc_ctx *ctx, const rpc_sandbox_diff_params *p, rpc_error *err) {
        sandbox *s = lookup_layer(ctx, p->id, err);
        if (!s)
                return -ENOENT;
        return workspace_job_diff(ctx, s, p->patch, err);
}

int rpc_sandbox_promote(rpc_ctx *ctx, const rpc_sandbox_promote_params *p, rpc_error *err) {
        sandbox *s;
        int r = lookup_ended_layer(ctx, p->id, "wait for it or kill it before promoting", &s, err);
        if (r < 0)
                return r;
        char **paths = p->paths;
        for (size_t i = 0; paths && paths[i]; i++)
                if (paths[i][0] == '/' || strstr(paths[i], "..") || !paths[i][0]) {
                        rpc_error_set(err, RPC_E_INVALID_PARAMS, "paths are relative to the workspace, without '..': '%.200s'", paths[i]);
                        return -EINVAL;
                }
        return workspace_job_promote(ctx, s, paths, p->include_hooks, err);
}

int rpc_sandbox_discard(rpc_ctx *ctx, const rpc_sandbox_discard_params *p, rpc_error *err) {
        sandbox *s;
        int r = lookup_ended_layer(ctx, p->id, "kill it before discarding its changes", &s, err);
        if (r < 0)
                return r;
        return workspace_job_discard(ctx, s, err);
}
