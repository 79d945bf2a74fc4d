/* The credential broker. The AppRole secret_id lives on disk only sealed by
 * the TPM (or, when allowed, a software key); it is unsealed off the loop
 * thread, used for one login and wiped. The session token lives in mlock'd,
 * non-dumpable memory and is renewed at about 2/3 of its TTL. Each sandbox
 * whose task names VaultPolicies gets child tokens of the session token; an
 * accessor is written durably to state/broker/accessors/ before its token is
 * handed out, so a crash cannot leave a live token behind: at start every
 * recorded accessor is revoked. Tokens appear in no log, env or file. */
#include "broker.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "broker/seal.h"
#include "fileio.h"
#include "broker/vault.h"
#include "auditlog.h"
#include "log.h"
#include "macro.h"
#include "server.h"

struct sandbox_creds {
        list_head link;
        broker *b;
        char sandbox_id[16];
        char *task;
        char **policies;
        uint64_t ttl_s;
        uint8_t *token;          /* secure memory */
        size_t token_len, token_cap;
        char accessor[128];
        uint64_t expires_ms;     /* realtime */
        uv_timer_t reissue;
        bool reissue_init;
        bool released;
        bool issuing;
        bool waiting;            /* for the Vault login (reissue is its deadline timer) */
        broker_issue_cb cb;
        void *userdata;
};

struct broker {
        manager *m;
        vault_client *vault;
        char *dir, *accessor_dir, *blob_path, *role_path, *soft_key_path;
        char *vault_state, *tpm_state;
        bool enrolled;
        char *role_id;
        uint8_t *session;        /* secure memory */
        size_t session_len;
        uint64_t session_expires_ms;
        char session_accessor[128];
        bool logging_in;
        unsigned login_failures;
        uv_timer_t renew_timer, retry_timer;
        list_head creds;
        unsigned pending_revokes;
        bool stopping;
        unsigned closing;
        unsigned revoke_failures;
        bool locked;              /* incident lockdown: no new tokens */
};

static void set_str(char **field, const char *fmt, const char *arg) {
        free(*field);
        *field = NULL;
        if (asprintf(field, fmt, arg ? arg : "") < 0)
                *field = NULL;
}

static uint64_t realtime_ms(void) {
        return now_realtime_msec();
}

/* ---- secure copies ---------------------------------------------------------- */

static void session_clear(broker *b) {
        secure_free(b->session, b->session_len + 1);
        b->session = NULL;
        b->session_len = 0;
}

static int session_set(broker *b, const char *token) {
        size_t n = strlen(token);
        uint8_t *p = secure_alloc(n + 1);
        if (!p)
                return -ENOMEM;
        memcpy(p, token, n + 1);
        session_clear(b);
        b->session = p;
        b->session_len = n;
        return 0;
}

/* json-c keeps strings in heap it frees without wiping: scrub what we read. */
static void scrub_json_string(json_object *o) {
        if (o && json_object_is_type(o, json_type_string)) {
                char *s = (char *) json_object_get_string(o);
                explicit_zero(s, strlen(s));
        }
}

static json_object *auth_field(json_object *body, const char *key) {
        json_object *auth, *v;
        if (!body || !json_object_object_get_ex(body, "auth", &auth) || !json_object_object_get_ex(auth, key, &v))
                return NULL;
        return v;
}

/* ---- files -------------------------------------------------------------------- */

static void fsync_dir(const char *dir) {
        int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0) {
                (void) fsync(fd);
                close(fd);
        }
}

static bool accessor_valid(const char *a) {
        size_t n = strlen(a);
        if (n == 0 || n > 100 || a[0] == '.')
                return false;
        for (const char *p = a; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' || *p == '-'))
                        return false;
        return true;
}

static int record_accessor(broker *b, const char *accessor, const char *sandbox_id) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", b->accessor_dir, accessor);
        int r = write_file_atomic(path, sandbox_id, strlen(sandbox_id));
        if (r == 0)
                fsync_dir(b->accessor_dir);
        return r;
}

/* ---- revocation ----------------------------------------------------------------- */

struct revoke_batch {
        unsigned refs;            /* the owner + every request still out */
        unsigned outstanding, confirmed;
        bool reported;
        uv_timer_t deadline;
        broker_revoke_cb cb;
        void *userdata;
};

typedef struct revoke_ctx {
        broker *b;
        char accessor[128];
        revoke_batch *batch;
} revoke_ctx;

static void schedule_retry(broker *b, uint64_t ms);

static void batch_deadline_closed(uv_handle_t *h) {
        free(h->data);
}

static void batch_unref(revoke_batch *rb) {
        if (--rb->refs == 0) {
                rb->deadline.data = rb;
                uv_close((uv_handle_t *) &rb->deadline, batch_deadline_closed);
        }
}

static void batch_report(revoke_batch *rb) {
        if (rb->reported)
                return;
        rb->reported = true;
        uv_timer_stop(&rb->deadline);
        rb->cb(rb->confirmed, rb->outstanding, rb->userdata);
        batch_unref(rb);
}

static void on_batch_deadline(uv_timer_t *t) {
        batch_report(container_of(t, revoke_batch, deadline));
}

