/* agentd: the per-user daemon. Parses arguments, loads the configuration,
 * binds (or receives) the socket, and runs the libuv loop until SIGTERM. */
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
#include "audit/auditlog.h"
#include "audit/telemetry.h"
#include "broker/broker.h"
#include "daemon.h"
#include "egress/egress.h"
#include "incident/approval.h"
#include "incident/response.h"
#include "incident/revoke.h"
#include "log.h"
#include "macro.h"
#include "manager.h"
#include "notify-status.h"
#include "server.h"
#include "audit/retention.h"
#include "sandbox/workspace-jobs.h"
#include "sandbox/sandbox.h"
#include "statedir.h"

uint64_t now_msec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

uint64_t now_realtime_msec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

static void usage(FILE *f) {
        fprintf(f,
                "Usage: agentd [--socket PATH] [--config FILE] [--version]\n"
                "Per-user daemon running AI-agent commands in sandboxes.\n"
                "  --socket PATH   listen here (default $AGENTD_SOCKET, else $XDG_RUNTIME_DIR/agentd/agentd.sock)\n"
                "  --config FILE   configuration (default $XDG_CONFIG_HOME/agentd/agentd.conf)\n"
                "  --check-config  load the configuration and task files, report, exit\n");
}

/* mkdir -p with mode for the last component; refuses a directory we do not own. */
static int make_private_dir(const char *path) {
        _cleanup_free_ char *copy = strdup(path);
        if (!copy)
                return -ENOMEM;
        for (char *p = copy + 1; *p; p++) {
                if (*p != '/')
                        continue;
                *p = 0;
                if (mkdir(copy, 0700) < 0 && errno != EEXIST)
                        return -errno;
                *p = '/';
        }
        if (mkdir(copy, 0700) < 0 && errno != EEXIST)
                return -errno;
        struct stat st;
        if (lstat(copy, &st) < 0)
                return -errno;
        if (!S_ISDIR(st.st_mode))
                return -ENOTDIR;
        if (st.st_uid != getuid())
                return -EPERM;
        if ((st.st_mode & 07777) != 0700 && chmod(copy, 0700) < 0)
                return -errno;
        return 0;
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
                int r = make_private_dir(dir);
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

static void on_shutdown_timer(uv_timer_t *t) {
        manager *m = container_of(t, manager, shutdown_timer);
        log_warning("shutdown took too long; closing everything");
        daemon_finish(m);
}

static void begin_shutdown(manager *m, const char *why) {
        if (m->shutting_down)
                return;
        m->shutting_down = true;
        log_info("stopping (%s)", why);
        sd_notify(0, "STOPPING=1");
        daemon_status_notify(m);
        server_stop_listening(m);
        sandboxes_shutdown(m);
        workspace_jobs_cancel();
        broker_shutdown(m);
        uv_timer_start(&m->shutdown_timer, on_shutdown_timer, 5000, 0);
        daemon_maybe_finish(m);
}

static void on_signal(uv_signal_t *s, int signum) {
        manager *m = s->data;
        if (signum == SIGHUP) {
                daemon_reload(m);
                return;
        }
        begin_shutdown(m, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void on_watchdog(uv_timer_t *t) {
        sd_notify(0, "WATCHDOG=1");
        daemon_status_notify(container_of(t, manager, watchdog));
}

static void on_close_walk(uv_handle_t *h, void *arg) {
        if (!uv_is_closing(h))
                uv_close(h, NULL);
}

/* What the STATUS= line says (notify-status.h), gathered here, above the parts,
 * from the manager and the broker; callers anywhere in the daemon just say
 * "it may have changed". */
void daemon_status_notify(manager *m) {
        daemon_status st = {
                .stopping = m->shutting_down,
                .locked_down = sandbox_locked_down(m),
                .n_sandboxes = sandbox_count(m),
                .n_live = sandbox_count_live(m),
                /* Only read when serving, as before: it may re-check the session's expiry. */
                .vault = m->shutting_down ? NULL : broker_vault_state(m),
        };
        (void) daemon_status_send(&st);
}

int daemon_reload(manager *m) {
        agentd_config *c = NULL;
        _cleanup_error_ agentd_error ce = {};
        sd_notify(0, "RELOADING=1");
        int r = config_load(m->config_path, m->home, &c, &ce);
        if (r < 0) {
                log_error("reload: %s; keeping the previous configuration", error_reason(&ce, r));
        } else {
                /* Socket and state directory are fixed for the life of the process. */
                free(c->state_directory);
                c->state_directory = strdup(m->config->state_directory);
                config_free(m->config);
                m->config = c;
                m->limits.max_message = c->max_message_size;
                log_info("configuration reloaded");
                audit_event(m, "config.reload", NULL, NULL);
        }
        tasks_reload(m);
        sd_notify(0, "READY=1");
        daemon_status_notify(m);
        return r;
}

void daemon_maybe_finish(manager *m) {
        if (m->shutting_down && sandbox_count_live(m) == 0)
                daemon_finish(m);
}

void daemon_finish(manager *m) {
        uv_timer_stop(&m->shutdown_timer);
        server_close_all(m);
        sandboxes_free(m);
        approvals_free(m);
        response_free();
        egress_free(m);
        broker_free(m);
        retention_free(m);
        auditlog_free(m);
        telemetry_free(m);
        tasks_free(m);
        uv_walk(m->loop, on_close_walk, NULL);
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

static void manager_init(manager *m) {
        m->listen_fd = -1;
        m->state_lock_fd = -1;
        m->start_msec = now_msec();
        list_init(&m->connections);
        proto_limits_default(&m->limits);
}

/* $HOME and the configuration file. */
static int load_config(manager *m, const char *arg_config) {
        const char *home = getenv("HOME");
        if (!home || home[0] != '/') {
                log_error("HOME is not set to an absolute path");
                return -EINVAL;
        }
        m->home = realpath(home, NULL);
        if (!m->home) {
                int r = -errno;
                log_error("HOME %s: %m", home);
                return r;
        }
        m->config_path = arg_config ? strdup(arg_config) : config_default_path();
        _cleanup_error_ agentd_error ce = {};
        int r = config_load(m->config_path, m->home, &m->config, &ce);
        if (r < 0) {
                log_error("%s", error_reason(&ce, r));
                return r;
        }
        m->limits.max_message = m->config->max_message_size;
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

/* Creates, canonicalises and locks the state directory. */
static int setup_state_directory(manager *m) {
        int r = make_private_dir(m->config->state_directory);
        if (r < 0) {
                log_error("cannot prepare state directory %s: %s", m->config->state_directory, strerror(-r));
                return r;
        }
        /* Canonical from here on: sandboxes mount beneath it. */
        char *state = realpath(m->config->state_directory, NULL);
        if (state) {
                free(m->config->state_directory);
                m->config->state_directory = state;
        }
        /* One daemon per state directory, before anything in it (or any
         * cgroup, or the socket) is touched. Held until the process ends. */
        pid_t holder = 0;
        m->state_lock_fd = statedir_lock(m->config->state_directory, &holder);
        if (m->state_lock_fd == -EBUSY) {
                if (holder > 0)
                        log_error("another agentd (pid %d) is using the state directory %s; not starting",
                                  (int) holder, m->config->state_directory);
                else
                        log_error("another agentd is using the state directory %s; not starting",
                                  m->config->state_directory);
                return -EBUSY;
        }
        if (m->state_lock_fd < 0) {
                log_error("cannot lock the state directory %s: %s", m->config->state_directory,
                          strerror(-m->state_lock_fd));
                return m->state_lock_fd;
        }
        return 0;
}

/* What the server asks of the parts (server.h's hooks): the audit log's
 * group commit, gate and records, and the sandboxes' hold on connections. */
static bool hook_records_pending(void *userdata) {
        return auditlog_pending(userdata);
}

static int hook_can_record(void *userdata, agentd_error *err) {
        return auditlog_can_record(userdata, err);
}

static void hook_record_rpc(void *userdata, const rpc_ctx *ctx, const char *outcome) {
        auditlog_rpc(ctx, outcome);
}

static void hook_record_event(void *userdata, const char *type, const char *sandbox_id, json_object *fields) {
        audit_event(userdata, type, sandbox_id, fields);
}

static void hook_connection_closed(void *userdata, connection *c) {
        sandboxes_connection_closed(userdata, c);
}

static void set_server_hooks(manager *m) {
        server_set_hooks(&(server_hooks) {
                .userdata = m,
                .records_pending = hook_records_pending,
                .can_record = hook_can_record,
                .record_rpc = hook_record_rpc,
                .record_event = hook_record_event,
                .connection_closed = hook_connection_closed,
        });
}

static void hook_egress_denied(void *userdata, const char *sandbox_id) {
        response_egress_denied(userdata, sandbox_id);
}

static void hook_sandbox_ended(void *userdata, sandbox *s) {
        approvals_sandbox_ended(userdata, s->id);
        response_sandbox_ended(s->id);
}

static int forget_sandbox_record(void *userdata, const char *id) {
        return sandbox_forget(userdata, id);
}

/* The parts, in dependency order. */
static int start_parts(manager *m) {
        sandbox_set_hooks(&(sandbox_hooks) { .userdata = m, .ended = hook_sandbox_ended });
        int r = sandboxes_init(m);
        if (r < 0)
                return r;
        telemetry_init(m);
        /* After the records are loaded and our leftover cgroups killed (they are
         * found by the sandbox directories the sweep may remove). */
        (void) statedir_sweep(m->config->state_directory);
        auditlog_set_tick_hook(lockdown_retry_persist);
        auditlog_init(m);
        retention_init(m, forget_sandbox_record);
        lockdown_load(m);
        egress_set_hooks(&(egress_hooks) { .userdata = m, .denied = hook_egress_denied });
        egress_init(m);
        if (approvals_init(m) < 0)
                log_error("cannot start approvals: out of memory (Network.Ask= connections will be refused)");
        r = broker_init(m);
        if (r < 0) {
                log_error("cannot start the credential broker: %s", strerror(-r));
                return r;
        }
        set_server_hooks(m);
        return 0;
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

/* A reload changes what a warm sandbox was started for. */
static void on_tasks_reloaded(manager *m, void *userdata) {
        (void) userdata;
        pool_drain(m, "task policies reloaded");
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
        manager_init(m);
        if (load_config(m, args.config) < 0)
                return 1;
        raise_fd_limit();

        m->loop = uv_default_loop();
        tasks_set_reload_hook(on_tasks_reloaded, NULL);
        r = tasks_init(m);
        if (r < 0)
                return 1;
        if (args.check_only)
                return check_config_exit(m);

        if (setup_state_directory(m) < 0 || start_parts(m) < 0 || setup_socket(m, args.socket) < 0)
                return 1;
        setup_loop_handles(m);

        log_info("agentd %s serving on %s", AGENTD_VERSION, m->socket_path ? m->socket_path : "(socket-activated)");
        sd_notify(0, "READY=1");
        daemon_status_notify(m);

        uv_run(m->loop, UV_RUN_DEFAULT);

        r = uv_loop_close(m->loop);
        if (r != 0)
                log_error("event loop did not close cleanly: %s", uv_strerror(r));
        config_free(m->config);
        free(m->config_path);
        free(m->home);
        free(m->socket_path);
        log_info("stopped");
        return r == 0 ? 0 : 1;
}
