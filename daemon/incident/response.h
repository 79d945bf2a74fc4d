/* Automatic incident response (response.c). */
#pragma once

#include "core/manager.h"

/* The egress proxy denied a connection of sandbox id: counts it in the
 * sandbox's window and, at EgressDenials=, freezes the sandbox, revokes its
 * tokens and raises an alert (once per sandbox). */
void response_egress_denied(manager *m, const char *id);
/* The sandbox ended: its denial window goes (main.c's sandbox_hooks.ended). */
void response_sandbox_ended(const char *id);
/* At stop: every window goes. */
void response_free(void);
