/* Entry points between main() and the daemon's parts. */
#pragma once

#include "manager.h"

struct rpc_call;
struct sandbox;

int daemon_reload(manager *m);
void daemon_maybe_finish(manager *m);
void daemon_finish(manager *m);

/* main.c: systemd's one-line status (STATUS=, notify-status.h), sent when it changes */
void daemon_status_notify(manager *m);

/* tasks.c */
int tasks_init(manager *m);
void tasks_reload(manager *m);
void tasks_free(manager *m);
size_t tasks_n_errors(manager *m);

/* sandbox.c */
int sandboxes_init(manager *m);
void sandboxes_shutdown(manager *m);
void sandboxes_free(manager *m);

/* revoke.c */
void lockdown_load(manager *m);
void lockdown_retry_persist(manager *m);   /* after a revoke --all whose marker could not be written */
int revoke_begin(manager *m, bool all, const char *sid, const char *task, bool freeze_only, struct rpc_call *call,
                 const char *trigger);

/* rpc-workspace.c: lists the sandbox's workspace changes into the snapshot
 * file on a worker thread (the file is first written without them). */
int workspace_snapshot_queue(manager *m, struct sandbox *s, const char *snapshot_path, const char *snapshot_json);
/* Shutdown: running diff/promote/snapshot walks stop at their next check. */
void workspace_jobs_cancel(void);

/* egress.c */
int egress_init(manager *m);
void egress_free(manager *m);
