/* The composed agentd of fixture.h. */
#include <arpa/inet.h>
#include <check.h>
#include <dirent.h>
#include <signal.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "compose.h"
#include "daemon.h"
#include "fixture.h"
#include "macro.h"
#include "proto.h"
#include "server.h"
#include "socket.h"

static void mkdir_or_fail(const char *path) {
        ck_assert_msg(mkdir(path, 0700) == 0 || errno == EEXIST, "mkdir %s: %s", path, strerror(errno));
}

void fixture_write_file(const char *path, const char *text) {
        FILE *fp = fopen(path, "we");
        ck_assert_msg(fp != NULL, "open %s: %s", path, strerror(errno));
        ck_assert_int_eq(fputs(text, fp) >= 0, 1);
        ck_assert_int_eq(fclose(fp), 0);
}

/* ---- a private cgroup subtree ------------------------------------------------
 * Without one, agentd would make its supervisor and sb-* cgroups in whatever
 * cgroup the test runs in (as root: the hierarchy's root). Each fixture gets
 * <cgroup2 mount>/agentd-unit-<pid>; fixture_stop() moves this process back
 * and removes the subtree, and fixture_init() removes those of dead tests. */

static bool cgroup2_mount(char *ret, size_t size) {
        FILE *fp = fopen("/proc/self/mountinfo", "re");
        char line[4096];
        bool found = false;
        while (fp && !found && fgets(line, sizeof(line), fp)) {
                char *sep = strstr(line, " - ");
                if (!sep || strncmp(sep + 3, "cgroup2 ", 8) != 0)
                        continue;
                char *p = line;
                for (int i = 0; i < 4 && p; i++)
                        if ((p = strchr(p, ' ')))
                                p++;
                char *end = p ? strchr(p, ' ') : NULL;
                if (end && (size_t) (end - p) < size) {
                        snprintf(ret, size, "%.*s", (int) (end - p), p);
                        found = true;
                }
        }
        if (fp)
                fclose(fp);
        return found;
}

/* Depth first: a cgroup goes once its children went (and it is empty). */
static void cgroup_rmdir_tree(const char *cg) {
        DIR *d = opendir(cg);
        struct dirent *de;
        while (d && (de = readdir(d))) {
                if (de->d_type != DT_DIR || de->d_name[0] == '.')
                        continue;
                char path[PATH_MAX + 300];
                snprintf(path, sizeof(path), "%s/%s", cg, de->d_name);
                cgroup_rmdir_tree(path);
        }
        if (d)
                closedir(d);
        (void) rmdir(cg);
}

static void cgroup_setup(fixture *f) {
        char mnt[PATH_MAX], line[PATH_MAX];
        f->cgroup[0] = f->cgroup_home[0] = 0;
        if (!cgroup2_mount(mnt, sizeof(mnt)))
                return;
        FILE *fp = fopen("/proc/self/cgroup", "re");
        while (fp && fgets(line, sizeof(line), fp))
                if (strncmp(line, "0::", 3) == 0) {
                        line[strcspn(line, "\n")] = 0;
                        snprintf(f->cgroup_home, sizeof(f->cgroup_home), "%s%s", mnt, streq(line + 3, "/") ? "" : line + 3);
                }
        if (fp)
                fclose(fp);
        DIR *d = opendir(mnt);
        struct dirent *de;
        while (d && (de = readdir(d))) {
                int pid;
                if (sscanf(de->d_name, "agentd-unit-%d", &pid) != 1 || pid == getpid() || kill(pid, 0) == 0 || errno != ESRCH)
                        continue;
                char path[PATH_MAX + 300];
                snprintf(path, sizeof(path), "%s/%s", mnt, de->d_name);
                cgroup_rmdir_tree(path);
        }
        if (d)
                closedir(d);
        snprintf(f->cgroup, sizeof(f->cgroup), "%s/agentd-unit-%d", mnt, (int) getpid());
        if (mkdir(f->cgroup, 0755) < 0 && errno != EEXIST)
                f->cgroup[0] = 0;
}

