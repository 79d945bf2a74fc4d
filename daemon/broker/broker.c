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

#include "lib/seal.h"
#include "lib/tpmjob.h"
#include "fd.h"
#include "file.h"
#include "memfd.h"
#include "lib/vault.h"
#include "audit/auditlog.h"
#include "core/log.h"
#include "macro.h"
#include "core/server.h"

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
        uint64_t session_gen;    /* the session the token is a child of: it dies with it */
        uint64_t issuing_gen;    /* the session the pending create was sent under */
        uv_timer_t reissue;      /* first the spawn's deadline, then the next re-issue */
        bool reissue_init;
        bool released;
        bool revoked;            /* by an incident revocation: no token again until it ends */
        bool issuing;
        bool create_sent;        /* the pending create may have reached Vault */
        bool once;               /* credentials.request: handed over once, never re-issued */
        bool waiting;            /* for the Vault login (reissue is its deadline timer) */
        broker_issue_cb cb;
        void *userdata;
};

/* A session replaced by a re-login while still valid. It is not revoked: that
 * would cascade to the tokens sandboxes hold. Its children are re-issued under
 * the new session and it is left to expire. */
typedef struct retired_session {
        char accessor[128];
        uint64_t gen;
        uint64_t expires_ms;
} retired_session;

#define MAX_RETIRED 4

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
        uint64_t session_ttl_ms;
        uint64_t session_gen;    /* +1 at every login */
        char session_accessor[128];
        retired_session retired[MAX_RETIRED];
        bool logging_in;
        bool relogin_wanted;     /* renewal failed or is overdue: log in while the session still works */
        unsigned login_failures;
        uv_timer_t renew_timer, retry_timer, expiry_timer;
        tpm_job *unseal_job, *probe_job, *seal_job;
        uint64_t last_probe;     /* uv_now */
        char tpm_late[200];
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
                (void) fsync_directory(b->accessor_dir);
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
static retired_session *find_retired(broker *b, const char *accessor, uint64_t gen);

