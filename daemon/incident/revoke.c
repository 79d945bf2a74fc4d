/* Incident response: credentials.revoke and agentd.unlock. In order: freeze
 * the affected sandboxes (cgroup.freeze, or SIGSTOP to every process of the
 * sandbox when there is no cgroup; either confirmed, and a sandbox that cannot
 * be frozen is killed and listed in the reply's failures), revoke their tokens
 * at Vault (the broker then never hands them a token again) (for --all
 * the broker's session, which Vault cascades to every child), save a
 * forensic snapshot per sandbox, kill them unless freeze_only, and for --all
 * lock new spawns out until agentd.unlock — a lock that survives restarts. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "approval.h"
#include "audit/auditlog.h"
#include "broker/broker.h"
#include "core/daemon.h"
#include "revoke.h"
#include "sandbox/workspace-jobs.h"
#include "file.h"
#include "core/log.h"
#include "macro.h"
#include "policy.h"
#include "sandbox/report.h"
#include "sandbox/sandbox.h"
#include "core/server.h"

#define REVOKE_DEADLINE_MS 3000

static char *lockdown_path(manager *m) {
        char *p = NULL;
        if (asprintf(&p, "%s/lockdown", m->config->state_directory) < 0)
                return NULL;
        return p;
}

void lockdown_load(manager *m) {
        _cleanup_free_ char *p = lockdown_path(m);
        if (p && access(p, F_OK) == 0) {
                sandbox_set_locked_down(m, true);
                log_warning("lockdown is in force (since an earlier 'agentctl revoke --all'): spawning is refused until 'agentctl unlock'");
        }
}

/* The marker that keeps a lockdown across restarts, durable before we say it
 * is: written to a temp file, fsync'd, renamed, and the directory fsync'd. */
static int lockdown_persist(manager *m) {
        _cleanup_free_ char *p = lockdown_path(m);
        if (!p)
                return -ENOMEM;
        static const char text[] = "locked by credentials.revoke all\n";
        return write_file_replace(p, text, sizeof(text) - 1, WRITE_FILE_SYNC_DIR);
}

/* A lockdown in force whose marker could not be written: retried until it is. */
static bool lockdown_unpersisted;

void lockdown_retry_persist(manager *m) {
        if (!sandbox_locked_down(m) || !lockdown_unpersisted || lockdown_persist(m) < 0)
                return;
        lockdown_unpersisted = false;
        log_notice("lockdown: the marker is written now; the lockdown survives a restart");
        json_object *ev = json_object_new_object();
        json_object_object_add(ev, "persisted", json_object_new_boolean(true));
        audit_event(m, "lockdown", NULL, ev);
}

static char *read_small(const char *path, size_t max) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return NULL;
        char *b = malloc(max + 1);
        ssize_t n = b ? read(fd, b, max) : -1;
        close(fd);
        if (n < 0) {
                free(b);
                return NULL;
        }
        for (ssize_t i = 0; i < n; i++)
                if (b[i] == 0)
                        b[i] = ' ';
        b[n] = 0;
        return b;
}

/* Evidence while the processes are frozen: who runs what, with which files
 * and sockets open, what changed in the workspace, and what was recorded. */
