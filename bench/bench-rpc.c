/* RPC round-trip benchmark: agentd.ping against a running agentd, side by side
 * with a plain Unix-socket echo server started here (an epoll loop in a forked
 * process) that reads a request of the same size and writes back a reply of
 * the same size (agentd's own ping reply, captured at start, with the msgid
 * patched in). Measures 1 client and 64 concurrent clients (threads; each does
 * request -> wait for reply, sequentially) for a fixed duration and prints
 * throughput, p50/p99 latency and the ratios agentd/echo.
 *
 * Usage: bench-rpc SOCKET_OF_RUNNING_AGENTD [seconds]
 * Env:   BENCH_RPC_CLIENTS=N  only the N-client cells (1..64; e.g. for a
 *                             profile of agentd under 64 clients)
 *        BENCH_RPC_POLL=1     clients wait in poll(POLLIN) before each read
 *                             instead of blocking in read (a blocked reader
 *                             is also woken when its request is consumed)
 *
 * Both servers get the identical client code path: pack a request with
 * rpc_pack_request_header (msgid >= 0x10000, so it is always encoded as uint32
 * and the request size is fixed), write it, read until proto_scan finds one
 * complete message, check the msgid bytes. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proto.h"

#define MAX_CLIENTS 64
#define MSGID_BASE 0x10000u

static uint8_t ping_reply[512];   /* agentd's reply, served by the echo server */
static size_t ping_reply_len;
static size_t req_len;            /* fixed size of one ping request */
static int use_poll;              /* BENCH_RPC_POLL */

static double now_us(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec * 1e6 + (double) ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;
        return x < y ? -1 : x > y;
}

static void die(const char *what) {
        fprintf(stderr, "bench-rpc: %s: %s\n", what, strerror(errno));
        exit(1);
}

static int connect_unix(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd;

        if (strlen(path) >= sizeof(sa.sun_path)) {
                errno = ENAMETOOLONG;
                return -1;
        }
        strcpy(sa.sun_path, path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -1;
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                int e = errno;
                close(fd);
                errno = e;
                return -1;
        }
        return fd;
}

/* One request, packed exactly as agentctl packs it: [0, msgid, "agentd.ping", []]. */
static size_t pack_ping(msgpack_sbuffer *sb, uint32_t msgid) {
        msgpack_packer pk;
        msgpack_sbuffer_clear(sb);
        msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
        rpc_pack_request_header(&pk, msgid, "agentd.ping");
        msgpack_pack_array(&pk, 0);
        return sb->size;
}

static int write_all(int fd, const void *buf, size_t len) {
        const uint8_t *p = buf;
        while (len > 0) {
                ssize_t n = write(fd, p, len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -1;
                }
                p += n;
                len -= (size_t) n;
        }
        return 0;
}

/* Reads one complete msgpack message into buf; returns its length or -1. */
static ssize_t read_message(int fd, uint8_t *buf, size_t cap) {
        proto_scanner sc;
        proto_limits lim;
        size_t have = 0, mlen;
        proto_scan_error perr;

        proto_limits_default(&lim);
        proto_scanner_reset(&sc);
        for (;;) {
                int r = proto_scan(&sc, &lim, buf, have, &mlen, &perr);
                if (r > 0)
                        return (ssize_t) mlen;   /* one request in flight: nothing follows */
                if (r < 0 || have == cap) {
                        errno = EPROTO;
                        return -1;
                }
                if (use_poll) {
                        struct pollfd p = { .fd = fd, .events = POLLIN };
                        if (poll(&p, 1, -1) < 0 && errno != EINTR)
                                return -1;
                }
                ssize_t n = read(fd, buf + have, cap - have);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        if (n == 0)
                                errno = ECONNRESET;
                        return -1;
                }
                have += (size_t) n;
        }
}

/* A reply is [1, msgid(uint32 0xce BE), nil, result]. */
static int reply_matches(const uint8_t *buf, size_t len, uint32_t msgid) {
        return len >= 7 && buf[0] == 0x94 && buf[1] == 0x01 && buf[2] == 0xce &&
               buf[3] == (msgid >> 24) &&
               buf[4] == ((msgid >> 16) & 0xff) && buf[5] == ((msgid >> 8) & 0xff) && buf[6] == (msgid & 0xff);
}

/* ---- echo server ------------------------------------------------------- */

typedef struct conn {
        int fd;
        size_t have;
        uint8_t in[256];
} conn;