static void revoke_orphans(broker *b) {
        DIR *d = opendir(b->accessor_dir);
        if (!d)
                return;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (!accessor_valid(de->d_name) || strstr(de->d_name, ".tmp"))
                        continue;
                bool live = (streq(de->d_name, b->session_accessor) && b->session) || find_retired(b, de->d_name, 0);
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

/* A login or a token creation makes something at Vault: it is sent once and its
 * answer awaited this long (never abandoned at a shorter timeout, or Vault's
 * token would live on unknown to us). What a late answer creates is revoked. */
#define VAULT_CREATE_BOUND_MS 120000
/* How long a spawn waits for its sandbox's token (then: backend_unavailable). */
#define ISSUE_DEADLINE_MS 10000

static void start_login(broker *b);
static void create_token(sandbox_creds *c);

static bool session_usable(broker *b) {
        return b->session && (b->session_expires_ms == 0 || realtime_ms() < b->session_expires_ms);
}

static retired_session *find_retired(broker *b, const char *accessor, uint64_t gen) {
        uint64_t now = realtime_ms();
        for (size_t i = 0; i < MAX_RETIRED; i++) {
                retired_session *r = &b->retired[i];
                if (r->gen == 0 || r->expires_ms <= now)
                        continue;
                if ((accessor && streq(r->accessor, accessor)) || (!accessor && r->gen == gen))
                        return r;
        }
        return NULL;
}

/* Until when a token made under session `gen` can work: its parent's expiry. */
static uint64_t parent_expires_ms(broker *b, uint64_t gen) {
        if (gen == b->session_gen)
                return !session_usable(b) ? 0 : b->session_expires_ms ? b->session_expires_ms : UINT64_MAX;
        retired_session *r = find_retired(b, NULL, gen);
        return r ? r->expires_ms : 0;
}

static uint64_t creds_valid_until(sandbox_creds *c) {
        uint64_t p = parent_expires_ms(c->b, c->session_gen);
        return c->expires_ms < p ? c->expires_ms : p;
}

/* The current session is being replaced while it still works: keep it (and its
 * children) alive until it expires instead of revoking it. */
static void session_retire(broker *b) {
        if (!session_usable(b) || !b->session_accessor[0])
                return;
        retired_session *slot = &b->retired[0];
        for (size_t i = 0; i < MAX_RETIRED; i++)
                if (b->retired[i].expires_ms < slot->expires_ms)
                        slot = &b->retired[i];
        snprintf(slot->accessor, sizeof(slot->accessor), "%s", b->session_accessor);
        slot->gen = b->session_gen;
        slot->expires_ms = b->session_expires_ms ? b->session_expires_ms : UINT64_MAX;
}

static void on_retry_timer(uv_timer_t *t) {
        broker *b = container_of(t, broker, retry_timer);
        if (b->stopping)
                return;
        if (!session_usable(b) || b->relogin_wanted)
                start_login(b);
        else
                revoke_orphans(b);
}

static void schedule_retry(broker *b, uint64_t ms) {
        if (!b->stopping)
                uv_timer_start(&b->retry_timer, on_retry_timer, ms, 0);
}

static void session_failed(broker *b, const char *why) {
        b->login_failures++;
        uint64_t delay = 1000ull << (b->login_failures < 6 ? b->login_failures : 6);
        if (session_usable(b)) {
                /* The current session still works: it stays in use until it expires. */
                log_warning("broker: logging in again failed: %s; the current session stays in use (next attempt in %llus)",
                            why, (unsigned long long) (delay / 1000));
                schedule_retry(b, delay);
                return;
        }
        set_str(&b->vault_state, "unavailable: %s", why);
        session_clear(b);
        log_warning("broker: Vault session unavailable: %s (next attempt in %llus)", why, (unsigned long long) (delay / 1000));
        schedule_retry(b, delay);
}

/* The session is gone at Vault (expired, or refused at renewal): so is every
 * token made under it. Log in again; live sandboxes get new tokens then. */
static void session_lost(broker *b, const char *why) {
        char st[700];
        snprintf(st, sizeof(st), "unavailable: %s; logging in again", why);
        set_str(&b->vault_state, "%s", st);
        log_warning("broker: %s", st + strlen("unavailable: "));
        session_clear(b);
        uv_timer_stop(&b->renew_timer);
        uv_timer_stop(&b->expiry_timer);
        b->relogin_wanted = false;
        start_login(b);
}

static void on_renew_timer(uv_timer_t *t);
static void on_expiry_timer(uv_timer_t *t);

/* Renewal at 2/3 of the TTL; if the session is still not renewed at 5/6, a
 * re-login starts (the session stays in use); at the expiry it is dropped. */
static void session_timers_start(broker *b, uint64_t ttl_ms) {
        b->session_ttl_ms = ttl_ms;
        if (ttl_ms == 0)
                return;
        uv_timer_start(&b->renew_timer, on_renew_timer, ttl_ms * 2 / 3, 0);
        uv_timer_start(&b->expiry_timer, on_expiry_timer, ttl_ms * 5 / 6, 0);
}

static void on_expiry_timer(uv_timer_t *t) {
        broker *b = container_of(t, broker, expiry_timer);
        if (!b->session || b->stopping)
                return;
        uint64_t now = realtime_ms();
        if (b->session_expires_ms && now >= b->session_expires_ms) {
                session_lost(b, "the Vault session expired (its renewal did not succeed in time)");
                return;
        }
        log_notice("broker: the session renewal has not succeeded by 5/6 of its TTL; logging in again");
        b->relogin_wanted = true;
        start_login(b);
        if (b->session_expires_ms)
                uv_timer_start(&b->expiry_timer, on_expiry_timer, b->session_expires_ms - now, 0);
}

static void reissue_all(broker *b) {
        list_head *i, *t;
        list_for_each_safe(i, t, &b->creds) {
                sandbox_creds *c = container_of(i, sandbox_creds, link);
                if (!c->released && !c->revoked && !c->issuing && c->token && c->session_gen != b->session_gen)
                        create_token(c);
        }
}

static void create_token(sandbox_creds *c);
static void waiting_fail(sandbox_creds *c, const char *why);
static void on_issue_deadline(uv_timer_t *t);

/* The login finished: the spawns that waited for it get their tokens now
 * (each then waits at most ISSUE_DEADLINE_MS for Vault's answer). */
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
                uv_timer_start(&c->reissue, on_issue_deadline, ISSUE_DEADLINE_MS, 0);
                create_token(c);
        }
}