static char *sandbox_snapshot(manager *m, sandbox *s, const char *stamp) {
        char dir[PATH_MAX], path[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s/snapshots", s->dir);
        (void) mkdir(dir, 0700);
        snprintf(dir, sizeof(dir), "%s/snapshots/%s", s->dir, stamp);
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return NULL;

        json_object *procs = json_object_new_array();
        pid_t *v = NULL;
        size_t n = 0;
        if (sandbox_pids(s, &v, &n) == 0)
                for (size_t i = 0; i < n; i++) {
                        json_object *p = json_object_new_object();
                        char pp[64];
                        json_object_object_add(p, "pid", json_object_new_int(v[i]));
                        snprintf(pp, sizeof(pp), "/proc/%d/cmdline", (int) v[i]);
                        _cleanup_free_ char *cmd = read_small(pp, 4096);
                        json_object_object_add(p, "cmdline", json_object_new_string(cmd ? cmd : ""));
                        snprintf(pp, sizeof(pp), "/proc/%d/stat", (int) v[i]);
                        _cleanup_free_ char *st = read_small(pp, 1024);
                        json_object_object_add(p, "stat", json_object_new_string(st ? st : ""));
                        snprintf(pp, sizeof(pp), "/proc/%d/exe", (int) v[i]);
                        char exe[PATH_MAX];
                        ssize_t el = readlink(pp, exe, sizeof(exe) - 1);
                        json_object_object_add(p, "exe", el > 0 ? json_object_new_string_len(exe, (int) el) : NULL);
                        json_object *fds = json_object_new_object();
                        snprintf(pp, sizeof(pp), "/proc/%d/fd", (int) v[i]);
                        DIR *d = opendir(pp);
                        struct dirent *de;
                        while (d && (de = readdir(d))) {
                                if (de->d_name[0] == '.')
                                        continue;
                                char lp[PATH_MAX], target[PATH_MAX];
                                snprintf(lp, sizeof(lp), "%s/%s", pp, de->d_name);
                                ssize_t tl = readlink(lp, target, sizeof(target) - 1);
                                if (tl > 0)
                                        json_object_object_add(fds, de->d_name, json_object_new_string_len(target, (int) tl));
                        }
                        if (d)
                                closedir(d);
                        json_object_object_add(p, "fds", fds);
                        json_object_array_add(procs, p);
                }
        free(v);
        json_object *snap = json_object_new_object();
        json_object_object_add(snap, "sandbox", json_object_new_string(s->id));
        json_object_object_add(snap, "task", json_object_new_string(s->task));
        json_object_object_add(snap, "processes", procs);
        /* Sockets as the sandbox's network namespace sees them. */
        static const char *const nets[] = { "tcp", "tcp6", "udp", "udp6", "unix" };
        json_object *net = json_object_new_object();
        for (size_t i = 0; s->init_pid > 0 && i < ELEMENTSOF(nets); i++) {
                char pp[64];
                snprintf(pp, sizeof(pp), "/proc/%d/net/%s", (int) s->init_pid, nets[i]);
                _cleanup_free_ char *t = read_small(pp, 65536);
                if (t)
                        json_object_object_add(net, nets[i], json_object_new_string(t));
        }
        json_object_object_add(snap, "sockets", net);
        json_object_object_add(snap, "egress", json_object_new_string("egress decisions are in the audit log (type egress)"));
        snprintf(path, sizeof(path), "%s/snapshot.json", dir);
        const char *text = json_object_to_json_string_ext(snap, JSON_C_TO_STRING_PRETTY);
        (void) write_file(path, text, strlen(text), 0600, 0);
        /* What changed in the workspace: walked off the loop, added to the file when done. */
        (void) workspace_snapshot_queue(m, s, path, text);
        json_object_put(snap);
        /* The last audit records of this sandbox: a walk of the whole log, off the loop. */
        snprintf(path, sizeof(path), "%s/audit-tail.json", dir);
        (void) auditlog_tail_queue(m, s->id, 200, path);
        return strdup(dir);
}

typedef struct revoke_op {
        rpc_call *call;
        manager *m;
        bool all, freeze_only;
        unsigned frozen, killed, confirmed, pending;
        char **ids;               /* sandboxes acted on */
        uint64_t t0_us, frozen_us, tokens_us;
        char **snapshots;
        size_t n_ids;
        bool by_cgroup, by_signal;  /* how the frozen ones were stopped */
        char **failed_ids, **failures; /* sandboxes that could not be frozen, and why */
        size_t n_failures;
        int lockdown_error;       /* the marker could not be made durable: the reply is an error */
} revoke_op;

static const char *freeze_method(const revoke_op *op) {
        if (op->by_cgroup && op->by_signal)
                return "cgroup+signal";
        return op->by_cgroup ? "cgroup" : op->by_signal ? "signal" : "none";
}

static uint64_t now_us(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}

static void pack_revoke(msgpack_packer *pk, void *userdata) {
        revoke_op *op = userdata;
        msgpack_pack_map(pk, 10);
        /* How long each step took, for the incident record and the benchmark. */
        mp_pack_cstr(pk, "timing_us");
        msgpack_pack_map(pk, 3);
        mp_pack_kv_u64(pk, "frozen", op->frozen_us - op->t0_us);
        mp_pack_kv_u64(pk, "tokens", op->tokens_us - op->t0_us);
        mp_pack_kv_u64(pk, "total", now_us() - op->t0_us);
        mp_pack_kv_u64(pk, "frozen", op->frozen);
        mp_pack_kv_u64(pk, "killed", op->killed);
        mp_pack_kv_u64(pk, "tokens_revoked", op->confirmed);
        mp_pack_kv_u64(pk, "tokens_pending", op->pending);
        mp_pack_cstr(pk, "snapshots");
        mp_pack_strv(pk, op->snapshots);
        mp_pack_cstr(pk, "sandboxes");
        mp_pack_strv(pk, op->ids);
        mp_pack_kv_bool(pk, "locked_down", sandbox_locked_down(op->m));
        mp_pack_kv_str(pk, "freeze_method", freeze_method(op));
        mp_pack_cstr(pk, "failures");
        msgpack_pack_array(pk, op->n_failures);
        for (size_t i = 0; i < op->n_failures; i++) {
                msgpack_pack_map(pk, 2);
                mp_pack_kv_str(pk, "sandbox", op->failed_ids[i]);
                mp_pack_kv_str(pk, "error", op->failures[i]);
        }
}

/* A sandbox that could not be frozen is killed instead (fail closed), and the reply says so. */
static void freeze_failed(revoke_op *op, sandbox *s, int r) {
        char why[256];
        int k = sandbox_kill(s, "killed by an incident revocation (it could not be frozen)");
        if (k == 0)
                op->killed++;
        snprintf(why, sizeof(why), "could not be frozen (%s); %s", strerror(-r),
                 k == 0 ? "killed instead" : "killing it failed too");
        log_warning("revoke: sandbox %s %s", s->id, why);
        if (op->failures && op->failed_ids) {
                op->failed_ids[op->n_failures] = strdup(s->id);
                op->failures[op->n_failures] = strdup(why);
                if (op->failed_ids[op->n_failures] && op->failures[op->n_failures])
                        op->n_failures++;
        }
}

static void revoke_op_free(revoke_op *op) {
        for (size_t i = 0; i < op->n_failures; i++) {
                free(op->failed_ids[i]);
                free(op->failures[i]);
        }
        free(op->failed_ids);
        free(op->failures);
        strv_free(op->ids);
        strv_free(op->snapshots);
        free(op);
}

static void revoke_finish(unsigned confirmed, unsigned pending, void *userdata) {
        revoke_op *op = userdata;
        manager *m = op->m;
        op->tokens_us = now_us();
        op->confirmed = confirmed;
        op->pending = pending;
        /* (3) evidence, while everything is still frozen. */
        char stamp[32];
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
        op->snapshots = calloc(op->n_ids + 1, sizeof(char *));
        size_t k = 0;
        for (size_t i = 0; i < op->n_ids; i++) {
                sandbox *s = sandbox_find(m, op->ids[i]);
                if (!s || s->state != SANDBOX_FROZEN)
                        continue; /* "while frozen" only where that is true */
                char *p = sandbox_snapshot(m, s, stamp);
                report_snapshot(m, s, p);
                if (p && op->snapshots)
                        op->snapshots[k++] = p;
                else
                        free(p);
        }
        /* (4) kill unless asked to keep them frozen (those that could not be were killed at once). */
        if (!op->freeze_only)
                for (size_t i = 0; i < op->n_ids; i++) {
                        sandbox *s = sandbox_find(m, op->ids[i]);
                        if (!s || s->state != SANDBOX_FROZEN)
                                continue;
                        if (sandbox_kill(s, "killed by an incident revocation") == 0)
                                op->killed++;
                }
        json_object *ev = json_object_new_object(), *ids = json_object_new_array();
        for (size_t i = 0; i < op->n_ids; i++)
                json_object_array_add(ids, json_object_new_string(op->ids[i]));
        json_object_object_add(ev, "all", json_object_new_boolean(op->all));
        json_object_object_add(ev, "sandboxes", ids);
        json_object_object_add(ev, "frozen", json_object_new_int((int) op->frozen));
        json_object_object_add(ev, "killed", json_object_new_int((int) op->killed));
        json_object_object_add(ev, "tokens_revoked", json_object_new_int((int) op->confirmed));
        json_object_object_add(ev, "tokens_pending", json_object_new_int((int) op->pending));
        json_object_object_add(ev, "duration_us", json_object_new_int64((int64_t) (now_us() - op->t0_us)));
        json_object_object_add(ev, "freeze_method", json_object_new_string(freeze_method(op)));
        json_object *fv = json_object_new_array();
        for (size_t i = 0; i < op->n_failures; i++) {
                json_object *f = json_object_new_object();
                json_object_object_add(f, "sandbox", json_object_new_string(op->failed_ids[i]));
                json_object_object_add(f, "error", json_object_new_string(op->failures[i]));
                json_object_array_add(fv, f);
        }
        json_object_object_add(ev, "failures", fv);
        audit_event(m, "revoke", NULL, ev);
        log_notice("revoke%s: %u frozen (%s), %u killed, %u tokens revoked, %u pending, %zu failure(s)", op->all ? " --all" : "",
                   op->frozen, freeze_method(op), op->killed, op->confirmed, op->pending, op->n_failures);
        if (op->call && op->lockdown_error < 0) {
                /* Frozen, revoked and killed as asked, but a lockdown that a restart
                 * forgets is not a lockdown: say so instead of locked_down: true. */
                char text[300];
                snprintf(text, sizeof(text),
                         "lockdown is in force until agentd stops but could not be persisted in the state directory (%s); "
                         "%u frozen, %u killed, %u tokens revoked, %u pending",
                         strerror(-op->lockdown_error), op->frozen, op->killed, op->confirmed, op->pending);
                rpc_call_error(op->call, RPC_E_BACKEND_UNAVAILABLE, text);
        } else if (op->call)
                rpc_call_reply(op->call, pack_revoke, op);
        revoke_op_free(op);
}

/* Starts a revocation; `call` (may be NULL for automatic responses) gets the reply. */
int revoke_begin(manager *m, bool all, const char *sid, const char *task, bool freeze_only, rpc_call *call, const char *trigger) {
        revoke_op *op = calloc(1, sizeof(*op));
        if (!op)
                return -ENOMEM;
        op->m = m;
        op->t0_us = now_us();
        op->all = all;
        op->freeze_only = freeze_only;
        op->call = call;
        op->ids = calloc(sandbox_count(m) + 2, sizeof(char *));
        op->failed_ids = calloc(sandbox_count(m) + 1, sizeof(char *));
        op->failures = calloc(sandbox_count(m) + 1, sizeof(char *));
        if (!op->ids || !op->failed_ids || !op->failures) {
                revoke_op_free(op);
                return -ENOMEM;
        }
        /* (5 first, for --all) no new spawn may slip in while we work. */
        if (all) {
                sandbox_set_locked_down(m, true);
                pool_drain(m, "revoke --all: lockdown");
                daemon_status_notify(m);
                op->lockdown_error = lockdown_persist(m);
                lockdown_unpersisted = op->lockdown_error < 0;
                if (op->lockdown_error < 0)
                        log_error("lockdown: cannot persist the marker: %s", strerror(-op->lockdown_error));
                json_object *ev = json_object_new_object();
                json_object_object_add(ev, "persisted", json_object_new_boolean(op->lockdown_error == 0));
                audit_event(m, "lockdown", NULL, ev);
        }
        /* (1) freeze. */
        list_head *i, *t;
        list_for_each_safe(i, t, sandbox_list(m)) {
                sandbox *s = container_of(i, sandbox, link);
                bool match = all || (sid && streq(s->id, sid)) || (task && streq(s->task, task));
                if (!match)
                        continue;
                op->ids[op->n_ids++] = strdup(s->id);
                if (sandbox_ended(s))
                        continue;
                int r = sandbox_freeze(s);
                if (r < 0) {
                        freeze_failed(op, s, r);
                        continue;
                }
                op->frozen++;
                op->by_cgroup |= streq(s->frozen_by, "cgroup");
                op->by_signal |= streq(s->frozen_by, "signal");
        }
        approvals_revoke(m, all, sid, task);
        op->frozen_us = now_us();
        if (trigger)
                log_notice("automatic response (%s): froze %u sandbox(es) (%s), %zu could not be frozen and were killed", trigger,
                           op->frozen, freeze_method(op), op->n_failures);
        /* (2) tokens, in parallel, bounded in time: what Vault does not confirm stays pending. */
        if (all)
                broker_revoke_all(m, REVOKE_DEADLINE_MS, revoke_finish, op);
        else
                broker_revoke_sandboxes(m, op->ids, REVOKE_DEADLINE_MS, revoke_finish, op);
        return 0;
}

int rpc_credentials_revoke(rpc_ctx *ctx, const rpc_credentials_revoke_params *p, rpc_error *err) {
        manager *m = ctx->m;
        bool all = p->all;
        const char *sid = p->sandbox, *task = p->task;
        if ((all ? 1 : 0) + (sid ? 1 : 0) + (task ? 1 : 0) != 1) {
                rpc_error_set(err, RPC_E_INVALID_PARAMS, "give exactly one of 'all: true', 'sandbox' or 'task'");
                return -EINVAL;
        }
        if (sid && !sandbox_find(m, sid)) {
                rpc_error_set(err, RPC_E_NOT_FOUND, "no sandbox with id '%.64s'", sid);
                return -ENOENT;
        }
        rpc_call *call = rpc_ctx_defer(ctx);
        if (!call)
                return -ENOMEM;
        int r = revoke_begin(m, all, sid, task, p->freeze_only, call, NULL);
        if (r < 0)
                return r; /* dispatch answers through ctx->async */
        return 0;
}

int rpc_agentd_unlock(rpc_ctx *ctx, const rpc_agentd_unlock_params *args, rpc_error *err) {
        manager *m = ctx->m;
        _cleanup_free_ char *p = lockdown_path(m);
        bool was = sandbox_locked_down(m);
        if (p && unlink(p) < 0 && errno != ENOENT) {
                rpc_error_set(err, RPC_E_INTERNAL, "cannot remove the lockdown marker: %s", strerror(errno));
                return -errno;
        }
        sandbox_set_locked_down(m, false);
        broker_unlock(m);
        daemon_status_notify(m);
        if (was) {
                audit_event(m, "unlock", NULL, NULL);
                log_notice("lockdown lifted");
        }
        msgpack_pack_map(ctx->pk, 1);
        mp_pack_kv_bool(ctx->pk, "was_locked_down", was);
        return 0;
}
