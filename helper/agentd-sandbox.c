/* agentd-sandbox ("the hands"): one per sandbox, exec'd by the daemon with
 * --spec-fd, or forked by `agentd-sandbox --zygote` (started once by the
 * daemon, see zygote.h), which saves the exec. It
 * reads the spec, enters a user namespace, clones the sandbox init into fresh
 * mount/pid/net/ipc/uts/cgroup namespaces, waits for it and reports the
 * outcome on status_fd. The init builds the root, forks the command and reaps.
 *
 * Status messages (one line each, in this order):
 *   started <host pid of the sandbox init>   (tty=1: the pty master rides along, SCM_RIGHTS)
 *   error <step>: <message>                  (setup failed; the command did not run)
 *   exit <code> | signal <N>                 (always last, sent by the hands as soon as
 *                                             the command is reaped; the hands itself
 *                                             exits after the init's namespace teardown)
 * Only the command (and what it leaves running) holds the daemon's stdio pipes
 * once it runs: EOF on them plus exit/signal is the end of the sandbox.
 * Optional sockets: proxy_socket= + proxy_port= (bridge.c: the daemon's proxy
 * as TCP 127.0.0.1:port inside), broker_socket= (bound read-only at
 * /run/agentd/broker.sock).
 * Exit code of the hands: the command's, 128+N for signal N, 125 when setup
 * failed, 127 when the command was not found. */
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "helper.h"
#include "socket.h"
#include "zygote.h"

#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef TIOCGPTPEER
#define TIOCGPTPEER _IO('T', 0x41)
#endif

/* struct clone_args up to CLONE_INTO_CGROUP (linux/sched.h clashes with sched.h). */
struct sandbox_clone_args {
        uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup;
};

extern char **environ;

static const int forwarded_signals[] = { SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 };

int status_send(int fd, int passfd, const char *fmt, ...) {
        char buf[640];
        va_list ap;
        ssize_t k;
        int n;

        va_start(ap, fmt);
        n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
        va_end(ap);
        if (n < 0)
                return -EINVAL;
        if ((size_t) n > sizeof(buf) - 2)
                n = sizeof(buf) - 2;
        buf[n++] = '\n';

        k = socket_send_fds(fd, buf, (size_t) n, &passfd, passfd >= 0 ? 1 : 0, 0);
        if (k >= 0)
                return 0;
        if (k == -ENOTSOCK && passfd < 0)
                return write(fd, buf, (size_t) n) == n ? 0 : -errno;
        return (int) k;
}

/* The one place setup failures are reported; without a status channel, stderr. */
static void report_error(int status_fd, const SandboxError *err) {
        if (status_fd < 0 || status_send(status_fd, -1, "error %s: %s", err->step, err->message) < 0)
                dprintf(STDERR_FILENO, "agentd-sandbox: error %s: %s\n", err->step, err->message);
}

static _Noreturn void fail(int status_fd, const SandboxError *err, int code) {
        report_error(status_fd, err);
        _exit(code);
}

static int write_file(const char *path, const char *content, SandboxError *err) {
        _cleanup_close_ int fd = -1;
        size_t l = strlen(content);

        fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, content, l) != (ssize_t) l)
                return sandbox_fail(err, "userns", -errno, "write %s: %m", path);
        return 0;
}

/* The user keeps their own uid and gid inside; nothing else is mapped. */
static int enter_user_namespace(SandboxError *err) {
        char map[64];
        uid_t uid = getuid();
        gid_t gid = getgid();
        int r;

        if (unshare(CLONE_NEWUSER) < 0)
                return sandbox_fail(err, "userns", -errno, "unshare: %m");
        r = write_file("/proc/self/setgroups", "deny", err);
        if (r < 0)
                return r;
        snprintf(map, sizeof(map), "%u %u 1", (unsigned) uid, (unsigned) uid);
        r = write_file("/proc/self/uid_map", map, err);
        if (r < 0)
                return r;
        snprintf(map, sizeof(map), "%u %u 1", (unsigned) gid, (unsigned) gid);
        return write_file("/proc/self/gid_map", map, err);
}

static int loopback_up(SandboxError *err) {
        _cleanup_close_ int fd = -1;
        struct ifreq ifr = { .ifr_name = "lo", .ifr_flags = IFF_UP | IFF_LOOPBACK | IFF_RUNNING };

        fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
                return sandbox_fail(err, "network", -errno, "bring up lo: %m");
        return 0;
}

