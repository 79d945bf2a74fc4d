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
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "agentd-build.h"
#include "macro.h"
#include "globalopts.h"
#include "print.h"
#include "report.h"
#include "relay.h"
#include "proto.h"
#include "quote.h"
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

typedef struct params {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        bool secret;    /* wiped before it is freed */
} params;

static void params_init(params *p, size_t n) {
        p->secret = false;
        msgpack_sbuffer_init(&p->sb);
        msgpack_packer_init(&p->pk, &p->sb, msgpack_sbuffer_write);
        msgpack_pack_map(&p->pk, n);
}

/* One call on a new connection; consumes p (NULL: no parameters). The caller
 * looks at res when it returns 0, then calls call_done() in any case. */
static int call_new(const char *method, params *p, rpc_client *c, rpc_result *res) {
        memset(res, 0, sizeof(*res));
        *c = (rpc_client) { .fd = -1 };
        int r = connect_daemon(c);
        r = r < 0 ? -r : call(c, method, p ? &p->sb : NULL, NULL, 0, res);
        if (p && p->secret)
                explicit_zero(p->sb.data, p->sb.size);
        if (p)
                msgpack_sbuffer_destroy(&p->sb);
        return r;
}

static void call_done(rpc_client *c, rpc_result *res) {
        rpc_result_done(res);
        rpc_client_close(c);
}

/* The common case: call, print the result, exit. */
static int simple(const char *method, params *p, void (*printer)(const msgpack_object *)) {
        rpc_client c;
        rpc_result res;
        int r = call_new(method, p, &c, &res);
        if (r == 0) {
                if (arg_json)
                        print_json(res.result);
                else if (printer)
                        printer(res.result);
                else
                        print_human(res.result);
        }
        call_done(&c, &res);
        return r;
}

/* ---- the command table's plumbing ---------------------------------------- */

/* One row of the command table (at the end of this file), as methods.def is
 * the daemon's: the name, what runs it, its usage line and, for the commands
 * that are one call, the method and how its result prints. */
typedef struct command command;
struct command {
        const char *name;
        int (*run)(const command *cmd, int argc, char **argv);
        const char *usage;                      /* after "agentctl: usage: agentctl " */
        const char *method;                     /* cmd_call, cmd_call_id */
        void (*print)(const msgpack_object *o); /* NULL: print_human */
};

static int usage_error(const command *cmd) {
        fprintf(stderr, "agentctl: usage: agentctl %s\n", cmd->usage);
        return EXIT_USAGE;
}

/* COMMAND: the method, without parameters. */
static int cmd_call(const command *cmd, int argc, char **argv) {
        if (argc != 1)
                return usage_error(cmd);
        return simple(cmd->method, NULL, cmd->print);
}

/* One call whose only parameter is {key: value}. */
static int simple_kv(const char *method, const char *key, const char *value, void (*print)(const msgpack_object *)) {
        params p;
        params_init(&p, 1);
        mp_pack_kv_str(&p.pk, key, value);
        return simple(method, &p, print);
}

/* COMMAND ID: the method with {id}. */
static int cmd_call_id(const command *cmd, int argc, char **argv) {
        if (argc != 2)
                return usage_error(cmd);
        return simple_kv(cmd->method, "id", argv[1], cmd->print);
}

/* A flag of "COMMAND ID [FLAG...]": a switch sets *set; a flag with a value
 * takes the next argument (or --name=VALUE) into *value. */
typedef struct flag {
        const char *name, *alias;
        bool *set;
        const char **value;
} flag;

static const flag *flag_find(const flag *flags, const char *arg, const char **ret_inline) {
        *ret_inline = NULL;
        for (const flag *f = flags; f->name; f++) {
                if (streq(arg, f->name) || (f->alias && streq(arg, f->alias)))
                        return f;
                size_t n = strlen(f->name);
                if (f->value && strncmp(arg, f->name, n) == 0 && arg[n] == '=') {
                        *ret_inline = arg + n + 1;
                        return f;
                }
        }
        return NULL;
}

