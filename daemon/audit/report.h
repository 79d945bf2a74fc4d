/* sandbox.report and the evidence it needs: hooks that add who asked, the
 * environment's names and resource use to the audit records where they are
 * written, and the report written into each revoke snapshot. */
#pragma once

#include <json-c/json.h>
#include <msgpack.h>

#include "core/manager.h"
#include "policy.h"
#include "core/server.h"

/* rpc records: the sandbox a host request is about ("target") and who sent it. */
void report_annotate_rpc(json_object *ev, const rpc_ctx *ctx);
/* Whether report_annotate_rpc() adds anything to this request's record. */
bool report_rpc_annotates(const rpc_ctx *ctx);
/* sandbox.spawn records: the peer that asked, the names (never values) of the
 * environment the policy and the caller (env_names, NULL-terminated) set, tty. */
void report_annotate_spawn(json_object *ev, const sandbox *s, const char *const *env_names, const task_policy *p);
/* peer_pid, peer_uid, peer_exe, peer_comm of a connection. */
void report_annotate_peer(json_object *ev, const connection *c);
/* Resource use now (call before the cgroup is removed): CPU time, peak memory
 * and tasks where the cgroup has them, bytes in the change layer. New object. */
json_object *report_usage(const sandbox *s);
/* Writes <snapshot_dir>/report.json in the background (revoke snapshots). */
void report_snapshot(manager *m, const sandbox *s, const char *snapshot_dir);
