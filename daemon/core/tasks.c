/* Task policies in the daemon: loading the registry along the search path
 * (CONTRACT §1), reloading on SIGHUP and on file changes, and the task.list /
 * task.show methods. A broken file is reported and never hides good ones. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "daemon.h"
#include "log.h"
#include "macro.h"
#include "manager.h"
#include "policy.h"
#include "server.h"

/* "file:line: key: reason", as task.list, task.show and task.check report it. */
static void format_error(const policy_error *e, char *buf, size_t size) {
        size_t k = strlen(e->key);
        bool has_key = k > 0 && !(strncmp(e->message, e->key, k) == 0 && e->message[k] == ':');
        snprintf(buf, size, "%s:%u: %s%s%s", e->file, e->line, has_key ? e->key : "", has_key ? ": " : "", e->message);
}

/* The task a broken file would have defined: its name without ".task"; "" for others. */
static void error_task_name(const policy_error *e, char *buf, size_t size) {
        const char *base = strrchr(e->file, '/');
        base = base ? base + 1 : e->file;
        size_t n = strlen(base);
        if (n <= 5 || strcmp(base + n - 5, ".task") != 0)
                n = 5;
        snprintf(buf, size, "%.*s", (int) (n - 5), base);
}

/* Called after a load replaces the registry (main.c: empties the warm pool). */
static tasks_reload_hook_fn reload_hook;
static void *reload_hook_userdata;

void tasks_set_reload_hook(tasks_reload_hook_fn fn, void *userdata) {
        reload_hook = fn;
        reload_hook_userdata = userdata;
}

static void report_errors(manager *m) {
        for (size_t i = 0; i < policy_registry_n_errors(m->tasks); i++) {
                char text[1200];
                format_error(policy_registry_error(m->tasks, i), text, sizeof(text));
                log_error("task file %s", text);
        }
}

static int load(manager *m) {
        policy_registry *r = NULL;
        int k = policy_registry_load((const char *const *) m->task_dirs, m->home, m->tasks, &r);
        if (k < 0) {
                log_error("cannot load task policies: %s", strerror(-k));
                return k;
        }
        policy_registry_free(m->tasks);
        m->tasks = r;
        if (reload_hook)
                reload_hook(m, reload_hook_userdata);
        report_errors(m);
        return 0;
}

static void on_reload_timer(uv_timer_t *t) {
        manager *m = container_of(t, manager, task_reload_timer);
        if (load(m) == 0)
                log_info("task policies reloaded (%zu tasks, %zu broken files)", policy_registry_count(m->tasks),
                         policy_registry_n_errors(m->tasks));
}

static void on_task_dir_event(uv_fs_event_t *h, const char *filename, int events, int status) {
        manager *m = h->data;
        /* Editors write in several steps: settle for a moment, then reload once. */
        uv_timer_start(&m->task_reload_timer, on_reload_timer, 100, 0);
}

static void watch_dirs(manager *m) {
        for (size_t i = 0; m->task_dirs[i] && m->n_task_watch < ELEMENTSOF(m->task_watch); i++) {
                struct stat st;
                if (stat(m->task_dirs[i], &st) < 0 || !S_ISDIR(st.st_mode))
                        continue;
                uv_fs_event_t *h = calloc(1, sizeof(*h));
                if (!h)
                        return;
                uv_fs_event_init(m->loop, h);
                h->data = m;
                if (uv_fs_event_start(h, on_task_dir_event, m->task_dirs[i], 0) < 0) {
                        uv_close((uv_handle_t *) h, (uv_close_cb) free);
                        continue;
                }
                m->task_watch[m->n_task_watch++] = h;
        }
}

static void unwatch_dirs(manager *m) {
        for (unsigned i = 0; i < m->n_task_watch; i++)
                uv_close((uv_handle_t *) m->task_watch[i], (uv_close_cb) free);
        m->n_task_watch = 0;
}