/* execvpe's search, but against the sandbox's PATH and before anything is
 * announced, so a missing command fails setup instead of running nothing. */
static int resolve_command(const SandboxSpec *spec, char *buf, size_t size, const char **ret) {
        const char *name = spec->argv[0], *path;
        size_t nl = strlen(name);
        int r = -ENOENT;

        if (strchr(name, '/')) {
                *ret = name;
                return 0;
        }
        path = spec_env_get(spec, "PATH") ?: "/usr/local/bin:/usr/bin:/bin";
        while (path) {
                const char *colon = strchr(path, ':');
                size_t dl = colon ? (size_t) (colon - path) : strlen(path);
                struct stat st;

                if (dl + nl + 2 <= size) {
                        if (dl == 0)
                                buf[0] = '.', dl = 1;
                        else
                                memcpy(buf, path, dl);
                        buf[dl] = '/';
                        memcpy(buf + dl + 1, name, nl + 1);
                        if (stat(buf, &st) == 0 && S_ISREG(st.st_mode)) {
                                if (access(buf, X_OK) == 0) {
                                        *ret = buf;
                                        return 0;
                                }
                                r = -EACCES;
                        }
                }
                path = colon ? colon + 1 : NULL;
        }
        return r;
}

static void close_all_except(int a, int b) {
        int lo = a < b ? a : b, hi = a < b ? b : a;

        /* Keep a and b (may be -1) until execve; every other fd above 2 goes now. */
        if (lo < 3) {
                lo = hi;
                hi = -1;
        }
        if (lo < 3) {
                syscall(SYS_close_range, 3U, ~0U, 0);
                return;
        }
        syscall(SYS_close_range, 3U, (unsigned) lo - 1, 0);
        if (hi > lo) {
                syscall(SYS_close_range, (unsigned) lo + 1, (unsigned) hi - 1, 0);
                syscall(SYS_close_range, (unsigned) hi + 1, ~0U, 0);
        } else
                syscall(SYS_close_range, (unsigned) lo + 1, ~0U, 0);
        syscall(SYS_close_range, (unsigned) lo, (unsigned) lo, CLOSE_RANGE_CLOEXEC);
        if (hi > lo)
                syscall(SYS_close_range, (unsigned) hi, (unsigned) hi, CLOSE_RANGE_CLOEXEC);
}

static _Noreturn void run_command(const SandboxSpec *spec, int master, pid_t host_pid) {
        SandboxError err = {};
        char pathbuf[4096];
        const char *path;
        sigset_t none;
        int r;

        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);

        /* Always a new session: no TIOCSTI into a terminal we merely inherited. */
        if (setsid() < 0)
                fail(spec->status_fd, (sandbox_fail(&err, "setsid", -errno, "%m"), &err), SANDBOX_EXIT_SETUP);
        if (master >= 0) {
                int slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY);

                if (slave < 0 || ioctl(slave, TIOCSCTTY, 0) < 0 || dup2(slave, 0) < 0 || dup2(slave, 1) < 0 ||
                    dup2(slave, 2) < 0)
                        fail(spec->status_fd, (sandbox_fail(&err, "tty", -errno, "pty slave: %m"), &err), SANDBOX_EXIT_SETUP);
                if (slave > 2)
                        close(slave);
        }
        close_all_except(spec->status_fd, master);

        if (spec->umask >= 0)
                umask((mode_t) spec->umask);
        if (chdir(spec_cwd(spec) ?: "/") < 0)
                fail(spec->status_fd, (sandbox_fail(&err, "chdir", -errno, "%s: %m", spec_cwd(spec)), &err), SANDBOX_EXIT_SETUP);
        r = confine_drop_capabilities(&err);
        if (r >= 0)
                r = confine_landlock(spec, &err);
        if (r < 0)
                fail(spec->status_fd, &err, SANDBOX_EXIT_SETUP);

        r = resolve_command(spec, pathbuf, sizeof(pathbuf), &path);
        if (r < 0) {
                errno = -r;
                sandbox_fail(&err, "exec", r, "%s: %m", spec->argv[0]);
                fail(spec->status_fd, &err, r == -ENOENT ? SANDBOX_EXIT_NOTFOUND : SANDBOX_EXIT_NOEXEC);
        }

        if (status_send(spec->status_fd, master, "started %d", (int) host_pid) < 0)
                _exit(SANDBOX_EXIT_SETUP); /* nobody listens: do not run unobserved */
        if (master >= 0)
                close(master);

        r = confine_seccomp(spec, &err);
        if (r < 0)
                fail(spec->status_fd, &err, SANDBOX_EXIT_SETUP);
        execve(path, spec->argv, spec->envp);
        r = errno;
        sandbox_fail(&err, "exec", -r, "%s: %s", spec->argv[0], strerror(r));
        fail(spec->status_fd, &err, r == ENOENT ? SANDBOX_EXIT_NOTFOUND : SANDBOX_EXIT_NOEXEC);
}

