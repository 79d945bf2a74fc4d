/* systemd's one-line status (STATUS=, `systemctl --user status agentd`) from
 * the facts it shows; main.c gathers them (daemon_status_notify()). */
#pragma once

#include <stdbool.h>
#include <stddef.h>

typedef struct daemon_status {
        bool stopping;
        bool locked_down;
        unsigned n_sandboxes;
        unsigned n_live;           /* processes not yet reaped */
        const char *vault;         /* the broker's Vault state, e.g. "ok" */
} daemon_status;

/* The line, snprintf-style (returns the length it wanted). */
int daemon_status_format(const daemon_status *st, char *buf, size_t size);
/* Sends STATUS=<line> to $NOTIFY_SOCKET when it differs from the last one sent
 * (newlines become spaces: one would end the assignment early). Returns 0 when
 * unchanged, else what sd_notify(3) returns (0 also without $NOTIFY_SOCKET). */
int daemon_status_send(const daemon_status *st);
