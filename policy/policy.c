/* task_policy objects: defaults, copy and free, and the two views the daemon shows
 * or hashes: the capability summary (what a task may do beyond `default`) and the
 * canonical text form. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy-internal.h"

int task_policy_new(const char *name, const char *source, task_policy **ret) {
        _cleanup_task_policy_ task_policy *p = NULL;

        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->name = strdup(name ? name : "");
        p->source = strdup(source ? source : "");
        p->seccomp = strdup("default");
        if (!p->name || !p->source || !p->seccomp)
                return -ENOMEM;
        p->workspace = WORKSPACE_OVERLAY;
        p->network = NETWORK_NONE;
        p->token_ttl_usec = POLICY_DEFAULT_TOKEN_TTL_USEC;
        p->tmp_size = POLICY_DEFAULT_TMP_SIZE;
        p->shm_size = POLICY_DEFAULT_SHM_SIZE;
        p->home_size = POLICY_DEFAULT_HOME_SIZE;
        p->change_max = POLICY_DEFAULT_CHANGE_MAX;
        p->ask_timeout_usec = POLICY_DEFAULT_ASK_TIMEOUT_USEC;
        p->landlock = true;
        *ret = TAKE_PTR(p);
        return 0;
}

void task_policy_free(task_policy *p) {
        if (!p)
                return;
        free(p->name);
        free(p->source);
        free(p->description);
        strv_free(p->command);
        strv_free(p->environment);
        strv_free(p->pass_environment);
        strv_free(p->read_only_paths);
        strv_free(p->writable_paths);
        strv_free(p->hide_paths);
        strv_free(p->toolchains);
        for (size_t i = 0; i < p->n_allow; i++)
                policy_host_done(&p->allow[i]);
        free(p->allow);
        strv_free(p->vault_policies);
        free(p->seccomp);
        free(p);
}

static int copy_strv(char **from, char ***to) {
        if (!from)
                return 0;
        *to = strv_copy(from);
        return *to ? 0 : -ENOMEM;
}

int task_policy_copy(const task_policy *p, task_policy **ret) {
        _cleanup_task_policy_ task_policy *c = NULL;

        if (!p)
                return -EINVAL;
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        *c = (task_policy) {
                .timeout_usec = p->timeout_usec,
                .workspace = p->workspace,
                .network = p->network,
                .ask = p->ask,
                .ask_timeout_usec = p->ask_timeout_usec,
                .token_ttl_usec = p->token_ttl_usec,
                .memory_max = p->memory_max,
                .tasks_max = p->tasks_max,
                .cpu_weight = p->cpu_weight,
                .cpu_quota_percent = p->cpu_quota_percent,
                .tmp_size = p->tmp_size,
                .shm_size = p->shm_size,
                .home_size = p->home_size,
                .change_max = p->change_max,
                .landlock = p->landlock,
                .toolchains_auto = p->toolchains_auto,
        };
        c->name = strdup(p->name);
        c->source = strdup(p->source);
        c->seccomp = strdup(p->seccomp);
        if (!c->name || !c->source || !c->seccomp)
                return -ENOMEM;
        if (p->description && !(c->description = strdup(p->description)))
                return -ENOMEM;
        if (copy_strv(p->command, &c->command) < 0 ||
            copy_strv(p->environment, &c->environment) < 0 ||
            copy_strv(p->pass_environment, &c->pass_environment) < 0 ||
            copy_strv(p->read_only_paths, &c->read_only_paths) < 0 ||
            copy_strv(p->writable_paths, &c->writable_paths) < 0 ||
            copy_strv(p->hide_paths, &c->hide_paths) < 0 ||
            copy_strv(p->toolchains, &c->toolchains) < 0 ||
            copy_strv(p->vault_policies, &c->vault_policies) < 0)
                return -ENOMEM;
        if (p->n_allow > 0) {
                c->allow = calloc(p->n_allow, sizeof(policy_host));
                if (!c->allow)
                        return -ENOMEM;
                for (size_t i = 0; i < p->n_allow; i++) {
                        c->allow[i] = p->allow[i];
                        c->allow[i].host = strdup(p->allow[i].host);
                        c->n_allow = i + 1;
                        if (!c->allow[i].host)
                                return -ENOMEM;
                }
        }
        /* origins point at the source string, which now lives in the copy */
        for (size_t i = 0; i < _POLICY_KEY_MAX; i++)
                c->origins[i] = (policy_origin) {
                        .file = p->origins[i].line > 0 ? c->source : NULL,
                        .line = p->origins[i].line,
                };
        *ret = TAKE_PTR(c);
        return 0;
}

