/* The daemon's use of the audit log: the HMAC key sealed by the TPM (or a
 * software key when no TPM answers), one helper per event kind, the flush
 * timer, and the audit.verify / audit.query methods. */
#pragma once

#include <json-c/json.h>
#include <stdbool.h>

#include "manager.h"

int auditlog_init(manager *m);     /* never fatal: status says when the log is unavailable */
void auditlog_free(manager *m);
const char *auditlog_state(manager *m);
/* True once the HMAC key is unsealed and the log is open. Until then (a TPM
 * that is stopped or gone: retried with backoff) events cannot be recorded. */
bool auditlog_key_ready(manager *m);
/* Takes ownership of `fields` (may be NULL). */
void audit_event(manager *m, const char *type, const char *sandbox, json_object *fields);
json_object *auditlog_tail(manager *m, const char *sandbox, size_t n);
