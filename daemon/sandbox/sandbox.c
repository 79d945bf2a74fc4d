/* The sandbox lifecycle in the daemon (the "brains"). The namespace work is
 * done by a separate helper executable, agentd-sandbox (the "hands"), forked
 * by its zygote as our child (posix_spawn'd when there is no zygote) and
 * watched through pidfds on the libuv loop, so the daemon never forks into a
 * sandbox. This file is the only writer of a sandbox's state (set_state()):
 * the record, the helper's start (zygote, else posix_spawn), its status and
 * exit, output relay and logs, timeouts, freeze and kill, waiters. Starting one
 * is spawn.c's step list; the sandbox.* handlers are in rpc/rpc-sandbox.c. */
#include "sandbox.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <json-c/json.h>

#include "agentd-build.h"
#include "audit/auditlog.h"
#include "broker/broker.h"
#include "cgroup.h"
#include "file.h"
#include "core/daemon.h"
#include "core/log.h"
#include "core/statedir.h"
#include "macro.h"
#include "memfd.h"
#include "socket.h"
#include "lib/netproxy.h"
#include "policy.h"
#include "report.h"
#include "freeze.h"
#include "sandbox-private.h"
#include "spawn-steps.h"
#include "spec.h"
#include "stdin-relay.h"
#include "change-watch.h"
#include "zygote.h"
#include "pool.h"

#define MAX_ENDED_KEPT 256
#define CLIENT_PENDING_MAX (1024 * 1024)

static int pidfd_open_(pid_t pid) {
        return (int) syscall(SYS_pidfd_open, pid, 0);
}
static int pidfd_send_signal_(int pidfd, int sig) {
        return (int) syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}

static sandbox *sandbox_load(manager *m, const char *id);
static void evict_old(manager *m, sandbox *keep);

const char *sandbox_state_to_string(sandbox_state s) {
        switch (s) {
        case SANDBOX_STARTING: return "starting";
        case SANDBOX_RUNNING: return "running";
        case SANDBOX_FROZEN: return "frozen";
        case SANDBOX_EXITED: return "exited";
        case SANDBOX_KILLED: return "killed";
        }
        return "?";
}

bool sandbox_ended(const sandbox *s) {
        return s->state == SANDBOX_EXITED || s->state == SANDBOX_KILLED;
}

sandbox *sandbox_find(manager *m, const char *id) {
        list_head *i, *t;
        list_for_each_safe(i, t, &m->sandboxes->list) {
                sandbox *s = container_of(i, sandbox, link);
                if (streq(s->id, id))
                        return s;
        }
        return sandbox_load(m, id);
}

/* ---- the record on disk ------------------------------------------------------- */

typedef struct sync_work {
        uv_work_t req;
        char path[];
} sync_work;

static void do_sync(uv_work_t *req) {
        sync_work *w = container_of(req, sync_work, req);
        int fd = open(w->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd >= 0) {
                (void) fsync(fd);
                close(fd);
        }
        char *slash = strrchr(w->path, '/');
        if (slash) {
                *slash = 0;
                fd = open(w->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (fd >= 0) {
                        (void) fsync(fd);
                        close(fd);
                }
        }
}

static void after_sync(uv_work_t *req, int status) {
        free(container_of(req, sync_work, req));
}

static void sync_in_background(manager *m, const char *path) {
        size_t n = strlen(path) + 1;
        sync_work *w = malloc(sizeof(*w) + n);
        if (!w)
                return;
        memcpy(w->path, path, n);
        if (uv_queue_work(m->loop, &w->req, do_sync, after_sync) < 0)
                free(w);
}

/* meta.json in the sandbox's state dir: what review needs after the sandbox
 * and the daemon are gone. Written atomically (temp + rename). */
int sandbox_save_meta(sandbox *s) {
        json_object *o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "id", json_object_new_string(s->id));
        json_object_object_add(o, "task", json_object_new_string(s->task));
        json_object_object_add(o, "workspace", json_object_new_string(s->workspace));
        json_object_object_add(o, "workspace_mode", json_object_new_int(s->workspace_mode));
        json_object_object_add(o, "started_at", json_object_new_int64((int64_t) s->started_at));
        json_object_object_add(o, "started_ns", json_object_new_int64(s->started_ns));
        json_object_object_add(o, "state", json_object_new_string(sandbox_state_to_string(s->state)));
        json_object_object_add(o, "exit_code", json_object_new_int(s->exit_code));
        json_object_object_add(o, "signal", json_object_new_int(s->exit_signal));
        if (s->init_pid > 0 || s->recorded_pid > 0)
                json_object_object_add(o, "pid", json_object_new_int(s->init_pid > 0 ? s->init_pid : s->recorded_pid));
        json_object_object_add(o, "discarded", json_object_new_boolean(s->discarded));
        if (s->end_reason)
                json_object_object_add(o, "reason", json_object_new_string(s->end_reason));
        json_object *av = json_object_new_array();
        for (size_t i = 0; s->argv && s->argv[i]; i++)
                json_object_array_add(av, json_object_new_string(s->argv[i]));
        json_object_object_add(o, "argv", av);
        const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
        char tmp[PATH_MAX], final[PATH_MAX];
        snprintf(tmp, sizeof(tmp), "%s/meta.json.tmp", s->dir);
        snprintf(final, sizeof(final), "%s/meta.json", s->dir);
        int r = 0;
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                r = -errno;
        else {
                size_t n = strlen(text);
                if (write(fd, text, n) != (ssize_t) n || write(fd, "\n", 1) != 1)
                        r = -EIO;
                close(fd);
                if (r == 0 && rename(tmp, final) < 0)
                        r = -errno;
        }
        json_object_put(o);
        /* fsync costs milliseconds on some disks: never on the loop thread. */
        if (r == 0)
                sync_in_background(s->m, final);
        if (r < 0)
                log_warning("sandbox %s: cannot save its record: %s", s->id, strerror(-r));
        return r;
}

sandbox *sandbox_alloc(manager *m) {
        sandbox *s = calloc(1, sizeof(*s));
        if (!s)
                return NULL;
        s->m = m;
        s->refcount = 1;
        s->helper_pidfd = s->init_pidfd = s->status_fd = s->tty_master = -1;
        for (int i = 0; i < 2; i++) {
                s->out[i].sb = s;
                s->out[i].name = i == 0 ? "stdout" : "stderr";
                s->out[i].pipe_fd = s->out[i].log_fd = s->out[i].client_fd = -1;
        }
        return s;
}

static bool id_valid(const char *id) {
        return statedir_sandbox_id_valid(id);
}

/* Loads an ended sandbox's record from its state dir (after a restart, or
 * evicted from memory). A record left "running" means agentd died with it. */
/* While load_previous() reads every record (in directory order, not by age). */
static bool loading_previous;

