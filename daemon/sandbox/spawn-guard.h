/* Checks on what a spawn's caller chooses: where the workspace may be. */
#pragma once

#include "core/manager.h"
#include "policy.h"
#include "core/server.h"

/* agentd's own places the guards compare against (NULL: not set), and the
 * one setting they apply; spawn_guard_of() takes them from the manager. */
typedef struct spawn_guard {
        const char *home;
        const char *runtime_dir;      /* $XDG_RUNTIME_DIR */
        const char *socket_path;      /* files: their directories are protected */
        const char *config_path;
        const char *task_dir;
        const char *state_dir;
        bool require_limits;          /* [Daemon] RequireLimits= */
        /* The workspace check's realpath() of those directories (NULL: realpath;
         * spawn.c: plan_cache_resolve, which remembers them while unchanged). */
        char *(*resolve)(const char *path);
} spawn_guard;
spawn_guard spawn_guard_of(const manager *m);

/* Resolves `requested` (absolute; symlinks followed once, through an O_PATH
 * descriptor) and refuses, with policy_denied naming the rule, a workspace
 * that is /, on a kernel pseudo-filesystem, in /dev, the home directory or an
 * ancestor of it, or the same as, inside or above agentd's runtime, socket,
 * config, task or state directory. *ret_path (caller frees): the resolved path. */
int spawn_workspace_resolve(manager *m, const char *requested, char **ret_path, rpc_error *err);
int spawn_guard_workspace(const spawn_guard *g, const char *requested, char **ret_path, rpc_error *err);

/* CGROUP_LIMIT_* bits of the limits the task sets (that need a cgroup to hold). */
unsigned task_limits_asked(const task_policy *p);
/* `unenforced`: limits asked but not applied; no_cgroup_why: NULL when the
 * sandbox has a cgroup (then *note is the cgroup's own), else why not (then
 * *note is rewritten to say what holds). With [Daemon] RequireLimits=yes a
 * limit that does not hold (TasksMax always does, by RLIMIT_NPROC) fails with
 * -EOPNOTSUPP and err (backend_unavailable) saying which and why. */
int spawn_limits_check(manager *m, const task_policy *p, unsigned unenforced, const char *no_cgroup_why, char **note,
                       agentd_error *err);
int spawn_guard_limits(const spawn_guard *g, const task_policy *p, unsigned unenforced, const char *no_cgroup_why,
                       char **note, agentd_error *err);

/* The task's ReadOnlyPaths=/WritablePaths= against the same directories of
 * agentd's (runtime, socket, state; config for writable ones): one that is or
 * is inside such a directory is refused (policy_denied); for one above it,
 * *ret_hide lists the directories to mask inside (caller frees). */
int spawn_task_paths_check(manager *m, const task_policy *p, char ***ret_hide, rpc_error *err);
int spawn_guard_task_paths(const spawn_guard *g, const task_policy *p, char ***ret_hide, rpc_error *err);
