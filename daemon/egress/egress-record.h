/* The egress proxy's decisions as the daemon keeps them (egress.c): one audit
 * record per event, and the count of a sandbox's recent denials that trips the
 * automatic response ([Response] EgressDenials= within EgressWindowSec=). */
#pragma once

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/netproxy.h"

/* The audit record of one proxy event: *ret_type is "egress" (allowed or
 * denied, with the decision and, denied, the reason) or "egress.closed" (bytes
 * each way). NULL (and *ret_type NULL) for a kind it does not know. */
json_object *egress_event_record(const netproxy_event *ev, const char **ret_type);

/* Notes one denial at `now` (ms) in a ring of `size` times, *n counting every
 * denial ever noted; returns how many noted denials are within `window_ms` of now. */
unsigned egress_denials_note(uint64_t *ring, size_t size, unsigned *n, uint64_t now, uint64_t window_ms);
