/* Spawn-time benchmark: N runs of /bin/true through agentd-sandbox (spec in a
 * memfd, status on a socketpair, exactly as the daemon drives it) against
 * `unshare -Urmpfn --mount-proc /bin/true`, side by side; prints medians.
 * Two times for the hands: until the "exit"/"signal" report arrives (what the
 * daemon waits for; the namespace teardown may still run behind it) and until
 * the hands itself has exited and been reaped.
 * A third time: a warm sandbox (`--warm`, built before the clock starts, as
 * agentd's pool does it off the spawn's path) from its attach message to the
 * exit report (helper/warm.c).
 * Usage: bench-sandbox-spawn path/to/agentd-sandbox [runs] [workspace]
 * BENCH_SOCKETS=proxy|broker|proxy,broker adds proxy_socket=/proxy_port= and/or
 * broker_socket= keys, served by listening sockets the benchmark creates. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "macro.h"
#include "socket.h"

static double now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec * 1e3 + (double) ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;
        return x < y ? -1 : x > y;
}

static char proxy_path[108], broker_path[108];

/* A listening Unix socket nobody accepts on: connecting is not what is measured. */
static int make_socket(char *path, size_t size, const char *name) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd;

        snprintf(path, size, "/tmp/bench-sandbox-%d-%s.sock", (int) getpid(), name);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        unlink(path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 || listen(fd, 16) < 0)
                return -errno;
        return fd;
}

static size_t make_spec(char *spec, size_t size, const char *workspace, int status_fd) {
        size_t len = 0;

        len += (size_t) snprintf(spec + len, size - len, "arg=/bin/true%cenv=PATH=/usr/bin:/bin%c", 0, 0);
        if (workspace)
                len += (size_t) snprintf(spec + len, sizeof(spec) - len, "workspace=%s%cworkspace_mode=ro%c", workspace, 0, 0);
        else
                len += (size_t) snprintf(spec + len, sizeof(spec) - len, "workspace_mode=none%c", 0);
        if (*proxy_path)
                len += (size_t) snprintf(spec + len, sizeof(spec) - len, "proxy_socket=%s%cproxy_port=18080%c", proxy_path, 0, 0);
        if (*broker_path)
                len += (size_t) snprintf(spec + len, sizeof(spec) - len, "broker_socket=%s%c", broker_path, 0);
        len += (size_t) snprintf(spec + len, sizeof(spec) - len, "unsafe_no_seccomp=1%cstatus_fd=%d%c", 0, status_fd, 0);
        return len;
}

/* The status lines until EOF; the time the exit report arrived. */
static void read_status(int fd, double start, double *ret_reported) {
        char buf[256];

        *ret_reported = -1;
        for (;;) {
                ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);

                if (n <= 0)
                        break;
                if (*ret_reported < 0 && ((n > 5 && memcmp(buf, "exit ", 5) == 0) ||
                                          (n > 7 && memcmp(buf, "signal ", 7) == 0)))
                        *ret_reported = now_ms() - start;
        }
}

static int run_hands(const char *hands, const char *workspace, double start, double *ret_reported) {
        _cleanup_close_ int memfd = -1, ours = -1;
        int pair[2], status;
        char spec[8192], fdarg[16];
        size_t len;
        pid_t pid;

        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
                return -errno;
        ours = pair[0];
        memfd = memfd_create("spec", 0);
        if (memfd < 0)
                return -errno;
        len = make_spec(spec, sizeof(spec), workspace, pair[1]);
        if (write(memfd, spec, len) != (ssize_t) len)
                return -EIO;
        snprintf(fdarg, sizeof(fdarg), "%d", memfd);

        pid = vfork();
        if (pid == 0) {
                fcntl(pair[1], F_SETFD, 0);
                execl(hands, hands, "--spec-fd", fdarg, (char *) NULL);
                _exit(127);
        }
        close(pair[1]);
        if (pid < 0)
                return -errno;
        read_status(ours, start, ret_reported);
        if (waitpid(pid, &status, 0) < 0)
                return -errno;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -EINTR;
}

/* A warm sandbox, built before `start` is taken: then one attach (stdio,
 * the full spec, a fresh status socket) and the exit report on it. */
