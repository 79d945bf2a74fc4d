/* Vault client: libcurl multi on libuv. The one boundary where CURLcode and
 * Vault's {"errors": [...]} turn into a status and a message. */
#include "vault.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "macro.h"
#include "secbuf.h"

#define MAX_BODY (1024 * 1024)

struct vault_client {
        uv_loop_t *loop;
        CURLM *multi;
        uv_timer_t timer;
        char *address, *namespace_, *ca;
        unsigned max_retries, base_backoff_ms;
        long timeout_ms;
        unsigned in_flight;
        struct vault_req *reqs;     /* every live request, for freeing */
        bool freeing;
};

typedef struct vault_req {
        struct vault_req *next, *prev;
        vault_client *v;
        CURL *easy;
        struct curl_slist *headers;
        char *url, *method, *body;
        char *token;                /* zeroed when freed */
        size_t token_len;
        secbuf resp;                /* may hold a token: grown and freed with wiping */
        bool resp_overflow;
        unsigned attempt, max_retries;
        bool create;
        long timeout_ms;
        uv_timer_t retry_timer;
        bool retry_timer_init;
        vault_cb cb;
        void *userdata;
        char curl_error[CURL_ERROR_SIZE];
} vault_req;

typedef struct sock_ctx {
        uv_poll_t poll;
        vault_client *v;
        curl_socket_t fd;
} sock_ctx;

static void req_free_now(vault_req *r) {
        if (r->easy)
                curl_easy_cleanup(r->easy);
        /* The token header was copied into the list: wipe it before freeing. */
        for (struct curl_slist *l = r->headers; l; l = l->next)
                explicit_zero(l->data, strlen(l->data));
        curl_slist_free_all(r->headers);
        free(r->url);
        free(r->method);
        if (r->body) {
                explicit_zero(r->body, strlen(r->body));
                free(r->body);
        }
        if (r->token) {
                explicit_zero(r->token, r->token_len);
                free(r->token);
        }
        secbuf_wipe_free(&r->resp);
        free(r);
}

static void on_retry_timer_closed(uv_handle_t *h) {
        req_free_now(h->data);
}

static void req_unlink_free(vault_req *r) {
        vault_client *v = r->v;
        if (r->prev)
                r->prev->next = r->next;
        else
                v->reqs = r->next;
        if (r->next)
                r->next->prev = r->prev;
        if (r->retry_timer_init) {
                r->retry_timer.data = r;
                uv_close((uv_handle_t *) &r->retry_timer, on_retry_timer_closed);
        } else
                req_free_now(r);
}

static void check_done(vault_client *v);

/* Zeroes every string in a parsed response before it is freed: json-c does
 * not, and Vault's answers carry client tokens. */
static void json_wipe_strings(json_object *o) {
        switch (json_object_get_type(o)) {
        case json_type_string:
                explicit_zero((char *) json_object_get_string(o), (size_t) json_object_get_string_len(o));
                break;
        case json_type_array:
                for (size_t i = 0; i < json_object_array_length(o); i++)
                        json_wipe_strings(json_object_array_get_idx(o, i));
                break;
        case json_type_object: {
                json_object_object_foreach(o, key, val) {
                        (void) key;
                        json_wipe_strings(val);
                }
                break;
        }
        default:
                break;
        }
}

static void on_poll(uv_poll_t *h, int status, int events) {
        sock_ctx *s = container_of(h, sock_ctx, poll);
        int flags = 0;
        if (status < 0)
                flags = CURL_CSELECT_ERR;
        else {
                if (events & UV_READABLE)
                        flags |= CURL_CSELECT_IN;
                if (events & UV_WRITABLE)
                        flags |= CURL_CSELECT_OUT;
        }
        int running;
        vault_client *v = s->v;
        curl_multi_socket_action(v->multi, s->fd, flags, &running);
        check_done(v);
}

static void on_sock_closed(uv_handle_t *h) {
        free(container_of((uv_poll_t *) h, sock_ctx, poll));
}

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
        vault_client *v = userp;
        sock_ctx *s = socketp;
        if (what == CURL_POLL_REMOVE) {
                if (s) {
                        uv_poll_stop(&s->poll);
                        uv_close((uv_handle_t *) &s->poll, on_sock_closed);
                        curl_multi_assign(v->multi, fd, NULL);
                }
                return 0;
        }
        if (!s) {
                s = calloc(1, sizeof(*s));
                if (!s)
                        return -1;
                s->v = v;
                s->fd = fd;
                uv_poll_init_socket(v->loop, &s->poll, fd);
                curl_multi_assign(v->multi, fd, s);
        }
        int ev = 0;
        if (what & CURL_POLL_IN)
                ev |= UV_READABLE;
        if (what & CURL_POLL_OUT)
                ev |= UV_WRITABLE;
        uv_poll_start(&s->poll, ev, on_poll);
        return 0;
}

