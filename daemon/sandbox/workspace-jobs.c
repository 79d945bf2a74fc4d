/* The workspace jobs: the walks behind sandbox.diff / sandbox.promote /
 * sandbox.discard (rpc/rpc-workspace.c) and the change list of an incident
 * snapshot. They run on libuv's thread pool (uv_queue_work) with a time limit,
 * never on the loop: a tree of any size, or a sandbox that plants FIFOs,
 * cannot delay ping, revoke or the watchdog. The worker sees only copies it
 * owns; the sandbox record is referenced (never freed under it) and marked
 * busy through sandbox_review_begin(), so a discard cannot run under a
 * promote. The reply is sent from the after-work callback, on the loop. A
 * running sandbox is frozen (cgroup.freeze) while a diff reads its layer and
 * thawed after. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "audit/auditlog.h"
#include "audit/report-annotate.h"
#include "core/log.h"
#include "core/server.h"
#include "file.h"
#include "macro.h"
#include "policy.h"
#include "sandbox.h"
#include "workspace-jobs.h"
#include "workspace.h"

/* A walk that takes longer than this gives up (diff: limit_exceeded; promote:
 * what was not applied in time is reported as a conflict). */
#define WS_TIME_LIMIT_SEC 600
/* An incident snapshot lists at most this many changes (and the total). */
#define SNAPSHOT_MAX_CHANGES 10000

typedef enum ws_job_kind {
        WS_JOB_DIFF,
        WS_JOB_PROMOTE,
        WS_JOB_DISCARD,
        WS_JOB_SNAPSHOT,
} ws_job_kind;

typedef struct ws_job {
        uv_work_t req;
        ws_job_kind kind;
        manager *m;
        sandbox *s;               /* referenced; only the loop thread touches it */
        rpc_call *call;           /* NULL for snapshots */
        uint32_t msgid;           /* call->msgid, for the worker to pack the response */
        char *id, *workspace, *dir, *upper, *work, *snapshot_path, *snapshot_json;
        int64_t started_ns;
        ws_budget budget;         /* the loop shortens it to cancel */
        bool cancelled;
        list_head link;           /* running_jobs */
        char **paths;
        bool hooks, patch;
        /* Results, written by the worker. */
        int r;
        agentd_error why;
        ws_changes changes;
        ws_promote_result res;
        /* Built by the worker too, so the loop only sends and appends: a
         * 60,000-entry reply and audit record take the loop ~1 s to build. */
        msgpack_sbuffer reply;
        json_object *audit;
} ws_job;

/* Jobs on the thread pool, so that shutdown can cut them short. */
static list_head running_jobs = { &running_jobs, &running_jobs };

static const char *job_name(ws_job_kind k) {
        switch (k) {
        case WS_JOB_DIFF: return "diff";
        case WS_JOB_PROMOTE: return "promote";
        case WS_JOB_DISCARD: return "discard";
        case WS_JOB_SNAPSHOT: return "snapshot";
        }
        return "?";
}

static bool job_writes(ws_job_kind k) {
        return k == WS_JOB_PROMOTE || k == WS_JOB_DISCARD;
}

static void job_free(ws_job *j) {
        if (!j)
                return;
        free(j->id);
        free(j->workspace);
        free(j->dir);
        free(j->upper);
        free(j->work);
        free(j->snapshot_path);
        free(j->snapshot_json);
        strv_free(j->paths);
        error_free(&j->why);
        ws_changes_free(&j->changes);
        ws_promote_result_free(&j->res);
        msgpack_sbuffer_destroy(&j->reply);
        json_object_put(j->audit);
        free(j);
}

static ws_job *job_new(ws_job_kind kind, manager *m, sandbox *s) {
        ws_job *j = calloc(1, sizeof(*j));
        if (!j)
                return NULL;
        j->kind = kind;
        j->m = m;
        msgpack_sbuffer_init(&j->reply);
        j->started_ns = s->started_ns;
        j->id = strdup(s->id);
        j->workspace = strdup(s->workspace);
        j->dir = strdup(s->dir);
        if (asprintf(&j->upper, "%s/upper", s->dir) < 0)
                j->upper = NULL;
        if (asprintf(&j->work, "%s/work", s->dir) < 0)
                j->work = NULL;
        if (!j->id || !j->workspace || !j->dir || !j->upper || !j->work) {
                job_free(j);
                return NULL;
        }
        return j;
}

/* ---- the worker side: no sandbox, no manager, no loop ----------------- */