static void session_established(broker *b, json_object *body) {
        json_object *tok = auth_field(body, "client_token"), *lease = auth_field(body, "lease_duration");
        if (!tok || !json_object_get_string(tok)[0]) {
                session_failed(b, "Vault's login answer has no client_token");
                return;
        }
        /* A re-login while the old session works: the old one is left to expire. */
        session_retire(b);
        if (session_set(b, json_object_get_string(tok)) < 0) {
                session_failed(b, "out of memory");
                return;
        }
        b->session_gen++;
        b->relogin_wanted = false;
        scrub_json_string(tok);
        int64_t ttl = lease ? json_object_get_int64(lease) : 0;
        b->session_expires_ms = ttl > 0 ? realtime_ms() + (uint64_t) ttl * 1000 : 0;
        b->login_failures = 0;
        set_str(&b->vault_state, "ok%s", NULL);
        json_object *acc = auth_field(body, "accessor");
        /* The session is a token too: recorded, so an incident can revoke it even later. */
        b->session_accessor[0] = 0;
        if (acc && accessor_valid(json_object_get_string(acc))) {
                snprintf(b->session_accessor, sizeof(b->session_accessor), "%s", json_object_get_string(acc));
                (void) record_accessor(b, b->session_accessor, "session");
        }
        log_info("broker: Vault session established (accessor %s, ttl %llds)", acc ? json_object_get_string(acc) : "?",
                 (long long) ttl);
        uv_timer_stop(&b->renew_timer);
        uv_timer_stop(&b->expiry_timer);
        session_timers_start(b, ttl > 0 ? (uint64_t) ttl * 1000 : 0);
        revoke_orphans(b);
        /* Live sandboxes' tokens are children of the old session: new ones now. */
        reissue_all(b);
        waiting_flush(b);
}

typedef struct renew_ctx {
        broker *b;
        uint64_t gen;
} renew_ctx;

static void on_renewed(const vault_response *resp, void *userdata) {
        renew_ctx *rc = userdata;
        broker *b = rc->b;
        uint64_t gen = rc->gen;
        free(rc);
        if (resp->cancelled || b->stopping)
                return;
        json_object *tok = auth_field(resp->body, "client_token");
        scrub_json_string(tok);
        if (gen != b->session_gen || !b->session)
                return; /* a re-login replaced that session meanwhile */
        if (resp->status == 200) {
                json_object *lease = auth_field(resp->body, "lease_duration");
                int64_t ttl = lease ? json_object_get_int64(lease) : 0;
                if (ttl > 0) {
                        b->session_expires_ms = realtime_ms() + (uint64_t) ttl * 1000;
                        session_timers_start(b, (uint64_t) ttl * 1000);
                        return;
                }
        }
        char why[600];
        snprintf(why, sizeof(why), "%s", resp->error[0] ? resp->error : "no TTL in Vault's answer");
        if (resp->status == 403 || !session_usable(b)) {
                /* Vault says the session is no longer valid: its tokens are gone with it. */
                char msg[700];
                snprintf(msg, sizeof(msg), "the Vault session was refused at renewal (%s)", why);
                session_lost(b, msg);
                return;
        }
        /* Renewal failed but the session still works until it expires: log in again
         * alongside it, never revoking it (that would cascade to every sandbox's token). */
        log_notice("broker: session renewal failed (%s); logging in again while the session still works", why);
        b->relogin_wanted = true;
        start_login(b);
}

static void on_renew_timer(uv_timer_t *t) {
        broker *b = container_of(t, broker, renew_timer);
        if (!b->session || b->stopping)
                return;
        renew_ctx *rc = calloc(1, sizeof(*rc));
        if (!rc)
                return;
        rc->b = b;
        rc->gen = b->session_gen;
        /* Bounded by the re-login point at 5/6 of the TTL, not by the retries. */
        long bound = (long) (b->session_ttl_ms / 6);
        vault_request_opts o = { .timeout_ms = bound < 1000 ? 1000 : bound > 15000 ? 15000 : bound, .max_retries = -1 };
        json_object *body = json_object_new_object();
        if (vault_request_ex(b->vault, "POST", "auth/token/renew-self", (const char *) b->session, body, &o, on_renewed, rc) < 0) {
                free(rc);
                b->relogin_wanted = true;
                start_login(b);
        }
        json_object_put(body);
}

static void on_login(const vault_response *resp, void *userdata) {
        broker *b = userdata;
        b->logging_in = false;
        if (resp->cancelled)
                return;
        json_object *tok = auth_field(resp->body, "client_token");
        if (resp->status == 200)
                session_established(b, resp->body);
        else
                session_failed(b, resp->error[0] ? resp->error : "login failed");
        scrub_json_string(tok);
}

