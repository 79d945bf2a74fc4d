/* agentctl: the thin command-line client. Every command is one or more RPC
 * calls; this file only parses arguments and prints results. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "agentd-build.h"
#include "macro.h"
#include "print.h"
#include "report.h"
#include "proto.h"
#include "rpc-client.h"

enum {
        EXIT_DAEMON_ERROR = 1,
        EXIT_USAGE = 2,
        EXIT_UNREACHABLE = 3,
};

static bool arg_json;
static const char *arg_socket;

static void usage(FILE *f) {
        fprintf(f, "Usage: agentctl [--socket PATH] [--json] COMMAND ...\n\nCommands:\n");
        for (size_t i = 0; i < _RPC_METHOD_MAX; i++)
                fprintf(f, "  %-72s %s\n", rpc_methods[i].cli, rpc_methods[i].summary);
        fprintf(f, "\nExit status: 0 success, 1 error from the daemon, 2 usage error, 3 daemon unreachable;\n"
                   "spawn without --detach exits with the command's status (128+N for signal N).\n");
}

static char *socket_path(void) {
        if (arg_socket)
                return strdup(arg_socket);
        const char *e = getenv("AGENTD_SOCKET");
        if (e && *e)
                return strdup(e);
        const char *rt = getenv("XDG_RUNTIME_DIR");
        if (!rt || !*rt)
                return NULL;
        char *p;
        if (asprintf(&p, "%s/agentd/agentd.sock", rt) < 0)
                return NULL;
        return p;
}

static int connect_daemon(rpc_client *c) {
        _cleanup_free_ char *path = socket_path();
        if (!path) {
                fprintf(stderr, "agentctl: no socket: set XDG_RUNTIME_DIR or AGENTD_SOCKET, or pass --socket\n");
                return -EXIT_UNREACHABLE;
        }
        int r = rpc_client_connect(c, path);
        if (r < 0) {
                fprintf(stderr, "agentctl: cannot reach agentd at %s: %s\n", path, strerror(-r));
                return -EXIT_UNREACHABLE;
        }
        return 0;
}

/* One call: returns the exit status to use; prints errors. */
static int call(rpc_client *c, const char *method, msgpack_sbuffer *params, const int *fds, unsigned n_fds,
                rpc_result *res) {
        int r = rpc_client_call(c, method, params ? params->data : NULL, params ? params->size : 0, fds, n_fds, res);
        if (r < 0) {
                fprintf(stderr, "agentctl: connection to agentd lost: %s\n", strerror(-r));
                return EXIT_UNREACHABLE;
        }
        if (res->error) {
                fprintf(stderr, "agentctl: %s: %s\n", res->code, res->message);
                return EXIT_DAEMON_ERROR;
        }
        return 0;
}

/* The common case: call, print the result, exit. */
static int simple(const char *method, msgpack_sbuffer *params, void (*printer)(const msgpack_object *)) {
        rpc_client c;
        rpc_result res;
        int r = connect_daemon(&c);
        if (r < 0)
                return -r;
        r = call(&c, method, params, NULL, 0, &res);
        if (r == 0) {
                if (arg_json)
                        print_json(res.result);
                else if (printer)
                        printer(res.result);
                else
                        print_human(res.result);
        }
        rpc_result_done(&res);
        rpc_client_close(&c);
        return r;
}

typedef struct params {
        msgpack_sbuffer sb;
        msgpack_packer pk;
} params;

static void params_init(params *p, size_t n) {
        msgpack_sbuffer_init(&p->sb);
        msgpack_packer_init(&p->pk, &p->sb, msgpack_sbuffer_write);
        msgpack_pack_map(&p->pk, n);
}

static int need_args(int argc, int want, const char *what) {
        if (argc != want) {
                fprintf(stderr, "agentctl: usage: agentctl %s\n", what);
                return -1;
        }
        return 0;
}

static int cmd_by_id(const char *method, int argc, char **argv, const char *use) {
        if (need_args(argc, 2, use) < 0)
                return EXIT_USAGE;
        params p;
        params_init(&p, 1);
        mp_pack_kv_str(&p.pk, "id", argv[1]);
        int r = simple(method, &p.sb, NULL);
        msgpack_sbuffer_destroy(&p.sb);
        return r;
}

/* ---- spawn ------------------------------------------------------------- */

static rpc_client *signal_client;
static const char *signal_sandbox;
static volatile sig_atomic_t pending_signal, got_winch;

static void on_forward_signal(int sig) {
        pending_signal = sig;
}
static void on_winch(int sig) {
        got_winch = 1;
}

/* Forwards a signal the user sent agentctl (Ctrl-C) to the sandbox: the
 * command runs in its own session, so the terminal cannot reach it. */
static void forward_pending_signal(void) {
        if (!pending_signal || !signal_client)
                return;
        int sig = pending_signal;
        pending_signal = 0;
        rpc_client k;
        if (connect_daemon(&k) < 0)
                return;
        params p;
        params_init(&p, 2);
        mp_pack_kv_str(&p.pk, "id", signal_sandbox);
        mp_pack_kv_i64(&p.pk, "signal", sig);
        rpc_result res;
        (void) rpc_client_call(&k, "sandbox.kill", p.sb.data, p.sb.size, NULL, 0, &res);
        rpc_result_done(&res);
        msgpack_sbuffer_destroy(&p.sb);
        rpc_client_close(&k);
}

static struct termios saved_termios;
static bool termios_saved;

static void restore_terminal(void) {
        if (termios_saved)
                tcsetattr(STDIN_FILENO, TCSADRAIN, &saved_termios);
        termios_saved = false;
}

static void copy_winsize(int master) {
        struct winsize ws;
        if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0)
                (void) ioctl(master, TIOCSWINSZ, &ws);
}

