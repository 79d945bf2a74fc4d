/* Optional OpenTelemetry export ([Telemetry] Endpoint=): OTLP over HTTP with
 * the JSON encoding, through the libcurl-multi-on-libuv client of
 * lib/vault.c (its paths join under /v1/, which is where OTLP/HTTP puts
 * /v1/logs, /v1/traces and /v1/metrics).
 *
 * What leaves the machine, privacy first: events (spawn, exit, egress, tokens,
 * approvals, promote/discard, revoke, alerts) as log records; a sandbox's life
 * and each revocation as spans; counters as metrics. Only attributes named in
 * telemetry.c's tables are exported; workspace paths, file names and
 * executable paths go out as HMAC-SHA256 under a per-machine key
 * (<state>/telemetry.key, 0600), stable on this machine and not reversible
 * without the key; command arguments only with IncludeArguments=yes; output
 * never. Records wait in a bounded queue (QueueMax) and go out in batches every
 * FlushIntervalMs; what does not fit, or what the collector refuses after
 * retries, is dropped and counted (agentd.status "telemetry"). Nothing here
 * blocks the loop. */
#pragma once

#include <json-c/json.h>
#include <msgpack.h>

#include "core/manager.h"

int telemetry_init(manager *m);       /* never fatal: status says why it is off */
void telemetry_free(manager *m);
/* One audit event (borrowed). */
void telemetry_event(manager *m, const char *type, const char *sandbox, json_object *fields);
/* Whether events of this type are exported at all (when an endpoint is set). */
bool telemetry_exports(const char *type);
/* agentd.status "telemetry": {state, endpoint?, queued, sent_logs, sent_spans, sent_metrics, dropped, ...}. */
void telemetry_pack_status(msgpack_packer *pk);