static sandbox *sandbox_load(manager *m, const char *id) {
        if (!id_valid(id))
                return NULL;
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/sandboxes/%s/meta.json", m->config->state_directory, id);
        json_object *o = json_object_from_file(path);
        if (!o)
                return NULL;
        sandbox *s = sandbox_alloc(m);
        json_object *v;
        if (!s)
                goto fail;
        snprintf(s->id, sizeof(s->id), "%s", id);
        if (asprintf(&s->dir, "%s/sandboxes/%s", m->config->state_directory, id) < 0)
                s->dir = NULL;
        s->task = strdup(json_object_object_get_ex(o, "task", &v) ? json_object_get_string(v) : "?");
        s->workspace = strdup(json_object_object_get_ex(o, "workspace", &v) ? json_object_get_string(v) : "");
        s->workspace_mode = json_object_object_get_ex(o, "workspace_mode", &v) ? json_object_get_int(v) : WORKSPACE_NONE;
        s->started_at = json_object_object_get_ex(o, "started_at", &v) ? (uint64_t) json_object_get_int64(v) : 0;
        s->started_ns = json_object_object_get_ex(o, "started_ns", &v) ? json_object_get_int64(v) : 0;
        s->exit_code = json_object_object_get_ex(o, "exit_code", &v) ? json_object_get_int(v) : 0;
        s->exit_signal = json_object_object_get_ex(o, "signal", &v) ? json_object_get_int(v) : 0;
        s->recorded_pid = json_object_object_get_ex(o, "pid", &v) ? (pid_t) json_object_get_int(v) : 0;
        s->discarded = json_object_object_get_ex(o, "discarded", &v) && json_object_get_boolean(v);
        const char *state = json_object_object_get_ex(o, "state", &v) ? json_object_get_string(v) : "exited";
        if (json_object_object_get_ex(o, "reason", &v))
                s->end_reason = strdup(json_object_get_string(v));
        if (json_object_object_get_ex(o, "argv", &v) && json_object_is_type(v, json_type_array)) {
                size_t n = json_object_array_length(v);
                s->argv = calloc(n + 1, sizeof(char *));
                for (size_t i = 0; s->argv && i < n; i++)
                        s->argv[i] = strdup(json_object_get_string(json_object_array_get_idx(v, i)));
        }
        if (streq(state, "exited"))
                s->state = SANDBOX_EXITED;
        else if (streq(state, "killed"))
                s->state = SANDBOX_KILLED;
        else {
                s->state = SANDBOX_KILLED;
                free(s->end_reason);
                s->end_reason = strdup("agentd stopped while it ran");
                s->exit_signal = SIGKILL;
                s->exit_code = 128 + SIGKILL;
        }
        s->from_disk = true;
        if (!s->dir || !s->task || !s->workspace)
                goto fail;
        json_object_put(o);
        list_add_tail(&m->sandboxes->list, &s->link);
        m->sandboxes->n++;
        /* Looking up old ids must not grow memory without bound (at start,
         * load_previous() keeps the newest once all are read and sorted). */
        if (!loading_previous)
                evict_old(m, s);
        return s;
fail:
        json_object_put(o);
        if (s)
                sandbox_free(s);
        return NULL;
}

/* ---- lifecycle --------------------------------------------------------------- */

static void sandbox_maybe_complete(sandbox *s);
static void spawn_failed(sandbox *s, const char *message);

static void handle_closed(uv_handle_t *h) {
        sandbox *s = h->data;
        if (--s->open_handles == 0 && s->refcount == 0)
                sandbox_free(s);
}

static void close_handle(sandbox *s, uv_handle_t *h, bool *flag) {
        if (!*flag)
                return;
        *flag = false;
        h->data = s;
        s->open_handles++;
        uv_close(h, handle_closed);
}

/* Every handle still open starts closing; the last close callback frees.
 * The stdin relay and the change watch close their own handles now too:
 * before daemon_finish()'s uv_walk, which would close them a second time. */
static void close_all_handles(sandbox *s) {
        stdin_relay_free(TAKE_PTR(s->stdin_relay));
        change_watch_free(TAKE_PTR(s->change_watch));
        if (s->timeout_init)
                uv_timer_stop(&s->timeout);
        close_handle(s, (uv_handle_t *) &s->timeout, &s->timeout_init);
        close_handle(s, (uv_handle_t *) &s->helper_poll, &s->helper_poll_init);
        close_handle(s, (uv_handle_t *) &s->status_poll, &s->status_poll_init);
        for (int k = 0; k < 2; k++) {
                close_handle(s, (uv_handle_t *) &s->out[k].pipe_poll, &s->out[k].pipe_poll_init);
                close_handle(s, (uv_handle_t *) &s->out[k].client_poll, &s->out[k].client_poll_init);
        }
}

/* Its helper still runs (the namespace's teardown after the exit report):
 * the pidfd poll must stay to reap it, so the record stays in memory. */
static bool helper_unreaped(const sandbox *s) {
        return s->helper_poll_init && !s->helper_reaped;
}

sandbox *sandbox_ref(sandbox *s) {
        s->refcount++;
        return s;
}

/* The handle rule (ARCHITECTURE.md, Lifetimes): the last reference closes
 * whatever is still open, and the record is freed only after every close
 * callback ran (handle_closed), never while one is pending. */
void sandbox_unref(sandbox *s) {
        if (--s->refcount > 0)
                return;
        close_all_handles(s);
        if (s->open_handles == 0)
                sandbox_free(s);
}

void sandbox_free(sandbox *s) {
        free(s->task);
        free(s->workspace);
        free(s->dir);
        free(s->cgroup);
        free(s->limits_note);
        free(s->workspace_note);
        free(s->end_reason);
        free(s->setup_error);
        strv_free(s->argv);
        for (int i = 0; i < 2; i++) {
                safe_close(s->out[i].pipe_fd);
                safe_close(s->out[i].log_fd);
                safe_close(s->out[i].client_fd);
                free(s->out[i].pending);
        }
        safe_close(s->helper_pidfd);
        safe_close(s->init_pidfd);
        safe_close(s->status_fd);
        safe_close(s->tty_master);
        stdin_relay_free(s->stdin_relay);
        change_watch_free(s->change_watch);
        free(s);
}

typedef struct state_event {
        sandbox *s;
} state_event;

static void pack_state_event(msgpack_packer *pk, void *userdata) {
        sandbox *s = userdata;
        bool ended = sandbox_ended(s);
        msgpack_pack_map(pk, ended ? 5 : 3);
        mp_pack_kv_str(pk, "id", s->id);
        mp_pack_kv_str(pk, "state", sandbox_state_to_string(s->state));
        mp_pack_kv_str(pk, "task", s->task);
        if (ended) {
                mp_pack_kv_i64(pk, "exit_code", s->exit_code);
                mp_pack_kv_i64(pk, "signal", s->exit_signal);
        }
}

static void set_state(sandbox *s, sandbox_state st) {
        s->state = st;
        daemon_status_notify(s->m);
        server_broadcast(s->m, s->id, "sandbox.state", pack_state_event, s);
}

/* Stops every process (freeze.c) and records it: the state event, meta.json. */
int sandbox_freeze(sandbox *s) {
        if (s->state != SANDBOX_RUNNING && s->state != SANDBOX_STARTING)
                return s->state == SANDBOX_FROZEN ? 0 : -ESRCH;
        const char *method = NULL;
        int r = freeze_processes(s, &method);
        if (r < 0)
                return r;
        s->frozen_by = method;
        set_state(s, SANDBOX_FROZEN);
        (void) sandbox_save_meta(s);
        return 0;
}

int sandbox_kill(sandbox *s, const char *reason) {
        if (sandbox_ended(s))
                return -ESRCH;
        s->killed = true;
        free(s->end_reason);
        s->end_reason = strdup(reason);
        return sandbox_signal(s, SIGKILL);
}

int sandbox_review_begin(sandbox *s, bool writes, bool freeze_if_running) {
        if (s->review_writer || (writes && s->review_readers > 0))
                return -EBUSY;
        if (freeze_if_running && s->state == SANDBOX_RUNNING && s->cgroup && !s->review_frozen &&
            cgroup_freeze(s->cgroup, true) == 0)
                s->review_frozen = true;
        if (writes)
                s->review_writer = true;
        else
                s->review_readers++;
        return 0;
}

void sandbox_review_end(sandbox *s, bool writes) {
        if (writes)
                s->review_writer = false;
        else
                s->review_readers--;
        if (s->review_readers == 0 && s->review_frozen) {
                s->review_frozen = false;
                if (s->state == SANDBOX_RUNNING && s->cgroup)
                        (void) cgroup_freeze(s->cgroup, false);
        }
}

