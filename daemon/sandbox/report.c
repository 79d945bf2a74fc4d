/* sandbox.report: one sandbox's story from prompt to diff, assembled from the
 * audit chain (verified, off the loop) and the sandbox record, plus the small
 * hooks that put what the story needs into the audit records where they are
 * written (who asked, environment names, resource use at exit). */
#include "report.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/openat2.h>

#include "audit/auditlog.h"
#include "audit/report-annotate.h"
#include "core/log.h"
#include "macro.h"
#include "policy.h"
#include "sandbox.h"
#include "core/server.h"
#include "fd.h"
#include "workspace.h"

/* Bounds: a report is for a person; the audit records it names stay complete. */
#define REPORT_LAYER_ENTRIES_MAX 20000u  /* the exit path walks the layer on the loop: keep it short */
#define REPORT_HASH_FILES_MAX 5000u

/* ---- hooks where records are written (the rpc and peer ones: audit/report-annotate.c) ---- */

static void add_str(json_object *o, const char *k, const char *v) {
        json_object_object_add(o, k, v ? json_object_new_string(v) : NULL);
}

void report_annotate_spawn(json_object *ev, const sandbox *s, const char *const *env_names, const task_policy *p) {
        if (s->spawn_call)
                report_annotate_peer(ev, s->spawn_call->conn);
        /* Names only: values may be secrets. */
        json_object *names = json_object_new_array();
        for (size_t i = 0; p && p->environment && p->environment[i]; i++) {
                const char *eq = strchr(p->environment[i], '=');
                json_object_array_add(names, json_object_new_string_len(p->environment[i],
                                                                        eq ? (int) (eq - p->environment[i]) : (int) strlen(p->environment[i])));
        }
        for (size_t i = 0; env_names && env_names[i]; i++)
                if (strlen(env_names[i]) <= 256)
                        json_object_array_add(names, json_object_new_string(env_names[i]));
        json_object_object_add(ev, "env_names", names);
        json_object_object_add(ev, "tty", json_object_new_boolean(s->tty));
}

