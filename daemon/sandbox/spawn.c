/* Starting a sandbox, nsjail-style: a table of small named steps over a
 * spawn_ctx, run in order by one driver that undoes the finished ones when a
 * later one fails. Three tables, in this order:
 *   request_steps  admission, the task, argv, the workspace (no side effects)
 *   plan_steps     what depends only on the task policy (spawn_plan_prepare)
 *   build_steps    per spawn: environment, directories, sockets, cgroup, spec,
 *                  the helper's start, libuv wiring, the audit record
 * The helper ("hands", helper/) does the namespace work; see sandbox.c for the
 * lifecycle after it started. */
#include "spawn-steps.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/evp.h>

#include "audit/auditlog.h"
#include "report.h"
#include "broker/broker.h"
#include "cgroup.h"
#include "change-watch.h"
#include "core/log.h"
#include "lib/netproxy.h"
#include "laptop.h"
#include "macro.h"
#include "memfd.h"
#include "plan-cache.h"
#include "sandbox-private.h"
#include "seccomp-build.h"
#include "spawn-guard.h"
#include "spec.h"
#include "stdin-relay.h"
#include "pool.h"
#include "zygote.h"

#define MAX_ARGV_BYTES (256 * 1024)
#define MAX_ARGV_COUNT 4096
#define MAX_ENV_VALUE 32768
/* RLIMIT_NPROC of a task without TasksMax=: a fork bomb stops here even without a cgroup. */
#define SANDBOX_DEFAULT_NPROC 4096

/* ---- seccomp programs, built once per profile ---------------------------- */

typedef struct bpf_cache {
        struct bpf_cache *next;
        char *profile;
        void *bpf;
        size_t len;
} bpf_cache;
static bpf_cache *bpf_cached;

static int get_bpf(const char *profile, const void **ret_bpf, size_t *ret_len, agentd_error *ret_error) {
        for (bpf_cache *c = bpf_cached; c; c = c->next)
                if (streq(c->profile, profile)) {
                        *ret_bpf = c->bpf;
                        *ret_len = c->len;
                        return 0;
                }
        void *bpf = NULL;
        size_t len = 0;
        int r = seccomp_build_bpf(profile, &bpf, &len, ret_error);
        if (r < 0)
                return r;
        bpf_cache *c = calloc(1, sizeof(*c));
        if (!c || !(c->profile = strdup(profile))) {
                free(c);
                free(bpf);
                return -ENOMEM;
        }
        c->bpf = bpf;
        c->len = len;
        /* A profile file may change: only named profiles are cached. */
        if (profile[0] != '/') {
                c->next = bpf_cached;
                bpf_cached = c;
        }
        *ret_bpf = c->bpf;
        *ret_len = c->len;
        if (profile[0] == '/') {
                /* Caller copies into a memfd right away; keep it alive until the next call. */
                static bpf_cache *last_file;
                if (last_file) {
                        free(last_file->profile);
                        free(last_file->bpf);
                        free(last_file);
                }
                last_file = c;
        }
        return 0;
}

void spawn_cache_free(void) {
        plan_cache_free();
        for (bpf_cache *c = bpf_cached, *n; c; c = n) {
                n = c->next;
                free(c->profile);
                free(c->bpf);
                free(c);
        }
        bpf_cached = NULL;
}

/* ---- the spec handed to the helper (keys: helper/spec.def) ------------------ */

/* The helper wants canonical absolute paths: resolve what exists, and
 * normalise the spelling (// . trailing /) of what does not. */
static char *canonical_path(const char *p) {
        char *r = realpath(p, NULL);
        if (r)
                return r;
        if (p[0] != '/')
                return NULL;
        r = malloc(strlen(p) + 2);
        if (!r)
                return NULL;
        char *o = r;
        for (const char *i = p; *i;) {
                while (*i == '/')
                        i++;
                const char *e = strchrnul(i, '/');
                size_t n = (size_t) (e - i);
                if (n == 0)
                        break;
                if (n == 1 && i[0] == '.') {
                } else if (n == 2 && i[0] == '.' && i[1] == '.') {
                        while (o > r && *--o != '/')
                                ;
                } else {
                        *o++ = '/';
                        memcpy(o, i, n);
                        o += n;
                }
                i = e;
        }
        if (o == r)
                *o++ = '/';
        *o = 0;
        return r;
}

static void spec_put_canonical(SpecWriter *w, SpecKey key, const char *path) {
        _cleanup_free_ char *c = canonical_path(path);
        if (c)
                spec_write_str(w, key, c);
        else
                w->oom = true;
}

/* ---- environment names ---------------------------------------------------- */

static bool env_name_valid(const char *n) {
        if (!*n || strlen(n) > 128)
                return false;
        for (const char *p = n; *p; p++)
                if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
                        return false;
        return !(n[0] >= '0' && n[0] <= '9');
}

/* What a caller may always set: terminal and locale, nothing that changes
 * how programs load code (no LD_*, no PATH). */
static bool env_always_allowed(const char *n) {
        static const char *const names[] = { "TERM", "COLORTERM", "LANG", "LANGUAGE", "LC_ALL", "NO_COLOR", "TZ", "COLUMNS", "LINES" };
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (streq(n, names[i]))
                        return true;
        return strncmp(n, "LC_", 3) == 0;
}

static bool strv_contains(char *const *v, const char *s) {
        for (size_t i = 0; v && v[i]; i++)
                if (streq(v[i], s))
                        return true;
        return false;
}

