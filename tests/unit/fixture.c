/* The composed agentd of fixture.h. */
#include <check.h>
#include <dirent.h>
#include <signal.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
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

static void write_text(const char *path, const char *text) {
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
        write_text(path, text);
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
        write_text(path, text);
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

bool fixture_call_str(fixture *f, int fd, fixture_reply *r, const char *method, ...) {
        const char *kv[33] = {};
        va_list ap;
        va_start(ap, method);
        for (size_t i = 0; i < 32; i++) {
                kv[i] = va_arg(ap, const char *);
                if (!kv[i])
                        break;
                ck_assert_msg(i % 2 == 0 || kv[i], "key without a value");
        }
        va_end(ap);
        return fixture_call(f, fd, method, pack_str_pairs, kv, r);
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
