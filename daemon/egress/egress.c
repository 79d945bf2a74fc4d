/* The egress proxy in the daemon: every decision and every closed
 * connection becomes an audit record; each denial is told to the hook main.c
 * set (incident/response.c: the automatic response). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/auditlog.h"
#include "egress.h"
#include "core/log.h"
#include "macro.h"
#include "lib/netproxy.h"
#include "egress-record.h"

static egress_hooks hooks;

void egress_set_hooks(const egress_hooks *h) {
        hooks = h ? *h : (egress_hooks) {};
}

static void on_egress(const netproxy_event *ev, void *userdata) {
        manager *m = userdata;
        const char *type;
        json_object *o = egress_event_record(ev, &type);
        if (!o)
                return;
        audit_event(m, type, ev->sandbox_id, o);
        if (ev->kind == NETPROXY_DENIED && hooks.denied)
                hooks.denied(hooks.userdata, ev->sandbox_id);
}

int egress_init(manager *m) {
        int r = netproxy_new(m->loop, on_egress, m, &m->proxy);
        if (r < 0)
                log_error("cannot start the egress proxy: %s (Mode=proxy tasks will be refused)", strerror(-r));
        else
                netproxy_set_header_timeout_ms(m->proxy, m->config->proxy_header_timeout_ms);
        return 0;
}

void egress_free(manager *m) {
        if (m->proxy) {
                netproxy_free(m->proxy, NULL, NULL);
                m->proxy = NULL;
        }
}
