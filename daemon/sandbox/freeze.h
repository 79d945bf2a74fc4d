/* Stopping every process of a sandbox, and listing them (freeze.c). */
#pragma once

#include <stddef.h>
#include <sys/types.h>

#include "sandbox.h"

/* Every process of the sandbox: its cgroup's list, else its pid namespace
 * found through /proc. *ret (caller frees) may be empty. */
int sandbox_pids(const sandbox *s, pid_t **ret, size_t *ret_n);

/* cgroup.freeze (confirmed through cgroup.events), else SIGSTOP to every
 * process until a scan finds all stopped; *ret_method: "cgroup" or "signal".
 * -ETIMEDOUT when that does not happen in time (the caller kills it). Changes
 * no state: sandbox_freeze() does. */
int freeze_processes(const sandbox *s, const char **ret_method);