static void cgroup_done(fixture *f) {
        if (!f->cgroup[0])
                return;
        if (f->cgroup_home[0]) {
                char path[PATH_MAX + 32], pid[32];
                snprintf(path, sizeof(path), "%s/cgroup.procs", f->cgroup_home);
                snprintf(pid, sizeof(pid), "%d", (int) getpid());
                int fd = open(path, O_WRONLY | O_CLOEXEC);
                if (fd >= 0) {
                        (void) !write(fd, pid, strlen(pid));
                        close(fd);
                }
        }
        /* What is left in it (this process is out now) ends, then the tree goes. */
        char kill_path[PATH_MAX + 32];
        snprintf(kill_path, sizeof(kill_path), "%s/cgroup.kill", f->cgroup);
        int fd = open(kill_path, O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
                (void) !write(fd, "1", 1);
                close(fd);
        }
        for (int i = 0; i < 100 && access(f->cgroup, F_OK) == 0; i++) {
                cgroup_rmdir_tree(f->cgroup);
                if (access(f->cgroup, F_OK) == 0)
                        poll(NULL, 0, 10);
        }
}

void fixture_init(fixture *f) {
        memset(f, 0, sizeof(*f));
        const char *tmp = getenv("TMPDIR");
        snprintf(f->root, sizeof(f->root), "%s/agentd-fixture-XXXXXX", tmp && *tmp == '/' ? tmp : "/tmp");
        ck_assert_ptr_nonnull(mkdtemp(f->root));
        /* The daemon canonicalises $HOME and the state directory: so do we. */
        char *real = realpath(f->root, NULL);
        ck_assert_ptr_nonnull(real);
        snprintf(f->root, sizeof(f->root), "%s", real);
        free(real);

        snprintf(f->home, sizeof(f->home), "%s/home", f->root);
        snprintf(f->config_dir, sizeof(f->config_dir), "%s/config/agentd", f->root);
        snprintf(f->task_dir, sizeof(f->task_dir), "%s/tasks", f->config_dir);
        snprintf(f->state_home, sizeof(f->state_home), "%s/state", f->root);
        snprintf(f->runtime_dir, sizeof(f->runtime_dir), "%s/run", f->root);
        snprintf(f->workspace, sizeof(f->workspace), "%s/work", f->home);
        char config_home[PATH_MAX];
        snprintf(config_home, sizeof(config_home), "%s/config", f->root);
        const char *dirs[] = { f->home, config_home, f->config_dir, f->task_dir, f->state_home, f->runtime_dir,
                               f->workspace };
        for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
                mkdir_or_fail(dirs[i]);

        ck_assert_int_eq(setenv("HOME", f->home, 1), 0);
        ck_assert_int_eq(setenv("XDG_CONFIG_HOME", config_home, 1), 0);
        ck_assert_int_eq(setenv("XDG_STATE_HOME", f->state_home, 1), 0);
        ck_assert_int_eq(setenv("XDG_RUNTIME_DIR", f->runtime_dir, 1), 0);
        unsetenv("AGENTD_SOCKET");
        unsetenv("LISTEN_FDS");
        unsetenv("NOTIFY_SOCKET");
        setenv("TSS2_LOG", "all+none", 1);  /* as main() does: the broker reports TPM errors itself */
        f->next_msgid = 1;
        cgroup_setup(f);
}

void fixture_write_task(fixture *f, const char *name, const char *text) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s.task", f->task_dir, name);
        fixture_write_file(path, text);
}

void fixture_start(fixture *f, const char *config_text) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/agentd.conf", f->config_dir);
        /* The helper this build made, unless the test names one: a section may
         * appear twice in an INI file. */
        char *text = NULL;
        const char *given = config_text ? config_text : "";
        ck_assert_int_ge(asprintf(&text, "%s\n[Daemon]\n%s%s\n%s%s\n", given,
                                  strstr(given, "SandboxHelper=") ? "" : "SandboxHelper=",
                                  strstr(given, "SandboxHelper=") ? "" : FIXTURE_HELPER,
                                  strstr(given, "CgroupPath=") || !f->cgroup[0] ? "" : "CgroupPath=",
                                  strstr(given, "CgroupPath=") || !f->cgroup[0] ? "" : f->cgroup), 0);
        ck_assert_ptr_nonnull(text);
        fixture_write_file(path, text);
        free(text);

        ck_assert_int_eq(uv_loop_init(&f->loop), 0);
        manager *m = &f->m;
        daemon_manager_init(m);
        ck_assert_int_eq(daemon_load_config(m, path), 0);
        m->loop = &f->loop;
        ck_assert_int_eq(daemon_start_tasks(m), 0);
        ck_assert_int_eq(daemon_setup_state_directory(m), 0);
        ck_assert_int_eq(daemon_start_parts(m), 0);
        uv_timer_init(m->loop, &m->shutdown_timer);
        f->started = true;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void) st;
        (void) ftw;
        if (flag == FTW_DP)
                chmod(path, 0700);
        return remove(path) < 0 && errno != ENOENT ? 0 : 0;
}