void sandbox_mark_discarded(sandbox *s) {
        s->discarded = true;
        (void) sandbox_save_meta(s);
}

typedef struct output_event {
        sandbox *s;
        const char *stream;
        const void *data;
        size_t len;
} output_event;

static void pack_output_event(msgpack_packer *pk, void *userdata) {
        output_event *e = userdata;
        msgpack_pack_map(pk, 3);
        mp_pack_kv_str(pk, "id", e->s->id);
        mp_pack_kv_str(pk, "stream", e->stream);
        mp_pack_cstr(pk, "data");
        msgpack_pack_bin(pk, e->len);
        msgpack_pack_bin_body(pk, e->data, e->len);
}

/* ---- output relay ----------------------------------------------------------- */

static void on_client_writable(uv_poll_t *h, int status, int events);
static void on_pipe_readable(uv_poll_t *h, int status, int events);

static void stream_update(output_stream *o) {
        sandbox *s = o->sb;
        /* Read from the sandbox only while the client keeps up. */
        if (o->pipe_fd >= 0 && o->pipe_poll_init) {
                if (o->pending_len < CLIENT_PENDING_MAX)
                        uv_poll_start(&o->pipe_poll, UV_READABLE, on_pipe_readable);
                else
                        uv_poll_stop(&o->pipe_poll);
        }
        if (o->client_poll_init) {
                if (o->pending_len > 0)
                        uv_poll_start(&o->client_poll, UV_WRITABLE, on_client_writable);
                else
                        uv_poll_stop(&o->client_poll);
        }
        (void) s;
}

static void client_drop(output_stream *o) {
        close_handle(o->sb, (uv_handle_t *) &o->client_poll, &o->client_poll_init);
        o->client_fd = safe_close(o->client_fd);
        free(o->pending);
        o->pending = NULL;
        o->pending_len = 0;
}

static void client_flush(output_stream *o) {
        while (o->pending_len > 0 && o->client_fd >= 0) {
                ssize_t n;
                if (o->client_is_socket)
                        n = send(o->client_fd, o->pending, o->pending_len, MSG_DONTWAIT | MSG_NOSIGNAL);
                else
                        n = write(o->client_fd, o->pending, o->pending_len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                break;
                        client_drop(o); /* the reader went away: keep running, keep logging */
                        return;
                }
                memmove(o->pending, o->pending + n, o->pending_len - (size_t) n);
                o->pending_len -= (size_t) n;
        }
}

static void client_queue(output_stream *o, const uint8_t *data, size_t len) {
        if (o->client_fd < 0)
                return;
        uint8_t *n = realloc(o->pending, o->pending_len + len);
        if (!n) {
                client_drop(o);
                return;
        }
        o->pending = n;
        memcpy(o->pending + o->pending_len, data, len);
        o->pending_len += len;
        client_flush(o);
}

static void on_client_writable(uv_poll_t *h, int status, int events) {
        output_stream *o = container_of(h, output_stream, client_poll);
        sandbox *s = o->sb;
        if (status < 0)
                client_drop(o);
        else
                client_flush(o);
        stream_update(o);
        sandbox_maybe_complete(s);
}

static void stream_record(output_stream *o, const uint8_t *buf, size_t n) {
        sandbox *s = o->sb;
        size_t keep = 0;
        if (o->logged < s->m->config->log_limit)
                keep = n < s->m->config->log_limit - o->logged ? n : (size_t) (s->m->config->log_limit - o->logged);
        if (keep > 0 && o->log_fd >= 0 && write(o->log_fd, buf, keep) == (ssize_t) keep)
                o->logged += keep;
        o->dropped += n - keep;
        client_queue(o, buf, n);
        output_event e = { .s = s, .stream = o->name, .data = buf, .len = n };
        server_broadcast(s->m, s->id, "sandbox.output", pack_output_event, &e);
}

static void stream_eof(output_stream *o) {
        close_handle(o->sb, (uv_handle_t *) &o->pipe_poll, &o->pipe_poll_init);
        o->pipe_fd = safe_close(o->pipe_fd);
}

/* Returns true when the pipe is at EOF. */
static bool stream_read(output_stream *o, int max_rounds) {
        uint8_t buf[65536];
        for (int i = 0; i < max_rounds && o->pipe_fd >= 0; i++) {
                ssize_t n = read(o->pipe_fd, buf, sizeof(buf));
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                return false;
                        stream_eof(o);
                        return true;
                }
                if (n == 0) {
                        stream_eof(o);
                        return true;
                }
                stream_record(o, buf, (size_t) n);
                if (o->pending_len >= CLIENT_PENDING_MAX)
                        return false;
        }
        return o->pipe_fd < 0;
}

static void on_pipe_readable(uv_poll_t *h, int status, int events) {
        output_stream *o = container_of(h, output_stream, pipe_poll);
        sandbox *s = o->sb;
        s->refcount++;
        if (status < 0)
                stream_eof(o);
        else
                (void) stream_read(o, 4);
        stream_update(o);
        sandbox_maybe_complete(s);
        sandbox_unref(s);
}

/* Prepares the attached client's fd so writing to it can never block the loop. */
static int client_fd_prepare(output_stream *o, int fd) {
        struct stat st;
        if (fstat(fd, &st) < 0) {
                close(fd);
                return -errno;
        }
        if (S_ISSOCK(st.st_mode)) {
                o->client_is_socket = true;
                o->client_fd = fd;
        } else if (S_ISFIFO(st.st_mode) || (S_ISCHR(st.st_mode) && isatty(fd))) {
                /* A new open file description: O_NONBLOCK here does not touch the user's shell. */
                char path[64];
                snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
                int nfd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
                close(fd);
                if (nfd < 0)
                        return -errno;
                o->client_fd = nfd;
        } else if (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode) || S_ISCHR(st.st_mode)) {
                /* Regular files and /dev/null do not block. */
                o->client_fd = fd;
                return 0;
        } else {
                /* An eventfd and the like: a write could block the loop. */
                close(fd);
                errno = EINVAL;
                return -EINVAL;
        }
        uv_poll_init(o->sb->m->loop, &o->client_poll, o->client_fd);
        o->client_poll_init = true;
        return 0;
}

/* Output is written through a new open file description of the caller's pipe or
 * terminal (client_fd_prepare); one another uid created cannot be opened again. Checked
 * before the sandbox starts, so such a spawn fails instead of losing its output. */
int sandbox_client_fd_check(int fd, const char *name, rpc_error *err) {
        struct stat st;
        if (fstat(fd, &st) < 0 || !(S_ISFIFO(st.st_mode) || (S_ISCHR(st.st_mode) && isatty(fd))))
                return 0;
        char path[64];
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        int nfd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        if (nfd >= 0) {
                close(nfd);
                return 0;
        }
        int r = -errno;
        if (r != -EACCES && r != -EPERM)
                return 0; /* e.g. a pipe nobody reads any more: as before, the output goes to the log only */
        rpc_error_set(err, RPC_E_INVALID_PARAMS,
                      "cannot attach the caller's %s: %s (a pipe or terminal another user created; send a pipe of your own "
                      "and relay it, as agentctl does)", name, strerror(-r));
        return r;
}

/* ---- waiters ------------------------------------------------------------------ */

void sandbox_pack_wait_result(msgpack_packer *pk, void *userdata) {
        sandbox *s = userdata;
        size_t n = 3 + (s->end_reason ? 1 : 0);
        msgpack_pack_map(pk, n);
        mp_pack_kv_i64(pk, "exit_code", s->exit_code);
        mp_pack_kv_i64(pk, "signal", s->exit_signal);
        mp_pack_kv_str(pk, "state", sandbox_state_to_string(s->state));
        if (s->end_reason)
                mp_pack_kv_str(pk, "reason", s->end_reason);
}

