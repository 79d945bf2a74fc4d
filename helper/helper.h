/* agentd-sandbox ("the hands"): shared types of the standalone sandbox helper.
 * Links nothing but libc; nothing here is used by the daemon itself. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <linux/filter.h>

#include "macro.h"
#include "spec.h"

#define SANDBOX_EXIT_SETUP 125
#define SANDBOX_EXIT_NOEXEC 126
#define SANDBOX_EXIT_NOTFOUND 127
#define SANDBOX_RUN_SIZE (UINT64_C(16) << 20) /* the tmpfs /run inside */

/* Failure detail, written only on failure: the step that failed and why. */
typedef struct SandboxError {
        const char *step;
        char message[512];
} SandboxError;

int sandbox_fail(SandboxError *err, const char *step, int r, const char *fmt, ...) _printf_(4, 5);

/* The parsed spec (keys: spec.def, which names the field each fills). All
 * strings point into the spec buffer, which lives as long as the process;
 * vectors are NULL-terminated arrays of such pointers. */
typedef struct SandboxSpec {
        char **argv;
        char **envp;
        const char *workspace;
        workspace_mode workspace_mode;
        bool workspace_mode_set;
        const char *upper;
        const char *work;
        const char *home;
        char **ro;
        char **rw;
        char **hide;
        char **cow;                /* shown writable through an overlay whose upper is cow_dir/<index>/upper */
        const char *cow_dir;
        const char *agentctl;      /* host file bound read-only at SANDBOX_AGENTCTL_PATH */
        const char *hostname;
        bool landlock;
        bool tty;
        bool unsafe_no_seccomp;
        int umask;                 /* the command's umask (the caller's); -1: inherited */
        int seccomp_fd;
        int cgroup_fd;
        int status_fd;
        const char *proxy_socket;  /* host Unix socket, reached as 127.0.0.1:proxy_port inside */
        unsigned proxy_port;
        const char *broker_socket; /* host Unix socket, bound at /run/agentd/broker.sock inside */
        uint64_t tmp_size, shm_size, home_size; /* bytes of those tmpfs mounts; 0 = the kernel's default */
        uint64_t nproc;            /* RLIMIT_NPROC inside the user namespace; 0 = left as it is */

        struct sock_filter *seccomp_insns; /* loaded from seccomp_fd */
        unsigned short seccomp_len;
} SandboxSpec;

/* spec.c */
int spec_read(int fd, char **ret_buf, size_t *ret_size, SandboxError *err);
int spec_parse(char *buf, size_t size, SandboxSpec *spec, SandboxError *err);
const char *spec_env_get(const SandboxSpec *spec, const char *key);

/* mounts.c: runs in the sandbox init, in its fresh mount namespace.
 * mounts_build_root = mounts_plan_system (the task's part: detached mounts,
 * nothing covered) + mounts_finish_root (the spawn's part, attach all, pivot;
 * takes the plan). */
typedef struct MountPlan MountPlan;
int mounts_build_root(const SandboxSpec *spec, SandboxError *err);
int mounts_plan_system(const SandboxSpec *spec, MountPlan **ret_plan, SandboxError *err);
int mounts_finish_root(const SandboxSpec *spec, MountPlan *plan, SandboxError *err);

/* agentd-sandbox.c: one status line (and optionally one fd) on the status channel. */
int status_send(int fd, int passfd, const char *fmt, ...) _printf_(3, 4);

/* warm.c: a warm sandbox (zygote.h: WARM_ATTACH_MAGIC) waits for its one attach. */
int warm_wait_attach(SandboxSpec *spec, char **ret_buf, size_t *ret_size, int parent, pid_t host_pid, SandboxError *err);
int warm_receive_status(int parent, int *ret_status_fd);

/* confine.c: runs in the command child right before execve. */
int confine_drop_capabilities(SandboxError *err);
int confine_landlock(const SandboxSpec *spec, SandboxError *err);
int confine_seccomp(const SandboxSpec *spec, SandboxError *err);

/* bridge.c: the TCP-to-Unix bridge of proxy_socket/proxy_port, run by the init. */
int bridge_open_socket(const SandboxSpec *spec, SandboxError *err);
int bridge_start(const SandboxSpec *spec, int socket_fd, SandboxError *err);
int bridge_wait_ready(int ready_fd, SandboxError *err);


/* Where the command runs inside the sandbox. */
static inline const char *spec_cwd(const SandboxSpec *spec) {
        return spec->workspace_mode == WORKSPACE_NONE || !spec->workspace ? spec->home : spec->workspace;
}