/* Relays the user's terminal and the sandbox's pty until the pty closes. */
static void relay_pty(int master) {
        char buf[16384];
        bool stdin_open = true;

        if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved_termios) == 0) {
                struct termios raw = saved_termios;
                cfmakeraw(&raw);
                termios_saved = true;
                atexit(restore_terminal);
                tcsetattr(STDIN_FILENO, TCSADRAIN, &raw);
        }
        copy_winsize(master);
        for (;;) {
                if (got_winch) {
                        got_winch = 0;
                        copy_winsize(master);
                }
                forward_pending_signal();
                struct pollfd p[2] = { { .fd = master, .events = POLLIN }, { .fd = stdin_open ? STDIN_FILENO : -1, .events = POLLIN } };
                int r = poll(p, 2, -1);
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        break;
                }
                if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
                        ssize_t n = read(master, buf, sizeof(buf));
                        if (n <= 0)
                                break; /* EIO: every slave is closed */
                        for (ssize_t off = 0; off < n;) {
                                ssize_t w = write(STDOUT_FILENO, buf + off, (size_t) (n - off));
                                if (w < 0) {
                                        if (errno == EINTR)
                                                continue;
                                        break;
                                }
                                off += w;
                        }
                }
                if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
                        ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
                        if (n <= 0) {
                                stdin_open = false;
                                /* Pass end-of-file on the way a terminal does. */
                                char eof = 4;
                                (void) !write(master, &eof, 1);
                        } else
                                (void) !write(master, buf, (size_t) n);
                }
        }
        restore_terminal();
}