static void on_timeout(uv_timer_t *t) {
        vault_client *v = container_of(t, vault_client, timer);
        int running;
        curl_multi_socket_action(v->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        check_done(v);
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp) {
        vault_client *v = userp;
        if (timeout_ms < 0)
                uv_timer_stop(&v->timer);
        else
                uv_timer_start(&v->timer, on_timeout, (uint64_t) timeout_ms, 0);
        return 0;
}

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *userdata) {
        vault_req *r = userdata;
        size_t n = size * nmemb;
        int e = secbuf_append(&r->resp, ptr, n, MAX_BODY);
        if (e == -EFBIG)
                r->resp_overflow = true;
        return e < 0 ? 0 : n;
}

static int req_start(vault_req *r) {
        vault_client *v = r->v;
        if (r->easy) {
                curl_easy_cleanup(r->easy);
                r->easy = NULL;
        }
        secbuf_wipe_free(&r->resp);
        CURL *e = curl_easy_init();
        if (!e)
                return -ENOMEM;
        r->easy = e;
        curl_easy_setopt(e, CURLOPT_URL, r->url);
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
        curl_easy_setopt(e, CURLOPT_PRIVATE, r);
        curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->curl_error);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, r->timeout_ms);
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
        /* TLS verification stays on; a private CA is added, never a bypass. */
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
        if (v->ca)
                curl_easy_setopt(e, CURLOPT_CAINFO, v->ca);
        if (r->body)
                curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
        r->curl_error[0] = 0;
        if (curl_multi_add_handle(v->multi, e) != CURLM_OK)
                return -EIO;
        return 0;
}

static void on_retry(uv_timer_t *t) {
        vault_req *r = container_of(t, vault_req, retry_timer);
        if (req_start(r) < 0) {
                vault_response resp = { .status = 0 };
                snprintf(resp.error, sizeof(resp.error), "cannot start the request");
                r->v->in_flight--;
                r->cb(&resp, r->userdata);
                req_unlink_free(r);
        }
}

/* Vault says why in {"errors": [...]}: join them for the person reading. */
static void vault_errors(json_object *body, char *out, size_t n) {
        json_object *errs;
        out[0] = 0;
        if (!body || !json_object_object_get_ex(body, "errors", &errs) || !json_object_is_type(errs, json_type_array))
                return;
        size_t len = json_object_array_length(errs);
        for (size_t i = 0; i < len; i++) {
                const char *e = json_object_get_string(json_object_array_get_idx(errs, i));
                size_t used = strlen(out);
                snprintf(out + used, n - used, "%s%s", used ? "; " : "", e ? e : "");
        }
}

static void finish(vault_req *r, CURLcode code) {
        vault_client *v = r->v;
        vault_response resp = { 0 };
        long status = 0;
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
        curl_multi_remove_handle(v->multi, r->easy);

        bool transient = code != CURLE_OK || status >= 500;
        /* A creating request that may have reached Vault is never sent twice: a
         * timeout or a 500 could mean Vault made the token and the answer was lost. */
        if (r->create)
                transient = code == CURLE_COULDNT_CONNECT || code == CURLE_COULDNT_RESOLVE_HOST ||
                            (code == CURLE_OK && (status == 429 || status == 503));
        if (transient && r->attempt < r->max_retries && !v->freeing) {
                /* Exponential backoff with full jitter. */
                unsigned cap = v->base_backoff_ms << (r->attempt < 10 ? r->attempt : 10);
                uint32_t rnd = 0;
                (void) getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK);
                unsigned delay = cap / 2 + (cap ? rnd % (cap / 2 + 1) : 0);
                r->attempt++;
                if (!r->retry_timer_init) {
                        uv_timer_init(v->loop, &r->retry_timer);
                        r->retry_timer_init = true;
                }
                uv_timer_start(&r->retry_timer, on_retry, delay, 0);
                return;
        }

        resp.status = code == CURLE_OK ? status : 0;
        if (code != CURLE_OK)
                snprintf(resp.error, sizeof(resp.error), "%s", r->curl_error[0] ? r->curl_error : curl_easy_strerror(code));
        else if (r->resp_overflow)
                snprintf(resp.error, sizeof(resp.error), "response larger than %d bytes", MAX_BODY);
        if (r->resp.len > 0) {
                json_tokener *tok = json_tokener_new();
                if (tok) {
                        resp.body = json_tokener_parse_ex(tok, r->resp.data, (int) r->resp.len);
                        /* The tokenizer's scratch buffer held the last strings parsed. */
                        if (tok->pb && tok->pb->buf)
                                explicit_zero(tok->pb->buf, (size_t) tok->pb->size);
                        json_tokener_free(tok);
                }
        }
        if (code == CURLE_OK && status >= 400) {
                char why[400];
                vault_errors(resp.body, why, sizeof(why));
                snprintf(resp.error, sizeof(resp.error), "Vault answered %ld%s%s", status, why[0] ? ": " : "", why);
        }
        v->in_flight--;
        r->cb(&resp, r->userdata);
        /* Callbacks copy what they keep (tokens into wiped buffers) and take no reference. */
        json_wipe_strings(resp.body);
        json_object_put(resp.body);
        req_unlink_free(r);
}

static void check_done(vault_client *v) {
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(v->multi, &left))) {
                if (msg->msg != CURLMSG_DONE)
                        continue;
                vault_req *r = NULL;
                curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &r);
                if (r)
                        finish(r, msg->data.result);
        }
}

