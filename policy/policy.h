/* Task policies (CONTRACT §6): the parser for *.task files, the value parsers it
 * is built from, the registry that resolves names across the search path, and the
 * capability summary shown to people. Pure code: no logging, no I/O beyond reading
 * the file it is given (and listing the directories it is given, for the registry). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

/* Hard limits on input: a task file is a few hundred bytes; anything near these
 * is a mistake or an attack, and is refused with a clear message. */
#define POLICY_FILE_MAX (1024U * 1024U)
#define POLICY_LINE_MAX 4096U
#define POLICY_NAME_MAX 64U

#define USEC_PER_SEC UINT64_C(1000000)
#define USEC_PER_MINUTE (UINT64_C(60) * USEC_PER_SEC)
#define POLICY_DEFAULT_TOKEN_TTL_USEC (UINT64_C(15) * USEC_PER_MINUTE)
#define POLICY_DEFAULT_ASK_TIMEOUT_USEC (UINT64_C(60) * USEC_PER_SEC)
#define POLICY_INFINITY UINT64_MAX
/* Sizes of the sandbox's own tmpfs mounts and its change layer, unless the task says otherwise. */
#define POLICY_DEFAULT_TMP_SIZE (UINT64_C(1) << 30)        /* /tmp: 1G */
#define POLICY_DEFAULT_SHM_SIZE (UINT64_C(256) << 20)      /* /dev/shm: 256M */
#define POLICY_DEFAULT_HOME_SIZE (UINT64_C(1) << 30)       /* the tmpfs $HOME: 1G */
#define POLICY_DEFAULT_CHANGE_MAX (UINT64_C(4) << 30)      /* the overlay's upper layer on disk: 4G */

/* Written only on failure. `key` is "Section.Key" when the error is about a key. */
typedef struct policy_error {
        char file[512];
        unsigned line;
        char key[64];
        char message[512];
} policy_error;

#include "workspace-mode.h" /* workspace_mode, shared with helper/spec.def */

typedef enum network_mode {
        NETWORK_NONE,
        NETWORK_PROXY,
} network_mode;

/* host is lowercased; for a wildcard ("*.example.com") host holds the suffix
 * without "*." and matches strict subdomains only. IPv6 literals are stored
 * without brackets. */
typedef struct policy_host {
        char *host;
        uint16_t port;
        bool wildcard;
        bool is_ip;
} policy_host;

/* Where a key's value came from; file is the policy's source
 * ("/path/x.task" or "builtin:default.task"). */
typedef struct policy_origin {
        const char *file;
        unsigned line;
} policy_origin;

/* Every key a task file may contain; the index of a key in this enum is also its
 * slot in task_policy.origins. */
typedef enum policy_key {
        POLICY_KEY_TASK_DESCRIPTION,
        POLICY_KEY_TASK_COMMAND,
        POLICY_KEY_TASK_TIMEOUT,
        POLICY_KEY_TASK_ENVIRONMENT,
        POLICY_KEY_TASK_PASS_ENVIRONMENT,
        POLICY_KEY_FS_WORKSPACE,
        POLICY_KEY_FS_READ_ONLY_PATHS,
        POLICY_KEY_FS_WRITABLE_PATHS,
        POLICY_KEY_FS_HIDE_PATHS,
        POLICY_KEY_FS_TMP_SIZE,
        POLICY_KEY_FS_SHM_SIZE,
        POLICY_KEY_FS_HOME_SIZE,
        POLICY_KEY_FS_TOOLCHAINS,
        POLICY_KEY_NETWORK_MODE,
        POLICY_KEY_NETWORK_ALLOW,
        POLICY_KEY_NETWORK_ASK,
        POLICY_KEY_NETWORK_ASK_TIMEOUT,
        POLICY_KEY_CREDENTIALS_VAULT_POLICIES,
        POLICY_KEY_CREDENTIALS_TTL,
        POLICY_KEY_LIMITS_MEMORY_MAX,
        POLICY_KEY_LIMITS_TASKS_MAX,
        POLICY_KEY_LIMITS_CPU_WEIGHT,
        POLICY_KEY_LIMITS_CPU_QUOTA,
        POLICY_KEY_LIMITS_CHANGE_MAX,
        POLICY_KEY_SECURITY_SECCOMP,
        POLICY_KEY_SECURITY_LANDLOCK,
        _POLICY_KEY_MAX,
} policy_key;

typedef struct task_policy {
        char *name;
        char *source;                /* file path or "builtin:NAME.task" */
        char *description;           /* NULL if unset */

        char **command;              /* NULL-terminated argv, NULL if unset */
        uint64_t timeout_usec;       /* 0 = none */
        char **environment;          /* [Task] Environment=KEY=VALUE..., NULL if none */
        char **pass_environment;     /* [Task] PassEnvironment=NAME..., names the caller may set */

        workspace_mode workspace;
        char **read_only_paths;      /* absolute, ~ expanded, NULL if none */
        char **writable_paths;
        char **hide_paths;
        uint64_t tmp_size;           /* bytes of the tmpfs /tmp; POLICY_INFINITY = the kernel's default (half of RAM) */
        uint64_t shm_size;           /* likewise /dev/shm */
        uint64_t home_size;          /* likewise the tmpfs home */
        bool toolchains_auto;        /* Toolchains=auto: every location of policy_toolchains_paths the machine has */
        char **toolchains;           /* Toolchains=<paths>; NULL and !toolchains_auto = none (the default) */

        network_mode network;
        policy_host *allow;
        size_t n_allow;
        bool ask;                    /* hold connections outside Allow= for a human's approval */
        uint64_t ask_timeout_usec;   /* no answer within this is a denial; default 60 s */

        char **vault_policies;       /* NULL = no credentials */
        uint64_t token_ttl_usec;     /* default 15 min */

        uint64_t memory_max;         /* bytes; 0 = unset, POLICY_INFINITY = "infinity" */
        uint64_t tasks_max;          /* 0 = unset, POLICY_INFINITY = "infinity" */
        unsigned cpu_weight;         /* 1..10000; 0 = unset */
        unsigned cpu_quota_percent;  /* 0 = unset; 100 = one CPU */
        uint64_t change_max;         /* bytes the overlay's change layer may use on disk; POLICY_INFINITY = unwatched */

        char *seccomp;               /* "default", "strict", "off" or an absolute path */
        bool landlock;

        policy_origin origins[_POLICY_KEY_MAX]; /* line 0 = key not set, default applies */
} task_policy;

