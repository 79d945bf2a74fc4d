/* The workspace jobs (workspace-jobs.c): the diff / promote / discard walks of
 * a sandbox's change layer and an incident snapshot's change list, on libuv's
 * thread pool with a time limit. */
#pragma once

#include <stdbool.h>

#include "core/manager.h"
#include "core/server.h"

struct sandbox;

/* sandbox.diff / promote / discard of s (an overlay sandbox whose changes were
 * not discarded; promote and discard: one that has ended): the call is
 * deferred through ctx and answered when the walk ends. On failure err says
 * why (RPC_E_POLICY_DENIED while a conflicting walk runs). */
int workspace_job_diff(rpc_ctx *ctx, struct sandbox *s, bool patch, rpc_error *err);
int workspace_job_promote(rpc_ctx *ctx, struct sandbox *s, char **paths, bool include_hooks, rpc_error *err);
int workspace_job_discard(rpc_ctx *ctx, struct sandbox *s, rpc_error *err);
/* Lists the sandbox's workspace changes into the snapshot file on a worker
 * thread (the file is first written without them). */
int workspace_snapshot_queue(manager *m, struct sandbox *s, const char *snapshot_path, const char *snapshot_json);
/* Shutdown: running diff/promote/snapshot walks stop at their next check. */
void workspace_jobs_cancel(void);