bool task_policy_toolchains_enabled(const task_policy *p) {
        return p && (p->toolchains_auto || (p->toolchains && p->toolchains[0]));
}

const policy_allow_set *policy_allow_set_find(const char *name) {
        for (const policy_allow_set *s = policy_allow_sets; s->name; s++)
                if (streq(s->name, name))
                        return s;
        return NULL;
}

bool task_policy_seccomp_enabled(const task_policy *p) {
        return p && p->seccomp && !streq(p->seccomp, "off");
}

static int format_host(const policy_host *h, char **ret) {
        if (h->is_ip && strchr(h->host, ':'))
                return asprintf(ret, "[%s]:%u", h->host, h->port) < 0 ? -ENOMEM : 0;
        return asprintf(ret, "%s%s:%u", h->wildcard ? "*." : "", h->host, h->port) < 0 ? -ENOMEM : 0;
}

static int push_fmt(char ***l, const char *fmt, ...) _printf_(2, 3);
static int push_fmt(char ***l, const char *fmt, ...) {
        char *s = NULL;
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&s, fmt, ap);
        va_end(ap);
        if (r < 0)
                return -ENOMEM;
        return strv_push(l, s);
}

static const char *workspace_to_string(workspace_mode m) {
        switch (m) {
        case WORKSPACE_RO:
                return "ro";
        case WORKSPACE_RW:
                return "rw";
        case WORKSPACE_NONE:
                return "none";
        default:
                return "overlay";
        }
}

char **task_policy_capabilities(const task_policy *p) {
        _cleanup_strv_free_ char **l = NULL;
        int r = 0;

        if (!p)
                return NULL;
        l = calloc(1, sizeof(char *));
        if (!l)
                return NULL;

        /* ro, none and overlay keep the host workspace unchanged; rw does not */
        if (p->workspace == WORKSPACE_RW)
                r = push_fmt(&l, "workspace: rw (writes go straight to the host)");
        for (char **i = p->read_only_paths; r >= 0 && i && *i; i++)
                r = push_fmt(&l, "readable: %s", *i);
        for (char **i = p->writable_paths; r >= 0 && i && *i; i++)
                r = push_fmt(&l, "writable: %s", *i);
        for (char **i = p->toolchains; r >= 0 && i && *i; i++)
                r = push_fmt(&l, "toolchain (read-only): %s", *i);
        if (r >= 0 && p->network == NETWORK_PROXY && p->n_allow == 0)
                r = push_fmt(&l, "network: proxy (no host allowed)");
        for (size_t i = 0; r >= 0 && i < p->n_allow; i++) {
                _cleanup_free_ char *h = NULL;
                r = format_host(&p->allow[i], &h);
                if (r >= 0)
                        r = push_fmt(&l, "network: %s", h);
        }
        if (r >= 0 && p->ask)
                r = push_fmt(&l, "network: ask (a human may approve other hosts)");
        for (char **i = p->vault_policies; r >= 0 && i && *i; i++)
                r = push_fmt(&l, "credentials: %s", *i);
        if (r >= 0 && p->vault_policies && p->vault_policies[0] && p->token_ttl_usec != POLICY_DEFAULT_TOKEN_TTL_USEC) {
                _cleanup_free_ char *d = NULL;
                r = policy_format_duration(p->token_ttl_usec, &d);
                if (r >= 0)
                        r = push_fmt(&l, "credentials-ttl: %s", d);
        }
        for (char **i = p->environment; r >= 0 && i && *i; i++)
                r = push_fmt(&l, "environment: %.*s", (int) strcspn(*i, "="), *i);
        for (char **i = p->pass_environment; r >= 0 && i && *i; i++)
                r = push_fmt(&l, "pass-environment: %s", *i);
        if (r >= 0 && p->memory_max) {
                _cleanup_free_ char *sz = NULL;
                r = policy_format_size(p->memory_max, &sz);
                if (r >= 0)
                        r = push_fmt(&l, "memory: %s", sz);
        }
        if (r >= 0 && p->tasks_max == POLICY_INFINITY)
                r = push_fmt(&l, "tasks: infinity");
        else if (r >= 0 && p->tasks_max)
                r = push_fmt(&l, "tasks: %" PRIu64, p->tasks_max);
        if (r >= 0 && p->cpu_weight)
                r = push_fmt(&l, "cpu-weight: %u", p->cpu_weight);
        if (r >= 0 && p->cpu_quota_percent)
                r = push_fmt(&l, "cpu-quota: %u%%", p->cpu_quota_percent);
        if (r >= 0 && !task_policy_seccomp_enabled(p))
                r = push_fmt(&l, "seccomp: off");
        else if (r >= 0 && p->seccomp[0] == '/')
                r = push_fmt(&l, "seccomp: profile %s", p->seccomp);
        if (r >= 0 && !p->landlock)
                r = push_fmt(&l, "landlock: off");
        if (r < 0)
                return NULL;
        return TAKE_PTR(l);
}