static void snapshot_write(ws_job *j) {
        json_object *snap = json_tokener_parse(j->snapshot_json);
        if (!snap) {
                j->r = -EINVAL;
                return;
        }
        json_object *ch = json_object_new_array();
        if (j->r == 0)
                for (size_t i = 0; i < j->changes.n && i < SNAPSHOT_MAX_CHANGES; i++) {
                        json_object *e = json_object_new_object();
                        json_object_object_add(e, "path", json_object_new_string(j->changes.v[i].path));
                        json_object_object_add(e, "change", json_object_new_string(ws_change_kind_to_string(j->changes.v[i].change)));
                        json_object_object_add(e, "guarded", json_object_new_boolean(j->changes.v[i].guarded));
                        json_object_array_add(ch, e);
                }
        json_object_object_add(snap, "workspace_changes", ch);
        json_object_object_add(snap, "workspace_changes_total", json_object_new_int64((int64_t) j->changes.n));
        json_object_object_add(snap, "workspace_changes_error", j->r < 0 ? json_object_new_string(error_reason(&j->why, j->r)) : NULL);
        _cleanup_free_ char *tmp = NULL;
        const char *text = json_object_to_json_string_ext(snap, JSON_C_TO_STRING_PRETTY);
        int r = asprintf(&tmp, "%s.tmp", j->snapshot_path) < 0 ? -ENOMEM : 0;
        if (r == 0)
                r = write_file_replace_at(AT_FDCWD, tmp, j->snapshot_path, text, strlen(text), 0666, WRITE_FILE_EXCL);
        json_object_put(snap);
        if (j->r == 0)
                j->r = r;
}

static void pack_diff(msgpack_packer *pk, void *userdata);
static void pack_promote(msgpack_packer *pk, void *userdata);
static json_object *audit_promote_event(ws_job *j);

static void job_work(uv_work_t *req) {
        ws_job *j = container_of(req, ws_job, req);
        switch (j->kind) {
        case WS_JOB_DIFF:
                j->r = workspace_diff(j->workspace, j->upper, &j->budget, &j->changes, &j->why);
                break;
        case WS_JOB_PROMOTE:
                j->r = workspace_promote(j->workspace, j->upper, j->started_ns, j->paths, j->hooks, &j->budget, &j->res,
                                         &j->why);
                break;
        case WS_JOB_DISCARD:
                j->r = workspace_remove_tree(j->upper);
                if (j->r == 0)
                        j->r = workspace_remove_tree(j->work);
                break;
        case WS_JOB_SNAPSHOT:
                j->r = workspace_diff(j->workspace, j->upper, &j->budget, &j->changes, &j->why);
                snapshot_write(j);
                break;
        }
        if (j->r < 0 || (j->kind != WS_JOB_DIFF && j->kind != WS_JOB_PROMOTE))
                return;
        /* The whole response, header included: the loop hands it to the connection as it is. */
        msgpack_packer pk;
        msgpack_packer_init(&pk, &j->reply, msgpack_sbuffer_write);
        rpc_pack_response_header(&pk, j->msgid);
        if (j->kind == WS_JOB_DIFF)
                pack_diff(&pk, j);
        else {
                pack_promote(&pk, j);
                j->audit = audit_promote_event(j);
        }
}

/* ---- the loop side ------------------------------------------------------ */

static void pack_diff(msgpack_packer *pk, void *userdata) {
        ws_job *j = userdata;
        msgpack_pack_array(pk, j->changes.n);
        for (size_t i = 0; i < j->changes.n; i++) {
                const ws_change *ch = &j->changes.v[i];
                msgpack_pack_map(pk, j->patch ? 6 : 4);
                mp_pack_kv_str(pk, "path", ch->path);
                mp_pack_kv_str(pk, "change", ws_change_kind_to_string(ch->change));
                mp_pack_kv_str(pk, "type", ch->type == 'f' ? "file" : ch->type == 'd' ? "directory"
                                           : ch->type == 'l' ? "symlink" : "other");
                mp_pack_kv_bool(pk, "guarded", ch->guarded);
                if (j->patch) {
                        _cleanup_free_ char *host = NULL, *layer = NULL;
                        if (asprintf(&host, "%s/%s", j->workspace, ch->path) < 0)
                                host = NULL;
                        if (asprintf(&layer, "%s/%s", j->upper, ch->path) < 0)
                                layer = NULL;
                        mp_pack_kv_str(pk, "host_path", host ? host : "");
                        mp_pack_kv_str(pk, "layer_path", layer ? layer : "");
                }
        }
}