typedef struct CommandArgs {
        const SandboxSpec *spec;
        int master;
        pid_t host_pid;
        int parent;
} CommandArgs;

/* The command child's stack while it shares the init's memory (printf-family
 * calls on the error paths want a few KiB; zero pages until touched). */
static uint8_t command_stack[256 * 1024] __attribute__((aligned(16)));

static int command_main(void *userdata) {
        const CommandArgs *a = userdata;

        close(a->parent);
        run_command(a->spec, a->master, a->host_pid);
}

/* pid 1 once the command runs: forwards signals to it, reaps everything and
 * leaves with the command's status, sent to the hands over `parent` first. */
static _Noreturn void init_forward_and_reap(const sigset_t *mask, pid_t cmd, int parent) {
        for (;;) {
                siginfo_t si;
                int sig = sigwaitinfo(mask, &si);

                if (sig < 0)
                        continue;
                if (sig != SIGCHLD) {
                        kill(cmd, sig);
                        continue;
                }
                /* Reap everything; leave as soon as the command is gone (the
                 * pid namespace dies with us and takes the rest along, the
                 * proxy bridge included: its exit is reaped and ignored). */
                for (;;) {
                        int ws;
                        pid_t p = waitpid(-1, &ws, WNOHANG);

                        if (p <= 0)
                                break;
                        if (p == cmd) {
                                (void) send(parent, &ws, sizeof(ws), MSG_NOSIGNAL);
                                _exit(WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws));
                        }
                }
        }
}

/* pid 1 of the sandbox. The command's wait status goes to the hands over
 * `parent` the moment it is reaped (the hands reports it right away, before
 * our own exit and the pid namespace teardown); a killed init is reported by
 * the hands from its wait status. */