void fixture_stop(fixture *f) {
        if (f->started) {
                manager *m = &f->m;
                daemon_begin_shutdown(m, "fixture_stop");
                /* Sandboxes end (or are killed by the 5 s shutdown timer), then everything closes. */
                for (int i = 0; i < 1000 && uv_loop_alive(m->loop); i++)
                        (void) uv_run(m->loop, UV_RUN_ONCE);
                ck_assert_int_eq(uv_loop_close(m->loop), 0);
                if (m->state_lock_fd >= 0)
                        close(m->state_lock_fd);
                daemon_release(m);
                f->started = false;
        }
        cgroup_done(f);
        /* Directories the sandboxes made read-only are made writable on the way out. */
        (void) nftw(f->root, remove_one, 32, FTW_DEPTH | FTW_PHYS);
}

void fixture_run(fixture *f, unsigned ms) {
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        do {
                (void) uv_run(&f->loop, UV_RUN_NOWAIT);
                poll(NULL, 0, 1);
                clock_gettime(CLOCK_MONOTONIC, &t);
        } while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < (long) ms);
}

bool fixture_run_until(fixture *f, unsigned ms, bool (*pred)(void *arg), void *arg) {
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
                if (pred(arg))
                        return true;
                (void) uv_run(&f->loop, UV_RUN_NOWAIT);
                clock_gettime(CLOCK_MONOTONIC, &t);
                if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 >= (long) ms)
                        return pred(arg);
                poll(NULL, 0, 1);
        }
}

int fixture_connect(fixture *f) {
        int sv[2];
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
        ck_assert_int_eq(server_adopt(&f->m, sv[0], NULL), 0);
        return sv[1];
}

static void parse_reply(fixture_reply *r, uint32_t msgid) {
        const msgpack_object *o = &r->u.data;
        ck_assert_msg(o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size == 4, "a reply is [1, msgid, error, result]");
        const msgpack_object *a = o->via.array.ptr;
        ck_assert_uint_eq(a[0].via.u64, 1);
        ck_assert_uint_eq(a[1].via.u64, msgid);
        if (a[2].type == MSGPACK_OBJECT_NIL) {
                r->result = &a[3];
                return;
        }
        /* [kind, "code: message"] (CONTRACT §2). */
        const msgpack_object *e = &a[2];
        ck_assert_msg(e->type == MSGPACK_OBJECT_ARRAY && e->via.array.size == 2, "an error is [kind, text]");
        const msgpack_object *text = &e->via.array.ptr[1];
        ck_assert_int_eq(text->type, MSGPACK_OBJECT_STR);
        const char *s = text->via.str.ptr;
        size_t n = text->via.str.size;
        const char *colon = memchr(s, ':', n);
        size_t cl = colon ? (size_t) (colon - s) : n;
        snprintf(r->code, sizeof(r->code), "%.*s", (int) cl, s);
        if (colon && cl + 2 <= n)
                snprintf(r->message, sizeof(r->message), "%.*s", (int) (n - cl - 2), colon + 2);
}

void fixture_send_raw(fixture *f, int fd, const void *data, size_t len, const int *fds, size_t n_fds) {
        /* The socket is non-blocking: a large request goes in parts while the loop reads. */
        size_t off = 0;
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (off < len) {
                ssize_t n = socket_send_fds(fd, (const char *) data + off, len - off, off ? NULL : fds, off ? 0 : n_fds, 0);
                ck_assert_msg(n > 0 || n == -EAGAIN, "send: %s", strerror((int) -n));
                if (n > 0)
                        off += (size_t) n;
                if (off < len) {
                        (void) uv_run(&f->loop, UV_RUN_NOWAIT);
                        poll(&(struct pollfd) { .fd = fd, .events = POLLOUT }, 1, 1);
                }
                clock_gettime(CLOCK_MONOTONIC, &t);
                ck_assert_msg(t.tv_sec - t0.tv_sec < 30, "cannot send the request in 30 s");
        }
}

uint32_t fixture_send(fixture *f, int fd, const char *method, fixture_pack_fn pack_params, void *arg) {
        uint32_t msgid = f->next_msgid++;
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        rpc_pack_request_header(&pk, msgid, method);
        msgpack_pack_array(&pk, 1);
        if (pack_params)
                pack_params(&pk, arg);
        else
                msgpack_pack_map(&pk, 0);
        fixture_send_raw(f, fd, sb.data, sb.size, NULL, 0);
        msgpack_sbuffer_destroy(&sb);
        return msgid;
}