static void echo_serve(int lfd) {
        int ep = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL }, evs[64];
        uint8_t out[sizeof(ping_reply) * 4];

        if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0)
                die("epoll");
        for (;;) {
                int n = epoll_wait(ep, evs, 64, -1);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        die("epoll_wait");
                }
                for (int i = 0; i < n; i++) {
                        conn *c = evs[i].data.ptr;
                        if (!c) {
                                int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                                if (fd < 0)
                                        continue;
                                c = calloc(1, sizeof(*c));
                                c->fd = fd;
                                ev.events = EPOLLIN;
                                ev.data.ptr = c;
                                epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                                continue;
                        }
                        ssize_t r = read(c->fd, c->in + c->have, sizeof(c->in) - c->have);
                        if (r <= 0) {
                                if (r < 0 && (errno == EAGAIN || errno == EINTR))
                                        continue;
                                close(c->fd);   /* also leaves the epoll set */
                                free(c);
                                continue;
                        }
                        c->have += (size_t) r;
                        size_t off = 0, olen = 0;
                        while (c->have - off >= req_len && olen + ping_reply_len <= sizeof(out)) {
                                /* same size back, with the request's msgid bytes */
                                memcpy(out + olen, ping_reply, ping_reply_len);
                                memcpy(out + olen + 3, c->in + off + 3, 4);
                                olen += ping_reply_len;
                                off += req_len;
                        }
                        memmove(c->in, c->in + off, c->have - off);
                        c->have -= off;
                        /* replies are small and the client waits for each: the
                         * socket buffer always has room */
                        if (olen && write_all(c->fd, out, olen) < 0) {
                                close(c->fd);
                                free(c);
                        }
                }
        }
}

/* The echo server runs on the CPUs agentd may run on, so that placement
 * (same CPU as the clients or not, which on a VM changes wake-up latency
 * several-fold) is the same for both servers. */
static cpu_set_t server_cpus;
static int have_server_cpus;

static pid_t echo_start(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int lfd;
        pid_t pid;

        strcpy(sa.sun_path, path);
        unlink(path);
        lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (lfd < 0 || bind(lfd, (struct sockaddr *) &sa, sizeof(sa)) < 0 || listen(lfd, 128) < 0)
                die("echo server socket");
        pid = fork();
        if (pid < 0)
                die("fork");
        if (pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (have_server_cpus && sched_setaffinity(0, sizeof(server_cpus), &server_cpus) < 0)
                        die("sched_setaffinity");
                echo_serve(lfd);
                _exit(0);
        }
        close(lfd);
        return pid;
}

/* ---- clients ------------------------------------------------------------ */

typedef struct worker {
        pthread_t thread;
        const char *path;
        unsigned index;
        double deadline;
        pthread_barrier_t *start;
        double *lat;      /* µs per round trip */
        size_t n, cap;
        long nvcsw, nivcsw;   /* the thread's context switches (getrusage) */
        int error;
} worker;

static void *worker_run(void *arg) {
        worker *w = arg;
        msgpack_sbuffer sb;
        uint8_t buf[4096];
        uint32_t msgid = MSGID_BASE + w->index * 0x01000000u;
        int fd = connect_unix(w->path);

        msgpack_sbuffer_init(&sb);
        if (fd < 0)
                w->error = errno;
        pthread_barrier_wait(w->start);
        if (fd < 0)
                return NULL;
        for (;;) {
                double t0 = now_us();
                if (t0 >= w->deadline)
                        break;
                size_t len = pack_ping(&sb, ++msgid);
                if (write_all(fd, sb.data, len) < 0) {
                        w->error = errno;
                        break;
                }
                ssize_t r = read_message(fd, buf, sizeof(buf));
                if (r < 0 || !reply_matches(buf, (size_t) r, msgid)) {
                        w->error = r < 0 ? errno : EBADMSG;
                        break;
                }
                double t1 = now_us();
                if (w->n == w->cap) {
                        w->cap = w->cap ? w->cap * 2 : 65536;
                        w->lat = realloc(w->lat, w->cap * sizeof(double));
                        if (!w->lat)
                                die("realloc");
                }
                w->lat[w->n++] = t1 - t0;
        }
        struct rusage ru;
        if (getrusage(RUSAGE_THREAD, &ru) == 0) {
                w->nvcsw = ru.ru_nvcsw;
                w->nivcsw = ru.ru_nivcsw;
        }
        close(fd);
        msgpack_sbuffer_destroy(&sb);
        return NULL;
}

