/* Sandboxes as the daemon sees them: state, the helper process that built
 * the namespaces, captured output, waiters. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "core/manager.h"
#include "core/server.h"

typedef enum sandbox_state {
        SANDBOX_STARTING,
        SANDBOX_RUNNING,
        SANDBOX_FROZEN,
        SANDBOX_EXITED,
        SANDBOX_KILLED,
} sandbox_state;

const char *sandbox_state_to_string(sandbox_state s);

typedef struct output_stream {
        struct sandbox *sb;
        const char *name;        /* "stdout" / "stderr" */
        int pipe_fd;             /* read end from the sandbox, -1 at EOF */
        uv_poll_t pipe_poll;
        bool pipe_poll_init;
        int log_fd;              /* bounded copy in the state dir */
        uint64_t logged, dropped;
        int client_fd;           /* attached client's fd (non-blocking description), or -1 */
        bool client_is_socket;
        uv_poll_t client_poll;
        bool client_poll_init;
        uint8_t *pending;        /* bytes the client's fd did not take yet */
        size_t pending_len;
} output_stream;

typedef struct sandbox_waiter {
        struct sandbox_waiter *next;
        rpc_call *call;
        bool spawn;               /* a sandbox.spawn with wait: the spawn reply's fields too */
} sandbox_waiter;

typedef struct sandbox {
        manager *m;
        list_head link;
        unsigned refcount;
        char id[16];
        char *task;
        char *workspace;
        char *dir;                /* state dir */
        char *cgroup;             /* cgroup dir or NULL */
        char *limits_note;
        char *workspace_note;        /* files that will be read-only inside, and why (laptop.c), or NULL */
        char **argv;
        sandbox_state state;
        uint64_t started_at;      /* realtime ms */
        int64_t started_ns;       /* realtime ns: host files changed later are promote conflicts */
        int workspace_mode;       /* workspace_mode of the task at spawn */
        bool discarded;
        unsigned review_readers;  /* diff/snapshot walks running on a worker thread */
        bool review_writer;       /* a promote or discard running on a worker thread */
        bool review_frozen;       /* cgroup frozen by a diff of the running sandbox */
        bool from_disk;           /* loaded from the state dir after a restart */
        pid_t helper_pid;
        int helper_pidfd;
        uv_poll_t helper_poll;
        bool helper_poll_init;
        bool helper_reaped;
        pid_t init_pid;
        pid_t recorded_pid;       /* init_pid as its record says (loaded after a restart) */
        int init_pidfd;
        int status_fd;
        uv_poll_t status_poll;
        bool status_poll_init;
        char status_buf[1024];
        size_t status_len;
        bool have_exit;
        int exit_code, exit_signal;
        bool killed;              /* we ended it (kill, timeout, shutdown) */
        char *end_reason;
        char *setup_error;
        output_stream out[2];
        uv_timer_t timeout;
        bool timeout_init;
        uint64_t timeout_ms;
        rpc_call *spawn_call;     /* answered when the helper reports started/error */
        bool spawn_wait;          /* spawn_call asked wait: it becomes a waiter at "started" */
        bool tty;
        int tty_master;
        connection *owner;        /* attached client: the sandbox ends when it leaves */
        sandbox_waiter *waiters;
        unsigned open_handles;
        struct sandbox_creds *creds;            /* Vault tokens, when the task names policies */
        struct sandbox_listener *broker_listener;
        bool proxied;             /* registered with the egress proxy */
        const char *frozen_by;    /* "cgroup" or "signal" while frozen */
        struct stdin_relay *stdin_relay; /* attached: the caller's stdin, copied into the sandbox's */
        struct change_watch *change_watch; /* overlay: ChangeMax= on the upper dir */
} sandbox;

sandbox *sandbox_find(manager *m, const char *id);
/* References keep the record's memory alive (e.g. across a worker thread). */
sandbox *sandbox_ref(sandbox *s);
void sandbox_unref(sandbox *s);
bool sandbox_ended(const sandbox *s);
int sandbox_forget(manager *m, const char *id);
int sandbox_save_meta(sandbox *s);
/* sandbox.c is the only writer of a sandbox's state (set_state() there tells
 * subscribers); these are the ways to change it from outside. */
/* Stops every process of the sandbox (cgroup.freeze, else SIGSTOP to each,
 * confirmed): 0 only when it is stopped; then sets frozen_by, the state
 * FROZEN (an event) and meta.json. */