bool fixture_recv(fixture *f, int fd, uint32_t msgid, fixture_reply *r) {
        const char *method = "the request";
        memset(r, 0, sizeof(*r));
        msgpack_unpacked_init(&r->u);

        /* Read until one whole message is in. */
        size_t cap = 1 << 20, len = 0;
        char *buf = malloc(cap);
        ck_assert_ptr_nonnull(buf);
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
                (void) uv_run(&f->loop, UV_RUN_NOWAIT);
                size_t n_fds = 0;
                int fds[4];
                ssize_t n = socket_recv_fds(fd, buf + len, cap - len, fds, &n_fds, 4, MSG_DONTWAIT, NULL);
                for (size_t i = 0; i < n_fds && r->n_fds < 4; i++)
                        r->fds[r->n_fds++] = fds[i];
                if (n > 0) {
                        len += (size_t) n;
                        size_t off = 0;
                        if (msgpack_unpack_next(&r->u, buf, len, &off) == MSGPACK_UNPACK_SUCCESS)
                                break;
                        ck_assert_uint_lt(len, cap);
                } else {
                        ck_assert_msg(n == -EAGAIN, "connection ended before the reply to %s: %zd", method, n);
                }
                clock_gettime(CLOCK_MONOTONIC, &t);
                ck_assert_msg(t.tv_sec - t0.tv_sec < 30, "no reply to %s in 30 s", method);
                poll(&(struct pollfd) { .fd = fd, .events = POLLIN }, 1, 1);
        }
        r->buf = buf; /* the unpacked objects point into it */
        if (getenv("FIXTURE_DEBUG")) { msgpack_object_print(stderr, r->u.data); fputc('\n', stderr); }
        parse_reply(r, msgid);
        return r->result != NULL;
}

bool fixture_call(fixture *f, int fd, const char *method, fixture_pack_fn pack_params, void *arg, fixture_reply *r) {
        return fixture_recv(f, fd, fixture_send(f, fd, method, pack_params, arg), r);
}

static void pack_str_pairs(msgpack_packer *pk, void *arg) {
        const char **kv = arg;
        size_t n = 0;
        while (kv[2 * n])
                n++;
        msgpack_pack_map(pk, n);
        for (size_t i = 0; i < n; i++)
                mp_pack_kv_str(pk, kv[2 * i], kv[2 * i + 1]);
}

static bool call_str_va(fixture *f, int fd, fixture_reply *r, const char *method, va_list ap) {
        const char *kv[33] = {};
        for (size_t i = 0; i < 32; i++) {
                kv[i] = va_arg(ap, const char *);
                if (!kv[i])
                        break;
                ck_assert_msg(i % 2 == 0 || kv[i], "key without a value");
        }
        return fixture_call(f, fd, method, pack_str_pairs, kv, r);
}

bool fixture_call_str(fixture *f, int fd, fixture_reply *r, const char *method, ...) {
        va_list ap;
        va_start(ap, method);
        bool ok = call_str_va(f, fd, r, method, ap);
        va_end(ap);
        return ok;
}

void fixture_call_ok(fixture *f, int fd, const char *method, ...) {
        fixture_reply r;
        va_list ap;
        va_start(ap, method);
        bool ok = call_str_va(f, fd, &r, method, ap);
        va_end(ap);
        ck_assert_msg(ok, "%s: %s: %s", method, r.code, r.message);
        fixture_reply_free(&r);
}

void fixture_call_fails(fixture *f, int fd, const char *code, const char *method, ...) {
        fixture_reply r;
        va_list ap;
        va_start(ap, method);
        bool ok = call_str_va(f, fd, &r, method, ap);
        va_end(ap);
        ck_assert_msg(!ok, "%s went ahead", method);
        ck_assert_str_eq(r.code, code);
        fixture_reply_free(&r);
}

void fixture_reply_free(fixture_reply *r) {
        msgpack_unpacked_destroy(&r->u);
        free(r->buf);
        memset(r, 0, sizeof(*r));
}

const msgpack_object *fixture_get(const msgpack_object *map, const char *key) {
        if (!map || map->type != MSGPACK_OBJECT_MAP)
                return NULL;
        size_t kl = strlen(key);
        for (uint32_t i = 0; i < map->via.map.size; i++) {
                const msgpack_object *k = &map->via.map.ptr[i].key;
                if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == kl && memcmp(k->via.str.ptr, key, kl) == 0)
                        return &map->via.map.ptr[i].val;
        }
        return NULL;
}