static int read_u64_key(const char *dir, const char *file, const char *key, uint64_t *ret) {
        char p[PATH_MAX], buf[2048];
        snprintf(p, sizeof(p), "%s/%s", dir, file);
        _cleanup_close_ int fd = open(p, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        if (n <= 0)
                return n < 0 ? -errno : -ENODATA;
        buf[n] = 0;
        if (!key)
                return sscanf(buf, "%" SCNu64, ret) == 1 ? 0 : -EINVAL;
        size_t kl = strlen(key);
        for (char *l = buf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
                if (strncmp(l, key, kl) == 0 && l[kl] == ' ')
                        return sscanf(l + kl + 1, "%" SCNu64, ret) == 1 ? 0 : -EINVAL;
        return -ENOENT;
}

/* Bytes of regular files in a tree, bounded in entries. */
static void tree_bytes(int dfd, unsigned depth, uint64_t *bytes, unsigned *entries) {
        DIR *d = fdopendir(dfd);
        if (!d) {
                close(dfd);
                return;
        }
        struct dirent *de;
        while ((de = readdir(d)) && *entries < REPORT_LAYER_ENTRIES_MAX) {
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                struct stat st;
                if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        continue;
                (*entries)++;
                if (S_ISREG(st.st_mode))
                        *bytes += (uint64_t) st.st_size;
                else if (S_ISDIR(st.st_mode) && depth < 64) {
                        int fd = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
                        if (fd >= 0)
                                tree_bytes(fd, depth + 1, bytes, entries);
                }
        }
        closedir(d);
}

json_object *report_usage(const sandbox *s) {
        json_object *u = json_object_new_object();
        uint64_t v;
        if (s->cgroup) {
                if (read_u64_key(s->cgroup, "cpu.stat", "usage_usec", &v) == 0)
                        json_object_object_add(u, "cpu_usec", json_object_new_int64((int64_t) v));
                if (read_u64_key(s->cgroup, "cpu.stat", "user_usec", &v) == 0)
                        json_object_object_add(u, "cpu_user_usec", json_object_new_int64((int64_t) v));
                if (read_u64_key(s->cgroup, "cpu.stat", "system_usec", &v) == 0)
                        json_object_object_add(u, "cpu_system_usec", json_object_new_int64((int64_t) v));
                if (read_u64_key(s->cgroup, "memory.peak", NULL, &v) == 0)
                        json_object_object_add(u, "memory_peak_bytes", json_object_new_int64((int64_t) v));
                if (read_u64_key(s->cgroup, "pids.peak", NULL, &v) == 0)
                        json_object_object_add(u, "pids_peak", json_object_new_int64((int64_t) v));
        }
        if (s->workspace_mode == WORKSPACE_OVERLAY && s->dir) {
                char upper[PATH_MAX];
                snprintf(upper, sizeof(upper), "%s/upper", s->dir);
                int fd = open(upper, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
                if (fd >= 0) {
                        uint64_t bytes = 0;
                        unsigned entries = 0;
                        tree_bytes(fd, 0, &bytes, &entries);
                        json_object_object_add(u, "layer_bytes", json_object_new_int64((int64_t) bytes));
                        json_object_object_add(u, "layer_entries", json_object_new_int64(entries));
                        if (entries >= REPORT_LAYER_ENTRIES_MAX)
                                json_object_object_add(u, "layer_counted_partly", json_object_new_boolean(true));
                }
        }
        return u;
}

/* ---- assembling a report (worker thread) ---- */

typedef struct report_job {
        uv_work_t work;
        manager *m;
        rpc_call *call;                 /* NULL: write to snapshot_path */
        char *snapshot_path;
        audit_snapshot *snap;
        /* The sandbox record, copied on the loop. */
        char *id, *task, *state, *workspace, *upper, *dir;
        bool live, discarded, overlay;
        uint64_t started_at;
        int exit_code, exit_signal;
        bool have_exit;
        char *end_reason;
        /* Filled by the worker. */
        json_object *accessors;         /* object: accessor -> true, tokens of this sandbox */
        json_object *report;
        int error;
        char *error_message;
} report_job;

static void job_free(report_job *j) {
        if (!j)
                return;
        if (j->call)
                rpc_call_free(j->call);
        audit_snapshot_free(j->snap);
        free(j->snapshot_path);
        free(j->id);
        free(j->task);
        free(j->state);
        free(j->workspace);
        free(j->upper);
        free(j->dir);
        free(j->end_reason);
        json_object_put(j->accessors);
        json_object_put(j->report);
        free(j->error_message);
        free(j);
}

static const char *fstr(json_object *o, const char *k) {
        json_object *v;
        return json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

static json_object *fget(json_object *o, const char *k) {
        json_object *v;
        return json_object_object_get_ex(o, k, &v) ? v : NULL;
}

static bool str_in_array(json_object *a, const char *s) {
        if (!a || !json_object_is_type(a, json_type_array))
                return false;
        for (size_t i = 0; i < json_object_array_length(a); i++)
                if (streq(json_object_get_string(json_object_array_get_idx(a, i)), s))
                        return true;
        return false;
}

/* Which records belong to the story: the sandbox's own, host requests about it,
 * revocations that named it, and the revocations of its tokens (by accessor). */
static bool select_record(json_object *rec, void *userdata) {
        report_job *j = userdata;
        const char *type = fstr(rec, "type"), *sb = fstr(rec, "sandbox");
        json_object *f = fget(rec, "fields");
        if (!type || !f)
                return false;
        if (sb && streq(sb, j->id)) {
                const char *acc = fstr(f, "accessor");
                if (streq(type, "token.issued") && acc)
                        json_object_object_add(j->accessors, acc, json_object_new_boolean(true));
                return true;
        }
        if (sb)
                return false;
        const char *acc = fstr(f, "accessor"), *target = fstr(f, "target");
        if (acc && fget(j->accessors, acc))
                return true;
        if (target && streq(target, j->id))
                return true;
        return streq(type, "revoke") && str_in_array(fget(f, "sandboxes"), j->id);
}

/* The layer of a running sandbox changes under us: a file seen by the diff
 * may be a FIFO or a device by now, or a directory on its path a symlink out
 * of the layer. Only a regular file below the layer is read, and opening
 * never waits (a FIFO's open blocked this thread, and agentd's exit, forever). */
static int sha256_file(int dfd, const char *path, char hex[65]) {
        struct open_how how = {
                .flags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY,
                .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
        };
        _cleanup_close_ int fd = (int) syscall(SYS_openat2, dfd, path, &how, sizeof(how));
        if (fd < 0)
                return -errno;
        int r = fd_check_regular(fd);
        if (r < 0)
                return r;
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
                EVP_MD_CTX_free(ctx);
                return -ENOMEM;
        }
        char buf[65536];
        ssize_t n;
        while ((n = read(fd, buf, sizeof(buf))) > 0)
                if (EVP_DigestUpdate(ctx, buf, (size_t) n) != 1) {
                        r = -EIO;
                        break;
                }
        unsigned char dg[32];
        unsigned dl = 0;
        if (n < 0)
                r = -errno;
        if (r == 0 && EVP_DigestFinal_ex(ctx, dg, &dl) != 1)
                r = -EIO;
        EVP_MD_CTX_free(ctx);
        if (r < 0)
                return r;
        for (unsigned i = 0; i < 32; i++)
                sprintf(hex + 2 * i, "%02x", dg[i]);
        return 0;
}

/* The walk of the change layer runs in a worker; bounded like sandbox.diff's. */
#define REPORT_LAYER_WALK_SEC 120

/* What is in the change layer now, with a SHA-256 of each changed file. */
static json_object *layer_changes(report_job *j) {
        json_object *c = json_object_new_object();
        if (!j->live) {
                add_str(c, "layer", "unknown: no sandbox record");
                return c;
        }
        if (!j->overlay) {
                add_str(c, "layer", "none");
                return c;
        }
        if (j->discarded) {
                add_str(c, "layer", "discarded");
                return c;
        }
        ws_changes ch = { 0 };
        _cleanup_error_ agentd_error why = {};
        ws_budget budget = { .deadline_ns = ws_now_ns() + (int64_t) REPORT_LAYER_WALK_SEC * 1000000000 };
        int r = workspace_diff(j->workspace, j->upper, &budget, &ch, &why);
        if (r < 0) {
                add_str(c, "layer", "unreadable");
                add_str(c, "error", error_reason(&why, r));
                return c;
        }
        add_str(c, "layer", "present");
        _cleanup_close_ int up = open(j->upper, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        json_object *files = json_object_new_array();
        for (size_t i = 0; i < ch.n; i++) {
                json_object *f = json_object_new_object();
                char hex[65];
                add_str(f, "path", ch.v[i].path);
                add_str(f, "change", ws_change_kind_to_string(ch.v[i].change));
                add_str(f, "type", ch.v[i].type == 'f' ? "file" : ch.v[i].type == 'd' ? "directory"
                                   : ch.v[i].type == 'l' ? "symlink" : "other");
                json_object_object_add(f, "guarded", json_object_new_boolean(ch.v[i].guarded));
                if (ch.v[i].type == 'f' && ch.v[i].change != WS_DELETED && i < REPORT_HASH_FILES_MAX && up >= 0 &&
                    sha256_file(up, ch.v[i].path, hex) == 0)
                        add_str(f, "sha256", hex);
                json_object_array_add(files, f);
        }
        json_object_object_add(c, "files", files);
        ws_changes_free(&ch);
        return c;
}

static int cmp_str(const void *a, const void *b) {
        return strcmp(json_object_get_string(*(json_object *const *) a), json_object_get_string(*(json_object *const *) b));
}

/* The forensic snapshots credentials.revoke took of this sandbox (directories). */
static json_object *snapshot_dirs(report_job *j) {
        json_object *a = json_object_new_array();
        char p[PATH_MAX];
        if (!j->dir)
                return a;
        snprintf(p, sizeof(p), "%s/snapshots", j->dir);
        DIR *d = opendir(p);
        struct dirent *de;
        while (d && (de = readdir(d)))
                if (de->d_name[0] != '.') {
                        char full[PATH_MAX * 2];
                        snprintf(full, sizeof(full), "%s/%s", p, de->d_name);
                        json_object_array_add(a, json_object_new_string(full));
                }
        if (d)
                closedir(d);
        json_object_array_sort(a, cmp_str);
        return a;
}

static json_object *copy_of(json_object *f, const char *k) {
        json_object *v = fget(f, k);
        return v ? json_object_get(v) : NULL;
}

/* Copies fields of f into dst: { name in dst, name in f } pairs. */
static void copy_fields(json_object *dst, json_object *f, const char *const (*names)[2], size_t n) {
        for (size_t i = 0; i < n; i++)
                json_object_object_add(dst, names[i][0], copy_of(f, names[i][1]));
}
#define COPY_FIELDS(dst, f, names) copy_fields(dst, f, names, ELEMENTSOF(names))

static json_object *peer_of(json_object *f) {
        json_object *p = json_object_new_object();
        static const char *const keys[] = { "peer_pid", "peer_uid", "peer_exe", "peer_comm" };
        for (size_t i = 0; i < ELEMENTSOF(keys); i++)
                if (fget(f, keys[i]))
                        json_object_object_add(p, keys[i] + 5, copy_of(f, keys[i]));
        return p;
}

static json_object *entry_base(json_object *rec) {
        json_object *e = json_object_new_object();
        json_object_object_add(e, "seq", copy_of(rec, "seq"));
        json_object_object_add(e, "time", copy_of(rec, "time"));
        return e;
}

static char *summary(const char *type, json_object *f) {
        char *s = NULL;
        const char *st;
        if (streq(type, "sandbox.spawn"))
                (void) !asprintf(&s, "spawned task %s (policy %.12s…) by %s", fstr(f, "task") ?: "?", fstr(f, "policy_sha256") ?: "?",
                                 fstr(f, "peer_comm") ?: "an unknown peer");
        else if (streq(type, "sandbox.exit"))
                (void) !asprintf(&s, "%s: exit code %d, signal %d%s%s", fstr(f, "state") ?: "ended",
                                 json_object_get_int(fget(f, "exit_code")), json_object_get_int(fget(f, "signal")),
                                 fstr(f, "reason") ? ", " : "", fstr(f, "reason") ?: "");
        else if (streq(type, "egress"))
                (void) !asprintf(&s, "egress %s:%d %s%s%s", fstr(f, "host") ?: "?", json_object_get_int(fget(f, "port")),
                                 fstr(f, "decision") ?: "?", fstr(f, "reason") && *fstr(f, "reason") ? ": " : "",
                                 fstr(f, "reason") && *fstr(f, "reason") ? fstr(f, "reason") : "");
        else if (streq(type, "egress.closed"))
                (void) !asprintf(&s, "connection to %s:%d closed (%" PRId64 " bytes up, %" PRId64 " down)", fstr(f, "host") ?: "?",
                                 json_object_get_int(fget(f, "port")), json_object_get_int64(fget(f, "bytes_up")),
                                 json_object_get_int64(fget(f, "bytes_down")));
        else if (streq(type, "token.issued"))
                (void) !asprintf(&s, "token issued: accessor %s, ttl %" PRId64 "s", fstr(f, "accessor") ?: "?",
                                 json_object_get_int64(fget(f, "ttl")));
        else if (streq(type, "token.revoked"))
                (void) !asprintf(&s, "token revoked: accessor %s", fstr(f, "accessor") ?: "?");
        else if (streq(type, "sandbox.promote"))
                (void) !asprintf(&s, "promoted %d file(s) into the workspace, %zu conflict(s), by %s",
                                 fget(f, "promoted_sha256") ? json_object_object_length(fget(f, "promoted_sha256")) : 0,
                                 fget(f, "conflicts") ? json_object_array_length(fget(f, "conflicts")) : 0,
                                 fstr(f, "peer_comm") ?: "an unknown peer");
        else if (streq(type, "sandbox.discard"))
                (void) !asprintf(&s, "change layer discarded by %s", fstr(f, "peer_comm") ?: "an unknown peer");
        else if (streq(type, "revoke"))
                (void) !asprintf(&s, "incident revocation: %d frozen, %d killed, %d tokens revoked, %d pending",
                                 json_object_get_int(fget(f, "frozen")), json_object_get_int(fget(f, "killed")),
                                 json_object_get_int(fget(f, "tokens_revoked")), json_object_get_int(fget(f, "tokens_pending")));
        else if (streq(type, "alert"))
                (void) !asprintf(&s, "alert: %s", fstr(f, "rule") ?: "?");
        else if (streq(type, "rpc"))
                (void) !asprintf(&s, "request %s from %s (pid %d): %s", (st = fstr(f, "method")) ? st : "?",
                                 fstr(f, "peer_comm") ?: "inside the sandbox", json_object_get_int(fget(f, "peer_pid")),
                                 fstr(f, "outcome") ?: "?");
        else
                s = strdup(type);
        return s;
}

typedef struct sections {
        json_object *request, *policy, *argv, *env_names, *exit, *usage;
        json_object *egress, *tokens, *approvals, *incidents, *promotions, *discarded, *requests, *timeline;
        json_object *seqs, *problems;
} sections;

static void on_token(sections *x, const char *type, json_object *rec, json_object *f) {
        const char *acc = fstr(f, "accessor");
        if (!acc)
                return;
        json_object *t = fget(x->tokens, acc);
        if (!t) {
                t = json_object_new_object();
                add_str(t, "accessor", acc);
                json_object_object_add(t, "issued", json_object_new_array());
                add_str(t, "status", "live");
                json_object_object_add(x->tokens, acc, t);
        }
        if (streq(type, "token.issued")) {
                json_object_array_add(fget(t, "issued"), copy_of(rec, "time"));
                json_object_object_add(t, "policies", copy_of(f, "policies"));
                json_object_object_add(t, "ttl", copy_of(f, "ttl"));
        } else {
                json_object_object_add(t, "revoked_at", copy_of(rec, "time"));
                add_str(t, "status", "revoked");
        }
}

static const char *const policy_fields[][2] = {
        { "task", "task" }, { "sha256", "policy_sha256" }, { "source", "policy_source" }, { "capabilities", "capabilities" },
};
static const char *const exit_fields[][2] = {
        { "state", "state" }, { "exit_code", "exit_code" }, { "signal", "signal" }, { "reason", "reason" },
};

static void on_record(sections *x, json_object *rec) {
        const char *type = fstr(rec, "type") ?: "?";
        json_object *f = fget(rec, "fields");
        json_object *v = fget(rec, "verified");
        bool verified = v && json_object_get_boolean(v);

        json_object_array_add(x->seqs, copy_of(rec, "seq"));
        if (!verified) {
                json_object *p = entry_base(rec);
                add_str(p, "type", type);
                json_object_object_add(p, "problem", copy_of(rec, "problem"));
                json_object_array_add(x->problems, p);
        }
        json_object *t = entry_base(rec);
        add_str(t, "type", type);
        _cleanup_free_ char *sum = summary(type, f);
        add_str(t, "summary", sum);
        json_object_object_add(t, "verified", json_object_new_boolean(verified));
        json_object_array_add(x->timeline, t);

        if (streq(type, "sandbox.spawn")) {
                json_object_put(x->request);
                x->request = peer_of(f);
                json_object_object_add(x->request, "time", copy_of(rec, "time"));
                json_object_object_add(x->request, "seq", copy_of(rec, "seq"));
                json_object_put(x->policy);
                x->policy = json_object_new_object();
                COPY_FIELDS(x->policy, f, policy_fields);
                json_object_put(x->argv);
                x->argv = copy_of(f, "argv");
                json_object_put(x->env_names);
                x->env_names = copy_of(f, "env_names");
        } else if (streq(type, "sandbox.exit")) {
                json_object_put(x->exit);
                x->exit = entry_base(rec);
                COPY_FIELDS(x->exit, f, exit_fields);
                json_object_put(x->usage);
                x->usage = copy_of(f, "usage");
        } else if (streq(type, "egress")) {
                json_object *e = entry_base(rec);
                json_object_object_add(e, "host", copy_of(f, "host"));
                json_object_object_add(e, "port", copy_of(f, "port"));
                json_object_object_add(e, "decision", copy_of(f, "decision"));
                if (fget(f, "reason"))
                        json_object_object_add(e, "reason", copy_of(f, "reason"));
                json_object_array_add(x->egress, e);
        } else if (streq(type, "egress.closed")) {
                /* Bytes belong to the newest allowed connection to that host and port still without them. */
                for (size_t i = json_object_array_length(x->egress); i-- > 0;) {
                        json_object *e = json_object_array_get_idx(x->egress, i);
                        if (!fget(e, "bytes_up") && streq(fstr(e, "decision") ?: "", "allowed") &&
                            streq(fstr(e, "host") ?: "", fstr(f, "host") ?: "") &&
                            json_object_get_int(fget(e, "port")) == json_object_get_int(fget(f, "port"))) {
                                json_object_object_add(e, "bytes_up", copy_of(f, "bytes_up"));
                                json_object_object_add(e, "bytes_down", copy_of(f, "bytes_down"));
                                break;
                        }
                }
        } else if (streq(type, "token.issued") || streq(type, "token.revoked")) {
                on_token(x, type, rec, f);
        } else if (strncmp(type, "approval", 8) == 0 || streq(type, "revoke") || streq(type, "alert") ||
                   streq(type, "sandbox.freeze")) {
                json_object *e = entry_base(rec);
                add_str(e, "type", type);
                json_object_object_add(e, "fields", json_object_get(f));
                json_object_array_add(strncmp(type, "approval", 8) == 0 ? x->approvals : x->incidents, e);
        } else if (streq(type, "sandbox.promote")) {
                json_object *e = entry_base(rec);
                json_object_object_add(e, "by", peer_of(f));
                json_object_object_add(e, "files", copy_of(f, "promoted_sha256"));
                json_object_object_add(e, "conflicts", copy_of(f, "conflicts"));
                json_object_object_add(e, "guarded_skipped", copy_of(f, "guarded_skipped"));
                json_object_array_add(x->promotions, e);
        } else if (streq(type, "sandbox.discard")) {
                json_object_put(x->discarded);
                x->discarded = entry_base(rec);
                json_object_object_add(x->discarded, "by", peer_of(f));
        } else if (streq(type, "rpc")) {
                json_object *e = entry_base(rec);
                json_object_object_add(e, "method", copy_of(f, "method"));
                json_object_object_add(e, "outcome", copy_of(f, "outcome"));
                json_object_object_add(e, "by", peer_of(f));
                json_object_array_add(x->requests, e);
        }
}

static void build_report(report_job *j, audit_selection *sel) {
        sections x = {
                .egress = json_object_new_array(), .tokens = json_object_new_object(), .approvals = json_object_new_array(),
                .incidents = json_object_new_array(), .promotions = json_object_new_array(), .requests = json_object_new_array(),
                .timeline = json_object_new_array(), .seqs = json_object_new_array(), .problems = json_object_new_array(),
        };
        for (size_t i = 0; i < json_object_array_length(sel->selected); i++)
                on_record(&x, json_object_array_get_idx(sel->selected, i));
        /* A token without a recorded revocation: pending if the sandbox ended. */
        json_object *tokens = json_object_new_array();
        json_object_object_foreach(x.tokens, acc, t) {
                (void) acc;
                if (streq(fstr(t, "status") ?: "", "live") && (j->have_exit || !j->live))
                        add_str(t, "status", "pending");
                json_object_array_add(tokens, json_object_get(t));
        }
        json_object_put(x.tokens);

        json_object *r = json_object_new_object(), *ver = json_object_new_object();
        bool ok = sel->ok && json_object_array_length(x.problems) == 0 && json_object_array_length(x.seqs) > 0;
        json_object_object_add(ver, "ok", json_object_new_boolean(ok));
        json_object_object_add(ver, "chain_ok", json_object_new_boolean(sel->ok));
        json_object_object_add(ver, "chain_records", json_object_new_int64((int64_t) sel->records));
        json_object_object_add(ver, "chain_last_seq", json_object_new_int64((int64_t) sel->last_seq));
        if (!sel->ok) {
                json_object_object_add(ver, "first_bad_seq", json_object_new_int64((int64_t) sel->first_bad_seq));
                add_str(ver, "reason", sel->reason);
        }
        json_object_object_add(ver, "seqs", x.seqs);
        json_object_object_add(ver, "problems", x.problems);

        add_str(r, "id", j->id);
        add_str(r, "task", j->task);
        add_str(r, "state", j->state);
        add_str(r, "workspace", j->workspace);
        json_object_object_add(r, "started_at", j->started_at ? json_object_new_int64((int64_t) j->started_at) : NULL);
        json_object_object_add(r, "sandbox_record", json_object_new_boolean(j->live));
        json_object_object_add(r, "verification", ver);
        json_object_object_add(r, "requested_by", x.request);
        json_object_object_add(r, "policy", x.policy);
        json_object_object_add(r, "argv", x.argv);
        json_object_object_add(r, "env_names", x.env_names);
        if (!x.exit && j->have_exit) {
                /* Ended, but the record of it is not in the log (a crash): say what the sandbox record says. */
                x.exit = json_object_new_object();
                json_object_object_add(x.exit, "exit_code", json_object_new_int(j->exit_code));
                json_object_object_add(x.exit, "signal", json_object_new_int(j->exit_signal));
                add_str(x.exit, "reason", j->end_reason);
                add_str(x.exit, "source", "sandbox record (no audit record)");
        }
        json_object_object_add(r, "exit", x.exit);
        json_object_object_add(r, "usage", x.usage);
        json_object_object_add(r, "egress", x.egress);
        json_object_object_add(r, "tokens", tokens);
        json_object_object_add(r, "approvals", x.approvals);
        json_object_object_add(r, "incidents", x.incidents);
        json_object_object_add(r, "snapshots", snapshot_dirs(j));
        json_object_object_add(r, "changes", layer_changes(j));
        json_object_object_add(r, "promotions", x.promotions);
        json_object_object_add(r, "discarded", x.discarded);
        json_object_object_add(r, "requests", x.requests);
        json_object_object_add(r, "timeline", x.timeline);
        j->report = r;
}

static void report_work(uv_work_t *w) {
        report_job *j = container_of(w, report_job, work);
        audit_selection sel = {};
        j->accessors = json_object_new_object();
        int r = audit_snapshot_select(j->snap, select_record, j, &sel);
        if (r < 0) {
                j->error = r;
                return;
        }
        if (json_object_array_length(sel.selected) == 0 && !j->live) {
                j->error = -ENOENT;
                audit_selection_done(&sel);
                return;
        }
        build_report(j, &sel);
        audit_selection_done(&sel);
        if (j->snapshot_path) {
                char p[PATH_MAX];
                snprintf(p, sizeof(p), "%s/report.json", j->snapshot_path);
                if (json_object_to_file_ext(p, j->report, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE) < 0)
                        j->error = -EIO;
                else
                        (void) chmod(p, 0600);
        }
}

static void pack_report(msgpack_packer *pk, void *userdata) {
        auditlog_pack_json(pk, userdata);
}

static void report_done(uv_work_t *w, int status) {
        report_job *j = container_of(w, report_job, work);
        if (j->snapshot_path) {
                if (status < 0 || j->error < 0)
                        log_warning("sandbox %s: cannot write the report into %s: %s", j->id, j->snapshot_path,
                                    strerror(-(status < 0 ? status : j->error)));
        } else if (status < 0)
                rpc_call_error(TAKE_PTR(j->call), RPC_E_INTERNAL, "the report was cancelled");
        else if (j->error == -ENOENT)
                rpc_call_error(TAKE_PTR(j->call), RPC_E_NOT_FOUND, "no sandbox and no audit records with that id");
        else if (j->error < 0) {
                char msg[256];
                snprintf(msg, sizeof(msg), "reading the audit log failed: %s", strerror(-j->error));
                rpc_call_error(TAKE_PTR(j->call), RPC_E_INTERNAL, msg);
        } else
                rpc_call_reply(TAKE_PTR(j->call), pack_report, j->report);
        job_free(j);
}

static bool id_valid(const char *id) {
        if (!id || !*id || strlen(id) > 64)
                return false;
        for (const char *p = id; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
                        return false;
        return true;
}

static int job_new(manager *m, const char *id, report_job **ret) {
        report_job *j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        j->m = m;
        j->id = strdup(id);
        int r = auditlog_snapshot(m, &j->snap);
        if (!j->id || r < 0) {
                job_free(j);
                return r < 0 ? r : -ENOMEM;
        }
        sandbox *s = sandbox_find(m, id);
        if (s) {
                char upper[PATH_MAX];
                snprintf(upper, sizeof(upper), "%s/upper", s->dir);
                j->live = true;
                j->task = strdup(s->task);
                j->state = strdup(sandbox_state_to_string(s->state));
                j->workspace = s->workspace ? strdup(s->workspace) : NULL;
                j->upper = strdup(upper);
                j->dir = strdup(s->dir);
                j->overlay = s->workspace_mode == WORKSPACE_OVERLAY;
                j->discarded = s->discarded;
                j->started_at = s->started_at;
                j->have_exit = sandbox_ended(s);
                j->exit_code = s->exit_code;
                j->exit_signal = s->exit_signal;
                j->end_reason = s->end_reason ? strdup(s->end_reason) : NULL;
        }
        *ret = j;
        return 0;
}

int rpc_sandbox_report(rpc_ctx *ctx, const rpc_sandbox_report_params *p, rpc_error *err) {
        const char *id = p->id;
        if (!id_valid(id)) {
                rpc_error_set(err, RPC_E_INVALID_PARAMS, "id: not a sandbox id");
                return -EINVAL;
        }
        report_job *j = NULL;
        int r = job_new(ctx->m, id, &j);
        if (r == -ENODEV) {
                rpc_error_set(err, RPC_E_BACKEND_UNAVAILABLE, "audit log %s", auditlog_state(ctx->m));
                return r;
        }
        if (r < 0) {
                rpc_error_set(err, RPC_E_INTERNAL, "cannot read the audit log: %s", strerror(-r));
                return r;
        }
        j->call = rpc_ctx_defer(ctx);
        if (!j->call) {
                job_free(j);
                return -ENOMEM;
        }
        /* Scanning the whole chain is disk work: never on the loop. */
        r = uv_queue_work(ctx->m->loop, &j->work, report_work, report_done);
        if (r < 0) {
                j->call = NULL; /* dispatch answers through ctx->async */
                job_free(j);
                rpc_error_set(err, RPC_E_INTERNAL, "cannot queue the report: %s", uv_strerror(r));
                return r;
        }
        return 0;
}

void report_snapshot(manager *m, const sandbox *s, const char *snapshot_dir) {
        report_job *j = NULL;
        if (!snapshot_dir || job_new(m, s->id, &j) < 0)
                return;
        j->snapshot_path = strdup(snapshot_dir);
        if (!j->snapshot_path || uv_queue_work(m->loop, &j->work, report_work, report_done) < 0) {
                log_warning("sandbox %s: cannot queue its report for the snapshot", s->id);
                job_free(j);
        }
}