static void on_revoked(const vault_response *resp, void *userdata) {
        revoke_ctx *rc = userdata;
        broker *b = rc->b;
        b->pending_revokes--;
        if (resp->cancelled) {
                /* Stopping: the accessor file stays and is revoked at the next start. */
                if (rc->batch)
                        batch_unref(rc->batch);
                free(rc);
                return;
        }
        bool done = resp->status == 204 || resp->status == 200 || resp->status == 400;
        if (rc->batch) {
                if (done && !rc->batch->reported) {
                        rc->batch->confirmed++;
                        rc->batch->outstanding--;
                        if (rc->batch->outstanding == 0)
                                batch_report(rc->batch);
                }
                batch_unref(rc->batch);
        }
        /* 204, or 200 with "no token found": either way it is gone. 400 = invalid/expired accessor. */
        if (done) {
                char path[PATH_MAX];
                snprintf(path, sizeof(path), "%s/%s", b->accessor_dir, rc->accessor);
                (void) unlink(path);
                b->revoke_failures = 0;
                log_info("broker: token %s revoked", rc->accessor);
                json_object *ev = json_object_new_object();
                json_object_object_add(ev, "accessor", json_object_new_string(rc->accessor));
                json_object_object_add(ev, "vault_status", json_object_new_int((int) resp->status));
                audit_event(b->m, "token.revoked", NULL, ev);
        } else {
                log_warning("broker: revoking token %s failed (%s); will retry", rc->accessor, resp->error);
                b->revoke_failures++;
                schedule_retry(b, 1000ull << (b->revoke_failures < 6 ? b->revoke_failures : 6));
        }
        free(rc);
}

static void revoke_accessor_batch(broker *b, const char *accessor, revoke_batch *batch) {
        if (batch)
                batch->outstanding++;
        if (!b->vault || !b->session)
                return; /* the file stays; retried once there is a session */
        revoke_ctx *rc = calloc(1, sizeof(*rc));
        if (!rc)
                return;
        rc->b = b;
        if (batch) {
                rc->batch = batch;
                batch->refs++;
        }
        snprintf(rc->accessor, sizeof(rc->accessor), "%s", accessor);
        json_object *body = json_object_new_object();
        json_object_object_add(body, "accessor", json_object_new_string(accessor));
        b->pending_revokes++;
        if (vault_request(b->vault, "POST", "auth/token/revoke-accessor", (const char *) b->session, body, on_revoked, rc) < 0) {
                b->pending_revokes--;
                if (rc->batch)
                        batch_unref(rc->batch);
                free(rc);
        }
        json_object_put(body);
}

static void revoke_accessor(broker *b, const char *accessor) {
        revoke_accessor_batch(b, accessor, NULL);
}

/* Every recorded accessor whose sandbox is not live (after a crash: all of them). */
static void revoke_orphans(broker *b) {
        DIR *d = opendir(b->accessor_dir);
        if (!d)
                return;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (!accessor_valid(de->d_name) || strstr(de->d_name, ".tmp"))
                        continue;
                bool live = streq(de->d_name, b->session_accessor) && b->session;
                list_head *i, *t;
                list_for_each_safe(i, t, &b->creds) {
                        sandbox_creds *c = container_of(i, sandbox_creds, link);
                        if (!c->released && streq(c->accessor, de->d_name))
                                live = true;
                }
                if (!live)
                        revoke_accessor(b, de->d_name);
        }
        closedir(d);
}

/* ---- session --------------------------------------------------------------------- */

static void start_login(broker *b);

static void on_retry_timer(uv_timer_t *t) {
        broker *b = container_of(t, broker, retry_timer);
        if (b->stopping)
                return;
        if (!b->session)
                start_login(b);
        else
                revoke_orphans(b);
}

static void schedule_retry(broker *b, uint64_t ms) {
        if (!b->stopping)
                uv_timer_start(&b->retry_timer, on_retry_timer, ms, 0);
}

static void session_failed(broker *b, const char *why) {
        set_str(&b->vault_state, "unavailable: %s", why);
        session_clear(b);
        b->login_failures++;
        uint64_t delay = 1000ull << (b->login_failures < 6 ? b->login_failures : 6);
        log_warning("broker: Vault session unavailable: %s (next attempt in %llus)", why, (unsigned long long) (delay / 1000));
        schedule_retry(b, delay);
}

static void on_renew_timer(uv_timer_t *t);
static void create_token(sandbox_creds *c);
static void waiting_fail(sandbox_creds *c, const char *why);

/* The login finished: the spawns that waited for it get their tokens now. */
static void waiting_flush(broker *b) {
        list_head *i, *t;
        list_for_each_safe(i, t, &b->creds) {
                sandbox_creds *c = container_of(i, sandbox_creds, link);
                if (!c->waiting)
                        continue;
                if (b->locked) {
                        waiting_fail(c, "spawning is locked down after an incident revocation");
                        continue;
                }
                c->waiting = false;
                uv_timer_stop(&c->reissue);
                create_token(c);
        }
}

static void session_established(broker *b, json_object *body) {
        json_object *tok = auth_field(body, "client_token"), *lease = auth_field(body, "lease_duration");
        if (!tok || session_set(b, json_object_get_string(tok)) < 0) {
                session_failed(b, "Vault's login answer has no client_token");
                return;
        }
        scrub_json_string(tok);
        int64_t ttl = lease ? json_object_get_int64(lease) : 0;
        b->session_expires_ms = ttl > 0 ? realtime_ms() + (uint64_t) ttl * 1000 : 0;
        b->login_failures = 0;
        set_str(&b->vault_state, "ok%s", NULL);
        json_object *acc = auth_field(body, "accessor");
        /* The session is a token too: recorded, so an incident can revoke it even later. */
        if (acc && accessor_valid(json_object_get_string(acc))) {
                snprintf(b->session_accessor, sizeof(b->session_accessor), "%s", json_object_get_string(acc));
                (void) record_accessor(b, b->session_accessor, "session");
        }
        log_info("broker: Vault session established (accessor %s, ttl %llds)", acc ? json_object_get_string(acc) : "?",
                 (long long) ttl);
        if (ttl > 0)
                uv_timer_start(&b->renew_timer, on_renew_timer, (uint64_t) ttl * 1000 * 2 / 3, 0);
        revoke_orphans(b);
        waiting_flush(b);
}