const char *fixture_get_str(const msgpack_object *map, const char *key, char *buf, size_t size) {
        const msgpack_object *v = fixture_get(map, key);
        if (!v || v->type != MSGPACK_OBJECT_STR)
                return NULL;
        snprintf(buf, size, "%.*s", (int) v->via.str.size, v->via.str.ptr);
        return buf;
}

/* ---- helpers shared by the fixture tests ------------------------------------- */

uint64_t fixture_u64(const msgpack_object *map, const char *key) {
        const msgpack_object *v = fixture_get(map, key);
        ck_assert_msg(v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER, "no unsigned '%s' in the reply", key);
        return v->via.u64;
}

const char *fixture_str(const msgpack_object *map, const char *key, char *buf, size_t size) {
        const char *s = fixture_get_str(map, key, buf, size);
        ck_assert_msg(s != NULL, "no string '%s' in the reply", key);
        return s;
}

bool fixture_bool(const msgpack_object *map, const char *key) {
        const msgpack_object *v = fixture_get(map, key);
        ck_assert_msg(v && v->type == MSGPACK_OBJECT_BOOLEAN, "no boolean '%s' in the reply", key);
        return v->via.boolean;
}

const char *fixture_status_str(fixture *f, const char *key, char *buf, size_t size) {
        int c = fixture_connect(f);
        fixture_reply r;
        ck_assert(fixture_call(f, c, "agentd.status", NULL, NULL, &r));
        fixture_str(r.result, key, buf, size);
        fixture_reply_free(&r);
        close(c);
        return buf;
}

typedef struct status_wait {
        fixture *f;
        const char *key, *prefix;
} status_wait;

static bool status_has_prefix(void *arg) {
        status_wait *w = arg;
        char buf[512];
        return strncmp(fixture_status_str(w->f, w->key, buf, sizeof(buf)), w->prefix, strlen(w->prefix)) == 0;
}

void fixture_wait_status_prefix(fixture *f, const char *key, const char *prefix) {
        status_wait w = { f, key, prefix };
        char buf[512];
        ck_assert_msg(fixture_run_until(f, 30000, status_has_prefix, &w), "status %s is '%s', not '%s...'", key,
                      fixture_status_str(f, key, buf, sizeof(buf)), prefix);
}

void fixture_wait_audit_ready(fixture *f) {
        fixture_wait_status_prefix(f, "audit", "ok (key sealed: ");
}

void fixture_pack_spawn(msgpack_packer *pk, void *arg) {
        const fixture_spawn_req *s = arg;
        msgpack_pack_map(pk, (s->task != NULL) + (s->workspace != NULL) + (s->path != NULL) + (s->argv != NULL));
        if (s->task)
                mp_pack_kv_str(pk, "task", s->task);
        if (s->workspace)
                mp_pack_kv_str(pk, "workspace", s->workspace);
        if (s->path)
                mp_pack_kv_str(pk, "path", s->path);
        if (s->argv) {
                size_t argc = s->argc;
                if (!argc)
                        while (s->argv[argc])
                                argc++;
                mp_pack_cstr(pk, "argv");
                msgpack_pack_array(pk, argc);
                for (size_t i = 0; i < argc; i++)
                        mp_pack_cstr(pk, s->argv[i] ? s->argv[i] : "");
        }
}

bool fixture_spawn(fixture *f, int c, const fixture_spawn_req *s, char *id, size_t size, fixture_reply *r) {
        if (!fixture_call(f, c, "sandbox.spawn", fixture_pack_spawn, (void *) s, r))
                return false;
        if (id)
                ck_assert_ptr_nonnull(fixture_get_str(r->result, "id", id, size));
        fixture_reply_free(r);
        return true;
}

void fixture_spawn_sh(fixture *f, int c, const char *task, const char *cmd, char *id, size_t size) {
        const char *argv[] = { "/bin/sh", "-c", cmd, NULL };
        fixture_spawn_req s = { .task = task, .workspace = f->workspace, .argv = argv };
        fixture_reply r;
        bool ok = fixture_spawn(f, c, &s, id, size, &r);
        ck_assert_msg(ok, "spawn of '%s' failed: %s: %s", cmd, r.code, r.message);
}

static long long int_of(const msgpack_object *o) {
        return o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ? o->via.i64 : (long long) o->via.u64;
}

