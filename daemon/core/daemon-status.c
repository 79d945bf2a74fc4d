/* What the STATUS= line says (notify-status.h), gathered from the manager and
 * the broker; callers anywhere in the daemon just say "it may have changed". */
#include "broker/broker.h"
#include "daemon.h"
#include "manager.h"
#include "notify-status.h"

void daemon_status_notify(manager *m) {
        daemon_status st = {
                .stopping = m->shutting_down,
                .locked_down = m->locked_down,
                .n_sandboxes = m->n_sandboxes,
                .n_live = m->n_sandboxes_live,
                /* Only read when serving, as before: it may re-check the session's expiry. */
                .vault = m->shutting_down ? NULL : broker_vault_state(m),
        };
        (void) daemon_status_send(&st);
}