static int wait_exit_status(rpc_client *c, const char *id) {
        for (;;) {
                params p;
                params_init(&p, 1);
                mp_pack_kv_str(&p.pk, "id", id);
                rpc_result res;
                int r = rpc_client_call(c, "sandbox.wait", p.sb.data, p.sb.size, NULL, 0, &res);
                msgpack_sbuffer_destroy(&p.sb);
                if (r == -EINTR) {
                        forward_pending_signal();
                        continue;
                }
                if (r < 0) {
                        fprintf(stderr, "agentctl: connection to agentd lost: %s\n", strerror(-r));
                        return EXIT_UNREACHABLE;
                }
                if (res.error) {
                        fprintf(stderr, "agentctl: %s: %s\n", res.code, res.message);
                        rpc_result_done(&res);
                        return EXIT_DAEMON_ERROR;
                }
                int64_t code = 0, sig = 0;
                const msgpack_object *o = res.result;
                for (uint32_t i = 0; o->type == MSGPACK_OBJECT_MAP && i < o->via.map.size; i++) {
                        const msgpack_object_kv *kv = &o->via.map.ptr[i];
                        if (mp_str_eq(&kv->key, "exit_code") && kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                                code = (int64_t) kv->val.via.u64;
                        else if (mp_str_eq(&kv->key, "signal") && kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                                sig = (int64_t) kv->val.via.u64;
                }
                rpc_result_done(&res);
                return sig > 0 ? 128 + (int) sig : (int) (code & 0xff);
        }
}

static int cmd_spawn(int argc, char **argv) {
        static const struct option opts[] = {
                { "task", required_argument, NULL, 'T' },
                { "workspace", required_argument, NULL, 'w' },
                { "detach", no_argument, NULL, 'd' },
                { "interactive", no_argument, NULL, 'i' },
                { "tty", no_argument, NULL, 't' },
                {},
        };
        const char *task = NULL, *workspace = NULL;
        bool detach = false, tty = false;
        int o;

        optind = 1;
        while ((o = getopt_long(argc, argv, "+itd", opts, NULL)) >= 0) {
                switch (o) {
                case 'T': task = optarg; break;
                case 'w': workspace = optarg; break;
                case 'd': detach = true; break;
                case 'i': break; /* stdin is attached by default */
                case 't': tty = true; break;
                default: return EXIT_USAGE;
                }
        }
        char **cmd = argv + optind;
        int ncmd = argc - optind;
        if (tty && detach) {
                fprintf(stderr, "agentctl: -t and --detach cannot be combined\n");
                return EXIT_USAGE;
        }
        if (tty && !isatty(STDIN_FILENO)) {
                fprintf(stderr, "agentctl: -t needs a terminal on standard input\n");
                return EXIT_USAGE;
        }
        _cleanup_free_ char *cwd = NULL;
        if (!workspace) {
                cwd = getcwd(NULL, 0);
                if (!cwd) {
                        fprintf(stderr, "agentctl: cannot determine the current directory: %m\n");
                        return EXIT_USAGE;
                }
                workspace = cwd;
        }
        _cleanup_free_ char *ws_abs = realpath(workspace, NULL);
        if (!ws_abs) {
                fprintf(stderr, "agentctl: workspace %s: %m\n", workspace);
                return EXIT_USAGE;
        }

        /* Only terminal-related variables leave the client; the task decides the rest. */
        static const char *const passed[] = { "TERM", "COLORTERM", "LANG", "LC_ALL", "NO_COLOR" };
        size_t nenv = 0;
        for (size_t i = 0; i < ELEMENTSOF(passed); i++)
                if (getenv(passed[i]))
                        nenv++;

        params p;
        params_init(&p, 5 + (task ? 1 : 0) + (ncmd > 0 ? 1 : 0));
        if (task)
                mp_pack_kv_str(&p.pk, "task", task);
        if (ncmd > 0) {
                mp_pack_cstr(&p.pk, "argv");
                msgpack_pack_array(&p.pk, (size_t) ncmd);
                for (int i = 0; i < ncmd; i++)
                        mp_pack_cstr(&p.pk, cmd[i]);
        }
        mp_pack_kv_str(&p.pk, "workspace", ws_abs);
        mp_pack_kv_bool(&p.pk, "tty", tty);
        mp_pack_kv_bool(&p.pk, "attach", !detach && !tty);
        mp_pack_kv_bool(&p.pk, "detach", detach);
        mp_pack_cstr(&p.pk, "env");
        msgpack_pack_map(&p.pk, nenv);
        for (size_t i = 0; i < ELEMENTSOF(passed); i++)
                if (getenv(passed[i]))
                        mp_pack_kv_str(&p.pk, passed[i], getenv(passed[i]));

        rpc_client c;
        int r = connect_daemon(&c);
        if (r < 0) {
                msgpack_sbuffer_destroy(&p.sb);
                return -r;
        }
        int fds[3] = { STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO };
        rpc_result res;
        if (!detach) {
                /* From here on, Ctrl-C belongs to the sandboxed command: it is
                 * forwarded once the sandbox id is known. */
                struct sigaction sa = { .sa_handler = on_forward_signal };
                sigaction(SIGINT, &sa, NULL);
                sigaction(SIGTERM, &sa, NULL);
                sigaction(SIGHUP, &sa, NULL);
                sigaction(SIGQUIT, &sa, NULL);
        }
        r = call(&c, "sandbox.spawn", &p.sb, fds, !detach && !tty ? 3 : 0, &res);
        msgpack_sbuffer_destroy(&p.sb);
        if (r != 0) {
                rpc_result_done(&res);
                rpc_client_close(&c);
                return r;
        }
        _cleanup_free_ char *id = NULL;
        const msgpack_object *o2 = res.result;
        for (uint32_t i = 0; o2->type == MSGPACK_OBJECT_MAP && i < o2->via.map.size; i++)
                if (mp_str_eq(&o2->via.map.ptr[i].key, "id") && o2->via.map.ptr[i].val.type == MSGPACK_OBJECT_STR)
                        id = strndup(o2->via.map.ptr[i].val.via.str.ptr, o2->via.map.ptr[i].val.via.str.size);
        if (detach) {
                if (arg_json)
                        print_json(res.result);
                else
                        printf("%s\n", id ? id : "?");
                rpc_result_done(&res);
                rpc_client_close(&c);
                return 0;
        }
        rpc_result_done(&res);
        if (!id) {
                fprintf(stderr, "agentctl: internal: spawn reply without id\n");
                rpc_client_close(&c);
                return EXIT_DAEMON_ERROR;
        }

        signal_client = &c;
        signal_sandbox = id;
        c.interruptible = true;
        forward_pending_signal();
        if (tty) {
                if (c.n_received_fds < 1) {
                        fprintf(stderr, "agentctl: internal: no terminal received from agentd\n");
                        rpc_client_close(&c);
                        return EXIT_DAEMON_ERROR;
                }
                int master = c.received_fds[0];
                c.received_fds[0] = -1;
                c.n_received_fds = 0;
                struct sigaction sw = { .sa_handler = on_winch };
                sigaction(SIGWINCH, &sw, NULL);
                relay_pty(master);
                close(master);
        }
        r = wait_exit_status(&c, id);
        rpc_client_close(&c);
        return r;
}

/* ---- logs -------------------------------------------------------------- */

static void write_bin(int fd, const msgpack_object *o) {
        if (!o || (o->type != MSGPACK_OBJECT_BIN && o->type != MSGPACK_OBJECT_STR))
                return;
        const char *p = o->type == MSGPACK_OBJECT_BIN ? o->via.bin.ptr : o->via.str.ptr;
        size_t n = o->type == MSGPACK_OBJECT_BIN ? o->via.bin.size : o->via.str.size;
        while (n > 0) {
                ssize_t w = write(fd, p, n);
                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        return;
                }
                p += w;
                n -= (size_t) w;
        }
}

static const msgpack_object *map_get(const msgpack_object *m, const char *key) {
        for (uint32_t i = 0; m && m->type == MSGPACK_OBJECT_MAP && i < m->via.map.size; i++)
                if (mp_str_eq(&m->via.map.ptr[i].key, key))
                        return &m->via.map.ptr[i].val;
        return NULL;
}

static void print_logs(const msgpack_object *o) {
        write_bin(STDOUT_FILENO, map_get(o, "stdout"));
        write_bin(STDERR_FILENO, map_get(o, "stderr"));
}

static bool follow_done;

static void on_follow_notification(const char *method, size_t len, const msgpack_object *params, void *userdata) {
        if (len == strlen("sandbox.output") && memcmp(method, "sandbox.output", len) == 0) {
                const msgpack_object *stream = map_get(params, "stream");
                write_bin(mp_str_eq(stream, "stderr") ? STDERR_FILENO : STDOUT_FILENO, map_get(params, "data"));
        } else if (len == strlen("sandbox.state") && memcmp(method, "sandbox.state", len) == 0) {
                const msgpack_object *state = map_get(params, "state");
                if (mp_str_eq(state, "exited") || mp_str_eq(state, "killed"))
                        follow_done = true;
        }
}

static int cmd_logs(int argc, char **argv) {
        bool follow = false;
        const char *id = NULL;
        for (int i = 1; i < argc; i++) {
                if (streq(argv[i], "-f") || streq(argv[i], "--follow"))
                        follow = true;
                else if (!id)
                        id = argv[i];
                else
                        id = NULL, i = argc;
        }
        if (!id) {
                fprintf(stderr, "agentctl: usage: agentctl logs ID [-f]\n");
                return EXIT_USAGE;
        }
        if (!follow) {
                params p;
                params_init(&p, 1);
                mp_pack_kv_str(&p.pk, "id", id);
                int r = simple("sandbox.logs", &p.sb, print_logs);
                msgpack_sbuffer_destroy(&p.sb);
                return r;
        }
        rpc_client c;
        int r = connect_daemon(&c);
        if (r < 0)
                return -r;
        c.on_notification = on_follow_notification;
        params p;
        params_init(&p, 1);
        mp_pack_kv_str(&p.pk, "sandbox", id);
        rpc_result res;
        r = call(&c, "events.subscribe", &p.sb, NULL, 0, &res);
        msgpack_sbuffer_destroy(&p.sb);
        rpc_result_done(&res);
        if (r == 0) {
                /* Output so far, then live output until the sandbox ends. */
                params q;
                params_init(&q, 1);
                mp_pack_kv_str(&q.pk, "id", id);
                r = call(&c, "sandbox.logs", &q.sb, NULL, 0, &res);
                msgpack_sbuffer_destroy(&q.sb);
                if (r == 0) {
                        print_logs(res.result);
                        const msgpack_object *st = map_get(res.result, "state");
                        if (mp_str_eq(st, "exited") || mp_str_eq(st, "killed"))
                                follow_done = true;
                }
                rpc_result_done(&res);
                while (r == 0 && !follow_done) {
                        int q2 = rpc_client_pump(&c, -1);
                        if (q2 < 0 && q2 != -EINTR)
                                break;
                }
        }
        rpc_client_close(&c);
        return r;
}

static int cmd_kill(int argc, char **argv) {
        const char *id = NULL, *sig = NULL;
        for (int i = 1; i < argc; i++) {
                if ((streq(argv[i], "--signal") || streq(argv[i], "-s")) && i + 1 < argc)
                        sig = argv[++i];
                else if (!strncmp(argv[i], "--signal=", 9))
                        sig = argv[i] + 9;
                else if (!id)
                        id = argv[i];
                else {
                        id = NULL;
                        break;
                }
        }
        if (!id) {
                fprintf(stderr, "agentctl: usage: agentctl kill ID [--signal SIG]\n");
                return EXIT_USAGE;
        }
        params p;
        params_init(&p, sig ? 2 : 1);
        mp_pack_kv_str(&p.pk, "id", id);
        if (sig) {
                char *end;
                long n = strtol(sig, &end, 10);
                if (*end == 0 && end != sig)
                        mp_pack_kv_i64(&p.pk, "signal", n);
                else
                        mp_pack_kv_str(&p.pk, "signal", sig);
        }
        int r = simple("sandbox.kill", &p.sb, print_nothing);
        msgpack_sbuffer_destroy(&p.sb);
        return r;
}

/* ---- review ------------------------------------------------------------ */

static void print_diff(const msgpack_object *o) {
        if (o->type != MSGPACK_OBJECT_ARRAY)
                return print_human(o);
        size_t guarded = 0;
        for (uint32_t i = 0; i < o->via.array.size; i++) {
                const msgpack_object *e = &o->via.array.ptr[i];
                const msgpack_object *ch = map_get(e, "change"), *path = map_get(e, "path"), *g = map_get(e, "guarded"),
                                     *type = map_get(e, "type");
                char c = mp_str_eq(ch, "added") ? 'A' : mp_str_eq(ch, "deleted") ? 'D' : 'M';
                bool is_guarded = g && g->type == MSGPACK_OBJECT_BOOLEAN && g->via.boolean;
                guarded += is_guarded;
                printf("%c ", c);
                /* A file name is the sandbox's: no control character reaches the terminal. */
                for (uint32_t k = 0; path && path->type == MSGPACK_OBJECT_STR && k < path->via.str.size; k++) {
                        unsigned char ch = (unsigned char) path->via.str.ptr[k];
                        putchar(ch < 0x20 || ch == 0x7f ? '?' : ch);
                }
                printf("%s%s\n", mp_str_eq(type, "directory") ? "/" : "", is_guarded ? "   [guarded: promote needs --include-hooks]" : "");
        }
        if (guarded)
                printf("\n%zu change(s) to files the host runs later (git hooks/config, .envrc, editor settings).\n", guarded);
}

static int run_diff_u(const char *label, const char *a, const char *b) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0)
                return -1;
        if (pid == 0) {
                char la[4200], lb[4200];
                snprintf(la, sizeof(la), "a/%s", label);
                snprintf(lb, sizeof(lb), "b/%s", label);
                execl("/usr/bin/diff", "diff", "-u", "--label", la, "--label", lb, a, b, (char *) NULL);
                _exit(127);
        }
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                ;
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int cmd_diff(int argc, char **argv) {
        bool patch = false;
        const char *id = NULL;
        for (int i = 1; i < argc; i++) {
                if (streq(argv[i], "--patch") || streq(argv[i], "-p"))
                        patch = true;
                else if (!id)
                        id = argv[i];
                else {
                        id = NULL;
                        break;
                }
        }
        if (!id) {
                fprintf(stderr, "agentctl: usage: agentctl diff ID [--patch]\n");
                return EXIT_USAGE;
        }
        params p;
        params_init(&p, patch ? 2 : 1);
        mp_pack_kv_str(&p.pk, "id", id);
        if (patch)
                mp_pack_kv_bool(&p.pk, "patch", true);
        if (!patch || arg_json) {
                int r = simple("sandbox.diff", &p.sb, print_diff);
                msgpack_sbuffer_destroy(&p.sb);
                return r;
        }
        rpc_client c;
        rpc_result res;
        int r = connect_daemon(&c);
        if (r < 0) {
                msgpack_sbuffer_destroy(&p.sb);
                return -r;
        }
        r = call(&c, "sandbox.diff", &p.sb, NULL, 0, &res);
        msgpack_sbuffer_destroy(&p.sb);
        const msgpack_object *o = res.result;
        for (uint32_t i = 0; r == 0 && o->type == MSGPACK_OBJECT_ARRAY && i < o->via.array.size; i++) {
                const msgpack_object *e = &o->via.array.ptr[i];
                const msgpack_object *ch = map_get(e, "change"), *type = map_get(e, "type");
                char path[4096], host[8192], layer[8192];
                const msgpack_object *pp = map_get(e, "path"), *hp = map_get(e, "host_path"), *lp = map_get(e, "layer_path");
                if (!pp || !hp || !lp)
                        continue;
                snprintf(path, sizeof(path), "%.*s", (int) pp->via.str.size, pp->via.str.ptr);
                snprintf(host, sizeof(host), "%.*s", (int) hp->via.str.size, hp->via.str.ptr);
                snprintf(layer, sizeof(layer), "%.*s", (int) lp->via.str.size, lp->via.str.ptr);
                if (mp_str_eq(type, "directory")) {
                        printf("%s directory %s/\n", mp_str_eq(ch, "deleted") ? "deleted" : "new", path);
                        continue;
                }
                if (mp_str_eq(type, "symlink")) {
                        char t[4096] = "";
                        ssize_t n = readlink(layer, t, sizeof(t) - 1);
                        if (n > 0)
                                t[n] = 0;
                        printf("%s symlink %s%s%s\n", mp_str_eq(ch, "deleted") ? "deleted" : "changed", path,
                               n > 0 ? " -> " : "", t);
                        continue;
                }
                const char *a = mp_str_eq(ch, "added") ? "/dev/null" : host;
                const char *b = mp_str_eq(ch, "deleted") ? "/dev/null" : layer;
                int k = run_diff_u(path, a, b);
                if (k < 0 || k > 1) {
                        fprintf(stderr, "agentctl: diff of %s failed\n", path);
                        r = EXIT_DAEMON_ERROR;
                }
        }
        rpc_result_done(&res);
        rpc_client_close(&c);
        return r;
}