static void on_renewed(const vault_response *resp, void *userdata) {
        broker *b = userdata;
        if (resp->cancelled)
                return;
        if (resp->status == 200) {
                json_object *lease = auth_field(resp->body, "lease_duration");
                int64_t ttl = lease ? json_object_get_int64(lease) : 0;
                json_object *tok = auth_field(resp->body, "client_token");
                scrub_json_string(tok);
                if (ttl > 0) {
                        b->session_expires_ms = realtime_ms() + (uint64_t) ttl * 1000;
                        uv_timer_start(&b->renew_timer, on_renew_timer, (uint64_t) ttl * 1000 * 2 / 3, 0);
                        return;
                }
        }
        /* Renewal refused or impossible: a fresh login. */
        log_notice("broker: session renewal failed (%s); logging in again", resp->error[0] ? resp->error : "no TTL");
        session_clear(b);
        start_login(b);
}

static void on_renew_timer(uv_timer_t *t) {
        broker *b = container_of(t, broker, renew_timer);
        if (!b->session || b->stopping)
                return;
        json_object *body = json_object_new_object();
        if (vault_request(b->vault, "POST", "auth/token/renew-self", (const char *) b->session, body, on_renewed, b) < 0)
                start_login(b);
        json_object_put(body);
}

static void on_login(const vault_response *resp, void *userdata) {
        broker *b = userdata;
        b->logging_in = false;
        if (resp->cancelled)
                return;
        if (resp->status == 200)
                session_established(b, resp->body);
        else
                session_failed(b, resp->error[0] ? resp->error : "login failed");
        json_object *tok = auth_field(resp->body, "client_token");
        scrub_json_string(tok);
}

typedef struct unseal_work {
        uv_work_t req;
        broker *b;
        char *tcti, *soft_key, *blob;
        size_t blob_len;
        uint8_t *secret;
        size_t secret_len;
        int r;
        seal_error err;
        /* for enrol */
        bool enroll;
        uint8_t *plain;
        size_t plain_len;
        seal_kind kind;
        void *out_blob;
        size_t out_blob_len;
        rpc_call *call;
} unseal_work;

static void unseal_work_free(unseal_work *w) {
        free(w->tcti);
        free(w->soft_key);
        free(w->blob);
        secure_free(w->secret, w->secret_len);
        secure_free(w->plain, w->plain_len);
        free(w->out_blob);
        free(w);
}

static void do_unseal(uv_work_t *req) {
        unseal_work *w = container_of(req, unseal_work, req);
        w->r = unseal_secret(w->tcti, w->soft_key, w->blob, w->blob_len, &w->secret, &w->secret_len, &w->err);
}

static void after_unseal(uv_work_t *req, int status) {
        unseal_work *w = container_of(req, unseal_work, req);
        broker *b = w->b;
        if (b->stopping || status < 0) {
                b->logging_in = false;
                unseal_work_free(w);
                return;
        }
        if (w->r < 0) {
                char why[700];
                snprintf(why, sizeof(why), "cannot unseal the AppRole secret (%s: %s)", w->err.step, w->err.message);
                set_str(&b->tpm_state, "unavailable: %s", w->err.message);
                b->logging_in = false;
                session_failed(b, why);
                unseal_work_free(w);
                return;
        }
        json_object *body = json_object_new_object();
        json_object_object_add(body, "role_id", json_object_new_string(b->role_id));
        json_object_object_add(body, "secret_id", json_object_new_string_len((const char *) w->secret, (int) w->secret_len));
        char path[300];
        snprintf(path, sizeof(path), "auth/%s/login", b->m->config->vault_approle_path ? b->m->config->vault_approle_path : "approle");
        if (vault_request(b->vault, "POST", path, NULL, body, on_login, b) < 0) {
                b->logging_in = false;
                session_failed(b, "cannot start the login request");
        }
        json_object *sid;
        if (json_object_object_get_ex(body, "secret_id", &sid))
                scrub_json_string(sid);
        json_object_put(body);
        unseal_work_free(w);
}

static void start_login(broker *b) {
        if (b->logging_in || b->stopping || !b->vault || !b->enrolled)
                return;
        unseal_work *w = calloc(1, sizeof(*w));
        if (!w)
                return;
        w->b = b;
        w->tcti = strdup(b->m->config->tpm_tcti ? b->m->config->tpm_tcti : "");
        w->soft_key = b->m->config->tpm_allow_software_key ? strdup(b->soft_key_path) : NULL;
        if (read_file_bounded(b->blob_path, 65536, &w->blob, &w->blob_len) < 0) {
                session_failed(b, "the sealed AppRole secret cannot be read");
                unseal_work_free(w);
                return;
        }
        b->logging_in = true;
        if (uv_queue_work(b->m->loop, &w->req, do_unseal, after_unseal) < 0) {
                b->logging_in = false;
                unseal_work_free(w);
        }
}

/* ---- probing the TPM --------------------------------------------------------------- */

typedef struct probe_work {
        uv_work_t req;
        broker *b;
        char *tcti;
        int r;
        seal_error err;
} probe_work;

static void do_probe(uv_work_t *req) {
        probe_work *w = container_of(req, probe_work, req);
        w->r = seal_probe(w->tcti, &w->err);
}