static void pack_spawn_fields(msgpack_packer *pk, sandbox *s, size_t extra);

/* sandbox.spawn with wait: the spawn reply's fields and sandbox.wait's in one map. */
static void pack_spawn_wait_result(msgpack_packer *pk, void *userdata) {
        sandbox *s = userdata;
        pack_spawn_fields(pk, s, 3 + (s->end_reason ? 1 : 0));
        mp_pack_kv_i64(pk, "exit_code", s->exit_code);
        mp_pack_kv_i64(pk, "signal", s->exit_signal);
        mp_pack_kv_str(pk, "state", sandbox_state_to_string(s->state));
        if (s->end_reason)
                mp_pack_kv_str(pk, "reason", s->end_reason);
}

static void complete_waiters(sandbox *s) {
        while (s->waiters) {
                sandbox_waiter *w = s->waiters;
                s->waiters = w->next;
                rpc_call_reply(w->call, w->spawn ? pack_spawn_wait_result : sandbox_pack_wait_result, s);
                free(w);
        }
}

static void release_owner(sandbox *s) {
        if (s->owner) {
                connection_unref(s->owner);
                s->owner = NULL;
        }
}

/* Retention is about to remove this record: drop it from memory. -EBUSY while
 * it has not ended, its helper is not reaped yet or someone waits on it. */
int sandbox_forget(manager *m, const char *id) {
        list_head *i, *t;
        list_for_each_safe(i, t, &m->sandboxes->list) {
                sandbox *s = container_of(i, sandbox, link);
                if (!streq(s->id, id))
                        continue;
                if (!sandbox_ended(s) || s->waiters || s->owner || helper_unreaped(s))
                        return -EBUSY;
                list_del(&s->link);
                m->sandboxes->n--;
                sandbox_unref(s);
                return 0;
        }
        return 0;
}

/* Keeps at most MAX_ENDED_KEPT ended sandboxes in memory, oldest out first
 * (their records stay on disk and load again on demand); never `keep`. */
static void evict_old(manager *m, sandbox *keep) {
        unsigned ended = 0;
        list_head *i, *t;
        list_for_each_safe(i, t, &m->sandboxes->list) {
                sandbox *s = container_of(i, sandbox, link);
                if (sandbox_ended(s))
                        ended++;
        }
        list_for_each_safe(i, t, &m->sandboxes->list) {
                if (ended <= MAX_ENDED_KEPT)
                        break;
                sandbox *s = container_of(i, sandbox, link);
                if (!sandbox_ended(s) || s->waiters || s == keep || s->review_readers || s->review_writer || helper_unreaped(s))
                        continue;
                list_del(&s->link);
                m->sandboxes->n--;
                ended--;
                sandbox_unref(s);
        }
}

static sandbox_hooks hooks;

/* The part's state: one per process, like the manager that points at it. */
static sandbox_part part;
static list_head no_sandboxes = { &no_sandboxes, &no_sandboxes };

list_head *sandbox_list(manager *m) {
        return m->sandboxes ? &m->sandboxes->list : &no_sandboxes;
}

unsigned sandbox_count(manager *m) {
        return m->sandboxes ? m->sandboxes->n : 0;
}

unsigned sandbox_count_live(manager *m) {
        return m->sandboxes ? m->sandboxes->n_live : 0;
}

const char *sandbox_cgroup_status(manager *m) {
        return m->sandboxes ? m->sandboxes->cgroup.status : NULL;
}

const char *sandbox_cgroup_controllers(manager *m) {
        return m->sandboxes ? m->sandboxes->cgroup.controllers : NULL;
}

bool sandbox_locked_down(manager *m) {
        return m->sandboxes && m->sandboxes->locked_down;
}

void sandbox_set_locked_down(manager *m, bool locked) {
        if (m->sandboxes)
                m->sandboxes->locked_down = locked;
}

void sandbox_set_hooks(const sandbox_hooks *h) {
        hooks = h ? *h : (sandbox_hooks) {};
}

/* The end: the helper is reaped, output drained and delivered. */
static void sandbox_maybe_complete(sandbox *s) {
        /* The helper reports the exit as soon as the command is gone; the
         * namespace teardown finishes behind it (the helper is reaped later). */
        if (sandbox_ended(s) || (!s->helper_reaped && !s->have_exit))
                return;
        for (int i = 0; i < 2; i++) {
                if (s->out[i].pipe_fd >= 0)
                        (void) stream_read(&s->out[i], 64);
                if (s->out[i].pipe_fd >= 0 || s->out[i].pending_len > 0)
                        return;
        }
        manager *m = s->m;
        if (s->timeout_init) {
                uv_timer_stop(&s->timeout);
                close_handle(s, (uv_handle_t *) &s->timeout, &s->timeout_init);
        }
        close_handle(s, (uv_handle_t *) &s->status_poll, &s->status_poll_init);
        s->status_fd = safe_close(s->status_fd);
        for (int i = 0; i < 2; i++) {
                client_drop(&s->out[i]);
                s->out[i].log_fd = safe_close(s->out[i].log_fd);
        }
        s->init_pidfd = safe_close(s->init_pidfd);
        json_object *usage = report_usage(s); /* before the cgroup goes */
        stdin_relay_free(TAKE_PTR(s->stdin_relay));
        change_watch_free(TAKE_PTR(s->change_watch));
        if (s->cgroup && s->helper_reaped) {
                int r = cgroup_remove(s->cgroup);
                if (r < 0 && r != -ENOENT)
                        log_warning("sandbox %s: cannot remove cgroup %s: %s", s->id, s->cgroup, strerror(-r));
        }
        if (s->spawn_call) {
                char msg[600];
                snprintf(msg, sizeof(msg), "sandbox setup failed: %s", s->setup_error ? s->setup_error : "the sandbox ended before it started");
                spawn_failed(s, msg);
        }
        set_state(s, s->killed ? SANDBOX_KILLED : SANDBOX_EXITED);
        log_sandbox(LOG_INFO, s->id, s->task, "exit", "sandbox %s (%s) %s: exit_code=%d signal=%d%s%s", s->id, s->task, sandbox_state_to_string(s->state),
                 s->exit_code, s->exit_signal, s->end_reason ? " reason=" : "", s->end_reason ? s->end_reason : "");
        if (s->creds)
                broker_release(m, TAKE_PTR(s->creds));
        server_close_sandbox(TAKE_PTR(s->broker_listener));
        if (hooks.ended)
                hooks.ended(hooks.userdata, s);
        if (s->proxied) {
                s->proxied = false;
                netproxy_remove_sandbox(m->proxy, s->id);
        }
        (void) sandbox_save_meta(s);
        {
                json_object *ev = json_object_new_object();
                json_object_object_add(ev, "state", json_object_new_string(sandbox_state_to_string(s->state)));
                json_object_object_add(ev, "exit_code", json_object_new_int(s->exit_code));
                json_object_object_add(ev, "signal", json_object_new_int(s->exit_signal));
                if (s->end_reason)
                        json_object_object_add(ev, "reason", json_object_new_string(s->end_reason));
                json_object_object_add(ev, "usage", usage);
                audit_event(m, "sandbox.exit", s->id, ev);
        }
        complete_waiters(s);
        release_owner(s);
        m->sandboxes->n_live--;
        evict_old(m, NULL);
        daemon_status_notify(m);
        daemon_maybe_finish(m);
}