static void print_promote(const msgpack_object *o) {
        const msgpack_object *pr = map_get(o, "promoted"), *cf = map_get(o, "conflicts"), *gd = map_get(o, "guarded");
        for (uint32_t i = 0; pr && pr->type == MSGPACK_OBJECT_ARRAY && i < pr->via.array.size; i++)
                printf("promoted  %.*s\n", (int) pr->via.array.ptr[i].via.str.size, pr->via.array.ptr[i].via.str.ptr);
        for (uint32_t i = 0; cf && cf->type == MSGPACK_OBJECT_ARRAY && i < cf->via.array.size; i++) {
                const msgpack_object *p = map_get(&cf->via.array.ptr[i], "path"), *w = map_get(&cf->via.array.ptr[i], "reason");
                printf("CONFLICT  %.*s: %.*s\n", p ? (int) p->via.str.size : 0, p ? p->via.str.ptr : "",
                       w ? (int) w->via.str.size : 0, w ? w->via.str.ptr : "");
        }
        for (uint32_t i = 0; gd && gd->type == MSGPACK_OBJECT_ARRAY && i < gd->via.array.size; i++) {
                const msgpack_object *p = map_get(&gd->via.array.ptr[i], "path");
                printf("skipped   %.*s (runs on the host later: pass --include-hooks to promote it)\n",
                       p ? (int) p->via.str.size : 0, p ? p->via.str.ptr : "");
        }
}

