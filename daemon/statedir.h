/* The state directory as one daemon's property: an exclusive lock taken
 * before anything in it is touched, and the start-up sweep of what a crashed
 * predecessor left behind. */
#pragma once

#include <sys/types.h>

#include "manager.h"

/* Takes an exclusive flock(2) on <dir>/agentd.lock and keeps it for the life
 * of the process (the fd is close-on-exec, so helpers do not inherit it).
 * Returns the fd, -EBUSY when another process holds it (*ret_holder: that
 * process's pid as it wrote it, or 0), or another negative errno. */
int statedir_lock(const char *dir, pid_t *ret_holder);