int sandbox_freeze(sandbox *s);
/* Ends it with SIGKILL (the cgroup's cgroup.kill, else the init, else the
 * helper), recording why: the state becomes KILLED when it is reaped.
 * -ESRCH when it has already ended. */
int sandbox_kill(sandbox *s, const char *reason);
int sandbox_signal(sandbox *s, int sig);
/* An alert about sandbox id (a limit reached, the automatic response): the
 * "alert" audit record (record: its fields, taken) and the "alert"
 * notification to subscribers: sandbox, rule, action, and count and window_s
 * when count > 0 (what was counted within the window). */
void sandbox_alert(manager *m, const char *id, struct json_object *record, const char *rule, const char *action, unsigned count,
                   unsigned window_s);
/* A review walk of its change layer (sandbox/workspace-jobs.c) starts: -EBUSY
 * while a promote or discard runs, or when a writer (promote, discard) would
 * start while diffs run; else counts it and, with freeze_if_running, freezes
 * a running sandbox's cgroup so the walk sees one state of it (best effort). */
int sandbox_review_begin(sandbox *s, bool writes, bool freeze_if_running);
/* It ended (or never started): the last reader thaws what it froze, if the
 * sandbox still runs (a revoke may have frozen it meanwhile). */
void sandbox_review_end(sandbox *s, bool writes);
/* sandbox.discard removed its change layer: recorded in meta.json. */
void sandbox_mark_discarded(sandbox *s);
void sandboxes_connection_closed(manager *m, connection *c);

/* Every process of the sandbox: its cgroup's list, else its pid namespace
 * found through /proc. *ret (caller frees) may be empty. (freeze.c) */
int sandbox_pids(const sandbox *s, pid_t **ret, size_t *ret_n);

/* The warm pool (pool.c). Empties every pool (reload, mount table change,
 * revoke --all, lockdown, stop). */
void pool_drain(manager *m, const char *why);
/* Warm sandboxes ready for a spawn (agentd.status "warm_sandboxes"). */
unsigned pool_count(void);
/* Per-task plans built and cached so far (plan-cache.c; agentd.status "plan_cache_builds"). */
unsigned plan_cache_builds(void);

/* The part's state (manager.sandboxes is opaque outside sandbox/). Safe
 * before sandboxes_init(): no sandboxes, nothing set up. */
/* Every sandbox in memory (list_for_each_safe; container_of(i, sandbox, link)). */
list_head *sandbox_list(manager *m);
unsigned sandbox_count(manager *m);            /* in sandbox_list() */
unsigned sandbox_count_live(manager *m);       /* processes not yet reaped */
const char *sandbox_cgroup_status(manager *m); /* "ok" or "unavailable: why"; NULL before start */
const char *sandbox_cgroup_controllers(manager *m); /* enabled for sandboxes, e.g. "memory pids"; or NULL */
/* An incident's lockdown (incident/revoke.c sets it): while set, spawns and
 * credentials for spawns are refused and the warm pool is not refilled. */
bool sandbox_locked_down(manager *m);
void sandbox_set_locked_down(manager *m, bool locked);

/* What the part tells the composition root (main.c sets it before sandboxes_init()). */
typedef struct sandbox_hooks {
        void *userdata;
        /* The sandbox ended (reaped, its credentials released, before meta.json
         * and its sandbox.exit record): what parts above hold for it goes. */
        void (*ended)(void *userdata, sandbox *s);
} sandbox_hooks;
void sandbox_set_hooks(const sandbox_hooks *hooks);

/* main.c: start (load the records, set up the cgroup), stop (end them all) and free. */
int sandboxes_init(manager *m);
void sandboxes_shutdown(manager *m);
void sandboxes_free(manager *m);

/* For the sandbox.* handlers (rpc/rpc-sandbox.c). */
/* sandbox.wait: call is answered (sandbox_pack_wait_result) when it ends; on
 * failure the call is not taken. */
int sandbox_add_waiter(sandbox *s, rpc_call *call);
void sandbox_pack_wait_result(msgpack_packer *pk, void *s);
/* The bounded copy of stdout (stream 0) or stderr (1) in its state dir. */
#define SANDBOX_LOG_READ_MAX (64 * 1024 * 1024)
int sandbox_read_log(const sandbox *s, int stream, char **ret, size_t *ret_len);
