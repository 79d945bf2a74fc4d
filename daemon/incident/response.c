/* The automatic response to a sandbox that keeps being denied egress
 * ([Response] EgressDenials= within EgressWindowSec=): freeze + revoke for
 * that sandbox, an `alert` audit record and an `alert` notification to
 * subscribers. The egress part reports each denial through its hook
 * (egress_hooks, set by main.c); this is the incident part's answer. */
#include "response.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "egress/egress-record.h"
#include "macro.h"
#include "revoke.h"
#include "sandbox/sandbox.h"

/* The denial window of each running sandbox that was denied: this part's
 * state, dropped when the sandbox ends (response_sandbox_ended). */
typedef struct denial_window {
        struct denial_window *next;
        char *id;
        uint64_t times[64];       /* recent denial times (ms), a ring */
        unsigned n;
        bool responded;           /* the automatic response ran: once per sandbox */
} denial_window;

static denial_window *windows;

static denial_window *window_get(const char *id) {
        for (denial_window *w = windows; w; w = w->next)
                if (streq(w->id, id))
                        return w;
        denial_window *w = calloc(1, sizeof(*w));
        if (!w)
                return NULL;
        w->id = strdup(id);
        if (!w->id) {
                free(w);
                return NULL;
        }
        w->next = windows;
        windows = w;
        return w;
}

void response_sandbox_ended(const char *id) {
        for (denial_window **p = &windows; *p; p = &(*p)->next)
                if (streq((*p)->id, id)) {
                        denial_window *w = *p;
                        *p = w->next;
                        free(w->id);
                        free(w);
                        return;
                }
}

void response_free(void) {
        while (windows) {
                denial_window *w = windows;
                windows = w->next;
                free(w->id);
                free(w);
        }
}

void response_egress_denied(manager *m, const char *id) {
        unsigned limit = m->config->egress_denials;
        if (!limit)
                return;
        sandbox *s = sandbox_find(m, id);
        if (!s || sandbox_ended(s))
                return;
        denial_window *w = window_get(id);
        if (!w || w->responded)
                return;
        unsigned recent = egress_denials_note(w->times, ELEMENTSOF(w->times), &w->n, now_msec(),
                                              (uint64_t) m->config->egress_window_s * 1000);
        if (recent < limit)
                return;
        w->responded = true;
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
