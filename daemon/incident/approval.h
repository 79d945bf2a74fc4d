/* Approvals: the egress boundary stays default-deny, and a human may widen it
 * for one sandbox. With Network.Ask=yes a connection to a host Allow= does not
 * name is held (netproxy), an approval is pending here until a host client
 * answers (approval.answer) or AskTimeout= passes (a denial). An approval may be
 * remembered for the sandbox or for every sandbox of its task; none outlives
 * its sandbox (task-scoped ones last until agentd restarts or a revoke). Every
 * request, answer (with who answered) and expiry is an audit record. */
#pragma once

#include <stdbool.h>

#include "core/manager.h"

typedef struct approval approval;

typedef enum approval_kind {
        APPROVAL_NETWORK,            /* what = "host:port" */
        APPROVAL_CREDENTIALS,        /* what = comma-joined Vault policies */
} approval_kind;

/* The answer to a credentials request: approved or not, and a reason
 * ("approval ap-... denied", "... expired without an answer"). The approval
 * is gone when this runs. */
typedef void (*approval_done_cb)(bool approved, const char *reason, void *userdata);

/* Asks a human for more Vault policies for one sandbox. 1 (and *ret NULL) if
 * an earlier approval for the sandbox or task already covers them: go ahead;
 * 0 with *ret the pending approval (done runs exactly once, later); -EBUSY
 * when too many are pending, -EINVAL for no policies. */
int approval_request_credentials(manager *m, const char *sandbox, const char *task, char **policies, uint64_t timeout_ms,
                                 approval_done_cb done, void *userdata, approval **ret);

/* Hooks the hold callback of the egress proxy. */
int approvals_init(manager *m);
/* Denies every pending approval (the held connections get their 403). */
void approvals_free(manager *m);

/* Sandbox end: deny its pending approvals, forget what was approved for it. */
void approvals_sandbox_ended(manager *m, const char *sandbox_id);

/* credentials.revoke: all, one sandbox (and what was approved for its task),
 * or one task. */
void approvals_revoke(manager *m, bool all, const char *sandbox_id, const char *task);