bool fixture_list_find(fixture *f, int c, const char *id, fixture_entry *ret) {
        fixture_reply r;
        ck_assert(fixture_call(f, c, "sandbox.list", NULL, NULL, &r));
        ck_assert_int_eq(r.result->type, MSGPACK_OBJECT_ARRAY);
        bool found = false;
        for (uint32_t i = 0; i < r.result->via.array.size; i++) {
                const msgpack_object *e = &r.result->via.array.ptr[i];
                char buf[128];
                if (!fixture_get_str(e, "id", buf, sizeof(buf)) || !streq(buf, id))
                        continue;
                found = true;
                if (!ret)
                        continue;
                memset(ret, 0, sizeof(*ret));
                (void) fixture_get_str(e, "state", ret->state, sizeof(ret->state));
                const msgpack_object *x = fixture_get(e, "exit_code"), *sg = fixture_get(e, "signal");
                ret->ended = x != NULL;
                if (x)
                        ret->exit_code = int_of(x);
                if (sg)
                        ret->signal = int_of(sg);
        }
        fixture_reply_free(&r);
        return found;
}

const char *fixture_sandbox_state(fixture *f, int c, const char *id, char *buf, size_t size) {
        fixture_entry e;
        snprintf(buf, size, "%s", fixture_list_find(f, c, id, &e) ? e.state : "");
        return buf;
}

size_t fixture_list_count(fixture *f, int c) {
        fixture_reply r;
        ck_assert(fixture_call(f, c, "sandbox.list", NULL, NULL, &r));
        ck_assert_int_eq(r.result->type, MSGPACK_OBJECT_ARRAY);
        size_t n = r.result->via.array.size;
        fixture_reply_free(&r);
        return n;
}

void fixture_wait(fixture *f, int c, const char *id, long long *ret_code, long long *ret_signal) {
        fixture_reply r;
        bool ok = fixture_call_str(f, c, &r, "sandbox.wait", "id", id, NULL);
        ck_assert_msg(ok, "wait %s: %s: %s", id, r.code, r.message);
        const msgpack_object *x = fixture_get(r.result, "exit_code"), *s = fixture_get(r.result, "signal");
        ck_assert_ptr_nonnull(x);
        ck_assert_ptr_nonnull(s);
        if (ret_code)
                *ret_code = int_of(x);
        if (ret_signal)
                *ret_signal = int_of(s);
        fixture_reply_free(&r);
}

void fixture_logs(fixture *f, int c, const char *id, const char *stream, char *out, size_t size) {
        fixture_reply r;
        bool ok = fixture_call_str(f, c, &r, "sandbox.logs", "id", id, NULL);
        ck_assert_msg(ok, "logs %s: %s: %s", id, r.code, r.message);
        const msgpack_object *o = fixture_get(r.result, stream);
        ck_assert_msg(o && o->type == MSGPACK_OBJECT_BIN, "no %s in sandbox.logs", stream);
        ck_assert_uint_lt(o->via.bin.size, size);
        snprintf(out, size, "%.*s", (int) o->via.bin.size, o->via.bin.ptr);
        fixture_reply_free(&r);
}

void fixture_sandbox_path(const fixture *f, const char *id, const char *name, char *buf, size_t size) {
        snprintf(buf, size, "%s/agentd/sandboxes/%s%s%s", f->state_home, id, name ? "/" : "", name ? name : "");
}

char *fixture_read_file(const char *path) {
        FILE *fp = fopen(path, "re");
        if (!fp)
                return NULL;
        char *buf = calloc(1, 65536);
        if (buf)
                (void) !fread(buf, 1, 65535, fp);
        fclose(fp);
        return buf;
}

bool fixture_meta_state_is(const fixture *f, const char *id, const char *want) {
        char path[PATH_MAX], needle[64];
        fixture_sandbox_path(f, id, "meta.json", path, sizeof(path));
        char *text = fixture_read_file(path);
        snprintf(needle, sizeof(needle), "\"state\":\"%s\"", want);
        bool yes = text && strstr(text, needle);
        free(text);
        return yes;
}

size_t fixture_count_entries(const char *dir, const char *prefix) {
        DIR *d = opendir(dir);
        if (!d)
                return 0;
        size_t n = 0;
        struct dirent *de;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.' && (!prefix || strncmp(de->d_name, prefix, strlen(prefix)) == 0))
                        n++;
        closedir(d);
        return n;
}

void fixture_pack_query(msgpack_packer *pk, void *arg) {
        const fixture_query *q = arg;
        msgpack_pack_map(pk, (q->sandbox != NULL) + (q->limit > 0) + (q->before > 0) + (q->since > 0));
        if (q->sandbox)
                mp_pack_kv_str(pk, "sandbox", q->sandbox);
        if (q->limit > 0)
                mp_pack_kv_u64(pk, "limit", q->limit);
        if (q->before > 0)
                mp_pack_kv_u64(pk, "before", q->before);
        if (q->since > 0)
                mp_pack_kv_u64(pk, "since", q->since);
}

