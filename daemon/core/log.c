/* Logging to journald with structured fields, falling back to stderr. */
#include "log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

static const char *log_ident = "agentd";
static bool use_journal;
static int max_level = LOG_INFO;

void log_setup(const char *ident) {
        log_ident = ident;
        const char *target = getenv("AGENTD_LOG_TARGET");
        if (target && strcmp(target, "stderr") == 0)
                use_journal = false;
        else
                use_journal = access("/run/systemd/journal/socket", W_OK) == 0;
        const char *lvl = getenv("AGENTD_LOG_LEVEL");
        if (lvl && strcmp(lvl, "debug") == 0)
                max_level = LOG_DEBUG;
}

void log_set_max_level(int level) {
        max_level = level;
}

static const char *level_name(int level) {
        switch (level) {
        case LOG_ERR: return "error";
        case LOG_WARNING: return "warning";
        case LOG_NOTICE: return "notice";
        case LOG_INFO: return "info";
        default: return "debug";
        }
}

static void log_fields_va(int level, const char *const *fields, const char *fmt, va_list ap) {
        char msg[2048];

        if (level > max_level)
                return;
        vsnprintf(msg, sizeof(msg), fmt, ap);

        if (use_journal) {
                struct iovec iov[16];
                char mbuf[2100], pbuf[32], ibuf[64];
                size_t n = 0;
                snprintf(mbuf, sizeof(mbuf), "MESSAGE=%s", msg);
                snprintf(pbuf, sizeof(pbuf), "PRIORITY=%d", level);
                snprintf(ibuf, sizeof(ibuf), "SYSLOG_IDENTIFIER=%s", log_ident);
                iov[n++] = (struct iovec) { mbuf, strlen(mbuf) };
                iov[n++] = (struct iovec) { pbuf, strlen(pbuf) };
                iov[n++] = (struct iovec) { ibuf, strlen(ibuf) };
                for (size_t i = 0; fields && fields[i] && n < 16; i++)
                        iov[n++] = (struct iovec) { (void *) fields[i], strlen(fields[i]) };
                if (sd_journal_sendv(iov, (int) n) >= 0)
                        return;
        }
        fprintf(stderr, "%s[%d]: %s: %s", log_ident, (int) getpid(), level_name(level), msg);
        for (size_t i = 0; fields && fields[i]; i++)
                fprintf(stderr, " %s", fields[i]);
        fputc('\n', stderr);
}

void log_fieldsv(int level, const char *const *fields, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        log_fields_va(level, fields, fmt, ap);
        va_end(ap);
}

static const char *field(char *buf, size_t size, const char *name, const char *value) {
        size_t n = (size_t) snprintf(buf, size, "%s=", name);
        for (const char *p = value; *p && n + 1 < size && p - value < LOG_FIELD_VALUE_MAX; p++) {
                char c = *p;
                bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                          strchr("._:/@+-", c);
                buf[n++] = ok ? c : '_';
        }
        buf[n] = 0;
        return buf;
}

void log_sandbox_fields_init(log_sandbox_fields *f, const char *sandbox, const char *task, const char *event) {
        size_t n = 0;
        if (sandbox)
                f->v[n++] = field(f->sandbox, sizeof(f->sandbox), "AGENTD_SANDBOX", sandbox);
        if (task)
                f->v[n++] = field(f->task, sizeof(f->task), "AGENTD_TASK", task);
        if (event)
                f->v[n++] = field(f->event, sizeof(f->event), "AGENTD_EVENT", event);
        f->v[n] = NULL;
}

void log_sandbox(int level, const char *sandbox, const char *task, const char *event, const char *fmt, ...) {
        log_sandbox_fields f;
        va_list ap;

        log_sandbox_fields_init(&f, sandbox, task, event);
        va_start(ap, fmt);
        log_fields_va(level, f.v, fmt, ap);
        va_end(ap);
}
