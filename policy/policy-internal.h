/* Helpers shared by the files of policy/ only; not part of the library's API. */
#pragma once

#include <stdarg.h>
#include <stdio.h>

#include "policy.h"

int strv_push(char ***l, char *value);          /* takes ownership of value, also on failure */
int strv_extend_strv(char ***l, char **add);    /* copies */
char **strv_copy(char *const *l);
int strv_join(char *const *l, const char *sep, char **ret);

void policy_host_done(policy_host *h);

_printf_(4, 5) int policy_error_set(policy_error *err, const char *file, unsigned line, const char *fmt, ...);
void policy_error_set_key(policy_error *err, const char *key);

int policy_check_text(const char *buf, size_t len, unsigned *ret_line, const char **ret_why);

/* Read a regular file of at most `max` bytes; -EFBIG beyond. */
int policy_read_file(const char *path, size_t max, char **ret, size_t *ret_len);

/* Quote a string for canonical output. */
int policy_quote(const char *s, char **ret);