static _Noreturn void run_init(SandboxSpec *spec, int parent, const sigset_t *mask, bool warm) {
        _cleanup_close_ int master = -1, proxy_fd = -1, bridge_ready = -1;
        SandboxError err = {};
        pid_t host_pid = 0, cmd;
        MountPlan *plan = NULL;
        int r;

        if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
                _exit(SANDBOX_EXIT_SETUP);
        /* Keeps the command from ptracing us or reading our memory and fds. */
        if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
                fail(spec->status_fd, (sandbox_fail(&err, "init", -errno, "dumpable: %m"), &err), SANDBOX_EXIT_SETUP);

        /* The task's part, which a warm sandbox does ahead of its spawn. */
        r = mounts_plan_system(spec, &plan, &err);
        if (r < 0)
                fail(spec->status_fd, &err, SANDBOX_EXIT_SETUP);
        if (sethostname(spec->hostname, strlen(spec->hostname)) < 0 || setdomainname("(none)", 6) < 0)
                fail(spec->status_fd, (sandbox_fail(&err, "hostname", -errno, "%m"), &err), SANDBOX_EXIT_SETUP);
        r = loopback_up(&err);
        if (r < 0)
                fail(spec->status_fd, &err, SANDBOX_EXIT_SETUP);
        if (warm) {
                _cleanup_free_ char *buf = NULL; /* never freed: the spec's strings live in it until exec */
                size_t size;

                if (recv(parent, &host_pid, sizeof(host_pid), 0) != sizeof(host_pid))
                        _exit(SANDBOX_EXIT_SETUP);
                r = warm_wait_attach(spec, &buf, &size, parent, host_pid, &err);
                if (r < 0)
                        fail(spec->status_fd, &err, SANDBOX_EXIT_SETUP);
                (void) TAKE_PTR(buf);
        }

        /* The proxy's socket node, opened while the host's root is still ours. */
        if (spec->proxy_socket) {
                proxy_fd = bridge_open_socket(spec, &err);
                if (proxy_fd < 0)
                        fail(spec->status_fd, &err, SANDBOX_EXIT_SETUP);
        }
        r = mounts_finish_root(spec, plan, &err);
        if (r < 0)
                fail(spec->status_fd, &err, SANDBOX_EXIT_SETUP);
        if (proxy_fd >= 0) {
                /* Listening before we go on; its readiness is collected right before the fork. */
                bridge_ready = bridge_start(spec, proxy_fd, &err);
                if (bridge_ready < 0)
                        fail(spec->status_fd, &err, SANDBOX_EXIT_SETUP);
                proxy_fd = safe_close(proxy_fd);
        }
        if (spec->tty) {
                master = open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
                if (master < 0 || ioctl(master, TIOCSPTLCK, &(int) { 0 }) < 0)
                        fail(spec->status_fd, (sandbox_fail(&err, "tty", -errno, "open /dev/pts/ptmx: %m"), &err), SANDBOX_EXIT_SETUP);
        }

        /* The hands wrote our host pid right after clone3; EOF means it is gone. */
        if (!warm && recv(parent, &host_pid, sizeof(host_pid), 0) != sizeof(host_pid))
                _exit(SANDBOX_EXIT_SETUP);

        if (bridge_ready >= 0) {
                r = bridge_wait_ready(bridge_ready, &err);
                if (r < 0)
                        fail(spec->status_fd, &err, SANDBOX_EXIT_SETUP);
                bridge_ready = safe_close(bridge_ready);
        }

        /* posix_spawn's trick: the child borrows our memory until its execve
         * (we are suspended meanwhile), so no page tables are copied and
         * neither side takes copy-on-write faults. It has its own fd table,
         * fs and credentials, so everything it confines is its own; it only
         * writes its own stack, and errno, which nobody reads while we wait. */
        cmd = clone(command_main, command_stack + sizeof(command_stack), CLONE_VM | CLONE_VFORK | SIGCHLD,
                    &(CommandArgs) { .spec = spec, .master = master, .host_pid = host_pid, .parent = parent });
        if (cmd < 0)
                fail(spec->status_fd, (sandbox_fail(&err, "fork", -errno, "%m"), &err), SANDBOX_EXIT_SETUP);
        master = safe_close(master);
        /* From here on the init only forwards signals and reaps. It lets go of
         * the daemon's output pipes and the status channel, so that EOF there
         * right after the command's exit means the command and its own
         * background processes are done, not that pid 1 is still on its way
         * out through the namespace teardown. */
        (void) syscall(SYS_close_range, 0U, 2U, 0);
        (void) close(spec->status_fd);

        init_forward_and_reap(mask, cmd, parent);
}

static void report_exit(int status_fd, int status) {
        if (WIFSIGNALED(status))
                (void) status_send(status_fd, -1, "signal %d", WTERMSIG(status));
        else
                (void) status_send(status_fd, -1, "exit %d", WEXITSTATUS(status));
}

/* Until the command's status arrives, the signals and the init's socket are
 * watched together: the status is reported the moment the init sends it,
 * while the init still has its exit and the namespace teardown ahead (pid 1
 * going away kills whatever is left, so nothing outlives it; we still reap
 * it before we exit ourselves). Without a signalfd we fall back to waiting
 * for the init first. Returns the wait status reported: the command's, or
 * the init's own when it died before sending one. */
