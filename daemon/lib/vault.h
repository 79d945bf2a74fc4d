/* A Vault HTTP client on the libuv loop: libcurl's multi interface driven by
 * uv_poll and uv_timer (curl_multi_socket_action), so the loop never blocks.
 * Bodies are JSON (json-c). 5xx and connection failures are retried with
 * backoff and jitter; 4xx never are. */
#pragma once

#include <json-c/json.h>
#include <stdbool.h>
#include <uv.h>

typedef struct vault_client vault_client;

typedef struct vault_response {
        long status;               /* HTTP status, 0 when no answer came */
        json_object *body;         /* parsed body or NULL (204, not JSON) */
        char error[512];           /* for status 0 or >= 400: what went wrong, with Vault's own words */
        bool cancelled;            /* the client is being freed: only release what the request owns */
} vault_response;

typedef void (*vault_cb)(const vault_response *resp, void *userdata);

typedef struct vault_config {
        const char *address;       /* https://vault.example.com:8200 */
        const char *namespace_;    /* X-Vault-Namespace, or NULL */
        const char *ca_certificate;/* CAINFO, or NULL for the system store */
        unsigned max_retries;      /* for 5xx / connection errors */
        unsigned base_backoff_ms;
        long timeout_ms;
} vault_config;

int vault_client_new(uv_loop_t *loop, const vault_config *cfg, vault_client **ret);
/* Closes all handles; each pending request's callback runs once with `cancelled` set. */
void vault_client_free(vault_client *v);

/* method "GET"/"POST"/"PUT"; path without "/v1/"; token may be NULL; body may be NULL (not consumed). */
int vault_request(vault_client *v, const char *method, const char *path, const char *token, json_object *body,
                  vault_cb cb, void *userdata);

typedef struct vault_request_opts {
        /* The request creates something at Vault (a login, a token): it is sent
         * at most once, so a slow Vault can never make two. It is retried only
         * when it provably did not reach Vault (no connection) or Vault refused
         * it unprocessed (503 sealed/standby, 429). A timeout is not retried. */
        bool create;
        long timeout_ms;           /* whole transfer; 0: the client's default */
        int max_retries;           /* -1: the client's default */
} vault_request_opts;

int vault_request_ex(vault_client *v, const char *method, const char *path, const char *token, json_object *body,
                     const vault_request_opts *opts, vault_cb cb, void *userdata);
unsigned vault_client_in_flight(const vault_client *v);