static void after_probe(uv_work_t *req, int status) {
        probe_work *w = container_of(req, probe_work, req);
        broker *b = w->b;
        if (!b->stopping) {
                if (w->r == 0)
                        set_str(&b->tpm_state, "ok%s", NULL);
                else if (b->m->config->tpm_allow_software_key)
                        set_str(&b->tpm_state, "software (no TPM: %s; AllowSoftwareKey=yes, for development only)", w->err.message);
                else
                        set_str(&b->tpm_state, "unavailable: %s", w->err.message);
        }
        free(w->tcti);
        free(w);
}

static void probe_tpm(broker *b) {
        probe_work *w = calloc(1, sizeof(*w));
        if (!w)
                return;
        w->b = b;
        w->tcti = strdup(b->m->config->tpm_tcti ? b->m->config->tpm_tcti : "");
        if (uv_queue_work(b->m->loop, &w->req, do_probe, after_probe) < 0) {
                free(w->tcti);
                free(w);
        }
}

/* ---- public ---------------------------------------------------------------------------- */

int broker_init(manager *m) {
        broker *b = calloc(1, sizeof(*b));
        if (!b)
                return -ENOMEM;
        b->m = m;
        list_init(&b->creds);
        m->broker = b;
        uv_timer_init(m->loop, &b->renew_timer);
        uv_timer_init(m->loop, &b->retry_timer);
        b->renew_timer.data = b->retry_timer.data = b;
        if (asprintf(&b->dir, "%s/broker", m->config->state_directory) < 0 ||
            asprintf(&b->accessor_dir, "%s/broker/accessors", m->config->state_directory) < 0 ||
            asprintf(&b->blob_path, "%s/broker/approle-secret.sealed", m->config->state_directory) < 0 ||
            asprintf(&b->role_path, "%s/broker/approle-role-id", m->config->state_directory) < 0 ||
            asprintf(&b->soft_key_path, "%s/broker/software-seal.key", m->config->state_directory) < 0)
                return -ENOMEM;
        (void) mkdir(b->dir, 0700);
        (void) mkdir(b->accessor_dir, 0700);
        size_t n;
        if (read_file_bounded(b->role_path, 4096, &b->role_id, &n) == 0 && access(b->blob_path, R_OK) == 0)
                b->enrolled = true;

        if (!m->config->vault_address) {
                set_str(&b->vault_state, "unconfigured%s", NULL);
                set_str(&b->tpm_state, b->enrolled ? "not checked (Vault is unconfigured)%s" : "unconfigured%s", NULL);
                return 0;
        }
        set_str(&b->tpm_state, "checking%s", NULL);
        probe_tpm(b);
        vault_config vc = {
                .address = m->config->vault_address,
                .namespace_ = m->config->vault_namespace,
                .ca_certificate = m->config->vault_ca_certificate,
                .max_retries = 3,
                .base_backoff_ms = 200,
        };
        int r = vault_client_new(m->loop, &vc, &b->vault);
        if (r < 0) {
                set_str(&b->vault_state, "unavailable: cannot create the HTTP client%s", NULL);
                return 0;
        }
        if (!b->enrolled) {
                set_str(&b->vault_state, "unavailable: not enrolled (agentctl broker enroll --role-id ID --secret-id-file FILE)%s", NULL);
                return 0;
        }
        set_str(&b->vault_state, "unavailable: logging in%s", NULL);
        start_login(b);
        return 0;
}

static void creds_free(sandbox_creds *c) {
        secure_free(c->token, c->token_cap);
        free(c->task);
        strv_free(c->policies);
        free(c);
}

static void on_reissue_closed(uv_handle_t *h) {
        creds_free(h->data);
}

static void creds_destroy(sandbox_creds *c) {
        list_del(&c->link);
        if (c->reissue_init) {
                c->reissue.data = c;
                uv_close((uv_handle_t *) &c->reissue, on_reissue_closed);
        } else
                creds_free(c);
}

void broker_shutdown(manager *m) {
        broker *b = m->broker;
        if (!b)
                return;
        b->stopping = true;
        uv_timer_stop(&b->renew_timer);
        uv_timer_stop(&b->retry_timer);
        list_head *i, *t;
        list_for_each_safe(i, t, &b->creds) {
                sandbox_creds *c = container_of(i, sandbox_creds, link);
                if (c->waiting)
                        waiting_fail(c, "agentd is stopping");
        }
}

static void on_broker_timer_closed(uv_handle_t *h) {
        broker *b = h->data;
        if (--b->closing == 0)
                free(b);
}

void broker_free(manager *m) {
        broker *b = m->broker;
        if (!b)
                return;
        b->stopping = true;
        /* Cancel Vault calls first: their callbacks still see live creds. */
        vault_client_free(b->vault);
        b->vault = NULL;
        list_head *i, *t;
        list_for_each_safe(i, t, &b->creds)
                creds_destroy(container_of(i, sandbox_creds, link));
        session_clear(b);
        b->closing = 2;
        uv_close((uv_handle_t *) &b->renew_timer, on_broker_timer_closed);
        uv_close((uv_handle_t *) &b->retry_timer, on_broker_timer_closed);
        free(b->dir);
        free(b->accessor_dir);
        free(b->blob_path);
        free(b->role_path);
        free(b->soft_key_path);
        free(b->vault_state);
        free(b->tpm_state);
        free(b->role_id);
        m->broker = NULL;
}

const char *broker_vault_state(manager *m) {
        broker *b = m->broker;
        return b && b->vault_state ? b->vault_state : "unconfigured";
}

