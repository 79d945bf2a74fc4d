/* Stopping every process of a sandbox, and listing them (freeze.c). */
#pragma once

#include <stddef.h>
#include <sys/types.h>

#include "sandbox.h"

/* sandbox_pids, which incident/ calls, is in sandbox.h. */

/* cgroup.freeze (confirmed through cgroup.events), else SIGSTOP to every
 * process until a scan finds all stopped; *ret_method: "cgroup" or "signal".
 * -ETIMEDOUT when that does not happen in time (the caller kills it). Changes
 * no state: sandbox_freeze() does. */
int freeze_processes(const sandbox *s, const char **ret_method);
