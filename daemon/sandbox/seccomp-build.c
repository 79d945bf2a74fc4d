/* Compile a seccomp profile (rule tables from policy/) into BPF with libseccomp and
 * hand back the raw program, so the sandbox helper only needs seccomp(2). */
#include "seccomp-build.h"

#include <errno.h>
#include <fcntl.h>
#include <seccomp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "macro.h"
#include "memfd.h"
#include "seccomp-profiles.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(scmp_filter_ctx, seccomp_release)
#define _cleanup_seccomp_ _cleanup_(seccomp_releasep)

/* One flat view over the rules of a built-in profile or of a profile file. */
typedef struct rule_list {
        const seccomp_rule **rules;
        size_t n;
        bool strict_names;   /* profile file: an unknown syscall is the author's typo */
} rule_list;

static uint32_t action_to_scmp(seccomp_action a) {
        switch (a) {
        case SECCOMP_ACTION_ENOSYS:
                return SCMP_ACT_ERRNO(ENOSYS);
        case SECCOMP_ACTION_KILL:
                return SCMP_ACT_KILL_PROCESS;
        case SECCOMP_ACTION_EPERM:
        default:
                return SCMP_ACT_ERRNO(EPERM);
        }
}

static enum scmp_compare cmp_to_scmp(seccomp_cmp c) {
        switch (c) {
        case SECCOMP_CMP_NE:
                return SCMP_CMP_NE;
        case SECCOMP_CMP_LT:
                return SCMP_CMP_LT;
        case SECCOMP_CMP_LE:
                return SCMP_CMP_LE;
        case SECCOMP_CMP_GE:
                return SCMP_CMP_GE;
        case SECCOMP_CMP_GT:
                return SCMP_CMP_GT;
        case SECCOMP_CMP_MASKED_EQ:
                return SCMP_CMP_MASKED_EQ;
        case SECCOMP_CMP_EQ:
        default:
                return SCMP_CMP_EQ;
        }
}

/* libseccomp keeps the first action for a syscall and ignores later conflicting
 * ones, so resolve overlaps here: an unconditional rule wins over conditional
 * rules for the same syscall, and the first unconditional rule wins. */
static bool rule_is_superseded(const rule_list *l, size_t i) {
        const seccomp_rule *r = l->rules[i];

        for (size_t j = 0; j < l->n; j++) {
                const seccomp_rule *o = l->rules[j];
                if (j == i || o->n_conds > 0 || !streq(o->syscall, r->syscall))
                        continue;
                if (r->n_conds > 0 || j < i)
                        return true;
        }
        return false;
}

static int add_rules(scmp_filter_ctx ctx, const rule_list *l, agentd_error *err) {
        for (size_t i = 0; i < l->n; i++) {
                const seccomp_rule *r = l->rules[i];
                struct scmp_arg_cmp cmp[SECCOMP_RULE_ARGS_MAX] = {};
                int nr, k;

                if (rule_is_superseded(l, i))
                        continue;
                nr = seccomp_syscall_resolve_name(r->syscall);
                if (nr == __NR_SCMP_ERROR) {
                        if (l->strict_names)
                                return error_set(err, ERROR_POLICY_DENIED, -EINVAL, "seccomp profile: unknown syscall '%s'", r->syscall);
                        continue;   /* a built-in rule for a syscall this libseccomp does not know */
                }
                if (r->n_conds > SECCOMP_RULE_ARGS_MAX)
                        return error_set(err, ERROR_POLICY_DENIED, -EINVAL, "seccomp profile: too many conditions for %s", r->syscall);
                for (unsigned c = 0; c < r->n_conds; c++) {
                        const seccomp_arg_cond *a = &r->conds[c];
                        cmp[c] = (struct scmp_arg_cmp) {
                                .arg = a->arg,
                                .op = cmp_to_scmp(a->op),
                                .datum_a = a->op == SECCOMP_CMP_MASKED_EQ ? a->mask : a->value,
                                .datum_b = a->op == SECCOMP_CMP_MASKED_EQ ? a->value : 0,
                        };
                }
                k = seccomp_rule_add_array(ctx, action_to_scmp(r->action), nr, r->n_conds, cmp);
                if (k < 0)
                        return error_set(err, ERROR_INTERNAL, k, "seccomp profile: cannot add the rule for %s: %s", r->syscall,
                                         strerror(-k));
        }
        return 0;
}