static int wait_init(pid_t pid, int sock, const sigset_t *mask, int status_fd) {
        _cleanup_close_ int sfd = -1;
        struct pollfd p[2];
        int status, ws = 0;
        ssize_t n;

        sfd = signalfd(-1, mask, SFD_NONBLOCK | SFD_CLOEXEC);
        /* The daemon's pipes are the command's business, not ours (see run_init). */
        (void) syscall(SYS_close_range, 0U, 2U, 0);

        p[0] = (struct pollfd) { .fd = sfd, .events = POLLIN };
        p[1] = (struct pollfd) { .fd = sfd >= 0 ? sock : -1, .events = POLLIN };
        for (;;) {
                if (sfd < 0) {
                        siginfo_t si;
                        int sig = sigwaitinfo(mask, &si);

                        if (sig < 0)
                                continue;
                        if (sig != SIGCHLD)
                                (void) kill(pid, sig);
                        else if (waitpid(pid, &ws, WNOHANG) == pid)
                                break;
                        continue;
                }
                if (poll(p, 2, -1) < 0)
                        continue;
                if (p[1].revents) {
                        n = recv(sock, &status, sizeof(status), MSG_DONTWAIT);
                        if (n == sizeof(status)) {
                                report_exit(status_fd, status);
                                while (waitpid(pid, &ws, 0) < 0 && errno == EINTR)
                                        ;
                                return status;
                        }
                        /* EOF: the init died without a status; its wait status tells. */
                        if (n >= 0 || (errno != EAGAIN && errno != EINTR))
                                p[1].fd = -1;
                }
                if (p[0].revents) {
                        struct signalfd_siginfo si;
                        bool child = false;

                        while (read(sfd, &si, sizeof(si)) == sizeof(si)) {
                                if (si.ssi_signo == SIGCHLD)
                                        child = true;
                                else
                                        (void) kill(pid, (int) si.ssi_signo);
                        }
                        if (child && waitpid(pid, &ws, WNOHANG) == pid)
                                break;
                }
        }

        /* The command's status if the init got to send it; the init's own otherwise. */
        n = recv(sock, &status, sizeof(status), MSG_DONTWAIT);
        if (n != sizeof(status))
                status = ws;
        report_exit(status_fd, status);
        return status;
}

static int parse_args(int argc, char **argv, bool *warm) {
        for (int i = 1; i < argc; i++) {
                const char *v = NULL;
                char *end;
                long fd;

                if (streq(argv[i], "--warm") && i < argc - 1) {
                        *warm = true;
                        continue;
                }
                if (streq(argv[i], "--spec-fd") && i + 1 < argc)
                        v = argv[++i];
                else if (strncmp(argv[i], "--spec-fd=", 10) == 0)
                        v = argv[i] + 10;
                else
                        return -EINVAL;
                errno = 0;
                fd = strtol(v, &end, 10);
                if (errno || *end || end == v || fd < 0 || fd > INT32_MAX)
                        return -EINVAL;
                if (i == argc - 1)
                        return (int) fd;
        }
        return -EINVAL;
}

/* The hands proper, run either right after exec (--spec-fd) or in a child of
 * the zygote. `parent` is agentd: its death must be ours. warm: the spec is
 * the task's part only, the spawn attaches later (warm.c). */
