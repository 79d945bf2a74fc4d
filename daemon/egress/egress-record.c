/* Egress events as audit records, and the denial window (egress-record.h). */
#include "egress-record.h"

json_object *egress_event_record(const netproxy_event *ev, const char **ret_type) {
        const char *type;
        switch (ev->kind) {
        case NETPROXY_ALLOWED:
        case NETPROXY_DENIED:
                type = "egress";
                break;
        case NETPROXY_CLOSED:
                type = "egress.closed";
                break;
        default:
                *ret_type = NULL;
                return NULL;
        }
        json_object *o = json_object_new_object();
        json_object_object_add(o, "host", json_object_new_string(ev->host ? ev->host : ""));
        json_object_object_add(o, "port", json_object_new_int(ev->port));
        if (ev->method)
                json_object_object_add(o, "method", json_object_new_string(ev->method));
        if (ev->address)
                json_object_object_add(o, "address", json_object_new_string(ev->address));
        if (ev->kind == NETPROXY_ALLOWED)
                json_object_object_add(o, "decision", json_object_new_string("allowed"));
        else if (ev->kind == NETPROXY_DENIED) {
                json_object_object_add(o, "decision", json_object_new_string("denied"));
                json_object_object_add(o, "reason", json_object_new_string(ev->reason ? ev->reason : ""));
        } else {
                json_object_object_add(o, "bytes_up", json_object_new_int64((int64_t) ev->bytes_up));
                json_object_object_add(o, "bytes_down", json_object_new_int64((int64_t) ev->bytes_down));
        }
        *ret_type = type;
        return o;
}

unsigned egress_denials_note(uint64_t *ring, size_t size, unsigned *n, uint64_t now, uint64_t window_ms) {
        ring[(*n)++ % size] = now;
        unsigned recent = 0;
        size_t filled = *n < size ? *n : size;
        for (size_t i = 0; i < filled; i++)
                if (now - ring[i] <= window_ms)
                        recent++;
        return recent;
}
