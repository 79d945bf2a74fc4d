/* core/'s entry points: reload and finish, the STATUS= line, the task registry. */
#pragma once

#include "manager.h"

int daemon_reload(manager *m);
void daemon_maybe_finish(manager *m);
void daemon_finish(manager *m);

/* main.c: systemd's one-line status (STATUS=, notify-status.h), sent when it changes */
void daemon_status_notify(manager *m);

/* tasks.c */
/* fn runs each time a load replaces the registry (tasks_init, tasks_reload,
 * a change in a task directory), right after the swap. Core calls no part:
 * main.c, the composition root, sets it before tasks_init. */
typedef void (*tasks_reload_hook_fn)(manager *m, void *userdata);
void tasks_set_reload_hook(tasks_reload_hook_fn fn, void *userdata);
int tasks_init(manager *m);
void tasks_reload(manager *m);
void tasks_free(manager *m);
size_t tasks_n_errors(manager *m);

/* The parts' own entry points are in their public headers: sandbox/sandbox.h,
 * incident/revoke.h, egress/egress.h, sandbox/workspace-jobs.h. */
