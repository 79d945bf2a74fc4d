/* The one-line status systemd shows (`systemctl --user status agentd`: "Status: ..."),
 * sent with sd_notify("STATUS=...") whenever it changes: at start, when a sandbox changes
 * state, on lockdown/unlock, on reload, and on every watchdog tick (which picks up the
 * broker's Vault state, e.g. "logging in" -> "ok"). */
#include "notify-status.h"

#include <stdio.h>
#include <string.h>
#include <systemd/sd-daemon.h>

static char last_status[256];

int daemon_status_format(const daemon_status *st, char *buf, size_t size) {
        if (st->stopping)
                return snprintf(buf, size, "stopping, %u sandbox%s still running", st->n_live, st->n_live == 1 ? "" : "es");
        return snprintf(buf, size, "serving, %u sandbox%s (%u running), vault: %s%s", st->n_sandboxes,
                        st->n_sandboxes == 1 ? "" : "es", st->n_live, st->vault,
                        st->locked_down ? ", LOCKED DOWN (agentctl unlock)" : "");
}

int daemon_status_send(const daemon_status *st) {
        char text[sizeof(last_status)];
        daemon_status_format(st, text, sizeof(text));
        /* A newline would end the STATUS= assignment early. */
        for (char *p = text; *p; p++)
                if (*p == '\n')
                        *p = ' ';
        if (strcmp(text, last_status) == 0)
                return 0;
        memcpy(last_status, text, sizeof(last_status));
        return sd_notifyf(0, "STATUS=%s", text);
}
