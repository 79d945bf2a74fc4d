/* What a sandbox needs from a developer's machine: the toolchains in the home
 * directory and elsewhere (read-only), the package caches (through a per-sandbox
 * copy-on-write layer), the caller's PATH filtered to what is visible inside,
 * agentctl itself, and the credential files that stay hidden whatever is shown.
 * The locations are data (policy/laptop/, *.list); this file decides which of them
 * this machine has. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "policy.h"

#include "spec.h"

#define LAPTOP_AGENTCTL_DIR SANDBOX_AGENTCTL_DIR /* where the helper binds agentctl= */
#define LAPTOP_DEFAULT_PATH "/usr/local/bin:/usr/bin:/bin"

typedef struct laptop_plan {
        char **ro;        /* toolchain trees shown read-only (absolute, existing) */
        char **cow;       /* caches shown writable through a copy-on-write layer */
        char **hide;      /* credential files and directories that exist on the host */
        char *path;       /* the PATH value inside */
        const char *agentctl; /* host path of the agentctl binary bound at SANDBOX_AGENTCTL_PATH, or NULL */
        char *note;       /* for the spawn reply and log: files that will be read-only inside and why, or NULL */
} laptop_plan;

void laptop_plan_done(laptop_plan *plan);

/* never[]: paths that must not be shown, nor any ancestor of them (agentd's state
 * and runtime directories), NULL-terminated. caller_path may be NULL (defaults). */
int laptop_plan_build(const task_policy *p, const char *home, const char *caller_path, const char *workspace,
                      const char *const *never, laptop_plan *ret);

/* laptop_plan_build in two parts: the toolchains and caches (ro, cow), which
 * depend only on the task and the machine (plan-cache.c keeps them per task),
 * then per spawn the credential files that exist (hide: never cached), agentctl
 * and PATH. */
int laptop_toolchains_build(const task_policy *p, const char *home, const char *const *never, laptop_plan *plan);
int laptop_plan_finish(const task_policy *p, const char *home, const char *caller_path, const char *workspace,
                       laptop_plan *plan);

/* Appends a copy of s to the NULL-terminated *v. */
int laptop_strv_add(char ***v, const char *s);

/* dir/cow/<i>/{upper,work} for each cow entry, mode 0700. */
int laptop_make_cow_dirs(const char *sandbox_dir, size_t n);

/* For an overlay workspace, when the user has other groups than their own: the
 * files (first few, from a bounded scan) whose group the sandbox cannot map, so
 * they will be read-only inside; *ret is NULL when there are none. */
int laptop_group_note(const char *workspace, bool overlay, char **ret);
