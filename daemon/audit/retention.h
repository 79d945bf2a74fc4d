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

/* Applies the rules now. The audit part fails (-EBADMSG, *ret_why) when the
 * chain does not verify: a break is never pruned away. */
int retention_prune(manager *m, prune_result *ret, agentd_error *err);
void retention_init(manager *m);
void retention_free(manager *m);
