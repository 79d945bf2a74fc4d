/* agentd.conf: defaults for every key, then the file, parsed by libinih.
 * A bad line is reported as file:line and nothing of the file is applied. */
#include "config.h"

#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "macro.h"

typedef struct parse_state {
        agentd_config *c;
        const char *home;
        char message[256];
        unsigned line;
} parse_state;

static int parse_bool(const char *v, bool *ret) {
        if (!strcasecmp(v, "yes") || !strcasecmp(v, "true") || !strcmp(v, "1") || !strcasecmp(v, "on"))
                *ret = true;
        else if (!strcasecmp(v, "no") || !strcasecmp(v, "false") || !strcmp(v, "0") || !strcasecmp(v, "off"))
                *ret = false;
        else
                return -EINVAL;
        return 0;
}

static int parse_size(const char *v, size_t *ret) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(v, &end, 10);
        if (errno || end == v || v[0] == '-')
                return -EINVAL;
        unsigned long long mul = 1;
        if (*end == 'K' || *end == 'k')
                mul = 1024, end++;
        else if (*end == 'M')
                mul = 1024 * 1024, end++;
        else if (*end == 'G')
                mul = 1024ull * 1024 * 1024, end++;
        if (*end)
                return -EINVAL;
        if (n > SIZE_MAX / mul)
                return -ERANGE;
        *ret = (size_t) (n * mul);
        return 0;
}

static int parse_uint(const char *v, unsigned *ret) {
        char *end;
        errno = 0;
        unsigned long n = strtoul(v, &end, 10);
        if (errno || end == v || *end || v[0] == '-' || n > 1000000)
                return -EINVAL;
        *ret = (unsigned) n;
        return 0;
}

static char *expand_home(const char *v, const char *home) {
        if (v[0] == '~' && (v[1] == '/' || v[1] == 0) && home) {
                char *r;
                if (asprintf(&r, "%s%s", home, v + 1) < 0)
                        return NULL;
                return r;
        }
        return strdup(v);
}

static int set_str(char **field, const char *v) {
        char *n = strdup(v);
        if (!n)
                return -ENOMEM;
        free(*field);
        *field = *v ? n : (free(n), NULL);
        return 0;
}

/* "Key=value   # comment": the contract's own examples carry trailing comments. */
static void strip_inline_comment(char *v) {
        for (char *p = v; *p; p++)
                if ((*p == '#' || *p == ';') && p > v && (p[-1] == ' ' || p[-1] == '\t')) {
                        *p = 0;
                        break;
                }
        size_t n = strlen(v);
        while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
                v[--n] = 0;
}

#define CONFIG_MAX_BYTES (1024u * 1024u)

/* Sets err to "PATH:LINE: why", the form people and editors jump to. */
_printf_(5, 6) static int config_fail(agentd_error *err, const char *path, unsigned line, int r, const char *fmt, ...) {
        _cleanup_free_ char *why = NULL;
        va_list ap;
        va_start(ap, fmt);
        if (vasprintf(&why, fmt, ap) < 0)
                why = NULL;
        va_end(ap);
        return error_set(err, ERROR_INVALID_PARAMS, r, "%s:%u: %s", path, line, why ? why : strerror(r < 0 ? -r : r));
}

