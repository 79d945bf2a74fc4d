/* The task registry: every *.task file of the search path plus the built-in tasks,
 * resolved by name (first directory wins), with the broken files of the load kept
 * as errors so the daemon can report them. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy-internal.h"

/* A tasks directory with more files than this is not a tasks directory. */
#define REGISTRY_FILES_MAX 4096U

struct policy_registry {
        task_policy **tasks;
        size_t n_tasks;
        char **claimed;          /* names decided by a higher-precedence entry, broken or not */
        policy_error *errors;
        size_t n_errors;
};

void policy_registry_free(policy_registry *r) {
        if (!r)
                return;
        for (size_t i = 0; i < r->n_tasks; i++)
                task_policy_free(r->tasks[i]);
        free(r->tasks);
        strv_free(r->claimed);
        free(r->errors);
        free(r);
}

static bool is_claimed(const policy_registry *r, const char *name) {
        for (char **i = r->claimed; i && *i; i++)
                if (streq(*i, name))
                        return true;
        return false;
}

static int add_task(policy_registry *r, task_policy *p) {
        task_policy **t = reallocarray(r->tasks, r->n_tasks + 1, sizeof(task_policy *));
        if (!t)
                return -ENOMEM;
        r->tasks = t;
        r->tasks[r->n_tasks++] = p;
        return 0;
}

static int add_error(policy_registry *r, const policy_error *e) {
        policy_error *n = reallocarray(r->errors, r->n_errors + 1, sizeof(policy_error));
        if (!n)
                return -ENOMEM;
        r->errors = n;
        r->errors[r->n_errors++] = *e;
        return 0;
}

/* A task whose file is broken keeps the definition it had in `previous`, if any. */
static int keep_previous(policy_registry *r, const policy_registry *previous, const char *name) {
        const task_policy *old = policy_registry_find(previous, name);
        task_policy *c = NULL;
        int k;

        if (!old)
                return 0;
        k = task_policy_copy(old, &c);
        if (k < 0)
                return k;
        k = add_task(r, c);
        if (k < 0)
                task_policy_free(c);
        return k;
}

/* Parse one candidate; claims the name whatever the outcome. */
static int consider(policy_registry *r, const policy_registry *previous, const char *name, const char *path,
                    const char *builtin_text, const char *home) {
        policy_error e = {};
        task_policy *p = NULL;
        int k;

        if (is_claimed(r, name))
                return 0;
        k = strv_push(&r->claimed, strdup(name));
        if (k < 0)
                return k;

        if (builtin_text) {
                _cleanup_free_ char *source = NULL;
                if (asprintf(&source, "builtin:%s.task", name) < 0)
                        return -ENOMEM;
                k = policy_parse_buffer(builtin_text, strlen(builtin_text), source, name, home, &p, &e);
        } else
                k = policy_parse_file(path, name, home, &p, &e);
        if (k == -ENOMEM)
                return k;
        if (k < 0) {
                if (!e.file[0])
                        policy_error_set(&e, path, 0, "cannot load: %s", strerror(-k));
                k = add_error(r, &e);
                if (k < 0)
                        return k;
                return keep_previous(r, previous, name);
        }
        k = add_task(r, p);
        if (k < 0)
                task_policy_free(p);
        return k;
}

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

static int load_dir(policy_registry *r, const policy_registry *previous, const char *dir, const char *home) {
        _cleanup_strv_free_ char **files = NULL;
        size_t n = 0;
        struct dirent *de;
        DIR *d;
        int k;

        d = opendir(dir);
        if (!d) {
                policy_error e = {};

                if (errno == ENOENT || errno == ENOTDIR)
                        return 0;
                policy_error_set(&e, dir, 0, "cannot open tasks directory: %s", strerror(errno));
                return add_error(r, &e);
        }
        while ((de = readdir(d))) {
                size_t len = strlen(de->d_name);

                if (len <= 5 || !streq(de->d_name + len - 5, ".task"))
                        continue;
                if (n >= REGISTRY_FILES_MAX)
                        break;
                k = strv_push(&files, strdup(de->d_name));
                if (k < 0) {
                        closedir(d);
                        return k;
                }
                n++;
        }
        closedir(d);
        /* readdir order is arbitrary; sort so errors and results are reproducible */
        if (n > 0)
                qsort(files, n, sizeof(char *), cmp_str);

        for (size_t i = 0; i < n; i++) {
                _cleanup_free_ char *path = NULL, *name = NULL;

                name = strndup(files[i], strlen(files[i]) - 5);
                if (!name || asprintf(&path, "%s/%s", dir, files[i]) < 0)
                        return -ENOMEM;
                if (!policy_name_is_valid(name)) {
                        policy_error e = {};
                        policy_error_set(&e, path, 0, "invalid task name '%.80s' (1-64 of A-Z a-z 0-9 _ . -); file ignored",
                                         name);
                        k = add_error(r, &e);
                } else
                        k = consider(r, previous, name, path, NULL, home);
                if (k < 0)
                        return k;
        }
        return 0;
}

static int cmp_task(const void *a, const void *b) {
        return strcmp((*(task_policy *const *) a)->name, (*(task_policy *const *) b)->name);
}

int policy_registry_load(const char *const *dirs, const char *home, const policy_registry *previous,
                         policy_registry **ret) {
        _cleanup_policy_registry_ policy_registry *r = NULL;
        int k;

        r = calloc(1, sizeof(*r));
        if (!r)
                return -ENOMEM;
        for (size_t i = 0; dirs && dirs[i]; i++) {
                k = load_dir(r, previous, dirs[i], home);
                if (k < 0)
                        return k;
        }
        for (size_t i = 0; i < policy_n_builtins; i++) {
                k = consider(r, previous, policy_builtins[i].name, NULL, policy_builtins[i].text, home);
                if (k < 0)
                        return k;
        }
        if (r->n_tasks > 0)
                qsort(r->tasks, r->n_tasks, sizeof(task_policy *), cmp_task);
        *ret = TAKE_PTR(r);
        return 0;
}

size_t policy_registry_count(const policy_registry *r) {
        return r ? r->n_tasks : 0;
}

const task_policy *policy_registry_get(const policy_registry *r, size_t i) {
        if (!r || i >= r->n_tasks)
                return NULL;
        return r->tasks[i];
}

const task_policy *policy_registry_find(const policy_registry *r, const char *name) {
        size_t lo = 0, hi;

        if (!r || !name)
                return NULL;
        hi = r->n_tasks;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int c = strcmp(name, r->tasks[mid]->name);
                if (c == 0)
                        return r->tasks[mid];
                if (c < 0)
                        hi = mid;
                else
                        lo = mid + 1;
        }
        return NULL;
}

size_t policy_registry_n_errors(const policy_registry *r) {
        return r ? r->n_errors : 0;
}

const policy_error *policy_registry_error(const policy_registry *r, size_t i) {
        if (!r || i >= r->n_errors)
                return NULL;
        return &r->errors[i];
}
