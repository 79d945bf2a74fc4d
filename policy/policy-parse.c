/* The *.task parser. libinih does the INI tokenizing; a line reader in front of it
 * hardens the input first, because inih's behaviour depends on how the distro built
 * it (Debian: 200-byte line buffer that splits longer lines, continuation lines,
 * ';' inline comments). The reader hands inih one logical line at a time, with
 * leading whitespace removed (so continuation never triggers) and the value
 * elided (so the buffer size never matters); the handler takes the value from the
 * reader's copy of the line. Errors stop the parse and name file:line and key. */
#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy-internal.h"

typedef struct key_def {
        const char *section;
        const char *name;
        policy_key id;
        bool list;
} key_def;

static const key_def keys[_POLICY_KEY_MAX] = {
        { "Task", "Description", POLICY_KEY_TASK_DESCRIPTION, false },
        { "Task", "Command", POLICY_KEY_TASK_COMMAND, false },
        { "Task", "Timeout", POLICY_KEY_TASK_TIMEOUT, false },
        { "Task", "Environment", POLICY_KEY_TASK_ENVIRONMENT, true },
        { "Task", "PassEnvironment", POLICY_KEY_TASK_PASS_ENVIRONMENT, true },
        { "Filesystem", "Workspace", POLICY_KEY_FS_WORKSPACE, false },
        { "Filesystem", "ReadOnlyPaths", POLICY_KEY_FS_READ_ONLY_PATHS, true },
        { "Filesystem", "WritablePaths", POLICY_KEY_FS_WRITABLE_PATHS, true },
        { "Filesystem", "HidePaths", POLICY_KEY_FS_HIDE_PATHS, true },
        { "Filesystem", "TmpSize", POLICY_KEY_FS_TMP_SIZE, false },
        { "Filesystem", "ShmSize", POLICY_KEY_FS_SHM_SIZE, false },
        { "Filesystem", "HomeSize", POLICY_KEY_FS_HOME_SIZE, false },
        { "Filesystem", "Toolchains", POLICY_KEY_FS_TOOLCHAINS, true },
        { "Network", "Mode", POLICY_KEY_NETWORK_MODE, false },
        { "Network", "Allow", POLICY_KEY_NETWORK_ALLOW, true },
        { "Network", "Ask", POLICY_KEY_NETWORK_ASK, false },
        { "Network", "AskTimeout", POLICY_KEY_NETWORK_ASK_TIMEOUT, false },
        { "Credentials", "VaultPolicies", POLICY_KEY_CREDENTIALS_VAULT_POLICIES, true },
        { "Credentials", "TTL", POLICY_KEY_CREDENTIALS_TTL, false },
        { "Limits", "MemoryMax", POLICY_KEY_LIMITS_MEMORY_MAX, false },
        { "Limits", "TasksMax", POLICY_KEY_LIMITS_TASKS_MAX, false },
        { "Limits", "CPUWeight", POLICY_KEY_LIMITS_CPU_WEIGHT, false },
        { "Limits", "CPUQuota", POLICY_KEY_LIMITS_CPU_QUOTA, false },
        { "Limits", "ChangeMax", POLICY_KEY_LIMITS_CHANGE_MAX, false },
        { "Security", "Seccomp", POLICY_KEY_SECURITY_SECCOMP, false },
        { "Security", "Landlock", POLICY_KEY_SECURITY_LANDLOCK, false },
};

static const char *const sections[] = { "Task", "Filesystem", "Network", "Credentials", "Limits", "Security" };

typedef struct parse_state {
        const char *buf;
        size_t len, pos;
        unsigned line;
        char cur[POLICY_LINE_MAX + 1];   /* the current line, leading whitespace removed */
        const char *value;               /* into cur: the raw value of a Key=Value line */

        task_policy *p;
        const char *home;
        policy_error *err;
        int error;                       /* first error; stops the parse */
} parse_state;

static int fail(parse_state *s, const key_def *k, int r, const char *fmt, ...) _printf_(4, 5);
static int fail(parse_state *s, const key_def *k, int r, const char *fmt, ...) {
        char key[64] = "";
        va_list ap;

        if (s->error < 0)
                return s->error;
        if (k)
                snprintf(key, sizeof(key), "%s.%s", k->section, k->name);
        if (s->err) {
                memset(s->err, 0, sizeof(*s->err));
                snprintf(s->err->file, sizeof(s->err->file), "%s", s->p->source);
                s->err->line = s->line;
                snprintf(s->err->key, sizeof(s->err->key), "%s", key);
                va_start(ap, fmt);
                vsnprintf(s->err->message, sizeof(s->err->message), fmt, ap);
                va_end(ap);
        }
        s->error = r < 0 ? r : -EINVAL;
        return s->error;
}