typedef struct unseal_work {
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

static void unseal_work_discard(void *arg) {
        unseal_work_free(arg);
}

static void do_unseal(void *arg) {
        unseal_work *w = arg;
        w->r = unseal_secret(w->tcti, w->soft_key, w->blob, w->blob_len, &w->secret, &w->secret_len, &w->err);
}

static void unseal_late(void *arg) {
        unseal_work *w = arg;
        broker *b = w->b;
        snprintf(b->tpm_late, sizeof(b->tpm_late), "the TPM has not answered for %d s (unsealing the AppRole secret)",
                 TPM_JOB_DEADLINE_MS / 1000);
        log_warning("broker: %s; the login waits for it", b->tpm_late);
        if (!session_usable(b))
                set_str(&b->vault_state, "unavailable: logging in: %s", b->tpm_late);
}

static void after_unseal(void *arg) {
        unseal_work *w = arg;
        broker *b = w->b;
        b->unseal_job = NULL;
        if (b->stopping) {
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
        if (w->blob_len > 8 && ((unsigned char *) w->blob)[8] == 1 /* BLOB_KIND_TPM */)
                set_str(&b->tpm_state, "ok%s", NULL);
        json_object *body = json_object_new_object();
        json_object_object_add(body, "role_id", json_object_new_string(b->role_id));
        json_object_object_add(body, "secret_id", json_object_new_string_len((const char *) w->secret, (int) w->secret_len));
        char path[300];
        snprintf(path, sizeof(path), "auth/%s/login", b->m->config->vault_approle_path ? b->m->config->vault_approle_path : "approle");
        if (!session_usable(b))
                set_str(&b->vault_state, "unavailable: logging in%s", NULL);
        /* Sent once and awaited: a retried or abandoned login leaves a session at Vault. */
        vault_request_opts o = { .create = true, .timeout_ms = VAULT_CREATE_BOUND_MS, .max_retries = -1 };
        if (vault_request_ex(b->vault, "POST", path, NULL, body, &o, on_login, b) < 0) {
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
        if (!session_usable(b))
                set_str(&b->vault_state, "unavailable: logging in (waiting for the TPM)%s", NULL);
        if (tpm_job_start(b->m->loop, "unsealing the AppRole secret", TPM_JOB_DEADLINE_MS, do_unseal, unseal_late,
                          after_unseal, unseal_work_discard, w, &b->unseal_job) < 0) {
                b->logging_in = false;
                unseal_work_free(w);
                session_failed(b, "cannot start a thread for the TPM");
        }
}

/* ---- probing the TPM --------------------------------------------------------------- */

/* Status re-checks the TPM at most this often (a stopped TPM is noticed
 * TPM_JOB_DEADLINE_MS after the check that found it stopped). */
#define TPM_PROBE_MIN_INTERVAL_MS 5000

typedef struct probe_work {
        broker *b;
        char *tcti;
        int r;
        seal_error err;
} probe_work;

static void probe_work_free(void *arg) {
        probe_work *w = arg;
        free(w->tcti);
        free(w);
}

static void do_probe(void *arg) {
        probe_work *w = arg;
        w->r = seal_probe(w->tcti, &w->err);
}

static void after_probe(void *arg) {
        probe_work *w = arg;
        broker *b = w->b;
        b->probe_job = NULL;
        if (!b->stopping) {
                if (w->r == 0)
                        set_str(&b->tpm_state, "ok%s", NULL);
                else if (b->m->config->tpm_allow_software_key)
                        set_str(&b->tpm_state, "software (no TPM: %s; AllowSoftwareKey=yes, for development only)", w->err.message);
                else
                        set_str(&b->tpm_state, "unavailable: %s", w->err.message);
        }
        probe_work_free(w);
}

static void probe_tpm(broker *b) {
        if (b->probe_job || b->stopping)
                return;
        probe_work *w = calloc(1, sizeof(*w));
        if (!w)
                return;
        w->b = b;
        w->tcti = strdup(b->m->config->tpm_tcti ? b->m->config->tpm_tcti : "");
        b->last_probe = uv_now(b->m->loop);
        if (tpm_job_start(b->m->loop, "answering a status check", TPM_JOB_DEADLINE_MS, do_probe, NULL, after_probe,
                          probe_work_free, w, &b->probe_job) < 0)
                probe_work_free(w);
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
        uv_timer_init(m->loop, &b->expiry_timer);
        b->renew_timer.data = b->retry_timer.data = b->expiry_timer.data = b;
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
        uv_timer_stop(&b->expiry_timer);
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
        /* A TPM job still running (a stopped TPM) finishes on its own and is discarded. */
        tpm_job_abandon(b->unseal_job);
        tpm_job_abandon(b->probe_job);
        tpm_job_abandon(b->seal_job);
        b->unseal_job = b->probe_job = b->seal_job = NULL;
        b->closing = 3;
        uv_close((uv_handle_t *) &b->renew_timer, on_broker_timer_closed);
        uv_close((uv_handle_t *) &b->retry_timer, on_broker_timer_closed);
        uv_close((uv_handle_t *) &b->expiry_timer, on_broker_timer_closed);
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

/* Status follows the session's real expiry, not only what the timers did. */
static void session_check_expiry(broker *b) {
        if (b->session && b->session_expires_ms && realtime_ms() >= b->session_expires_ms && !b->stopping)
                session_lost(b, "the Vault session expired (its renewal did not succeed in time)");
}

const char *broker_vault_state(manager *m) {
        broker *b = m->broker;
        if (b)
                session_check_expiry(b);
        return b && b->vault_state ? b->vault_state : "unconfigured";
}

const char *broker_tpm_state(manager *m) {
        broker *b = m->broker;
        if (!b || !b->tpm_state)
                return "unconfigured";
        if (!m->config->vault_address)
                return b->tpm_state;
        /* A TPM that stopped answering mid-run: every check asks it again (at most
         * every few seconds), and a check that outlives its deadline says so. */
        if (uv_now(m->loop) - b->last_probe >= TPM_PROBE_MIN_INTERVAL_MS)
                probe_tpm(b);
        const char *what = NULL;
        uint64_t late = tpm_jobs_late_ms(&what);
        if (late > 0) {
                snprintf(b->tpm_late, sizeof(b->tpm_late), "unavailable: the TPM has not answered for %llu s (%s)",
                         (unsigned long long) (late / 1000), what ? what : "?");
                return b->tpm_late;
        }
        return b->tpm_state;
}

const char *broker_unavailable_reason(manager *m) {
        broker *b = m->broker;
        if (!b || !m->config->vault_address)
                return "Vault is unconfigured ([Vault] Address= in agentd.conf)";
        session_check_expiry(b);
        if (!session_usable(b)) {
                /* While it logs in, a spawn waits for it (broker_issue, BROKER_LOGIN_WAIT_MS). */
                if (b->logging_in && !b->locked)
                        return NULL;
                return b->vault_state && strncmp(b->vault_state, "unavailable", 11) == 0 ? b->vault_state
                                                                                          : "unavailable: logging in to Vault";
        }
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
        if (!c->released && !c->revoked && !c->b->stopping)
                create_token(c);
}

/* An incident revocation took this sandbox's credentials: forget the token
 * and never make another (a token being made now is revoked when it comes). */
static void creds_mark_revoked(sandbox_creds *c) {
        c->revoked = true;
        if (c->reissue_init)
                uv_timer_stop(&c->reissue);
        secure_free(c->token, c->token_cap);
        c->token = NULL;
        c->token_len = c->token_cap = 0;
}

/* Vault may have made a token although we cannot name it: the answer was
 * lost (no answer within VAULT_CREATE_BOUND_MS, a broken connection), was a
 * 5xx after Vault may have acted, or is 200 without a readable token. */
static bool create_answer_ambiguous(const vault_response *resp) {
        if (resp->status == 0)
                return true;
        if (resp->status >= 500 && resp->status != 503)
                return true;
        return resp->status == 200;
}

/* A token we cannot name may hang under the session `gen`. No Vault call
 * finds it, but it dies with its parent: log in again, re-issue the live
 * sandboxes' tokens under the new session, and let the old one expire (it is
 * no longer renewed), which takes the unknown token with it within a TTL. */
static void session_taint(broker *b, uint64_t gen, const char *why) {
        if (gen != b->session_gen || !session_usable(b))
                return;
        log_notice("broker: a token request's answer was lost (%s): Vault may have made a token agentd cannot name; "
                   "logging in again so that it expires with the current session", why);
        b->relogin_wanted = true;
        start_login(b);
}

/* The spawn waited ISSUE_DEADLINE_MS for its token: it gets an error now. The
 * create stays in flight; whatever it makes is recorded and revoked. */
static void on_issue_deadline(uv_timer_t *t) {
        sandbox_creds *c = container_of(t, sandbox_creds, reissue);
        if (!c->cb)
                return;
        broker_issue_cb cb = TAKE_PTR(c->cb);
        c->released = true;
        log_warning("broker: sandbox %s: Vault did not answer the token request within %d s; the spawn fails and "
                    "a token made later is revoked", c->sandbox_id, ISSUE_DEADLINE_MS / 1000);
        char why[200];
        snprintf(why, sizeof(why), "Vault did not answer within %d s (the token it makes later is revoked)", ISSUE_DEADLINE_MS / 1000);
        cb(NULL, why, c->userdata);
        if (!c->issuing)
                creds_destroy(c);
}

/* Why Vault's answer to a token request gives no usable token (NULL: it
 * does). A lost answer taints the session; an accessor that cannot be
 * recorded durably is revoked at once. The reason is written into why. */
static const char *token_answer_check(sandbox_creds *c, const vault_response *resp, json_object *tok, json_object *acc,
                                      char *why, size_t why_size) {
        broker *b = c->b;
        if (resp->status != 200 || !tok || !acc || !accessor_valid(json_object_get_string(acc))) {
                snprintf(why, why_size, "Vault: %s", resp->error[0] ? resp->error : "no token in the answer");
                if (c->create_sent && create_answer_ambiguous(resp))
                        session_taint(b, c->issuing_gen, why);
                return why;
        }
        if (record_accessor(b, json_object_get_string(acc), c->sandbox_id) < 0) {
                /* Not recorded durably = not handed out: revoke it now. */
                snprintf(why, why_size, "cannot record the token's accessor durably");
                revoke_accessor(b, json_object_get_string(acc));
                return why;
        }
        return NULL;
}

static void audit_token_issued(sandbox_creds *c, int64_t ttl) {
        json_object *ev = json_object_new_object(), *pv = json_object_new_array();
        for (size_t i = 0; c->policies && c->policies[i]; i++)
                json_object_array_add(pv, json_object_new_string(c->policies[i]));
        json_object_object_add(ev, "accessor", json_object_new_string(c->accessor));
        json_object_object_add(ev, "policies", pv);
        json_object_object_add(ev, "ttl", json_object_new_int64(ttl));
        audit_event(c->b->m, "token.issued", c->sandbox_id, ev);
}

/* A fresh token well before this one expires. */
static void arm_reissue(sandbox_creds *c, int64_t ttl) {
        if (!c->reissue_init) {
                uv_timer_init(c->b->m->loop, &c->reissue);
                c->reissue_init = true;
        }
        if (ttl > 3 && !c->once)
                uv_timer_start(&c->reissue, on_reissue, (uint64_t) ttl * 1000 * 2 / 3, 0);
}

/* Keeps the new token (in secure memory) with its accessor and expiry, logs
 * and audits it and arms its re-issue; -ENOMEM leaves the creds unchanged. */
static int creds_take_token(sandbox_creds *c, json_object *tok, json_object *acc, json_object *lease) {
        const char *t = json_object_get_string(tok);
        size_t n = strlen(t);
        uint8_t *p = secure_alloc(n + 1);
        if (!p)
                return -ENOMEM;
        memcpy(p, t, n + 1);
        secure_free(c->token, c->token_cap);
        c->token = p;
        c->token_len = n;
        c->token_cap = n + 1;
        snprintf(c->accessor, sizeof(c->accessor), "%s", json_object_get_string(acc));
        c->session_gen = c->issuing_gen;
        int64_t ttl = lease ? json_object_get_int64(lease) : (int64_t) c->ttl_s;
        c->expires_ms = realtime_ms() + (uint64_t) ttl * 1000;
        log_sandbox(LOG_INFO, c->sandbox_id, c->task, "token.issued", "broker: sandbox %s: token issued (accessor %s, ttl %llds)", c->sandbox_id, c->accessor,
                 (long long) ttl);
        audit_token_issued(c, ttl);
        arm_reissue(c, ttl);
        return 0;
}

static void on_token_created(const vault_response *resp, void *userdata) {
        sandbox_creds *c = userdata;
        broker *b = c->b;
        c->issuing = false;
        if (c->cb)
                uv_timer_stop(&c->reissue);
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
        char why[700];
        const char *error = token_answer_check(c, resp, tok, acc, why, sizeof(why));
        if (c->revoked && !c->released && !c->cb) {
                /* Revoked while a re-issued token was being made: it never reaches the sandbox. */
                if (!error) {
                        log_notice("broker: sandbox %s: token made after its revocation; revoking it", c->sandbox_id);
                        revoke_accessor(b, json_object_get_string(acc));
                }
                scrub_json_string(tok);
                return;
        }
        if (c->revoked && !error) {
                /* A first token that was still being made: the spawn waiting for it fails. */
                snprintf(why, sizeof(why), "an incident revocation took this sandbox's credentials");
                error = why;
                revoke_accessor(b, json_object_get_string(acc));
        }
        if (c->released) {
                /* The sandbox ended while its token was being made. */
                if (!error)
                        revoke_accessor(b, json_object_get_string(acc));
                scrub_json_string(tok);
                if (c->once && c->cb) {
                        broker_issue_cb cb = c->cb;
                        c->cb = NULL;
                        cb(NULL, "the sandbox ended", c->userdata);
                }
                creds_destroy(c);
                return;
        }
        if (!error && creds_take_token(c, tok, acc, lease) < 0) {
                error = "out of memory";
                revoke_accessor(b, json_object_get_string(acc));
        }
        scrub_json_string(tok);
        /* Made under a session that a re-login replaced meanwhile: it dies with
         * that one, so a token under the current session now (before the
         * callback, which may release and free these creds). */
        if (!error && !c->revoked && c->session_gen != b->session_gen && session_usable(b))
                create_token(c);
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
        c->issuing_gen = b->session_gen;
        c->create_sent = true;
        /* Sent once and awaited (bounded): a token Vault makes is never left unknown. */
        vault_request_opts o = { .create = true, .timeout_ms = VAULT_CREATE_BOUND_MS, .max_retries = -1 };
        int r = session_usable(b) ? vault_request_ex(b->vault, "POST", "auth/token/create", (const char *) b->session, body,
                                                     &o, on_token_created, c)
                                  : -ENOTCONN;
        json_object_put(body);
        if (r < 0) {
                vault_response resp = { .status = 0 };
                c->create_sent = false;
                snprintf(resp.error, sizeof(resp.error), "%s", b->session ? "cannot start the request" : "no Vault session");
                on_token_created(&resp, c);
        }
}

static int issue(manager *m, const char *sandbox_id, const char *task, char *const *policies, uint64_t ttl_usec,
                 bool once, broker_issue_cb cb, void *userdata) {
        broker *b = m->broker;
        if (!b || !b->vault || b->locked || (!session_usable(b) && !b->logging_in))
                return -ENOTCONN;
        /* An incident revocation took this sandbox's credentials: none again until it ends. */
        list_head *i, *t;
        list_for_each_safe(i, t, &b->creds) {
                sandbox_creds *o = container_of(i, sandbox_creds, link);
                if (o->revoked && streq(o->sandbox_id, sandbox_id))
                        return -EACCES;
        }
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
        c->once = once;
        c->cb = cb;
        c->userdata = userdata;
        list_add_tail(&b->creds, &c->link);
        uv_timer_init(m->loop, &c->reissue);
        c->reissue_init = true;
        if (!session_usable(b)) {
                /* Right after enrolment, a restart or socket activation: wait for the login. */
                c->waiting = true;
                uv_timer_start(&c->reissue, on_reissue, BROKER_LOGIN_WAIT_MS, 0);
                return 0;
        }
        uv_timer_start(&c->reissue, on_issue_deadline, ISSUE_DEADLINE_MS, 0);
        create_token(c);
        return 0;
}

int broker_issue(manager *m, const char *sandbox_id, const char *task, char *const *policies, uint64_t ttl_usec,
                 broker_issue_cb cb, void *userdata) {
        return issue(m, sandbox_id, task, policies, ttl_usec, false, cb, userdata);
}

int broker_issue_once(manager *m, const char *sandbox_id, const char *task, char *const *policies, uint64_t ttl_usec,
                      broker_issue_cb cb, void *userdata) {
        return issue(m, sandbox_id, task, policies, ttl_usec, true, cb, userdata);
}

void broker_release(manager *m, sandbox_creds *c) {
        broker *b = m->broker;
        if (!c || !b)
                return;
        c->released = true;
        if (c->reissue_init)
                uv_timer_stop(&c->reissue);
        /* Tokens approved later (credentials.request) go with the sandbox too. */
        list_head *i, *t;
        list_for_each_safe(i, t, &b->creds) {
                sandbox_creds *o = container_of(i, sandbox_creds, link);
                if (o == c || !o->once || o->released || !streq(o->sandbox_id, c->sandbox_id))
                        continue;
                o->released = true;
                if (!o->issuing)
                        creds_destroy(o);
        }
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
        list_head *li, *lt;
        list_for_each_safe(li, lt, &b->creds) {
                sandbox_creds *c = container_of(li, sandbox_creds, link);
                for (size_t i = 0; sandbox_ids && sandbox_ids[i]; i++)
                        if (streq(c->sandbox_id, sandbox_ids[i]))
                                creds_mark_revoked(c);
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
        uv_timer_stop(&b->expiry_timer);
        list_head *i, *t;
        list_for_each_safe(i, t, &b->creds) {
                sandbox_creds *c = container_of(i, sandbox_creds, link);
                creds_mark_revoked(c);
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
                if (accessor_valid(de->d_name) && !strstr(de->d_name, ".tmp") && !find_retired(b, de->d_name, 0))
                        rb->outstanding++;
        if (d)
                closedir(d);
        /* Sessions replaced by a re-login still hold children until they expire: revoked too. */
        for (size_t k = 0; k < MAX_RETIRED; k++)
                if (find_retired(b, b->retired[k].accessor, 0)) {
                        revoke_accessor_batch(b, b->retired[k].accessor, rb);
                        b->retired[k].gen = 0;
                }
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
                bool live = (b->session && streq(de->d_name, b->session_accessor)) || find_retired(b, de->d_name, 0);
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
                if (!c->released && !c->once && streq(c->sandbox_id, sandbox_id))
                        return c;
        }
        return NULL;
}

int broker_pack_token(sandbox_creds *c, msgpack_packer *pk, int *ret_fd) {
        uint64_t now = realtime_ms();
        uint64_t until = c ? creds_valid_until(c) : 0;
        if (!c || !c->token || until <= now)
                return -ESTALE;
        /* The token travels only as a sealed, read-only memfd. */
        int fd = memfd_new_sealed("agentd-token", c->token, c->token_len);
        if (fd < 0)
                return fd;
        int ro = fd_reopen(fd, O_RDONLY);
        close(fd);
        if (ro < 0)
                return ro;
        *ret_fd = ro;
        msgpack_pack_map(pk, 3);
        mp_pack_kv_u64(pk, "expires_at", until);
        mp_pack_kv_u64(pk, "ttl", (until - now) / 1000);
        mp_pack_kv_str(pk, "accessor", c->accessor);
        return 0;
}

int rpc_credentials_get(rpc_ctx *ctx, const rpc_credentials_get_params *p, rpc_error *err) {
        broker *b = ctx->m->broker;
        sandbox_creds *c = b ? find_creds(b, ctx->conn->sandbox_id) : NULL;
        if (c && c->revoked) {
                rpc_error_set(err, RPC_E_UNAUTHORIZED, "this sandbox's credentials were revoked by an incident revocation; "
                                                       "it gets no token again");
                return -EACCES;
        }
        if (!c || !c->token) {
                rpc_error_set(err, RPC_E_NOT_FOUND, "this sandbox's task has no Vault credentials");
                return -ENOENT;
        }
        uint64_t now = realtime_ms();
        session_check_expiry(b);
        /* A token is dead when it expired or its parent session did: never hand one out. */
        if (creds_valid_until(c) <= now) {
                rpc_error_set(err, RPC_E_BACKEND_UNAVAILABLE, "Vault: this sandbox's token %s; a new one is issued as soon as "
                              "Vault answers (%s)", c->expires_ms <= now ? "expired" : "died with agentd's Vault session",
                              broker_vault_state(ctx->m));
                return -ESTALE;
        }
        int r = broker_pack_token(c, ctx->pk, &ctx->reply_fds[0]);
        if (r < 0)
                return r;
        ctx->n_reply_fds = 1;
        return 0;
}

int rpc_broker_status(rpc_ctx *ctx, const rpc_broker_status_params *p, rpc_error *err) {
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

static void do_seal(void *arg) {
        unseal_work *w = arg;
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

/* The enrol call is answered at the deadline; a seal finishing later is dropped. */
static void seal_late(void *arg) {
        unseal_work *w = arg;
        char msg[200];
        snprintf(msg, sizeof(msg), "TPM: the TPM has not answered for %d s; nothing was enrolled", TPM_JOB_DEADLINE_MS / 1000);
        rpc_call_error(TAKE_PTR(w->call), RPC_E_BACKEND_UNAVAILABLE, msg);
}

static void after_seal(void *arg) {
        unseal_work *w = arg;
        broker *b = w->b;
        b->seal_job = NULL;
        if (!w->call || b->stopping) {
                unseal_work_free(w);
                return;
        }
        if (w->r < 0) {
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

int rpc_broker_enroll(rpc_ctx *ctx, const rpc_broker_enroll_params *p, rpc_error *err) {
        manager *m = ctx->m;
        broker *b = m->broker;
        const msgpack_object *sid = p->secret_id;
        if (!b) /* only while agentd starts or stops */
                return error_set(err, ERROR_BACKEND_UNAVAILABLE, ENODEV, "the credential broker is not running");
        _cleanup_free_ char *role = strdup(p->role_id);
        if (!role)
                return -ENOMEM;
        if (!role[0] || strlen(role) > 256 || sid->via.str.size == 0 || sid->via.str.size > SEAL_SECRET_MAX) {
                rpc_error_set(err, RPC_E_INVALID_PARAMS, "role_id must be 1..256 bytes and secret_id 1..%d bytes", SEAL_SECRET_MAX);
                return -EINVAL;
        }
        if (b->seal_job) {
                rpc_error_set(err, RPC_E_BACKEND_UNAVAILABLE, "TPM: an enrolment is still waiting for the TPM");
                return -EBUSY;
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
        if (!w->call || tpm_job_start(m->loop, "sealing the AppRole secret", TPM_JOB_DEADLINE_MS, do_seal, seal_late, after_seal,
                                      unseal_work_discard, w, &b->seal_job) < 0) {
                if (w->call) {
                        rpc_call_free(w->call);
                        ctx->async = NULL;
                }
                unseal_work_free(w);
                return -ENOMEM;
        }
        return 0;
}