typedef struct result {
        double rps, p50, p99;
        size_t n;
        double vcsw, ivcsw;   /* clients' context switches per round trip */
} result;

static result run(const char *path, unsigned clients, double seconds) {
        worker w[MAX_CLIENTS];
        pthread_barrier_t start;
        result res = { 0 };
        double t0, t1, *all;
        size_t total = 0, k = 0;

        memset(w, 0, sizeof(w));
        pthread_barrier_init(&start, NULL, clients + 1);
        for (unsigned i = 0; i < clients; i++) {
                w[i].path = path;
                w[i].index = i;
                w[i].start = &start;
                w[i].deadline = 1e300;
                if (pthread_create(&w[i].thread, NULL, worker_run, &w[i]) != 0)
                        die("pthread_create");
        }
        /* deadline is set before the barrier releases anyone */
        t0 = now_us();
        for (unsigned i = 0; i < clients; i++)
                w[i].deadline = t0 + seconds * 1e6;
        atomic_thread_fence(memory_order_seq_cst);
        pthread_barrier_wait(&start);
        for (unsigned i = 0; i < clients; i++)
                pthread_join(w[i].thread, NULL);
        t1 = now_us();
        pthread_barrier_destroy(&start);

        for (unsigned i = 0; i < clients; i++) {
                if (w[i].error) {
                        fprintf(stderr, "bench-rpc: client %u on %s: %s\n", i, path, strerror(w[i].error));
                        exit(1);
                }
                total += w[i].n;
                res.vcsw += (double) w[i].nvcsw;
                res.ivcsw += (double) w[i].nivcsw;
        }
        if (total) {
                res.vcsw /= (double) total;
                res.ivcsw /= (double) total;
        }
        all = malloc((total ? total : 1) * sizeof(double));
        for (unsigned i = 0; i < clients; i++) {
                memcpy(all + k, w[i].lat, w[i].n * sizeof(double));
                k += w[i].n;
                free(w[i].lat);
        }
        qsort(all, total, sizeof(double), cmp_double);
        res.n = total;
        res.rps = total / ((t1 - t0) / 1e6);
        if (total) {
                res.p50 = all[(size_t) (0.50 * (total - 1))];
                res.p99 = all[(size_t) (0.99 * (total - 1))];
        }
        free(all);
        return res;
}

