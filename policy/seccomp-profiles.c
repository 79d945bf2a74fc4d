/* The built-in seccomp profiles as rule tables, and the parser for profile files.
 * `default` denies what lets a sandboxed program reach beyond its sandbox (other
 * processes' memory, kernel keyrings, new namespaces, mounts, kernel modules, the
 * terminal of its parent) or widens the kernel's attack surface (bpf, io_uring,
 * userfaultfd, perf). `strict` adds networking and identity changes. */
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "policy-internal.h"
#include "seccomp-profiles.h"

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
#ifndef CLONE_NEWCGROUP
#define CLONE_NEWCGROUP 0x02000000
#endif

#define DENY(name) { .syscall = (name), .action = SECCOMP_ACTION_EPERM }
#define DENY_WITH(name, act) { .syscall = (name), .action = (act) }
/* (arg & flag) == flag: the flag is set, whatever else is */
#define DENY_FLAG(name, a, flag) \
        { .syscall = (name), .action = SECCOMP_ACTION_EPERM, .n_conds = 1, \
          .conds = { { .arg = (a), .op = SECCOMP_CMP_MASKED_EQ, .value = (flag), .mask = (flag) } } }
/* The kernel reads these arguments as 32-bit ints: compare only the low 32 bits, so
 * garbage in the upper half cannot slip past the filter. */
#define DENY_EQ32(name, a, v) \
        { .syscall = (name), .action = SECCOMP_ACTION_EPERM, .n_conds = 1, \
          .conds = { { .arg = (a), .op = SECCOMP_CMP_MASKED_EQ, .value = (v), .mask = UINT64_C(0xffffffff) } } }
/* personality(2): allow only 0 (PER_LINUX) and 0xffffffff (query). A rule may test
 * an argument once, so use: a 32-bit value is neither all zeros nor all ones iff
 * some bit i is 1 while bit i+1 (mod 32) is 0. One rule per adjacent pair. */
#define PERS(i) \
        { .syscall = "personality", .action = SECCOMP_ACTION_EPERM, .n_conds = 1, \
          .conds = { { .arg = 0, .op = SECCOMP_CMP_MASKED_EQ, .value = UINT64_C(1) << (i), \
                       .mask = (UINT64_C(1) << (i)) | (UINT64_C(1) << (((i) + 1) % 32)) } } }

static const seccomp_rule default_rules[] = {
        /* other processes' memory */
        DENY("ptrace"),
        DENY("process_vm_readv"),
        DENY("process_vm_writev"),
        DENY("pidfd_getfd"),
        /* large kernel attack surface, rarely needed by build tools */
        DENY("io_uring_setup"),
        DENY("io_uring_enter"),
        DENY("io_uring_register"),
        DENY("bpf"),
        DENY("perf_event_open"),
        DENY("userfaultfd"),
        /* kernel keyrings are shared beyond the sandbox */
        DENY("keyctl"),
        DENY("add_key"),
        DENY("request_key"),
        /* the sandbox's mounts and namespaces are fixed once it starts */
        DENY("mount"),
        DENY("umount"),
        DENY("umount2"),
        DENY("pivot_root"),
        DENY("chroot"),
        DENY("move_mount"),
        DENY("open_tree"),
        DENY("fsopen"),
        DENY("fsconfig"),
        DENY("fsmount"),
        DENY("fspick"),
        DENY("mount_setattr"),
        DENY("unshare"),
        DENY("setns"),
        DENY_FLAG("clone", 0, CLONE_NEWNS),
        DENY_FLAG("clone", 0, CLONE_NEWCGROUP),
        DENY_FLAG("clone", 0, CLONE_NEWUTS),
        DENY_FLAG("clone", 0, CLONE_NEWIPC),
        DENY_FLAG("clone", 0, CLONE_NEWUSER),
        DENY_FLAG("clone", 0, CLONE_NEWPID),
        DENY_FLAG("clone", 0, CLONE_NEWNET),
        /* clone3 passes its flags in memory, where a filter cannot look; ENOSYS makes
         * glibc fall back to clone(), whose flags the rules above check */
        DENY_WITH("clone3", SECCOMP_ACTION_ENOSYS),
        /* kernel code and the machine itself */
        DENY("kexec_load"),
        DENY("kexec_file_load"),
        DENY("init_module"),
        DENY("finit_module"),
        DENY("delete_module"),
        DENY("reboot"),
        DENY("swapon"),
        DENY("swapoff"),
        DENY("acct"),
        DENY("syslog"),
        DENY("quotactl"),
        DENY("quotactl_fd"),
        DENY("lookup_dcookie"),
        DENY("vhangup"),
        DENY("iopl"),
        DENY("ioperm"),
        DENY("uselib"),
        DENY("_sysctl"),
        DENY("nfsservctl"),
        /* the clock is shared with the host */
        DENY("settimeofday"),
        DENY("clock_settime"),
        DENY("clock_adjtime"),
        DENY("adjtimex"),
        DENY("stime"),
        /* file handles bypass path-based confinement */
        DENY("open_by_handle_at"),
        DENY("name_to_handle_at"),
        /* pushing input into the controlling terminal of whoever started us */
        DENY_EQ32("ioctl", 1, TIOCSTI),
        DENY_EQ32("ioctl", 1, TIOCLINUX),
        /* vsock reaches the hypervisor and other VMs, past the network namespace */
        DENY_EQ32("socket", 0, AF_VSOCK),
        PERS(0), PERS(1), PERS(2), PERS(3), PERS(4), PERS(5), PERS(6), PERS(7),
        PERS(8), PERS(9), PERS(10), PERS(11), PERS(12), PERS(13), PERS(14), PERS(15),
        PERS(16), PERS(17), PERS(18), PERS(19), PERS(20), PERS(21), PERS(22), PERS(23),
        PERS(24), PERS(25), PERS(26), PERS(27), PERS(28), PERS(29), PERS(30), PERS(31),
};

