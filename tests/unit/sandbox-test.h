/* Helpers shared by the sandbox part's fixture tests (test-sandbox,
 * test-spawn, test-pool, test-freeze, test-workspace-jobs, test-laptop):
 * spawning through sandbox.spawn, reading sandbox.list, waiting, the state
 * directory and the audit records, a private cgroup v2 subtree. Everything
 * goes through RPC (fixture_call) or the file system. */
#pragma once

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fixture.h"
#include "proto.h"

typedef struct st_spawn {
        const char *task;         /* NULL: not sent ("default") */
        const char *workspace;    /* NULL: not sent */
        const char *const *argv;  /* NULL-terminated; NULL: not sent */
        size_t argc;              /* > 0: send exactly this many of argv (argv may hold NULLs then) */
} st_spawn;

static inline void st_pack_spawn(msgpack_packer *pk, void *arg) {
        const st_spawn *s = arg;
        size_t n = (s->task != NULL) + (s->workspace != NULL) + (s->argv != NULL);
        msgpack_pack_map(pk, n);
        if (s->task)
                mp_pack_kv_str(pk, "task", s->task);
        if (s->workspace)
                mp_pack_kv_str(pk, "workspace", s->workspace);
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

/* sandbox.spawn; true with its id in id[16], else false with r's code set
 * (r is freed on success, kept on failure for the caller to read and free). */
static inline bool st_spawn_call(fixture *f, int c, const st_spawn *s, char id[16], fixture_reply *r) {
        if (!fixture_call(f, c, "sandbox.spawn", st_pack_spawn, (void *) s, r))
                return false;
        ck_assert_ptr_nonnull(fixture_get_str(r->result, "id", id, 16));
        fixture_reply_free(r);
        return true;
}

/* A spawn that must succeed: `sh -c script` in the fixture's workspace. */
static inline void st_spawn_sh(fixture *f, int c, const char *task, const char *script, char id[16]) {
        const char *argv[] = { "/bin/sh", "-c", script, NULL };
        st_spawn s = { .task = task, .workspace = f->workspace, .argv = argv };
        fixture_reply r;
        bool ok = st_spawn_call(f, c, &s, id, &r);
        ck_assert_msg(ok, "spawn failed: %s: %s", r.code, r.message);
}

/* The sandbox.list entry of `id` copied into *ret (state, exit_code, signal);
 * false when the list does not have it. */
typedef struct st_entry {
        char state[32];
        long long exit_code, signal;
        bool ended;
} st_entry;

static inline bool st_list_find(fixture *f, int c, const char *id, st_entry *ret) {
        fixture_reply r;
        ck_assert(fixture_call(f, c, "sandbox.list", NULL, NULL, &r));
        ck_assert_int_eq(r.result->type, MSGPACK_OBJECT_ARRAY);
        bool found = false;
        for (uint32_t i = 0; i < r.result->via.array.size; i++) {
                const msgpack_object *e = &r.result->via.array.ptr[i];
                char buf[32];
                if (!fixture_get_str(e, "id", buf, sizeof(buf)) || strcmp(buf, id) != 0)
                        continue;
                found = true;
                if (ret) {
                        memset(ret, 0, sizeof(*ret));
                        fixture_get_str(e, "state", ret->state, sizeof(ret->state));
                        const msgpack_object *x = fixture_get(e, "exit_code"), *sg = fixture_get(e, "signal");
                        ret->ended = x != NULL;
                        if (x)
                                ret->exit_code = x->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ? x->via.i64 : (long long) x->via.u64;
                        if (sg)
                                ret->signal = (long long) sg->via.u64;
                }
        }
        fixture_reply_free(&r);
        return found;
}

static inline size_t st_list_count(fixture *f, int c) {
        fixture_reply r;
        ck_assert(fixture_call(f, c, "sandbox.list", NULL, NULL, &r));
        size_t n = r.result->via.array.size;
        fixture_reply_free(&r);
        return n;
}

/* sandbox.wait that must succeed: exit_code and signal. */
static inline void st_wait(fixture *f, int c, const char *id, long long *ret_code, long long *ret_signal) {
        fixture_reply r;
        bool ok = fixture_call_str(f, c, &r, "sandbox.wait", "id", id, NULL);
        ck_assert_msg(ok, "wait %s: %s: %s", id, r.code, r.message);
        const msgpack_object *x = fixture_get(r.result, "exit_code"), *s = fixture_get(r.result, "signal");
        ck_assert_ptr_nonnull(x);
        ck_assert_ptr_nonnull(s);
        if (ret_code)
                *ret_code = x->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ? x->via.i64 : (long long) x->via.u64;
        if (ret_signal)
                *ret_signal = (long long) s->via.u64;
        fixture_reply_free(&r);
}

/* <state dir>/sandboxes/<id>[/name] */
static inline void st_sandbox_path(const fixture *f, const char *id, const char *name, char *buf, size_t size) {
        snprintf(buf, size, "%s/agentd/sandboxes/%s%s%s", f->state_home, id, name ? "/" : "", name ? name : "");
}

/* The whole of a small file, NUL-terminated (caller frees), or NULL. */
static char *st_read_file(const char *path) {
        FILE *fp = fopen(path, "re");
        if (!fp)
                return NULL;
        char *buf = calloc(1, 65536);
        size_t n = buf ? fread(buf, 1, 65535, fp) : 0;
        (void) n;
        fclose(fp);
        return buf;
}

static inline void st_write_file(const char *path, const char *text) {
        FILE *fp = fopen(path, "we");
        ck_assert_msg(fp != NULL, "open %s: %s", path, strerror(errno));
        ck_assert_int_ge(fputs(text, fp), 0);
        ck_assert_int_eq(fclose(fp), 0);
}

/* meta.json's "state" of the sandbox contains "state":"<want>". */
static inline bool st_meta_state_is(const fixture *f, const char *id, const char *want) {
        char path[PATH_MAX], needle[64];
        st_sandbox_path(f, id, "meta.json", path, sizeof(path));
        char *text = st_read_file(path);
        snprintf(needle, sizeof(needle), "\"state\":\"%s\"", want);
        bool yes = text && strstr(text, needle);
        free(text);
        return yes;
}

static inline size_t st_count_entries(const char *dir, const char *prefix) {
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

/* An audit record of `type` whose fields have method=`method` and outcome=`outcome`. */
static inline bool st_audit_has_rpc(fixture *f, int c, const char *method, const char *outcome) {
        fixture_reply r;
        ck_assert(fixture_call(f, c, "audit.query", NULL, NULL, &r));
        bool found = false;
        for (uint32_t i = 0; r.result->type == MSGPACK_OBJECT_ARRAY && i < r.result->via.array.size; i++) {
                const msgpack_object *rec = &r.result->via.array.ptr[i];
                char type[32], m[64], o[64];
                const msgpack_object *fields = fixture_get(rec, "fields");
                if (fixture_get_str(rec, "type", type, sizeof(type)) && strcmp(type, "rpc") == 0 &&
                    fixture_get_str(fields, "method", m, sizeof(m)) && strcmp(m, method) == 0 &&
                    fixture_get_str(fields, "outcome", o, sizeof(o)) && strcmp(o, outcome) == 0)
                        found = true;
        }
        fixture_reply_free(&r);
        return found;
}

/* A private cgroup v2 subtree for the fixture's daemon ([Daemon] CgroupPath=):
 * empty when there is no writable cgroup2 mount. st_cgroup_done() moves this
 * process back to the mount's root and removes the subtree. */
static char st_cgroup_mnt[PATH_MAX];

/* Removes cg's child cgroups (one level: supervisor, sb-*) and cg. */
static inline void st_cgroup_rmdir_tree(const char *cg) {
        char path[PATH_MAX + 300];
        DIR *d = opendir(cg);
        struct dirent *de;
        while (d && (de = readdir(d)))
                if (de->d_type == DT_DIR && de->d_name[0] != '.') {
                        snprintf(path, sizeof(path), "%s/%s", cg, de->d_name);
                        (void) rmdir(path);
                }
        if (d)
                closedir(d);
        (void) rmdir(cg);
}

/* Subtrees a failed test left (a failed assertion ends its process). */
static inline void st_cgroup_sweep(void) {
        DIR *d = opendir(st_cgroup_mnt);
        struct dirent *de;
        while (d && (de = readdir(d))) {
                int pid;
                char path[PATH_MAX + 300];
                if (sscanf(de->d_name, "agentd-unit-%d", &pid) != 1 || kill(pid, 0) == 0 || errno != ESRCH)
                        continue;
                snprintf(path, sizeof(path), "%s/%s", st_cgroup_mnt, de->d_name);
                st_cgroup_rmdir_tree(path);
        }
        if (d)
                closedir(d);
}

static inline bool st_cgroup_make(char *ret, size_t size) {
        FILE *fp = fopen("/proc/self/mountinfo", "re");
        char line[4096];
        ret[0] = 0;
        st_cgroup_mnt[0] = 0;
        while (fp && fgets(line, sizeof(line), fp)) {
                char *sep = strstr(line, " - ");
                if (!sep || strncmp(sep + 3, "cgroup2 ", 8) != 0)
                        continue;
                char *p = line;
                for (int i = 0; i < 4 && p; i++)
                        if ((p = strchr(p, ' ')))
                                p++;
                char *end = p ? strchr(p, ' ') : NULL;
                if (end) {
                        snprintf(st_cgroup_mnt, sizeof(st_cgroup_mnt), "%.*s", (int) (end - p), p);
                        break;
                }
        }
        if (fp)
                fclose(fp);
        if (!st_cgroup_mnt[0])
                return false;
        st_cgroup_sweep();
        snprintf(ret, size, "%s/agentd-unit-%d", st_cgroup_mnt, (int) getpid());
        if (mkdir(ret, 0755) < 0 && errno != EEXIST) {
                ret[0] = 0;
                return false;
        }
        return true;
}

static inline void st_cgroup_done(const char *cg) {
        if (!cg || !cg[0])
                return;
        char path[PATH_MAX + 32], pid[32];
        snprintf(path, sizeof(path), "%s/cgroup.procs", st_cgroup_mnt);
        snprintf(pid, sizeof(pid), "%d", (int) getpid());
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
                (void) !write(fd, pid, strlen(pid));
                close(fd);
        }
        st_cgroup_rmdir_tree(cg);
}
