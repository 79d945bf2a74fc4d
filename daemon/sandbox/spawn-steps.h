/* Starting a sandbox (spawn.c; the header is not spawn.h, which would shadow
 * <spawn.h>): the request's parameters as a struct, the part of a spawn that
 * depends only on the task (a spawn_plan, which a warm pool can prepare ahead
 * of time), and the per-spawn step list that builds and starts one. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/manager.h"
#include "core/server.h"
#include "policy.h"

/* One variable the caller passes (params "env"): kept as sent, checked against
 * the task's PassEnvironment= by the environment step. */
typedef struct spawn_env {
        char *name;
        char *value;
        size_t name_size, value_size; /* as sent (a NUL inside shortens the strings) */
} spawn_env;

/* sandbox.spawn's parameters, parsed once when the request comes in. */
typedef struct spawn_params {
        char *task;            /* NULL: "default" */
        char *workspace;       /* NULL: none given and the caller's cwd unknown */
        char **argv;           /* NULL: the task's Command= */
        spawn_env *env;
        size_t n_env;
        char *path;            /* the caller's PATH, or NULL */
        bool tty, attach;
        bool wait;             /* reply when it ends, with sandbox.wait's fields (sandbox.started first) */
        bool has_umask;
        uint64_t umask;
        int client_fds[3];     /* attach: the caller's stdin, stdout, stderr (SCM_RIGHTS), else -1 */
} spawn_params;

#define SPAWN_PARAMS_INIT { .client_fds = { -1, -1, -1 } }

void spawn_params_done(spawn_params *p);

/* What a spawn needs that depends only on the task policy and the daemon's
 * configuration: the seccomp program (a sealed memfd), the directories of
 * agentd's to hide under the task's paths, and the system mount plan (spec
 * entries: home, the task's ro/rw/hide paths, tmpfs sizes, nproc, hostname,
 * Landlock, workspace mode). */
typedef struct spawn_plan {
        bool seccomp;          /* false: the task said Seccomp=off */
        int bpf_fd;            /* sealed memfd with the BPF program, or -1 */
        char **agentd_hides;
        char *mounts;          /* NUL-separated key=value spec entries */
        size_t mounts_len;
} spawn_plan;

#define SPAWN_PLAN_INIT { .bpf_fd = -1 }

int spawn_plan_prepare(manager *m, const task_policy *p, spawn_plan *ret, rpc_error *err);
void spawn_plan_done(spawn_plan *plan);

/* sandbox.spawn: looks the task up once (its policy as it is now is what the
 * sandbox gets, even when Vault credentials are issued first), then runs the
 * step list. Takes the params (their fds are closed in any case). Returns 0
 * when the call was deferred (answered when the helper reports), or -errno
 * with err set. */
int sandbox_spawn(rpc_ctx *ctx, spawn_params *params, rpc_error *err);

/* At shutdown: the cached seccomp programs. */
void spawn_cache_free(void);
