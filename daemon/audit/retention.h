/* Retention: ended sandboxes' records and old audit files are removed by the
 * rules of agentd.conf [Retention], once at start, every hour, and on
 * agentd.prune (agentctl prune). */
#pragma once

#include "core/manager.h"
#include "error.h"

typedef struct prune_result {
        unsigned sandboxes_removed;
        unsigned sandboxes_kept_evidence;   /* ended, due, but holding incident snapshots */
        unsigned audit_files_removed;
        uint64_t audit_bytes_removed;
        uint64_t audit_first_seq;           /* the oldest seq kept (0: nothing pruned) */
} prune_result;

/* The sandbox-record half of the rules (retention-records.c), on
 * <state_dir>/sandboxes: an ended record goes when its meta.json is older than
 * `days` or it is not among the newest `records` (by started_at; 0: no such
 * rule); a record holding snapshots/ stays (counted as kept evidence); one that
 * forget(userdata, id) refuses (still in use in memory) is left for next time. */
typedef int (*retention_forget_fn)(void *userdata, const char *id);
void retention_prune_records(const char *state_dir, unsigned days, unsigned records, retention_forget_fn forget,
                             void *userdata, prune_result *res);

/* Applies the rules now. The audit part fails (-EBADMSG, *ret_why) when the
 * chain does not verify: a break is never pruned away. */
int retention_prune(manager *m, prune_result *ret, agentd_error *err);
/* forget(m, id): drop the ended sandbox id from memory, or refuse (-EBUSY)
 * while it is in use; the composition root passes the sandbox part's. */
void retention_init(manager *m, retention_forget_fn forget);
void retention_free(manager *m);