static int hands_main(int spec_fd, pid_t parent, bool warm) {
        SandboxError err = {};
        SandboxSpec spec = { .status_fd = -1 };
        _cleanup_free_ char *buf = NULL;
        struct sandbox_clone_args args = {};
        sigset_t mask;
        size_t size = 0;
        pid_t pid;
        int pair[2], status, r;

        /* The check after the prctl closes the race with an agentd that died before it. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 || getppid() != parent)
                return SANDBOX_EXIT_SETUP;

        r = spec_read(spec_fd, &buf, &size, &err);
        if (r >= 0)
                r = spec_parse(buf, size, &spec, &err);
        if (r < 0)
                fail(spec.status_fd, &err, SANDBOX_EXIT_SETUP);
        close(spec_fd);

        r = enter_user_namespace(&err);
        if (r < 0)
                fail(spec.status_fd, &err, SANDBOX_EXIT_SETUP);
        /* The pids bound that holds without a cgroup: the kernel counts our
         * tasks in this user namespace alone (the hands, the init and all
         * below it), and nothing in it may raise the hard limit. */
        if (spec.nproc > 0 && setrlimit(RLIMIT_NPROC, &(struct rlimit) { spec.nproc, spec.nproc }) < 0)
                fail(spec.status_fd, (sandbox_fail(&err, "rlimit", -errno, "RLIMIT_NPROC %llu: %m", (unsigned long long) spec.nproc), &err),
                     SANDBOX_EXIT_SETUP);
        if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
                fail(spec.status_fd, (sandbox_fail(&err, "init", -errno, "dumpable: %m"), &err), SANDBOX_EXIT_SETUP);
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
                fail(spec.status_fd, (sandbox_fail(&err, "init", -errno, "socketpair: %m"), &err), SANDBOX_EXIT_SETUP);

        /* Blocked before clone3, so no SIGCHLD and no forwarded signal is lost. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        for (size_t i = 0; i < ELEMENTSOF(forwarded_signals); i++)
                sigaddset(&mask, forwarded_signals[i]);
        sigprocmask(SIG_BLOCK, &mask, NULL);

        args.flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP;
        args.exit_signal = SIGCHLD;
        if (spec.cgroup_fd >= 0) {
                args.flags |= CLONE_INTO_CGROUP;
                args.cgroup = (uint64_t) spec.cgroup_fd;
        }
        pid = (pid_t) syscall(SYS_clone3, &args, sizeof(args));
        if (pid < 0) {
                r = -errno;
                if (spec.cgroup_fd >= 0 && r != -ENOMEM && r != -ENOSPC && r != -EUSERS && r != -EAGAIN)
                        sandbox_fail(&err, "cgroup", r, "clone3 into cgroup: %s", strerror(-r));
                else
                        sandbox_fail(&err, "clone", r, "clone3: %s", strerror(-r));
                fail(spec.status_fd, &err, SANDBOX_EXIT_SETUP);
        }
        if (pid == 0) {
                close(pair[0]);
                run_init(&spec, pair[1], &mask, warm);
        }
        close(pair[1]);
        (void) send(pair[0], &pid, sizeof(pid), MSG_NOSIGNAL);

        /* The init has its own copy; ours holds the command's environment for nothing. */
        explicit_zero(buf, size);
        if (spec.cgroup_fd >= 0)
                spec.cgroup_fd = safe_close(spec.cgroup_fd);
        if (spec.seccomp_fd >= 0)
                spec.seccomp_fd = safe_close(spec.seccomp_fd);
        if (warm) {
                /* The control socket is the init's to answer; ours is the spawn's status socket. */
                spec.status_fd = safe_close(spec.status_fd);
                r = warm_receive_status(pair[0], &spec.status_fd);
                if (r < 0 || spec.status_fd < 0) {
                        /* Not attached: whatever the init said went on the control socket. */
                        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                                ;
                        return r < 0 ? SANDBOX_EXIT_SETUP : WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
                }
        }

        status = wait_init(pid, pair[0], &mask, spec.status_fd);
        return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

/* ---- the zygote (--zygote) ------------------------------------------------------ */

/* A child of the zygote becomes exactly what an exec'd `--spec-fd 3` is: the
 * request's fds at 0..n-1 and nothing else (not the zygote's socket), default
 * signal handling, dumpable until the user namespace is mapped (the id maps
 * are only writable then, as after exec), and no memory but the zygote's,
 * which holds nothing of any sandbox. */
static _Noreturn void zygote_child(const int *fds, unsigned n, pid_t parent, bool warm) {
        SandboxError err = {};
        sigset_t none;
        int high[ZYGOTE_FDS_MAX];

        if (signal(SIGCHLD, SIG_DFL) == SIG_ERR)
                fail(fds[4], (sandbox_fail(&err, "zygote", -errno, "SIGCHLD: %m"), &err), SANDBOX_EXIT_SETUP);
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);

        /* Everything above the targets first, so no dup2 below clobbers a source. */
        for (unsigned i = 0; i < n; i++) {
                high[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, (int) n);
                if (high[i] < 0)
                        fail(fds[4], (sandbox_fail(&err, "zygote", -errno, "fcntl: %m"), &err), SANDBOX_EXIT_SETUP);
        }
        for (unsigned i = 0; i < n; i++)
                if (dup2(high[i], (int) i) < 0)
                        fail(fds[4], (sandbox_fail(&err, "zygote", -errno, "dup2: %m"), &err), SANDBOX_EXIT_SETUP);
        if (syscall(SYS_close_range, n, ~0U, 0) < 0)
                fail(4, (sandbox_fail(&err, "zygote", -errno, "close_range: %m"), &err), SANDBOX_EXIT_SETUP);
        if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) < 0)
                fail(4, (sandbox_fail(&err, "zygote", -errno, "dumpable: %m"), &err), SANDBOX_EXIT_SETUP);

        _exit(hands_main(SPEC_FD_SPEC, parent, warm));
}