int vault_client_new(uv_loop_t *loop, const vault_config *cfg, vault_client **ret) {
        static bool global_done;
        if (!global_done) {
                if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                        return -EIO;
                global_done = true;
        }
        vault_client *v = calloc(1, sizeof(*v));
        if (!v)
                return -ENOMEM;
        v->loop = loop;
        v->address = strdup(cfg->address);
        v->namespace_ = cfg->namespace_ && cfg->namespace_[0] ? strdup(cfg->namespace_) : NULL;
        v->ca = cfg->ca_certificate && cfg->ca_certificate[0] ? strdup(cfg->ca_certificate) : NULL;
        v->max_retries = cfg->max_retries;
        v->base_backoff_ms = cfg->base_backoff_ms ? cfg->base_backoff_ms : 200;
        v->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : 15000;
        /* Strip a trailing slash so paths join cleanly. */
        size_t al = v->address ? strlen(v->address) : 0;
        while (al > 0 && v->address[al - 1] == '/')
                v->address[--al] = 0;
        v->multi = curl_multi_init();
        if (!v->address || !v->multi) {
                vault_client_free(v);
                return -ENOMEM;
        }
        curl_multi_setopt(v->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
        curl_multi_setopt(v->multi, CURLMOPT_SOCKETDATA, v);
        curl_multi_setopt(v->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
        curl_multi_setopt(v->multi, CURLMOPT_TIMERDATA, v);
        uv_timer_init(loop, &v->timer);
        *ret = v;
        return 0;
}

static void on_client_timer_closed(uv_handle_t *h) {
        vault_client *v = container_of((uv_timer_t *) h, vault_client, timer);
        free(v);
}

void vault_client_free(vault_client *v) {
        if (!v)
                return;
        v->freeing = true;
        while (v->reqs) {
                vault_req *r = v->reqs;
                if (r->easy)
                        curl_multi_remove_handle(v->multi, r->easy);
                /* Let the owner free its context; nothing else happens now. */
                vault_response resp = { .cancelled = true };
                snprintf(resp.error, sizeof(resp.error), "cancelled: agentd is stopping");
                if (r->retry_timer_init)
                        uv_timer_stop(&r->retry_timer);
                r->cb(&resp, r->userdata);
                req_unlink_free(r);
        }
        if (v->multi)
                curl_multi_cleanup(v->multi);
        free(v->address);
        free(v->namespace_);
        free(v->ca);
        if (v->loop)
                uv_close((uv_handle_t *) &v->timer, on_client_timer_closed);
        else
                free(v);
}

unsigned vault_client_in_flight(const vault_client *v) {
        return v->in_flight;
}

int vault_request(vault_client *v, const char *method, const char *path, const char *token, json_object *body,
                  vault_cb cb, void *userdata) {
        return vault_request_ex(v, method, path, token, body, NULL, cb, userdata);
}

int vault_request_ex(vault_client *v, const char *method, const char *path, const char *token, json_object *body,
                     const vault_request_opts *opts, vault_cb cb, void *userdata) {
        vault_req *r = calloc(1, sizeof(*r));
        if (!r)
                return -ENOMEM;
        r->v = v;
        r->create = opts && opts->create;
        r->timeout_ms = opts && opts->timeout_ms > 0 ? opts->timeout_ms : v->timeout_ms;
        r->max_retries = opts && opts->max_retries >= 0 ? (unsigned) opts->max_retries : v->max_retries;
        r->cb = cb;
        r->userdata = userdata;
        r->method = strdup(method);
        if (asprintf(&r->url, "%s/v1/%s", v->address, path) < 0)
                r->url = NULL;
        if (body) {
                const char *s = json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN);
                r->body = strdup(s ? s : "{}");
                /* The serialization stays cached in the caller's object (a login
                 * body holds the secret_id): wipe it, it is rebuilt on demand. */
                if (s)
                        explicit_zero((char *) s, strlen(s));
        }
        r->headers = curl_slist_append(NULL, "Content-Type: application/json");
        r->headers = curl_slist_append(r->headers, "Accept: application/json");
        if (token) {
                r->token_len = strlen(token) + 16;
                r->token = malloc(r->token_len);
                if (r->token) {
                        snprintf(r->token, r->token_len, "X-Vault-Token: %s", token);
                        r->headers = curl_slist_append(r->headers, r->token);
                }
        }
        if (v->namespace_) {
                char h[512];
                snprintf(h, sizeof(h), "X-Vault-Namespace: %s", v->namespace_);
                r->headers = curl_slist_append(r->headers, h);
        }
        if (!r->method || !r->url || !r->headers || (body && !r->body) || (token && !r->token)) {
                req_free_now(r);
                return -ENOMEM;
        }
        r->next = v->reqs;
        if (v->reqs)
                v->reqs->prev = r;
        v->reqs = r;
        v->in_flight++;
        int k = req_start(r);
        if (k < 0) {
                v->in_flight--;
                req_unlink_free(r);
                return k;
        }
        return 0;
}
