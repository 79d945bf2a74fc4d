/* agentd-sandbox: the warm sandbox's one attach. A warm sandbox (the hands
 * started with the zygote's ZYGOTE_WARM flag, or `--warm`) is built from a
 * spec that holds only the task's part: the init has its namespaces, cgroup,
 * rlimit, hostname, loopback and the system part of the new root, and no
 * user path has been looked at. It announces `warm <host pid of the init>`
 * on its status channel (the control socket) and waits there for exactly one
 * message: WARM_ATTACH_MAGIC with WARM_ATTACH_FDS fds (stdio, the spawn's
 * full spec in a memfd, the spawn's status socket). The status socket takes
 * the control socket's fd number, so the control socket is gone before
 * anything runs; the rest is a cold spawn from the user's mounts on (the
 * same code). A warm sandbox serves one spawn and is never reused; EOF on
 * the control socket (the pool drained) ends it quietly. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helper.h"
#include "socket.h"
#include "zygote.h"

/* What the warm phase already applied must be what the spawn asks for:
 * a spawn of another policy fails closed instead of inheriting it. */
static int check_same_task(const SandboxSpec *warm, const SandboxSpec *spec, SandboxError *err) {
        if (warm->tmp_size != spec->tmp_size || warm->shm_size != spec->shm_size || warm->nproc != spec->nproc ||
            !streq(warm->hostname, spec->hostname) || warm->unsafe_no_seccomp != spec->unsafe_no_seccomp ||
            warm->status_fd != spec->status_fd || warm->seccomp_fd != spec->seccomp_fd || warm->cgroup_fd != spec->cgroup_fd)
                return sandbox_fail(err, "attach", -EINVAL, "the spawn's spec does not match the warm sandbox's task");
        if (warm->seccomp_len != spec->seccomp_len ||
            (warm->seccomp_len && memcmp(warm->seccomp_insns, spec->seccomp_insns, warm->seccomp_len * sizeof(struct sock_filter))))
                return sandbox_fail(err, "attach", -EINVAL, "the spawn's seccomp program is not the warm sandbox's");
        return 0;
}

/* One message, exactly as expected, or -EBADMSG; 0 with no fds on EOF. */
static int receive_attach(int control, int fds[WARM_ATTACH_FDS], SandboxError *err) {
        uint64_t magic = 0;
        size_t n = 0;
        SocketFdsInfo info;
        ssize_t got;

        /* More fds than expected: closed (n_closed) or dropped by the kernel
         * (MSG_CTRUNC); either fails below. */
        do
                got = socket_recv_fds(control, &magic, sizeof(magic), fds, &n, WARM_ATTACH_FDS, 0, &info);
        while (got == -EINTR);
        if (got < 0)
                return sandbox_fail(err, "attach", (int) got, "recvmsg: %s", strerror((int) -got));
        if (got == 0 && n == 0)
                return 0;
        if (info.foreign || info.n_closed > 0 || got != (ssize_t) sizeof(magic) || magic != WARM_ATTACH_MAGIC ||
            n != WARM_ATTACH_FDS || (info.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
                for (size_t i = 0; i < n; i++)
                        close(fds[i]);
                return sandbox_fail(err, "attach", -EBADMSG, "malformed attach message");
        }
        return (int) n;
}

/* In the warm init, right before the user's mounts: announce, wait, take
 * the spawn over. On success *spec is the spawn's (its strings in *ret_buf),
 * fds 0-2 and spec->status_fd are the spawn's, and the hands has the status
 * socket too (it reports the exit there). */
int warm_wait_attach(SandboxSpec *spec, char **ret_buf, size_t *ret_size, int parent, pid_t host_pid, SandboxError *err) {
        _cleanup_free_ char *buf = NULL;
        SandboxSpec attach;
        int fds[WARM_ATTACH_FDS], control = spec->status_fd, r;
        size_t size = 0;

        r = status_send(control, -1, "warm %d", (int) host_pid);
        if (r < 0)
                return sandbox_fail(err, "attach", r, "announce: %s", strerror(-r));
        r = receive_attach(control, fds, err);
        if (r == 0)
                _exit(0); /* the pool let go of us before any use */
        if (r < 0)
                return r;

        /* The status socket replaces the control socket at its fd number. */
        for (int i = 0; i < 3; i++)
                if (dup2(fds[i], i) < 0)
                        r = -errno;
        if (r >= 0 && dup2(fds[4], control) < 0)
                r = -errno;
        if (r >= 0)
                r = spec_read(fds[3], &buf, &size, err);
        else
                sandbox_fail(err, "attach", r, "install fds: %s", strerror(-r));
        for (int i = 0; i < WARM_ATTACH_FDS; i++)
                if (fds[i] != control && !(fds[i] >= 0 && fds[i] <= 2))
                        close(fds[i]);
        if (r < 0)
                return r;
        r = spec_parse(buf, size, &attach, err);
        if (r < 0)
                return r;
        r = check_same_task(spec, &attach, err);
        if (r < 0)
                return r;
        /* The hands reports the command's exit on the spawn's status socket. */
        r = status_send(parent, control, "status");
        if (r < 0)
                return sandbox_fail(err, "attach", r, "hand over the status socket: %s", strerror(-r));

        free(spec->argv);
        free(spec->seccomp_insns);
        *spec = attach;
        *ret_buf = TAKE_PTR(buf);
        *ret_size = size;
        return 0;
}

/* In the warm hands: the spawn's status socket, once the init is attached.
 * 0 with *ret_status_fd < 0: the init went away before any attach. */
int warm_receive_status(int parent, int *ret_status_fd) {
        char line[16];
        SocketFdsInfo info;
        size_t n_fds = 0;
        ssize_t n;
        int fd = -1;

        do
                n = socket_recv_fds(parent, line, sizeof(line), &fd, &n_fds, 1, 0, &info);
        while (n == -EINTR);
        if (n < 0)
                return (int) n;
        /* Exactly one fd in one SCM_RIGHTS message, or none at all. */
        if (n_fds > 0 && (info.foreign || info.n_rights != 1 || info.n_closed > 0 || (info.msg_flags & MSG_CTRUNC)))
                fd = safe_close(fd);
        if (n == 0 && fd < 0) {
                *ret_status_fd = -1;
                return 0;
        }
        if (fd < 0 || n != 7 || memcmp(line, "status\n", 7) != 0) {
                safe_close(fd);
                return -EBADMSG;
        }
        *ret_status_fd = fd;
        return 0;
}