static const seccomp_rule strict_rules[] = {
        /* no sockets but local ones: AF_UNIX stays allowed */
        DENY_EQ32("socket", 0, AF_INET),
        DENY_EQ32("socket", 0, AF_INET6),
        DENY_EQ32("socket", 0, AF_NETLINK),
        DENY_EQ32("socket", 0, AF_PACKET),
        DENY_EQ32("socketpair", 0, AF_INET),
        DENY_EQ32("socketpair", 0, AF_INET6),
        /* no personality changes at all, not even queries */
        DENY("personality"),
        /* identity never changes inside a strict sandbox */
        DENY("setuid"),
        DENY("setgid"),
        DENY("setreuid"),
        DENY("setregid"),
        DENY("setresuid"),
        DENY("setresgid"),
        DENY("setfsuid"),
        DENY("setfsgid"),
        DENY("setgroups"),
        /* more ways to look into other processes */
        DENY("kcmp"),
        DENY("process_madvise"),
        DENY("memfd_secret"),
};

static const seccomp_rule *const default_tables[] = { default_rules };
static const size_t default_n[] = { ELEMENTSOF(default_rules) };
static const seccomp_rule *const strict_tables[] = { default_rules, strict_rules };
static const size_t strict_n[] = { ELEMENTSOF(default_rules), ELEMENTSOF(strict_rules) };

static const seccomp_profile profile_default = {
        .name = "default", .tables = default_tables, .n_rules = default_n, .n_tables = ELEMENTSOF(default_tables),
};
static const seccomp_profile profile_strict = {
        .name = "strict", .tables = strict_tables, .n_rules = strict_n, .n_tables = ELEMENTSOF(strict_tables),
};

const seccomp_profile *const seccomp_profiles[] = { &profile_default, &profile_strict };
const size_t seccomp_n_profiles = ELEMENTSOF(seccomp_profiles);

const seccomp_profile *seccomp_profile_find(const char *name) {
        if (!name)
                return NULL;
        for (size_t i = 0; i < seccomp_n_profiles; i++)
                if (streq(seccomp_profiles[i]->name, name))
                        return seccomp_profiles[i];
        return NULL;
}

const char *seccomp_action_to_string(seccomp_action a) {
        switch (a) {
        case SECCOMP_ACTION_EPERM:
                return "eperm";
        case SECCOMP_ACTION_ENOSYS:
                return "enosys";
        case SECCOMP_ACTION_KILL:
                return "kill";
        }
        return "?";
}

void seccomp_profile_file_free(seccomp_profile_file *f) {
        if (!f)
                return;
        for (size_t i = 0; i < f->n_rules; i++)
                free((char *) f->rules[i].syscall);
        free(f->rules);
        free(f);
}