const char *broker_tpm_state(manager *m) {
        broker *b = m->broker;
        return b && b->tpm_state ? b->tpm_state : "unconfigured";
}

const char *broker_unavailable_reason(manager *m) {
        broker *b = m->broker;
        if (!b || !m->config->vault_address)
                return "Vault is unconfigured ([Vault] Address= in agentd.conf)";
        /* While it logs in, a spawn waits for it (broker_issue, BROKER_LOGIN_WAIT_MS). */
        if (!b->session && !(b->logging_in && !b->locked))
                return b->vault_state;
        return NULL;
}

unsigned broker_tokens_live(manager *m) {
        broker *b = m->broker;
        unsigned n = 0;
        list_head *i, *t;
        if (!b)
                return 0;
        list_for_each_safe(i, t, &b->creds) {
                sandbox_creds *c = container_of(i, sandbox_creds, link);
                if (!c->released && c->token)
                        n++;
        }
        return n;
}

static void waiting_fail(sandbox_creds *c, const char *why) {
        c->waiting = false;
        uv_timer_stop(&c->reissue);
        broker_issue_cb cb = c->cb;
        c->cb = NULL;
        if (cb)
                cb(NULL, why, c->userdata);
        creds_destroy(c);
}

static void on_reissue(uv_timer_t *t) {
        sandbox_creds *c = container_of(t, sandbox_creds, reissue);
        if (c->waiting) {
                char why[600];
                snprintf(why, sizeof(why), "the Vault login did not finish within %d s (%s)", BROKER_LOGIN_WAIT_MS / 1000,
                         c->b->vault_state ? c->b->vault_state : "?");
                waiting_fail(c, why);
                return;
        }
        if (!c->released && !c->b->stopping)
                create_token(c);
}

static void on_token_created(const vault_response *resp, void *userdata) {
        sandbox_creds *c = userdata;
        broker *b = c->b;
        c->issuing = false;
        if (resp->cancelled) {
                /* The creds go with broker_free; a spawn still waiting is told why. */
                if (c->cb) {
                        broker_issue_cb cb = c->cb;
                        c->cb = NULL;
                        cb(NULL, "agentd is stopping", c->userdata);
                }
                return;
        }
        json_object *tok = auth_field(resp->body, "client_token"), *acc = auth_field(resp->body, "accessor"),
                    *lease = auth_field(resp->body, "lease_duration");
        const char *error = NULL;
        char why[700];
        if (resp->status != 200 || !tok || !acc || !accessor_valid(json_object_get_string(acc))) {
                snprintf(why, sizeof(why), "Vault: %s", resp->error[0] ? resp->error : "no token in the answer");
                error = why;
        } else if (record_accessor(b, json_object_get_string(acc), c->sandbox_id) < 0) {
                /* Not recorded durably = not handed out: revoke it now. */
                snprintf(why, sizeof(why), "cannot record the token's accessor durably");
                error = why;
                revoke_accessor(b, json_object_get_string(acc));
        }
        if (c->released) {
                /* The sandbox ended while its token was being made. */
                if (!error)
                        revoke_accessor(b, json_object_get_string(acc));
                scrub_json_string(tok);
                creds_destroy(c);
                return;
        }
        if (!error) {
                const char *t = json_object_get_string(tok);
                size_t n = strlen(t);
                uint8_t *p = secure_alloc(n + 1);
                if (!p) {
                        error = "out of memory";
                        revoke_accessor(b, json_object_get_string(acc));
                } else {
                        memcpy(p, t, n + 1);
                        secure_free(c->token, c->token_cap);
                        c->token = p;
                        c->token_len = n;
                        c->token_cap = n + 1;
                        snprintf(c->accessor, sizeof(c->accessor), "%s", json_object_get_string(acc));
                        int64_t ttl = lease ? json_object_get_int64(lease) : (int64_t) c->ttl_s;
                        c->expires_ms = realtime_ms() + (uint64_t) ttl * 1000;
                        log_info("broker: sandbox %s: token issued (accessor %s, ttl %llds)", c->sandbox_id, c->accessor,
                                 (long long) ttl);
                        json_object *ev = json_object_new_object(), *pv = json_object_new_array();
                        for (size_t i = 0; c->policies && c->policies[i]; i++)
                                json_object_array_add(pv, json_object_new_string(c->policies[i]));
                        json_object_object_add(ev, "accessor", json_object_new_string(c->accessor));
                        json_object_object_add(ev, "policies", pv);
                        json_object_object_add(ev, "ttl", json_object_new_int64(ttl));
                        audit_event(b->m, "token.issued", c->sandbox_id, ev);
                        if (!c->reissue_init) {
                                uv_timer_init(b->m->loop, &c->reissue);
                                c->reissue_init = true;
                        }
                        /* A fresh token well before this one expires. */
                        if (ttl > 3)
                                uv_timer_start(&c->reissue, on_reissue, (uint64_t) ttl * 1000 * 2 / 3, 0);
                }
        }
        scrub_json_string(tok);
        if (c->cb) {
                broker_issue_cb cb = c->cb;
                c->cb = NULL;
                cb(error ? NULL : c, error, c->userdata);
                if (error)
                        creds_destroy(c);
        } else if (error)
                log_warning("broker: sandbox %s: re-issuing its token failed: %s", c->sandbox_id, error);
}

