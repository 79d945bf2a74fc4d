/* Seccomp profiles as data: the built-in `default` and `strict` rule tables, and a
 * parser for profile files. The daemon turns a rule list into BPF with libseccomp
 * (daemon/sandbox/seccomp-build.c); nothing here depends on libseccomp. The filter
 * allows what no rule names; rules deny. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy.h"

#define SECCOMP_RULE_ARGS_MAX 3U

typedef enum seccomp_action {
        SECCOMP_ACTION_EPERM,        /* fail with "Operation not permitted" */
        SECCOMP_ACTION_ENOSYS,       /* "not implemented": lets libc fall back (clone3 -> clone) */
        SECCOMP_ACTION_KILL,         /* kill the whole process */
} seccomp_action;

/* Mirrors libseccomp's scmp_compare, without depending on it. */
typedef enum seccomp_cmp {
        SECCOMP_CMP_NE,
        SECCOMP_CMP_LT,
        SECCOMP_CMP_LE,
        SECCOMP_CMP_EQ,
        SECCOMP_CMP_GE,
        SECCOMP_CMP_GT,
        SECCOMP_CMP_MASKED_EQ,       /* (arg & mask) == value */
} seccomp_cmp;

typedef struct seccomp_arg_cond {
        unsigned arg;                /* 0..5 */
        seccomp_cmp op;
        uint64_t value;
        uint64_t mask;               /* MASKED_EQ only */
} seccomp_arg_cond;

/* All conditions must hold (AND), on distinct arguments. No condition = always. */
typedef struct seccomp_rule {
        const char *syscall;
        seccomp_action action;
        unsigned n_conds;
        seccomp_arg_cond conds[SECCOMP_RULE_ARGS_MAX];
} seccomp_rule;

/* A profile is one or more rule tables applied together. Several rules for one
 * syscall are ORed; an unconditional rule for a syscall supersedes conditional
 * ones (the builder skips those). */
typedef struct seccomp_profile {
        const char *name;
        const seccomp_rule *const *tables;
        const size_t *n_rules;
        size_t n_tables;
} seccomp_profile;

/* "default" or "strict"; NULL if unknown. */
const seccomp_profile *seccomp_profile_find(const char *name);
extern const seccomp_profile *const seccomp_profiles[];
extern const size_t seccomp_n_profiles;

/* A profile file, parsed. Format, one rule per line, '#' starts a comment:
 *
 *     include default                       # start from a built-in profile
 *     ptrace eperm
 *     clone3 enosys
 *     socket eperm arg0 == AF_INET
 *     ioctl eperm arg1 & 0xffffffff == TIOCSTI
 *     clone eperm arg0 & CLONE_NEWUSER == CLONE_NEWUSER
 *
 * actions: eperm (or errno), enosys, kill; operators: == != < <= > >= and
 * "& MASK ==" (masked equality); values: decimal, 0x hex, or a few well-known
 * names (AF_*, TIOCSTI, TIOCLINUX, CLONE_NEW*). Syscall names are checked by the
 * builder, which knows the architecture. */
typedef struct seccomp_profile_file {
        seccomp_rule *rules;         /* syscall strings owned by the object */
        size_t n_rules;
} seccomp_profile_file;

void seccomp_profile_file_free(seccomp_profile_file *f);
DEFINE_TRIVIAL_CLEANUP_FUNC(seccomp_profile_file *, seccomp_profile_file_free)
int seccomp_profile_parse_buffer(const char *buf, size_t len, const char *source, seccomp_profile_file **ret,
                                 policy_error *err);
int seccomp_profile_parse_file(const char *path, seccomp_profile_file **ret, policy_error *err);

const char *seccomp_action_to_string(seccomp_action a);
