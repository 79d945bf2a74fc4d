/* The automatic response to a sandbox that keeps being denied egress
 * ([Response] EgressDenials= within EgressWindowSec=): freeze + revoke for
 * that sandbox, an `alert` audit record and an `alert` notification to
 * subscribers. The egress part reports each denial through its hook
 * (egress_hooks, set by main.c); this is the incident part's answer. */
#include "response.h"

#include <stdio.h>

#include "core/log.h"
#include "egress/egress-record.h"
#include "macro.h"
#include "revoke.h"
#include "sandbox/sandbox.h"

void response_egress_denied(manager *m, const char *id) {
        unsigned limit = m->config->egress_denials;
        if (!limit)
                return;
        sandbox *s = sandbox_find(m, id);
        if (!s || sandbox_ended(s) || s->auto_responded)
                return;
        unsigned recent = egress_denials_note(s->denials, ELEMENTSOF(s->denials), &s->n_denials, now_msec(),
                                              (uint64_t) m->config->egress_window_s * 1000);
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
        sandbox_alert(m, id, ev, rule, action, recent, m->config->egress_window_s);
}