static void spawn_failed(sandbox *s, const char *message) {
        /* Nothing ran: the client leaving now is not a kill. */
        release_owner(s);
        if (!s->end_reason)
                s->end_reason = strdup(message);
        if (s->spawn_call) {
                rpc_call_error(s->spawn_call, RPC_E_SPAWN_FAILED, message);
                s->spawn_call = NULL;
        }
}

static void on_helper_exit(uv_poll_t *h, int status, int events) {
        sandbox *s = container_of(h, sandbox, helper_poll);
        siginfo_t si = { 0 };
        bool no_status = false;

        if (waitid(P_PIDFD, (id_t) s->helper_pidfd, &si, WEXITED | WNOHANG) < 0) {
                /* Not ours to reap (the hands is our child, spawned or cloned with
                 * CLONE_PARENT, so this should not happen): the readable pidfd
                 * still says it is gone, and polling on would spin. */
                if (errno != ECHILD)
                        return;
                no_status = true;
        } else if (si.si_pid == 0)
                return;
        s->helper_reaped = true;
        close_handle(s, (uv_handle_t *) &s->helper_poll, &s->helper_poll_init);
        s->helper_pidfd = safe_close(s->helper_pidfd);
        if (sandbox_ended(s)) {
                /* Reported earlier; the teardown is over now: the cgroup is empty. */
                if (s->cgroup)
                        (void) cgroup_remove(s->cgroup);
                return;
        }

        /* Whatever the helper still said before it died. */
        if (s->status_fd >= 0 && s->status_poll_init) {
                extern void sandbox_read_status(sandbox *s);
                sandbox_read_status(s);
        }
        if (!s->have_exit) {
                if (no_status) {
                        s->exit_code = 125;
                        s->exit_signal = 0;
                        if (!s->end_reason)
                                s->end_reason = strdup("sandbox helper died");
                } else if (si.si_code == CLD_EXITED) {
                        s->exit_code = si.si_status;
                        s->exit_signal = 0;
                } else {
                        s->exit_code = 128 + si.si_status;
                        s->exit_signal = si.si_status;
                }
        }
        if (s->spawn_call) {
                char msg[600];
                snprintf(msg, sizeof(msg), "sandbox setup failed: %s",
                         s->setup_error ? s->setup_error : "the sandbox helper ended before reporting");
                spawn_failed(s, msg);
        }
        sandbox_maybe_complete(s);
}

/* The spawn reply's map header and fields, with room for `extra` more pairs. */
static void pack_spawn_fields(msgpack_packer *pk, sandbox *s, size_t extra) {
        msgpack_pack_map(pk, 6 + (s->workspace_note ? 1 : 0) + extra);
        if (s->workspace_note)
                mp_pack_kv_str(pk, "workspace_note", s->workspace_note);
        mp_pack_kv_str(pk, "id", s->id);
        mp_pack_kv_i64(pk, "pid", s->init_pid);
        mp_pack_kv_str(pk, "task", s->task);
        mp_pack_kv_str(pk, "state_dir", s->dir);
        mp_pack_kv_str(pk, "cgroup", s->cgroup ? "ok" : s->m->sandboxes->cgroup.status);
        mp_pack_kv_str(pk, "limits", s->limits_note ? s->limits_note : (s->cgroup ? "enforced" : "not enforced: no cgroup"));
}

static void pack_spawn_result(msgpack_packer *pk, void *userdata) {
        pack_spawn_fields(pk, userdata, 0);
}

/* sandbox.spawn with wait: it started; the call answers when it ends. The
 * caller learns the id now (to forward a signal with sandbox.kill) from a
 * sandbox.started notification on its own connection: the spawn reply's fields. */
static void spawn_call_wait(sandbox *s, rpc_call *call) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        rpc_pack_notification_header(&pk, "sandbox.started");
        msgpack_pack_array(&pk, 1);
        pack_spawn_result(&pk, s);
        (void) connection_send(call->conn, sb.data, sb.size, NULL, 0);
        msgpack_sbuffer_destroy(&sb);
        if (sandbox_add_waiter(s, call) < 0) {
                rpc_call_error(call, RPC_E_INTERNAL, "out of memory: call sandbox.wait");
                return;
        }
        s->waiters->spawn = true;
}

typedef struct alert {
        const char *id, *rule, *action;
        unsigned count, window_s;
} alert;

static void pack_alert(msgpack_packer *pk, void *userdata) {
        alert *a = userdata;
        msgpack_pack_map(pk, a->count > 0 ? 5 : 3);
        mp_pack_kv_str(pk, "sandbox", a->id);
        mp_pack_kv_str(pk, "rule", a->rule);
        mp_pack_kv_str(pk, "action", a->action);
        if (a->count > 0) {
                mp_pack_kv_u64(pk, "count", a->count);
                mp_pack_kv_u64(pk, "window_s", a->window_s);
        }
}

void sandbox_alert(manager *m, const char *id, json_object *record, const char *rule, const char *action, unsigned count,
                   unsigned window_s) {
        audit_event(m, "alert", id, record);
        alert a = { .id = id, .rule = rule, .action = action, .count = count, .window_s = window_s };
        server_broadcast(m, id, "alert", pack_alert, &a);
}

/* ChangeMax= reached: freeze it (the changes stay for review: diff, promote,
 * discard), or kill it if it cannot be frozen; tell the user either way. */
void sandbox_on_change_max(void *userdata, uint64_t used, uint64_t limit) {
        sandbox *s = userdata;
        if (sandbox_ended(s))
                return;
        _cleanup_free_ char *u = NULL, *l = NULL;
        char rule[96], msg[512];
        if (policy_format_size(used, &u) < 0 || policy_format_size(limit, &l) < 0)
                return;
        snprintf(rule, sizeof(rule), "ChangeMax=%s", l);
        int r = sandbox_freeze(s);
        const char *action = r == 0 ? "frozen" : "killed (it could not be frozen)";
        if (r < 0) {
                (void) sandbox_kill(s, "killed: ChangeMax= reached and it could not be frozen");
        }
        log_notice("sandbox %s: its changes use %s, over %s: %s", s->id, u, rule, action);
        int n = snprintf(msg, sizeof(msg),
                         "agentd: this sandbox's changes use %s on disk, over the task's %s: it is %s. "
                         "Review them with 'agentctl diff %s', then promote, discard or kill it.\n",
                         u, rule, action, s->id);
        stream_record(&s->out[1], (const uint8_t *) msg, (size_t) (n < (int) sizeof(msg) ? n : (int) sizeof(msg) - 1));
        json_object *ev = json_object_new_object();
        json_object_object_add(ev, "rule", json_object_new_string(rule));
        json_object_object_add(ev, "used", json_object_new_int64((int64_t) used));
        json_object_object_add(ev, "action", json_object_new_string(action));
        sandbox_alert(s->m, s->id, ev, rule, action, 0, 0);
}

static void on_timeout(uv_timer_t *t) {
        sandbox *s = container_of(t, sandbox, timeout);
        if (sandbox_ended(s))
                return;
        log_sandbox(LOG_NOTICE, s->id, s->task, "timeout", "sandbox %s: Timeout reached after %llu ms, killing it", s->id, (unsigned long long) s->timeout_ms);
        (void) sandbox_kill(s, "timeout");
}