static bool is_blank(char c) {
        return c == ' ' || c == '\t';
}

static void rstrip(char *s) {
        size_t n = strlen(s);
        while (n > 0 && is_blank(s[n - 1]))
                s[--n] = 0;
}

/* '#' or ';' after whitespace and outside quotes starts a comment, as in the
 * CONTRACT §6 examples ("Workspace=overlay   # ..."). */
static void strip_inline_comment(char *v) {
        bool sq = false, dq = false;

        for (size_t i = 0; v[i]; i++) {
                char c = v[i];
                if (!sq && c == '\\' && v[i + 1]) {
                        i++;
                        continue;
                }
                if (c == '\'' && !dq)
                        sq = !sq;
                else if (c == '"' && !sq)
                        dq = !dq;
                else if (!sq && !dq && (c == '#' || c == ';') && i > 0 && is_blank(v[i - 1])) {
                        v[i] = 0;
                        break;
                }
        }
        rstrip(v);
}

static char *reader(char *str, int num, void *stream) {
        parse_state *s = stream;
        const char *start, *eol;
        size_t n;
        char *l, *eq;

        if (s->error < 0 || s->pos >= s->len || num < 8)
                return NULL;
        start = s->buf + s->pos;
        eol = memchr(start, '\n', s->len - s->pos);
        n = eol ? (size_t) (eol - start) : s->len - s->pos;
        s->pos += n + (eol ? 1 : 0);
        s->line++;
        if (n > 0 && start[n - 1] == '\r')
                n--;
        if (n > POLICY_LINE_MAX) {        /* checked before, but never overflow cur */
                fail(s, NULL, -EINVAL, "line longer than %u bytes", POLICY_LINE_MAX);
                return NULL;
        }
        memcpy(s->cur, start, n);
        s->cur[n] = 0;
        s->value = NULL;

        l = s->cur;
        if (s->line == 1 && strncmp(l, "\xef\xbb\xbf", 3) == 0)
                l += 3;
        while (is_blank(*l))
                l++;
        memmove(s->cur, l, strlen(l) + 1);
        rstrip(s->cur);
        l = s->cur;

        if (*l == 0 || *l == '#' || *l == ';') {
                snprintf(str, (size_t) num, "\n");
                return str;
        }

        if (*l == '[') {
                char *close = strchr(l, ']');
                char *rest;
                bool known = false;

                if (!close) {
                        fail(s, NULL, -EINVAL, "syntax error: section header without ']'");
                        return NULL;
                }
                rest = close + 1;
                strip_inline_comment(rest);
                if (*rest) {
                        fail(s, NULL, -EINVAL, "syntax error: text after section header");
                        return NULL;
                }
                *close = 0;
                for (size_t i = 0; i < ELEMENTSOF(sections); i++)
                        if (streq(l + 1, sections[i]))
                                known = true;
                if (!known) {
                        fail(s, NULL, -EINVAL, "unknown section [%.64s] (known: [Task] [Filesystem] [Network] "
                             "[Credentials] [Limits] [Security])", l + 1);
                        return NULL;
                }
                snprintf(str, (size_t) num, "[%s]\n", l + 1);
                return str;
        }

        eq = strchr(l, '=');
        if (!eq || memchr(l, ':', (size_t) (eq - l))) {
                fail(s, NULL, -EINVAL, "syntax error: expected Key=Value or [Section]");
                return NULL;
        }
        *eq = 0;
        rstrip(l);
        if (*l == 0) {
                fail(s, NULL, -EINVAL, "syntax error: empty key name");
                return NULL;
        }
        if (strlen(l) + 3 > (size_t) num || strlen(l) > 48) {
                /* longer than any key we know and than inih's name buffer */
                fail(s, NULL, -EINVAL, "unknown key '%.64s...'", l);
                return NULL;
        }
        l = eq + 1;
        while (is_blank(*l))
                l++;
        strip_inline_comment(l);
        s->value = l;

        snprintf(str, (size_t) num, "%s=\n", s->cur);
        return str;
}