void fixture_audit_query(fixture *f, int c, const fixture_query *q, fixture_reply *r) {
        ck_assert_msg(fixture_call(f, c, "audit.query", fixture_pack_query, (void *) q, r), "audit.query: %s: %s", r->code,
                      r->message);
        ck_assert_int_eq(r->result->type, MSGPACK_OBJECT_ARRAY);
}

const char *fixture_record_method(const msgpack_object *rec, char *buf, size_t size) {
        char type[64];
        buf[0] = 0;
        if (fixture_get_str(rec, "type", type, sizeof(type)) && streq(type, "rpc"))
                (void) fixture_get_str(fixture_get(rec, "fields"), "method", buf, size);
        return buf;
}

bool fixture_audited(void *arg) {
        fixture_audit_match *q = arg;
        fixture_reply r;
        bool found = false;
        fixture_audit_query(q->f, q->c, &(fixture_query) { .sandbox = q->sandbox }, &r);
        char *text = malloc(65536);
        ck_assert_ptr_nonnull(text);
        for (uint32_t i = 0; i < r.result->via.array.size && !found; i++) {
                const msgpack_object *rec = &r.result->via.array.ptr[i];
                char type[64];
                if (!fixture_get_str(rec, "type", type, sizeof(type)) || !streq(type, q->type))
                        continue;
                int n = msgpack_object_print_buffer(text, 65536, *rec);
                text[n > 0 && n < 65536 ? n : 0] = 0;
                found = true;
                for (size_t k = 0; k < ELEMENTSOF(q->needles) && q->needles[k]; k++)
                        found = found && strstr(text, q->needles[k]) != NULL;
                if (found)
                        snprintf(q->found, sizeof(q->found), "%s", text);
        }
        free(text);
        fixture_reply_free(&r);
        return found;
}

void fixture_stream_init(fixture_stream *s, int fd) {
        s->fd = fd;
        s->cap = 1 << 20;
        s->len = 0;
        s->buf = malloc(s->cap);
        ck_assert_ptr_nonnull(s->buf);
}

void fixture_stream_free(fixture_stream *s) {
        free(s->buf);
        s->buf = NULL;
}

int fixture_subscribe(fixture *f, fixture_stream *st) {
        int ev = fixture_connect(f);
        fixture_call_ok(f, ev, "events.subscribe", NULL);
        fixture_stream_init(st, ev);
        return ev;
}

/* The first whole message in s->buf moved out into *ret_msg. */
static bool stream_take(fixture_stream *s, fixture_reply *ret_msg) {
        msgpack_unpacked u;
        size_t off = 0;
        msgpack_unpacked_init(&u);
        msgpack_unpack_return ur = msgpack_unpack_next(&u, s->buf, s->len, &off);
        msgpack_unpacked_destroy(&u);
        if (ur != MSGPACK_UNPACK_SUCCESS)
                return false;
        memset(ret_msg, 0, sizeof(*ret_msg));
        ret_msg->buf = malloc(off);
        ck_assert_ptr_nonnull(ret_msg->buf);
        memcpy(ret_msg->buf, s->buf, off);
        memmove(s->buf, s->buf + off, s->len - off);
        s->len -= off;
        size_t o2 = 0;
        msgpack_unpacked_init(&ret_msg->u);
        ck_assert_int_eq(msgpack_unpack_next(&ret_msg->u, ret_msg->buf, off, &o2), MSGPACK_UNPACK_SUCCESS);
        return true;
}

bool fixture_stream_next(fixture *f, fixture_stream *s, unsigned ms, fixture_reply *ret_msg) {
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
                if (s->len > 0 && stream_take(s, ret_msg))
                        return true;
                (void) uv_run(&f->loop, UV_RUN_NOWAIT);
                ck_assert_uint_lt(s->len, s->cap);
                ssize_t n = recv(s->fd, s->buf + s->len, s->cap - s->len, MSG_DONTWAIT);
                if (n > 0) {
                        s->len += (size_t) n;
                        continue;
                }
                ck_assert_msg(n < 0 && errno == EAGAIN, "the subscribed connection ended: %zd", n);
                clock_gettime(CLOCK_MONOTONIC, &t);
                if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 >= (long) ms)
                        return false;
                poll(&(struct pollfd) { .fd = s->fd, .events = POLLIN }, 1, 1);
        }
}