static int run_warm(const char *hands, const char *workspace, double *ret_reported, double *ret_reaped) {
        _cleanup_close_ int warm_memfd = -1, memfd = -1, control = -1, ours = -1, devnull = -1;
        int pair[2], status_pair[2], status;
        char spec[8192], fdarg[16], buf[64];
        size_t len;
        ssize_t n;
        double start;
        pid_t pid;

        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
                return -errno;
        control = pair[0];
        warm_memfd = memfd_create("warm-spec", 0);
        memfd = memfd_create("spec", 0);
        devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (warm_memfd < 0 || memfd < 0 || devnull < 0)
                return -errno;
        /* The task's part: no workspace. The spawn's: the same plus its own. */
        len = make_spec(spec, sizeof(spec), NULL, pair[1]);
        if (write(warm_memfd, spec, len) != (ssize_t) len)
                return -EIO;
        len = make_spec(spec, sizeof(spec), workspace, pair[1]);
        if (write(memfd, spec, len) != (ssize_t) len)
                return -EIO;
        snprintf(fdarg, sizeof(fdarg), "%d", warm_memfd);
        pid = fork(); /* off the clock */
        if (pid == 0) {
                fcntl(pair[1], F_SETFD, 0);
                execl(hands, hands, "--warm", "--spec-fd", fdarg, (char *) NULL);
                _exit(127);
        }
        close(pair[1]);
        if (pid < 0)
                return -errno;
        n = recv(control, buf, sizeof(buf) - 1, 0);
        if (n < 6 || memcmp(buf, "warm ", 5) != 0) {
                fprintf(stderr, "warm sandbox did not get warm: %.*s\n", (int) (n > 0 ? n : 0), buf);
                waitpid(pid, NULL, 0);
                return -EPROTO;
        }

        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, status_pair) < 0)
                return -errno;
        ours = status_pair[0];
        start = now_ms();
        {
                uint64_t magic = UINT64_C(0x686361747461676f);
                int fds[5] = { devnull, devnull, devnull, memfd, status_pair[1] };
                ssize_t sent = socket_send_fds(control, &magic, sizeof(magic), fds, 5, 0);

                if (sent < 0)
                        return (int) sent;
        }
        close(status_pair[1]);
        read_status(ours, start, ret_reported);
        if (waitpid(pid, &status, 0) < 0)
                return -errno;
        *ret_reaped = now_ms() - start;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -EINTR;
}

static int run_argv(char *const argv[]) {
        int status;
        pid_t pid = vfork();

        if (pid == 0) {
                execv(argv[0], argv);
                _exit(127);
        }
        if (pid < 0 || waitpid(pid, &status, 0) < 0)
                return -errno;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -EINTR;
}

int main(int argc, char **argv) {
        char *unshare_argv[] = { "/usr/bin/unshare", "-Urmpfn", "--mount-proc", "/bin/true", NULL };
        char *plain_argv[] = { "/bin/true", NULL };
        int runs = argc > 2 ? atoi(argv[2]) : 200;
        const char *workspace = argc > 3 ? argv[3] : NULL;
        const char *sockets = getenv("BENCH_SOCKETS");
        double *t[6];

        if (argc < 2 || runs < 1) {
                fprintf(stderr, "usage: %s path/to/agentd-sandbox [runs] [workspace]\n", argv[0]);
                return 2;
        }
        if (sockets && strstr(sockets, "proxy") && make_socket(proxy_path, sizeof(proxy_path), "proxy") < 0) {
                perror("proxy socket");
                return 1;
        }
        if (sockets && strstr(sockets, "broker") && make_socket(broker_path, sizeof(broker_path), "broker") < 0) {
                perror("broker socket");
                return 1;
        }
        for (int k = 0; k < 6; k++)
                t[k] = calloc((size_t) runs, sizeof(double));
        /* Interleaved, so drift on the machine hits all three alike. */
        for (int i = 0; i < runs; i++) {
                double s = now_ms();
                int r = run_hands(argv[1], workspace, s, &t[3][i]);
                t[0][i] = now_ms() - s;
                if (r == 0 && t[3][i] < 0)
                        r = -EPROTO; /* no exit report */
                if (r != 0) {
                        fprintf(stderr, "agentd-sandbox run %d failed: %d\n", i, r);
                        return 1;
                }
                s = now_ms();
                if (run_argv(unshare_argv) != 0) {
                        fprintf(stderr, "unshare run %d failed\n", i);
                        return 1;
                }
                t[1][i] = now_ms() - s;
                s = now_ms();
                run_argv(plain_argv);
                t[2][i] = now_ms() - s;
                r = run_warm(argv[1], workspace, &t[4][i], &t[5][i]);
                if (r == 0 && t[4][i] < 0)
                        r = -EPROTO;
                if (r != 0) {
                        fprintf(stderr, "warm agentd-sandbox run %d failed: %d\n", i, r);
                        return 1;
                }
        }
        for (int k = 0; k < 6; k++)
                qsort(t[k], (size_t) runs, sizeof(double), cmp_double);
        if (*proxy_path)
                unlink(proxy_path);
        if (*broker_path)
                unlink(broker_path);
        printf("%d runs%s%s, median (p90) ms\n", runs, sockets ? ", BENCH_SOCKETS=" : "", sockets ?: "");
        printf("  agentd-sandbox /bin/true: exit report %6.2f (%6.2f)\n", t[3][runs / 2], t[3][runs * 9 / 10]);
        printf("  agentd-sandbox /bin/true: hands reaped %6.2f (%6.2f)\n", t[0][runs / 2], t[0][runs * 9 / 10]);
        printf("  warm sandbox, attach to exit report   %6.2f (%6.2f)\n", t[4][runs / 2], t[4][runs * 9 / 10]);
        printf("  warm sandbox, attach to hands reaped  %6.2f (%6.2f)\n", t[5][runs / 2], t[5][runs * 9 / 10]);
        printf("  unshare -Urmpfn --mount-proc /bin/true %6.2f (%6.2f)\n", t[1][runs / 2], t[1][runs * 9 / 10]);
        printf("  plain /bin/true                       %6.2f (%6.2f)\n", t[2][runs / 2], t[2][runs * 9 / 10]);
        return 0;
}