static int zygote_reply(uint32_t seq, int32_t pid) {
        ZygoteReply reply = { .magic = ZYGOTE_MAGIC, .seq = seq, .pid = pid };

        for (;;) {
                if (send(ZYGOTE_FD, &reply, sizeof(reply), MSG_NOSIGNAL) == (ssize_t) sizeof(reply))
                        return 0;
                if (errno != EINTR)
                        return -errno;
        }
}

/* Serves agentd until it closes its end (or dies: PDEATHSIG). Single-threaded,
 * no allocations (its size never changes), no secrets: requests carry only
 * fds, which are closed again before the next one is read. */
static int zygote_main(void) {
        pid_t parent = getppid();
        int type = 0;
        socklen_t tl = sizeof(type);

        if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 || getppid() != parent || parent <= 1)
                return SANDBOX_EXIT_SETUP;
        /* Nobody may ptrace it into starting something else. */
        if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
                return SANDBOX_EXIT_SETUP;
        /* Children are agentd's (CLONE_PARENT); should one ever be ours, no zombie. */
        if (signal(SIGCHLD, SIG_IGN) == SIG_ERR)
                return SANDBOX_EXIT_SETUP;
        (void) syscall(SYS_close_range, ZYGOTE_FD + 1, ~0U, 0);
        if (getsockopt(ZYGOTE_FD, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != SOCK_SEQPACKET) {
                dprintf(STDERR_FILENO, "agentd-sandbox: --zygote wants a SOCK_SEQPACKET socket at fd %d\n", ZYGOTE_FD);
                return SANDBOX_EXIT_SETUP;
        }

        for (;;) {
                ZygoteRequest req;
                int fds[ZYGOTE_FDS_MAX];
                size_t n_fds = 0;
                SocketFdsInfo info;
                ssize_t n;
                pid_t pid;

                n = socket_recv_fds(ZYGOTE_FD, &req, sizeof(req), fds, &n_fds, ZYGOTE_FDS_MAX, 0, &info);
                if (n == -EINTR)
                        continue;
                if (n <= 0) {
                        for (size_t i = 0; i < n_fds; i++)
                                close(fds[i]);
                        return 0; /* agentd closed its end: we are done */
                }
                /* Fail closed on anything but exactly the request we expect. */
                if (info.foreign || info.n_closed > 0 || n != (ssize_t) sizeof(req) || (info.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || info.n_rights != 1 ||
                    req.magic != ZYGOTE_MAGIC || req.n_fds != n_fds || n_fds < ZYGOTE_FDS_MIN ||
                    (req.flags & ~ZYGOTE_WARM)) {
                        for (size_t i = 0; i < n_fds; i++)
                                close(fds[i]);
                        if (zygote_reply(n >= (ssize_t) offsetof(ZygoteRequest, n_fds) ? req.seq : 0, -EBADMSG) < 0)
                                return 0;
                        continue;
                }

                /* Like fork, but agentd becomes the parent: it reaps the hands
                 * and the hands' PDEATHSIG is agentd's death, not ours. */
                pid = (pid_t) syscall(SYS_clone3, &(struct sandbox_clone_args) { .flags = CLONE_PARENT },
                                      sizeof(struct sandbox_clone_args));
                if (pid == 0)
                        zygote_child(fds, n_fds, parent, req.flags & ZYGOTE_WARM);
                if (pid < 0)
                        pid = -errno;
                for (unsigned i = 0; i < n_fds; i++)
                        close(fds[i]);
                if (zygote_reply(req.seq, pid) < 0)
                        return 0;
        }
}

int main(int argc, char **argv) {
        bool warm = false;
        int spec_fd;

        /* Nothing of the daemon's environment is kept, not even in our memory. */
        for (char **e = environ; e && *e; e++)
                explicit_zero(*e, strlen(*e));
        environ = NULL;

        if (argc == 2 && streq(argv[1], "--zygote"))
                return zygote_main();

        spec_fd = parse_args(argc, argv, &warm);
        if (spec_fd < 0) {
                dprintf(STDERR_FILENO, "usage: %s [--warm] --spec-fd N | --zygote\n", argv[0]);
                return SANDBOX_EXIT_SETUP;
        }
        return hands_main(spec_fd, getppid(), warm);
}