static void pack_items(msgpack_packer *pk, const ws_items *l, bool as_map, const char *detail_key) {
        msgpack_pack_array(pk, l->n);
        for (size_t i = 0; i < l->n; i++) {
                if (!as_map) {
                        mp_pack_cstr(pk, l->v[i].path);
                        continue;
                }
                msgpack_pack_map(pk, 2);
                mp_pack_kv_str(pk, "path", l->v[i].path);
                mp_pack_kv_str(pk, detail_key, l->v[i].detail);
        }
}

static void pack_promote(msgpack_packer *pk, void *userdata) {
        ws_job *j = userdata;
        const ws_promote_result *res = &j->res;
        msgpack_pack_map(pk, 5);
        mp_pack_cstr(pk, "promoted");
        pack_items(pk, &res->promoted, false, NULL);
        mp_pack_cstr(pk, "conflicts");
        pack_items(pk, &res->conflicts, true, "reason");
        mp_pack_cstr(pk, "guarded");
        pack_items(pk, &res->guarded, true, "change");
        mp_pack_cstr(pk, "sha256");
        size_t nh = 0;
        for (size_t i = 0; i < res->promoted.n; i++)
                if (res->promoted.v[i].detail[0])
                        nh++;
        msgpack_pack_map(pk, nh);
        for (size_t i = 0; i < res->promoted.n; i++)
                if (res->promoted.v[i].detail[0])
                        mp_pack_kv_str(pk, res->promoted.v[i].path, res->promoted.v[i].detail);
        mp_pack_kv_str(pk, "workspace", j->workspace);
}

static void pack_empty(msgpack_packer *pk, void *userdata) {
        msgpack_pack_map(pk, 0);
}

/* Sends the response the worker packed, without another copy on the loop. */
static void reply_prepacked(ws_job *j) {
        (void) connection_send(j->call->conn, j->reply.data, j->reply.size, NULL, 0);
        rpc_call_free(TAKE_PTR(j->call));
}

/* The whole promote, path by path with the sha256 of each file, written
 * beside the sandbox's record (promotes/<ns>.json). The audit record names
 * it with its digest, so the chain vouches for it; a 64 KiB audit record
 * could not hold 60,000 entries. Runs on the worker. */
static int write_manifest(ws_job *j, char **ret_path, char sha[65]) {
        const ws_promote_result *res = &j->res;
        json_object *m = json_object_new_object(), *pr = json_object_new_object(), *cf = json_object_new_object(),
                    *gd = json_object_new_array();
        for (size_t i = 0; i < res->promoted.n; i++)
                json_object_object_add(pr, res->promoted.v[i].path,
                                       res->promoted.v[i].detail[0] ? json_object_new_string(res->promoted.v[i].detail) : NULL);
        for (size_t i = 0; i < res->conflicts.n; i++)
                json_object_object_add(cf, res->conflicts.v[i].path, json_object_new_string(res->conflicts.v[i].detail));
        for (size_t i = 0; i < res->guarded.n; i++)
                json_object_array_add(gd, json_object_new_string(res->guarded.v[i].path));
        json_object_object_add(m, "sandbox", json_object_new_string(j->id));
        json_object_object_add(m, "workspace", json_object_new_string(j->workspace));
        json_object_object_add(m, "include_hooks", json_object_new_boolean(j->hooks));
        json_object_object_add(m, "promoted_sha256", pr);
        json_object_object_add(m, "conflicts", cf);
        json_object_object_add(m, "guarded_skipped", gd);
        const char *text = json_object_to_json_string_ext(m, JSON_C_TO_STRING_PLAIN);
        unsigned char dg[32];
        unsigned int dl = 0;
        int r = EVP_Digest(text, strlen(text), dg, &dl, EVP_sha256(), NULL) == 1 ? 0 : -EIO;
        for (unsigned i = 0; r == 0 && i < 32; i++)
                sprintf(sha + 2 * i, "%02x", dg[i]);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        _cleanup_free_ char *dir = NULL, *path = NULL;
        if (r == 0 && (asprintf(&dir, "%s/promotes", j->dir) < 0 ||
                       asprintf(&path, "%s/%lld%09ld.json", dir, (long long) ts.tv_sec, ts.tv_nsec) < 0))
                r = -ENOMEM;
        if (r == 0 && mkdir(dir, 0700) < 0 && errno != EEXIST)
                r = -errno;
        if (r == 0)
                r = write_file(path, text, strlen(text), 0666, WRITE_FILE_EXCL);
        json_object_put(m);
        if (r == 0)
                *ret_path = TAKE_PTR(path);
        return r;
}

/* Small promotes keep their lists in the audit record itself as well. */
#define AUDIT_INLINE_MAX 100

