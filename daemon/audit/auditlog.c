/* Audit log wiring. The HMAC key is 32 random bytes sealed like the broker's
 * secret: by the TPM when one answers on [TPM] TCTI=, else with a software
 * key file (the log must work on machines without a TPM; status says which).
 * Records are written at once and fsync'd in batches by a short timer (the
 * fsync and the head rewrite run in a worker thread, one at a time: the loop
 * does not wait for the disk); the per-request "rpc" records are
 * group-committed: chained as they happen and
 * written with one writev per loop iteration (a prepare and a check hook),
 * while the server holds every reply back until that write has happened
 * (server_release_held()), so a reply never precedes its record on disk.
 * The key is unsealed off the loop (lib/tpmjob.h) so a stopped TPM never
 * stops the daemon: until the key is there the log is off (auditlog_key_ready()
 * says so), and it turns on by itself when the TPM answers. */
#include "auditlog.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "audit.h"
#include "lib/seal.h"
#include "lib/tpmjob.h"
#include "file.h"
#include "core/log.h"
#include "macro.h"
#include "core/server.h"
#include "report-annotate.h"
#include "telemetry.h"

#define AUDIT_QUERY_DEFAULT 1000u

typedef struct auditlog {
        manager *m;
        audit_log *log;
        uv_timer_t flush_timer, retry_timer, startup_timer;
        uv_prepare_t commit_prepare;
        uv_check_t commit_check;
        uv_work_t flush_work;
        audit_flush_job *flush_job;   /* in flight in flush_work: at most one */
        bool timers_init;
        bool dirty;
        char *state;              /* why it is unavailable, or "ok (key sealed: ...)" */
        char dir[PATH_MAX];
        int write_error;          /* sticky: the last append or flush failed (-errno) */
        uint64_t lost;            /* events that could not be recorded since then */
        char *why;                /* auditlog_state()'s answer while failing */
        tpm_job *key_job;
        unsigned key_failures;
} auditlog;

/* The result of one attempt at the key, filled on the job's thread. */
typedef struct key_work {
        char *tcti;
        char dir[PATH_MAX];
        uint8_t *key;
        size_t klen;
        const char *kind;
        int r;
        char why[700];
} key_work;

static auditlog the_log;

static void set_state(const char *fmt, const char *arg) {
        free(the_log.state);
        the_log.state = NULL;
        if (asprintf(&the_log.state, fmt, arg ? arg : "") < 0)
                the_log.state = NULL;
}

/* Gets the HMAC key: unseal the stored one, or make, seal and store a new one. */
static int audit_key(const char *tcti, const char *dir, uint8_t **ret, size_t *ret_len, const char **ret_kind, char *why, size_t whylen) {
        char blob_path[PATH_MAX], soft[PATH_MAX];
        snprintf(blob_path, sizeof(blob_path), "%s/hmac-key.sealed", dir);
        snprintf(soft, sizeof(soft), "%s/software-seal.key", dir);
        seal_error se = { 0 };
        _cleanup_free_ char *blob = NULL;
        size_t blen = 0;
        if (read_file_bounded(blob_path, 65536, &blob, &blen) == 0) {
                int r = unseal_secret(tcti, soft, blob, blen, ret, ret_len, &se);
                if (r < 0) {
                        snprintf(why, whylen, "cannot unseal the audit key (%s: %s)", se.step, se.message);
                        return r;
                }
                /* The blob header ("AGSEAL1\0", then the kind byte) says how it was sealed. */
                *ret_kind = blen > 8 && ((unsigned char *) blob)[8] == 1 /* BLOB_KIND_TPM */ ? "tpm" : "software";
                return 0;
        }
        uint8_t key[32];
        if (getrandom(key, sizeof(key), 0) != sizeof(key))
                return -EIO;
        seal_kind kind;
        void *nb = NULL;
        size_t nlen = 0;
        int r = seal_secret(tcti, true, soft, key, sizeof(key), &kind, &nb, &nlen, &se);
        if (r < 0) {
                explicit_zero(key, sizeof(key));
                snprintf(why, whylen, "cannot seal a new audit key (%s: %s)", se.step, se.message);
                return r;
        }
        r = write_file(blob_path, nb, nlen, 0600, WRITE_FILE_EXCL);
        free(nb);
        if (r < 0) {
                explicit_zero(key, sizeof(key));
                snprintf(why, whylen, "cannot store the sealed audit key: %s", strerror(-r));
                return r;
        }
        uint8_t *k = secure_alloc(sizeof(key));
        if (!k) {
                explicit_zero(key, sizeof(key));
                return -ENOMEM;
        }
        memcpy(k, key, sizeof(key));
        explicit_zero(key, sizeof(key));
        *ret = k;
        *ret_len = sizeof(key);
        *ret_kind = kind == SEAL_TPM ? "tpm" : "software";
        return 0;
}

