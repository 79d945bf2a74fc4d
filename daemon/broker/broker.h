/* The credential broker in the daemon: the TPM-sealed AppRole secret, the
 * Vault session, and one child token per sandbox handed over as a sealed
 * memfd on the sandbox's own broker socket. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <msgpack.h>

#include "core/manager.h"

typedef struct broker broker;
typedef struct sandbox_creds sandbox_creds;

int broker_init(manager *m);
void broker_shutdown(manager *m);       /* stops timers; pending Vault calls are dropped */
void broker_free(manager *m);
const char *broker_vault_state(manager *m);
const char *broker_tpm_state(manager *m);
/* For spawn: NULL when a credentialed sandbox can be served now, else why not. */
const char *broker_unavailable_reason(manager *m);

/* A credentialed spawn that arrives while the broker is logging in to Vault waits for the
 * login this long (then fails with backend_unavailable naming the Vault state). */
#define BROKER_LOGIN_WAIT_MS 10000

typedef void (*broker_issue_cb)(sandbox_creds *creds, const char *error, void *userdata);
/* Creates the sandbox's first token (child of the session token) and records
 * its accessor durably before anyone can see the token. */
int broker_issue(manager *m, const char *sandbox_id, const char *task, char *const *policies, uint64_t ttl_usec,
                 broker_issue_cb cb, void *userdata);
/* Like broker_issue, for a token a person approved (credentials.request): it is
 * not re-issued, and goes (revoked) with the sandbox's first token. */
int broker_issue_once(manager *m, const char *sandbox_id, const char *task, char *const *policies, uint64_t ttl_usec,
                      broker_issue_cb cb, void *userdata);
/* Packs {expires_at, ttl, accessor} and opens the token as a sealed, read-only
 * memfd (*ret_fd, the caller's); -ESTALE if there is no live token. */
int broker_pack_token(sandbox_creds *c, msgpack_packer *pk, int *ret_fd);
/* The sandbox is gone: revoke every token it had (retried until Vault confirms). */
void broker_release(manager *m, sandbox_creds *creds);
unsigned broker_tokens_live(manager *m);

typedef struct revoke_batch revoke_batch;
/* Called once: when Vault confirmed everything, or at the deadline with what is still pending
 * (which stays recorded and is retried with backoff, across restarts too). */
typedef void (*broker_revoke_cb)(unsigned confirmed, unsigned pending, void *userdata);
void broker_revoke_sandboxes(manager *m, char *const *sandbox_ids, uint64_t deadline_ms, broker_revoke_cb cb, void *userdata);
void broker_revoke_all(manager *m, uint64_t deadline_ms, broker_revoke_cb cb, void *userdata);
void broker_unlock(manager *m);
unsigned broker_revocations_pending(manager *m);
