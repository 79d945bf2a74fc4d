/* The composition root's steps (compose.c), in the order main() takes them.
 * Only main.c and the unit-test fixture (tests/unit/fixture.c) include this:
 * it is the one header that stands for every part. Each returns 0 or -errno,
 * having logged why. */
#pragma once

#include "manager.h"

/* Empty lists, no fds, default limits. */
void daemon_manager_init(manager *m);
/* $HOME (canonical) and the configuration file (--config, else the default). */
int daemon_load_config(manager *m, const char *arg_config);
/* The task registry, with the reload hook that drains the warm pool. */
int daemon_start_tasks(manager *m);
/* Creates, canonicalises and locks the state directory (one daemon per directory). */
int daemon_setup_state_directory(manager *m);
/* The parts in dependency order: sandboxes, telemetry, the state sweep, the
 * audit log, retention, lockdown, egress, the broker; then the server's hooks. */
int daemon_start_parts(manager *m);
/* Stops taking work: listening, sandboxes, workspace jobs, the broker; the
 * loop ends once the last sandbox is reaped (or after 5 s). */
void daemon_begin_shutdown(manager *m, const char *why);
/* After the loop closed: the configuration and the paths. */
void daemon_release(manager *m);
