/* The daemon's state: one manager per process, owned by main(). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <uv.h>

#include "config.h"
#include "proto.h"

typedef struct connection connection;
typedef struct sandbox sandbox;
typedef struct policy_registry policy_registry;
typedef struct broker broker;
typedef struct netproxy netproxy;

typedef struct list_head {
        struct list_head *prev, *next;
} list_head;

static inline void list_init(list_head *h) {
        h->prev = h->next = h;
}
static inline void list_add_tail(list_head *h, list_head *n) {
        n->prev = h->prev;
        n->next = h;
        h->prev->next = n;
        h->prev = n;
}
static inline void list_del(list_head *n) {
        n->prev->next = n->next;
        n->next->prev = n->prev;
        n->prev = n->next = n;
}
static inline bool list_empty(const list_head *h) {
        return h->next == h;
}
#define list_for_each_safe(pos, tmp, head) \
        for (pos = (head)->next, tmp = pos->next; pos != (head); pos = tmp, tmp = pos->next)

typedef struct manager {
        uv_loop_t *loop;
        agentd_config *config;
        char *config_path;
        char *home;
        char *socket_path;       /* NULL when socket-activated */
        bool socket_activated;
        bool socket_bound;       /* we bound socket_path: its inode is ours */
        dev_t socket_dev;
        ino_t socket_ino;
        int state_lock_fd;       /* flock on <state>/agentd.lock, held for life */
        int listen_fd;
        uv_poll_t listen_poll;
        bool listening;
        uv_signal_t sig_term, sig_int, sig_hup;
        uv_timer_t watchdog;
        bool watchdog_on;
        uv_timer_t shutdown_timer;
        bool shutting_down;
        uint64_t start_msec;
        proto_limits limits;

        list_head connections;
        unsigned n_connections;
        unsigned n_sandbox_connections;  /* of n_connections, those on sandboxes' broker sockets */
        uint64_t n_refused_uid;

        /* Task policies. */
        policy_registry *tasks;
        uv_fs_event_t *task_watch[3];
        unsigned n_task_watch;
        uv_timer_t task_reload_timer;
        char **task_dirs;

        /* The parts' state, each owned by its part (opaque here; each part's
         * header has what others may ask of it). */
        struct sandbox_part *sandboxes;   /* sandbox/: the records, counters, helper, cgroup, lockdown */
        broker *broker;                   /* broker/ */
        netproxy *proxy;                  /* egress/: the proxy (lib/netproxy.c), NULL when it could not start */
        struct approvals *approvals;      /* incident/approval.c */
} manager;

uint64_t now_msec(void);
uint64_t now_realtime_msec(void);
