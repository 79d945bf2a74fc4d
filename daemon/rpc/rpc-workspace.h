/* What rpc-workspace.c offers outside the workspace.* handlers. */
#pragma once

#include "core/manager.h"

struct sandbox;

/* Lists the sandbox's workspace changes into the snapshot file on a worker
 * thread (the file is first written without them). */
int workspace_snapshot_queue(manager *m, struct sandbox *s, const char *snapshot_path, const char *snapshot_json);
/* Shutdown: running diff/promote/snapshot walks stop at their next check. */
void workspace_jobs_cancel(void);
