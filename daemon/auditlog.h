/* The daemon's use of the audit log: the HMAC key sealed by the TPM (or a
 * software key when no TPM answers), one helper per event kind, the flush
 * timer, and the audit.verify / audit.query methods. */
#pragma once

#include <json-c/json.h>
#include <stdbool.h>

#include "manager.h"
#include "audit/audit.h"
#include <msgpack.h>

int auditlog_init(manager *m);     /* never fatal: status says when the log is unavailable */
void auditlog_free(manager *m);
const char *auditlog_state(manager *m);
/* Takes ownership of `fields` (may be NULL). */
void audit_event(manager *m, const char *type, const char *sandbox, json_object *fields);
json_object *auditlog_tail(manager *m, const char *sandbox, size_t n);
/* A json value as msgpack (maps, arrays, strings, numbers, booleans, nil). */
void auditlog_pack_json(msgpack_packer *pk, json_object *o);
/* For reading the log off the loop (sandbox.report); -ENODEV when the log is off. */
int auditlog_snapshot(manager *m, audit_snapshot **ret);
