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
