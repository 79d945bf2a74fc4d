/* The egress proxy in the daemon: every decision and every closed
 * connection becomes an audit record; a sandbox that keeps being denied
 * trips the automatic response ([Response] EgressDenials= within
 * EgressWindowSec=): freeze + revoke for that sandbox, and an `alert`
 * notification to subscribers. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "incident/approval.h"
#include "audit/auditlog.h"
#include "core/daemon.h"
#include "core/log.h"
#include "macro.h"
#include "netproxy.h"
#include "sandbox/sandbox.h"
#include "core/server.h"

typedef struct alert {
        const char *id, *rule, *action;
        unsigned count, window;
} alert;

static void pack_alert(msgpack_packer *pk, void *userdata) {
        alert *a = userdata;
        msgpack_pack_map(pk, 5);
        mp_pack_kv_str(pk, "sandbox", a->id);
        mp_pack_kv_str(pk, "rule", a->rule);
        mp_pack_kv_str(pk, "action", a->action);
        mp_pack_kv_u64(pk, "count", a->count);
        mp_pack_kv_u64(pk, "window_s", a->window);
}

static void note_denial(manager *m, const char *id) {
        unsigned limit = m->config->egress_denials;
        if (!limit)
                return;
        sandbox *s = sandbox_find(m, id);
        if (!s || sandbox_ended(s) || s->auto_responded)
                return;
        uint64_t now = now_msec(), window = (uint64_t) m->config->egress_window_s * 1000;
        s->denials[s->n_denials++ % ELEMENTSOF(s->denials)] = now;
        unsigned recent = 0;
        size_t n = s->n_denials < ELEMENTSOF(s->denials) ? s->n_denials : ELEMENTSOF(s->denials);
        for (size_t i = 0; i < n; i++)
                if (now - s->denials[i] <= window)
                        recent++;
        if (recent < limit)
                return;
        s->auto_responded = true;
        char rule[128];
        snprintf(rule, sizeof(rule), "EgressDenials=%u within %us", limit, m->config->egress_window_s);
        log_sandbox(LOG_WARNING, id, NULL, "alert", "sandbox %s: %u denied egress attempts within %us: freezing it and revoking its tokens", id, recent,
                    m->config->egress_window_s);
        json_object *ev = json_object_new_object();
        json_object_object_add(ev, "rule", json_object_new_string(rule));
        json_object_object_add(ev, "count", json_object_new_int((int) recent));
        /* Act first, then say what actually happened: the freeze is done when
         * revoke_begin returns; the token revocation goes on asynchronously. */
        int r = revoke_begin(m, false, id, NULL, true, NULL, rule);
        const char *action = r < 0 ? "nothing: the revocation could not start"
                             : s->state == SANDBOX_FROZEN ? (streq(s->frozen_by, "cgroup") ? "frozen (cgroup); revoking its tokens"
                                                                                          : "frozen (signal); revoking its tokens")
                             : s->killed ? "could not be frozen: killed; revoking its tokens"
                                         : "not frozen; revoking its tokens";
        json_object_object_add(ev, "action", json_object_new_string(action));
        audit_event(m, "alert", id, ev);
        alert a = { .id = id, .rule = rule, .action = action, .count = recent, .window = m->config->egress_window_s };
        server_broadcast(m, id, "alert", pack_alert, &a);
}

static void on_egress(const netproxy_event *ev, void *userdata) {
        manager *m = userdata;
        json_object *o = json_object_new_object();
        json_object_object_add(o, "host", json_object_new_string(ev->host ? ev->host : ""));
        json_object_object_add(o, "port", json_object_new_int(ev->port));
        if (ev->method)
                json_object_object_add(o, "method", json_object_new_string(ev->method));
        if (ev->address)
                json_object_object_add(o, "address", json_object_new_string(ev->address));
        switch (ev->kind) {
        case NETPROXY_ALLOWED:
                json_object_object_add(o, "decision", json_object_new_string("allowed"));
                audit_event(m, "egress", ev->sandbox_id, o);
                break;
        case NETPROXY_DENIED:
                json_object_object_add(o, "decision", json_object_new_string("denied"));
                json_object_object_add(o, "reason", json_object_new_string(ev->reason ? ev->reason : ""));
                audit_event(m, "egress", ev->sandbox_id, o);
                note_denial(m, ev->sandbox_id);
                break;
        case NETPROXY_CLOSED:
                json_object_object_add(o, "bytes_up", json_object_new_int64((int64_t) ev->bytes_up));
                json_object_object_add(o, "bytes_down", json_object_new_int64((int64_t) ev->bytes_down));
                audit_event(m, "egress.closed", ev->sandbox_id, o);
                break;
        }
}

int egress_init(manager *m) {
        int r = netproxy_new(m->loop, on_egress, m, &m->proxy);
        if (r < 0)
                log_error("cannot start the egress proxy: %s (Mode=proxy tasks will be refused)", strerror(-r));
        else
                netproxy_set_header_timeout_ms(m->proxy, m->config->proxy_header_timeout_ms);
        if (approvals_init(m) < 0)
                log_error("cannot start approvals: out of memory (Network.Ask= connections will be refused)");
        return 0;
}

void egress_free(manager *m) {
        approvals_free(m);
        if (m->proxy) {
                netproxy_free(m->proxy, NULL, NULL);
                m->proxy = NULL;
        }
}
