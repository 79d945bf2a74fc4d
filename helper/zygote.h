/* The zygote protocol between agentd and `agentd-sandbox --zygote` (shared by
 * both; plain C, no dependencies).
 *
 * agentd starts the zygote once, with its end of a SOCK_SEQPACKET socketpair
 * at fd ZYGOTE_FD. Per sandbox it sends one ZygoteRequest with the child's fds
 * attached (SCM_RIGHTS, in order: 0-2 stdio, 3 spec, 4 status socket, 5
 * seccomp BPF or /dev/null, 6 cgroup dir when given). The zygote clones a
 * hands with CLONE_PARENT (so agentd is its parent: it waits for it and its
 * PDEATHSIG points at agentd, as if agentd had exec'd it), installs the fds at
 * 0..n-1 and runs what `--spec-fd 3` runs. It answers each request with one
 * ZygoteReply: the hands' pid, or a negative errno when no process was
 * created. Anything malformed is refused (error reply, fds closed). */
#pragma once

#include <stdint.h>

#define ZYGOTE_FD 3
#define ZYGOTE_MAGIC 0x7a79676fU /* "zygo" */
#define ZYGOTE_FDS_MIN 6
#define ZYGOTE_FDS_MAX 7

typedef struct ZygoteRequest {
        uint32_t magic;
        uint32_t seq;   /* echoed in the reply */
        uint32_t n_fds; /* exactly as many as attached */
        uint32_t flags; /* ZYGOTE_WARM or 0; anything else is refused */
} ZygoteRequest;

/* The spec is a task's part only: the hands builds a warm sandbox that waits
 * on its status socket (the control socket) for one attach (helper/warm.c). */
#define ZYGOTE_WARM 1U

/* The one message a warm sandbox takes on its control socket: these 8 bytes
 * with WARM_ATTACH_FDS fds (SCM_RIGHTS, in order: stdin, stdout, stderr, the
 * spawn's full spec in a memfd, the spawn's status socket). */
#define WARM_ATTACH_MAGIC UINT64_C(0x686361747461676f) /* "ogattach" */
#define WARM_ATTACH_FDS 5

typedef struct ZygoteReply {
        uint32_t magic;
        uint32_t seq;
        int32_t pid;   /* > 0: the hands; < 0: -errno, nothing was started */
        uint32_t reserved;
} ZygoteReply;