static int handler(void *userdata, const char *section, const char *key, const char *raw_value) {
        parse_state *s = userdata;
        char value[4096];
        snprintf(value, sizeof(value), "%s", raw_value ? raw_value : "");
        strip_inline_comment(value);
        agentd_config *c = s->c;
        int r = 0;

#define KEY(sec, k) (!strcmp(section, sec) && !strcmp(key, k))
        if (!key) {
                if (strcmp(section, "Daemon") && strcmp(section, "Vault") && strcmp(section, "TPM") && strcmp(section, "Response") &&
                    strcmp(section, "Telemetry") && strcmp(section, "Pool") &&
                    strcmp(section, "Audit") && strcmp(section, "Retention")) {
                        snprintf(s->message, sizeof(s->message), "unknown section [%s]", section);
                        return 0;
                }
                return 1;
        }
        if (KEY("Daemon", "StateDirectory")) {
                if (value[0] != '/' && value[0] != '~') {
                        snprintf(s->message, sizeof(s->message), "StateDirectory= must be an absolute path");
                        return 0;
                }
                char *p = expand_home(value, s->home);
                if (!p)
                        return 0;
                free(c->state_directory);
                c->state_directory = p;
        } else if (KEY("Daemon", "MaxMessageSize")) {
                r = parse_size(value, &c->max_message_size);
                if (r == 0 && (c->max_message_size < 1024 || c->max_message_size > 64u * 1024 * 1024))
                        r = -ERANGE;
        } else if (KEY("Daemon", "MaxConnections")) {
                r = parse_uint(value, &c->max_connections);
                if (r == 0 && c->max_connections == 0)
                        r = -ERANGE;
        } else if (KEY("Daemon", "MaxConnectionsPerSandbox")) {
                r = parse_uint(value, &c->max_connections_per_sandbox);
                if (r == 0 && c->max_connections_per_sandbox == 0)
                        r = -ERANGE;
        } else if (KEY("Daemon", "SandboxRequestRate")) {
                r = parse_uint(value, &c->sandbox_request_rate);
        } else if (KEY("Daemon", "MaxRequestsInFlight")) {
                r = parse_uint(value, &c->max_in_flight);
                if (r == 0 && c->max_in_flight == 0)
                        r = -ERANGE;
        } else if (KEY("Daemon", "MaxSandboxes")) {
                r = parse_uint(value, &c->max_sandboxes);
        } else if (KEY("Pool", "WarmSandboxes")) {
                r = parse_uint(value, &c->warm_sandboxes);
                if (r == 0 && c->warm_sandboxes > 16)
                        r = -ERANGE;
        } else if (KEY("Pool", "WarmIdleSec")) {
                r = parse_uint(value, &c->warm_idle_sec);
                if (r == 0 && c->warm_idle_sec == 0)
                        r = -ERANGE;
        } else if (KEY("Daemon", "LogLimit")) {
                r = parse_size(value, &c->log_limit);
        } else if (KEY("Daemon", "ProxyPort")) {
                r = parse_uint(value, &c->proxy_port);
                if (r == 0 && (c->proxy_port == 0 || c->proxy_port > 65535))
                        r = -ERANGE;
        } else if (KEY("Daemon", "ProxyHeaderTimeoutMs")) {
                r = parse_uint(value, &c->proxy_header_timeout_ms);
                if (r == 0 && (c->proxy_header_timeout_ms < 100 || c->proxy_header_timeout_ms > 600000))
                        r = -ERANGE;
        } else if (KEY("Response", "EgressDenials")) {
                r = parse_uint(value, &c->egress_denials);
        } else if (KEY("Response", "EgressWindowSec")) {
                r = parse_uint(value, &c->egress_window_s);
                if (r == 0 && c->egress_window_s == 0)
                        r = -ERANGE;
        } else if (KEY("Daemon", "RequireLimits")) {
                r = parse_bool(value, &c->require_limits);
        } else if (KEY("Audit", "MinFreeSpace")) {
                r = parse_size(value, &c->audit_min_free);
        } else if (KEY("Audit", "FileSize")) {
                r = parse_size(value, &c->audit_file_size);
                if (r == 0 && (c->audit_file_size < 4096 || c->audit_file_size > 1024u * 1024 * 1024))
                        r = -ERANGE;
        } else if (KEY("Retention", "SandboxDays")) {
                r = parse_uint(value, &c->retention_sandbox_days);
        } else if (KEY("Retention", "SandboxRecords")) {
                r = parse_uint(value, &c->retention_sandbox_records);
        } else if (KEY("Retention", "AuditDays")) {
                r = parse_uint(value, &c->retention_audit_days);
        } else if (KEY("Retention", "AuditMaxSize")) {
                r = parse_size(value, &c->retention_audit_max);
        } else if (KEY("Daemon", "CgroupPath")) {
                r = set_str(&c->cgroup_path, value);
        } else if (KEY("Daemon", "SandboxHelper")) {
                r = set_str(&c->sandbox_helper, value);
        } else if (KEY("Vault", "Address")) {
                r = set_str(&c->vault_address, value);
        } else if (KEY("Vault", "Namespace")) {
                r = set_str(&c->vault_namespace, value);
        } else if (KEY("Vault", "CACertificate")) {
                r = set_str(&c->vault_ca_certificate, value);
        } else if (KEY("Vault", "AppRolePath")) {
                r = set_str(&c->vault_approle_path, value);
        } else if (KEY("TPM", "TCTI")) {
                r = set_str(&c->tpm_tcti, value);
        } else if (KEY("TPM", "AllowSoftwareKey")) {
                r = parse_bool(value, &c->tpm_allow_software_key);
        } else if (KEY("Telemetry", "Endpoint")) {
                if (value[0] && strncmp(value, "http://", 7) && strncmp(value, "https://", 8)) {
                        snprintf(s->message, sizeof(s->message), "Endpoint= must be an http:// or https:// URL");
                        return 0;
                }
                r = set_str(&c->telemetry_endpoint, value);
        } else if (KEY("Telemetry", "IncludeArguments")) {
                r = parse_bool(value, &c->telemetry_include_arguments);
        } else if (KEY("Telemetry", "QueueMax")) {
                r = parse_uint(value, &c->telemetry_queue_max);
                if (r == 0 && (c->telemetry_queue_max < 16 || c->telemetry_queue_max > 1000000))
                        r = -ERANGE;
        } else if (KEY("Telemetry", "FlushIntervalMs")) {
                r = parse_uint(value, &c->telemetry_flush_interval_ms);
                if (r == 0 && (c->telemetry_flush_interval_ms < 10 || c->telemetry_flush_interval_ms > 600000))
                        r = -ERANGE;
        } else {
                snprintf(s->message, sizeof(s->message), "unknown key %s= in [%s]", key, section);
                return 0;
        }
#undef KEY
        if (r < 0) {
                snprintf(s->message, sizeof(s->message), "bad value for %s=: \"%.100s\"", key, value);
                return 0;
        }
        return 1;
}

