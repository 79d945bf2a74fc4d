/* agentd-sandbox: the last steps in the command child before execve: drop
 * every capability, Landlock (write access only beneath the writable places),
 * and the daemon's pre-built seccomp program. */
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/seccomp.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "helper.h"

/* Landlock UAPI up to ABI 7, spelled out: the distribution headers are older. */
#define LL_CREATE_RULESET_VERSION (1U << 0)
#define LL_RULE_PATH_BENEATH 1
#define LL_FS_EXECUTE (1ULL << 0)
#define LL_FS_WRITE_FILE (1ULL << 1)
#define LL_FS_READ_FILE (1ULL << 2)
#define LL_FS_READ_DIR (1ULL << 3)
#define LL_FS_REMOVE_DIR (1ULL << 4)
#define LL_FS_REMOVE_FILE (1ULL << 5)
#define LL_FS_MAKE_CHAR (1ULL << 6)
#define LL_FS_MAKE_DIR (1ULL << 7)
#define LL_FS_MAKE_REG (1ULL << 8)
#define LL_FS_MAKE_SOCK (1ULL << 9)
#define LL_FS_MAKE_FIFO (1ULL << 10)
#define LL_FS_MAKE_BLOCK (1ULL << 11)
#define LL_FS_MAKE_SYM (1ULL << 12)
#define LL_FS_REFER (1ULL << 13)    /* ABI 2 */
#define LL_FS_TRUNCATE (1ULL << 14) /* ABI 3 */
#define LL_FS_IOCTL_DEV (1ULL << 15) /* ABI 5 */
#define LL_SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0) /* ABI 6 */
#define LL_SCOPE_SIGNAL (1ULL << 1)               /* ABI 6 */
#define LL_FS_FILE_RIGHTS (LL_FS_EXECUTE | LL_FS_WRITE_FILE | LL_FS_READ_FILE | LL_FS_TRUNCATE | LL_FS_IOCTL_DEV)

struct ll_ruleset_attr {
        uint64_t handled_access_fs;
        uint64_t handled_access_net; /* ABI 4 */
        uint64_t scoped;             /* ABI 6 */
};

struct ll_path_beneath_attr {
        uint64_t allowed_access;
        int32_t parent_fd;
} __attribute__((packed));

int confine_drop_capabilities(SandboxError *err) {
        struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3 };
        struct __user_cap_data_struct data[2] = {};

        /* The bounding set first: dropping from it needs CAP_SETPCAP, which goes next. */
        for (unsigned long cap = 0; cap < 64; cap++)
                if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
                        if (errno == EINVAL)
                                break;
                        return sandbox_fail(err, "capabilities", -errno, "drop bounding cap %lu: %m", cap);
                }
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0)
                return sandbox_fail(err, "capabilities", -errno, "clear ambient: %m");
        if (syscall(SYS_capset, &header, data) < 0)
                return sandbox_fail(err, "capabilities", -errno, "capset: %m");
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                return sandbox_fail(err, "no_new_privs", -errno, "%m");
        return 0;
}

static int landlock_allow(int ruleset, const char *path, uint64_t handled, SandboxError *err) {
        _cleanup_close_ int fd = -1;
        struct ll_path_beneath_attr rule;
        struct stat st;

        fd = open(path, O_PATH | O_CLOEXEC);
        if (fd < 0) {
                if (errno == ENOENT)
                        return 0; /* nothing to write to there */
                return sandbox_fail(err, "landlock", -errno, "%s: %m", path);
        }
        if (fstat(fd, &st) < 0)
                return sandbox_fail(err, "landlock", -errno, "%s: %m", path);
        rule = (struct ll_path_beneath_attr) {
                .allowed_access = S_ISDIR(st.st_mode) ? handled : handled & LL_FS_FILE_RIGHTS,
                .parent_fd = fd,
        };
        if (syscall(SYS_landlock_add_rule, ruleset, LL_RULE_PATH_BENEATH, &rule, 0) < 0)
                return sandbox_fail(err, "landlock", -errno, "add rule %s: %m", path);
        return 0;
}

int confine_landlock(const SandboxSpec *spec, SandboxError *err) {
        _cleanup_close_ int ruleset = -1;
        struct ll_ruleset_attr attr = {};
        size_t attr_size;
        long abi;
        int r;

        if (!spec->landlock)
                return 0;

        abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LL_CREATE_RULESET_VERSION);
        if (abi < 1)
                return sandbox_fail(err, "landlock", abi < 0 ? -errno : -ENOSYS, "not available: %m");

        /* Reads stay unrestricted (the mounts decide what is visible); every write-type right is handled. */
        attr.handled_access_fs = LL_FS_WRITE_FILE | LL_FS_REMOVE_DIR | LL_FS_REMOVE_FILE | LL_FS_MAKE_CHAR |
                                 LL_FS_MAKE_DIR | LL_FS_MAKE_REG | LL_FS_MAKE_SOCK | LL_FS_MAKE_FIFO |
                                 LL_FS_MAKE_BLOCK | LL_FS_MAKE_SYM;
        if (abi >= 2)
                attr.handled_access_fs |= LL_FS_REFER;
        if (abi >= 3)
                attr.handled_access_fs |= LL_FS_TRUNCATE;
        if (abi >= 5)
                attr.handled_access_fs |= LL_FS_IOCTL_DEV;
        attr_size = sizeof(uint64_t);
        if (abi >= 6) {
                attr.scoped = LL_SCOPE_ABSTRACT_UNIX_SOCKET | LL_SCOPE_SIGNAL;
                attr_size = sizeof(attr);
        }

        ruleset = (int) syscall(SYS_landlock_create_ruleset, &attr, attr_size, 0);
        if (ruleset < 0)
                return sandbox_fail(err, "landlock", -errno, "create ruleset: %m");

        /* /dev is a read-only tmpfs: what is writable there are the bound
         * character devices, /dev/pts and /dev/shm. */
        r = landlock_allow(ruleset, "/tmp", attr.handled_access_fs, err);
        if (r >= 0)
                r = landlock_allow(ruleset, "/run", attr.handled_access_fs, err);
        if (r >= 0)
                r = landlock_allow(ruleset, "/dev", attr.handled_access_fs, err);
        if (r >= 0 && spec->home)
                r = landlock_allow(ruleset, spec->home, attr.handled_access_fs, err);
        if (r >= 0 && spec->workspace && spec->workspace_mode != WORKSPACE_RO)
                r = landlock_allow(ruleset, spec->workspace, attr.handled_access_fs, err);
        for (char **p = spec->rw; r >= 0 && *p; p++)
                r = landlock_allow(ruleset, *p, attr.handled_access_fs, err);
        for (char **p = spec->cow; r >= 0 && *p; p++)
                r = landlock_allow(ruleset, *p, attr.handled_access_fs, err);
        if (r < 0)
                return r;

        if (syscall(SYS_landlock_restrict_self, ruleset, 0) < 0)
                return sandbox_fail(err, "landlock", -errno, "restrict_self: %m");
        return 0;
}

int confine_seccomp(const SandboxSpec *spec, SandboxError *err) {
        struct sock_fprog prog = {
                .len = spec->seccomp_len,
                .filter = spec->seccomp_insns,
        };

        if (!spec->seccomp_insns)
                return spec->unsafe_no_seccomp ? 0 : sandbox_fail(err, "seccomp", -EPERM, "no program");
        if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
                return sandbox_fail(err, "seccomp", -errno, "load: %m");
        return 0;
}