static bool promote_had_conflicts;
static void print_promote_and_note(const msgpack_object *o) {
        print_promote(o);
        const msgpack_object *cf = map_get(o, "conflicts");
        promote_had_conflicts = cf && cf->type == MSGPACK_OBJECT_ARRAY && cf->via.array.size > 0;
}

static int cmd_promote(int argc, char **argv) {
        const char *id = NULL;
        bool hooks = false;
        int npaths = 0;
        char **paths = calloc((size_t) argc, sizeof(char *));
        for (int i = 1; i < argc; i++) {
                if (streq(argv[i], "--include-hooks"))
                        hooks = true;
                else if (!id)
                        id = argv[i];
                else
                        paths[npaths++] = argv[i];
        }
        if (!id) {
                free(paths);
                fprintf(stderr, "agentctl: usage: agentctl promote ID [PATH...] [--include-hooks]\n");
                return EXIT_USAGE;
        }
        params p;
        params_init(&p, 1 + (npaths ? 1 : 0) + (hooks ? 1 : 0));
        mp_pack_kv_str(&p.pk, "id", id);
        if (npaths) {
                mp_pack_cstr(&p.pk, "paths");
                msgpack_pack_array(&p.pk, (size_t) npaths);
                for (int i = 0; i < npaths; i++)
                        mp_pack_cstr(&p.pk, paths[i]);
        }
        if (hooks)
                mp_pack_kv_bool(&p.pk, "include_hooks", true);
        free(paths);
        int r = simple("sandbox.promote", &p.sb, print_promote_and_note);
        msgpack_sbuffer_destroy(&p.sb);
        /* Something was not applied: say so in the exit status too. */
        if (r == 0 && promote_had_conflicts)
                r = EXIT_DAEMON_ERROR;
        return r;
}

/* ---- credentials ------------------------------------------------------- */

static int cmd_broker(int argc, char **argv) {
        if (argc >= 2 && streq(argv[1], "status") && argc == 2)
                return simple("broker.status", NULL, NULL);
        if (argc < 2 || !streq(argv[1], "enroll")) {
                fprintf(stderr, "agentctl: usage: agentctl broker enroll --role-id ID --secret-id-file FILE | broker status\n");
                return EXIT_USAGE;
        }
        const char *role = NULL, *file = NULL;
        for (int i = 2; i < argc; i++) {
                if (streq(argv[i], "--role-id") && i + 1 < argc)
                        role = argv[++i];
                else if (streq(argv[i], "--secret-id-file") && i + 1 < argc)
                        file = argv[++i];
                else {
                        role = NULL;
                        break;
                }
        }
        if (!role || !file) {
                fprintf(stderr, "agentctl: usage: agentctl broker enroll --role-id ID --secret-id-file FILE\n");
                return EXIT_USAGE;
        }
        /* The secret comes from a file (or - for stdin), never from argv. */
        char secret[512];
        size_t n = 0;
        FILE *f = streq(file, "-") ? stdin : fopen(file, "re");
        if (!f) {
                fprintf(stderr, "agentctl: %s: %m\n", file);
                return EXIT_USAGE;
        }
        n = fread(secret, 1, sizeof(secret) - 1, f);
        if (f != stdin)
                fclose(f);
        while (n > 0 && (secret[n - 1] == '\n' || secret[n - 1] == '\r' || secret[n - 1] == ' '))
                n--;
        if (n == 0) {
                fprintf(stderr, "agentctl: %s is empty\n", file);
                return EXIT_USAGE;
        }
        params p;
        params_init(&p, 2);
        mp_pack_kv_str(&p.pk, "role_id", role);
        mp_pack_cstr(&p.pk, "secret_id");
        msgpack_pack_str(&p.pk, n);
        msgpack_pack_str_body(&p.pk, secret, n);
        explicit_zero(secret, sizeof(secret));
        int r = simple("broker.enroll", &p.sb, NULL);
        explicit_zero(p.sb.data, p.sb.size);
        msgpack_sbuffer_destroy(&p.sb);
        return r;
}