static void write_failed(const char *what, int r) {
        if (the_log.write_error == 0)
                log_error("audit: cannot %s: %s; state-changing requests are refused until records can be written",
                          what, strerror(-r));
        the_log.write_error = r;
}

static int try_resume(void);

/* Batches of this many records are written at once, not only at the end of the iteration. */
#define AUDIT_BATCH_MAX 256

int auditlog_commit(manager *m) {
        if (!the_log.log || audit_pending(the_log.log) == 0)
                return 0;
        size_t lost = 0;
        int r = audit_commit(the_log.log, &lost);
        if (r < 0) {
                write_failed("write records", r);
                the_log.lost += lost;
                return r;
        }
        the_log.dirty = true;
        return 0;
}

bool auditlog_pending(manager *m) {
        return the_log.log && audit_pending(the_log.log) > 0;
}

/* Once per loop iteration (after the poll callbacks, and before blocking):
 * write the batch, then let the replies that waited for it go. */
static void commit_and_release(manager *m) {
        (void) auditlog_commit(m);
        server_release_held(m);
}

static void on_commit_prepare(uv_prepare_t *h) {
        commit_and_release(h->data);
}

static void on_commit_check(uv_check_t *h) {
        commit_and_release(h->data);
}

static void flush_work(uv_work_t *w) {
        audit_flush_run(the_log.flush_job);
}

static void flush_done(uv_work_t *w, int status) {
        /* A job that a synchronous flush took over (or audit_close()) ends with 0. */
        int r = audit_flush_end(TAKE_PTR(the_log.flush_job));
        if (r < 0 && the_log.log)
                write_failed("flush the log", r);
}

/* The fsync and the head rewrite in a worker; the head vouches only for what
 * was written before the job began, and only after the fsync. */
static void flush_start(manager *m) {
        audit_flush_job *j = NULL;
        int r = audit_flush_begin(the_log.log, &j);
        if (r < 0) {
                write_failed("flush the log", r);
                return;
        }
        if (!j)
                return;
        the_log.flush_job = j;
        r = uv_queue_work(m->loop, &the_log.flush_work, flush_work, flush_done);
        if (r < 0) {
                /* No worker: flush here, as before. */
                audit_flush_run(j);
                flush_done(&the_log.flush_work, 0);
        }
}

static auditlog_tick_fn tick_hook;

void auditlog_set_tick_hook(auditlog_tick_fn fn) {
        tick_hook = fn;
}

static void on_flush(uv_timer_t *t) {
        /* A log that failed resumes by itself once records fit again; so does
         * the writing of a lockdown marker that did not fit. */
        if (the_log.log && the_log.write_error < 0)
                (void) try_resume();
        if (tick_hook)
                tick_hook(t->data);
        (void) auditlog_commit(t->data);
        /* One flush in flight; what it did not cover waits for the next tick. */
        if (the_log.log && the_log.dirty && !the_log.flush_job) {
                the_log.dirty = false;
                flush_start(t->data);
        }
}

static void start_key_job(void);

static void on_key_retry(uv_timer_t *t) {
        start_key_job();
}

static void key_work_free(void *arg) {
        key_work *w = arg;
        secure_free(w->key, w->klen);
        free(w->tcti);
        free(w);
}

static void do_key(void *arg) {
        key_work *w = arg;
        w->r = audit_key(w->tcti, w->dir, &w->key, &w->klen, &w->kind, w->why, sizeof(w->why));
}

static void key_late(void *arg) {
        char st[200];
        snprintf(st, sizeof(st), "unavailable: the TPM has not answered for %d s (unsealing the audit key); "
                 "the log turns on when it does", TPM_JOB_DEADLINE_MS / 1000);
        set_state("%s", st);
        log_error("audit: %s", st + strlen("unavailable: "));
}