static int export_bpf(scmp_filter_ctx ctx, void **ret_bpf, size_t *ret_len, agentd_error *err) {
#if HAVE_SECCOMP_EXPORT_BPF_MEM
        _cleanup_free_ void *buf = NULL;
        size_t len = 0;
        int r;

        r = seccomp_export_bpf_mem(ctx, NULL, &len);
        if (r < 0)
                return error_set(err, ERROR_INTERNAL, r, "cannot export the seccomp program: %s", strerror(-r));
        buf = malloc(len ? len : 1);
        if (!buf)
                return -ENOMEM;
        r = seccomp_export_bpf_mem(ctx, buf, &len);
        if (r < 0)
                return error_set(err, ERROR_INTERNAL, r, "cannot export the seccomp program: %s", strerror(-r));
#else
        _cleanup_close_ int fd = -1;
        _cleanup_free_ void *buf = NULL;
        struct stat st;
        size_t len, done = 0;
        int r;

        /* libseccomp < 2.6 can only write to a file descriptor */
        fd = memfd_create("agentd-seccomp-export", MFD_CLOEXEC);
        if (fd < 0)
                return error_set(err, ERROR_INTERNAL, -errno, "cannot create a memfd: %m");
        r = seccomp_export_bpf(ctx, fd);
        if (r < 0)
                return error_set(err, ERROR_INTERNAL, r, "cannot export the seccomp program: %s", strerror(-r));
        if (fstat(fd, &st) < 0)
                return -errno;
        len = (size_t) st.st_size;
        buf = malloc(len ? len : 1);
        if (!buf)
                return -ENOMEM;
        while (done < len) {
                ssize_t k = pread(fd, (char *) buf + done, len - done, (off_t) done);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return -errno;
                if (k == 0)
                        return -EIO;
                done += (size_t) k;
        }
#endif
        /* struct sock_filter is 8 bytes; the kernel takes at most 4096 instructions */
        if (len == 0 || len % 8 != 0 || len / 8 > 4096)
                return error_set(err, ERROR_INTERNAL, -E2BIG, "seccomp program has an invalid size (%zu bytes)", len);
        *ret_bpf = TAKE_PTR(buf);
        *ret_len = len;
        return 0;
}

int seccomp_build_bpf(const char *profile_name, void **ret_bpf, size_t *ret_len, agentd_error *err) {
        _cleanup_(seccomp_profile_file_freep) seccomp_profile_file *file = NULL;
        _cleanup_free_ const seccomp_rule **rules = NULL;
        _cleanup_seccomp_ scmp_filter_ctx ctx = NULL;
        rule_list l = {};
        int r;

        if (!profile_name || !ret_bpf || !ret_len)
                return error_set(err, ERROR_POLICY_DENIED, -EINVAL, "no seccomp profile given");
        if (streq(profile_name, "off"))
                return error_set(err, ERROR_POLICY_DENIED, -EINVAL, "seccomp is off for this task; there is no program to build");

        if (profile_name[0] == '/') {
                policy_error e = {};

                r = seccomp_profile_parse_file(profile_name, &file, &e);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        return error_set(err, ERROR_POLICY_DENIED, r, "%s:%u: %s", e.file, e.line, e.message);
                rules = calloc(file->n_rules ? file->n_rules : 1, sizeof(seccomp_rule *));
                if (!rules)
                        return -ENOMEM;
                for (size_t i = 0; i < file->n_rules; i++)
                        rules[i] = &file->rules[i];
                l = (rule_list) { .rules = rules, .n = file->n_rules, .strict_names = true };
        } else {
                const seccomp_profile *p = seccomp_profile_find(profile_name);
                size_t n = 0, k = 0;

                if (!p)
                        return error_set(err, ERROR_POLICY_DENIED, -ENOENT, "unknown seccomp profile '%s' (expected default, strict, off "
                                         "or the absolute path of a profile file)", profile_name);
                for (size_t t = 0; t < p->n_tables; t++)
                        n += p->n_rules[t];
                rules = calloc(n ? n : 1, sizeof(seccomp_rule *));
                if (!rules)
                        return -ENOMEM;
                for (size_t t = 0; t < p->n_tables; t++)
                        for (size_t i = 0; i < p->n_rules[t]; i++)
                                rules[k++] = &p->tables[t][i];
                l = (rule_list) { .rules = rules, .n = n };
        }

        ctx = seccomp_init(SCMP_ACT_ALLOW);
        if (!ctx)
                return error_set(err, ERROR_INTERNAL, -ENOMEM, "cannot initialise libseccomp");
        /* only the native ABI is added: any other (x32, i386 via int 0x80) kills */
        r = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
        if (r < 0)
                return error_set(err, ERROR_INTERNAL, r, "cannot set the bad-architecture action: %s", strerror(-r));
        r = add_rules(ctx, &l, err);
        if (r < 0)
                return r;
        return export_bpf(ctx, ret_bpf, ret_len, err);
}

int seccomp_build_memfd(const char *profile_name, int *ret_fd, agentd_error *err) {
        _cleanup_free_ void *bpf = NULL;
        _cleanup_close_ int fd = -1;
        size_t len = 0;
        int r;

        if (!ret_fd)
                return -EINVAL;
        r = seccomp_build_bpf(profile_name, &bpf, &len, err);
        if (r < 0)
                return r;
        /* the sandbox helper must load exactly what was built */
        fd = memfd_new_sealed("agentd-seccomp", bpf, len);
        if (fd < 0)
                return error_set(err, ERROR_INTERNAL, fd, "cannot pass the seccomp program in a sealed memfd: %s", strerror(-fd));
        *ret_fd = TAKE_FD(fd);
        return 0;
}