/* Inside a sandbox: ask $AGENTD_BROKER for this sandbox's token (a sealed memfd) and print it. */
/* token | token --request POLICY...: the second waits until a person answers. */
static int cmd_token(int argc, char **argv) {
        bool request = argc >= 3 && streq(argv[1], "--request");
        if (argc != 1 && !request) {
                fprintf(stderr, "agentctl: usage: agentctl token [--request POLICY...]\n");
                return EXIT_USAGE;
        }
        const char *path = getenv("AGENTD_BROKER");
        if (!path || !*path) {
                fprintf(stderr, "agentctl: AGENTD_BROKER is not set: 'token' works inside a sandbox whose task has VaultPolicies=\n");
                return EXIT_UNREACHABLE;
        }
        rpc_client c;
        int r = rpc_client_connect(&c, path);
        if (r < 0) {
                fprintf(stderr, "agentctl: cannot reach the broker at %s: %s\n", path, strerror(-r));
                return EXIT_UNREACHABLE;
        }
        rpc_result res;
        params p;
        params_init(&p, request ? 1 : 0);
        if (request) {
                mp_pack_cstr(&p.pk, "policies");
                msgpack_pack_array(&p.pk, (size_t) (argc - 2));
                for (int i = 2; i < argc; i++)
                        mp_pack_cstr(&p.pk, argv[i]);
        }
        r = call(&c, request ? "credentials.request" : "credentials.get", request ? &p.sb : NULL, NULL, 0, &res);
        msgpack_sbuffer_destroy(&p.sb);
        if (r == 0) {
                if (c.n_received_fds < 1) {
                        fprintf(stderr, "agentctl: the broker sent no token\n");
                        r = EXIT_DAEMON_ERROR;
                } else {
                        char buf[4096];
                        ssize_t n = pread(c.received_fds[0], buf, sizeof(buf), 0);
                        if (n <= 0) {
                                fprintf(stderr, "agentctl: cannot read the token: %m\n");
                                r = EXIT_DAEMON_ERROR;
                        } else if (arg_json)
                                print_json(res.result);
                        else {
                                fwrite(buf, 1, (size_t) n, stdout);
                                fputc('\n', stdout);
                        }
                        explicit_zero(buf, sizeof(buf));
                }
        }
        rpc_result_done(&res);
        rpc_client_close(&c);
        return r;
}

/* ---- evidence ------------------------------------------------------------ */

static void print_audit_records(const msgpack_object *o) {
        if (o->type != MSGPACK_OBJECT_ARRAY)
                return print_human(o);
        for (uint32_t i = 0; i < o->via.array.size; i++) {
                const msgpack_object *r = &o->via.array.ptr[i];
                const msgpack_object *seq = map_get(r, "seq"), *time = map_get(r, "time"), *type = map_get(r, "type"),
                                     *sb = map_get(r, "sandbox"), *fields = map_get(r, "fields");
                printf("%6" PRIu64 " %.*s %-16.*s %.*s ", seq && seq->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? seq->via.u64 : 0,
                       time ? (int) time->via.str.size : 0, time ? time->via.str.ptr : "", type ? (int) type->via.str.size : 0,
                       type ? type->via.str.ptr : "", sb && sb->type == MSGPACK_OBJECT_STR ? (int) sb->via.str.size : 1,
                       sb && sb->type == MSGPACK_OBJECT_STR ? sb->via.str.ptr : "-");
                if (fields) {
                        fflush(stdout);
                        print_json(fields);
                } else
                        printf("\n");
        }
}

static bool verify_failed;
static void print_verify(const msgpack_object *o) {
        const msgpack_object *ok = map_get(o, "ok"), *n = map_get(o, "records"), *bad = map_get(o, "first_bad_seq"),
                             *why = map_get(o, "reason");
        bool good = ok && ok->type == MSGPACK_OBJECT_BOOLEAN && ok->via.boolean;
        verify_failed = !good;
        if (good)
                printf("audit log OK: %" PRIu64 " records, chain and HMACs intact\n", n ? n->via.u64 : 0);
        else
                printf("audit log TAMPERED: first bad record seq %" PRIu64 " (%.*s)\n", bad ? bad->via.u64 : 0,
                       why ? (int) why->via.str.size : 0, why ? why->via.str.ptr : "");
}

/* approvals | approve ID [--once|--sandbox|--task] | deny ID */
static int cmd_approval(int argc, char **argv) {
        const char *scope = NULL;
        bool approve = streq(argv[0], "approve");

        if (streq(argv[0], "approvals")) {
                if (need_args(argc, 1, "approvals") < 0)
                        return EXIT_USAGE;
                return simple("approval.list", NULL, print_approval_list);
        }
        if (approve && argc == 3 && (streq(argv[2], "--once") || streq(argv[2], "--sandbox") || streq(argv[2], "--task")))
                scope = argv[2] + 2;
        if (argc != (scope ? 3 : 2)) {
                fprintf(stderr, "agentctl: usage: agentctl approve ID [--once|--sandbox|--task] | agentctl deny ID\n");
                return EXIT_USAGE;
        }
        params p;
        params_init(&p, scope ? 3 : 2);
        mp_pack_kv_str(&p.pk, "id", argv[1]);
        mp_pack_kv_str(&p.pk, "decision", approve ? "approve" : "deny");
        if (scope)
                mp_pack_kv_str(&p.pk, "scope", scope);
        int r = simple("approval.answer", &p.sb, print_nothing);
        msgpack_sbuffer_destroy(&p.sb);
        return r;
}