void task_policy_free(task_policy *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(task_policy *, task_policy_free)
#define _cleanup_task_policy_ _cleanup_(task_policy_freep)

/* A fresh policy holding the defaults (what an empty file means). */
int task_policy_new(const char *name, const char *source, task_policy **ret);
int task_policy_copy(const task_policy *p, task_policy **ret);

/* name: the task name; NULL = derive it from the file name (minus ".task").
 * home: for "~/" expansion; NULL = a path starting with ~ is an error. */
int policy_parse_file(const char *path, const char *name, const char *home, task_policy **ret, policy_error *err);
int policy_parse_buffer(const char *buf, size_t len, const char *source, const char *name, const char *home,
                        task_policy **ret, policy_error *err);

/* section_key is "Section.Key", e.g. "Network.Allow". NULL if the key was not set. */
const policy_origin *task_policy_origin(const task_policy *p, const char *section_key);

/* Everything the policy grants beyond the built-in `default` ("network: github.com:443",
 * "credentials: ci-read", "writable: /x", "memory: 8G", "seccomp: off", ...), in a
 * stable order. Empty strv (not NULL) when there is nothing; NULL only on OOM. */
char **task_policy_capabilities(const task_policy *p);

/* A stable text form of every effective setting (not the source or origins), for
 * hashing and comparing policies. NULL on OOM. */
char *task_policy_canonical(const task_policy *p);

bool task_policy_seccomp_enabled(const task_policy *p);

/* Does host (lowercase or not) and port match an Allow entry? */
bool policy_host_match(const policy_host *h, const char *host, uint16_t port);

/* Value parsers, shared with the daemon's configuration. All return 0 or -EINVAL
 * (-ERANGE for overflow, -ENOMEM) and write the output only on success. */
bool policy_name_is_valid(const char *name);
int policy_parse_bool(const char *s, bool *ret);
int policy_parse_duration(const char *s, uint64_t *ret_usec);  /* "2s" "15min" "1h" "500ms" "90" (seconds) "1h 30min" */
int policy_parse_size(const char *s, uint64_t *ret);            /* "4G" "512M" "1K" "1024" "infinity" (1024-based) */
int policy_parse_host_port(const char *s, policy_host *ret);    /* "host:443" "*.x.org:443" "1.2.3.4:80" "[::1]:443" */
int policy_split_words(const char *s, char ***ret);             /* shell-like: quotes and backslashes, no expansion */
int policy_expand_path(const char *s, const char *home, char **ret); /* "~" "~/x" or absolute; normalised */
int policy_format_duration(uint64_t usec, char **ret);
int policy_format_size(uint64_t bytes, char **ret);

/* Built-in tasks, embedded at build time from policy/tasks/ (sorted by name). */
typedef struct policy_builtin {
        const char *name;
        const char *text;
} policy_builtin;
extern const policy_builtin policy_builtins[];
extern const size_t policy_n_builtins;

/* Laptop data, embedded at build time from policy/laptop/: NULL-terminated lists
 * of paths ("~/" = the caller's home) and the named Network.Allow sets (@crates). */
typedef struct policy_allow_set {
        const char *name;
        const char *const *hosts;     /* "host:port", NULL-terminated */
} policy_allow_set;
extern const char *const policy_toolchains_paths[];  /* shown read-only (Toolchains=auto) */
extern const char *const policy_caches_paths[];      /* writable through a copy-on-write layer */
extern const char *const policy_secrets_paths[];     /* hidden in every sandbox */
extern const policy_allow_set policy_allow_sets[];   /* terminated by { NULL, NULL } */
const policy_allow_set *policy_allow_set_find(const char *name);
bool task_policy_toolchains_enabled(const task_policy *p);

/* The registry: every task by name, resolved across the search path. */
typedef struct policy_registry policy_registry;

/* dirs in precedence order (highest first), NULL-terminated (dirs itself may be
 * NULL); the built-in tasks come last. A missing directory is skipped. The first
 * file with a given name wins, even if it is broken: a broken file never lets a
 * lower-precedence definition take its place silently. Instead, if `previous` (may
 * be NULL) has a task of that name, that definition is kept; otherwise the task is
 * absent until the file is fixed. Every broken file is reported as an error. */
int policy_registry_load(const char *const *dirs, const char *home, const policy_registry *previous,
                         policy_registry **ret);
size_t policy_registry_count(const policy_registry *r);
const task_policy *policy_registry_get(const policy_registry *r, size_t i);  /* sorted by name */
const task_policy *policy_registry_find(const policy_registry *r, const char *name);
size_t policy_registry_n_errors(const policy_registry *r);
const policy_error *policy_registry_error(const policy_registry *r, size_t i);
void policy_registry_free(policy_registry *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(policy_registry *, policy_registry_free)
#define _cleanup_policy_registry_ _cleanup_(policy_registry_freep)