int main(int argc, char **argv) {
        const char *agentd;
        double seconds = 3;
        char dir[] = "/tmp/bench-rpc-XXXXXX", echo_path[108];
        msgpack_sbuffer sb;
        uint8_t buf[4096];
        unsigned nclients[] = { 1, MAX_CLIENTS }, ncells = 2;
        result ra[2], re[2];
        pid_t echo;
        int fd, status;

        if (argc < 2 || argc > 3) {
                fprintf(stderr, "Usage: bench-rpc SOCKET_OF_RUNNING_AGENTD [seconds]\n");
                return 2;
        }
        agentd = argv[1];
        if (argc == 3 && (seconds = atof(argv[2])) <= 0) {
                fprintf(stderr, "bench-rpc: bad duration: %s\n", argv[2]);
                return 2;
        }
        signal(SIGPIPE, SIG_IGN);
        use_poll = getenv("BENCH_RPC_POLL") && atoi(getenv("BENCH_RPC_POLL")) > 0;
        const char *only = getenv("BENCH_RPC_CLIENTS");
        if (only && *only) {
                long n = strtol(only, NULL, 10);
                if (n < 1 || n > MAX_CLIENTS) {
                        fprintf(stderr, "bench-rpc: BENCH_RPC_CLIENTS must be 1..%d\n", MAX_CLIENTS);
                        return 2;
                }
                nclients[0] = (unsigned) n;
                ncells = 1;
        }

        /* Capture agentd's ping reply: its size is what the echo server answers. */
        msgpack_sbuffer_init(&sb);
        req_len = pack_ping(&sb, MSGID_BASE);
        fd = connect_unix(agentd);
        if (fd < 0)
                die(agentd);
        if (write_all(fd, sb.data, sb.size) < 0)
                die("write");
        ssize_t r = read_message(fd, buf, sizeof(buf));
        if (r < 0 || (size_t) r > sizeof(ping_reply) || !reply_matches(buf, (size_t) r, MSGID_BASE)) {
                fprintf(stderr, "bench-rpc: unexpected agentd.ping reply (%zd bytes)\n", r);
                return 1;
        }
        struct ucred cred;
        socklen_t cl = sizeof(cred);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) == 0 &&
            sched_getaffinity(cred.pid, sizeof(server_cpus), &server_cpus) == 0)
                have_server_cpus = 1;
        close(fd);
        memcpy(ping_reply, buf, (size_t) r);
        ping_reply_len = (size_t) r;
        msgpack_sbuffer_destroy(&sb);

        if (!mkdtemp(dir))
                die("mkdtemp");
        snprintf(echo_path, sizeof(echo_path), "%s/echo.sock", dir);
        echo = echo_start(echo_path);

        printf("bench-rpc: agentd.ping, request %zu bytes, reply %zu bytes, %.1f s per cell, nproc %ld%s\n",
               req_len, ping_reply_len, seconds, sysconf(_SC_NPROCESSORS_ONLN),
               use_poll ? ", clients wait in poll()" : "");
        {
                cpu_set_t mine;
                char a[64] = "?", b[64] = "?";
                size_t la = 0, lb = 0;
                if (sched_getaffinity(0, sizeof(mine), &mine) == 0)
                        for (int c = 0; c < CPU_SETSIZE && la < sizeof(a) - 8; c++)
                                if (CPU_ISSET(c, &mine))
                                        la += (size_t) snprintf(a + la, sizeof(a) - la, "%s%d", la ? "," : "", c);
                if (have_server_cpus)
                        for (int c = 0; c < CPU_SETSIZE && lb < sizeof(b) - 8; c++)
                                if (CPU_ISSET(c, &server_cpus))
                                        lb += (size_t) snprintf(b + lb, sizeof(b) - lb, "%s%d", lb ? "," : "", c);
                printf("bench-rpc: clients on cpus %s; agentd and the echo server on cpus %s\n", a, b);
        }
        fflush(stdout);
        for (unsigned i = 0; i < ncells; i++) {
                /* echo first, then agentd, per client count: same conditions, back to back */
                re[i] = run(echo_path, nclients[i], seconds);
                ra[i] = run(agentd, nclients[i], seconds);
        }
        kill(echo, SIGKILL);
        waitpid(echo, &status, 0);
        unlink(echo_path);
        rmdir(dir);

        printf("\n%-8s %7s %12s %10s %10s %10s\n", "server", "clients", "round-trips", "req/s", "p50 us", "p99 us");
        for (unsigned i = 0; i < ncells; i++) {
                printf("%-8s %7u %12zu %10.0f %10.1f %10.1f\n", "echo", nclients[i], re[i].n, re[i].rps, re[i].p50, re[i].p99);
                printf("%-8s %7u %12zu %10.0f %10.1f %10.1f\n", "agentd", nclients[i], ra[i].n, ra[i].rps, ra[i].p50, ra[i].p99);
        }
        /* A client that is woken before its reply is there (a reply held
         * back) runs, finds nothing and sleeps again: a second voluntary switch. */
        printf("\nclients' context switches per round trip (voluntary / involuntary)\n");
        for (unsigned i = 0; i < ncells; i++)
                printf("%7u clients: echo %.2f / %.2f, agentd %.2f / %.2f\n", nclients[i], re[i].vcsw, re[i].ivcsw,
                       ra[i].vcsw, ra[i].ivcsw);
        printf("\nratio agentd/echo (throughput: higher is better, target >= 0.80; latency: lower is better)\n");
        printf("%7s %12s %10s %10s %8s\n", "clients", "throughput", "p50", "p99", "verdict");
        int ok = 1;
        for (unsigned i = 0; i < ncells; i++) {
                double t = re[i].rps > 0 ? ra[i].rps / re[i].rps : 0;
                double l50 = re[i].p50 > 0 ? ra[i].p50 / re[i].p50 : 0;
                double l99 = re[i].p99 > 0 ? ra[i].p99 / re[i].p99 : 0;
                printf("%7u %12.2f %10.2f %10.2f %8s\n", nclients[i], t, l50, l99, t >= 0.8 ? "ok" : "BELOW");
                if (t < 0.8)
                        ok = 0;
        }
        printf("\nbench-rpc: throughput ratio target (>= 0.80 of echo) %s\n", ok ? "met" : "NOT met");
        return 0;
}
