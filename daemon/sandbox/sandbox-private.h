/* What spawn.c needs of sandbox.c's internals: the record's allocation, the
 * helper's start (zygote, else posix_spawn) and the loop wiring of a started
 * sandbox; the part's state. Only daemon/sandbox/ includes this. */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "cgroup.h"
#include "sandbox.h"

/* The sandbox part's state (manager.sandboxes; opaque outside sandbox/:
 * sandbox.h has the accessors). */
typedef struct sandbox_part {
        list_head list;          /* the sandboxes in memory (ended ones: the newest, the rest load on demand) */
        unsigned n;              /* in list */
        unsigned n_live;         /* processes not yet reaped */
        char *helper;            /* agentd-sandbox */
        cgroup_state cgroup;
        bool locked_down;        /* an incident's lockdown: no spawns (incident/revoke.c sets it) */
} sandbox_part;

sandbox *sandbox_alloc(manager *m);
void sandbox_free(sandbox *s);

/* Starts the helper with src[i] at fd i (through the zygote; posix_spawn when
 * there is none). */
int sandbox_helper_start(manager *m, const char *helper, const int *src, int n, pid_t *ret_pid);
int sandbox_pidfd_open(pid_t pid);
/* The same for a warm sandbox (helper/warm.c): ZYGOTE_WARM, or --warm. */
int sandbox_helper_start_warm(manager *m, const char *helper, const int *src, int n, pid_t *ret_pid);

/* Output through a new open description of the caller's fd; refused (set err)
 * when that cannot be opened again (a pipe another uid made). */
int sandbox_client_fd_check(int fd, const char *name, rpc_error *err);

/* Watches the helper's pidfd and status socket; then each output pipe
 * (pipe_fds[i], -1 with a tty) with the attached client's fd (-1: none). */
void sandbox_watch(sandbox *s, const int pipe_fds[2], int client_fds[2]);

/* The ChangeMax= callback (change-watch.h) of a sandbox. */
void sandbox_on_change_max(void *userdata, uint64_t used, uint64_t limit);
