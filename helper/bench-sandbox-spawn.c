/* Spawn-time benchmark: N runs of /bin/true through agentd-sandbox (spec in a
 * memfd, status on a socketpair, exactly as the daemon drives it) against
 * `unshare -Urmpfn --mount-proc /bin/true`, side by side; prints medians.
 * Two times for the hands: until the "exit"/"signal" report arrives (what the
 * daemon waits for; the namespace teardown may still run behind it) and until
 * the hands itself has exited and been reaped.
 * Usage: bench-sandbox-spawn path/to/agentd-sandbox [runs] [workspace]
 * BENCH_SOCKETS=proxy|broker|proxy,broker adds proxy_socket=/proxy_port= and/or
 * broker_socket= keys, served by listening sockets the benchmark creates. */
#include <errno.h>
#include <fcntl.h>
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

static int run_hands(const char *hands, const char *workspace, double start, double *ret_reported) {
        _cleanup_close_ int memfd = -1, ours = -1;
        int pair[2], status;
        char spec[8192], fdarg[16], buf[256];
        size_t len = 0;
        pid_t pid;

        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
                return -errno;
        ours = pair[0];
        memfd = memfd_create("spec", 0);
        if (memfd < 0)
                return -errno;
        len += (size_t) snprintf(spec + len, sizeof(spec) - len, "arg=/bin/true%cenv=PATH=/usr/bin:/bin%c", 0, 0);
        if (workspace)
                len += (size_t) snprintf(spec + len, sizeof(spec) - len, "workspace=%s%cworkspace_mode=ro%c", workspace, 0, 0);
        else
                len += (size_t) snprintf(spec + len, sizeof(spec) - len, "workspace_mode=none%c", 0);
        if (*proxy_path)
                len += (size_t) snprintf(spec + len, sizeof(spec) - len, "proxy_socket=%s%cproxy_port=18080%c", proxy_path, 0, 0);
        if (*broker_path)
                len += (size_t) snprintf(spec + len, sizeof(spec) - len, "broker_socket=%s%c", broker_path, 0);
        len += (size_t) snprintf(spec + len, sizeof(spec) - len, "unsafe_no_seccomp=1%cstatus_fd=%d%c", 0, pair[1], 0);
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
        *ret_reported = -1;
        for (;;) {
                ssize_t n = recv(ours, buf, sizeof(buf) - 1, 0);

                if (n <= 0)
                        break;
                if (*ret_reported < 0 && ((n > 5 && memcmp(buf, "exit ", 5) == 0) ||
                                          (n > 7 && memcmp(buf, "signal ", 7) == 0)))
                        *ret_reported = now_ms() - start;
        }
        if (waitpid(pid, &status, 0) < 0)
                return -errno;
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
        double *t[4];

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
        for (int k = 0; k < 4; k++)
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
        }
        for (int k = 0; k < 4; k++)
                qsort(t[k], (size_t) runs, sizeof(double), cmp_double);
        if (*proxy_path)
                unlink(proxy_path);
        if (*broker_path)
                unlink(broker_path);
        printf("%d runs%s%s, median (p90) ms\n", runs, sockets ? ", BENCH_SOCKETS=" : "", sockets ?: "");
        printf("  agentd-sandbox /bin/true: exit report %6.2f (%6.2f)\n", t[3][runs / 2], t[3][runs * 9 / 10]);
        printf("  agentd-sandbox /bin/true: hands reaped %6.2f (%6.2f)\n", t[0][runs / 2], t[0][runs * 9 / 10]);
        printf("  unshare -Urmpfn --mount-proc /bin/true %6.2f (%6.2f)\n", t[1][runs / 2], t[1][runs * 9 / 10]);
        printf("  plain /bin/true                       %6.2f (%6.2f)\n", t[2][runs / 2], t[2][runs * 9 / 10]);
        return 0;
}
