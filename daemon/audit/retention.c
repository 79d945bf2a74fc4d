/* Retention of what agentd keeps in its state directory. Without it every
 * sandbox leaves ~3 files forever and every request ~300 bytes of audit.
 * Rules (agentd.conf [Retention], see docs/faults.md):
 * - an ended sandbox's record (its whole directory: meta, logs, change layer)
 *   goes when it is older than SandboxDays= or not among the newest
 *   SandboxRecords= ended ones; a record holding incident snapshots stays;
 * - audit files go, oldest first and never the current one, when older than
 *   AuditDays= or while the log is larger than AuditMaxSize=, behind a signed
 *   checkpoint (audit.h) so the rest still verifies. */
#include "retention.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "auditlog.h"
#include "core/log.h"
#include "macro.h"
#include "core/server.h"
#include "core/statedir.h"

#define PRUNE_INTERVAL_MS (60u * 60u * 1000u)

static uv_timer_t prune_timer;
static bool prune_timer_on;

/* The sandbox part's "forget this ended record" (main.c passes it: the audit
 * part does not include the sandbox part). Without it nothing is removed. */
static retention_forget_fn forget_hook;

static int forget_sandbox(void *userdata, const char *id) {
        return forget_hook ? forget_hook(userdata, id) : -EBUSY;
}

int retention_prune(manager *m, prune_result *ret, agentd_error *err) {
        prune_result res = {};
        *ret = res;
        /* Pruning is allowed on a full disk (it frees space) but never without
         * an audit log at all: what goes must be recorded somewhere. */
        int r = auditlog_can_record(m, err);
        if (r == -ENODEV)
                return r;
        error_free(err);
        retention_prune_records(m->config->state_directory, m->config->retention_sandbox_days,
                                m->config->retention_sandbox_records, forget_sandbox, m, &res);
        audit_prune_result ar = {};
        int64_t older = m->config->retention_audit_days > 0
                                ? (int64_t) time(NULL) - (int64_t) m->config->retention_audit_days * 86400
                                : 0;
        r = auditlog_prune(m, older, m->config->retention_audit_max, &ar, err);
        res.audit_files_removed = ar.files_removed;
        res.audit_bytes_removed = ar.bytes_removed;
        res.audit_first_seq = ar.first_seq;
        if (res.sandboxes_removed > 0 || res.audit_files_removed > 0) {
                json_object *f = json_object_new_object();
                json_object_object_add(f, "sandboxes_removed", json_object_new_int64(res.sandboxes_removed));
                json_object_object_add(f, "audit_files_removed", json_object_new_int64(res.audit_files_removed));
                json_object_object_add(f, "audit_bytes_removed", json_object_new_int64((int64_t) res.audit_bytes_removed));
                audit_event(m, "prune", NULL, f);
                log_info("retention: removed %u sandbox record(s) and %u audit file(s) (%llu bytes)", res.sandboxes_removed,
                         res.audit_files_removed, (unsigned long long) res.audit_bytes_removed);
        }
        *ret = res;
        return r;
}

static void on_prune_timer(uv_timer_t *t) {
        manager *m = t->data;
        prune_result res;
        _cleanup_error_ agentd_error why = {};
        if (retention_prune(m, &res, &why) < 0)
                log_error("retention: %s", error_is_set(&why) ? error_message(&why) : "audit pruning failed");
}

void retention_init(manager *m, retention_forget_fn forget) {
        forget_hook = forget;
        uv_timer_init(m->loop, &prune_timer);
        prune_timer.data = m;
        prune_timer_on = true;
        /* Once soon after start, then every hour. */
        uv_timer_start(&prune_timer, on_prune_timer, 0, PRUNE_INTERVAL_MS);
}

void retention_free(manager *m) {
        if (!prune_timer_on)
                return;
        prune_timer_on = false;
        uv_timer_stop(&prune_timer);
        uv_close((uv_handle_t *) &prune_timer, NULL);
}

int rpc_agentd_prune(rpc_ctx *ctx, const rpc_agentd_prune_params *p, rpc_error *err) {
        prune_result res;
        int r = retention_prune(ctx->m, &res, err);
        if (r < 0) {
                if (!error_is_set(err))
                        error_set(err, ERROR_BACKEND_UNAVAILABLE, r, "%s", strerror(-r));
                return error_wrap(err, "%u sandbox record(s) removed; audit files not pruned", res.sandboxes_removed);
        }
        msgpack_pack_map(ctx->pk, 5);
        mp_pack_kv_u64(ctx->pk, "sandboxes_removed", res.sandboxes_removed);
        mp_pack_kv_u64(ctx->pk, "sandboxes_kept_evidence", res.sandboxes_kept_evidence);
        mp_pack_kv_u64(ctx->pk, "audit_files_removed", res.audit_files_removed);
        mp_pack_kv_u64(ctx->pk, "audit_bytes_removed", res.audit_bytes_removed);
        mp_pack_kv_u64(ctx->pk, "audit_first_seq", res.audit_first_seq);
        return 0;
}