const msgpack_object *fixture_notification(const fixture_reply *msg, char *method, size_t size) {
        const msgpack_object *o = &msg->u.data;
        if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 3 || o->via.array.ptr[0].via.u64 != 2 ||
            o->via.array.ptr[1].type != MSGPACK_OBJECT_STR)
                return NULL;
        snprintf(method, size, "%.*s", (int) o->via.array.ptr[1].via.str.size, o->via.array.ptr[1].via.str.ptr);
        const msgpack_object *p = &o->via.array.ptr[2];
        if (p->type == MSGPACK_OBJECT_ARRAY && p->via.array.size == 1)
                return &p->via.array.ptr[0];
        return p;
}

static int listen_loopback(int flags, int backlog, uint16_t *ret_port) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(sa);
        int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | flags, 0);
        ck_assert_int_ge(l, 0);
        ck_assert_int_eq(bind(l, (struct sockaddr *) &sa, sizeof(sa)), 0);
        ck_assert_int_eq(listen(l, backlog), 0);
        ck_assert_int_eq(getsockname(l, (struct sockaddr *) &sa, &len), 0);
        *ret_port = ntohs(sa.sin_port);
        return l;
}

int fixture_listen(uint16_t *ret_port) {
        return listen_loopback(SOCK_NONBLOCK, 8, ret_port);
}

int fixture_proxy_connect(fixture *f, const char *sandbox_id) {
        uint16_t port;
        int l = listen_loopback(0, 1, &port);
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = htons(port) };
        int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(c, 0);
        ck_assert_int_eq(connect(c, (struct sockaddr *) &sa, sizeof(sa)), 0);
        int a = accept4(l, NULL, NULL, SOCK_CLOEXEC);
        ck_assert_int_ge(a, 0);
        close(l);

        struct sockaddr_un su = { .sun_family = AF_UNIX };
        fixture_sandbox_path(f, sandbox_id, "proxy.sock", su.sun_path, sizeof(su.sun_path));
        int u = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(u, 0);
        ck_assert_msg(connect(u, (struct sockaddr *) &su, sizeof(su)) == 0, "connect %s: %s", su.sun_path, strerror(errno));
        ck_assert_int_eq(socket_send_fds(u, "F", 1, &a, 1, 0), 1);
        close(u);
        close(a);
        ck_assert_int_eq(fcntl(c, F_SETFL, O_NONBLOCK), 0);
        return c;
}

int fixture_proxy_connect_to(fixture *f, const char *sandbox_id, uint16_t port) {
        int p = fixture_proxy_connect(f, sandbox_id);
        char req[128];
        int n = snprintf(req, sizeof(req), "CONNECT 127.0.0.1:%u HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n\r\n", port, port);
        ck_assert_int_eq(write(p, req, (size_t) n), n);
        return p;
}

int fixture_broker_connect(fixture *f, const char *sandbox_id) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        fixture_sandbox_path(f, sandbox_id, "broker.sock", sa.sun_path, sizeof(sa.sun_path));
        int b = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        ck_assert_int_ge(b, 0);
        ck_assert_msg(connect(b, (struct sockaddr *) &sa, sizeof(sa)) == 0, "connect %s: %s", sa.sun_path, strerror(errno));
        return b;
}

typedef struct acceptor {
        int listener, fd;
} acceptor;

static bool accept_pred(void *arg) {
        acceptor *a = arg;
        a->fd = accept4(a->listener, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        return a->fd >= 0;
}

int fixture_accept(fixture *f, int listener, unsigned ms) {
        acceptor a = { .listener = listener, .fd = -1 };
        (void) fixture_run_until(f, ms, accept_pred, &a);
        return a.fd;
}

bool fixture_reader_pred(void *arg) {
        fixture_reader *r = arg;
        ssize_t n = -1;
        while (r->len + 1 < sizeof(r->buf) && (n = recv(r->fd, r->buf + r->len, sizeof(r->buf) - 1 - r->len, MSG_DONTWAIT)) > 0)
                r->len += (size_t) n;
        r->buf[r->len] = 0;
        if (n == 0)
                r->eof = true;
        return strstr(r->buf, r->needle) != NULL || r->eof;
}

bool fixture_read_until(fixture *f, fixture_reader *r, int fd, const char *needle, unsigned ms) {
        memset(r, 0, sizeof(*r));
        r->fd = fd;
        r->needle = needle;
        (void) fixture_run_until(f, ms, fixture_reader_pred, r);
        return strstr(r->buf, needle) != NULL;
}