static void handle_status_line(sandbox *s, char *line, int fd) {
        if (strncmp(line, "started ", 8) == 0) {
                s->init_pid = (pid_t) strtol(line + 8, NULL, 10);
                if (s->init_pid > 0)
                        s->init_pidfd = pidfd_open_(s->init_pid);
                if (s->state == SANDBOX_STARTING) {
                        set_state(s, SANDBOX_RUNNING);
                        (void) sandbox_save_meta(s); /* the record says running, with its pid */
                }
                if (fd >= 0) {
                        safe_close(s->tty_master);
                        s->tty_master = fd;
                        fd = -1;
                }
                if (s->spawn_call) {
                        rpc_call *call = s->spawn_call;
                        s->spawn_call = NULL;
                        if (s->tty && s->tty_master >= 0) {
                                /* The pty master goes to the client, which relays it. */
                                int mfd = s->tty_master;
                                s->tty_master = -1;
                                rpc_call_reply_fds(call, pack_spawn_result, s, &mfd, 1);
                        } else if (s->spawn_wait)
                                spawn_call_wait(s, call);
                        else
                                rpc_call_reply(call, pack_spawn_result, s);
                }
                if (s->timeout_ms > 0) {
                        uv_timer_init(s->m->loop, &s->timeout);
                        s->timeout_init = true;
                        uv_timer_start(&s->timeout, on_timeout, s->timeout_ms, 0);
                }
        } else if (strncmp(line, "error ", 6) == 0) {
                free(s->setup_error);
                s->setup_error = strdup(line + 6);
                log_sandbox(LOG_NOTICE, s->id, s->task, "helper", "sandbox %s: %s", s->id, line + 6);
                if (s->spawn_call) {
                        char msg[1200];
                        snprintf(msg, sizeof(msg), "sandbox setup failed at %s", line + 6);
                        spawn_failed(s, msg);
                } else {
                        /* After setup (exec failed): tell the user like a shell would. */
                        char msg[1200];
                        int n = snprintf(msg, sizeof(msg), "agentd: %s\n", line + 6);
                        stream_record(&s->out[1], (const uint8_t *) msg, (size_t) (n < (int) sizeof(msg) ? n : (int) sizeof(msg) - 1));
                }
        } else if (strncmp(line, "exit ", 5) == 0) {
                s->have_exit = true;
                s->exit_code = (int) strtol(line + 5, NULL, 10);
                s->exit_signal = 0;
        } else if (strncmp(line, "signal ", 7) == 0) {
                s->have_exit = true;
                s->exit_signal = (int) strtol(line + 7, NULL, 10);
                s->exit_code = 128 + s->exit_signal;
        } else
                log_warning("sandbox %s: unexpected message from the helper: %.100s", s->id, line);
        if (s->have_exit)
                pool_refill_later(s->m, s->task); /* its task's warm sandboxes, after this iteration's replies */
        safe_close(fd);
}

void sandbox_read_status(sandbox *s) {
        for (;;) {
                int rxfd = -1;
                size_t n_rx = 0;
                ssize_t n = socket_recv_fds(s->status_fd, s->status_buf + s->status_len, sizeof(s->status_buf) - 1 - s->status_len,
                                            &rxfd, &n_rx, 1, MSG_DONTWAIT, NULL);
                if (n == -EINTR)
                        continue;
                if (n <= 0) {
                        safe_close(rxfd);
                        if (n != -EAGAIN) {
                                close_handle(s, (uv_handle_t *) &s->status_poll, &s->status_poll_init);
                                s->status_fd = safe_close(s->status_fd);
                        }
                        return;
                }
                s->status_len += (size_t) n;
                s->status_buf[s->status_len] = 0;
                char *nl;
                while ((nl = memchr(s->status_buf, '\n', s->status_len))) {
                        *nl = 0;
                        handle_status_line(s, s->status_buf, rxfd);
                        rxfd = -1;
                        size_t used = (size_t) (nl + 1 - s->status_buf);
                        memmove(s->status_buf, nl + 1, s->status_len - used);
                        s->status_len -= used;
                        s->status_buf[s->status_len] = 0;
                }
                safe_close(rxfd);
                if (s->status_len >= sizeof(s->status_buf) - 1)
                        s->status_len = 0; /* a line this long is not ours */
        }
}

static void on_status_readable(uv_poll_t *h, int status, int events) {
        sandbox *s = container_of(h, sandbox, status_poll);
        s->refcount++;
        sandbox_read_status(s);
        sandbox_maybe_complete(s);
        sandbox_unref(s);
}

int sandbox_signal(sandbox *s, int sig) {
        if (sandbox_ended(s))
                return -ESRCH;
        if (sig == SIGKILL && s->cgroup) {
                int r = cgroup_kill(s->cgroup);
                if (r == 0)
                        return 0;
        }
        if (s->init_pidfd >= 0 && s->state != SANDBOX_STARTING) {
                if (pidfd_send_signal_(s->init_pidfd, sig) == 0)
                        return 0;
        }
        /* Not started yet, or init already gone: end the helper; the init dies with it. */
        if (s->helper_pidfd >= 0 && sig == SIGKILL) {
                if (pidfd_send_signal_(s->helper_pidfd, SIGKILL) == 0)
                        return 0;
                return -errno;
        }
        return -ESRCH;
}

void sandboxes_connection_closed(manager *m, connection *c) {
        list_head *i, *t;
        list_for_each_safe(i, t, &m->sandboxes->list) {
                sandbox *s = container_of(i, sandbox, link);
                if (s->owner != c)
                        continue;
                release_owner(s);
                if (!sandbox_ended(s)) {
                        /* An attached command whose terminal went away ends, as under a shell. */
                        (void) sandbox_kill(s, "client disconnected");
                }
        }
}

/* ---- spawning ------------------------------------------------------------------ */

static char *find_helper(manager *m) {
        if (m->config->sandbox_helper)
                return strdup(m->config->sandbox_helper);
        char *p = NULL;
        if (asprintf(&p, "%s/agentd-sandbox", AGENTD_LIBEXECDIR) >= 0 && access(p, X_OK) == 0)
                return p;
        free(p);
        /* Running from the build tree: the helper is built next to us. */
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n <= 0)
                return NULL;
        self[n] = 0;
        char *slash = strrchr(self, '/');
        if (!slash)
                return NULL;
        *slash = 0;
        if (asprintf(&p, "%s/../helper/agentd-sandbox", self) >= 0 && access(p, X_OK) == 0)
                return p;
        free(p);
        return NULL;
}

/* Moves fd to a number above every target so the dup2 file actions cannot clobber each other. */
static int high_fd(int fd) {
        return fcntl(fd, F_DUPFD_CLOEXEC, 64);
}

/* posix_spawn()s agentd-sandbox with src[i] at fd i. Only what the daemon
 * changed is reset in the child (each reset is a syscall there). */
static int helper_spawn(const char *helper, char *const *argv, const int *src, int n, pid_t *ret_pid) {
        int fds[8];
        int r = 0;

        assert(n <= (int) ELEMENTSOF(fds));
        for (int i = 0; i < n; i++)
                fds[i] = -1;
        /* Above every target first, so the dup2 file actions cannot clobber each other. */
        for (int i = 0; i < n && r == 0; i++)
                if ((fds[i] = high_fd(src[i])) < 0)
                        r = -errno;
        if (r == 0) {
                posix_spawn_file_actions_t fa;
                posix_spawn_file_actions_init(&fa);
                for (int i = 0; i < n; i++)
                        posix_spawn_file_actions_adddup2(&fa, fds[i], i);
                posix_spawnattr_t attr;
                posix_spawnattr_init(&attr);
                sigset_t none, ours;
                sigemptyset(&none);
                sigemptyset(&ours);
                sigaddset(&ours, SIGPIPE);
                sigaddset(&ours, SIGTERM);
                sigaddset(&ours, SIGINT);
                sigaddset(&ours, SIGHUP);
                sigaddset(&ours, SIGCHLD);
                posix_spawnattr_setsigmask(&attr, &none);
                posix_spawnattr_setsigdefault(&attr, &ours);
                posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
                char *henv[] = { NULL };
                r = -posix_spawn(ret_pid, helper, &fa, &attr, argv, henv);
                posix_spawn_file_actions_destroy(&fa);
                posix_spawnattr_destroy(&attr);
        }
        for (int i = 0; i < n; i++)
                safe_close(fds[i]);
        return r;
}

