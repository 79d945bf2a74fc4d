/* A composed agentd for the glue modules' unit tests: the same calls main()
 * makes (core/compose.h) on a private loop, with $HOME, the configuration,
 * the task directory, the state directory and the runtime directory in one
 * temporary directory, and host connections as socketpairs adopted by the
 * server. No socket is bound, no signal handled; everything else is real
 * (the audit log, the task registry, the sandbox helper, the cgroup probe).
 *
 *   fixture f;
 *   fixture_write_task(&f, "build", "[Task]\n...");   (before or after start)
 *   fixture_start(&f, "[Daemon]\n...");                (NULL: no config file)
 *   int c = fixture_connect(&f);
 *   fixture_reply r;
 *   fixture_call(&f, c, "task.list", NULL, NULL, &r);
 *   ... r.result / r.code ...
 *   fixture_reply_free(&r);
 *   fixture_stop(&f);
 *
 * fixture_init() must come first (it makes the directories, a private cgroup
 * v2 subtree when a cgroup2 mount is writable, and sets the environment); fixture_start() composes the manager. Check's assertions
 * fail the test on any setup error. */
#pragma once

#include <limits.h>
#include <msgpack.h>
#include <stdbool.h>
#include <uv.h>

#include "manager.h"

typedef struct fixture {
        uv_loop_t loop;
        manager m;
        bool started;
        char root[PATH_MAX];
        char home[PATH_MAX];
        char config_dir[PATH_MAX];   /* $XDG_CONFIG_HOME/agentd */
        char task_dir[PATH_MAX];     /* $XDG_CONFIG_HOME/agentd/tasks */
        char state_home[PATH_MAX];   /* $XDG_STATE_HOME; the state directory is <state_home>/agentd */
        char runtime_dir[PATH_MAX];  /* $XDG_RUNTIME_DIR */
        char workspace[PATH_MAX];    /* an empty directory under $HOME to spawn in */
        uint32_t next_msgid;
        char cgroup[PATH_MAX];       /* the daemon's private cgroup v2 subtree ([Daemon] CgroupPath=), or "" */
        char cgroup_home[PATH_MAX];  /* the cgroup this process was in, to go back to */
} fixture;

typedef struct fixture_reply {
        msgpack_unpacked u;
        const msgpack_object *result; /* NULL on error */
        char code[64];                /* CONTRACT §2 code on error ("not_found"), else "" */
        char message[512];            /* the error's message after "code: " */
        int fds[4];                   /* fds the reply carried (the caller closes them) */
        unsigned n_fds;
        char *buf;                    /* what was read: the objects point into it */
} fixture_reply;

/* Directories and environment; no manager yet. */
void fixture_init(fixture *f);
/* Writes <task_dir>/<name>.task. */
void fixture_write_task(fixture *f, const char *name, const char *text);
/* Writes the configuration (unless NULL) and composes the manager: config,
 * tasks, state directory, parts. [Daemon] SandboxHelper= is added to point at
 * the built helper unless config_text sets it. */
void fixture_start(fixture *f, const char *config_text);
/* Stops the parts (as SIGTERM would), runs the loop until everything closed,
 * frees the manager and removes the temporary directory. */
void fixture_stop(fixture *f);

/* Runs the loop for about `ms` milliseconds (at least one iteration). */
void fixture_run(fixture *f, unsigned ms);
/* Runs the loop until pred(arg) holds or `ms` pass; pred's last answer. */
bool fixture_run_until(fixture *f, unsigned ms, bool (*pred)(void *arg), void *arg);

/* A host connection (the server adopts one end); the peer fd to close. */
int fixture_connect(fixture *f);
/* Sends [0, msgid, method, [params]] and runs the loop until the reply comes
 * (30 s at most: the test fails then); FIXTURE_DEBUG=1 prints it. pack_params packs exactly one object
 * (a map) or is NULL for {}. Returns true when the reply is a result. */