static int add_paths(parse_state *s, const key_def *k, char ***list, char **words) {
        for (char **w = words; *w; w++) {
                char *path = NULL;
                int r = policy_expand_path(*w, s->home, &path);
                if (r == -ENOMEM)
                        return fail(s, k, r, "out of memory");
                if (r < 0)
                        return fail(s, k, r, "%s.%s: invalid path '%.256s' (expected an absolute path or ~/..., "
                                    "without '..')%s", k->section, k->name, *w,
                                    (*w)[0] == '~' && !s->home ? "; no home directory is known" : "");
                r = strv_push(list, path);
                if (r < 0)
                        return fail(s, k, r, "out of memory");
        }
        return 0;
}

static bool env_name_is_valid(const char *n, size_t len) {
        if (len == 0 || len > 256 || (n[0] >= '0' && n[0] <= '9'))
                return false;
        for (size_t i = 0; i < len; i++)
                if (!((n[i] >= 'A' && n[i] <= 'Z') || (n[i] >= 'a' && n[i] <= 'z') ||
                      (n[i] >= '0' && n[i] <= '9') || n[i] == '_'))
                        return false;
        return true;
}

static void list_reset(task_policy *p, policy_key id) {
        switch (id) {
        case POLICY_KEY_TASK_ENVIRONMENT:
                strv_free(TAKE_PTR(p->environment));
                break;
        case POLICY_KEY_TASK_PASS_ENVIRONMENT:
                strv_free(TAKE_PTR(p->pass_environment));
                break;
        case POLICY_KEY_FS_READ_ONLY_PATHS:
                strv_free(TAKE_PTR(p->read_only_paths));
                break;
        case POLICY_KEY_FS_WRITABLE_PATHS:
                strv_free(TAKE_PTR(p->writable_paths));
                break;
        case POLICY_KEY_FS_HIDE_PATHS:
                strv_free(TAKE_PTR(p->hide_paths));
                break;
        case POLICY_KEY_FS_TOOLCHAINS:
                strv_free(TAKE_PTR(p->toolchains));
                p->toolchains_auto = false;
                break;
        case POLICY_KEY_NETWORK_ALLOW:
                for (size_t i = 0; i < p->n_allow; i++)
                        policy_host_done(&p->allow[i]);
                free(TAKE_PTR(p->allow));
                p->n_allow = 0;
                break;
        case POLICY_KEY_CREDENTIALS_VAULT_POLICIES:
                strv_free(TAKE_PTR(p->vault_policies));
                break;
        default:
                break;
        }
}

static int add_allow_host(parse_state *s, const key_def *k, const char *word) {
        policy_host h;
        policy_host *a;
        int r = policy_parse_host_port(word, &h);

        if (r == -ENOMEM)
                return fail(s, k, r, "out of memory");
        if (r < 0)
                return fail(s, k, r, "Network.Allow: invalid entry '%.256s' (expected host:port, "
                            "*.domain:port, a.b.c.d:port, [v6]:port or @set; the port is required)", word);
        a = reallocarray(s->p->allow, s->p->n_allow + 1, sizeof(policy_host));
        if (!a) {
                policy_host_done(&h);
                return fail(s, k, -ENOMEM, "out of memory");
        }
        s->p->allow = a;
        s->p->allow[s->p->n_allow++] = h;
        return 0;
}