int tasks_init(manager *m) {
        const char *xdg = getenv("XDG_CONFIG_HOME");
        char *user_dir = NULL;
        if (xdg && xdg[0] == '/')
                (void) !asprintf(&user_dir, "%s/agentd/tasks", xdg);
        else
                (void) !asprintf(&user_dir, "%s/.config/agentd/tasks", m->home);
        m->task_dirs = calloc(3, sizeof(char *));
        if (!user_dir || !m->task_dirs)
                return -ENOMEM;
        m->task_dirs[0] = user_dir;
        m->task_dirs[1] = strdup("/etc/agentd/tasks");
        int r = load(m);
        if (r < 0)
                return r;
        uv_timer_init(m->loop, &m->task_reload_timer);
        watch_dirs(m);
        return 0;
}

void tasks_reload(manager *m) {
        /* A directory created since start is picked up too. */
        unwatch_dirs(m);
        watch_dirs(m);
        on_reload_timer(&m->task_reload_timer);
}

void tasks_free(manager *m) {
        unwatch_dirs(m);
        if (!uv_is_closing((uv_handle_t *) &m->task_reload_timer))
                uv_close((uv_handle_t *) &m->task_reload_timer, NULL);
        policy_registry_free(m->tasks);
        m->tasks = NULL;
        strv_free(m->task_dirs);
        m->task_dirs = NULL;
}

size_t tasks_n_errors(manager *m) {
        return m->tasks ? policy_registry_n_errors(m->tasks) : 0;
}

int rpc_task_list(rpc_ctx *ctx, const rpc_task_list_params *p, rpc_error *err) {
        manager *m = ctx->m;
        size_t n = policy_registry_count(m->tasks), n_err = policy_registry_n_errors(m->tasks);
        msgpack_pack_array(ctx->pk, n + n_err);
        for (size_t i = 0; i < n; i++) {
                const task_policy *p = policy_registry_get(m->tasks, i);
                msgpack_pack_map(ctx->pk, 3);
                mp_pack_kv_str(ctx->pk, "name", p->name);
                mp_pack_kv_str(ctx->pk, "description", p->description ? p->description : "");
                mp_pack_kv_str(ctx->pk, "source", p->source);
        }
        /* Broken files too, so the user sees them where they look (not only in the log). */
        for (size_t i = 0; i < n_err; i++) {
                const policy_error *e = policy_registry_error(m->tasks, i);
                char name[128], text[1200];
                error_task_name(e, name, sizeof(name));
                format_error(e, text, sizeof(text));
                msgpack_pack_map(ctx->pk, 4);
                mp_pack_kv_str(ctx->pk, "name", name);
                mp_pack_kv_str(ctx->pk, "description", "");
                mp_pack_kv_str(ctx->pk, "source", e->file);
                mp_pack_kv_str(ctx->pk, "error", text);
        }
        return 0;
}

static void pack_duration(msgpack_packer *pk, const char *key, uint64_t usec) {
        char buf[64];
        if (usec == 0)
                snprintf(buf, sizeof(buf), "none");
        else if (usec % 3600000000ull == 0)
                snprintf(buf, sizeof(buf), "%lluh", (unsigned long long) (usec / 3600000000ull));
        else if (usec % 60000000ull == 0)
                snprintf(buf, sizeof(buf), "%llumin", (unsigned long long) (usec / 60000000ull));
        else if (usec % 1000000ull == 0)
                snprintf(buf, sizeof(buf), "%llus", (unsigned long long) (usec / 1000000ull));
        else
                snprintf(buf, sizeof(buf), "%llums", (unsigned long long) (usec / 1000ull));
        mp_pack_kv_str(pk, key, buf);
}

static void pack_size(msgpack_packer *pk, const char *key, uint64_t v) {
        if (v == 0 || v == UINT64_MAX)
                mp_pack_kv_str(pk, key, v == 0 ? "unset" : "infinity");
        else
                mp_pack_kv_u64(pk, key, v);
}

static const char *workspace_mode_name(workspace_mode w) {
        switch (w) {
        case WORKSPACE_OVERLAY: return "overlay";
        case WORKSPACE_RO: return "ro";
        case WORKSPACE_RW: return "rw";
        case WORKSPACE_NONE: return "none";
        }
        return "?";
}