/* Append "Key=" and each word quoted, then a newline. */
static int canon_list(FILE *f, const char *key, char **l) {
        fprintf(f, "%s=", key);
        for (size_t i = 0; l && l[i]; i++) {
                _cleanup_free_ char *q = NULL;
                if (policy_quote(l[i], &q) < 0)
                        return -ENOMEM;
                fprintf(f, "%s%s", i ? " " : "", q);
        }
        fputc('\n', f);
        return 0;
}

char *task_policy_canonical(const task_policy *p) {
        _cleanup_free_ char *buf = NULL, *desc = NULL;
        size_t size = 0;
        FILE *f;
        int r = 0;

        if (!p)
                return NULL;
        if (policy_quote(p->description ? p->description : "", &desc) < 0)
                return NULL;
        f = open_memstream(&buf, &size);
        if (!f)
                return NULL;

        /* fixed order and every key, defaults included, so equal policies hash equally */
        fprintf(f, "Name=%s\n", p->name);
        fprintf(f, "Task.Description=%s\n", desc);
        r = canon_list(f, "Task.Command", p->command);
        fprintf(f, "Task.Timeout=%" PRIu64 "\n", p->timeout_usec);
        if (r >= 0)
                r = canon_list(f, "Task.Environment", p->environment);
        if (r >= 0)
                r = canon_list(f, "Task.PassEnvironment", p->pass_environment);
        fprintf(f, "Filesystem.Workspace=%s\n", workspace_to_string(p->workspace));
        if (r >= 0)
                r = canon_list(f, "Filesystem.ReadOnlyPaths", p->read_only_paths);
        if (r >= 0)
                r = canon_list(f, "Filesystem.WritablePaths", p->writable_paths);
        if (r >= 0)
                r = canon_list(f, "Filesystem.HidePaths", p->hide_paths);
        fprintf(f, "Filesystem.TmpSize=%" PRIu64 "\n", p->tmp_size);
        fprintf(f, "Filesystem.ShmSize=%" PRIu64 "\n", p->shm_size);
        fprintf(f, "Filesystem.HomeSize=%" PRIu64 "\n", p->home_size);
        if (r >= 0 && p->toolchains_auto)
                fprintf(f, "Filesystem.Toolchains=auto\n");
        else if (r >= 0)
                r = canon_list(f, "Filesystem.Toolchains", p->toolchains);
        fprintf(f, "Network.Mode=%s\n", p->network == NETWORK_PROXY ? "proxy" : "none");
        fprintf(f, "Network.Allow=");
        for (size_t i = 0; r >= 0 && i < p->n_allow; i++) {
                _cleanup_free_ char *h = NULL;
                r = format_host(&p->allow[i], &h);
                if (r >= 0)
                        fprintf(f, "%s%s", i ? " " : "", h);
        }
        fputc('\n', f);
        fprintf(f, "Network.Ask=%s\n", p->ask ? "yes" : "no");
        fprintf(f, "Network.AskTimeout=%" PRIu64 "\n", p->ask_timeout_usec);
        if (r >= 0)
                r = canon_list(f, "Credentials.VaultPolicies", p->vault_policies);
        fprintf(f, "Credentials.TTL=%" PRIu64 "\n", p->token_ttl_usec);
        fprintf(f, "Limits.MemoryMax=%" PRIu64 "\n", p->memory_max);
        fprintf(f, "Limits.TasksMax=%" PRIu64 "\n", p->tasks_max);
        fprintf(f, "Limits.CPUWeight=%u\n", p->cpu_weight);
        fprintf(f, "Limits.CPUQuota=%u\n", p->cpu_quota_percent);
        fprintf(f, "Limits.ChangeMax=%" PRIu64 "\n", p->change_max);
        fprintf(f, "Security.Seccomp=%s\n", p->seccomp);
        fprintf(f, "Security.Landlock=%s\n", p->landlock ? "yes" : "no");

        if (fclose(f) != 0 || r < 0)
                return NULL;
        return TAKE_PTR(buf);
}