static json_object *audit_promote_event(ws_job *j) {
        const ws_promote_result *res = &j->res;
        json_object *ev = json_object_new_object();
        json_object_object_add(ev, "workspace", json_object_new_string(j->workspace));
        json_object_object_add(ev, "include_hooks", json_object_new_boolean(j->hooks));
        json_object_object_add(ev, "n_promoted", json_object_new_int64((int64_t) res->promoted.n));
        json_object_object_add(ev, "n_conflicts", json_object_new_int64((int64_t) res->conflicts.n));
        json_object_object_add(ev, "n_guarded_skipped", json_object_new_int64((int64_t) res->guarded.n));
        _cleanup_free_ char *manifest = NULL;
        char sha[65] = "";
        int r = write_manifest(j, &manifest, sha);
        if (r == 0) {
                json_object_object_add(ev, "manifest", json_object_new_string(manifest));
                json_object_object_add(ev, "manifest_sha256", json_object_new_string(sha));
        } else
                json_object_object_add(ev, "manifest_error", json_object_new_string(strerror(-r)));
        if (res->promoted.n + res->conflicts.n + res->guarded.n <= AUDIT_INLINE_MAX) {
                json_object *pr = json_object_new_object(), *cf = json_object_new_array(), *gd = json_object_new_array();
                for (size_t i = 0; i < res->promoted.n; i++)
                        json_object_object_add(pr, res->promoted.v[i].path,
                                               res->promoted.v[i].detail[0] ? json_object_new_string(res->promoted.v[i].detail) : NULL);
                for (size_t i = 0; i < res->conflicts.n; i++)
                        json_object_array_add(cf, json_object_new_string(res->conflicts.v[i].path));
                for (size_t i = 0; i < res->guarded.n; i++)
                        json_object_array_add(gd, json_object_new_string(res->guarded.v[i].path));
                json_object_object_add(ev, "promoted_sha256", pr);
                json_object_object_add(ev, "conflicts", cf);
                json_object_object_add(ev, "guarded_skipped", gd);
        }
        return ev;
}

static void job_reply_error(ws_job *j) {
        char msg[600];
        rpc_error_code code = RPC_E_INTERNAL;
        if (j->cancelled)
                snprintf(msg, sizeof(msg), "sandbox %s: the %s was cut short: agentd is stopping", j->id, job_name(j->kind));
        else if (j->r == -ETIMEDOUT) {
                code = RPC_E_LIMIT_EXCEEDED;
                snprintf(msg, sizeof(msg), "sandbox %s: the %s took longer than its time limit (%d s)", j->id,
                         job_name(j->kind), WS_TIME_LIMIT_SEC);
        } else
                snprintf(msg, sizeof(msg), "sandbox %s: %s", j->id, error_reason(&j->why, j->r));
        if (code == RPC_E_INTERNAL)
                log_error("sandbox.%s: %s", job_name(j->kind), msg);
        rpc_call_error(j->call, code, msg);
}

static void job_done(uv_work_t *req, int status) {
        ws_job *j = container_of(req, ws_job, req);
        sandbox *s = j->s;
        list_del(&j->link);
        if (status < 0 && j->r == 0)
                j->r = status == UV_ECANCELED ? -ECANCELED : status;
        /* The last diff of a running sandbox lets it go on (unless a revoke froze it meanwhile). */
        sandbox_review_end(s, job_writes(j->kind));

        switch (j->kind) {
        case WS_JOB_DIFF:
                if (j->r < 0)
                        job_reply_error(j);
                else
                        reply_prepacked(j);
                break;
        case WS_JOB_PROMOTE:
                if (j->r < 0) {
                        job_reply_error(j);
                        break;
                }
                if (j->cancelled)
                        log_warning("sandbox %s: promote cut short by shutdown; what was not applied is reported as conflicts", j->id);
                log_sandbox(LOG_INFO, j->id, s->task, "promote", "sandbox %s: promoted %zu paths into %s (%zu conflicts, %zu guarded skipped)",
                            j->id, j->res.promoted.n, j->workspace, j->res.conflicts.n, j->res.guarded.n);
                if (j->audit)
                        report_annotate_peer(j->audit, j->call ? j->call->conn : NULL);
                audit_event(j->m, "sandbox.promote", j->id, TAKE_PTR(j->audit));
                reply_prepacked(j);
                break;
        case WS_JOB_DISCARD:
                if (j->r < 0) {
                        char msg[300];
                        snprintf(msg, sizeof(msg), "sandbox %s: cannot remove its change layer: %s", j->id, strerror(-j->r));
                        log_error("sandbox.discard: %s", msg);
                        rpc_call_error(j->call, RPC_E_INTERNAL, msg);
                        break;
                }
                sandbox_mark_discarded(s);
                log_sandbox(LOG_INFO, j->id, s->task, "discard", "sandbox %s: changes discarded", j->id);
                json_object *ev = json_object_new_object();
                report_annotate_peer(ev, j->call ? j->call->conn : NULL);
                audit_event(j->m, "sandbox.discard", j->id, ev);
                rpc_call_reply(j->call, pack_empty, NULL);
                break;
        case WS_JOB_SNAPSHOT:
                if (j->r < 0)
                        log_warning("sandbox %s: the snapshot's change list: %s", j->id, error_reason(&j->why, j->r));
                break;
        }
        sandbox_unref(s);
        job_free(j);
}

