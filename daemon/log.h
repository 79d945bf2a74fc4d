/* Logging: structured records to journald (sd_journal_send), or to stderr when
 * no journal is reachable. Only the top (main, RPC handlers) logs. */
#pragma once

#include <syslog.h>

void log_setup(const char *ident);
void log_set_max_level(int level);
/* Extra journal fields come as "KEY=value" strings after the format args,
 * terminated by NULL, e.g. log_full(LOG_INFO, "SANDBOX_ID=x", NULL, "msg %d", 1). */
void log_fieldsv(int level, const char *const *fields, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define log_error(...) log_fieldsv(LOG_ERR, NULL, __VA_ARGS__)
#define log_warning(...) log_fieldsv(LOG_WARNING, NULL, __VA_ARGS__)
#define log_notice(...) log_fieldsv(LOG_NOTICE, NULL, __VA_ARGS__)
#define log_info(...) log_fieldsv(LOG_INFO, NULL, __VA_ARGS__)
#define log_debug(...) log_fieldsv(LOG_DEBUG, NULL, __VA_ARGS__)
