/* agentd.conf: defaults for every key, then the file, parsed by libinih.
 * A bad line is reported as file:line and nothing of the file is applied. */
#include "config.h"

#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
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

typedef enum config_kind {
        CONFIG_BOOL,
        CONFIG_SIZE,   /* size_t, with an optional K/M/G suffix */
        CONFIG_UINT,   /* unsigned */
        CONFIG_STRING, /* char *; empty = NULL */
        CONFIG_PATH,   /* char *; absolute or ~/..., expanded */
        CONFIG_URL,    /* char *; http:// or https://, empty = NULL */
} config_kind;

/* One key of agentd.conf: where it goes and the range it must lie in. */
typedef struct config_key {
        const char *section, *key;
        config_kind kind;
        size_t offset;
        unsigned long long min, max; /* inclusive; only for CONFIG_SIZE and CONFIG_UINT */
} config_key;

/* test_docs.py reads the KEY(...) entries to hold agentd.conf(5) to this table. */
#define KEY(sec, k) sec, k
#define ANY 0, ULLONG_MAX
#define F(field) offsetof(agentd_config, field)
static const config_key config_keys[] = {
        { KEY("Daemon", "StateDirectory"), CONFIG_PATH, F(state_directory), ANY },
        { KEY("Daemon", "MaxMessageSize"), CONFIG_SIZE, F(max_message_size), 1024, 64u * 1024 * 1024 },
        { KEY("Daemon", "MaxConnections"), CONFIG_UINT, F(max_connections), 1, ULLONG_MAX },
        { KEY("Daemon", "MaxConnectionsPerSandbox"), CONFIG_UINT, F(max_connections_per_sandbox), 1, ULLONG_MAX },
        { KEY("Daemon", "SandboxRequestRate"), CONFIG_UINT, F(sandbox_request_rate), ANY },
        { KEY("Daemon", "MaxRequestsInFlight"), CONFIG_UINT, F(max_in_flight), 1, ULLONG_MAX },
        { KEY("Daemon", "MaxSandboxes"), CONFIG_UINT, F(max_sandboxes), ANY },
        { KEY("Pool", "WarmSandboxes"), CONFIG_UINT, F(warm_sandboxes), 0, 16 },
        { KEY("Pool", "WarmIdleSec"), CONFIG_UINT, F(warm_idle_sec), 1, ULLONG_MAX },
        { KEY("Daemon", "LogLimit"), CONFIG_SIZE, F(log_limit), ANY },
        { KEY("Daemon", "ProxyPort"), CONFIG_UINT, F(proxy_port), 1, 65535 },
        { KEY("Daemon", "ProxyHeaderTimeoutMs"), CONFIG_UINT, F(proxy_header_timeout_ms), 100, 600000 },
        { KEY("Response", "EgressDenials"), CONFIG_UINT, F(egress_denials), ANY },
        { KEY("Response", "EgressWindowSec"), CONFIG_UINT, F(egress_window_s), 1, ULLONG_MAX },
        { KEY("Daemon", "RequireLimits"), CONFIG_BOOL, F(require_limits), ANY },
        { KEY("Audit", "MinFreeSpace"), CONFIG_SIZE, F(audit_min_free), ANY },
        { KEY("Audit", "FileSize"), CONFIG_SIZE, F(audit_file_size), 4096, 1024u * 1024 * 1024 },
        { KEY("Retention", "SandboxDays"), CONFIG_UINT, F(retention_sandbox_days), ANY },
        { KEY("Retention", "SandboxRecords"), CONFIG_UINT, F(retention_sandbox_records), ANY },
        { KEY("Retention", "AuditDays"), CONFIG_UINT, F(retention_audit_days), ANY },
        { KEY("Retention", "AuditMaxSize"), CONFIG_SIZE, F(retention_audit_max), ANY },
        { KEY("Daemon", "CgroupPath"), CONFIG_STRING, F(cgroup_path), ANY },
        { KEY("Daemon", "SandboxHelper"), CONFIG_STRING, F(sandbox_helper), ANY },
        { KEY("Vault", "Address"), CONFIG_STRING, F(vault_address), ANY },
        { KEY("Vault", "Namespace"), CONFIG_STRING, F(vault_namespace), ANY },
        { KEY("Vault", "CACertificate"), CONFIG_STRING, F(vault_ca_certificate), ANY },
        { KEY("Vault", "AppRolePath"), CONFIG_STRING, F(vault_approle_path), ANY },
        { KEY("TPM", "TCTI"), CONFIG_STRING, F(tpm_tcti), ANY },
        { KEY("TPM", "AllowSoftwareKey"), CONFIG_BOOL, F(tpm_allow_software_key), ANY },
        { KEY("Telemetry", "Endpoint"), CONFIG_URL, F(telemetry_endpoint), ANY },
        { KEY("Telemetry", "IncludeArguments"), CONFIG_BOOL, F(telemetry_include_arguments), ANY },
        { KEY("Telemetry", "QueueMax"), CONFIG_UINT, F(telemetry_queue_max), 16, 1000000 },
        { KEY("Telemetry", "FlushIntervalMs"), CONFIG_UINT, F(telemetry_flush_interval_ms), 10, 600000 },
};
#undef F
#undef ANY
#undef KEY