static int mkdir_private(const char *p) {
        if (mkdir(p, 0700) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

/* ---- the params and the plan ---------------------------------------------- */

void spawn_params_done(spawn_params *p) {
        free(p->task);
        free(p->workspace);
        strv_free(p->argv);
        for (size_t i = 0; i < p->n_env; i++) {
                free(p->env[i].name);
                free(p->env[i].value);
        }
        free(p->env);
        free(p->path);
        for (int i = 0; i < 3; i++)
                p->client_fds[i] = safe_close(p->client_fds[i]);
        *p = (spawn_params) SPAWN_PARAMS_INIT;
}

void spawn_plan_done(spawn_plan *plan) {
        safe_close(plan->bpf_fd);
        strv_free(plan->agentd_hides);
        free(plan->mounts);
        *plan = (spawn_plan) SPAWN_PLAN_INIT;
}

/* ---- the context and the driver --------------------------------------------- */

typedef struct spawn_ctx {
        manager *m;
        spawn_params *in;          /* the request (fds are taken from it as steps use them) */
        const task_policy *p;      /* the task as it was when the request came; NULL: none */
        sandbox_creds *creds;      /* issued Vault tokens, or NULL */
        rpc_call *call;            /* the deferred sandbox.spawn call */
        const char *id;
        rpc_error *err;

        spawn_plan plan;           /* plan_steps, when run for this spawn */
        const spawn_plan *pl;      /* the plan in use: &plan, or the plan cache's */
        bool toolchains_done;      /* lp.ro and lp.cow came with the plan */

        /* request_steps and build_steps */
        char **argv;
        char *workspace;           /* resolved, or NULL (WorkspaceMode none) */
        laptop_plan lp;
        SpecWriter sp;
        const char *helper;
        int client_fds[3];
        sandbox *s;
        bool recorded;             /* from here on a failure is logged */
        int spec_fd, cg_fd, devnull, stdin_fd;
        int status_pair[2], outp[2][2];
        pid_t pid;
        warm_sandbox *warm;        /* taken from the pool (pool.c) by the cgroup step, or NULL */
        bool from_pool;
} spawn_ctx;

typedef struct spawn_step {
        const char *name;
        int (*run)(spawn_ctx *c);
        void (*undo)(spawn_ctx *c); /* NULL: nothing to undo beyond spawn_ctx_done() */
} spawn_step;

static void spawn_ctx_done(spawn_ctx *c) {
        strv_free(c->argv);
        free(c->workspace);
        laptop_plan_done(&c->lp);
        free(c->sp.buf);
        for (int i = 0; i < 3; i++)
                safe_close(c->client_fds[i]);
        safe_close(c->spec_fd);
        safe_close(c->cg_fd);
        safe_close(c->devnull);
        safe_close(c->stdin_fd);
        for (int i = 0; i < 2; i++) {
                safe_close(c->status_pair[i]);
                safe_close(c->outp[i][0]);
                safe_close(c->outp[i][1]);
        }
        spawn_plan_done(&c->plan);
        warm_sandbox_drop(c->m, c->warm);
}

/* Runs steps[] in order; when one fails, undoes the finished ones in reverse
 * order. Each step sets c->err when it fails. */
static int run_steps(spawn_ctx *c, const spawn_step *steps, size_t n) {
        for (size_t i = 0; i < n; i++) {
                int r = steps[i].run(c);
                if (r >= 0)
                        continue;
                if (!c->err->message[0])
                        rpc_error_set(c->err, RPC_E_INTERNAL, "%s: %s", steps[i].name, strerror(-r));
                while (i-- > 0)
                        if (steps[i].undo)
                                steps[i].undo(c);
                return r;
        }
        return 0;
}

/* ---- request steps: checks on the request, no side effects ---------------- */

static int step_admission(spawn_ctx *c) {
        manager *m = c->m;
        if (c->in->has_umask && c->in->umask > 0777) {
                rpc_error_set(c->err, RPC_E_INVALID_PARAMS, "parameter 'umask' must be a file mode creation mask (0 to 0777)");
                return -EINVAL;
        }
        if (m->sandboxes->locked_down) {
                rpc_error_set(c->err, RPC_E_LOCKED_DOWN, "spawning is locked down after an incident revocation; run 'agentctl unlock'");
                return -EPERM;
        }
        if (m->shutting_down) {
                rpc_error_set(c->err, RPC_E_BACKEND_UNAVAILABLE, "agentd is stopping");
                return -ESHUTDOWN;
        }
        if (m->sandboxes->n_live >= m->config->max_sandboxes) {
                rpc_error_set(c->err, RPC_E_LIMIT_EXCEEDED, "too many running sandboxes (MaxSandboxes=%u)", m->config->max_sandboxes);
                return -EBUSY;
        }
        if (c->in->tty && c->in->attach) {
                rpc_error_set(c->err, RPC_E_INVALID_PARAMS, "parameters 'tty' and 'attach' exclude each other");
                return -EINVAL;
        }
        if (c->in->tty && c->in->wait) {
                /* The terminal comes with the spawn reply, which the caller needs while it runs. */
                rpc_error_set(c->err, RPC_E_INVALID_PARAMS, "parameters 'tty' and 'wait' exclude each other (call sandbox.wait)");
                return -EINVAL;
        }
        return 0;
}

static int step_task(spawn_ctx *c) {
        if (!c->p) {
                rpc_error_set(c->err, RPC_E_NOT_FOUND, "no task named '%.64s'", c->in->task ? c->in->task : "default");
                return -ENOENT;
        }
        return 0;
}

static int step_argv(spawn_ctx *c) {
        const task_policy *p = c->p;
        c->argv = TAKE_PTR(c->in->argv);
        if (!c->argv && p->command) {
                size_t n = strv_length(p->command);
                c->argv = calloc(n + 1, sizeof(char *));
                for (size_t i = 0; c->argv && i < n; i++)
                        c->argv[i] = strdup(p->command[i]);
        }
        if (!c->argv || !c->argv[0]) {
                rpc_error_set(c->err, RPC_E_INVALID_PARAMS, "no command: pass 'argv' or set Command= in task '%s'", p->name);
                return -EINVAL;
        }
        size_t argbytes = 0, argc = strv_length(c->argv);
        for (size_t i = 0; i < argc; i++)
                argbytes += strlen(c->argv[i]) + 1;
        if (argc > MAX_ARGV_COUNT || argbytes > MAX_ARGV_BYTES) {
                rpc_error_set(c->err, RPC_E_LIMIT_EXCEEDED, "argv too large (at most %d arguments, %d bytes)", MAX_ARGV_COUNT, MAX_ARGV_BYTES);
                return -E2BIG;
        }
        if (c->argv[0][0] == 0) {
                rpc_error_set(c->err, RPC_E_INVALID_PARAMS, "parameter 'argv' must not start with an empty string");
                return -EINVAL;
        }
        return 0;
}

static int step_egress_available(spawn_ctx *c) {
        if (c->p->network == NETWORK_PROXY && !c->m->proxy) {
                rpc_error_set(c->err, RPC_E_BACKEND_UNAVAILABLE,
                              "task '%s' asks for Network Mode=proxy, but the egress proxy is not running", c->p->name);
                return -EOPNOTSUPP;
        }
        return 0;
}

/* A real directory, and never one of the places spawn-guard.c refuses. */
static int step_workspace(spawn_ctx *c) {
        if (c->p->workspace == WORKSPACE_NONE)
                return 0;
        spawn_guard g = spawn_guard_of(c->m);
        g.resolve = plan_cache_resolve; /* agentd's own directories, resolved once while unchanged */
        return spawn_guard_workspace(&g, c->in->workspace, &c->workspace, c->err);
}

static const spawn_step request_steps[] = {
        { "admission", step_admission, NULL },
        { "task", step_task, NULL },
        { "argv", step_argv, NULL },
        { "egress-available", step_egress_available, NULL },
        { "workspace", step_workspace, NULL },
};

/* ---- plan steps: depend only on the task policy ---------------------------- */

/* The task's own binds never show agentd's directories either. */
static int step_task_paths(spawn_ctx *c) {
        return spawn_task_paths_check(c->m, c->p, &c->plan.agentd_hides, c->err);
}

/* The seccomp program of the task's profile (built once), in a sealed memfd. */
static int step_seccomp(spawn_ctx *c) {
        const task_policy *p = c->p;
        const void *bpf = NULL;
        size_t bpf_len = 0;
        _cleanup_error_ agentd_error bpf_error = {};

        c->plan.seccomp = task_policy_seccomp_enabled(p);
        if (!c->plan.seccomp)
                return 0;
        int r = get_bpf(p->seccomp ? p->seccomp : "default", &bpf, &bpf_len, &bpf_error);
        if (r < 0) {
                rpc_error_set(c->err, RPC_E_POLICY_DENIED, "task '%s': seccomp profile %s: %s", p->name,
                              p->seccomp ? p->seccomp : "default", error_reason(&bpf_error, r));
                return r;
        }
        c->plan.bpf_fd = memfd_new_sealed("agentd-seccomp", bpf, bpf_len);
        if (c->plan.bpf_fd < 0) {
                rpc_error_set(c->err, RPC_E_INTERNAL, "cannot pass the seccomp program: %s", strerror(-c->plan.bpf_fd));
                return c->plan.bpf_fd;
        }
        /* Shared by every spawn of the task (plan-cache.c): a read-only open of
         * the sealed memfd (the helper preads it at offset 0). */
        char self[64];
        snprintf(self, sizeof(self), "/proc/self/fd/%d", c->plan.bpf_fd);
        int ro = open(self, O_RDONLY | O_CLOEXEC);
        if (ro >= 0) {
                safe_close(c->plan.bpf_fd);
                c->plan.bpf_fd = ro;
        }
        return 0;
}

/* The system mount plan: spec entries that follow from the task alone. */
static int step_mount_plan(spawn_ctx *c) {
        const task_policy *p = c->p;
        SpecWriter sp = { 0 };

        spec_put_workspace_mode(&sp, p->workspace);
        spec_put_canonical(&sp, SPEC_KEY_home, c->m->home);
        for (size_t i = 0; p->read_only_paths && p->read_only_paths[i]; i++)
                spec_put_canonical(&sp, SPEC_KEY_ro, p->read_only_paths[i]);
        for (size_t i = 0; p->writable_paths && p->writable_paths[i]; i++)
                spec_put_canonical(&sp, SPEC_KEY_rw, p->writable_paths[i]);
        for (size_t i = 0; p->hide_paths && p->hide_paths[i]; i++)
                spec_put_canonical(&sp, SPEC_KEY_hide, p->hide_paths[i]);
        for (size_t i = 0; c->plan.agentd_hides && c->plan.agentd_hides[i]; i++)
                spec_put_hide(&sp, c->plan.agentd_hides[i]);
        /* Bounded tmpfs mounts (0: the task said infinity), and the pids bound
         * that holds without a cgroup: TasksMax, plus the hands (counted there too). */
        spec_put_tmp_size(&sp, p->tmp_size == POLICY_INFINITY ? 0 : p->tmp_size);
        spec_put_shm_size(&sp, p->shm_size == POLICY_INFINITY ? 0 : p->shm_size);
        spec_put_home_size(&sp, p->home_size == POLICY_INFINITY ? 0 : p->home_size);
        if (p->tasks_max != POLICY_INFINITY)
                spec_put_nproc(&sp, (p->tasks_max ? p->tasks_max : SANDBOX_DEFAULT_NPROC) + 1);
        spec_put_hostname(&sp, "agentd");
        spec_put_landlock(&sp, p->landlock);
        if (sp.oom) {
                free(sp.buf);
                rpc_error_set(c->err, RPC_E_INTERNAL, "out of memory");
                return -ENOMEM;
        }
        c->plan.mounts = sp.buf;
        c->plan.mounts_len = sp.len;
        return 0;
}

static const spawn_step plan_steps[] = {
        { "task-paths", step_task_paths, NULL },
        { "seccomp", step_seccomp, NULL },
        { "mount-plan", step_mount_plan, NULL },
};

int spawn_plan_prepare(manager *m, const task_policy *p, spawn_plan *ret, rpc_error *err) {
        spawn_ctx c = { .m = m, .p = p, .err = err, .id = "-", .plan = SPAWN_PLAN_INIT };
        int r = run_steps(&c, plan_steps, ELEMENTSOF(plan_steps));
        if (r < 0) {
                spawn_plan_done(&c.plan);
                return r;
        }
        *ret = c.plan;
        return 0;
}

/* The directories a sandbox never shows (laptop.c's never[]); runtime_dir is filled. */
static void never_dirs(manager *m, char runtime_dir[PATH_MAX], const char *never[3]) {
        snprintf(runtime_dir, PATH_MAX, "%s", m->socket_path ? m->socket_path : "");
        char *slash = strrchr(runtime_dir, '/');
        if (slash && slash != runtime_dir)
                *slash = 0;
        never[0] = m->config->state_directory;
        never[1] = runtime_dir[0] ? runtime_dir : NULL;
        never[2] = NULL;
}

/* The plan steps' results and the machine's toolchains and caches for the
 * task: from the plan cache, or computed (and stored there when it may be). */
static int spawn_plan_load(spawn_ctx *c) {
        const plan_cached *e = plan_cache_find(c->m, c->p);
        char runtime_dir[PATH_MAX];
        const char *never[3];
        int r;

        if (e) {
                c->pl = &e->plan;
                for (size_t i = 0; e->ro && e->ro[i]; i++)
                        if ((r = laptop_strv_add(&c->lp.ro, e->ro[i])) < 0)
                                goto oom;
                for (size_t i = 0; e->cow && e->cow[i]; i++)
                        if ((r = laptop_strv_add(&c->lp.cow, e->cow[i])) < 0)
                                goto oom;
                c->toolchains_done = true;
                return 0;
        }
        never_dirs(c->m, runtime_dir, never);
        /* Watched before the probes run, so a change during them drops the result. */
        bool cache = plan_cache_watch(c->m, c->p, never) >= 0;
        r = run_steps(c, plan_steps, ELEMENTSOF(plan_steps));
        if (r < 0)
                return r;
        c->pl = &c->plan;
        if ((r = laptop_toolchains_build(c->p, c->m->home, never, &c->lp)) < 0)
                goto oom;
        c->toolchains_done = true;
        if (cache && (e = plan_cache_store(c->m, c->p, &c->plan, c->lp.ro, c->lp.cow)))
                c->pl = &e->plan;
        return 0;
oom:
        rpc_error_set(c->err, RPC_E_INTERNAL, "out of memory");
        return r;
}

/* ---- build steps: per spawn ------------------------------------------------- */

/* Toolchains, caches, credential files to hide, and PATH (laptop.c). */
static int step_toolchains(spawn_ctx *c) {
        manager *m = c->m;
        char runtime_dir[PATH_MAX];
        const char *never[3];
        never_dirs(m, runtime_dir, never);
        int r = c->toolchains_done ? 0 : laptop_toolchains_build(c->p, m->home, never, &c->lp);
        if (r >= 0) /* the credential files to hide: probed on every spawn, never cached */
                r = laptop_plan_finish(c->p, m->home, c->in->path, c->workspace, &c->lp);
        if (r < 0) {
                rpc_error_set(c->err, RPC_E_INTERNAL, "out of memory");
                return -ENOMEM;
        }
        return 0;
}

/* One variable the caller passes, checked against the task's PassEnvironment=. */
static int env_check(spawn_ctx *c, const spawn_env *e) {
        if (e->name_size >= 160) {
                rpc_error_set(c->err, RPC_E_INVALID_PARAMS, "environment variable name too long");
                return -EINVAL;
        }
        if (!env_name_valid(e->name)) {
                rpc_error_set(c->err, RPC_E_INVALID_PARAMS, "invalid environment variable name '%.64s'", e->name);
                return -EINVAL;
        }
        if (!env_always_allowed(e->name) && !strv_contains(c->p->pass_environment, e->name)) {
                rpc_error_set(c->err, RPC_E_POLICY_DENIED,
                              "environment variable %s is not allowed by task '%s' (add it to PassEnvironment=)", e->name, c->p->name);
                return -EPERM;
        }
        if (e->value_size > MAX_ENV_VALUE) {
                rpc_error_set(c->err, RPC_E_LIMIT_EXCEEDED, "environment variable %s is longer than 32768 bytes", e->name);
                return -E2BIG;
        }
        return 0;
}

/* argv, then the environment: a fixed allowlist, then the task's, then what the caller may pass. */
static int step_environment(spawn_ctx *c) {
        const task_policy *p = c->p;
        SpecWriter *sp = &c->sp;
        const char *user = getenv("USER");
        char buf[PATH_MAX + 16];
        bool have_lang = false;
        int r;

        for (size_t i = 0; c->argv[i]; i++)
                spec_put_arg(sp, c->argv[i]);
        _cleanup_free_ char *path_env = NULL;
        if (asprintf(&path_env, "PATH=%s", c->lp.path) < 0) {
                rpc_error_set(c->err, RPC_E_INTERNAL, "out of memory");
                return -ENOMEM;
        }
        spec_put_env(sp, path_env);
        snprintf(buf, sizeof(buf), "HOME=%s", c->m->home);
        spec_put_env(sp, buf);
        if (user && env_name_valid(user)) {
                snprintf(buf, sizeof(buf), "USER=%s", user);
                spec_put_env(sp, buf);
                snprintf(buf, sizeof(buf), "LOGNAME=%s", user);
                spec_put_env(sp, buf);
        }
        spec_put_env(sp, "SHELL=/bin/sh");
        if (c->creds)
                spec_put_env(sp, "AGENTD_BROKER=" SANDBOX_BROKER_PATH);
        if (p->network == NETWORK_PROXY) {
                /* Every common spelling, so curl, pip, npm, git and Python all find the proxy. */
                static const char *const vars[] = { "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy" };
                for (size_t i = 0; i < ELEMENTSOF(vars); i++) {
                        snprintf(buf, sizeof(buf), "%s=http://127.0.0.1:%u", vars[i], c->m->config->proxy_port);
                        spec_put_env(sp, buf);
                }
                spec_put_env(sp, "NO_PROXY=localhost,127.0.0.1,::1");
                spec_put_env(sp, "no_proxy=localhost,127.0.0.1,::1");
        }
        spec_put_env(sp, "AGENTD_SANDBOX=1");
        for (size_t i = 0; p->environment && p->environment[i]; i++)
                spec_put_env(sp, p->environment[i]);
        for (size_t i = 0; i < c->in->n_env; i++) {
                const spawn_env *e = &c->in->env[i];
                if ((r = env_check(c, e)) < 0)
                        return r;
                if (streq(e->name, "LANG"))
                        have_lang = true;
                _cleanup_free_ char *kv = NULL;
                if (asprintf(&kv, "%s=%s", e->name, e->value) < 0) {
                        rpc_error_set(c->err, RPC_E_INTERNAL, "out of memory");
                        return -ENOMEM;
                }
                spec_put_env(sp, kv);
        }
        if (!have_lang)
                spec_put_env(sp, "LANG=C.UTF-8");
        return 0;
}

/* Found once at start (sandboxes_init), like the zygote that runs it. */
static int step_helper(spawn_ctx *c) {
        c->helper = c->m->sandboxes->helper;
        if (!c->helper) {
                rpc_error_set(c->err, RPC_E_INTERNAL, "the sandbox helper agentd-sandbox is not installed");
                return -ENOENT;
        }
        return 0;
}

/* attach: the caller's stdin, stdout and stderr came with the request. */
static int step_attach(spawn_ctx *c) {
        if (!c->in->attach)
                return 0;
        for (int i = 0; i < 3; i++)
                c->client_fds[i] = TAKE_FD(c->in->client_fds[i]);
        if (c->client_fds[2] < 0) {
                rpc_error_set(c->err, RPC_E_INVALID_PARAMS, "'attach' needs stdin, stdout and stderr sent with the request (SCM_RIGHTS)");
                return -EINVAL;
        }
        for (int i = 1; i < 3; i++) {
                int r = sandbox_client_fd_check(c->client_fds[i], i == 1 ? "stdout" : "stderr", c->err);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* The record: the sandbox object, its state dir and meta.json. It exists
 * before anything runs: a sandbox that could not be recorded would be unknown
 * after a crash, so it is not started. */
static int step_record(spawn_ctx *c) {
        manager *m = c->m;
        const task_policy *p = c->p;
        char path[PATH_MAX];
        int r;

        sandbox *s = c->s = sandbox_alloc(m);
        if (!s) {
                rpc_error_set(c->err, RPC_E_INTERNAL, "out of memory");
                return -ENOMEM;
        }
        c->recorded = true;
        snprintf(s->id, sizeof(s->id), "%s", c->id);
        s->workspace_mode = (int) p->workspace;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        s->started_ns = (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
        s->task = strdup(p->name);
        s->workspace = c->workspace ? strdup(c->workspace) : strdup("");
        s->argv = TAKE_PTR(c->argv);
        s->tty = c->in->tty;
        s->started_at = now_realtime_msec();
        s->timeout_ms = p->timeout_usec / 1000;
        s->state = SANDBOX_STARTING;

        snprintf(path, sizeof(path), "%s/sandboxes", m->config->state_directory);
        if ((r = mkdir_private(path)) < 0) {
                rpc_error_set(c->err, RPC_E_INTERNAL, "cannot create %s: %s", path, strerror(-r));
                return r;
        }
        if (asprintf(&s->dir, "%s/sandboxes/%s", m->config->state_directory, s->id) < 0) {
                s->dir = NULL;
                rpc_error_set(c->err, RPC_E_INTERNAL, "out of memory");
                return -ENOMEM;
        }
        if (mkdir(s->dir, 0700) < 0) {
                r = -errno;
                rpc_error_set(c->err, RPC_E_INTERNAL, "cannot create %s: %s", s->dir, strerror(-r));
                return r;
        }
        if ((r = sandbox_save_meta(s)) < 0) {
                rpc_error_set(c->err, RPC_E_BACKEND_UNAVAILABLE, "cannot write the sandbox's record in %s: %s", s->dir, strerror(-r));
                return r;
        }
        return 0;
}

static void undo_record(spawn_ctx *c) {
        if (c->s->dir) {
                /* Nothing ran: without its record the directory is swept at the next start. */
                char path[PATH_MAX];
                snprintf(path, sizeof(path), "%s/meta.json", c->s->dir);
                (void) unlink(path);
        }
        sandbox_free(TAKE_PTR(c->s));
}

static int step_broker_socket(spawn_ctx *c) {
        char path[PATH_MAX];
        if (!c->creds)
                return 0;
        snprintf(path, sizeof(path), "%s/broker.sock", c->s->dir);
        int r = strlen(path) >= SPEC_SUN_PATH_MAX ? -ENAMETOOLONG
                                                  : server_listen_sandbox(c->m, c->s->id, path, &c->s->broker_listener);
        if (r < 0) {
                rpc_error_set(c->err, RPC_E_INTERNAL, "cannot create the sandbox's broker socket: %s", strerror(-r));
                return r;
        }
        spec_put_broker_socket(&c->sp, path);
        return 0;
}

static void undo_broker_socket(spawn_ctx *c) {
        server_close_sandbox(TAKE_PTR(c->s->broker_listener));
}

static int step_egress_proxy(spawn_ctx *c) {
        const task_policy *p = c->p;
        sandbox *s = c->s;
        char path[PATH_MAX];
        int r;

        if (p->network != NETWORK_PROXY)
                return 0;
        snprintf(path, sizeof(path), "%s/proxy.sock", s->dir);
        if (strlen(path) >= SPEC_SUN_PATH_MAX) {
                rpc_error_set(c->err, RPC_E_INTERNAL, "cannot create the sandbox's egress proxy socket: %s", strerror(ENAMETOOLONG));
                return -ENAMETOOLONG;
        }
        if ((r = netproxy_add_sandbox(c->m->proxy, s->id, p->name, p->allow, p->n_allow, path)) < 0) {
                rpc_error_set(c->err, RPC_E_INTERNAL, "cannot create the sandbox's egress proxy socket: %s", strerror(-r));
                return r;
        }
        s->proxied = true;
        if (p->ask && (r = netproxy_set_ask(c->m->proxy, s->id, p->ask_timeout_usec / 1000)) < 0) {
                rpc_error_set(c->err, RPC_E_INTERNAL, "cannot set up Network.Ask for the sandbox: %s", strerror(-r));
                netproxy_remove_sandbox(c->m->proxy, s->id);
                s->proxied = false;
                return r;
        }
        spec_put_proxy_socket(&c->sp, path);
        spec_put_proxy_port(&c->sp, c->m->config->proxy_port);
        return 0;
}

static void undo_egress_proxy(spawn_ctx *c) {
        if (c->s->proxied)
                netproxy_remove_sandbox(c->m->proxy, c->s->id);
        c->s->proxied = false;
}

static int mkdir_spec(spawn_ctx *c, const char *name, SpecKey key, char ret_path[PATH_MAX]) {
        snprintf(ret_path, PATH_MAX, "%s/%s", c->s->dir, name);
        int r = mkdir_private(ret_path);
        if (r < 0) {
                rpc_error_set(c->err, RPC_E_INTERNAL, "cannot create %s: %s", ret_path, strerror(-r));
                return r;
        }
        spec_write_str(&c->sp, key, ret_path);
        return 0;
}

/* The overlay's change layer (upper, work; ChangeMax= watched) and the caches' layers. */
static int step_dirs(spawn_ctx *c) {
        const task_policy *p = c->p;
        sandbox *s = c->s;
        char path[PATH_MAX];
        int r;

        if (p->workspace == WORKSPACE_OVERLAY) {
                if ((r = mkdir_spec(c, "upper", SPEC_KEY_upper, path)) < 0)
                        return r;
                if (p->change_max != POLICY_INFINITY &&
                    (r = change_watch_start(c->m->loop, path, p->change_max, sandbox_on_change_max, s, &s->change_watch)) < 0) {
                        rpc_error_set(c->err, RPC_E_INTERNAL, "cannot watch ChangeMax=: %s", strerror(-r));
                        return r;
                }
                if ((r = mkdir_spec(c, "work", SPEC_KEY_work, path)) < 0)
                        return r;
        }
        if (c->lp.cow) {
                if ((r = laptop_make_cow_dirs(s->dir, strv_length(c->lp.cow))) < 0) {
                        rpc_error_set(c->err, RPC_E_INTERNAL, "cannot create the cache layers in %s: %s", s->dir, strerror(-r));
                        return r;
                }
                snprintf(path, sizeof(path), "%s/cow", s->dir);
                spec_put_cow_dir(&c->sp, path);
        }
        return 0;
}

/* The mounts: the plan's, then this machine's toolchains, caches and hidden files. */
static int step_spec_mounts(spawn_ctx *c) {
        sandbox *s = c->s;
        SpecWriter *sp = &c->sp;
        if (c->workspace)
                spec_put_workspace(sp, c->workspace);
        spec_write_entries(sp, c->pl->mounts, c->pl->mounts_len);
        for (size_t i = 0; c->lp.ro && c->lp.ro[i]; i++)
                spec_put_ro(sp, c->lp.ro[i]);
        for (size_t i = 0; c->lp.cow && c->lp.cow[i]; i++)
                spec_put_cow(sp, c->lp.cow[i]);
        for (size_t i = 0; c->lp.hide && c->lp.hide[i]; i++)
                spec_put_hide(sp, c->lp.hide[i]);
        if (c->lp.agentctl)
                spec_put_agentctl(sp, c->lp.agentctl);
        if (laptop_group_note(c->workspace, c->p->workspace == WORKSPACE_OVERLAY, &s->workspace_note) < 0) {
                rpc_error_set(c->err, RPC_E_INTERNAL, "out of memory");
                return -ENOMEM;
        }
        if (s->workspace_note)
                log_notice("sandbox %s: %s", s->id, s->workspace_note);
        if (c->in->tty)
                spec_put_tty(sp, true);
        if (c->in->has_umask) {
                /* Files the command creates get the caller's umask, not agentd's (the unit's UMask=0077). */
                spec_put_umask(sp, (unsigned) c->in->umask);
        }
        return 0;
}

static int step_logs(spawn_ctx *c) {
        char path[PATH_MAX];
        for (int i = 0; i < 2; i++) {
                output_stream *o = &c->s->out[i];
                snprintf(path, sizeof(path), "%s/%s.log", c->s->dir, o->name);
                o->log_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
                if (o->log_fd < 0) {
                        int r = -errno;
                        rpc_error_set(c->err, RPC_E_INTERNAL, "cannot create %s: %s", path, strerror(-r));
                        return r;
                }
        }
        return 0;
}

/* The sandbox's cgroup and its limits; without one, which limits still hold
 * ([Daemon] RequireLimits= refuses the spawn when one it needs does not). */
static int step_cgroup(spawn_ctx *c) {
        manager *m = c->m;
        const task_policy *p = c->p;
        sandbox *s = c->s;
        _cleanup_error_ agentd_error why = {};
        int r;

        /* A warm sandbox of this task as it is now: its cgroup and hands are ready. */
        c->warm = pool_take(m, p);
        if (c->warm && c->warm->cgroup) {
                s->cgroup = TAKE_PTR(c->warm->cgroup);
                c->cg_fd = TAKE_FD(c->warm->cg_fd);
                s->limits_note = TAKE_PTR(c->warm->limits_note);
                r = spawn_limits_check(m, p, c->warm->unenforced, NULL, &s->limits_note, &why);
        } else if (m->sandboxes->cgroup.root) {
                cgroup_limits lim = { .memory_max = p->memory_max, .tasks_max = p->tasks_max,
                                      .cpu_weight = p->cpu_weight, .cpu_quota_percent = p->cpu_quota_percent };
                r = cgroup_create_sandbox(m, s->id, &lim, &s->cgroup, &c->cg_fd, &s->limits_note);
                if (r < 0) {
                        rpc_error_set(c->err, RPC_E_INTERNAL, "cannot create the sandbox cgroup: %s", strerror(-r));
                        return r;
                }
                r = spawn_limits_check(m, p, lim.unenforced, NULL, &s->limits_note, &why);
        } else
                r = spawn_limits_check(m, p, task_limits_asked(p), m->sandboxes->cgroup.status ? m->sandboxes->cgroup.status : "unavailable",
                                       &s->limits_note, &why);
        if (r < 0) {
                if (!error_is_set(&why))
                        error_set(&why, ERROR_BACKEND_UNAVAILABLE, r, "sandbox setup failed");
                error_move(c->err, &why);
                return r;
        }
        return 0;
}

static void undo_cgroup(spawn_ctx *c) {
        /* An unused warm sandbox still runs in it: end it first. */
        warm_sandbox_drop(c->m, TAKE_PTR(c->warm));
        if (c->s->cgroup)
                (void) cgroup_remove(c->s->cgroup);
}

/* The fds the helper gets: the spec (sealed memfd), the status socket, the
 * output pipes, /dev/null. Fixed child fd numbers: SPEC_FD_* (helper/spec.h). */
static int step_channels(spawn_ctx *c) {
        SpecWriter *sp = &c->sp;
        int r;

        spec_put_status_fd(sp, SPEC_FD_STATUS);
        if (c->pl->seccomp)
                spec_put_seccomp_fd(sp, SPEC_FD_SECCOMP);
        else
                spec_put_unsafe_no_seccomp(sp, true); /* the task said Seccomp=off; task show lists it */
        if (c->cg_fd >= 0)
                spec_put_cgroup_fd(sp, SPEC_FD_CGROUP);
        if (sp->oom) {
                rpc_error_set(c->err, RPC_E_INTERNAL, "out of memory");
                return -ENOMEM;
        }
        c->spec_fd = memfd_new_sealed("agentd-spec", sp->buf, sp->len);
        if (c->spec_fd < 0) {
                rpc_error_set(c->err, RPC_E_INTERNAL, "cannot pass the sandbox spec: %s", strerror(-c->spec_fd));
                return c->spec_fd;
        }
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, c->status_pair) < 0) {
                r = -errno;
                rpc_error_set(c->err, RPC_E_INTERNAL, "socketpair: %s", strerror(-r));
                return r;
        }
        c->devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (c->devnull < 0) {
                r = -errno;
                rpc_error_set(c->err, RPC_E_INTERNAL, "/dev/null: %s", strerror(-r));
                return r;
        }
        for (int i = 0; i < 2 && !c->in->tty; i++)
                if (pipe2(c->outp[i], O_CLOEXEC) < 0) {
                        r = -errno;
                        rpc_error_set(c->err, RPC_E_INTERNAL, "pipe: %s", strerror(-r));
                        return r;
                }
        return 0;
}

/* The caller's stdin reaches the sandbox through our pipe, never as its own open file. */
static int step_stdin_relay(spawn_ctx *c) {
        if (!c->in->attach)
                return 0;
        int r = stdin_relay_start(c->m->loop, TAKE_FD(c->client_fds[0]), &c->stdin_fd, &c->s->stdin_relay);
        if (r < 0) {
                rpc_error_set(c->err, r == -EINVAL ? RPC_E_INVALID_PARAMS : RPC_E_INTERNAL, "cannot relay stdin: %s",
                              r == -EINVAL ? "it is neither a file, a pipe, a socket nor a terminal" : strerror(-r));
                return r;
        }
        return 0;
}

static int step_exec(spawn_ctx *c) {
        bool tty = c->in->tty;
        int src[SPEC_FD_CGROUP + 1] = {
                [STDIN_FILENO] = c->in->attach ? c->stdin_fd : c->devnull,
                [STDOUT_FILENO] = tty ? c->devnull : c->outp[0][1],
                [STDERR_FILENO] = tty ? c->devnull : c->outp[1][1],
                [SPEC_FD_SPEC] = c->spec_fd,
                [SPEC_FD_STATUS] = c->status_pair[1],
                [SPEC_FD_SECCOMP] = c->pl->bpf_fd >= 0 ? c->pl->bpf_fd : c->devnull,
                [SPEC_FD_CGROUP] = c->cg_fd,
        };
        int r;

        if (c->warm) {
                /* One message: the warm init mounts the user's paths, pivots, confines and execs. */
                r = pool_attach(c->warm, src, c->spec_fd, c->status_pair[1]);
                if (r < 0) {
                        rpc_error_set(c->err, RPC_E_INTERNAL, "cannot attach to a warm sandbox: %s", strerror(-r));
                        return r;
                }
                c->pid = c->s->helper_pid = c->warm->pid;
                c->s->helper_pidfd = TAKE_FD(c->warm->pidfd);
                warm_sandbox_drop(c->m, TAKE_PTR(c->warm));
                c->from_pool = true;
                return 0;
        }
        r = sandbox_helper_start(c->m, c->helper, src, c->cg_fd >= 0 ? SPEC_FD_CGROUP + 1 : SPEC_FD_CGROUP, &c->pid);
        if (r < 0) {
                rpc_error_set(c->err, RPC_E_INTERNAL, "cannot start %s: %s", c->helper, strerror(-r));
                return r;
        }
        c->s->helper_pid = c->pid;
        c->s->helper_pidfd = sandbox_pidfd_open(c->pid);
        if (c->s->helper_pidfd < 0) {
                r = -errno;
                kill(c->pid, SIGKILL);
                waitpid(c->pid, NULL, 0);
                rpc_error_set(c->err, RPC_E_INTERNAL, "pidfd_open: %s", strerror(-r));
                return r;
        }
        return 0;
}

/* From here nothing fails: the parent keeps only its ends, and the loop watches them. */
static int step_wiring(spawn_ctx *c) {
        sandbox *s = c->s;
        int pipes[2] = { -1, -1 };

        c->spec_fd = safe_close(c->spec_fd);
        c->cg_fd = safe_close(c->cg_fd);
        c->devnull = safe_close(c->devnull);
        c->status_pair[1] = safe_close(c->status_pair[1]);
        c->stdin_fd = safe_close(c->stdin_fd);
        s->status_fd = TAKE_FD(c->status_pair[0]);
        for (int i = 0; i < 2 && !c->in->tty; i++) {
                c->outp[i][1] = safe_close(c->outp[i][1]);
                pipes[i] = TAKE_FD(c->outp[i][0]);
        }
        sandbox_watch(s, pipes, c->in->attach ? &c->client_fds[1] : (int[2]) { -1, -1 });
        if (c->in->attach || c->in->tty)
                s->owner = connection_ref(c->call->conn);

        (void) sandbox_save_meta(s);
        list_add_tail(&c->m->sandboxes->list, &s->link);
        c->m->sandboxes->n++;
        c->m->sandboxes->n_live++;
        s->spawn_call = TAKE_PTR(c->call);
        s->spawn_wait = c->in->wait;
        s->creds = TAKE_PTR(c->creds);
        return 0;
}

/* What ran, where, under which exact policy (hash of its canonical form). */
static int step_audit(spawn_ctx *c) {
        const task_policy *p = c->p;
        sandbox *s = c->s;
        json_object *ev = json_object_new_object();
        _cleanup_free_ char *canon = task_policy_canonical(p);
        unsigned char dg[32];
        char hexd[65] = "";
        unsigned int dl = 0;

        log_sandbox(LOG_INFO, s->id, s->task, "spawn", "sandbox %s: spawned task %s in %s (helper pid %d%s)", s->id, s->task,
                    s->workspace, (int) c->pid, c->from_pool ? ", warm" : "");
        if (canon && EVP_Digest(canon, strlen(canon), dg, &dl, EVP_sha256(), NULL) == 1)
                for (unsigned i = 0; i < 32; i++)
                        sprintf(hexd + 2 * i, "%02x", dg[i]);
        json_object_object_add(ev, "task", json_object_new_string(s->task));
        json_object_object_add(ev, "policy_sha256", json_object_new_string(hexd));
        json_object_object_add(ev, "policy_source", json_object_new_string(p->source));
        json_object *av = json_object_new_array();
        for (size_t i = 0; s->argv && s->argv[i]; i++)
                json_object_array_add(av, json_object_new_string(s->argv[i]));
        json_object_object_add(ev, "argv", av);
        json_object_object_add(ev, "workspace", json_object_new_string(s->workspace));
        _cleanup_strv_free_ char **caps = task_policy_capabilities(p);
        json_object *cv = json_object_new_array();
        for (size_t i = 0; caps && caps[i]; i++)
                json_object_array_add(cv, json_object_new_string(caps[i]));
        json_object_object_add(ev, "capabilities", cv);
        json_object_object_add(ev, "attached", json_object_new_boolean(c->in->attach || c->in->tty));
        _cleanup_free_ const char **names = calloc(c->in->n_env + 1, sizeof(char *));
        for (size_t i = 0; names && i < c->in->n_env; i++)
                names[i] = c->in->env[i].name;
        report_annotate_spawn(ev, s, names, p);
        audit_event(c->m, "sandbox.spawn", s->id, ev);
        return 0;
}

static const spawn_step build_steps[] = {
        { "toolchains", step_toolchains, NULL },
        { "environment", step_environment, NULL },
        { "helper", step_helper, NULL },
        { "attach", step_attach, NULL },
        { "record", step_record, undo_record },
        { "broker-socket", step_broker_socket, undo_broker_socket },
        { "egress-proxy", step_egress_proxy, undo_egress_proxy },
        { "dirs", step_dirs, NULL },
        { "spec-mounts", step_spec_mounts, NULL },
        { "logs", step_logs, NULL },
        { "cgroup", step_cgroup, undo_cgroup },
        { "channels", step_channels, NULL },
        { "stdin-relay", step_stdin_relay, NULL },
        { "exec", step_exec, NULL },
        { "wiring", step_wiring, NULL },
        { "audit", step_audit, NULL },
};

/* ---- the request ------------------------------------------------------------ */

/* A spawn in progress: Vault credentials may be issued (asynchronously) before
 * the sandbox is built; the request waits here with its params and the task's
 * policy as it was when the request came. */
typedef struct spawn_request {
        manager *m;
        rpc_call *call;
        spawn_params params;
        task_policy *policy;       /* a copy: the registry may be reloaded meanwhile */
        char id[16];
} spawn_request;

static void spawn_request_free(spawn_request *req) {
        spawn_params_done(&req->params);
        task_policy_free(req->policy);
        free(req);
}

static void make_id(char out[16]) {
        uint8_t r[6];
        if (getrandom(r, sizeof(r), 0) != sizeof(r)) {
                uint64_t t = now_msec() ^ (uint64_t) getpid();
                memcpy(r, &t, sizeof(r));
        }
        snprintf(out, 16, "%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3], r[4], r[5]);
}

/* The three tables in order. On success the sandbox owns *call and *creds. */
static int spawn_run(manager *m, spawn_params *in, const task_policy *p, sandbox_creds **creds, rpc_call **call,
                     const char *id, rpc_error *err) {
        spawn_ctx c = {
                .m = m, .in = in, .p = p, .creds = *creds, .call = *call, .id = id, .err = err,
                .plan = SPAWN_PLAN_INIT,
                .client_fds = { -1, -1, -1 },
                .spec_fd = -1, .cg_fd = -1, .devnull = -1, .stdin_fd = -1,
                .status_pair = { -1, -1 }, .outp = { { -1, -1 }, { -1, -1 } },
        };
        plan_cache_check(m);
        int r = run_steps(&c, request_steps, ELEMENTSOF(request_steps));
        if (r >= 0)
                r = spawn_plan_load(&c);
        if (r >= 0) {
                r = run_steps(&c, build_steps, ELEMENTSOF(build_steps));
                /* Failures once the sandbox had a record are logged (undo_record freed it). */
                if (r < 0 && c.recorded)
                        log_error("sandbox %s: %s", id, err->message);
        }
        if (r >= 0) {
                *creds = NULL;
                *call = NULL;
                /* Off this spawn's path: when it exits (sandbox.c), unless it took the last one. */
                if (!c.from_pool || pool_count_task(p->name) == 0)
                        pool_refill_later(m, p->name);
        }
        spawn_ctx_done(&c);
        return r;
}

void spawn_make_id(char out[16]) {
        make_id(out);
}

/* A warm sandbox's hands: the task's spawn_plan (the same mount-plan entries
 * a spawn of the task sends, with workspace_mode=none and a placeholder argv,
 * which the attach replaces), its seccomp program, its cgroup and a control
 * socket, started with ZYGOTE_WARM. */
int spawn_start_warm(manager *m, const task_policy *p, const char *id, warm_sandbox *w) {
        _cleanup_(spawn_plan_done) spawn_plan own = SPAWN_PLAN_INIT;
        _cleanup_close_ int spec_fd = -1, cg_fd = -1, devnull = -1, theirs = -1, ours = -1;
        _cleanup_free_ char *cgroup = NULL, *note = NULL;
        unsigned unenforced = 0;
        _cleanup_error_ rpc_error err = {};
        SpecWriter sp = { 0 };
        int pair[2], r;
        pid_t pid;

        if (!m->sandboxes->helper)
                return -ENOENT;
        plan_cache_check(m);
        const plan_cached *cached = plan_cache_find(m, p);
        if (!cached && (r = spawn_plan_prepare(m, p, &own, &err)) < 0)
                return r;
        const spawn_plan plan = cached ? cached->plan : own; /* a view: own is freed at return */
        if (m->sandboxes->cgroup.root) {
                cgroup_limits lim = { .memory_max = p->memory_max, .tasks_max = p->tasks_max,
                                      .cpu_weight = p->cpu_weight, .cpu_quota_percent = p->cpu_quota_percent };
                r = cgroup_create_sandbox(m, id, &lim, &cgroup, &cg_fd, &note);
                if (r < 0)
                        return r;
                unenforced = lim.unenforced;
        }
        spec_put_arg(&sp, "/bin/false"); /* never run: the spawn's argv comes with the attach */
        spec_write_entries(&sp, plan.mounts, plan.mounts_len);
        spec_put_workspace_mode(&sp, WORKSPACE_NONE);
        spec_put_status_fd(&sp, SPEC_FD_STATUS);
        if (plan.seccomp)
                spec_put_seccomp_fd(&sp, SPEC_FD_SECCOMP);
        else
                spec_put_unsafe_no_seccomp(&sp, true);
        if (cg_fd >= 0)
                spec_put_cgroup_fd(&sp, SPEC_FD_CGROUP);
        spec_fd = sp.oom ? -ENOMEM : memfd_new_sealed("agentd-spec", sp.buf, sp.len);
        free(sp.buf);
        if (spec_fd < 0)
                r = spec_fd;
        else if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
                r = -errno;
        else {
                ours = pair[0];
                theirs = pair[1];
                devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
                r = devnull < 0 ? -errno : 0;
        }
        if (r >= 0) {
                int src[SPEC_FD_CGROUP + 1] = {
                        [STDIN_FILENO] = devnull, [STDOUT_FILENO] = devnull, [STDERR_FILENO] = devnull,
                        [SPEC_FD_SPEC] = spec_fd, [SPEC_FD_STATUS] = theirs,
                        [SPEC_FD_SECCOMP] = plan.bpf_fd >= 0 ? plan.bpf_fd : devnull, [SPEC_FD_CGROUP] = cg_fd,
                };
                r = sandbox_helper_start_warm(m, m->sandboxes->helper, src, cg_fd >= 0 ? SPEC_FD_CGROUP + 1 : SPEC_FD_CGROUP, &pid);
        }
        if (r >= 0) {
                w->pidfd = sandbox_pidfd_open(pid);
                if (w->pidfd < 0) {
                        r = -errno;
                        kill(pid, SIGKILL);
                        waitpid(pid, NULL, 0);
                }
        }
        if (r < 0) {
                if (cgroup)
                        (void) cgroup_remove(cgroup);
                return r;
        }
        w->pid = pid;
        w->control = TAKE_FD(ours);
        w->cg_fd = TAKE_FD(cg_fd);
        w->cgroup = TAKE_PTR(cgroup);
        w->limits_note = TAKE_PTR(note);
        w->unenforced = unenforced;
        return 0;
}

static void on_creds_issued(sandbox_creds *creds, const char *error, void *userdata) {
        spawn_request *req = userdata;
        _cleanup_error_ rpc_error err = {};

        if (!creds) {
                char msg[800];
                snprintf(msg, sizeof(msg), "cannot issue this sandbox's credentials: %s", error ? error : "unknown error");
                rpc_call_error(req->call, RPC_E_BACKEND_UNAVAILABLE, msg);
                spawn_request_free(req);
                return;
        }
        int r = spawn_run(req->m, &req->params, req->policy, &creds, &req->call, req->id, &err);
        if (r < 0) {
                if (creds)
                        broker_release(req->m, creds);
                if (req->call)
                        rpc_call_error(req->call, error_is_set(&err) ? err.code : RPC_E_INTERNAL,
                                       error_is_set(&err) ? error_message(&err) : "spawn failed");
        }
        spawn_request_free(req);
}

int sandbox_spawn(rpc_ctx *ctx, spawn_params *params, rpc_error *err) {
        manager *m = ctx->m;
        char id[16];
        int r;

        make_id(id);
        const task_policy *p = policy_registry_find(m->tasks, params->task ? params->task : "default");
        if (p && p->vault_policies && p->vault_policies[0] && !m->sandboxes->locked_down) {
                const char *why = broker_unavailable_reason(m);
                if (why) {
                        rpc_error_set(err, RPC_E_BACKEND_UNAVAILABLE, "task '%s' needs Vault credentials (VaultPolicies=%s): %s",
                                      p->name, p->vault_policies[0], why);
                        spawn_params_done(params);
                        return -EOPNOTSUPP;
                }
                spawn_request *req = calloc(1, sizeof(*req));
                if (!req || task_policy_copy(p, &req->policy) < 0) {
                        free(req);
                        spawn_params_done(params);
                        return -ENOMEM;
                }
                req->m = m;
                req->params = *params;
                *params = (spawn_params) SPAWN_PARAMS_INIT;
                memcpy(req->id, id, sizeof(id));
                req->call = rpc_ctx_defer(ctx);
                r = req->call ? broker_issue(m, req->id, p->name, p->vault_policies, p->token_ttl_usec, on_creds_issued, req)
                              : -ENOMEM;
                if (r < 0) {
                        rpc_error_set(err, RPC_E_BACKEND_UNAVAILABLE, "cannot issue credentials: %s", strerror(-r));
                        req->call = NULL; /* dispatch answers through ctx->async */
                        spawn_request_free(req);
                        return r;
                }
                return 0;
        }

        sandbox_creds *creds = NULL;
        rpc_call *call = rpc_ctx_defer(ctx);
        if (!call) {
                spawn_params_done(params);
                return -ENOMEM;
        }
        r = spawn_run(m, params, p, &creds, &call, id, err);
        /* On failure dispatch answers the error through ctx->async. */
        spawn_params_done(params);
        return r;
}
