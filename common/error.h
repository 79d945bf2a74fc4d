/* The one error object (after crun's libcrun_error_t): a stable code from
 * CONTRACT §2, an errno and a message for people, set only on failure and
 * wrapped with context on the way up ("spawn: workspace: ..."). libc only,
 * so every part (and the static sandbox helper) may use it. */
#pragma once

#include <stdarg.h>
#include <stdbool.h>

#include "macro.h"

/* Stable error codes (CONTRACT §2): the wire's "<code>: <message>" prefix.
 * Add, never rename or reorder (the enum values are proto's rpc_error_code). */
#define ERROR_CODES(X)                                \
        X(INVALID_REQUEST, "invalid_request")         \
        X(METHOD_NOT_FOUND, "method_not_found")       \
        X(INVALID_PARAMS, "invalid_params")           \
        X(NOT_FOUND, "not_found")                     \
        X(POLICY_DENIED, "policy_denied")             \
        X(LIMIT_EXCEEDED, "limit_exceeded")           \
        X(UNAUTHORIZED, "unauthorized")               \
        X(LOCKED_DOWN, "locked_down")                 \
        X(BACKEND_UNAVAILABLE, "backend_unavailable") \
        X(INTERNAL, "internal")                       \
        X(SPAWN_FAILED, "spawn_failed")

typedef enum error_code {
#define X(id, s) ERROR_##id,
        ERROR_CODES(X)
#undef X
        _ERROR_CODE_MAX,
} error_code;

/* Zero-initialise (`agentd_error err = {};`): that is "no error". Functions
 * taking an `agentd_error *` set it only on failure and accept NULL (the
 * caller does not want the detail). Free it with error_free() or declare it
 * `_cleanup_error_`. */
typedef struct agentd_error {
        error_code code;
        int errnum;        /* positive errno; 0 while no error is set */
        char *message;     /* malloc'd; NULL while unset (or when memory ran out) */
} agentd_error;

/* "not_found", ...; "internal" for a value out of range. */
const char *error_code_to_string(error_code c);
/* The errno that usually goes with a code (ENOENT for not_found, ...), for
 * errors that have no errno of their own. */
int error_code_to_errno(error_code c);

/* Sets (or replaces) the error and returns -errnum, so a caller can write
 * `return error_set(err, ERROR_NOT_FOUND, ENOENT, "no task named '%s'", n);`.
 * errnum may be given as errno or -errno; 0 is taken as EINVAL, so the return
 * value is always negative (fail closed). */
_printf_(4, 5) int error_set(agentd_error *err, error_code code, int errnum, const char *fmt, ...);
int error_setv(agentd_error *err, error_code code, int errnum, const char *fmt, va_list ap) _printf_(4, 0);

/* Prefixes context to a set error: "what: <message>". Keeps code and errno and
 * returns -errnum (-EIO when err is NULL or unset: a wrap never reports success). */
_printf_(2, 3) int error_wrap(agentd_error *err, const char *fmt, ...);

static inline bool error_is_set(const agentd_error *err) {
        return err && err->errnum > 0;
}

/* The message; never NULL: strerror(errnum) when memory ran out, "" when unset. */
const char *error_message(const agentd_error *err);

/* What to tell a person about a failure r (-errno): the message when err is
 * set, else strerror(-r). */
const char *error_reason(const agentd_error *err, int r);

/* Hands the error on: *dst (freed first) takes src's contents, src is reset. */
int error_move(agentd_error *dst, agentd_error *src);

/* Back to "no error". Accepts NULL. */
void error_free(agentd_error *err);
#define _cleanup_error_ _cleanup_(error_free)