typedef void (*fixture_pack_fn)(msgpack_packer *pk, void *arg);
bool fixture_call(fixture *f, int fd, const char *method, fixture_pack_fn pack_params, void *arg, fixture_reply *r);
/* The same with string parameters: key, value, ..., NULL. */
bool fixture_call_str(fixture *f, int fd, fixture_reply *r, const char *method, ...);
/* The same, asserting it succeeds (the reply is dropped). */
void fixture_call_ok(fixture *f, int fd, const char *method, ...);
/* The same, asserting it fails with the CONTRACT §2 code `code`. */
void fixture_call_fails(fixture *f, int fd, const char *code, const char *method, ...);
void fixture_reply_free(fixture_reply *r);
/* fixture_call in two halves, for requests answered later (sandbox.wait):
 * fixture_send sends and returns the msgid without waiting; fixture_recv runs
 * the loop until the next reply on fd comes (it must be msgid's). */
/* Sends len bytes (and fds with the first part) while running the loop. */
void fixture_send_raw(fixture *f, int fd, const void *data, size_t len, const int *fds, size_t n_fds);
uint32_t fixture_send(fixture *f, int fd, const char *method, fixture_pack_fn pack_params, void *arg);
bool fixture_recv(fixture *f, int fd, uint32_t msgid, fixture_reply *r);

/* A key of a result map (NULL when absent or the result is not a map). */
const msgpack_object *fixture_get(const msgpack_object *map, const char *key);
/* Its string value, copied into buf (NULL when absent or not a string). */
const char *fixture_get_str(const msgpack_object *map, const char *key, char *buf, size_t size);

/* ---- helpers shared by the fixture tests (one set: fixture.c) -------------- */

/* Members of a result map that must be there (the test fails otherwise). */
uint64_t fixture_u64(const msgpack_object *map, const char *key);
const char *fixture_str(const msgpack_object *map, const char *key, char *buf, size_t size);
bool fixture_bool(const msgpack_object *map, const char *key);

/* agentd.status's string `key` on a fresh connection, into buf. */
const char *fixture_status_str(fixture *f, const char *key, char *buf, size_t size);
/* Runs the loop until agentd.status's `key` starts with `prefix` (30 s at most:
 * the audit key is unsealed off the loop, slowly on a loaded machine). */
void fixture_wait_status_prefix(fixture *f, const char *key, const char *prefix);
/* Until the audit log records (state-changing requests are refused before). */
void fixture_wait_audit_ready(fixture *f);

/* sandbox.spawn's parameters; NULL: not sent. */
typedef struct fixture_spawn_req {
        const char *task, *workspace;
        const char *path;         /* the caller's PATH */
        const char *const *argv;  /* NULL-terminated */
        size_t argc;              /* > 0: send exactly this many of argv (NULLs go as "") */
} fixture_spawn_req;
void fixture_pack_spawn(msgpack_packer *pk, void *arg);
/* sandbox.spawn: true with the id copied to id (when given) and r freed; false
 * with r holding the error (the caller frees it). */
bool fixture_spawn(fixture *f, int c, const fixture_spawn_req *s, char *id, size_t size, fixture_reply *r);
/* A spawn that must succeed: `/bin/sh -c cmd` under task in f->workspace. */
void fixture_spawn_sh(fixture *f, int c, const char *task, const char *cmd, char *id, size_t size);

/* A sandbox.list entry. */
typedef struct fixture_entry {
        char state[32];
        long long exit_code, signal;
        bool ended;               /* it has an exit_code */
} fixture_entry;
/* The entry of `id` into *ret (may be NULL); false when it is not listed. */
bool fixture_list_find(fixture *f, int c, const char *id, fixture_entry *ret);
/* Its state into buf ("" when not listed). */
const char *fixture_sandbox_state(fixture *f, int c, const char *id, char *buf, size_t size);
size_t fixture_list_count(fixture *f, int c);
/* sandbox.wait that must succeed: exit_code and signal (either may be NULL). */
void fixture_wait(fixture *f, int c, const char *id, long long *ret_code, long long *ret_signal);
/* sandbox.logs' `stream` ("stdout", "stderr": bin) into out, NUL-terminated
 * (the test fails unless it fits). */
