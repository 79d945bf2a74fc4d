/* Incident response (revoke.c): credentials.revoke's sequence (freeze, revoke, kill,
 * report) and the lockdown it leaves after revoke --all. */
#pragma once

#include <stdbool.h>

#include "core/manager.h"

struct rpc_call;

/* At start: a lockdown marker left by an earlier revoke --all locks down again. */
void lockdown_load(manager *m);
/* After a revoke --all whose marker could not be written. */
void lockdown_retry_persist(manager *m);
int revoke_begin(manager *m, bool all, const char *sid, const char *task, bool freeze_only, struct rpc_call *call,
                 const char *trigger);