static void pack_origins(msgpack_packer *pk, const task_policy *p) {
        static const char *const keys[] = {
                "Task.Description", "Task.Command", "Task.Timeout", "Task.Environment", "Task.PassEnvironment",
                "Filesystem.Workspace", "Filesystem.ReadOnlyPaths", "Filesystem.WritablePaths", "Filesystem.HidePaths",
                "Filesystem.TmpSize", "Filesystem.ShmSize", "Filesystem.HomeSize", "Filesystem.Toolchains",
                "Network.Mode", "Network.Allow", "Network.Ask", "Network.AskTimeout", "Credentials.VaultPolicies", "Credentials.TTL",
                "Limits.MemoryMax", "Limits.TasksMax", "Limits.CPUWeight", "Limits.CPUQuota", "Limits.ChangeMax",
                "Security.Seccomp", "Security.Landlock",
        };
        size_t n = 0;
        for (size_t i = 0; i < ELEMENTSOF(keys); i++)
                if (task_policy_origin(p, keys[i]))
                        n++;
        msgpack_pack_map(pk, n);
        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                const policy_origin *o = task_policy_origin(p, keys[i]);
                if (!o)
                        continue;
                char buf[600];
                snprintf(buf, sizeof(buf), "%s:%u", o->file ? o->file : "?", o->line);
                mp_pack_kv_str(pk, keys[i], buf);
        }
}

void pack_task_policy(msgpack_packer *pk, const task_policy *p) {
        _cleanup_strv_free_ char **caps = task_policy_capabilities(p);

        msgpack_pack_map(pk, 10);
        mp_pack_kv_str(pk, "name", p->name);
        mp_pack_kv_str(pk, "source", p->source);

        mp_pack_cstr(pk, "Task");
        msgpack_pack_map(pk, 5);
        mp_pack_kv_str(pk, "Description", p->description ? p->description : "");
        mp_pack_cstr(pk, "Command");
        mp_pack_strv(pk, p->command);
        pack_duration(pk, "Timeout", p->timeout_usec);
        mp_pack_cstr(pk, "Environment");
        mp_pack_strv(pk, p->environment);
        mp_pack_cstr(pk, "PassEnvironment");
        mp_pack_strv(pk, p->pass_environment);

        mp_pack_cstr(pk, "Filesystem");
        msgpack_pack_map(pk, 8);
        mp_pack_kv_str(pk, "Workspace", workspace_mode_name(p->workspace));
        mp_pack_cstr(pk, "ReadOnlyPaths");
        mp_pack_strv(pk, p->read_only_paths);
        mp_pack_cstr(pk, "WritablePaths");
        mp_pack_strv(pk, p->writable_paths);
        mp_pack_cstr(pk, "HidePaths");
        mp_pack_strv(pk, p->hide_paths);
        pack_size(pk, "TmpSize", p->tmp_size);
        pack_size(pk, "ShmSize", p->shm_size);
        pack_size(pk, "HomeSize", p->home_size);
        mp_pack_cstr(pk, "Toolchains"); /* ["auto"], [] (none) or the paths */
        if (p->toolchains_auto) {
                msgpack_pack_array(pk, 1);
                mp_pack_cstr(pk, "auto");
        } else
                mp_pack_strv(pk, p->toolchains);

        mp_pack_cstr(pk, "Network");
        msgpack_pack_map(pk, 4);
        mp_pack_kv_str(pk, "Mode", p->network == NETWORK_PROXY ? "proxy" : "none");
        mp_pack_kv_bool(pk, "Ask", p->ask);
        pack_duration(pk, "AskTimeout", p->ask_timeout_usec);
        mp_pack_cstr(pk, "Allow");
        msgpack_pack_array(pk, p->n_allow);
        for (size_t i = 0; i < p->n_allow; i++) {
                char buf[300];
                const policy_host *h = &p->allow[i];
                bool v6 = h->is_ip && strchr(h->host, ':');
                snprintf(buf, sizeof(buf), "%s%s%s%s:%u", h->wildcard ? "*." : "", v6 ? "[" : "", h->host,
                         v6 ? "]" : "", h->port);
                mp_pack_cstr(pk, buf);
        }

        mp_pack_cstr(pk, "Credentials");
        msgpack_pack_map(pk, 2);
        mp_pack_cstr(pk, "VaultPolicies");
        mp_pack_strv(pk, p->vault_policies);
        pack_duration(pk, "TTL", p->token_ttl_usec);

        mp_pack_cstr(pk, "Limits");
        msgpack_pack_map(pk, 5);
        pack_size(pk, "MemoryMax", p->memory_max);
        pack_size(pk, "TasksMax", p->tasks_max);
        mp_pack_kv_u64(pk, "CPUWeight", p->cpu_weight);
        mp_pack_kv_u64(pk, "CPUQuota", p->cpu_quota_percent);
        pack_size(pk, "ChangeMax", p->change_max);

        mp_pack_cstr(pk, "Security");
        msgpack_pack_map(pk, 2);
        mp_pack_kv_str(pk, "Seccomp", p->seccomp ? p->seccomp : "default");
        mp_pack_kv_bool(pk, "Landlock", p->landlock);

        mp_pack_cstr(pk, "capabilities");
        mp_pack_strv(pk, caps);

        mp_pack_cstr(pk, "origins");
        pack_origins(pk, p);
}