static int cmd_audit(int argc, char **argv) {
        if (argc == 2 && streq(argv[1], "verify")) {
                int r = simple("audit.verify", NULL, print_verify);
                return r == 0 && verify_failed ? EXIT_DAEMON_ERROR : r;
        }
        if (argc >= 2 && streq(argv[1], "show")) {
                const char *sb = NULL;
                long limit = -1;
                unsigned long long before = 0;
                for (int i = 2; i < argc; i++) {
                        if (streq(argv[i], "--sandbox") && i + 1 < argc)
                                sb = argv[++i];
                        else if (streq(argv[i], "--limit") && i + 1 < argc)
                                limit = strtol(argv[++i], NULL, 10);
                        else if (streq(argv[i], "--before") && i + 1 < argc)
                                before = strtoull(argv[++i], NULL, 10);
                        else {
                                fprintf(stderr, "agentctl: usage: agentctl audit show [--sandbox ID] [--limit N] [--before SEQ]\n");
                                return EXIT_USAGE;
                        }
                }
                params p;
                params_init(&p, (sb ? 1 : 0) + (limit >= 0 ? 1 : 0) + (before > 0 ? 1 : 0));
                if (sb)
                        mp_pack_kv_str(&p.pk, "sandbox", sb);
                if (limit >= 0)
                        mp_pack_kv_u64(&p.pk, "limit", (uint64_t) limit);
                if (before > 0)
                        mp_pack_kv_u64(&p.pk, "before", before);
                int r = simple("audit.query", &p.sb, print_audit_records);
                msgpack_sbuffer_destroy(&p.sb);
                return r;
        }
        fprintf(stderr, "agentctl: usage: agentctl audit verify | audit show [--sandbox ID] [--limit N]\n");
        return EXIT_USAGE;
}

/* report ID [--json | --html] [-o FILE]: exits 1 when the records do not verify. */
static int cmd_report(int argc, char **argv) {
        const char *id = NULL, *out = NULL;
        bool html = false;
        for (int i = 1; i < argc; i++) {
                if (streq(argv[i], "--html"))
                        html = true;
                else if (streq(argv[i], "--json"))
                        arg_json = true;
                else if (streq(argv[i], "-o") && i + 1 < argc)
                        out = argv[++i];
                else if (!id && argv[i][0] != '-')
                        id = argv[i];
                else
                        id = NULL, i = argc;
        }
        if (!id || (html && arg_json)) {
                fprintf(stderr, "agentctl: usage: agentctl report ID [--json | --html] [-o FILE]\n");
                return EXIT_USAGE;
        }
        params p;
        params_init(&p, 1);
        mp_pack_kv_str(&p.pk, "id", id);
        rpc_client c;
        rpc_result res;
        int r = connect_daemon(&c);
        if (r < 0) {
                msgpack_sbuffer_destroy(&p.sb);
                return -r;
        }
        r = call(&c, "sandbox.report", &p.sb, NULL, 0, &res);
        msgpack_sbuffer_destroy(&p.sb);
        FILE *f = r == 0 && out ? fopen(out, "we") : stdout;
        if (!f) {
                fprintf(stderr, "agentctl: cannot write %s: %m\n", out);
                r = EXIT_DAEMON_ERROR;
        } else if (r == 0) {
                if (arg_json) {
                        fflush(stdout);
                        print_json(res.result); /* stdout only: -o is for --html and text */
                } else if (html)
                        report_print_html(f, res.result);
                else
                        report_print_text(f, res.result);
                if (!report_verified(res.result)) {
                        fprintf(stderr, "agentctl: the audit records of sandbox %s do not verify (see the report)\n", id);
                        r = EXIT_DAEMON_ERROR;
                }
                if (f != stdout && fclose(f) != 0)
                        r = EXIT_DAEMON_ERROR;
        }
        rpc_result_done(&res);
        rpc_client_close(&c);
        return r;
}

/* ---- incident ------------------------------------------------------------ */

static unsigned revoke_pending, revoke_failures;

/* Sandboxes the daemon could not freeze: a revocation that did not fully take effect is an error. */
static void note_failures(const msgpack_object *o, bool print) {
        const msgpack_object *fl = map_get(o, "failures");
        revoke_failures = fl && fl->type == MSGPACK_OBJECT_ARRAY ? fl->via.array.size : 0;
        for (uint32_t i = 0; print && i < revoke_failures; i++) {
                const msgpack_object *sb = map_get(&fl->via.array.ptr[i], "sandbox"), *er = map_get(&fl->via.array.ptr[i], "error");
                if (sb && er && sb->type == MSGPACK_OBJECT_STR && er->type == MSGPACK_OBJECT_STR)
                        printf("failed: %.*s %.*s\n", (int) sb->via.str.size, sb->via.str.ptr, (int) er->via.str.size, er->via.str.ptr);
        }
}

static void print_revoke(const msgpack_object *o) {
        const msgpack_object *f = map_get(o, "frozen"), *k = map_get(o, "killed"), *r = map_get(o, "tokens_revoked"),
                             *p = map_get(o, "tokens_pending"), *snaps = map_get(o, "snapshots"), *ld = map_get(o, "locked_down");
        revoke_pending = p && p->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (unsigned) p->via.u64 : 0;
        printf("frozen: %" PRIu64 "\nkilled: %" PRIu64 "\ntokens revoked: %" PRIu64 "\ntokens pending: %u\n",
               f ? f->via.u64 : 0, k ? k->via.u64 : 0, r ? r->via.u64 : 0, revoke_pending);
        const msgpack_object *fm = map_get(o, "freeze_method");
        if (fm && fm->type == MSGPACK_OBJECT_STR)
                printf("freeze method: %.*s\n", (int) fm->via.str.size, fm->via.str.ptr);
        note_failures(o, true);
        for (uint32_t i = 0; snaps && snaps->type == MSGPACK_OBJECT_ARRAY && i < snaps->via.array.size; i++)
                printf("snapshot: %.*s\n", (int) snaps->via.array.ptr[i].via.str.size, snaps->via.array.ptr[i].via.str.ptr);
        if (ld && ld->type == MSGPACK_OBJECT_BOOLEAN && ld->via.boolean)
                printf("lockdown: new spawns are refused until 'agentctl unlock'\n");
}

static void note_pending_json(const msgpack_object *o) {
        const msgpack_object *p = map_get(o, "tokens_pending");
        revoke_pending = p && p->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (unsigned) p->via.u64 : 0;
        note_failures(o, false);
}

