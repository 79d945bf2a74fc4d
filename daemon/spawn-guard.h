/* Checks on what a spawn's caller chooses: where the workspace may be. */
#pragma once

#include "manager.h"
#include "server.h"

/* Resolves `requested` (absolute; symlinks followed once, through an O_PATH
 * descriptor) and refuses, with policy_denied naming the rule, a workspace
 * that is /, on a kernel pseudo-filesystem, in /dev, the home directory or an
 * ancestor of it, or the same as, inside or above agentd's runtime, socket,
 * config, task or state directory. *ret_path (caller frees): the resolved path. */
int spawn_workspace_resolve(manager *m, const char *requested, char **ret_path, rpc_error *err);