static void key_done(void *arg) {
        key_work *w = arg;
        the_log.key_job = NULL;
        if (w->r < 0) {
                /* Retried with backoff: 1 s, 2 s, ... 60 s, until the TPM answers. */
                uint64_t delay = 1000ull << (the_log.key_failures < 6 ? the_log.key_failures : 6);
                if (delay > 60000)
                        delay = 60000;
                the_log.key_failures++;
                set_state("unavailable: %s", w->why);
                log_error("audit: %s; the audit log is OFF (next attempt in %llu s)", w->why, (unsigned long long) (delay / 1000));
                uv_timer_start(&the_log.retry_timer, on_key_retry, delay, 0);
                key_work_free(w);
                return;
        }
        _cleanup_error_ agentd_error ae = {};
        audit_options opt = { .rotate_bytes = the_log.m->config->audit_file_size };
        int r = audit_open(the_log.dir, w->key, w->klen, &opt, &the_log.log, &ae);
        if (r < 0) {
                set_state("unavailable: %s", error_message(&ae));
                log_error("audit: cannot open the log: %s", error_message(&ae));
                key_work_free(w);
                return;
        }
        char st[64];
        snprintf(st, sizeof(st), "ok (key sealed: %s)", w->kind);
        set_state("%s", st);
        if (the_log.key_failures > 0)
                log_notice("audit: the audit key is unsealed; the audit log is on");
        the_log.key_failures = 0;
        uv_timer_start(&the_log.flush_timer, on_flush, 50, 50);
        key_work_free(w);
}

static void start_key_job(void) {
        manager *m = the_log.m;
        if (the_log.key_job || the_log.log)
                return;
        key_work *w = calloc(1, sizeof(*w));
        if (!w)
                return;
        w->tcti = m->config->tpm_tcti ? strdup(m->config->tpm_tcti) : NULL;
        snprintf(w->dir, sizeof(w->dir), "%s", the_log.dir);
        if (tpm_job_start(m->loop, "unsealing the audit key", TPM_JOB_DEADLINE_MS, do_key, key_late, key_done,
                          key_work_free, w, &the_log.key_job) < 0) {
                key_work_free(w);
                uv_timer_start(&the_log.retry_timer, on_key_retry, 1000, 0);
        }
}

#define AUDIT_KEY_STARTUP_WAIT_MS 3000

static void on_startup_wait(uv_timer_t *t) {
        /* Nothing: its expiry ends the start-up wait. */
}

int auditlog_init(manager *m) {
        the_log.m = m;
        snprintf(the_log.dir, sizeof(the_log.dir), "%s/audit", m->config->state_directory);
        if (mkdir(the_log.dir, 0700) < 0 && errno != EEXIST) {
                set_state("unavailable: cannot create the audit directory: %s", strerror(errno));
                return 0;
        }
        uv_timer_init(m->loop, &the_log.flush_timer);
        the_log.flush_timer.data = m;
        uv_timer_init(m->loop, &the_log.retry_timer);
        uv_timer_init(m->loop, &the_log.startup_timer);
        uv_prepare_init(m->loop, &the_log.commit_prepare);
        uv_check_init(m->loop, &the_log.commit_check);
        the_log.commit_prepare.data = the_log.commit_check.data = m;
        uv_prepare_start(&the_log.commit_prepare, on_commit_prepare);
        uv_check_start(&the_log.commit_check, on_commit_check);
        /* They run every iteration but must not keep the loop alive. */
        uv_unref((uv_handle_t *) &the_log.commit_prepare);
        uv_unref((uv_handle_t *) &the_log.commit_check);
        the_log.timers_init = true;
        /* TPM round trips happen off the loop: a stopped TPM must not stop the daemon. */
        set_state("unavailable: unsealing the audit key (waiting for the TPM)%s", NULL);
        start_key_job();
        /* A TPM that answers takes milliseconds: give it a bounded moment before
         * serving, so the first requests are recorded. A stopped one costs
         * AUDIT_KEY_STARTUP_WAIT_MS of start-up, then the daemon serves without. */
        uv_timer_start(&the_log.startup_timer, on_startup_wait, AUDIT_KEY_STARTUP_WAIT_MS, 0);
        while (the_log.key_job && uv_is_active((uv_handle_t *) &the_log.startup_timer))
                uv_run(m->loop, UV_RUN_ONCE);
        uv_timer_stop(&the_log.startup_timer);
        return 0;
}