static void create_token(sandbox_creds *c) {
        broker *b = c->b;
        json_object *body = json_object_new_object();
        json_object *pol = json_object_new_array();
        for (size_t i = 0; c->policies && c->policies[i]; i++)
                json_object_array_add(pol, json_object_new_string(c->policies[i]));
        json_object_object_add(body, "policies", pol);
        char ttl[32], name[64];
        snprintf(ttl, sizeof(ttl), "%llus", (unsigned long long) c->ttl_s);
        json_object_object_add(body, "ttl", json_object_new_string(ttl));
        snprintf(name, sizeof(name), "agentd-%s", c->sandbox_id);
        json_object_object_add(body, "display_name", json_object_new_string(name));
        json_object_object_add(body, "renewable", json_object_new_boolean(false));
        json_object *meta = json_object_new_object();
        json_object_object_add(meta, "agentd_sandbox", json_object_new_string(c->sandbox_id));
        json_object_object_add(meta, "agentd_task", json_object_new_string(c->task));
        json_object_object_add(body, "meta", meta);
        c->issuing = true;
        int r = b->session ? vault_request(b->vault, "POST", "auth/token/create", (const char *) b->session, body,
                                           on_token_created, c)
                           : -ENOTCONN;
        json_object_put(body);
        if (r < 0) {
                vault_response resp = { .status = 0 };
                snprintf(resp.error, sizeof(resp.error), "%s", b->session ? "cannot start the request" : "no Vault session");
                on_token_created(&resp, c);
        }
}

int broker_issue(manager *m, const char *sandbox_id, const char *task, char *const *policies, uint64_t ttl_usec,
                 broker_issue_cb cb, void *userdata) {
        broker *b = m->broker;
        if (!b || !b->vault || b->locked || (!b->session && !b->logging_in))
                return -ENOTCONN;
        sandbox_creds *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->b = b;
        snprintf(c->sandbox_id, sizeof(c->sandbox_id), "%s", sandbox_id);
        c->task = strdup(task);
        size_t n = strv_length(policies);
        c->policies = calloc(n + 1, sizeof(char *));
        for (size_t i = 0; c->policies && i < n; i++)
                c->policies[i] = strdup(policies[i]);
        c->ttl_s = ttl_usec / 1000000 ? ttl_usec / 1000000 : 900;
        c->cb = cb;
        c->userdata = userdata;
        list_add_tail(&b->creds, &c->link);
        if (!b->session) {
                /* Right after enrolment, a restart or socket activation: wait for the login. */
                c->waiting = true;
                uv_timer_init(b->m->loop, &c->reissue);
                c->reissue_init = true;
                uv_timer_start(&c->reissue, on_reissue, BROKER_LOGIN_WAIT_MS, 0);
                return 0;
        }
        create_token(c);
        return 0;
}

void broker_release(manager *m, sandbox_creds *c) {
        broker *b = m->broker;
        if (!c || !b)
                return;
        c->released = true;
        if (c->reissue_init)
                uv_timer_stop(&c->reissue);
        /* Every accessor recorded for this sandbox (earlier re-issued ones too). */
        DIR *d = opendir(b->accessor_dir);
        struct dirent *de;
        while (d && (de = readdir(d))) {
                if (!accessor_valid(de->d_name))
                        continue;
                char path[PATH_MAX], *owner = NULL;
                size_t n;
                snprintf(path, sizeof(path), "%s/%s", b->accessor_dir, de->d_name);
                if (read_file_bounded(path, 64, &owner, &n) == 0 && streq(owner, c->sandbox_id))
                        revoke_accessor(b, de->d_name);
                free(owner);
        }
        if (d)
                closedir(d);
        if (!c->issuing)
                creds_destroy(c);
        /* else: freed... the pending create sees `released` and revokes; keep it listed. */
}

static revoke_batch *batch_new(broker *b, broker_revoke_cb cb, void *userdata, uint64_t deadline_ms) {
        revoke_batch *rb = calloc(1, sizeof(*rb));
        if (!rb)
                return NULL;
        rb->refs = 1;
        rb->cb = cb;
        rb->userdata = userdata;
        uv_timer_init(b->m->loop, &rb->deadline);
        uv_timer_start(&rb->deadline, on_batch_deadline, deadline_ms, 0);
        return rb;
}

static void batch_start_done(revoke_batch *rb) {
        if (rb->outstanding == 0)
                batch_report(rb);
}

/* Revokes the tokens of these sandboxes (by their recorded accessors). */
void broker_revoke_sandboxes(manager *m, char *const *sandbox_ids, uint64_t deadline_ms, broker_revoke_cb cb, void *userdata) {
        broker *b = m->broker;
        if (!b) {
                cb(0, 0, userdata);
                return;
        }
        revoke_batch *rb = batch_new(b, cb, userdata, deadline_ms);
        if (!rb) {
                cb(0, 0, userdata);
                return;
        }
        DIR *d = opendir(b->accessor_dir);
        struct dirent *de;
        while (d && (de = readdir(d))) {
                if (!accessor_valid(de->d_name) || strstr(de->d_name, ".tmp"))
                        continue;
                char path[PATH_MAX], *owner = NULL;
                size_t n;
                snprintf(path, sizeof(path), "%s/%s", b->accessor_dir, de->d_name);
                if (read_file_bounded(path, 64, &owner, &n) == 0)
                        for (size_t i = 0; sandbox_ids && sandbox_ids[i]; i++)
                                if (streq(owner, sandbox_ids[i]))
                                        revoke_accessor_batch(b, de->d_name, rb);
                free(owner);
        }
        if (d)
                closedir(d);
        batch_start_done(rb);
}

typedef struct all_ctx {
        broker *b;
        revoke_batch *rb;
} all_ctx;

