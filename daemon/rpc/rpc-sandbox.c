/* The sandbox.* methods (and events.subscribe, the sandboxes' event stream):
 * each handler parses its params and calls the sandbox part (sandbox/sandbox.h,
 * sandbox/spawn-steps.h); sandbox.diff / promote / discard are in
 * rpc-workspace.c, sandbox.report in sandbox/report.c. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/server.h"
#include "macro.h"
#include "sandbox/sandbox.h"
#include "sandbox/spawn-steps.h"

/* A copy of a decoded string, or NULL for an absent one (-ENOMEM when the copy fails). */
static int dup_str(const char *s, char **ret) {
        if (!s)
                return 0;
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

/* The request as sandbox_spawn() takes it: everything copied out of the
 * request's zone, since the spawn may outlive the handler (it waits for Vault). */
static int spawn_params_parse(rpc_ctx *ctx, const rpc_sandbox_spawn_params *p, spawn_params *ret) {
        if (dup_str(p->task, &ret->task) < 0 || dup_str(p->workspace, &ret->workspace) < 0 ||
            dup_str(p->path, &ret->path) < 0)
                return -ENOMEM;
        if (!ret->workspace && ctx->conn->peer.pid > 0) {
                /* CONTRACT §3: the default is the caller's working directory. */
                char link[64], cwd[PATH_MAX];
                snprintf(link, sizeof(link), "/proc/%d/cwd", (int) ctx->conn->peer.pid);
                ssize_t n = readlink(link, cwd, sizeof(cwd) - 1);
                if (n > 0) {
                        cwd[n] = 0;
                        ret->workspace = strdup(cwd);
                }
        }
        if (p->argv && !(ret->argv = rpc_strv_dup(p->argv)))
                return -ENOMEM;
        ret->tty = p->tty;
        ret->attach = p->attach;
        ret->wait = p->wait;
        ret->has_umask = p->has_umask;
        ret->umask = p->umask;
        /* A map of strings to strings, or an empty array (size 0 either way). */
        const msgpack_object *env = p->env;
        if (env && env->via.map.size > 0) {
                ret->env = calloc(env->via.map.size, sizeof(spawn_env));
                if (!ret->env)
                        return -ENOMEM;
                for (uint32_t i = 0; i < env->via.map.size; i++) {
                        const msgpack_object_kv *kv = &env->via.map.ptr[i];
                        spawn_env *e = &ret->env[ret->n_env++];
                        e->name = strndup(kv->key.via.str.ptr, kv->key.via.str.size);
                        e->value = strndup(kv->val.via.str.ptr, kv->val.via.str.size);
                        e->name_size = kv->key.via.str.size;
                        e->value_size = kv->val.via.str.size;
                        if (!e->name || !e->value)
                                return -ENOMEM;
                }
        }
        if (ret->attach)
                for (int i = 0; i < 3; i++)
                        ret->client_fds[i] = connection_take_fd(ctx->conn);
        return 0;
}

int rpc_sandbox_spawn(rpc_ctx *ctx, const rpc_sandbox_spawn_params *p, rpc_error *err) {
        spawn_params params = SPAWN_PARAMS_INIT;
        int r = spawn_params_parse(ctx, p, &params);
        if (r < 0) {
                spawn_params_done(&params);
                return r;
        }
        return sandbox_spawn(ctx, &params, err);
}

static sandbox *lookup(rpc_ctx *ctx, const char *id, rpc_error *err) {
        sandbox *s = sandbox_find(ctx->m, id);
        if (!s)
                rpc_error_set(err, RPC_E_NOT_FOUND, "no sandbox with id '%.64s'", id);
        return s;
}

int rpc_sandbox_list(rpc_ctx *ctx, const rpc_sandbox_list_params *p, rpc_error *err) {
        manager *m = ctx->m;
        list_head *i, *t;
        msgpack_pack_array(ctx->pk, sandbox_count(m));
        list_for_each_safe(i, t, sandbox_list(m)) {
                sandbox *s = container_of(i, sandbox, link);
                bool ended = sandbox_ended(s);
                msgpack_pack_map(ctx->pk, ended ? 9 : 7);
                mp_pack_kv_str(ctx->pk, "id", s->id);
                mp_pack_kv_str(ctx->pk, "task", s->task);
                mp_pack_kv_str(ctx->pk, "state", sandbox_state_to_string(s->state));
                /* The pid it ran as (from its record after a restart); nil when unknown. */
                pid_t pid = s->init_pid > 0 ? s->init_pid : s->recorded_pid;
                mp_pack_cstr(ctx->pk, "pid");
                if (pid > 0)
                        msgpack_pack_int64(ctx->pk, pid);
                else
                        msgpack_pack_nil(ctx->pk);
                mp_pack_kv_u64(ctx->pk, "started_at", s->started_at);
                mp_pack_kv_str(ctx->pk, "workspace", s->workspace);
                mp_pack_cstr(ctx->pk, "argv");
                mp_pack_strv(ctx->pk, s->argv);
                if (ended) {
                        mp_pack_kv_i64(ctx->pk, "exit_code", s->exit_code);
                        mp_pack_kv_i64(ctx->pk, "signal", s->exit_signal);
                }
        }
        return 0;
}

int rpc_sandbox_wait(rpc_ctx *ctx, const rpc_sandbox_wait_params *p, rpc_error *err) {
        sandbox *s = lookup(ctx, p->id, err);
        if (!s)
                return -ENOENT;
        if (sandbox_ended(s)) {
                sandbox_pack_wait_result(ctx->pk, s);
                return 0;
        }
        rpc_call *call = rpc_ctx_defer(ctx);
        if (!call)
                return -ENOMEM;
        return sandbox_add_waiter(s, call); /* failing, dispatch answers through ctx->async */
}

static int parse_signal(const msgpack_object *o, int *ret) {
        if (!o) {
                *ret = SIGTERM;
                return 0;
        }
        if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
                if (o->via.u64 < 1 || o->via.u64 > 64)
                        return -ERANGE;
                *ret = (int) o->via.u64;
                return 0;
        }
        if (o->type != MSGPACK_OBJECT_STR || o->via.str.size > 16)
                return -EINVAL;
        char name[20];
        memcpy(name, o->via.str.ptr, o->via.str.size);
        name[o->via.str.size] = 0;
        const char *n = strncmp(name, "SIG", 3) == 0 ? name + 3 : name;
        static const struct { const char *name; int sig; } tbl[] = {
                { "TERM", SIGTERM }, { "KILL", SIGKILL }, { "INT", SIGINT }, { "HUP", SIGHUP }, { "QUIT", SIGQUIT },
                { "USR1", SIGUSR1 }, { "USR2", SIGUSR2 }, { "STOP", SIGSTOP }, { "CONT", SIGCONT }, { "WINCH", SIGWINCH },
        };
        for (size_t i = 0; i < ELEMENTSOF(tbl); i++)
                if (streq(n, tbl[i].name)) {
                        *ret = tbl[i].sig;
                        return 0;
                }
        return -EINVAL;
}