bool auditlog_key_ready(manager *m) {
        return the_log.log != NULL;
}

void auditlog_free(manager *m) {
        tpm_job_abandon(the_log.key_job);
        the_log.key_job = NULL;
        if (the_log.timers_init) {
                commit_and_release(m);
                uv_prepare_stop(&the_log.commit_prepare);
                uv_check_stop(&the_log.commit_check);
                uv_close((uv_handle_t *) &the_log.commit_prepare, NULL);
                uv_close((uv_handle_t *) &the_log.commit_check, NULL);
                uv_timer_stop(&the_log.flush_timer);
                uv_timer_stop(&the_log.retry_timer);
                uv_close((uv_handle_t *) &the_log.flush_timer, NULL);
                uv_close((uv_handle_t *) &the_log.retry_timer, NULL);
                uv_close((uv_handle_t *) &the_log.startup_timer, NULL);
                the_log.timers_init = false;
        }
        if (the_log.log) {
                audit_close(the_log.log);
                the_log.log = NULL;
        }
        free(the_log.state);
        the_log.state = NULL;
        free(the_log.why);
        the_log.why = NULL;
}

/* Free bytes on the state filesystem below AuditMinFreeSpace= mean the next
 * records may not fit: refuse what would need one before it happens. */
static int space_check(manager *m, agentd_error *err) {
        struct statvfs sv;
        /* A filesystem that reports no sizes (f_blocks 0): the writes themselves will tell. */
        if (statvfs(the_log.dir, &sv) < 0 || sv.f_blocks == 0)
                return 0;
        uint64_t avail = (uint64_t) sv.f_bavail * sv.f_frsize;
        if (avail >= m->config->audit_min_free)
                return 0;
        return error_set(err, ERROR_BACKEND_UNAVAILABLE, ENOSPC,
                         "the state filesystem is full (%llu bytes free, [Audit] MinFreeSpace=%zu)",
                         (unsigned long long) avail, m->config->audit_min_free);
}

/* After a failure, the first record that goes through says how many were lost. */
static int try_resume(void) {
        /* What was appended must be durable first; a failing fsync adds no records. */
        int r = audit_flush(the_log.log);
        if (r < 0)
                return r;
        json_object *f = json_object_new_object();
        json_object_object_add(f, "error", json_object_new_string(strerror(-the_log.write_error)));
        json_object_object_add(f, "events_not_recorded", json_object_new_int64((int64_t) the_log.lost));
        r = audit_append(the_log.log, "audit.resumed", NULL, f);
        json_object_put(f);
        if (r == 0)
                r = audit_flush(the_log.log);
        if (r < 0)
                return r;
        log_notice("audit: records are written again (%llu events were not recorded)", (unsigned long long) the_log.lost);
        the_log.write_error = 0;
        the_log.lost = 0;
        return 0;
}

int auditlog_can_record(manager *m, agentd_error *err) {
        if (!the_log.log)
                return error_set(err, ERROR_BACKEND_UNAVAILABLE, ENODEV, "the audit log is %s", auditlog_state(m));
        /* A batch that cannot be written must be known before a state change goes ahead. */
        (void) auditlog_commit(m);
        int r = space_check(m, err);
        if (r < 0)
                return r;
        if (the_log.write_error < 0 && (r = try_resume()) < 0)
                return error_set(err, ERROR_BACKEND_UNAVAILABLE, r, "the audit log cannot write records (%s)", strerror(-r));
        return 0;
}

const char *auditlog_state(manager *m) {
        if (!the_log.state)
                return "unavailable: not started";
        if (!the_log.log)
                return the_log.state;
        _cleanup_error_ agentd_error why = {};
        if (space_check(m, &why) < 0 || the_log.write_error < 0) {
                free(the_log.why);
                the_log.why = NULL;
                if (the_log.write_error < 0)
                        (void) !asprintf(&the_log.why, "failing: cannot write records (%s); %llu events not recorded",
                                         strerror(-the_log.write_error), (unsigned long long) the_log.lost);
                else
                        (void) !asprintf(&the_log.why, "failing: %s", error_is_set(&why) ? error_message(&why) : "no space");
                return the_log.why ? the_log.why : "failing";
        }
        return the_log.state;
}

