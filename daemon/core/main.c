/* agentd: the per-user daemon's process. Parses arguments, composes the
 * manager (compose.c), binds (or receives) the socket, and runs the libuv
 * loop until SIGTERM. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "agentd-build.h"
#include "compose.h"
#include "daemon.h"
#include "file.h"
#include "log.h"
#include "macro.h"
#include "manager.h"
#include "server.h"

static void usage(FILE *f) {
        fprintf(f,
                "Usage: agentd [--socket PATH] [--config FILE] [--version]\n"
                "Per-user daemon running AI-agent commands in sandboxes.\n"
                "  --socket PATH   listen here (default $AGENTD_SOCKET, else $XDG_RUNTIME_DIR/agentd/agentd.sock)\n"
                "  --config FILE   configuration (default $XDG_CONFIG_HOME/agentd/agentd.conf)\n"
                "  --check-config  load the configuration and task files, report, exit\n");
}

static char *default_socket_path(void) {
        const char *e = getenv("AGENTD_SOCKET");
        if (e && *e)
                return strdup(e);
        const char *rt = getenv("XDG_RUNTIME_DIR");
        if (!rt || rt[0] != '/')
                return NULL;
        char *p;
        if (asprintf(&p, "%s/agentd/agentd.sock", rt) < 0)
                return NULL;
        return p;
}

static int bind_socket(manager *m) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        if (strlen(m->socket_path) >= sizeof(sa.sun_path)) {
                log_error("socket path too long: %s", m->socket_path);
                return -ENAMETOOLONG;
        }
        strcpy(sa.sun_path, m->socket_path);

        _cleanup_free_ char *dir = strdup(m->socket_path);
        if (!dir)
                return -ENOMEM;
        char *slash = strrchr(dir, '/');
        if (slash && slash != dir) {
                *slash = 0;
                int r = mkdir_private(dir);
                if (r < 0) {
                        log_error("cannot prepare socket directory %s: %s", dir, strerror(-r));
                        return r;
                }
        }

        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        /* A socket file that answers belongs to a running daemon: never steal it. */
        struct stat st;
        if (lstat(m->socket_path, &st) == 0) {
                if (!S_ISSOCK(st.st_mode)) {
                        log_error("%s exists and is not a socket", m->socket_path);
                        close(fd);
                        return -EEXIST;
                }
                int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (probe >= 0 && connect(probe, (struct sockaddr *) &sa, sizeof(sa)) == 0) {
                        close(probe);
                        close(fd);
                        log_error("another agentd is already serving on %s", m->socket_path);
                        return -EADDRINUSE;
                }
                safe_close(probe);
                unlink(m->socket_path);
        }
        mode_t old = umask(0177);
        int r = bind(fd, (struct sockaddr *) &sa, sizeof(sa));
        umask(old);
        if (r < 0) {
                r = -errno;
                close(fd);
                log_error("cannot bind %s: %s", m->socket_path, strerror(-r));
                return r;
        }
        /* What we bound, so that stopping removes this socket and never one that
         * took its place (systemd's socket unit, a newer agentd). */
        if (lstat(m->socket_path, &st) < 0 || chmod(m->socket_path, 0600) < 0 || listen(fd, SOMAXCONN) < 0) {
                r = -errno;
                close(fd);
                return r;
        }
        m->socket_dev = st.st_dev;
        m->socket_ino = st.st_ino;
        m->socket_bound = true;
        m->listen_fd = fd;
        return 0;
}

static int setup_listen_fd(manager *m) {
        int n = sd_listen_fds(1);
        if (n < 0) {
                log_error("sd_listen_fds failed: %s", strerror(-n));
                return n;
        }
        if (n >= 1) {
                int fd = SD_LISTEN_FDS_START;
                if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0) {
                        log_error("the socket passed by the service manager is not a listening Unix stream socket");
                        return -EINVAL;
                }
                for (int i = 1; i < n; i++)
                        close(SD_LISTEN_FDS_START + i);
                int fl = fcntl(fd, F_GETFL);
                fcntl(fd, F_SETFL, fl | O_NONBLOCK);
                fcntl(fd, F_SETFD, FD_CLOEXEC);
                m->listen_fd = fd;
                m->socket_activated = true;
                log_info("serving on the socket passed by the service manager");
                return 0;
        }
        return bind_socket(m);
}