static int rule_append(seccomp_profile_file *f, const seccomp_rule *r) {
        seccomp_rule *n;
        char *name;

        /* a profile file is small; this bounds what a hostile one can make us build */
        if (f->n_rules >= 4096)
                return -E2BIG;
        name = strdup(r->syscall);
        if (!name)
                return -ENOMEM;
        n = reallocarray(f->rules, f->n_rules + 1, sizeof(seccomp_rule));
        if (!n) {
                free(name);
                return -ENOMEM;
        }
        f->rules = n;
        f->rules[f->n_rules] = *r;
        f->rules[f->n_rules].syscall = name;
        f->n_rules++;
        return 0;
}

static int parse_value(const char *s, uint64_t *ret) {
        static const struct {
                const char *name;
                uint64_t value;
        } names[] = {
                { "AF_UNIX", AF_UNIX }, { "AF_INET", AF_INET }, { "AF_INET6", AF_INET6 },
                { "AF_NETLINK", AF_NETLINK }, { "AF_PACKET", AF_PACKET }, { "AF_VSOCK", AF_VSOCK },
                { "TIOCSTI", TIOCSTI }, { "TIOCLINUX", TIOCLINUX },
                { "CLONE_NEWNS", CLONE_NEWNS }, { "CLONE_NEWCGROUP", CLONE_NEWCGROUP },
                { "CLONE_NEWUTS", CLONE_NEWUTS }, { "CLONE_NEWIPC", CLONE_NEWIPC },
                { "CLONE_NEWUSER", CLONE_NEWUSER }, { "CLONE_NEWPID", CLONE_NEWPID },
                { "CLONE_NEWNET", CLONE_NEWNET },
        };
        char *end;
        unsigned long long v;

        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (streq(s, names[i].name)) {
                        *ret = names[i].value;
                        return 0;
                }
        if (!(s[0] >= '0' && s[0] <= '9'))
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 0);
        if (errno || *end)
                return -EINVAL;
        *ret = v;
        return 0;
}

static int parse_op(const char *s, seccomp_cmp *ret) {
        static const struct {
                const char *op;
                seccomp_cmp cmp;
        } ops[] = {
                { "==", SECCOMP_CMP_EQ }, { "!=", SECCOMP_CMP_NE }, { "<", SECCOMP_CMP_LT },
                { "<=", SECCOMP_CMP_LE }, { ">", SECCOMP_CMP_GT }, { ">=", SECCOMP_CMP_GE },
        };
        for (size_t i = 0; i < ELEMENTSOF(ops); i++)
                if (streq(s, ops[i].op)) {
                        *ret = ops[i].cmp;
                        return 0;
                }
        return -EINVAL;
}

static bool syscall_name_is_valid(const char *s) {
        size_t n = strlen(s);
        if (n == 0 || n > 64)
                return false;
        for (; *s; s++)
                if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
                        return false;
        return true;
}