/* Records one event: from json fields, or from members when mem is set.
 * Requests ("rpc") are group-committed: their replies wait in the server until
 * the batch is written. Everything else is written at once, behind the batch,
 * as before. */
static void log_event(manager *m, const char *type, const char *sandbox, json_object *fields, const audit_member *mem,
                      size_t n_mem) {
        if (!the_log.log) {
                the_log.lost++;
                return;
        }
        bool defer = strcmp(type, "rpc") == 0;
        int r = 0;
        if (!defer || audit_pending(the_log.log) >= AUDIT_BATCH_MAX)
                r = auditlog_commit(m);   /* counts what it lost */
        if (r == 0 && mem)
                r = audit_append_members_deferred(the_log.log, type, sandbox, mem, n_mem);
        else if (r == 0)
                r = defer ? audit_append_deferred(the_log.log, type, sandbox, fields)
                          : audit_append(the_log.log, type, sandbox, fields);
        if (r == 0 && mem && !defer && auditlog_commit(m) < 0)
                return;                   /* counted there */
        if (r == -EINVAL)
                log_error("audit: refused to record %s (a bug: see audit.h)", type);
        else if (r < 0) {
                write_failed("write records", r);
                the_log.lost++;
        } else if (!defer)
                the_log.dirty = true;
}

void audit_event(manager *m, const char *type, const char *sandbox, json_object *fields) {
        if (!fields)
                fields = json_object_new_object();
        telemetry_event(m, type, sandbox, fields);
        log_event(m, type, sandbox, fields, NULL, 0);
        json_object_put(fields);
}

void auditlog_rpc(const rpc_ctx *ctx, const char *outcome) {
        const connection *c = ctx->conn;

        /* The members a request's record always has, built without json-c
         * (audit_append_members_deferred(): the same bytes); a request that
         * report.c annotates, or a telemetry that wants rpc events, takes the
         * json-c path. */
        static int telemetry_wants = -1;        /* a fixed list: asked once */
        if (telemetry_wants < 0)
                telemetry_wants = telemetry_exports("rpc");
        if (telemetry_wants || report_rpc_annotates(ctx)) {
                json_object *ev = json_object_new_object();
                json_object_object_add(ev, "method", json_object_new_string(ctx->method->name));
                json_object_object_add(ev, "peer_pid", json_object_new_int(c->peer.pid));
                json_object_object_add(ev, "peer_uid", json_object_new_int((int) c->peer.uid));
                json_object_object_add(ev, "outcome", json_object_new_string(outcome));
                report_annotate_rpc(ev, ctx);
                audit_event(ctx->m, "rpc", c->sandbox_id, ev);
                return;
        }
        const audit_member mem[] = {
                { .key = "method", .str = ctx->method->name, .str_len = strlen(ctx->method->name) },
                { .key = "peer_pid", .num = c->peer.pid },
                { .key = "peer_uid", .num = (int) c->peer.uid },
                { .key = "outcome", .str = outcome, .str_len = strlen(outcome) },
        };
        log_event(ctx->m, "rpc", c->sandbox_id, NULL, mem, ELEMENTSOF(mem));
}

int rpc_audit_verify(rpc_ctx *ctx, const rpc_audit_verify_params *p, rpc_error *err) {
        if (!the_log.log) {
                rpc_error_set(err, RPC_E_BACKEND_UNAVAILABLE, "audit log %s", auditlog_state(ctx->m));
                return -ENODEV;
        }
        (void) auditlog_commit(the_log.m);   /* counts what a failed batch lost */
        (void) audit_flush(the_log.log);
        bool ok = false;
        uint64_t records = 0, bad = 0;
        _cleanup_free_ char *reason = NULL;
        int r = audit_verify(the_log.log, &ok, &records, &bad, &reason);
        if (r < 0) {
                rpc_error_set(err, RPC_E_INTERNAL, "audit verify failed: %s", strerror(-r));
                return r;
        }
        msgpack_pack_map(ctx->pk, ok ? 2 : 4);
        mp_pack_kv_bool(ctx->pk, "ok", ok);
        mp_pack_kv_u64(ctx->pk, "records", records);
        if (!ok) {
                mp_pack_kv_u64(ctx->pk, "first_bad_seq", bad);
                mp_pack_kv_str(ctx->pk, "reason", reason ? reason : "");
        }
        return 0;
}