static int cmd_revoke(int argc, char **argv) {
        bool all = false, freeze_only = false;
        const char *sb = NULL, *task = NULL;
        for (int i = 1; i < argc; i++) {
                if (streq(argv[i], "--all"))
                        all = true;
                else if (streq(argv[i], "--freeze-only"))
                        freeze_only = true;
                else if (streq(argv[i], "--sandbox") && i + 1 < argc)
                        sb = argv[++i];
                else if (streq(argv[i], "--task") && i + 1 < argc)
                        task = argv[++i];
                else {
                        all = false, sb = task = NULL;
                        break;
                }
        }
        if ((all ? 1 : 0) + (sb ? 1 : 0) + (task ? 1 : 0) != 1) {
                fprintf(stderr, "agentctl: usage: agentctl revoke --all | --sandbox ID | --task NAME [--freeze-only]\n");
                return EXIT_USAGE;
        }
        params p;
        params_init(&p, 2);
        if (all)
                mp_pack_kv_bool(&p.pk, "all", true);
        else if (sb)
                mp_pack_kv_str(&p.pk, "sandbox", sb);
        else
                mp_pack_kv_str(&p.pk, "task", task);
        mp_pack_kv_bool(&p.pk, "freeze_only", freeze_only);
        rpc_client c;
        rpc_result res;
        int r = connect_daemon(&c);
        if (r < 0) {
                msgpack_sbuffer_destroy(&p.sb);
                return -r;
        }
        r = call(&c, "credentials.revoke", &p.sb, NULL, 0, &res);
        msgpack_sbuffer_destroy(&p.sb);
        if (r == 0) {
                if (arg_json) {
                        print_json(res.result);
                        note_pending_json(res.result);
                } else
                        print_revoke(res.result);
        }
        rpc_result_done(&res);
        rpc_client_close(&c);
        /* Not done until Vault confirmed every revocation. */
        if (r == 0 && revoke_pending > 0) {
                fprintf(stderr, "agentctl: %u token revocation(s) not yet confirmed by Vault; agentd retries them (see agentctl broker status)\n",
                        revoke_pending);
                r = EXIT_DAEMON_ERROR;
        }
        if (r == 0 && revoke_failures > 0) {
                fprintf(stderr, "agentctl: %u sandbox(es) could not be frozen (killed instead where possible); see 'failures'\n",
                        revoke_failures);
                r = EXIT_DAEMON_ERROR;
        }
        return r;
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                { "socket", required_argument, NULL, 's' },
                { "json", no_argument, NULL, 'j' },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                {},
        };
        int o;
        while ((o = getopt_long(argc, argv, "+h", opts, NULL)) >= 0) {
                switch (o) {
                case 's': arg_socket = optarg; break;
                case 'j': arg_json = true; break;
                case 'h': usage(stdout); return 0;
                case 'V': printf("agentctl %s (protocol %d)\n", AGENTD_VERSION, AGENTD_PROTOCOL_VERSION); return 0;
                default: usage(stderr); return EXIT_USAGE;
                }
        }
        if (optind >= argc) {
                usage(stderr);
                return EXIT_USAGE;
        }
        argc -= optind;
        argv += optind;
        const char *cmd = argv[0];

        if (streq(cmd, "ping") || streq(cmd, "status")) {
                if (need_args(argc, 1, cmd) < 0)
                        return EXIT_USAGE;
                return simple(streq(cmd, "ping") ? "agentd.ping" : "agentd.status", NULL, NULL);
        }
        if (streq(cmd, "tasks")) {
                if (need_args(argc, 1, "tasks") < 0)
                        return EXIT_USAGE;
                return simple("task.list", NULL, print_task_list);
        }
        if (streq(cmd, "task")) {
                if (argc != 3 || !streq(argv[1], "show")) {
                        fprintf(stderr, "agentctl: usage: agentctl task show NAME\n");
                        return EXIT_USAGE;
                }
                params p;
                params_init(&p, 1);
                mp_pack_kv_str(&p.pk, "name", argv[2]);
                int r = simple("task.show", &p.sb, NULL);
                msgpack_sbuffer_destroy(&p.sb);
                return r;
        }
        if (streq(cmd, "spawn"))
                return cmd_spawn(argc, argv);
        if (streq(cmd, "ps")) {
                if (need_args(argc, 1, "ps") < 0)
                        return EXIT_USAGE;
                return simple("sandbox.list", NULL, print_sandbox_list);
        }
        if (streq(cmd, "wait"))
                return cmd_by_id("sandbox.wait", argc, argv, "wait ID");
        if (streq(cmd, "kill"))
                return cmd_kill(argc, argv);
        if (streq(cmd, "logs"))
                return cmd_logs(argc, argv);
        if (streq(cmd, "revoke"))
                return cmd_revoke(argc, argv);
        if (streq(cmd, "unlock")) {
                if (need_args(argc, 1, "unlock") < 0)
                        return EXIT_USAGE;
                return simple("agentd.unlock", NULL, NULL);
        }
        if (streq(cmd, "audit"))
                return cmd_audit(argc, argv);
        if (streq(cmd, "prune")) {
                if (need_args(argc, 1, "prune") < 0)
                        return EXIT_USAGE;
                return simple("agentd.prune", NULL, NULL);
        }
        if (streq(cmd, "approvals") || streq(cmd, "approve") || streq(cmd, "deny"))
                return cmd_approval(argc, argv);
        if (streq(cmd, "broker"))
                return cmd_broker(argc, argv);
        if (streq(cmd, "token"))
                return cmd_token(argc, argv);
        if (streq(cmd, "diff"))
                return cmd_diff(argc, argv);
        if (streq(cmd, "promote"))
                return cmd_promote(argc, argv);
        if (streq(cmd, "report"))
                return cmd_report(argc, argv);
        if (streq(cmd, "discard"))
                return cmd_by_id("sandbox.discard", argc, argv, "discard ID");

        fprintf(stderr, "agentctl: unknown command '%s' (see agentctl --help)\n", cmd);
        return EXIT_USAGE;
}