void fixture_logs(fixture *f, int c, const char *id, const char *stream, char *out, size_t size);

/* <state dir>/sandboxes/<id>[/name] */
void fixture_sandbox_path(const fixture *f, const char *id, const char *name, char *buf, size_t size);
/* meta.json of the sandbox says "state":"<want>". */
bool fixture_meta_state_is(const fixture *f, const char *id, const char *want);
/* A small file (64 KiB at most), NUL-terminated (the caller frees), or NULL. */
char *fixture_read_file(const char *path);
void fixture_write_file(const char *path, const char *text);
/* Entries of dir whose names start with prefix (NULL: all), dot files aside. */
size_t fixture_count_entries(const char *dir, const char *prefix);

/* audit.query's parameters; 0 / NULL: not sent. */
typedef struct fixture_query {
        const char *sandbox;
        uint64_t limit, before, since;
} fixture_query;
void fixture_pack_query(msgpack_packer *pk, void *arg);
/* audit.query that must succeed; the reply (an array of records) in r. */
void fixture_audit_query(fixture *f, int c, const fixture_query *q, fixture_reply *r);
/* The "rpc" record's fields.method (or "" for other records) into buf. */
const char *fixture_record_method(const msgpack_object *rec, char *buf, size_t size);
/* Is there a record of `type` (for `sandbox`, NULL: any) with every needle in
 * it as msgpack_object_print() prints it? A predicate for fixture_run_until:
 * the log is written off the loop. */
typedef struct fixture_audit_match {
        fixture *f;
        int c;
        const char *sandbox, *type;
        const char *needles[4];
        char found[4096];         /* the record that matched, printed */
} fixture_audit_match;
bool fixture_audited(void *arg);

/* A connection's incoming messages one at a time (notifications arrive on
 * their own, so they cannot go through fixture_call()). */
typedef struct fixture_stream {
        int fd;
        char *buf;
        size_t len, cap;
} fixture_stream;
void fixture_stream_init(fixture_stream *s, int fd);
void fixture_stream_free(fixture_stream *s);
/* A new connection subscribed to events.subscribe (every sandbox), read
 * through *st; the connection (the caller closes it). */
int fixture_subscribe(fixture *f, fixture_stream *st);
/* The next whole message, running the loop up to `ms`: true with *ret_msg
 * owning a copy (free it with fixture_reply_free), false on timeout. */
bool fixture_stream_next(fixture *f, fixture_stream *s, unsigned ms, fixture_reply *ret_msg);
/* A notification [2, method, [params]]: method copied, params map returned;
 * NULL when msg is not one. */
const msgpack_object *fixture_notification(const fixture_reply *msg, char *method, size_t size);

/* A sandbox's egress proxy reached as helper/bridge.c reaches it: a loopback
 * TCP connection whose accepted end goes over proxy.sock; the program's end,
 * non-blocking. */
int fixture_proxy_connect(fixture *f, const char *sandbox_id);
/* The same with "CONNECT 127.0.0.1:port" written on it. */
int fixture_proxy_connect_to(fixture *f, const char *sandbox_id, uint16_t port);
/* The unix socket path of a sandbox's broker.sock, connected (non-blocking). */
int fixture_broker_connect(fixture *f, const char *sandbox_id);
/* A loopback listener (non-blocking); its port in *ret_port. */
int fixture_listen(uint16_t *ret_port);
/* Accepts on a non-blocking listener, running the loop (-1 after `ms`). */
int fixture_accept(fixture *f, int listener, unsigned ms);
typedef struct fixture_reader {
        int fd;
        char buf[8192];
        size_t len;
        const char *needle;
        bool eof;
} fixture_reader;
bool fixture_reader_pred(void *arg);
/* Reads a non-blocking fd, running the loop, until needle is in r->buf (true)
 * or the stream ends or `ms` pass (false). */
bool fixture_read_until(fixture *f, fixture_reader *r, int fd, const char *needle, unsigned ms);
