/* The daemon's use of the audit log: the HMAC key sealed by the TPM (or a
 * software key when no TPM answers), one helper per event kind, the flush
 * timer, and the audit.verify / audit.query methods. */
#pragma once

#include <json-c/json.h>
#include <stdbool.h>

#include "core/manager.h"
#include "audit.h"
#include <msgpack.h>

int auditlog_init(manager *m);     /* never fatal: status says when the log is unavailable */
void auditlog_free(manager *m);
/* Runs on every flush tick, after a failed log had its chance to resume and
 * before the pending records are written: main.c sets incident's retry of a
 * lockdown marker that did not fit (the audit part includes no part above it). */
typedef void (*auditlog_tick_fn)(manager *m);
void auditlog_set_tick_hook(auditlog_tick_fn fn);
/* "ok (key sealed: tpm|software)", "unavailable: <why>" (no log at all) or
 * "failing: <why>" (records cannot be written now: filesystem full, I/O error). */
const char *auditlog_state(manager *m);
/* 0 when a state-changing request may go ahead because its record can be
 * written; else a negative errno and *ret_why (free() it) says why. A log that
 * failed is retried here: the first record that goes through is
 * "audit.resumed" with the number of events that were not recorded. */
int auditlog_can_record(manager *m, agentd_error *err);
/* True once the HMAC key is unsealed and the log is open. Until then (a TPM
 * that is stopped or gone: retried with backoff) events cannot be recorded. */
bool auditlog_key_ready(manager *m);
/* Takes ownership of `fields` (may be NULL). "rpc" records are deferred to
 * the next auditlog_commit() (group commit, see auditlog.c); others are
 * written at once, after any pending ones. */
void audit_event(manager *m, const char *type, const char *sandbox, json_object *fields);
/* The "rpc" record of one request: method, peer_pid, peer_uid, outcome (and
 * report-annotate.c's annotations), exactly as audit_event() would write it. */
struct rpc_ctx;
void auditlog_rpc(const struct rpc_ctx *ctx, const char *outcome);
/* Writes the pending "rpc" records (one writev). A failure is counted like a
 * failed append (the log is "failing", state-changing requests are refused). */
int auditlog_commit(manager *m);
/* True while records wait for auditlog_commit(): replies must wait too. */
bool auditlog_pending(manager *m);
struct audit_prune_result;
/* audit_prune() on the open log (see audit.h); err (backend_unavailable) on failure. */
int auditlog_prune(manager *m, int64_t older_than_s, uint64_t max_bytes, struct audit_prune_result *ret, agentd_error *err);
/* Writes the newest n (1..AUDIT_QUERY_MAX) records of sandbox to path (a json
 * array, mode 0600) from a worker thread; -ENODEV when the log is off. */
int auditlog_tail_queue(manager *m, const char *sandbox, size_t n, const char *path);
/* A json value as msgpack (maps, arrays, strings, numbers, booleans, nil). */
void auditlog_pack_json(msgpack_packer *pk, json_object *o);
/* For reading the log off the loop (sandbox.report); -ENODEV when the log is off. */
int auditlog_snapshot(manager *m, audit_snapshot **ret);
