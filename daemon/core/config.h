/* agentd.conf (CONTRACT §5): INI parsed by libinih; every key has a default. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

typedef struct agentd_config {
        char *state_directory;
        size_t max_message_size;
        unsigned max_connections;
        unsigned max_in_flight;
        unsigned max_connections_per_sandbox;  /* on each sandbox's broker socket */
        unsigned sandbox_request_rate;         /* per second, per method, per sandbox; 0 = unlimited */
        char *cgroup_path;           /* override of the cgroup sandboxes go under */
        char *sandbox_helper;        /* override of the agentd-sandbox path */
        unsigned max_sandboxes;
        size_t log_limit;            /* bytes of output kept per stream */
        unsigned proxy_port;         /* 127.0.0.1:PORT inside a Mode=proxy sandbox */
        unsigned proxy_header_timeout_ms;
        bool require_limits;         /* refuse a spawn whose task limits cannot be enforced */

        /* [Pool]: warm sandboxes per recently used task (daemon/sandbox/pool.c); 0 = off */
        unsigned warm_sandboxes;
        unsigned warm_idle_sec;      /* an unused warm sandbox is dropped after this long */

        /* [Response]: automatic freeze + revoke of a sandbox that keeps hitting walls. */
        unsigned egress_denials;     /* 0 = off */
        unsigned egress_window_s;

        char *vault_address;
        char *vault_namespace;
        char *vault_ca_certificate;
        char *vault_approle_path;

        /* [Audit] */
        size_t audit_min_free;       /* state-changing requests are refused below this many free bytes */
        size_t audit_file_size;      /* a new audit file past this size */

        /* [Retention]: 0 = no bound */
        unsigned retention_sandbox_days;
        unsigned retention_sandbox_records;
        unsigned retention_audit_days;
        size_t retention_audit_max;

        char *tpm_tcti;
        bool tpm_allow_software_key;

        /* [Telemetry]: optional OTLP/HTTP (JSON) export, redacted by default. */
        char *telemetry_endpoint;    /* NULL: off */
        bool telemetry_include_arguments;
        unsigned telemetry_queue_max;
        unsigned telemetry_flush_interval_ms;
} agentd_config;

/* Defaults, then the file if it exists. A missing file is not an error; a bad
 * one sets err to "PATH:LINE: why". */
int config_load(const char *path, const char *home, agentd_config **ret, agentd_error *err);
void config_free(agentd_config *c);
char *config_default_path(void);