int rpc_sandbox_kill(rpc_ctx *ctx, const rpc_sandbox_kill_params *p, rpc_error *err) {
        sandbox *s = lookup(ctx, p->id, err);
        if (!s)
                return -ENOENT;
        int sig;
        if (parse_signal(p->signal, &sig) < 0) {
                rpc_error_set(err, RPC_E_INVALID_PARAMS, "parameter 'signal' must be a signal name (TERM, KILL, ...) or number 1..64");
                return -EINVAL;
        }
        if (sandbox_ended(s)) {
                rpc_error_set(err, RPC_E_NOT_FOUND, "sandbox %s has already ended", s->id);
                return -ESRCH;
        }
        int r = sig == SIGKILL ? sandbox_kill(s, "killed by request") : sandbox_signal(s, sig);
        if (r < 0) {
                rpc_error_set(err, RPC_E_INTERNAL, "cannot signal sandbox %s: %s", s->id, strerror(-r));
                return r;
        }
        msgpack_pack_map(ctx->pk, 0);
        return 0;
}

int rpc_sandbox_logs(rpc_ctx *ctx, const rpc_sandbox_logs_params *p, rpc_error *err) {
        sandbox *s = lookup(ctx, p->id, err);
        if (!s)
                return -ENOENT;
        msgpack_pack_map(ctx->pk, 5);
        for (int i = 0; i < 2; i++) {
                _cleanup_free_ char *b = NULL;
                size_t n = 0;
                if (sandbox_read_log(s, i, &b, &n) < 0)
                        n = 0;
                mp_pack_cstr(ctx->pk, s->out[i].name);
                msgpack_pack_bin(ctx->pk, n);
                msgpack_pack_bin_body(ctx->pk, b ? b : "", n);
        }
        mp_pack_kv_u64(ctx->pk, "stdout_dropped", s->out[0].dropped);
        mp_pack_kv_u64(ctx->pk, "stderr_dropped", s->out[1].dropped);
        mp_pack_kv_str(ctx->pk, "state", sandbox_state_to_string(s->state));
        return 0;
}

/* events.subscribe: the sandboxes' events (output, state, alerts) on this connection. */
int rpc_events_subscribe(rpc_ctx *ctx, const rpc_events_subscribe_params *p, rpc_error *err) {
        if (p->sandbox && !sandbox_find(ctx->m, p->sandbox)) {
                rpc_error_set(err, RPC_E_NOT_FOUND, "no sandbox with id '%.64s'", p->sandbox);
                return -ENOENT;
        }
        /* Kept past the request: a copy. */
        _cleanup_free_ char *id = NULL;
        if (p->sandbox && !(id = strdup(p->sandbox)))
                return -ENOMEM;
        ctx->conn->subscribed = true;
        free(ctx->conn->subscribe_sandbox);
        ctx->conn->subscribe_sandbox = TAKE_PTR(id);
        msgpack_pack_map(ctx->pk, 0);
        return 0;
}
