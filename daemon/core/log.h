/* Logging: structured records to journald (sd_journal_send), or to stderr when
 * no journal is reachable. Only the top (main, RPC handlers) logs. */
#pragma once

#include <syslog.h>

void log_setup(const char *ident);
void log_set_max_level(int level);
/* Extra journal fields come as "KEY=value" strings after the format args,
 * terminated by NULL, e.g. log_full(LOG_INFO, "SANDBOX_ID=x", NULL, "msg %d", 1). */
void log_fieldsv(int level, const char *const *fields, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The fields that let `journalctl --user -u agentd AGENTD_SANDBOX=ID` (and
 * AGENTD_TASK=, AGENTD_EVENT=) select a sandbox's lines. Each value is cut to
 * LOG_FIELD_VALUE_MAX bytes; bytes other than [A-Za-z0-9._:/@+-] become '_', so a
 * value never splits a field or a stderr line. NULL arguments give no field. */
#define LOG_FIELD_VALUE_MAX 128
typedef struct log_sandbox_fields {
        char sandbox[16 + LOG_FIELD_VALUE_MAX], task[16 + LOG_FIELD_VALUE_MAX], event[16 + LOG_FIELD_VALUE_MAX];
        const char *v[4];           /* NULL-terminated, for log_fieldsv() */
} log_sandbox_fields;
void log_sandbox_fields_init(log_sandbox_fields *f, const char *sandbox, const char *task, const char *event);
/* A log line about one sandbox, with those fields (on stderr: appended to the line). */
void log_sandbox(int level, const char *sandbox, const char *task, const char *event, const char *fmt, ...)
        __attribute__((format(printf, 5, 6)));

#define log_error(...) log_fieldsv(LOG_ERR, NULL, __VA_ARGS__)
#define log_warning(...) log_fieldsv(LOG_WARNING, NULL, __VA_ARGS__)
#define log_notice(...) log_fieldsv(LOG_NOTICE, NULL, __VA_ARGS__)
#define log_info(...) log_fieldsv(LOG_INFO, NULL, __VA_ARGS__)
#define log_debug(...) log_fieldsv(LOG_DEBUG, NULL, __VA_ARGS__)