/* Marks the sandbox busy and queues the job; on failure the job is freed and err says why. */
static int job_queue(ws_job *j, sandbox *s, rpc_error *err) {
        bool writes = job_writes(j->kind);
        /* A running sandbox is frozen while its layer is read, so the walk sees one state of it. */
        if (sandbox_review_begin(s, writes, j->kind == WS_JOB_DIFF) < 0) {
                rpc_error_set(err, RPC_E_POLICY_DENIED, "sandbox %s is busy: a %s of its changes is running; try again when it ends",
                              s->id, s->review_writer ? "promote or discard" : "diff");
                job_free(j);
                return -EBUSY;
        }
        j->s = sandbox_ref(s);
        atomic_init(&j->budget.deadline_ns, ws_now_ns() + (int64_t) WS_TIME_LIMIT_SEC * 1000000000);
        int r = uv_queue_work(s->m->loop, &j->req, job_work, job_done);
        if (r < 0) {
                sandbox_review_end(s, writes);
                rpc_error_set(err, RPC_E_INTERNAL, "cannot start the %s: %s", job_name(j->kind), uv_strerror(r));
                sandbox_unref(s);
                job_free(j);
                return r;
        }
        list_add_tail(&running_jobs, &j->link);
        return 0;
}

/* Queues a job answered through ctx: the dispatcher sends nothing itself. */
static int job_queue_call(ws_job *j, rpc_ctx *ctx, sandbox *s, rpc_error *err) {
        rpc_call *call = rpc_ctx_defer(ctx);
        if (!call) {
                job_free(j);
                return -ENOMEM;
        }
        j->call = call;
        j->msgid = call->msgid;
        int r = job_queue(j, s, err);
        /* On failure dispatch answers err through ctx->async. */
        return r;
}

int workspace_job_diff(rpc_ctx *ctx, sandbox *s, bool patch, rpc_error *err) {
        ws_job *j = job_new(WS_JOB_DIFF, ctx->m, s);
        if (!j)
                return -ENOMEM;
        j->patch = patch;
        return job_queue_call(j, ctx, s, err);
}

int workspace_job_promote(rpc_ctx *ctx, sandbox *s, char **paths, bool include_hooks, rpc_error *err) {
        ws_job *j = job_new(WS_JOB_PROMOTE, ctx->m, s);
        if (!j)
                return -ENOMEM;
        if (paths && !(j->paths = rpc_strv_dup(paths))) {
                job_free(j);
                return -ENOMEM;
        }
        j->hooks = include_hooks;
        return job_queue_call(j, ctx, s, err);
}

int workspace_job_discard(rpc_ctx *ctx, sandbox *s, rpc_error *err) {
        ws_job *j = job_new(WS_JOB_DISCARD, ctx->m, s);
        if (!j)
                return -ENOMEM;
        return job_queue_call(j, ctx, s, err);
}

void workspace_jobs_cancel(void) {
        list_head *i, *t;
        list_for_each_safe(i, t, &running_jobs) {
                ws_job *j = container_of(i, ws_job, link);
                j->cancelled = true;
                atomic_store(&j->budget.deadline_ns, 0);
        }
}

int workspace_snapshot_queue(manager *m, sandbox *s, const char *snapshot_path, const char *snapshot_json) {
        if (s->workspace_mode != WORKSPACE_OVERLAY || s->discarded)
                return 0;
        ws_job *j = job_new(WS_JOB_SNAPSHOT, m, s);
        if (!j || !(j->snapshot_path = strdup(snapshot_path)) || !(j->snapshot_json = strdup(snapshot_json))) {
                job_free(j);
                return -ENOMEM;
        }
        _cleanup_error_ rpc_error err = {};
        int r = job_queue(j, s, &err);
        if (r < 0)
                log_warning("sandbox %s: no change list in the snapshot: %s", s->id, error_message(&err));
        return r;
}
