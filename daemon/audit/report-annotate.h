/* Annotations of audit records for sandbox.report (sandbox/report.c): who sent
 * a request and which sandbox it is about. */
#pragma once

#include <json-c/json.h>
#include <stdbool.h>

#include "core/server.h"

/* rpc records: the sandbox a host request is about ("target") and who sent it. */
void report_annotate_rpc(json_object *ev, const rpc_ctx *ctx);
/* Whether report_annotate_rpc() adds anything to this request's record. */
bool report_rpc_annotates(const rpc_ctx *ctx);
/* peer_pid, peer_uid, peer_exe, peer_comm of a connection. */
void report_annotate_peer(json_object *ev, const connection *c);