void auditlog_pack_json(msgpack_packer *pk, json_object *o) {
        switch (json_object_get_type(o)) {
        case json_type_null: msgpack_pack_nil(pk); break;
        case json_type_boolean:
                if (json_object_get_boolean(o))
                        msgpack_pack_true(pk);
                else
                        msgpack_pack_false(pk);
                break;
        case json_type_double: msgpack_pack_double(pk, json_object_get_double(o)); break;
        case json_type_int: msgpack_pack_int64(pk, json_object_get_int64(o)); break;
        case json_type_string: mp_pack_cstr(pk, json_object_get_string(o)); break;
        case json_type_array: {
                size_t n = json_object_array_length(o);
                msgpack_pack_array(pk, n);
                for (size_t i = 0; i < n; i++)
                        auditlog_pack_json(pk, json_object_array_get_idx(o, i));
                break;
        }
        case json_type_object: {
                msgpack_pack_map(pk, (size_t) json_object_object_length(o));
                json_object_object_foreach(o, k, v) {
                        mp_pack_cstr(pk, k);
                        auditlog_pack_json(pk, v);
                }
                break;
        }
        }
}

/* audit.query runs in a worker over a snapshot: a page is a walk of the whole
 * log (about a second for 10,000 of 60,000 records), which the loop must not
 * wait for. The worker also packs the reply, so the loop only sends bytes. */
typedef struct query_job {
        uv_work_t work;
        rpc_call *call;
        audit_snapshot *snap;
        char *sandbox;
        audit_query_opts q;
        msgpack_sbuffer out;
        int error;
} query_job;

static void query_job_free(query_job *j) {
        if (!j)
                return;
        if (j->call)
                rpc_call_free(j->call);
        audit_snapshot_free(j->snap);
        free(j->sandbox);
        msgpack_sbuffer_destroy(&j->out);
        free(j);
}

static void query_work(uv_work_t *w) {
        query_job *j = container_of(w, query_job, work);
        json_object *arr = NULL;
        msgpack_packer pk;

        j->error = audit_snapshot_query_page(j->snap, &j->q, &arr, NULL);
        if (j->error < 0)
                return;
        msgpack_packer_init(&pk, &j->out, msgpack_sbuffer_write);
        auditlog_pack_json(&pk, arr);
        json_object_put(arr);
}

static void pack_packed(msgpack_packer *pk, void *userdata) {
        const msgpack_sbuffer *out = userdata;
        (void) pk->callback(pk->data, out->data, out->size);
}

static void query_done(uv_work_t *w, int status) {
        query_job *j = container_of(w, query_job, work);
        char msg[256];

        if (status < 0)
                rpc_call_error(TAKE_PTR(j->call), RPC_E_INTERNAL, "the audit query was cancelled");
        else if (j->error < 0) {
                snprintf(msg, sizeof(msg), "audit query failed: %s", strerror(-j->error));
                rpc_call_error(TAKE_PTR(j->call), RPC_E_INTERNAL, msg);
        } else
                rpc_call_reply(TAKE_PTR(j->call), pack_packed, &j->out);
        query_job_free(j);
}

