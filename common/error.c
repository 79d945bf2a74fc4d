/* The one error object: see error.h. libc only. */
#include "error.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const code_names[_ERROR_CODE_MAX] = {
#define X(id, s) [ERROR_##id] = s,
        ERROR_CODES(X)
#undef X
};

const char *error_code_to_string(error_code c) {
        if ((unsigned) c >= _ERROR_CODE_MAX)
                return "internal";
        return code_names[c];
}

int error_code_to_errno(error_code c) {
        switch (c) {
        case ERROR_INVALID_REQUEST:
                return EBADMSG;
        case ERROR_METHOD_NOT_FOUND:
                return EOPNOTSUPP;
        case ERROR_INVALID_PARAMS:
                return EINVAL;
        case ERROR_NOT_FOUND:
                return ENOENT;
        case ERROR_POLICY_DENIED:
        case ERROR_LOCKED_DOWN:
                return EPERM;
        case ERROR_LIMIT_EXCEEDED:
                return E2BIG;
        case ERROR_UNAUTHORIZED:
                return EACCES;
        case ERROR_BACKEND_UNAVAILABLE:
                return ECONNREFUSED;
        default:
                return EIO;
        }
}

static int normalize_errno(int errnum) {
        if (errnum < 0)
                errnum = -errnum;
        return errnum > 0 ? errnum : EINVAL;
}

int error_setv(agentd_error *err, error_code code, int errnum, const char *fmt, va_list ap) {
        errnum = normalize_errno(errnum);
        if (!err)
                return -errnum;
        char *message = NULL;
        if (vasprintf(&message, fmt, ap) < 0)
                message = NULL;   /* error_message() falls back to strerror() */
        free(err->message);
        err->code = code;
        err->errnum = errnum;
        err->message = message;
        return -errnum;
}

int error_set(agentd_error *err, error_code code, int errnum, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        int r = error_setv(err, code, errnum, fmt, ap);
        va_end(ap);
        return r;
}

int error_wrap(agentd_error *err, const char *fmt, ...) {
        if (!error_is_set(err))
                return -EIO;
        va_list ap;
        char *prefix = NULL, *joined = NULL;
        va_start(ap, fmt);
        int n = vasprintf(&prefix, fmt, ap);
        va_end(ap);
        if (n < 0)
                return -err->errnum;   /* keep the message as it is */
        if (asprintf(&joined, "%s: %s", prefix, error_message(err)) >= 0) {
                free(err->message);
                err->message = joined;
        }
        free(prefix);
        return -err->errnum;
}

const char *error_message(const agentd_error *err) {
        if (!error_is_set(err))
                return "";
        return err->message ? err->message : strerror(err->errnum);
}

const char *error_reason(const agentd_error *err, int r) {
        return error_is_set(err) ? error_message(err) : strerror(r < 0 ? -r : r);
}

int error_move(agentd_error *dst, agentd_error *src) {
        int r = error_is_set(src) ? -src->errnum : -EIO;
        if (dst) {
                error_free(dst);
                if (src)
                        *dst = *src;
        } else
                error_free(src);
        if (src)
                *src = (agentd_error) {};
        return r;
}

void error_free(agentd_error *err) {
        if (!err)
                return;
        free(err->message);
        *err = (agentd_error) {};
}
