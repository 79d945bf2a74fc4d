/* The state directory as one daemon's property: an exclusive lock taken
 * before anything in it is touched, and the start-up sweep of what a crashed
 * predecessor left behind. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

/* Takes an exclusive flock(2) on <dir>/agentd.lock and keeps it for the life
 * of the process (the fd is close-on-exec, so helpers do not inherit it).
 * Returns the fd, -EBUSY when another process holds it (*ret_holder: that
 * process's pid as it wrote it, or 0), or another negative errno. */
int statedir_lock(const char *dir, pid_t *ret_holder);

/* True for a sandbox id as agentd makes them: 12 lowercase hex digits (the
 * name of its directory under sandboxes/). */
bool statedir_sandbox_id_valid(const char *id);

/* rm -r of dir_fd/name, never following symlinks. */
int statedir_remove_tree(int dir_fd, const char *name);

/* Start-up sweep of a crashed predecessor's debris (call with the lock held,
 * before the records are loaded):
 * - sandbox directories without a record (meta.json): a spawn that the crash
 *   cut short; nothing can list, review or remove them, so they are removed;
 * - promote's temporary files (".agentd-promote.*", regular files or symlinks
 *   of ours) in each recorded sandbox's workspace, in the directories that its
 *   change layer touches (the only ones promote writes to).
 * Returns the number of entries removed; failures are logged, never fatal. */
unsigned statedir_sweep(const char *state_dir);