void config_free(agentd_config *c) {
        if (!c)
                return;
        free(c->state_directory);
        free(c->cgroup_path);
        free(c->sandbox_helper);
        free(c->vault_address);
        free(c->vault_namespace);
        free(c->vault_ca_certificate);
        free(c->vault_approle_path);
        free(c->tpm_tcti);
        free(c->telemetry_endpoint);
        free(c);
}

char *config_default_path(void) {
        const char *xdg = getenv("XDG_CONFIG_HOME");
        const char *home = getenv("HOME");
        char *p = NULL;
        if (xdg && xdg[0] == '/')
                (void) !asprintf(&p, "%s/agentd/agentd.conf", xdg);
        else if (home)
                (void) !asprintf(&p, "%s/.config/agentd/agentd.conf", home);
        return p;
}

/* The whole file, refused when it is not text: a NUL byte would end a line
 * early for the INI parser, so a file of NULs (a crash while it was written, a
 * corrupted disk) would parse as empty and put every setting back to default. */
static int config_read(const char *path, char **ret, agentd_error *err) {
        FILE *f = fopen(path, "re");
        if (!f)
                return errno == ENOENT ? -ENOENT : config_fail(err, path, 0, -errno, "cannot open: %s", strerror(errno));
        char *buf = malloc(CONFIG_MAX_BYTES + 1);
        size_t n = buf ? fread(buf, 1, CONFIG_MAX_BYTES + 1, f) : 0;
        bool bad = ferror(f);
        fclose(f);
        if (!buf)
                return -ENOMEM;
        if (bad) {
                free(buf);
                return config_fail(err, path, 0, -EIO, "cannot read: %s", strerror(EIO));
        }
        if (n > CONFIG_MAX_BYTES) {
                free(buf);
                return config_fail(err, path, 0, -EFBIG, "larger than %u bytes", CONFIG_MAX_BYTES);
        }
        unsigned line = 1;
        for (size_t i = 0; i < n; i++) {
                if (buf[i] == 0) {
                        free(buf);
                        return config_fail(err, path, line, -EINVAL, "NUL byte at offset %zu: not a text file", i);
                }
                if (buf[i] == '\n')
                        line++;
        }
        buf[n] = 0;
        *ret = buf;
        return 0;
}

int config_load(const char *path, const char *home, agentd_config **ret, agentd_error *err) {
        agentd_config *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;

        const char *xdg_state = getenv("XDG_STATE_HOME");
        if (xdg_state && xdg_state[0] == '/')
                (void) !asprintf(&c->state_directory, "%s/agentd", xdg_state);
        else
                (void) !asprintf(&c->state_directory, "%s/.local/state/agentd", home ? home : "/nonexistent");
        c->max_message_size = 1024 * 1024;
        c->max_connections = 512;
        c->max_in_flight = 32;
        c->max_connections_per_sandbox = 8;
        c->sandbox_request_rate = 20;
        c->max_sandboxes = 1024;
        c->warm_sandboxes = 0;
        c->warm_idle_sec = 300;
        c->log_limit = 1024 * 1024;
        c->proxy_port = 3128;
        c->proxy_header_timeout_ms = 10000;
        c->egress_denials = 20;
        c->egress_window_s = 60;
        c->audit_min_free = 1024 * 1024;
        c->audit_file_size = 16u * 1024 * 1024;
        c->retention_sandbox_days = 30;
        c->retention_sandbox_records = 1000;
        c->retention_audit_days = 365;
        c->retention_audit_max = (size_t) 1024 * 1024 * 1024;
        c->vault_approle_path = strdup("approle");
        c->tpm_tcti = strdup("device:/dev/tpmrm0");
        c->telemetry_queue_max = 2048;
        c->telemetry_flush_interval_ms = 1000;
        if (!c->state_directory || !c->vault_approle_path || !c->tpm_tcti) {
                config_free(c);
                return -ENOMEM;
        }

        if (path) {
                _cleanup_free_ char *text = NULL;
                int r = config_read(path, &text, err);
                if (r < 0 && r != -ENOENT) {
                        config_free(c);
                        return r;
                }
                if (text) {
                        parse_state s = { .c = c, .home = home };
                        int line = ini_parse_string(text, handler, &s);
                        if (line != 0) {
                                config_fail(err, path, line > 0 ? (unsigned) line : 0, -EINVAL, "%s",
                                            s.message[0] ? s.message : "syntax error");
                                config_free(c);
                                return -EINVAL;
                        }
                }
        }
        *ret = c;
        return 0;
}
