/* sandbox.report and the evidence it needs: hooks that add who asked, the
 * environment's names and resource use to the audit records where they are
 * written, and the report written into each revoke snapshot. The annotations
 * of rpc records and peers are the audit part's (audit/report-annotate.h). */
#pragma once

#include <json-c/json.h>
#include <msgpack.h>

#include "core/manager.h"
#include "policy.h"
#include "core/server.h"

/* sandbox.spawn records: the peer that asked, the names (never values) of the
 * environment the policy and the caller (env_names, NULL-terminated) set, tty. */
void report_annotate_spawn(json_object *ev, const sandbox *s, const char *const *env_names, const task_policy *p);
/* Resource use now (call before the cgroup is removed): CPU time, peak memory
 * and tasks where the cgroup has them, bytes in the change layer. New object. */
json_object *report_usage(const sandbox *s);
/* Writes <snapshot_dir>/report.json in the background (revoke snapshots). */
void report_snapshot(manager *m, const sandbox *s, const char *snapshot_dir);