int rpc_audit_query(rpc_ctx *ctx, const rpc_audit_query_params *p, rpc_error *err) {
        if (!the_log.log) {
                rpc_error_set(err, RPC_E_BACKEND_UNAVAILABLE, "audit log %s", auditlog_state(ctx->m));
                return -ENODEV;
        }
        if (p->has_limit && (p->limit == 0 || p->limit > AUDIT_QUERY_MAX)) {
                rpc_error_set(err, RPC_E_INVALID_PARAMS, "limit must be 1..%u (page with 'before': the first seq returned)",
                              AUDIT_QUERY_MAX);
                return -EINVAL;
        }
        query_job *j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        msgpack_sbuffer_init(&j->out);
        if (p->sandbox && !(j->sandbox = strdup(p->sandbox))) {
                query_job_free(j);
                return -ENOMEM;
        }
        j->q = (audit_query_opts) {
                .sandbox = j->sandbox,
                .since_ms = p->since,
                .before_seq = p->before,
                .limit = p->has_limit ? (size_t) p->limit : AUDIT_QUERY_DEFAULT,
                .max_bytes = AUDIT_QUERY_MAX_BYTES,
        };
        /* Commits and flushes first, as before: the page holds every record
         * written up to this request. */
        int r = auditlog_snapshot(ctx->m, &j->snap);
        if (r < 0) {
                query_job_free(j);
                rpc_error_set(err, r == -ENODEV ? RPC_E_BACKEND_UNAVAILABLE : RPC_E_INTERNAL, "audit query failed: %s",
                              strerror(-r));
                return r;
        }
        j->call = rpc_ctx_defer(ctx);
        if (!j->call) {
                query_job_free(j);
                return -ENOMEM;
        }
        r = uv_queue_work(ctx->m->loop, &j->work, query_work, query_done);
        if (r < 0) {
                j->call = NULL; /* dispatch answers through ctx->async */
                query_job_free(j);
                rpc_error_set(err, RPC_E_INTERNAL, "cannot queue the audit query: %s", uv_strerror(r));
                return r;
        }
        return 0;
}

int auditlog_prune(manager *m, int64_t older_than_s, uint64_t max_bytes, audit_prune_result *ret, agentd_error *err) {
        *ret = (audit_prune_result) {};
        if (!the_log.log)
                return error_set(err, ERROR_BACKEND_UNAVAILABLE, ENODEV, "the audit log is %s", auditlog_state(m));
        int r = audit_prune(the_log.log, older_than_s, max_bytes, ret, err);
        if (r < 0) {
                if (!error_is_set(err))
                        error_set(err, ERROR_BACKEND_UNAVAILABLE, r, "%s", strerror(-r));
                if (err)
                        err->code = ERROR_BACKEND_UNAVAILABLE; /* the log is the backend that refused */
                return r;
        }
        if (ret->files_removed > 0)
                the_log.dirty = true;
        return 0;
}

/* The tail for an incident snapshot: the same walk of the whole log, so in a
 * worker too; it writes the file when done (a revoke never waits for it). */
typedef struct tail_job {
        uv_work_t work;
        audit_snapshot *snap;
        char *sandbox, *path;
        size_t n;
} tail_job;

static void tail_job_free(tail_job *j) {
        audit_snapshot_free(j->snap);
        free(j->sandbox);
        free(j->path);
        free(j);
}

static void tail_work(uv_work_t *w) {
        tail_job *j = container_of(w, tail_job, work);
        audit_query_opts q = { .sandbox = j->sandbox, .limit = j->n, .max_bytes = AUDIT_QUERY_MAX_BYTES };
        json_object *arr = NULL;
        if (audit_snapshot_query_page(j->snap, &q, &arr, NULL) < 0)
                return;
        const char *text = json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PRETTY);
        (void) write_file(j->path, text, strlen(text), 0600, 0);
        json_object_put(arr);
}

static void tail_done(uv_work_t *w, int status) {
        tail_job_free(container_of(w, tail_job, work));
}

int auditlog_tail_queue(manager *m, const char *sandbox, size_t n, const char *path) {
        tail_job *j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        j->n = n > 0 && n <= AUDIT_QUERY_MAX ? n : AUDIT_QUERY_MAX;
        j->sandbox = sandbox ? strdup(sandbox) : NULL;
        j->path = strdup(path);
        int r = (sandbox && !j->sandbox) || !j->path ? -ENOMEM : auditlog_snapshot(m, &j->snap);
        if (r >= 0)
                r = uv_queue_work(m->loop, &j->work, tail_work, tail_done);
        if (r < 0)
                tail_job_free(j);
        return r;
}

int auditlog_snapshot(manager *m, audit_snapshot **ret) {
        if (!the_log.log)
                return -ENODEV;
        (void) auditlog_commit(the_log.m);   /* counts what a failed batch lost */
        (void) audit_flush(the_log.log);
        return audit_snapshot_new(the_log.log, ret);
}