static const config_key *config_key_find(const char *section, const char *key) {
        for (size_t i = 0; i < ELEMENTSOF(config_keys); i++)
                if (!strcmp(section, config_keys[i].section) && !strcmp(key, config_keys[i].key))
                        return &config_keys[i];
        return NULL;
}

/* Parses value into the key's field. 1: set; 0: refused, s->message says why
 * (left as it was when out of memory); < 0: the value does not parse (-EINVAL)
 * or lies outside the key's range (-ERANGE; the field is written anyway: a bad
 * line applies nothing of the file). */
static int config_key_set(parse_state *s, const config_key *k, const char *value) {
        void *field = (uint8_t *) s->c + k->offset;
        int r;
        switch (k->kind) {
        case CONFIG_BOOL:
                return parse_bool(value, field) ?: 1;
        case CONFIG_STRING:
                return set_str(field, value) ?: 1;
        case CONFIG_SIZE:
                r = parse_size(value, field);
                if (r == 0 && (*(size_t *) field < k->min || *(size_t *) field > k->max))
                        r = -ERANGE;
                return r ?: 1;
        case CONFIG_UINT:
                r = parse_uint(value, field);
                if (r == 0 && (*(unsigned *) field < k->min || *(unsigned *) field > k->max))
                        r = -ERANGE;
                return r ?: 1;
        case CONFIG_PATH: {
                if (value[0] != '/' && value[0] != '~') {
                        snprintf(s->message, sizeof(s->message), "%s= must be an absolute path", k->key);
                        return 0;
                }
                char *p = expand_home(value, s->home);
                if (!p)
                        return 0;
                free(*(char **) field);
                *(char **) field = p;
                return 1;
        }
        case CONFIG_URL:
                if (value[0] && strncmp(value, "http://", 7) && strncmp(value, "https://", 8)) {
                        snprintf(s->message, sizeof(s->message), "%s= must be an http:// or https:// URL", k->key);
                        return 0;
                }
                return set_str(field, value) ?: 1;
        }
        return -EINVAL;
}

static bool known_section(const char *section) {
        return !strcmp(section, "Daemon") || !strcmp(section, "Vault") || !strcmp(section, "TPM") || !strcmp(section, "Response") ||
               !strcmp(section, "Telemetry") || !strcmp(section, "Pool") || !strcmp(section, "Audit") || !strcmp(section, "Retention");
}

/* inih's callback: 1 when the line is applied, 0 with s->message written when not. */
static int handler(void *userdata, const char *section, const char *key, const char *raw_value) {
        parse_state *s = userdata;
        char value[4096];
        snprintf(value, sizeof(value), "%s", raw_value ? raw_value : "");
        strip_inline_comment(value);

        if (!key) {
                if (!known_section(section)) {
                        snprintf(s->message, sizeof(s->message), "unknown section [%s]", section);
                        return 0;
                }
                return 1;
        }
        const config_key *k = config_key_find(section, key);
        if (!k) {
                snprintf(s->message, sizeof(s->message), "unknown key %s= in [%s]", key, section);
                return 0;
        }
        int r = config_key_set(s, k, value);
        if (r < 0) {
                snprintf(s->message, sizeof(s->message), "bad value for %s=: \"%.100s\"", key, value);
                return 0;
        }
        return r;
}

/* inih calls the handler for keys only (it is built without
 * INI_CALL_HANDLER_ON_NEW_SECTION), so a section header is checked here, on
 * the text, the way inih finds it: '[' first on the line after blanks, the
 * name up to ']'. 0, or the line of the first unknown section (name in s). */
static unsigned find_unknown_section(const char *text, parse_state *s) {
        unsigned line = 1;
        for (const char *l = text; *l; line++) {
                const char *end = strchrnul(l, '\n');
                const char *p = l + strspn(l, " \t\r");
                const char *close = p < end && *p == '[' ? memchr(p, ']', (size_t) (end - p)) : NULL;
                if (close) {
                        char name[128];
                        snprintf(name, sizeof(name), "%.*s", (int) (close - p - 1), p + 1);
                        if (!known_section(name)) {
                                snprintf(s->message, sizeof(s->message), "unknown section [%.100s]", name);
                                return line;
                        }
                }
                l = *end ? end + 1 : end;
        }
        return 0;
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
                        parse_state sections = {};
                        int line = ini_parse_string(text, handler, &s);
                        unsigned bad_section = find_unknown_section(text, &sections);
                        /* The first error in the file is the one reported. */
                        if (bad_section > 0 && (line == 0 || bad_section <= (unsigned) line)) {
                                line = (int) bad_section;
                                memcpy(s.message, sections.message, sizeof(s.message));
                        }
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