static void on_session_revoked(const vault_response *resp, void *userdata) {
        all_ctx *ac = userdata;
        broker *b = ac->b;
        revoke_batch *rb = ac->rb;
        if (resp->cancelled) {
                batch_unref(rb);
                free(ac);
                return;
        }
        if (resp->status == 204 || resp->status == 200) {
                /* Vault revoked the session and, with it, every child token. */
                DIR *d = opendir(b->accessor_dir);
                struct dirent *de;
                unsigned n = 0;
                while (d && (de = readdir(d))) {
                        if (!accessor_valid(de->d_name))
                                continue;
                        char path[PATH_MAX];
                        snprintf(path, sizeof(path), "%s/%s", b->accessor_dir, de->d_name);
                        if (unlink(path) == 0)
                                n++;
                }
                if (d)
                        closedir(d);
                log_notice("broker: session token revoked; Vault revoked its %u recorded token(s) with it", n);
                json_object *ev = json_object_new_object();
                json_object_object_add(ev, "accessor", json_object_new_string(b->session_accessor));
                json_object_object_add(ev, "cascade", json_object_new_int((int) n));
                audit_event(b->m, "token.revoked", NULL, ev);
                if (!rb->reported) {
                        rb->confirmed += rb->outstanding;
                        rb->outstanding = 0;
                        batch_report(rb);
                }
        } else {
                log_warning("broker: revoking the session failed (%s); every token stays pending", resp->error);
                schedule_retry(b, 2000);
        }
        session_clear(b);
        set_str(&b->vault_state, "unavailable: session revoked by an incident lockdown (agentctl unlock)%s", NULL);
        batch_unref(rb);
        free(ac);
}

/* Incident: revoke the session token, which Vault cascades to every child. */
void broker_revoke_all(manager *m, uint64_t deadline_ms, broker_revoke_cb cb, void *userdata) {
        broker *b = m->broker;
        if (!b) {
                cb(0, 0, userdata);
                return;
        }
        b->locked = true;
        uv_timer_stop(&b->renew_timer);
        list_head *i, *t;
        list_for_each_safe(i, t, &b->creds) {
                sandbox_creds *c = container_of(i, sandbox_creds, link);
                if (c->reissue_init)
                        uv_timer_stop(&c->reissue);
        }
        revoke_batch *rb = batch_new(b, cb, userdata, deadline_ms);
        if (!rb) {
                cb(0, 0, userdata);
                return;
        }
        /* Count what is recorded: children and the session itself. */
        DIR *d = opendir(b->accessor_dir);
        struct dirent *de;
        while (d && (de = readdir(d)))
                if (accessor_valid(de->d_name) && !strstr(de->d_name, ".tmp"))
                        rb->outstanding++;
        if (d)
                closedir(d);
        all_ctx *ac = calloc(1, sizeof(*ac));
        if (!ac || !b->vault || !b->session) {
                free(ac);
                /* No session (Vault down): everything stays recorded and is retried at the next login. */
                schedule_retry(b, 1000);
                batch_report(rb);
                return;
        }
        ac->b = b;
        ac->rb = rb;
        rb->refs++;
        json_object *body = json_object_new_object();
        if (vault_request(b->vault, "POST", "auth/token/revoke-self", (const char *) b->session, body, on_session_revoked, ac) < 0) {
                batch_unref(rb);
                free(ac);
        }
        json_object_put(body);
        batch_start_done(rb);
}

void broker_unlock(manager *m) {
        broker *b = m->broker;
        if (!b)
                return;
        b->locked = false;
        if (!b->session)
                start_login(b);
}

unsigned broker_revocations_pending(manager *m) {
        broker *b = m->broker;
        unsigned n = 0;
        if (!b)
                return 0;
        DIR *d = opendir(b->accessor_dir);
        struct dirent *de;
        while (d && (de = readdir(d))) {
                if (!accessor_valid(de->d_name) || strstr(de->d_name, ".tmp"))
                        continue;
                bool live = b->session && streq(de->d_name, b->session_accessor);
                list_head *i, *t;
                list_for_each_safe(i, t, &b->creds) {
                        sandbox_creds *c = container_of(i, sandbox_creds, link);
                        if (!c->released && streq(c->accessor, de->d_name))
                                live = true;
                }
                if (!live)
                        n++;
        }
        if (d)
                closedir(d);
        return n;
}

/* ---- methods ------------------------------------------------------------------------------ */

static sandbox_creds *find_creds(broker *b, const char *sandbox_id) {
        list_head *i, *t;
        list_for_each_safe(i, t, &b->creds) {
                sandbox_creds *c = container_of(i, sandbox_creds, link);
                if (!c->released && streq(c->sandbox_id, sandbox_id))
                        return c;
        }
        return NULL;
}