/* ---- the zygote ------------------------------------------------------------------ */

/* posix_spawn costs the loop a vfork (~1 ms) and the helper an exec per
 * sandbox. Instead a zygote, `agentd-sandbox --zygote` started once, forks
 * the hands: we send it the child's fds (sandbox/zygote.h) and it answers
 * with the pid. It clones with CLONE_PARENT, so the hands is still our child:
 * we reap it, its PDEATHSIG is our death and a dying zygote takes no sandbox
 * along. posix_spawn remains the fallback: when the zygote cannot be started,
 * or died and one lazy restart did not help. */
#define ZYGOTE_REPLY_TIMEOUT_USEC (1000 * 1000)

typedef struct zygote {
        uv_poll_t poll; /* on the pidfd: it died */
        int fd;         /* our end of the socketpair */
        int pidfd;
        pid_t pid;
        char *helper;
        uint32_t seq;
} zygote;

static zygote *zygote_current;
static unsigned zygote_starts;
static bool zygote_stopped;

static void zygote_closed(uv_handle_t *h) {
        zygote *z = container_of((uv_poll_t *) h, zygote, poll);
        safe_close(z->pidfd);
        free(z->helper);
        free(z);
}

/* Kills and reaps it (a stateless process: nothing is lost); the next spawn restarts it or falls back. */
static void zygote_drop(zygote *z) {
        siginfo_t si;

        if (zygote_current == z)
                zygote_current = NULL;
        z->fd = safe_close(z->fd);
        (void) pidfd_send_signal_(z->pidfd, SIGKILL);
        while (waitid(P_PIDFD, (id_t) z->pidfd, &si, WEXITED) < 0 && errno == EINTR)
                ;
        uv_close((uv_handle_t *) &z->poll, zygote_closed);
}