/* "@crates": every host of a named set (policy/laptop/allow/crates.hosts). */
static int add_allow_set(parse_state *s, const key_def *k, const char *name) {
        const policy_allow_set *set = policy_allow_set_find(name);

        if (!set) {
                char known[256] = "";
                for (const policy_allow_set *i = policy_allow_sets; i->name; i++)
                        snprintf(known + strlen(known), sizeof(known) - strlen(known), "%s@%s", *known ? " " : "", i->name);
                return fail(s, k, -EINVAL, "Network.Allow: unknown set '@%.64s' (known: %s)", name, known);
        }
        for (const char *const *h = set->hosts; *h; h++) {
                int r = add_allow_host(s, k, *h);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int parse_list(parse_state *s, const key_def *k, const char *v) {
        _cleanup_strv_free_ char **words = NULL;
        task_policy *p = s->p;
        int r;

        /* systemd semantics: an empty assignment resets the list */
        if (*v == 0) {
                list_reset(p, k->id);
                return 0;
        }
        r = policy_split_words(v, &words);
        if (r == -ENOMEM)
                return fail(s, k, r, "out of memory");
        if (r < 0)
                return fail(s, k, r, "%s.%s: unbalanced quotes or trailing backslash in '%.256s'", k->section, k->name, v);

        switch (k->id) {
        case POLICY_KEY_TASK_ENVIRONMENT:
                for (char **w = words; *w; w++) {
                        const char *e = strchr(*w, '=');
                        if (!e || !env_name_is_valid(*w, (size_t) (e - *w)))
                                return fail(s, k, -EINVAL, "Task.Environment: '%.256s' is not NAME=VALUE with a valid "
                                            "variable name", *w);
                }
                r = strv_extend_strv(&p->environment, words);
                break;
        case POLICY_KEY_TASK_PASS_ENVIRONMENT:
                for (char **w = words; *w; w++)
                        if (!env_name_is_valid(*w, strlen(*w)))
                                return fail(s, k, -EINVAL, "Task.PassEnvironment: '%.256s' is not a valid variable name", *w);
                r = strv_extend_strv(&p->pass_environment, words);
                break;
        case POLICY_KEY_FS_READ_ONLY_PATHS:
                return add_paths(s, k, &p->read_only_paths, words);
        case POLICY_KEY_FS_WRITABLE_PATHS:
                return add_paths(s, k, &p->writable_paths, words);
        case POLICY_KEY_FS_HIDE_PATHS:
                return add_paths(s, k, &p->hide_paths, words);
        case POLICY_KEY_FS_TOOLCHAINS:
                /* auto | none | paths: a keyword must stand alone, and replaces what came before */
                if ((streq(words[0], "auto") || streq(words[0], "none")) && !words[1]) {
                        list_reset(p, k->id);
                        p->toolchains_auto = streq(words[0], "auto");
                        return 0;
                }
                for (char **w = words; *w; w++)
                        if (streq(*w, "auto") || streq(*w, "none"))
                                return fail(s, k, -EINVAL, "Filesystem.Toolchains: '%s' must stand alone (auto, none or paths)", *w);
                p->toolchains_auto = false;
                return add_paths(s, k, &p->toolchains, words);
        case POLICY_KEY_NETWORK_ALLOW:
                for (char **w = words; *w; w++) {
                        r = (*w)[0] == '@' ? add_allow_set(s, k, *w + 1) : add_allow_host(s, k, *w);
                        if (r < 0)
                                return r;
                }
                return 0;
        case POLICY_KEY_CREDENTIALS_VAULT_POLICIES:
                if (streq(words[0], "none") && !words[1]) {
                        list_reset(p, k->id);
                        return 0;
                }
                for (char **w = words; *w; w++)
                        if (!policy_name_is_valid(*w) || streq(*w, "none") || streq(*w, "root"))
                                return fail(s, k, -EINVAL, "Credentials.VaultPolicies: invalid policy name '%.256s'%s", *w,
                                            streq(*w, "root") ? " (the root policy is never handed to a sandbox)" :
                                            streq(*w, "none") ? " ('none' must stand alone)" : "");
                r = strv_extend_strv(&p->vault_policies, words);
                break;
        default:
                return fail(s, k, -EINVAL, "internal error: not a list key");
        }
        if (r < 0)
                return fail(s, k, r, "out of memory");
        return 0;
}

static int parse_command(parse_state *s, const key_def *k, const char *v) {
        task_policy *p = s->p;
        char **argv = NULL;
        int r = policy_split_words(v, &argv);
        if (r == -ENOMEM)
                return fail(s, k, r, "out of memory");
        if (r < 0)
                return fail(s, k, r, "Task.Command: unbalanced quotes or trailing backslash in '%.256s'", v);
        if (!argv[0]) {
                strv_free(argv);
                return fail(s, k, -EINVAL, "Task.Command: no command");
        }
        strv_free(p->command);
        p->command = argv;
        return 0;
}

/* Filesystem.TmpSize=, ShmSize=, HomeSize= and Limits.ChangeMax=. */
static int parse_space_size(parse_state *s, const key_def *k, const char *v) {
        task_policy *p = s->p;
        uint64_t u;
        /* At least 1M: a smaller tmpfs or change layer is a typo, not a policy. */
        if (policy_parse_size(v, &u) < 0 || u < (UINT64_C(1) << 20))
                return fail(s, k, -EINVAL, "%s.%s: invalid size '%.256s' (at least 1M, e.g. 512M, 2G, infinity)",
                            k->section, k->name, v);
        if (k->id == POLICY_KEY_FS_TMP_SIZE)
                p->tmp_size = u;
        else if (k->id == POLICY_KEY_FS_SHM_SIZE)
                p->shm_size = u;
        else if (k->id == POLICY_KEY_FS_HOME_SIZE)
                p->home_size = u;
        else
                p->change_max = u;
        return 0;
}

static int parse_tasks_max(parse_state *s, const key_def *k, const char *v) {
        uint64_t u;
        const char *e;
        if (streq(v, "infinity"))
                u = POLICY_INFINITY;
        else if (policy_parse_size(v, &u) < 0 || u == 0 || u >= (UINT64_C(1) << 32) ||
                 (e = v + strspn(v, "0123456789"), *e))
                return fail(s, k, -EINVAL, "Limits.TasksMax: invalid value '%.256s' (a positive number or "
                            "infinity)", v);
        s->p->tasks_max = u;
        return 0;
}

static int parse_cpu_quota(parse_state *s, const key_def *k, const char *v) {
        size_t n = strlen(v);
        char num[16];
        uint64_t u;

        if (n < 2 || n > sizeof(num) || v[n - 1] != '%' || strspn(v, "0123456789") != n - 1)
                return fail(s, k, -EINVAL, "Limits.CPUQuota: invalid value '%.256s' (a percentage, e.g. 150%%)", v);
        memcpy(num, v, n - 1);
        num[n - 1] = 0;
        if (policy_parse_size(num, &u) < 0 || u < 1 || u > 100000)
                return fail(s, k, -EINVAL, "Limits.CPUQuota: invalid value '%.256s' (1%%..100000%%)", v);
        s->p->cpu_quota_percent = (unsigned) u;
        return 0;
}

static int parse_seccomp(parse_state *s, const key_def *k, const char *v) {
        task_policy *p = s->p;
        char *path = NULL;
        if (streq(v, "default") || streq(v, "strict") || streq(v, "off"))
                path = strdup(v);
        else {
                int r = policy_expand_path(v, s->home, &path);
                if (r == -ENOMEM)
                        return fail(s, k, r, "out of memory");
                if (r < 0)
                        return fail(s, k, r, "Security.Seccomp: invalid value '%.256s' (expected default, strict, "
                                    "off or the absolute path of a profile file)", v);
        }
        if (!path)
                return fail(s, k, -ENOMEM, "out of memory");
        free(p->seccomp);
        p->seccomp = path;
        return 0;
}

/* One case per scalar key; the longer ones have their own parse_*() above. */
static int parse_scalar(parse_state *s, const key_def *k, const char *v) {
        task_policy *p = s->p;
        uint64_t u;
        bool b;

        if (*v == 0)
                return fail(s, k, -EINVAL, "%s.%s: empty value (remove the line to get the default)", k->section, k->name);

        switch (k->id) {
        case POLICY_KEY_TASK_DESCRIPTION:
                free(p->description);
                p->description = strdup(v);
                if (!p->description)
                        return fail(s, k, -ENOMEM, "out of memory");
                return 0;
        case POLICY_KEY_TASK_COMMAND:
                return parse_command(s, k, v);
        case POLICY_KEY_TASK_TIMEOUT:
                if (streq(v, "infinity"))
                        u = 0;
                else if (policy_parse_duration(v, &u) < 0)
                        return fail(s, k, -EINVAL, "Task.Timeout: invalid duration '%.256s' (e.g. 90, 30s, 15min, 1h, "
                                    "500ms, infinity)", v);
                p->timeout_usec = u;
                return 0;
        case POLICY_KEY_FS_WORKSPACE:
                if (streq(v, "overlay"))
                        p->workspace = WORKSPACE_OVERLAY;
                else if (streq(v, "ro"))
                        p->workspace = WORKSPACE_RO;
                else if (streq(v, "rw"))
                        p->workspace = WORKSPACE_RW;
                else if (streq(v, "none"))
                        p->workspace = WORKSPACE_NONE;
                else
                        return fail(s, k, -EINVAL, "Filesystem.Workspace: invalid value '%.256s' (expected overlay, ro, rw "
                                    "or none)", v);
                return 0;
        case POLICY_KEY_NETWORK_MODE:
                if (streq(v, "none"))
                        p->network = NETWORK_NONE;
                else if (streq(v, "proxy"))
                        p->network = NETWORK_PROXY;
                else
                        return fail(s, k, -EINVAL, "Network.Mode: invalid value '%.256s' (expected none or proxy)", v);
                return 0;
        case POLICY_KEY_NETWORK_ASK:
                if (policy_parse_bool(v, &b) < 0)
                        return fail(s, k, -EINVAL, "Network.Ask: invalid boolean '%.256s' (yes/no/true/false/1/0/on/off)", v);
                p->ask = b;
                return 0;
        case POLICY_KEY_NETWORK_ASK_TIMEOUT:
                if (policy_parse_duration(v, &u) < 0 || u < USEC_PER_SEC || u > 3600 * USEC_PER_SEC)
                        return fail(s, k, -EINVAL, "Network.AskTimeout: invalid duration '%.256s' (1s..1h, e.g. 60s, 5min)", v);
                p->ask_timeout_usec = u;
                return 0;
        case POLICY_KEY_CREDENTIALS_TTL:
                if (policy_parse_duration(v, &u) < 0 || u < USEC_PER_SEC)
                        return fail(s, k, -EINVAL, "Credentials.TTL: invalid duration '%.256s' (at least 1s, e.g. 15min)", v);
                p->token_ttl_usec = u;
                return 0;
        case POLICY_KEY_LIMITS_MEMORY_MAX:
                if (policy_parse_size(v, &u) < 0 || u == 0)
                        return fail(s, k, -EINVAL, "Limits.MemoryMax: invalid size '%.256s' (e.g. 4G, 512M, bytes, "
                                    "infinity)", v);
                p->memory_max = u;
                return 0;
        case POLICY_KEY_FS_TMP_SIZE:
        case POLICY_KEY_FS_SHM_SIZE:
        case POLICY_KEY_FS_HOME_SIZE:
        case POLICY_KEY_LIMITS_CHANGE_MAX:
                return parse_space_size(s, k, v);
        case POLICY_KEY_LIMITS_TASKS_MAX:
                return parse_tasks_max(s, k, v);
        case POLICY_KEY_LIMITS_CPU_WEIGHT:
                if (policy_parse_size(v, &u) < 0 || v[strspn(v, "0123456789")] || u < 1 || u > 10000)
                        return fail(s, k, -EINVAL, "Limits.CPUWeight: invalid value '%.256s' (1..10000)", v);
                p->cpu_weight = (unsigned) u;
                return 0;
        case POLICY_KEY_LIMITS_CPU_QUOTA:
                return parse_cpu_quota(s, k, v);
        case POLICY_KEY_SECURITY_SECCOMP:
                return parse_seccomp(s, k, v);
        case POLICY_KEY_SECURITY_LANDLOCK:
                if (policy_parse_bool(v, &b) < 0)
                        return fail(s, k, -EINVAL, "Security.Landlock: invalid boolean '%.256s' (yes/no/true/false/1/0/"
                                    "on/off)", v);
                p->landlock = b;
                return 0;
        default:
                return fail(s, k, -EINVAL, "internal error: not a scalar key");
        }
}

static int handler(void *user, const char *section, const char *name, const char *value) {
        parse_state *s = user;
        const key_def *k = NULL;
        char *key_name;

        if (s->error < 0)
                return 0;
        /* The reader produced this line; anything else means inih and the reader disagree. */
        if (!s->value || !name || !value || *value) {
                fail(s, NULL, -EINVAL, "syntax error");
                return 0;
        }
        key_name = s->cur;
        if (!streq(key_name, name)) {
                fail(s, NULL, -EINVAL, "syntax error");
                return 0;
        }
        if (!section || !*section) {
                fail(s, NULL, -EINVAL, "%.64s= outside of a section (start with [Task])", name);
                return 0;
        }
        for (size_t i = 0; i < ELEMENTSOF(keys); i++)
                if (streq(keys[i].section, section) && streq(keys[i].name, name)) {
                        k = &keys[i];
                        break;
                }
        if (!k) {
                char key[64];
                snprintf(key, sizeof(key), "%.20s.%.40s", section, name);
                fail(s, NULL, -EINVAL, "unknown key %.64s= in [%.64s]", name, section);
                policy_error_set_key(s->err, key);
                return 0;
        }
        if (!k->list && s->p->origins[k->id].line != 0) {
                fail(s, k, -EINVAL, "%s.%s is set twice (first on line %u); it takes one value", k->section, k->name,
                     s->p->origins[k->id].line);
                return 0;
        }
        if ((k->list ? parse_list(s, k, s->value) : parse_scalar(s, k, s->value)) < 0)
                return 0;
        s->p->origins[k->id] = (policy_origin) { .file = s->p->source, .line = s->line };
        return 1;
}

/* Rules that involve more than one key, checked once the whole file is read. */
static int validate(parse_state *s) {
        task_policy *p = s->p;

        if (p->n_allow > 0 && p->network == NETWORK_NONE) {
                s->line = p->origins[POLICY_KEY_NETWORK_ALLOW].line;
                return fail(s, &keys[POLICY_KEY_NETWORK_ALLOW], -EINVAL,
                            "Network.Allow is set but Network.Mode is none; set Mode=proxy to allow these hosts");
        }
        if (p->ask && p->network == NETWORK_NONE) {
                s->line = p->origins[POLICY_KEY_NETWORK_ASK].line;
                return fail(s, &keys[POLICY_KEY_NETWORK_ASK], -EINVAL,
                            "Network.Ask is set but Network.Mode is none; set Mode=proxy to ask for hosts");
        }
        return 0;
}

int policy_parse_buffer(const char *buf, size_t len, const char *source, const char *name, const char *home,
                        task_policy **ret, policy_error *err) {
        _cleanup_task_policy_ task_policy *p = NULL;
        _cleanup_free_ char *derived = NULL;
        _cleanup_free_ parse_state *s = NULL;
        const char *why = NULL;
        unsigned line = 0;
        int r;

        if (!buf && len > 0)
                return -EINVAL;
        if (!source)
                source = "<buffer>";
        if (!name) {
                const char *b = strrchr(source, '/'), *dot;
                b = b ? b + 1 : source;
                if (strncmp(b, "builtin:", 8) == 0)
                        b += 8;
                dot = strrchr(b, '.');
                derived = dot && streq(dot, ".task") ? strndup(b, (size_t) (dot - b)) : strdup(b);
                if (!derived)
                        return -ENOMEM;
                name = derived;
        }
        if (!policy_name_is_valid(name))
                return policy_error_set(err, source, 0, "invalid task name '%.80s' (1-64 of A-Z a-z 0-9 _ . -)", name);
        if (len > POLICY_FILE_MAX)
                return policy_error_set(err, source, 0, "file too large (%zu bytes, at most %u)", len, POLICY_FILE_MAX);
        if (policy_check_text(buf, len, &line, &why) < 0)
                return policy_error_set(err, source, line, "%s", why);

        r = task_policy_new(name, source, &p);
        if (r < 0)
                return r;
        /* on the heap: the state holds a line buffer of POLICY_LINE_MAX bytes */
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->buf = buf;
        s->len = len;
        s->p = p;
        s->home = home;
        s->err = err;

        r = ini_parse_stream(reader, s, handler, s);
        if (s->error < 0)
                return s->error;
        if (r == -2)
                return -ENOMEM;
        if (r != 0) {
                s->line = r > 0 ? (unsigned) r : 0;
                return fail(s, NULL, -EINVAL, "syntax error");
        }
        r = validate(s);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(p);
        return 0;
}

int policy_parse_file(const char *path, const char *name, const char *home, task_policy **ret, policy_error *err) {
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;
        int r;

        if (!path)
                return -EINVAL;
        r = policy_read_file(path, POLICY_FILE_MAX, &buf, &len);
        if (r == -EFBIG) {
                policy_error_set(err, path, 0, "file too large (at most %u bytes)", POLICY_FILE_MAX);
                return r;
        }
        if (r < 0) {
                policy_error_set(err, path, 0, "cannot read: %s", strerror(-r));
                return r;
        }
        return policy_parse_buffer(buf, len, path, name, home, ret, err);
}

const policy_origin *task_policy_origin(const task_policy *p, const char *section_key) {
        const char *dot;

        if (!p || !section_key)
                return NULL;
        dot = strchr(section_key, '.');
        if (!dot)
                return NULL;
        for (size_t i = 0; i < ELEMENTSOF(keys); i++)
                if (strlen(keys[i].section) == (size_t) (dot - section_key) &&
                    strncmp(keys[i].section, section_key, (size_t) (dot - section_key)) == 0 &&
                    streq(keys[i].name, dot + 1))
                        return p->origins[keys[i].id].line > 0 ? &p->origins[keys[i].id] : NULL;
        return NULL;
}