int rpc_task_show(rpc_ctx *ctx, const rpc_task_show_params *args, rpc_error *err) {
        const char *name = args->name;
        const task_policy *p = policy_registry_find(ctx->m->tasks, name);
        if (!p) {
                /* A task whose file is broken is not "not found": say what is wrong with it. */
                for (size_t i = 0; i < policy_registry_n_errors(ctx->m->tasks); i++) {
                        const policy_error *e = policy_registry_error(ctx->m->tasks, i);
                        char ename[128], text[1200];
                        error_task_name(e, ename, sizeof(ename));
                        if (strcmp(ename, name) != 0)
                                continue;
                        format_error(e, text, sizeof(text));
                        rpc_error_set(err, RPC_E_INVALID_PARAMS, "task '%.64s' is broken: %s", name, text);
                        return -EINVAL;
                }
                rpc_error_set(err, RPC_E_NOT_FOUND, "no task named '%.64s'", name);
                return -ENOENT;
        }
        pack_task_policy(ctx->pk, p);
        return 0;
}

/* task.check: parse a task file's text as the daemon would load it (source names it in
 * messages; name defaults to the source's file name without ".task"). */
int rpc_task_check(rpc_ctx *ctx, const rpc_task_check_params *args, rpc_error *err) {
        const char *source = args->source;
        _cleanup_free_ char *name = args->name ? strdup(args->name) : NULL;
        if (args->name && !name)
                return -ENOMEM;
        if (!name) {
                policy_error e = {};
                snprintf(e.file, sizeof(e.file), "%s", source ? source : "check.task");
                char buf[128];
                error_task_name(&e, buf, sizeof(buf));
                name = strdup(buf[0] ? buf : "check");
                if (!name)
                        return -ENOMEM;
        }
        if (!policy_name_is_valid(name)) {
                rpc_error_set(err, RPC_E_INVALID_PARAMS,
                              "invalid task name '%.80s' (1-64 of A-Z a-z 0-9 _ . -, from the file name without .task)", name);
                return -EINVAL;
        }
        _cleanup_task_policy_ task_policy *p = NULL;
        policy_error e = {};
        int r = policy_parse_buffer(args->text, strlen(args->text), source ? source : "check.task", name,
                                    ctx->m->home, &p, &e);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                char msg[1200];
                if (!e.file[0])
                        snprintf(e.file, sizeof(e.file), "%s", source ? source : "check.task");
                format_error(&e, msg, sizeof(msg));
                rpc_error_set(err, RPC_E_INVALID_PARAMS, "%s", msg);
                return -EINVAL;
        }
        pack_task_policy(ctx->pk, p);
        return 0;
}
