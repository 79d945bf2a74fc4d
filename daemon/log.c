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

void log_fieldsv(int level, const char *const *fields, const char *fmt, ...) {
        char msg[2048];
        va_list ap;

        if (level > max_level)
                return;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);

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
