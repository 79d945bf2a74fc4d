/* The one-line status systemd shows (`systemctl --user status agentd`: "Status: ..."),
 * sent with sd_notify("STATUS=...") whenever it changes: at start, when a sandbox changes
 * state, on lockdown/unlock, on reload, and on every watchdog tick (which picks up the
 * broker's Vault state, e.g. "logging in" -> "ok"). */
#include <stdio.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "broker/broker.h"
#include "daemon.h"
#include "manager.h"

static char last_status[256];

int daemon_status_format(manager *m, char *buf, size_t size) {
        if (m->shutting_down)
                return snprintf(buf, size, "stopping, %u sandbox%s still running", m->n_sandboxes_live,
                                m->n_sandboxes_live == 1 ? "" : "es");
        return snprintf(buf, size, "serving, %u sandbox%s (%u running), vault: %s%s", m->n_sandboxes,
                        m->n_sandboxes == 1 ? "" : "es", m->n_sandboxes_live, broker_vault_state(m),
                        m->locked_down ? ", LOCKED DOWN (agentctl unlock)" : "");
}

void daemon_status_notify(manager *m) {
        char text[sizeof(last_status)];
        daemon_status_format(m, text, sizeof(text));
        /* A newline would end the STATUS= assignment early. */
        for (char *p = text; *p; p++)
                if (*p == '\n')
                        *p = ' ';
        if (strcmp(text, last_status) == 0)
                return;
        memcpy(last_status, text, sizeof(last_status));
        (void) sd_notifyf(0, "STATUS=%s", text);
}
