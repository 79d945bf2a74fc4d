/* Warm sandboxes ([Pool] WarmSandboxes=, WarmIdleSec=): per recently spawned
 * task, up to N hands started ahead with only the task's part of the spec
 * (helper/warm.c), each waiting on its control socket. A spawn takes one,
 * and its attach message carries everything that is the spawn's own (the
 * workspace, sockets, environment, argv, stdio, status socket). A warm
 * sandbox serves one spawn; the pool refills off the spawn's path; a reload,
 * a change of the mount table, revoke --all and lockdown empty it. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#include "core/manager.h"
#include "policy.h"
#include "sandbox.h"

/* A warm sandbox, taken out of the pool for one spawn. */
typedef struct warm_sandbox {
        pid_t pid;           /* the hands: our child */
        int pidfd;
        int control;         /* our end of its control socket */
        int cg_fd;           /* its cgroup dir, or -1 */
        char *cgroup;        /* its cgroup path, or NULL */
        char *limits_note;
        unsigned unenforced;  /* CGROUP_LIMIT_* its cgroup could not apply */
        struct warm_entry *entry;
} warm_sandbox;

int pool_init(manager *m);
void pool_free(manager *m);

/* A ready warm sandbox of task p as it is now, or NULL (off, none ready, or
 * the task changed). The caller owns it: pool_attach, or warm_sandbox_drop. */
warm_sandbox *pool_take(manager *m, const task_policy *p);

/* Sends the attach message: fds 0-2, the spawn's spec memfd, its status
 * socket. On success the hands and its pidfd, cgroup and cg_fd are the
 * caller's (taken out of w), and w's control socket is closed. */
int pool_attach(warm_sandbox *w, const int stdio[3], int spec_fd, int status_fd);

/* Ends an unused warm sandbox (closing its control socket ends it; the pool
 * reaps it) and frees w. Accepts NULL. */
void warm_sandbox_drop(manager *m, warm_sandbox *w);

/* Fills the task's pool up to WarmSandboxes= on a later loop iteration (the
 * task as the registry has it then). Called when a sandbox reports its exit,
 * after that iteration's replies; and by a spawn that left its task's pool
 * empty, so a burst does not starve. */
void pool_refill_later(manager *m, const char *task);

/* Warm sandboxes of the task, ready or getting warm. */
unsigned pool_count_task(const char *task);

/* pool_drain and pool_count, which other parts call, are in sandbox.h. */

/* spawn.c: starts a warm hands for task p (its cgroup sb-<id>) from the
 * task's spawn_plan, filling w's pid, pidfd, control, cgroup, cg_fd,
 * limits_note and unenforced. */
int spawn_start_warm(manager *m, const task_policy *p, const char *id, warm_sandbox *w);
void spawn_make_id(char out[16]);