static int parse_line(seccomp_profile_file *f, char **w, const char *source, unsigned line, policy_error *err) {
        seccomp_rule rule = {};
        size_t n = strv_length(w), i;

        if (streq(w[0], "include")) {
                const seccomp_profile *p = n == 2 ? seccomp_profile_find(w[1]) : NULL;
                if (!p)
                        return policy_error_set(err, source, line, "include: expected 'include default' or 'include strict'");
                for (size_t t = 0; t < p->n_tables; t++)
                        for (size_t k = 0; k < p->n_rules[t]; k++) {
                                int r = rule_append(f, &p->tables[t][k]);
                                if (r < 0)
                                        return r;
                        }
                return 0;
        }
        if (!syscall_name_is_valid(w[0]))
                return policy_error_set(err, source, line, "invalid syscall name '%.64s'", w[0]);
        rule.syscall = w[0];
        if (n < 2)
                return policy_error_set(err, source, line, "%.64s: missing action (eperm, enosys or kill)", w[0]);
        if (streq(w[1], "eperm") || streq(w[1], "errno"))
                rule.action = SECCOMP_ACTION_EPERM;
        else if (streq(w[1], "enosys"))
                rule.action = SECCOMP_ACTION_ENOSYS;
        else if (streq(w[1], "kill"))
                rule.action = SECCOMP_ACTION_KILL;
        else
                return policy_error_set(err, source, line, "%.64s: unknown action '%.64s' (eperm, enosys or kill)", w[0],
                                        w[1]);
        for (i = 2; i < n;) {
                seccomp_arg_cond c = {};
                unsigned arg;
                char extra;

                if (rule.n_conds >= SECCOMP_RULE_ARGS_MAX)
                        return policy_error_set(err, source, line, "at most %u conditions per rule", SECCOMP_RULE_ARGS_MAX);
                if (sscanf(w[i], "arg%u%c", &arg, &extra) != 1 || arg > 5)
                        return policy_error_set(err, source, line, "expected argN (N = 0..5), got '%.64s'", w[i]);
                for (unsigned k = 0; k < rule.n_conds; k++)
                        if (rule.conds[k].arg == arg)
                                return policy_error_set(err, source, line, "arg%u is tested twice; write two rules", arg);
                c.arg = arg;
                if (i + 1 < n && streq(w[i + 1], "&")) {
                        if (i + 4 >= n || parse_value(w[i + 2], &c.mask) < 0 || !streq(w[i + 3], "==") ||
                            parse_value(w[i + 4], &c.value) < 0)
                                return policy_error_set(err, source, line, "expected 'argN & MASK == VALUE'");
                        c.op = SECCOMP_CMP_MASKED_EQ;
                        i += 5;
                } else {
                        if (i + 2 >= n || parse_op(w[i + 1], &c.op) < 0 || parse_value(w[i + 2], &c.value) < 0)
                                return policy_error_set(err, source, line, "expected 'argN OP VALUE' (OP: == != < <= > >=)");
                        i += 3;
                }
                rule.conds[rule.n_conds++] = c;
        }
        return rule_append(f, &rule);
}

int seccomp_profile_parse_buffer(const char *buf, size_t len, const char *source, seccomp_profile_file **ret,
                                 policy_error *err) {
        _cleanup_(seccomp_profile_file_freep) seccomp_profile_file *f = NULL;
        const char *why = NULL;
        unsigned line = 0;
        size_t pos = 0;

        if (!source)
                source = "<buffer>";
        if (len > POLICY_FILE_MAX)
                return policy_error_set(err, source, 0, "file too large (at most %u bytes)", POLICY_FILE_MAX);
        if (policy_check_text(buf, len, &line, &why) < 0)
                return policy_error_set(err, source, line, "%s", why);
        f = calloc(1, sizeof(*f));
        if (!f)
                return -ENOMEM;

        line = 0;
        while (pos < len) {
                _cleanup_strv_free_ char **words = NULL;
                _cleanup_free_ char *l = NULL;
                const char *eol = memchr(buf + pos, '\n', len - pos);
                size_t n = eol ? (size_t) (eol - buf - pos) : len - pos;
                char *hash;
                int r;

                line++;
                l = strndup(buf + pos, n);
                if (!l)
                        return -ENOMEM;
                pos += n + 1;
                hash = strchr(l, '#');
                if (hash)
                        *hash = 0;
                for (char *c = l; *c; c++)
                        if (*c == '\t' || *c == '\r')
                                *c = ' ';
                r = policy_split_words(l, &words);
                if (r < 0)
                        return r == -ENOMEM ? r : policy_error_set(err, source, line, "unbalanced quotes");
                if (!words[0])
                        continue;
                r = parse_line(f, words, source, line, err);
                if (r == -E2BIG)
                        return policy_error_set(err, source, line, "too many rules");
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(f);
        return 0;
}

int seccomp_profile_parse_file(const char *path, seccomp_profile_file **ret, policy_error *err) {
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;
        int r;

        if (!path || path[0] != '/')
                return policy_error_set(err, path, 0, "a seccomp profile file must be an absolute path");
        r = policy_read_file(path, POLICY_FILE_MAX, &buf, &len);
        if (r < 0) {
                if (r == -EFBIG)
                        policy_error_set(err, path, 0, "file too large (at most %u bytes)", POLICY_FILE_MAX);
                else
                        policy_error_set(err, path, 0, "cannot read: %s", strerror(-r));
                return r;
        }
        return seccomp_profile_parse_buffer(buf, len, path, ret, err);
}