int rpc_credentials_get(rpc_ctx *ctx, rpc_error *err) {
        broker *b = ctx->m->broker;
        sandbox_creds *c = b ? find_creds(b, ctx->conn->sandbox_id) : NULL;
        if (!c || !c->token) {
                rpc_error_set(err, RPC_E_NOT_FOUND, "this sandbox's task has no Vault credentials");
                return -ENOENT;
        }
        uint64_t now = realtime_ms();
        if (c->expires_ms <= now) {
                rpc_error_set(err, RPC_E_BACKEND_UNAVAILABLE, "Vault: this sandbox's token expired and could not be re-issued");
                return -ESTALE;
        }
        /* The token travels only as a sealed, read-only memfd. */
        int fd = memfd_create("agentd-token", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (fd < 0)
                return -errno;
        if (write(fd, c->token, c->token_len) != (ssize_t) c->token_len ||
            fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0) {
                close(fd);
                return -EIO;
        }
        char path[64];
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        int ro = open(path, O_RDONLY | O_CLOEXEC);
        close(fd);
        if (ro < 0)
                return -errno;
        ctx->reply_fds[0] = ro;
        ctx->n_reply_fds = 1;
        msgpack_pack_map(ctx->pk, 3);
        mp_pack_kv_u64(ctx->pk, "expires_at", c->expires_ms);
        mp_pack_kv_u64(ctx->pk, "ttl", (c->expires_ms - now) / 1000);
        mp_pack_kv_str(ctx->pk, "accessor", c->accessor);
        return 0;
}

int rpc_broker_status(rpc_ctx *ctx, rpc_error *err) {
        manager *m = ctx->m;
        broker *b = m->broker;
        msgpack_pack_map(ctx->pk, b && b->session && b->session_expires_ms ? 6 : 5);
        mp_pack_kv_str(ctx->pk, "vault", broker_vault_state(m));
        mp_pack_kv_str(ctx->pk, "tpm", broker_tpm_state(m));
        mp_pack_kv_bool(ctx->pk, "enrolled", b && b->enrolled);
        mp_pack_kv_u64(ctx->pk, "tokens_live", broker_tokens_live(m));
        mp_pack_kv_u64(ctx->pk, "revocations_pending", broker_revocations_pending(m));
        if (b && b->session && b->session_expires_ms)
                mp_pack_kv_u64(ctx->pk, "session_expires_at", b->session_expires_ms);
        return 0;
}

static void do_seal(uv_work_t *req) {
        unseal_work *w = container_of(req, unseal_work, req);
        w->r = seal_secret(w->tcti, w->soft_key != NULL, w->soft_key, w->plain, w->plain_len, &w->kind, &w->out_blob,
                           &w->out_blob_len, &w->err);
}

typedef struct enroll_reply {
        const char *sealed_with;
} enroll_reply;

static void pack_enroll(msgpack_packer *pk, void *userdata) {
        enroll_reply *e = userdata;
        msgpack_pack_map(pk, 1);
        mp_pack_kv_str(pk, "sealed_with", e->sealed_with);
}

static void after_seal(uv_work_t *req, int status) {
        unseal_work *w = container_of(req, unseal_work, req);
        broker *b = w->b;
        if (status < 0 || w->r < 0) {
                char msg[700];
                snprintf(msg, sizeof(msg), "TPM: cannot seal the secret (%s: %s)%s", w->err.step, w->err.message,
                         w->r == -ENODEV ? "; set [TPM] AllowSoftwareKey=yes to use a software key (development only)" : "");
                rpc_call_error(w->call, RPC_E_BACKEND_UNAVAILABLE, msg);
                unseal_work_free(w);
                return;
        }
        int r = write_file_atomic(b->blob_path, w->out_blob, w->out_blob_len);
        if (r == 0)
                r = write_file_atomic(b->role_path, b->role_id, strlen(b->role_id));
        if (r < 0) {
                rpc_call_error(w->call, RPC_E_INTERNAL, "cannot store the sealed secret");
                unseal_work_free(w);
                return;
        }
        b->enrolled = true;
        enroll_reply e = { .sealed_with = w->kind == SEAL_TPM ? "tpm" : "software" };
        if (w->kind == SEAL_SOFTWARE)
                set_str(&b->tpm_state, "software (AllowSoftwareKey=yes, for development only)%s", NULL);
        else
                set_str(&b->tpm_state, "ok%s", NULL);
        log_info("broker: enrolled AppRole role_id %s, secret sealed with %s", b->role_id, e.sealed_with);
        rpc_call_reply(w->call, pack_enroll, &e);
        unseal_work_free(w);
        /* A new secret: a new session. */
        session_clear(b);
        b->login_failures = 0;
        if (b->vault) {
                set_str(&b->vault_state, "unavailable: logging in%s", NULL);
                start_login(b);
        }
}

int rpc_broker_enroll(rpc_ctx *ctx, rpc_error *err) {
        manager *m = ctx->m;
        broker *b = m->broker;
        const msgpack_object *sid = rpc_param(ctx->params, "secret_id");
        _cleanup_free_ char *role = rpc_param_strdup(ctx->params, "role_id");
        if (!b)
                return -ENOMEM;
        if (!role || !role[0] || strlen(role) > 256 || !sid || sid->via.str.size == 0 || sid->via.str.size > SEAL_SECRET_MAX) {
                rpc_error_set(err, RPC_E_INVALID_PARAMS, "role_id must be 1..256 bytes and secret_id 1..%d bytes", SEAL_SECRET_MAX);
                return -EINVAL;
        }
        unseal_work *w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->b = b;
        w->enroll = true;
        w->tcti = strdup(m->config->tpm_tcti ? m->config->tpm_tcti : "");
        w->soft_key = m->config->tpm_allow_software_key ? strdup(b->soft_key_path) : NULL;
        w->plain_len = sid->via.str.size;
        w->plain = secure_alloc(w->plain_len);
        if (!w->plain) {
                unseal_work_free(w);
                return -ENOMEM;
        }
        memcpy(w->plain, sid->via.str.ptr, w->plain_len);
        /* Wipe the request's copy now that we hold ours. */
        explicit_zero((void *) sid->via.str.ptr, sid->via.str.size);
        free(b->role_id);
        b->role_id = TAKE_PTR(role);
        w->call = rpc_ctx_defer(ctx);
        if (!w->call || uv_queue_work(m->loop, &w->req, do_seal, after_seal) < 0) {
                if (w->call) {
                        rpc_call_free(w->call);
                        ctx->async = NULL;
                }
                unseal_work_free(w);
                return -ENOMEM;
        }
        return 0;
}