static void on_zygote_exit(uv_poll_t *h, int status, int events) {
        zygote *z = container_of(h, zygote, poll);
        siginfo_t si = { 0 };

        if (waitid(P_PIDFD, (id_t) z->pidfd, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == 0)
                return; /* still there */
        log_warning("the sandbox zygote (pid %d) %s %d; sandboxes start without it until it is restarted", (int) z->pid,
                    si.si_code == CLD_EXITED ? "exited with status" : "was killed by signal", si.si_status);
        zygote_drop(z);
}

static int zygote_start(manager *m, const char *helper) {
        _cleanup_close_ int devnull = -1;
        int pair[2] = { -1, -1 }, r;
        pid_t pid;

        zygote_starts++;
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0) {
                r = -errno;
                goto fail;
        }
        devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (devnull < 0) {
                r = -errno;
                goto fail;
        }
        /* Our stderr stays its stderr: it has nothing to say unless it cannot start. */
        int err_fd = fcntl(STDERR_FILENO, F_GETFD) >= 0 ? STDERR_FILENO : devnull;
        char *argv[] = { (char *) "agentd-sandbox", (char *) "--zygote", NULL };
        r = helper_spawn(helper, argv, (int[]) { devnull, devnull, err_fd, pair[1] }, 4, &pid);
        if (r < 0)
                goto fail;
        pair[1] = safe_close(pair[1]);

        zygote *z = calloc(1, sizeof(*z));
        if (!z || !(z->helper = strdup(helper)) || (z->pidfd = pidfd_open_(pid)) < 0) {
                r = z && z->helper ? -errno : -ENOMEM;
                (void) kill(pid, SIGKILL);
                (void) waitpid(pid, NULL, 0);
                if (z)
                        free(z->helper);
                free(z);
                goto fail;
        }
        z->pid = pid;
        z->fd = TAKE_FD(pair[0]);
        /* It answers in microseconds; a zygote that does not is dropped, never waited on for long. */
        struct timeval tv = { .tv_sec = ZYGOTE_REPLY_TIMEOUT_USEC / 1000000, .tv_usec = ZYGOTE_REPLY_TIMEOUT_USEC % 1000000 };
        (void) setsockopt(z->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        (void) setsockopt(z->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        uv_poll_init(m->loop, &z->poll, z->pidfd);
        uv_poll_start(&z->poll, UV_READABLE, on_zygote_exit);
        zygote_current = z;
        log_info("sandbox zygote started (pid %d)", (int) pid);
        return 0;

fail:
        safe_close(pair[0]);
        safe_close(pair[1]);
        log_warning("cannot start the sandbox zygote %s --zygote: %s; sandboxes start with posix_spawn", helper, strerror(-r));
        return r;
}

/* The zygote for `helper`: started at daemon start, restarted lazily once. */
static zygote *zygote_get(manager *m, const char *helper) {
        if (zygote_current && streq(zygote_current->helper, helper))
                return zygote_current;
        if (zygote_current)
                zygote_drop(zygote_current); /* SandboxHelper= changed on reload */
        if (zygote_stopped || m->shutting_down)
                return NULL;
        if (zygote_starts >= 2) {
                if (zygote_starts == 2)
                        log_notice("the sandbox zygote is gone for good; sandboxes start with posix_spawn from now on");
                zygote_starts = 3; /* said once */
                return NULL;
        }
        log_notice("restarting the sandbox zygote");
        return zygote_start(m, helper) < 0 ? NULL : zygote_current;
}

/* Starts a hands with fds[i] at i through the zygote. Returns -ENOTCONN when
 * the request did not reach a zygote: nothing was started, the caller may
 * posix_spawn. Any other error means something may have been started: the
 * spawn fails (the hands of a lost reply finds nobody on its status socket
 * and never runs the command). */
static int zygote_spawn_flags(manager *m, const char *helper, const int *fds, int n, uint32_t flags, pid_t *ret_pid) {
        zygote *z = zygote_get(m, helper);
        if (!z)
                return -ENOTCONN;

        ZygoteRequest req = { .magic = ZYGOTE_MAGIC, .seq = ++z->seq, .n_fds = (uint32_t) n, .flags = flags };
        ssize_t k;

        assert(n >= ZYGOTE_FDS_MIN && n <= ZYGOTE_FDS_MAX);
        k = socket_send_fds(z->fd, &req, sizeof(req), fds, (size_t) n, 0);
        if (k != (ssize_t) sizeof(req)) {
                log_warning("sandbox zygote (pid %d): cannot send: %s; starting this sandbox with posix_spawn",
                            (int) z->pid, k < 0 ? strerror((int) -k) : "short write");
                zygote_drop(z);
                return -ENOTCONN;
        }

        ZygoteReply rep;
        while ((k = recv(z->fd, &rep, sizeof(rep), MSG_TRUNC)) < 0 && errno == EINTR)
                ;
        if (k != (ssize_t) sizeof(rep) || rep.magic != ZYGOTE_MAGIC || rep.seq != req.seq) {
                int r = k < 0 ? -errno : -EBADMSG;
                if (r == -EAGAIN)
                        r = -ETIMEDOUT;
                log_error("sandbox zygote (pid %d): %s; dropping it", (int) z->pid,
                          k < 0 ? strerror(-r) : k == 0 ? "it went away" : "garbled reply");
                zygote_drop(z);
                return r == -ENOTCONN ? -EIO : r;
        }
        if (rep.pid <= 0)
                return rep.pid < 0 ? rep.pid : -EBADMSG; /* it started nothing */
        *ret_pid = rep.pid;
        return 0;
}

static int zygote_spawn(manager *m, const char *helper, const int *fds, int n, pid_t *ret_pid) {
        return zygote_spawn_flags(m, helper, fds, n, 0, ret_pid);
}

static void zygote_stop(void) {
        zygote_stopped = true;
        if (zygote_current)
                zygote_drop(zygote_current);
}

int sandbox_helper_start(manager *m, const char *helper, const int *src, int n, pid_t *ret_pid) {
        int r = zygote_spawn(m, helper, src, n, ret_pid);
        if (r == -ENOTCONN) {
                char fd[16];
                snprintf(fd, sizeof(fd), "%d", SPEC_FD_SPEC);
                char *hargv[] = { (char *) "agentd-sandbox", (char *) "--spec-fd", fd, NULL };
                r = helper_spawn(helper, hargv, src, n, ret_pid);
        }
        return r;
}

int sandbox_pidfd_open(pid_t pid) {
        return pidfd_open_(pid);
}

void sandbox_watch(sandbox *s, const int pipe_fds[2], int client_fds[2]) {
        manager *m = s->m;
        uv_poll_init(m->loop, &s->helper_poll, s->helper_pidfd);
        s->helper_poll_init = true;
        uv_poll_start(&s->helper_poll, UV_READABLE, on_helper_exit);
        uv_poll_init(m->loop, &s->status_poll, s->status_fd);
        s->status_poll_init = true;
        uv_poll_start(&s->status_poll, UV_READABLE, on_status_readable);
        for (int i = 0; i < 2 && pipe_fds[i] >= 0; i++) {
                output_stream *o = &s->out[i];
                o->pipe_fd = pipe_fds[i];
                fcntl(o->pipe_fd, F_SETFL, O_NONBLOCK);
                uv_poll_init(m->loop, &o->pipe_poll, o->pipe_fd);
                o->pipe_poll_init = true;
                if (client_fds[i] >= 0 && client_fd_prepare(o, TAKE_FD(client_fds[i])) < 0)
                        log_warning("sandbox %s: cannot attach %s: %m", s->id, o->name);
                stream_update(o);
        }
}

/* ---- what the sandbox.* handlers (rpc/rpc-sandbox.c) call ------------------------ */

/* ---- warm sandboxes (pool.c) --------------------------------------------------- */

/* sandbox_helper_start for a warm sandbox: the zygote's ZYGOTE_WARM, or --warm. */
int sandbox_helper_start_warm(manager *m, const char *helper, const int *src, int n, pid_t *ret_pid) {
        int r = zygote_spawn_flags(m, helper, src, n, ZYGOTE_WARM, ret_pid);
        if (r == -ENOTCONN) {
                char *hargv[] = { (char *) "agentd-sandbox", (char *) "--warm", (char *) "--spec-fd", (char *) "3", NULL };
                r = helper_spawn(helper, hargv, src, n, ret_pid);
        }
        return r;
}

int sandbox_add_waiter(sandbox *s, rpc_call *call) {
        sandbox_waiter *w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->call = call;
        w->next = s->waiters;
        s->waiters = w;
        return 0;
}

int sandbox_read_log(const sandbox *s, int stream, char **ret, size_t *ret_len) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s.log", s->dir, s->out[stream].name);
        return read_file_bounded(path, SANDBOX_LOG_READ_MAX, ret, ret_len);
}

/* ---- daemon start and stop ------------------------------------------------------- */

/* Records of earlier runs, newest last, so ps and review work after a restart. */
static int cmp_started(const void *a, const void *b) {
        const sandbox *x = *(sandbox *const *) a, *y = *(sandbox *const *) b;
        return x->started_at < y->started_at ? -1 : x->started_at > y->started_at;
}

static void load_previous(manager *m) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/sandboxes", m->config->state_directory);
        DIR *d = opendir(path);
        if (!d)
                return;
        struct dirent *de;
        loading_previous = true;
        while ((de = readdir(d)))
                if (id_valid(de->d_name))
                        (void) sandbox_load(m, de->d_name);
        loading_previous = false;
        closedir(d);
        /* Sort by start time, keep the newest in memory (the rest load on demand). */
        size_t n = m->sandboxes->n, k = 0;
        sandbox **v = calloc(n ? n : 1, sizeof(*v));
        if (!v)
                return;
        list_head *i, *t;
        list_for_each_safe(i, t, &m->sandboxes->list) {
                v[k++] = container_of(i, sandbox, link);
                list_del(i);
        }
        qsort(v, k, sizeof(*v), cmp_started);
        m->sandboxes->n = 0;
        for (size_t j = 0; j < k; j++) {
                if (k - j > MAX_ENDED_KEPT) {
                        sandbox_unref(v[j]);
                        continue;
                }
                if (streq(v[j]->end_reason ? v[j]->end_reason : "", "agentd stopped while it ran"))
                        (void) sandbox_save_meta(v[j]);
                list_add_tail(&m->sandboxes->list, &v[j]->link);
                m->sandboxes->n++;
        }
        free(v);
        if (m->sandboxes->cgroup.root) {
                /* Sandbox cgroups a previous instance left behind (all their processes died with it).
                 * Only ours: another agentd (another state directory) may share this cgroup. */
                DIR *cg = opendir(m->sandboxes->cgroup.root);
                while (cg && (de = readdir(cg)))
                        if (!strncmp(de->d_name, "sb-", 3) && id_valid(de->d_name + 3)) {
                                char p[PATH_MAX];
                                snprintf(p, sizeof(p), "%s/%s", path, de->d_name + 3);
                                if (access(p, F_OK) < 0)
                                        continue;
                                snprintf(p, sizeof(p), "%s/%s", m->sandboxes->cgroup.root, de->d_name);
                                (void) cgroup_kill(p);
                                (void) rmdir(p);
                        }
                if (cg)
                        closedir(cg);
        }
}

int sandboxes_init(manager *m) {
        part = (sandbox_part) {};
        list_init(&part.list);
        m->sandboxes = &part;
        cgroup_setup(m);
        load_previous(m);
        m->sandboxes->helper = find_helper(m);
        if (!m->sandboxes->helper)
                log_warning("the sandbox helper agentd-sandbox was not found; spawning will fail");
        else
                (void) zygote_start(m, m->sandboxes->helper); /* failing is logged: posix_spawn then */
        return pool_init(m);
}

void sandboxes_shutdown(manager *m) {
        list_head *i, *t;

        pool_free(m);
        zygote_stop(); /* nothing is spawned any more */
        list_for_each_safe(i, t, &m->sandboxes->list) {
                sandbox *s = container_of(i, sandbox, link);
                if (sandbox_ended(s))
                        continue;
                (void) sandbox_kill(s, "agentd stopping");
        }
}

void sandboxes_free(manager *m) {
        list_head *i, *t;
        list_for_each_safe(i, t, &m->sandboxes->list) {
                sandbox *s = container_of(i, sandbox, link);
                list_del(&s->link);
                m->sandboxes->n--;
                if (s->spawn_call) {
                        rpc_call_free(s->spawn_call);
                        s->spawn_call = NULL;
                }
                while (s->waiters) {
                        sandbox_waiter *w = s->waiters;
                        s->waiters = w->next;
                        rpc_call_free(w->call);
                        free(w);
                }
                release_owner(s);
                if (s->helper_pidfd >= 0)
                        (void) pidfd_send_signal_(s->helper_pidfd, SIGKILL);
                /* Its broker socket too, before the final uv_walk would close it without freeing it. */
                server_close_sandbox(TAKE_PTR(s->broker_listener));
                close_all_handles(s);
                sandbox_unref(s);
        }
        zygote_stop();
        free(m->sandboxes->helper);
        m->sandboxes->helper = NULL;
        cgroup_teardown(m);
        spawn_cache_free();
}
