/* cgroup v2: finding our delegated subtree, one child cgroup per sandbox,
 * limits when controllers are available, freeze and kill. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "core/manager.h"

/* The sandbox part's cgroup state (in its sandbox_part, sandbox-private.h). */
typedef struct cgroup_state {
        char *root;              /* our delegated cgroup dir, or NULL */
        char *status;            /* "ok", or "unavailable: why" */
        char *controllers;       /* enabled for sandboxes, e.g. "memory pids" */
} cgroup_state;

/* Sets the part's cgroup.root / status / controllers. Never fails the
 * daemon: without a usable cgroup, sandboxes run unconfined by cgroups and
 * status says why. */
void cgroup_setup(manager *m);
/* Frees what cgroup_setup() set (the cgroups themselves stay). */
void cgroup_teardown(manager *m);

/* Bits of cgroup_limits.unenforced. */
#define CGROUP_LIMIT_MEMORY 1u
#define CGROUP_LIMIT_PIDS 2u
#define CGROUP_LIMIT_CPU 4u

typedef struct cgroup_limits {
        uint64_t memory_max, tasks_max;
        unsigned cpu_weight, cpu_quota_percent;
        unsigned unenforced;     /* out: CGROUP_LIMIT_* asked for but not applied */
} cgroup_limits;

/* Creates <root>/sb-<id>, applies limits; returns an O_DIRECTORY fd and the path
 * (the caller owns both: the sandbox record frees the path, cgroup_remove()
 * removes the directory). *ret_note says which limits could not be applied
 * (caller frees). */
int cgroup_create_sandbox(manager *m, const char *id, cgroup_limits *lim, char **ret_path, int *ret_fd,
                          char **ret_note);
int cgroup_write(const char *dir, const char *file, const char *value);
int cgroup_kill(const char *dir);
int cgroup_freeze(const char *dir, bool freeze);
/* Waits until cgroup.events says "frozen 1" (the kernel freezes asynchronously):
 * 0, or -ETIMEDOUT after timeout_ms. */
int cgroup_wait_frozen(const char *dir, unsigned timeout_ms);
int cgroup_remove(const char *dir);