/* Exactly one ID among the flags: 0, or -1 (a usage error). */
static int parse_id_flags(int argc, char **argv, const flag *flags, const char **ret_id) {
        const char *id = NULL, *inline_value;
        for (int i = 1; i < argc; i++) {
                const flag *f = flag_find(flags, argv[i], &inline_value);
                if (f && f->set)
                        *f->set = true;
                else if (f && inline_value)
                        *f->value = inline_value;
                else if (f && i + 1 < argc)
                        *f->value = argv[++i];
                else if (f || id)
                        return -1;
                else
                        id = argv[i];
        }
        if (!id)
                return -1;
        *ret_id = id;
        return 0;
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
        if (!pending_signal || !signal_client || !signal_sandbox)
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

/* agentctl's exit code for a sandbox.wait result (128+N for signal N). */
static int exit_status_of(const msgpack_object *o) {
        int64_t code = 0, sig = 0;
        for (uint32_t i = 0; o->type == MSGPACK_OBJECT_MAP && i < o->via.map.size; i++) {
                const msgpack_object_kv *kv = &o->via.map.ptr[i];
                if (mp_str_eq(&kv->key, "exit_code") && kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                        code = (int64_t) kv->val.via.u64;
                else if (mp_str_eq(&kv->key, "signal") && kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                        sig = (int64_t) kv->val.via.u64;
        }
        return sig > 0 ? 128 + (int) sig : (int) (code & 0xff);
}

/* agentctl's exit code for the answer to a call that waited for a sandbox
 * (sandbox.wait, sandbox.spawn with wait): its status, or why there is none.
 * Takes res over. */
static int exit_status_of_reply(int r, rpc_result *res) {
        if (r < 0) {
                fprintf(stderr, "agentctl: connection to agentd lost: %s\n", strerror(-r));
                return EXIT_UNREACHABLE;
        }
        if (res->error) {
                fprintf(stderr, "agentctl: %s: %s\n", res->code, res->message);
                rpc_result_done(res);
                return EXIT_DAEMON_ERROR;
        }
        int status = exit_status_of(res->result);
        rpc_result_done(res);
        return status;
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
                return exit_status_of_reply(r, &res);
        }
}

/* task check FILE: the daemon parses the text exactly as it would load the file. */
static int cmd_task_check(const char *file) {
        static char text[1 << 20];
        _cleanup_close_ int fd = open(file, O_RDONLY | O_CLOEXEC);
        size_t n = 0;
        ssize_t k = 0;
        while (fd >= 0 && n < sizeof(text) && (k = read(fd, text + n, sizeof(text) - n)) > 0)
                n += (size_t) k;
        if (fd < 0 || k < 0) {
                fprintf(stderr, "agentctl: %s: %m\n", file);
                return EXIT_USAGE;
        }
        if (n == sizeof(text)) {
                fprintf(stderr, "agentctl: %s: larger than 1 MiB\n", file);
                return EXIT_USAGE;
        }
        _cleanup_free_ char *abs = realpath(file, NULL);
        params p;
        params_init(&p, 2);
        mp_pack_cstr(&p.pk, "text");
        msgpack_pack_str(&p.pk, n);
        msgpack_pack_str_body(&p.pk, text, n);
        mp_pack_kv_str(&p.pk, "source", abs ? abs : file);
        return simple("task.check", &p, NULL);
}

/* task show NAME | task check FILE */
static int cmd_task(const command *cmd, int argc, char **argv) {
        if (argc == 3 && streq(argv[1], "check"))
                return cmd_task_check(argv[2]);
        if (argc != 3 || !streq(argv[1], "show"))
                return usage_error(cmd);
        return simple_kv("task.show", "name", argv[2], NULL);
}

typedef struct spawn_args {
        const char *task, *workspace;
        bool detach, tty;
        char **cmd;
        int ncmd;
} spawn_args;

/* Parses the options of `spawn`; 0 or an exit code. */
static int spawn_parse_args(int argc, char **argv, spawn_args *a) {
        static const struct option opts[] = {
                { "task", required_argument, NULL, 'T' },
                { "workspace", required_argument, NULL, 'w' },
                { "detach", no_argument, NULL, 'd' },
                { "interactive", no_argument, NULL, 'i' },
                { "tty", no_argument, NULL, 't' },
                {},
        };
        int o;

        *a = (spawn_args) {};
        optind = 1;
        while ((o = getopt_long(argc, argv, "+itd", opts, NULL)) >= 0) {
                switch (o) {
                case 'T': a->task = optarg; break;
                case 'w': a->workspace = optarg; break;
                case 'd': a->detach = true; break;
                case 'i': break; /* stdin is attached by default */
                case 't': a->tty = true; break;
                default: return EXIT_USAGE;
                }
        }
        a->cmd = argv + optind;
        a->ncmd = argc - optind;
        if (a->tty && a->detach) {
                fprintf(stderr, "agentctl: -t and --detach cannot be combined\n");
                return EXIT_USAGE;
        }
        if (a->tty && !isatty(STDIN_FILENO)) {
                fprintf(stderr, "agentctl: -t needs a terminal on standard input\n");
                return EXIT_USAGE;
        }
        return 0;
}

/* The absolute workspace path (the current directory when none is given); 0 or an exit code. */
static int spawn_resolve_workspace(const char *workspace, char **ret) {
        _cleanup_free_ char *cwd = NULL;
        if (!workspace) {
                cwd = getcwd(NULL, 0);
                if (!cwd) {
                        fprintf(stderr, "agentctl: cannot determine the current directory: %m\n");
                        return EXIT_USAGE;
                }
                workspace = cwd;
        }
        *ret = realpath(workspace, NULL);
        if (!*ret) {
                fprintf(stderr, "agentctl: workspace %s: %m\n", workspace);
                return EXIT_USAGE;
        }
        return 0;
}

/* Packs the sandbox.spawn parameters into p (initialised here). */
static void spawn_pack_params(params *p, const spawn_args *a, const char *ws_abs, bool wait) {
        /* Only terminal-related variables leave the client; the task decides the rest. */
        static const char *const passed[] = { "TERM", "COLORTERM", "LANG", "LC_ALL", "NO_COLOR" };
        size_t nenv = 0;
        for (size_t i = 0; i < ELEMENTSOF(passed); i++)
                if (getenv(passed[i]))
                        nenv++;

        const char *caller_path = getenv("PATH");
        params_init(p, 6 + (a->task ? 1 : 0) + (a->ncmd > 0 ? 1 : 0) + (caller_path ? 1 : 0) + (wait ? 1 : 0));
        if (a->task)
                mp_pack_kv_str(&p->pk, "task", a->task);
        if (a->ncmd > 0) {
                mp_pack_cstr(&p->pk, "argv");
                msgpack_pack_array(&p->pk, (size_t) a->ncmd);
                for (int i = 0; i < a->ncmd; i++)
                        mp_pack_cstr(&p->pk, a->cmd[i]);
        }
        mp_pack_kv_str(&p->pk, "workspace", ws_abs);
        if (caller_path) /* filtered by agentd to what the sandbox can see */
                mp_pack_kv_str(&p->pk, "path", caller_path);
        mp_pack_kv_bool(&p->pk, "tty", a->tty);
        mp_pack_kv_bool(&p->pk, "attach", !a->detach && !a->tty);
        mp_pack_kv_bool(&p->pk, "detach", a->detach);
        if (wait) /* one round trip: the reply comes with the exit */
                mp_pack_kv_bool(&p->pk, "wait", true);
        /* Files the sandbox creates get our umask, as if the command ran here. */
        mode_t mask = umask(0);
        umask(mask);
        mp_pack_cstr(&p->pk, "umask");
        msgpack_pack_uint32(&p->pk, mask);
        mp_pack_cstr(&p->pk, "env");
        msgpack_pack_map(&p->pk, nenv);
        for (size_t i = 0; i < ELEMENTSOF(passed); i++)
                if (getenv(passed[i]))
                        mp_pack_kv_str(&p->pk, passed[i], getenv(passed[i]));
}

/* From here on, Ctrl-C belongs to the sandboxed command: it is
 * forwarded once the sandbox id is known. */
static void spawn_forward_signals(void) {
        struct sigaction sa = { .sa_handler = on_forward_signal };
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGHUP, &sa, NULL);
        sigaction(SIGQUIT, &sa, NULL);
}

/* The sandbox id of a spawn reply (NULL if none); prints the workspace note. */
static char *spawn_reply_id(const msgpack_object *o2) {
        char *id = NULL;
        for (uint32_t i = 0; o2->type == MSGPACK_OBJECT_MAP && i < o2->via.map.size; i++) {
                const msgpack_object_kv *kv = &o2->via.map.ptr[i];
                if (mp_str_eq(&kv->key, "id") && kv->val.type == MSGPACK_OBJECT_STR) {
                        free(id);
                        id = strndup(kv->val.via.str.ptr, kv->val.via.str.size);
                } else if (mp_str_eq(&kv->key, "workspace_note") && kv->val.type == MSGPACK_OBJECT_STR && !arg_json)
                        fprintf(stderr, "agentctl: note: %.*s\n", (int) kv->val.via.str.size, kv->val.via.str.ptr);
        }
        return id;
}

/* Follows an attached sandbox (relayed stdio or a terminal) until it exits; the exit code. */
static int spawn_follow(rpc_client *c, const char *id, bool tty) {
        signal_client = c;
        signal_sandbox = id;
        c->interruptible = true;
        forward_pending_signal();
        if (tty) {
                if (c->n_received_fds < 1) {
                        fprintf(stderr, "agentctl: internal: no terminal received from agentd\n");
                        return EXIT_DAEMON_ERROR;
                }
                int master = c->received_fds[0];
                c->received_fds[0] = -1;
                c->n_received_fds = 0;
                struct sigaction sw = { .sa_handler = on_winch };
                sigaction(SIGWINCH, &sw, NULL);
                relay_pty(master);
                close(master);
        }
        return wait_exit_status(c, id);
}

/* sandbox.started (a spawn with wait): the id, for forwarding Ctrl-C, and the note. */
static void on_spawn_started(const char *method, size_t len, const msgpack_object *params, void *userdata) {
        char **id = userdata;
        if (len != strlen("sandbox.started") || memcmp(method, "sandbox.started", len) != 0 || !params || *id)
                return;
        *id = spawn_reply_id(params);
        if (*id) {
                signal_sandbox = *id;
                forward_pending_signal();
        }
}

#define SPAWN_WITHOUT_WAIT (-1) /* an agentd that predates wait: spawn, then sandbox.wait */

/* An attached spawn in one call (wait: true): the reply carries the exit. */
static int spawn_attached(rpc_client *c, params *p, int fds[3], stdio_relay *relay) {
        _cleanup_free_ char *id = NULL;
        rpc_result res;

        c->on_notification = on_spawn_started;
        c->userdata = &id;
        c->interruptible = true;
        signal_client = c; /* Ctrl-C is forwarded once sandbox.started names the sandbox */
        int r = rpc_client_call(c, "sandbox.spawn", p->sb.data, p->sb.size, fds, 3, &res);
        while (r == -EINTR) {
                forward_pending_signal();
                r = rpc_client_resume(c, &res);
        }
        signal_client = NULL;
        signal_sandbox = NULL;
        c->on_notification = NULL;
        c->interruptible = false;
        if (r >= 0 && res.error && streq(res.code, "invalid_params") && strstr(res.message, "unknown parameter 'wait'")) {
                rpc_result_done(&res);
                return SPAWN_WITHOUT_WAIT; /* nothing ran; the relay's pipes are still ours to send again */
        }
        stdio_relay_sent(relay);
        if (r >= 0 && !res.error && !id) /* no sandbox.started seen: the note is in the reply */
                free(spawn_reply_id(res.result));
        return exit_status_of_reply(r, &res);
}

static int cmd_spawn(const command *cmd_row, int argc, char **argv) {
        spawn_args a;
        int r = spawn_parse_args(argc, argv, &a);
        if (r != 0)
                return r;
        _cleanup_free_ char *ws_abs = NULL;
        r = spawn_resolve_workspace(a.workspace, &ws_abs);
        if (r != 0)
                return r;

        params p;
        spawn_pack_params(&p, &a, ws_abs, !a.detach && !a.tty);

        int fds[3] = { STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO };
        stdio_relay relay = { .write_fd = { -1, -1, -1 } };
        if (!a.detach && !a.tty && stdio_relay_start(&relay, fds) < 0) {
                fprintf(stderr, "agentctl: cannot relay the sandbox's output: %m\n");
                msgpack_sbuffer_destroy(&p.sb);
                return EXIT_USAGE;
        }
        rpc_client c;
        r = connect_daemon(&c);
        if (r < 0) {
                msgpack_sbuffer_destroy(&p.sb);
                stdio_relay_finish(&relay);
                return -r;
        }
        rpc_result res;
        if (!a.detach)
                spawn_forward_signals();
        if (!a.detach && !a.tty) {
                r = spawn_attached(&c, &p, fds, &relay);
                msgpack_sbuffer_destroy(&p.sb);
                if (r != SPAWN_WITHOUT_WAIT) {
                        rpc_client_close(&c);
                        stdio_relay_finish(&relay);
                        return r;
                }
                spawn_pack_params(&p, &a, ws_abs, false);
        }
        r = call(&c, "sandbox.spawn", &p.sb, fds, !a.detach && !a.tty ? 3 : 0, &res);
        msgpack_sbuffer_destroy(&p.sb);
        stdio_relay_sent(&relay);
        if (r != 0) {
                rpc_result_done(&res);
                rpc_client_close(&c);
                stdio_relay_finish(&relay);
                return r;
        }
        _cleanup_free_ char *id = spawn_reply_id(res.result);
        if (a.detach) {
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
                stdio_relay_finish(&relay);
                return EXIT_DAEMON_ERROR;
        }
        r = spawn_follow(&c, id, a.tty);
        rpc_client_close(&c);
        stdio_relay_finish(&relay); /* a no-op with a terminal: no relay was started */
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

static int cmd_logs(const command *cmd, int argc, char **argv) {
        bool follow = false;
        const char *id;
        const flag flags[] = { { "--follow", "-f", .set = &follow }, {} };
        if (parse_id_flags(argc, argv, flags, &id) < 0)
                return usage_error(cmd);
        if (!follow)
                return simple_kv("sandbox.logs", "id", id, print_logs);
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

static int cmd_kill(const command *cmd, int argc, char **argv) {
        const char *id, *sig = NULL;
        const flag flags[] = { { "--signal", "-s", .value = &sig }, {} };
        if (parse_id_flags(argc, argv, flags, &id) < 0)
                return usage_error(cmd);
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
        return simple("sandbox.kill", &p, print_nothing);
}

/* ---- review ------------------------------------------------------------ */

/* A name from the daemon as git prints it (core.quotePath): a name chosen by
 * a sandbox cannot forge a line or move the cursor. */
static char *quoted(const msgpack_object *o) {
        if (!o || (o->type != MSGPACK_OBJECT_STR && o->type != MSGPACK_OBJECT_BIN))
                return quote_path("");
        return quote_path_n(o->via.str.ptr, o->via.str.size);
}

static void print_diff(const msgpack_object *o) {
        if (o->type != MSGPACK_OBJECT_ARRAY)
                return print_human(o);
        size_t guarded = 0;
        for (uint32_t i = 0; i < o->via.array.size; i++) {
                const msgpack_object *e = &o->via.array.ptr[i];
                const msgpack_object *ch = map_get(e, "change"), *g = map_get(e, "guarded"), *type = map_get(e, "type");
                char c = mp_str_eq(ch, "added") ? 'A' : mp_str_eq(ch, "deleted") ? 'D' : 'M';
                bool is_guarded = g && g->type == MSGPACK_OBJECT_BOOLEAN && g->via.boolean;
                guarded += is_guarded;
                _cleanup_free_ char *path = quoted(map_get(e, "path"));
                printf("%c %s%s%s%s\n", c, path ? path : "?", mp_str_eq(type, "directory") ? "/" : "",
                       mp_str_eq(type, "other") && c != 'D' ? "   [not a file, directory or symlink: promote skips it]" : "",
                       is_guarded ? "   [guarded: promote needs --include-hooks]" : "");
        }
        if (guarded)
                printf("\n%zu change(s) to files the host runs or obeys later (git internals and hooks, .envrc, editor settings, agentd config).\n", guarded);
}

static int run_diff_u(const char *label, const char *a, const char *b) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0)
                return -1;
        if (pid == 0) {
                /* Labels as git writes them: the whole "a/<name>" quoted when the name needs it. */
                char la[4200], lb[4200];
                snprintf(la, sizeof(la), "a/%s", label);
                snprintf(lb, sizeof(lb), "b/%s", label);
                char *qa = quote_path(la), *qb = quote_path(lb);
                if (!qa || !qb)
                        _exit(127);
                execl("/usr/bin/diff", "diff", "-u", "--label", qa, "--label", qb, a, b, (char *) NULL);
                _exit(127);
        }
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                ;
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int cmd_diff(const command *cmd, int argc, char **argv) {
        bool patch = false;
        const char *id;
        const flag flags[] = { { "--patch", "-p", .set = &patch }, {} };
        if (parse_id_flags(argc, argv, flags, &id) < 0)
                return usage_error(cmd);
        params p;
        params_init(&p, patch ? 2 : 1);
        mp_pack_kv_str(&p.pk, "id", id);
        if (patch)
                mp_pack_kv_bool(&p.pk, "patch", true);
        if (!patch || arg_json)
                return simple("sandbox.diff", &p, print_diff);
        rpc_client c;
        rpc_result res;
        int r = call_new("sandbox.diff", &p, &c, &res);
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
                _cleanup_free_ char *qpath = quote_path(path);
                if (!qpath) {
                        r = EXIT_DAEMON_ERROR;
                        break;
                }
                if (mp_str_eq(type, "directory")) {
                        printf("%s directory %s/\n", mp_str_eq(ch, "deleted") ? "deleted" : "new", qpath);
                        continue;
                }
                if (mp_str_eq(type, "symlink")) {
                        char t[4096] = "";
                        ssize_t n = readlink(layer, t, sizeof(t) - 1);
                        if (n > 0)
                                t[n] = 0;
                        _cleanup_free_ char *qt = quote_path(t);
                        printf("%s symlink %s%s%s\n", mp_str_eq(ch, "deleted") ? "deleted" : "changed", qpath,
                               n > 0 ? " -> " : "", qt ? qt : "?");
                        continue;
                }
                const char *a = mp_str_eq(ch, "added") ? "/dev/null" : host;
                const char *b = mp_str_eq(ch, "deleted") ? "/dev/null" : layer;
                /* diff(1) would block on a FIFO a running sandbox put there. */
                struct stat sa, sb;
                bool special = (a == host && lstat(a, &sa) == 0 && !S_ISREG(sa.st_mode)) ||
                               (b == layer && lstat(b, &sb) == 0 && !S_ISREG(sb.st_mode));
                if (special) {
                        printf("skipped %s: not a regular file\n", qpath);
                        continue;
                }
                int k = run_diff_u(path, a, b);
                if (k < 0 || k > 1) {
                        fprintf(stderr, "agentctl: diff of %s failed\n", qpath);
                        r = EXIT_DAEMON_ERROR;
                }
        }
        call_done(&c, &res);
        return r;
}

static void print_promote(const msgpack_object *o) {
        const msgpack_object *pr = map_get(o, "promoted"), *cf = map_get(o, "conflicts"), *gd = map_get(o, "guarded");
        for (uint32_t i = 0; pr && pr->type == MSGPACK_OBJECT_ARRAY && i < pr->via.array.size; i++) {
                _cleanup_free_ char *p = quoted(&pr->via.array.ptr[i]);
                printf("promoted  %s\n", p ? p : "?");
        }
        for (uint32_t i = 0; cf && cf->type == MSGPACK_OBJECT_ARRAY && i < cf->via.array.size; i++) {
                _cleanup_free_ char *p = quoted(map_get(&cf->via.array.ptr[i], "path"));
                const msgpack_object *w = map_get(&cf->via.array.ptr[i], "reason");
                /* The daemon quotes names inside reasons; control bytes are escaped here all the same. */
                printf("CONFLICT  %s: ", p ? p : "?");
                for (uint32_t k = 0; w && w->type == MSGPACK_OBJECT_STR && k < w->via.str.size; k++) {
                        unsigned char b = (unsigned char) w->via.str.ptr[k];
                        if (b < 0x20 || b == 0x7f)
                                printf("\\%03o", b);
                        else
                                putchar(b);
                }
                putchar('\n');
        }
        for (uint32_t i = 0; gd && gd->type == MSGPACK_OBJECT_ARRAY && i < gd->via.array.size; i++) {
                _cleanup_free_ char *p = quoted(map_get(&gd->via.array.ptr[i], "path"));
                printf("skipped   %s (runs on the host later: pass --include-hooks to promote it)\n", p ? p : "?");
        }
}

static bool promote_had_conflicts;
static void print_promote_and_note(const msgpack_object *o) {
        print_promote(o);
        const msgpack_object *cf = map_get(o, "conflicts");
        promote_had_conflicts = cf && cf->type == MSGPACK_OBJECT_ARRAY && cf->via.array.size > 0;
}

static int cmd_promote(const command *cmd, int argc, char **argv) {
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
                return usage_error(cmd);
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
        int r = simple("sandbox.promote", &p, print_promote_and_note);
        /* Something was not applied: say so in the exit status too. */
        if (r == 0 && promote_had_conflicts)
                r = EXIT_DAEMON_ERROR;
        return r;
}

/* ---- credentials ------------------------------------------------------- */

static int cmd_broker(const command *cmd, int argc, char **argv) {
        if (argc >= 2 && streq(argv[1], "status") && argc == 2)
                return simple("broker.status", NULL, NULL);
        if (argc < 2 || !streq(argv[1], "enroll"))
                return usage_error(cmd);
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
        p.secret = true;
        return simple("broker.enroll", &p, NULL);
}

/* Inside a sandbox: ask $AGENTD_BROKER for this sandbox's token (a sealed memfd) and print it. */
/* token | token --request POLICY...: the second waits until a person answers. */
static int cmd_token(const command *cmd, int argc, char **argv) {
        bool request = argc >= 3 && streq(argv[1], "--request");
        if (argc != 1 && !request)
                return usage_error(cmd);
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

/* approve ID [--once|--sandbox|--task] | deny ID */
static int cmd_approval(const command *cmd, int argc, char **argv) {
        const char *scope = NULL;
        bool approve = streq(argv[0], "approve");

        if (approve && argc == 3 && (streq(argv[2], "--once") || streq(argv[2], "--sandbox") || streq(argv[2], "--task")))
                scope = argv[2] + 2;
        if (argc != (scope ? 3 : 2))
                return usage_error(cmd);
        params p;
        params_init(&p, scope ? 3 : 2);
        mp_pack_kv_str(&p.pk, "id", argv[1]);
        mp_pack_kv_str(&p.pk, "decision", approve ? "approve" : "deny");
        if (scope)
                mp_pack_kv_str(&p.pk, "scope", scope);
        return simple("approval.answer", &p, print_nothing);
}

static int cmd_audit(const command *cmd, int argc, char **argv) {
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
                return simple("audit.query", &p, print_audit_records);
        }
        return usage_error(cmd);
}

/* report ID [--json | --html] [-o FILE]: exits 1 when the records do not verify. */
static int cmd_report(const command *cmd, int argc, char **argv) {
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
        if (!id || (html && arg_json))
                return usage_error(cmd);
        params p;
        params_init(&p, 1);
        mp_pack_kv_str(&p.pk, "id", id);
        rpc_client c;
        rpc_result res;
        int r = call_new("sandbox.report", &p, &c, &res);
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
        call_done(&c, &res);
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

static int cmd_revoke(const command *cmd, int argc, char **argv) {
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
        if ((all ? 1 : 0) + (sb ? 1 : 0) + (task ? 1 : 0) != 1)
                return usage_error(cmd);
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
        int r = call_new("credentials.revoke", &p, &c, &res);
        if (r == 0) {
                if (arg_json) {
                        print_json(res.result);
                        note_pending_json(res.result);
                } else
                        print_revoke(res.result);
        }
        call_done(&c, &res);
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

/* Every command: argv[0] picks the row; its run() gets the whole argv. */
static const command commands[] = {
        { "ping", cmd_call, "ping", "agentd.ping" },
        { "status", cmd_call, "status", "agentd.status" },
        { "tasks", cmd_call, "tasks", "task.list", print_task_list },
        { "task", cmd_task, "task show NAME | task check FILE" },
        { "spawn", cmd_spawn, "spawn [--task NAME] [--workspace DIR] [-i] [-t] [--detach] [-- CMD ARG...]" },
        { "ps", cmd_call, "ps", "sandbox.list", print_sandbox_list },
        { "wait", cmd_call_id, "wait ID", "sandbox.wait" },
        { "kill", cmd_kill, "kill ID [--signal SIG]" },
        { "logs", cmd_logs, "logs ID [-f]" },
        { "revoke", cmd_revoke, "revoke --all | --sandbox ID | --task NAME [--freeze-only]" },
        { "unlock", cmd_call, "unlock", "agentd.unlock" },
        { "audit", cmd_audit, "audit verify | audit show [--sandbox ID] [--limit N]" },
        { "prune", cmd_call, "prune", "agentd.prune" },
        { "approvals", cmd_call, "approvals", "approval.list", print_approval_list },
        { "approve", cmd_approval, "approve ID [--once|--sandbox|--task] | agentctl deny ID" },
        { "deny", cmd_approval, "approve ID [--once|--sandbox|--task] | agentctl deny ID" },
        { "broker", cmd_broker, "broker enroll --role-id ID --secret-id-file FILE | broker status" },
        { "token", cmd_token, "token [--request POLICY...]" },
        { "diff", cmd_diff, "diff ID [--patch]" },
        { "promote", cmd_promote, "promote ID [PATH...] [--include-hooks]" },
        { "report", cmd_report, "report ID [--json | --html] [-o FILE]" },
        { "discard", cmd_call_id, "discard ID", "sandbox.discard" },
        {},
};

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
        argc = global_options_extract(argc, argv, &arg_json, &arg_socket);
        if (argc < 0)
                return EXIT_USAGE;
        for (const command *c = commands; c->name; c++)
                if (streq(argv[0], c->name))
                        return c->run(c, argc, argv);
        fprintf(stderr, "agentctl: unknown command '%s' (see agentctl --help)\n", argv[0]);
        return EXIT_USAGE;
}
