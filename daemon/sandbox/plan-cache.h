/* The spawn work that depends only on the task and this machine, done once
 * per task instead of per spawn: the task's spawn_plan (the task-path check,
 * the seccomp program in one sealed read-only memfd shared by every spawn,
 * the mount plan), the toolchain and cache trees this machine has, and the
 * canonical spelling of agentd's own directories for the workspace check.
 *
 * What these probes looked at can change, so an entry holds only while
 * nothing it depends on did: every directory on the way to a probed path (as
 * spelled, as resolved, and through each symlink hop) is watched with inotify from before the probes
 * run, and any event in one, any change of agentd's mount table, a reload of
 * the tasks (pool_drain) or a watch that cannot be added drops the whole
 * cache. plan_cache_check() reads both watches without waiting, so a change
 * made before a spawn request is always seen by that spawn. On a network or
 * FUSE filesystem (inotify does not see another machine's changes) nothing is
 * cached. The credential files (laptop.c's hide list) are never cached: they
 * are probed on every spawn. */
#pragma once

#include <stdbool.h>

#include "core/manager.h"
#include "policy.h"
#include "spawn-steps.h"

typedef struct plan_cached {
        spawn_plan plan;
        char **ro, **cow;    /* laptop.c's toolchain trees and caches for the task */
} plan_cached;

/* Drops everything if a watched directory or the mount table changed since
 * the last call. Call once at the start of each spawn (and warm-up). */
void plan_cache_check(manager *m);

/* The cached entry of p (the registry's current policy object), or NULL. */
const plan_cached *plan_cache_find(manager *m, const task_policy *p);

/* Starts watching what a plan of p probes, before the probes run. 0: the
 * result may be stored with plan_cache_store(); <0: it may not (p is not the
 * registry's, a watch failed, a remote filesystem). never: as laptop.c's. */
int plan_cache_watch(manager *m, const task_policy *p, const char *const *never);

/* Stores p's plan (taken: *plan is reset) and copies of ro/cow; NULL when
 * out of memory (then *plan is untouched). */
const plan_cached *plan_cache_store(manager *m, const task_policy *p, spawn_plan *plan, char *const *ro, char *const *cow);

/* realpath() of one of agentd's own directories (spawn_guard.resolve):
 * remembered while its directories are unchanged. Caller frees. */
char *plan_cache_resolve(const char *path);

/* Drops every entry (reload, mount change, revoke --all, stop). */
void plan_cache_clear(void);
void plan_cache_free(void);

/* plan_cache_builds() (entries stored so far) is declared in sandbox.h. */