static void on_signal(uv_signal_t *s, int signum) {
        manager *m = s->data;
        if (signum == SIGHUP) {
                daemon_reload(m);
                return;
        }
        daemon_begin_shutdown(m, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void on_watchdog(uv_timer_t *t) {
        sd_notify(0, "WATCHDOG=1");
        daemon_status_notify(container_of(t, manager, watchdog));
}

typedef struct main_args {
        const char *socket, *config;
        bool check_only;
} main_args;

/* systemd's convention: > 0 to go on, 0 to exit successfully (--version,
 * --help), < 0 for a usage error (already reported). */
static int parse_argv(int argc, char **argv, main_args *a) {
        static const struct option opts[] = {
                { "socket", required_argument, NULL, 's' },
                { "config", required_argument, NULL, 'c' },
                { "check-config", no_argument, NULL, 'C' },
                { "version", no_argument, NULL, 'V' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        int o;

        while ((o = getopt_long(argc, argv, "s:c:hV", opts, NULL)) >= 0) {
                switch (o) {
                case 's': a->socket = optarg; break;
                case 'c': a->config = optarg; break;
                case 'C': a->check_only = true; break;
                case 'V': printf("agentd %s (protocol %d)\n", AGENTD_VERSION, AGENTD_PROTOCOL_VERSION); return 0;
                case 'h': usage(stdout); return 0;
                default: usage(stderr); return -EINVAL;
                }
        }
        if (optind < argc) {
                usage(stderr);
                return -EINVAL;
        }
        return 1;
}

static int harden_process(void) {
        /* agentd holds the Vault session and tokens: other processes of the
         * user may not read its memory (/proc/PID/mem, environ, ptrace) nor
         * get a core dump of it. Children that exec (the sandbox helper)
         * become dumpable again as usual. */
        if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) {
                int r = -errno;
                log_error("cannot make agentd non-dumpable: %m");
                return r;
        }
        /* libtss2 prints every expected TPM error on stderr; we report them ourselves. */
        setenv("TSS2_LOG", "all+none", 0);
        signal(SIGPIPE, SIG_IGN);
        return 0;
}

/* Each connection costs an fd: allow as many as the hard limit lets us. */
static void raise_fd_limit(void) {
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                (void) setrlimit(RLIMIT_NOFILE, &rl);
        }
}

/* --check-config: the tasks were loaded (and their errors reported); the exit code. */
static int check_config_exit(manager *m) {
        size_t n = tasks_n_errors(m);
        tasks_free(m);
        config_free(m->config);
        uv_run(m->loop, UV_RUN_DEFAULT);
        (void) uv_loop_close(m->loop);
        return n > 0 ? 1 : 0;
}

/* The socket given, passed by the service manager or the default one; polled from here on. */
static int setup_socket(manager *m, const char *arg_socket) {
        if (arg_socket)
                m->socket_path = strdup(arg_socket);
        else if (sd_listen_fds(0) <= 0) {
                m->socket_path = default_socket_path();
                if (!m->socket_path) {
                        log_error("no socket path: set XDG_RUNTIME_DIR or AGENTD_SOCKET, or pass --socket");
                        return -ENOENT;
                }
        }
        if (arg_socket)
                unsetenv("LISTEN_FDS");
        int r = setup_listen_fd(m);
        if (r < 0)
                return r;
        r = server_listen(m);
        if (r < 0) {
                log_error("cannot poll the listening socket: %s", uv_strerror(r));
                return r;
        }
        return 0;
}

/* SIGTERM/SIGINT stop, SIGHUP reloads; the shutdown and watchdog timers. */
static void setup_loop_handles(manager *m) {
        uv_signal_init(m->loop, &m->sig_term);
        uv_signal_init(m->loop, &m->sig_int);
        uv_signal_init(m->loop, &m->sig_hup);
        m->sig_term.data = m->sig_int.data = m->sig_hup.data = m;
        uv_signal_start(&m->sig_term, on_signal, SIGTERM);
        uv_signal_start(&m->sig_int, on_signal, SIGINT);
        uv_signal_start(&m->sig_hup, on_signal, SIGHUP);
        uv_timer_init(m->loop, &m->shutdown_timer);

        uint64_t wd_usec = 0;
        if (sd_watchdog_enabled(0, &wd_usec) > 0 && wd_usec > 0) {
                uv_timer_init(m->loop, &m->watchdog);
                uv_timer_start(&m->watchdog, on_watchdog, wd_usec / 2000, wd_usec / 2000);
                m->watchdog_on = true;
        }
}

int main(int argc, char **argv) {
        main_args args = {};
        int r = parse_argv(argc, argv, &args);
        if (r <= 0)
                return r < 0 ? 2 : 0;

        log_setup("agentd");
        if (harden_process() < 0)
                return 1;

        static manager mgr;
        manager *m = &mgr;
        daemon_manager_init(m);
        if (daemon_load_config(m, args.config) < 0)
                return 1;
        raise_fd_limit();

        m->loop = uv_default_loop();
        r = daemon_start_tasks(m);
        if (r < 0)
                return 1;
        if (args.check_only)
                return check_config_exit(m);

        if (daemon_setup_state_directory(m) < 0 || daemon_start_parts(m) < 0 || setup_socket(m, args.socket) < 0)
                return 1;
        setup_loop_handles(m);

        log_info("agentd %s serving on %s", AGENTD_VERSION, m->socket_path ? m->socket_path : "(socket-activated)");
        sd_notify(0, "READY=1");
        daemon_status_notify(m);

        uv_run(m->loop, UV_RUN_DEFAULT);

        r = uv_loop_close(m->loop);
        if (r != 0)
                log_error("event loop did not close cleanly: %s", uv_strerror(r));
        daemon_release(m);
        log_info("stopped");
        return r == 0 ? 0 : 1;
}
