/* Entry points between main() and the daemon's parts. */
#pragma once

#include "manager.h"

int daemon_reload(manager *m);
void daemon_maybe_finish(manager *m);
void daemon_finish(manager *m);

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
