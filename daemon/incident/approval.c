/* Approvals: the pending table, its timers, the scope memory (what was approved
 * for a sandbox or a task), the audit records and the approval.* notifications,
 * and the approval.list / approval.answer methods. The egress proxy asks through
 * its hold callback; the credential broker through approval_request_credentials(). */
#include "approval.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "audit/auditlog.h"
#include "broker/broker.h"
#include "core/log.h"
#include "macro.h"
#include "lib/netproxy.h"
#include "policy.h"
#include "audit/report-annotate.h"
#include "sandbox/sandbox.h"
#include "core/server.h"

/* Pending approvals at once, over all sandboxes: a sandbox that opens
 * connections to made-up hosts cannot grow the table (or the prompts) without
 * bound; beyond it, connections are refused as without Ask=. */
#define APPROVALS_PENDING_MAX 64U
/* ...and per sandbox: one sandbox cannot take the whole table and so keep
 * the others from asking. */
#define APPROVALS_PENDING_PER_SANDBOX_MAX 8U
#define APPROVAL_ID_LEN 16

typedef enum approval_scope {
        SCOPE_ONCE,
        SCOPE_SANDBOX,
        SCOPE_TASK,
} approval_scope;

static const char *const scope_names[] = { "once", "sandbox", "task" };

struct approval {
        list_head link;
        manager *m;
        char id[APPROVAL_ID_LEN];
        char *sandbox, *task, *what;
        approval_kind kind;
        uint64_t requested_at, expires_at;   /* ms since the epoch */
        uint64_t conn_id;                    /* network: the held connection */
        approval_done_cb done;               /* credentials: the broker's continuation */
        void *done_userdata;
        uv_timer_t timer;
};

/* Something approved beyond "once": for one sandbox, or (sandbox NULL) for
 * every sandbox of a task. */
typedef struct grant {
        list_head link;
        char *sandbox, *task, *what;
        approval_kind kind;
        char approval_id[APPROVAL_ID_LEN];
} grant;

typedef struct approvals {
        list_head pending;
        list_head grants;
        unsigned n_pending;
} approvals;

static const char *kind_name(approval_kind k) {
        return k == APPROVAL_CREDENTIALS ? "credentials" : "network";
}

static void make_approval_id(char out[APPROVAL_ID_LEN]) {
        uint8_t r[5];
        if (getrandom(r, sizeof(r), 0) != sizeof(r)) {
                uint64_t t = now_msec() ^ (uint64_t) getpid();
                memcpy(r, &t, sizeof(r));
        }
        snprintf(out, APPROVAL_ID_LEN, "ap-%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3], r[4]);
}

static void pack_approval(msgpack_packer *pk, void *userdata) {
        const approval *a = userdata;
        msgpack_pack_map(pk, 7);
        mp_pack_kv_str(pk, "id", a->id);
        mp_pack_kv_str(pk, "sandbox", a->sandbox);
        mp_pack_kv_str(pk, "task", a->task);
        mp_pack_kv_str(pk, "kind", kind_name(a->kind));
        mp_pack_kv_str(pk, "what", a->what);
        mp_pack_kv_u64(pk, "requested_at", a->requested_at);
        mp_pack_kv_u64(pk, "expires_at", a->expires_at);
}

typedef struct answered {
        const char *id, *decision, *scope, *by;
} answered;

static void pack_answered(msgpack_packer *pk, void *userdata) {
        const answered *a = userdata;
        msgpack_pack_map(pk, 4);
        mp_pack_kv_str(pk, "id", a->id);
        mp_pack_kv_str(pk, "decision", a->decision);
        mp_pack_kv_str(pk, "scope", a->scope);
        mp_pack_kv_str(pk, "by", a->by);
}

/* ---- the tables ---- */

static void grant_free(grant *g) {
        if (!g)
                return;
        free(g->sandbox);
        free(g->task);
        free(g->what);
        free(g);
}

static void on_approval_timer_closed(uv_handle_t *h) {
        approval *a = container_of((uv_timer_t *) h, approval, timer);
        free(a->sandbox);
        free(a->task);
        free(a->what);
        free(a);
}

/* Out of the table; freed once its timer is closed. */
static void approval_drop(approval *a) {
        approvals *t = a->m->approvals;
        list_del(&a->link);
        t->n_pending--;
        uv_close((uv_handle_t *) &a->timer, on_approval_timer_closed);
}

static approval *approval_find(manager *m, const char *id) {
        approvals *t = m->approvals;
        list_head *i, *n;
        if (!t)
                return NULL;
        list_for_each_safe(i, n, &t->pending) {
                approval *a = container_of(i, approval, link);
                if (streq(a->id, id))
                        return a;
        }
        return NULL;
}

static bool grant_covers(const grant *g, approval_kind kind, const char *sandbox, const char *task, const char *what) {
        if (g->kind != kind || !streq(g->what, what))
                return false;
        return g->sandbox ? streq(g->sandbox, sandbox) : streq(g->task, task);
}

static const grant *grant_find(manager *m, approval_kind kind, const char *sandbox, const char *task, const char *what) {
        approvals *t = m->approvals;
        list_head *i, *n;
        list_for_each_safe(i, n, &t->grants) {
                grant *g = container_of(i, grant, link);
                if (grant_covers(g, kind, sandbox, task, what))
                        return g;
        }
        return NULL;
}

static int grant_add(manager *m, const approval *a, approval_scope scope, grant **ret) {
        grant *g = calloc(1, sizeof(*g));
        if (!g)
                return -ENOMEM;
        g->kind = a->kind;
        g->sandbox = scope == SCOPE_SANDBOX ? strdup(a->sandbox) : NULL;
        g->task = strdup(a->task);
        g->what = strdup(a->what);
        memcpy(g->approval_id, a->id, sizeof(g->approval_id));
        if ((scope == SCOPE_SANDBOX && !g->sandbox) || !g->task || !g->what) {
                grant_free(g);
                return -ENOMEM;
        }
        list_add_tail(&m->approvals->grants, &g->link);
        *ret = g;
        return 0;
}

static bool grant_listed(manager *m, const grant *g) {
        list_head *i, *n;
        list_for_each_safe(i, n, &m->approvals->grants)
                if (container_of(i, grant, link) == g)
                        return true;
        return false;
}

/* ---- answering ---- */

/* Hands the decision to whoever asked (the held connection or the broker),
 * records it, tells subscribers, and drops the approval. `by` is who answered
 * ("timeout", "sandbox ended", "revoke", or a peer description); peer is the
 * answering connection when a person answered. */
static void approval_finish(approval *a, bool approve, approval_scope scope, const char *by, const connection *peer,
                            const char *why) {
        manager *m = a->m;
        const char *decision = approve ? "approve" : "deny";
        char reason[192];

        json_object *ev = json_object_new_object();
        json_object_object_add(ev, "id", json_object_new_string(a->id));
        json_object_object_add(ev, "kind", json_object_new_string(kind_name(a->kind)));
        json_object_object_add(ev, "what", json_object_new_string(a->what));
        json_object_object_add(ev, "decision", json_object_new_string(decision));
        json_object_object_add(ev, "scope", json_object_new_string(scope_names[scope]));
        json_object_object_add(ev, "by", json_object_new_string(by));
        if (why)
                json_object_object_add(ev, "reason", json_object_new_string(why));
        if (peer)
                report_annotate_peer(ev, peer);
        audit_event(m, "approval.answered", a->sandbox, ev);
        log_sandbox(LOG_NOTICE, a->sandbox, a->task, "approval", "approval %s (%s %s) for sandbox %s: %s, scope %s, by %s",
                    a->id, kind_name(a->kind), a->what, a->sandbox, decision, scope_names[scope], by);

        answered n = { .id = a->id, .decision = decision, .scope = scope_names[scope], .by = by };
        server_broadcast(m, a->sandbox, "approval.answered", pack_answered, &n);

        snprintf(reason, sizeof(reason), "approval %s %s", a->id, why ? why : approve ? "approved" : "denied");
        /* Out of the table before the continuation runs (it may end the
         * sandbox); the memory stays until the timer's close callback. */
        approval_drop(a);
        if (a->kind == APPROVAL_NETWORK)
                (void) netproxy_release(m->proxy, a->conn_id, approve, reason);
        else if (a->done)
                a->done(approve, reason, a->done_userdata);
}

static void on_approval_timeout(uv_timer_t *t) {
        approval *a = container_of(t, approval, timer);
        approval_finish(a, false, SCOPE_ONCE, "timeout", NULL, "expired without an answer");
}

/* A new grant may cover other pending approvals: they go through too, with
 * the same answer. */
static void settle_covered(manager *m, const grant *g, const char *by) {
        approvals *t = m->approvals;
        list_head *i, *n;
        list_for_each_safe(i, n, &t->pending) {
                approval *a = container_of(i, approval, link);
                if (grant_covers(g, a->kind, a->sandbox, a->task, a->what)) {
                        approval_finish(a, true, g->sandbox ? SCOPE_SANDBOX : SCOPE_TASK, by, NULL, "covered by an earlier approval");
                        /* The continuation may have changed the list: start over. */
                        settle_covered(m, g, by);
                        return;
                }
        }
}

/* ---- asking ---- */

static unsigned pending_of(manager *m, const char *sandbox) {
        list_head *i, *n;
        unsigned k = 0;
        list_for_each_safe(i, n, &m->approvals->pending)
                if (streq(container_of(i, approval, link)->sandbox, sandbox))
                        k++;
        return k;
}

static int approval_new(manager *m, approval_kind kind, const char *sandbox, const char *task, const char *what,
                        uint64_t timeout_ms, approval **ret) {
        approvals *t = m->approvals;
        if (!t)
                return -ENODEV;
        if (t->n_pending >= APPROVALS_PENDING_MAX || pending_of(m, sandbox) >= APPROVALS_PENDING_PER_SANDBOX_MAX)
                return -EBUSY;
        approval *a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        a->m = m;
        a->kind = kind;
        a->sandbox = strdup(sandbox);
        a->task = strdup(task);
        a->what = strdup(what);
        if (!a->sandbox || !a->task || !a->what) {
                free(a->sandbox);
                free(a->task);
                free(a->what);
                free(a);
                return -ENOMEM;
        }
        do
                make_approval_id(a->id);
        while (approval_find(m, a->id));
        a->requested_at = now_realtime_msec();
        a->expires_at = a->requested_at + timeout_ms;
        (void) uv_timer_init(m->loop, &a->timer);
        (void) uv_timer_start(&a->timer, on_approval_timeout, timeout_ms, 0);
        list_add_tail(&t->pending, &a->link);
        t->n_pending++;

        json_object *ev = json_object_new_object();
        json_object_object_add(ev, "id", json_object_new_string(a->id));
        json_object_object_add(ev, "task", json_object_new_string(task));
        json_object_object_add(ev, "kind", json_object_new_string(kind_name(kind)));
        json_object_object_add(ev, "what", json_object_new_string(what));
        json_object_object_add(ev, "expires_at", json_object_new_int64((int64_t) a->expires_at));
        audit_event(m, "approval.requested", sandbox, ev);
        log_sandbox(LOG_NOTICE, sandbox, task, "approval", "sandbox %s (task %s) asks for %s %s: agentctl approve %s | agentctl deny %s",
                    sandbox, task, kind_name(kind), what, a->id, a->id);
        server_broadcast(m, sandbox, "approval.requested", pack_approval, a);
        *ret = a;
        return 0;
}

static netproxy_verdict on_hold(const netproxy_hold *h, void *userdata) {
        manager *m = userdata;
        char what[300];
        bool v6 = strchr(h->host, ':') != NULL;
        approval *a;
        int r;

        snprintf(what, sizeof(what), "%s%s%s:%u", v6 ? "[" : "", h->host, v6 ? "]" : "", (unsigned) h->port);
        if (grant_find(m, APPROVAL_NETWORK, h->sandbox_id, h->task, what))
                return NETPROXY_VERDICT_ALLOW;
        r = approval_new(m, APPROVAL_NETWORK, h->sandbox_id, h->task, what, h->timeout_ms, &a);
        if (r < 0) {
                log_sandbox(LOG_WARNING, h->sandbox_id, h->task, "approval", "sandbox %s: cannot ask about %s: %s", h->sandbox_id, what,
                            r == -EBUSY ? "too many pending approvals" : strerror(-r));
                return NETPROXY_VERDICT_DENY;
        }
        a->conn_id = h->conn_id;
        return NETPROXY_VERDICT_HOLD;
}

int approval_request_credentials(manager *m, const char *sandbox, const char *task, char **policies, uint64_t timeout_ms,
                                 approval_done_cb done, void *userdata, approval **ret) {
        _cleanup_free_ char *what = NULL;
        size_t len = 1;
        approval *a;
        int r;

        for (char **p = policies; p && *p; p++)
                len += strlen(*p) + 1;
        what = calloc(1, len);
        if (!what)
                return -ENOMEM;
        for (char **p = policies; p && *p; p++) {
                if (p != policies)
                        strcat(what, ",");
                strcat(what, *p);
        }
        if (!*what)
                return -EINVAL;
        if (grant_find(m, APPROVAL_CREDENTIALS, sandbox, task, what)) {
                *ret = NULL;
                return 1;
        }
        r = approval_new(m, APPROVAL_CREDENTIALS, sandbox, task, what, timeout_ms, &a);
        if (r < 0)
                return r;
        a->done = done;
        a->done_userdata = userdata;
        *ret = a;
        return 0;
}

/* ---- clearing ---- */

/* Forgets remembered approvals and denies pending ones: everything (all), a
 * sandbox's, a task's, and (task_scoped_of) the task-scoped ones of a task. */
static void clear_matching(manager *m, bool all, const char *sandbox, const char *task, const char *task_scoped_of,
                           const char *by) {
        approvals *t = m->approvals;
        list_head *i, *n;
        if (!t)
                return;
        list_for_each_safe(i, n, &t->grants) {
                grant *g = container_of(i, grant, link);
                bool match = all || (sandbox && g->sandbox && streq(g->sandbox, sandbox)) || (task && streq(g->task, task)) ||
                             (task_scoped_of && !g->sandbox && streq(g->task, task_scoped_of));
                if (!match)
                        continue;
                json_object *ev = json_object_new_object();
                json_object_object_add(ev, "id", json_object_new_string(g->approval_id));
                json_object_object_add(ev, "kind", json_object_new_string(kind_name(g->kind)));
                json_object_object_add(ev, "what", json_object_new_string(g->what));
                json_object_object_add(ev, "scope", json_object_new_string(g->sandbox ? "sandbox" : "task"));
                json_object_object_add(ev, "task", json_object_new_string(g->task));
                json_object_object_add(ev, "reason", json_object_new_string(by));
                audit_event(m, "approval.expired", g->sandbox, ev);
                list_del(&g->link);
                grant_free(g);
        }
        /* Each finish may end a sandbox and so re-enter: restart after each. */
        for (bool again = true; again;) {
                again = false;
                list_for_each_safe(i, n, &t->pending) {
                        approval *a = container_of(i, approval, link);
                        if (all || (sandbox && streq(a->sandbox, sandbox)) || (task && streq(a->task, task))) {
                                approval_finish(a, false, SCOPE_ONCE, by, NULL, by);
                                again = true;
                                break;
                        }
                }
        }
}

void approvals_sandbox_ended(manager *m, const char *sandbox_id) {
        /* Task-scoped approvals stay: they are for the task's other sandboxes. */
        clear_matching(m, false, sandbox_id, NULL, NULL, "sandbox ended");
}

void approvals_revoke(manager *m, bool all, const char *sandbox_id, const char *task) {
        /* An incident in one sandbox also withdraws what was approved for its
         * task: the next sandbox of that task asks again. */
        sandbox *s = sandbox_id ? sandbox_find(m, sandbox_id) : NULL;
        clear_matching(m, all, sandbox_id, task, s ? s->task : NULL, "revoke");
}

/* ---- lifetime ---- */

int approvals_init(manager *m) {
        approvals *t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        list_init(&t->pending);
        list_init(&t->grants);
        m->approvals = t;
        if (m->proxy)
                netproxy_set_hold_cb(m->proxy, on_hold, m);
        return 0;
}

void approvals_free(manager *m) {
        approvals *t = m->approvals;
        if (!t)
                return;
        clear_matching(m, true, NULL, NULL, NULL, "agentd stopping");
        if (m->proxy)
                netproxy_set_hold_cb(m->proxy, NULL, NULL);
        free(t);
        m->approvals = NULL;
}

/* ---- methods ---- */

int rpc_approval_list(rpc_ctx *ctx, const rpc_approval_list_params *args, rpc_error *err) {
        approvals *t = ctx->m->approvals;
        list_head *i, *n;
        msgpack_pack_array(ctx->pk, t ? t->n_pending : 0);
        if (!t)
                return 0;
        list_for_each_safe(i, n, &t->pending)
                pack_approval(ctx->pk, container_of(i, approval, link));
        return 0;
}

int rpc_approval_answer(rpc_ctx *ctx, const rpc_approval_answer_params *args, rpc_error *err) {
        manager *m = ctx->m;
        const char *id = args->id, *decision = args->decision, *scope_s = args->scope;
        approval_scope scope = SCOPE_ONCE;
        bool approve;
        char by[PATH_MAX + 64], exe[PATH_MAX], p[64];

        if (streq(decision, "approve"))
                approve = true;
        else if (streq(decision, "deny"))
                approve = false;
        else {
                rpc_error_set(err, RPC_E_INVALID_PARAMS, "decision must be \"approve\" or \"deny\", not \"%.64s\"", decision);
                return -EINVAL;
        }
        if (scope_s) {
                size_t k;
                for (k = 0; k < ELEMENTSOF(scope_names); k++)
                        if (streq(scope_s, scope_names[k]))
                                break;
                if (k == ELEMENTSOF(scope_names)) {
                        rpc_error_set(err, RPC_E_INVALID_PARAMS, "scope must be \"once\", \"sandbox\" or \"task\", not \"%.64s\"", scope_s);
                        return -EINVAL;
                }
                scope = (approval_scope) k;
        }
        approval *a = approval_find(m, id);
        if (!a) {
                rpc_error_set(err, RPC_E_NOT_FOUND, "no pending approval %.64s (answered, expired, or never asked)", id);
                return -ENOENT;
        }
        if (!approve)
                scope = SCOPE_ONCE;
        grant *g = NULL;
        if (approve && scope != SCOPE_ONCE) {
                int r = grant_add(m, a, scope, &g);
                if (r < 0) {
                        rpc_error_set(err, RPC_E_INTERNAL, "out of memory");
                        return r;
                }
        }

        /* Who answered, as the kernel and /proc say: pid and executable. */
        pid_t pid = ctx->conn->peer.pid;
        snprintf(p, sizeof(p), "/proc/%d/exe", (int) pid);
        ssize_t n = readlink(p, exe, sizeof(exe) - 1);
        exe[n > 0 ? n : 0] = 0;
        snprintf(by, sizeof(by), "pid %d (%s)", (int) pid, n > 0 ? exe : "?");

        approval_finish(a, approve, scope, by, ctx->conn, NULL);
        /* Other pending approvals the new grant covers go through too, unless
         * the continuation (e.g. an automatic response) already withdrew it. */
        if (g && grant_listed(m, g))
                settle_covered(m, g, by);
        msgpack_pack_map(ctx->pk, 0);
        return 0;
}

/* ---- credentials.request: more Vault policies for one sandbox, once a person says so ---- */

#define REQUEST_POLICIES_MAX 16U

typedef struct cred_request {
        manager *m;
        rpc_call *call;
        char sandbox[16];
        char *task;
        char **policies;
        uint64_t ttl_usec;
} cred_request;

static void cred_request_free(cred_request *q) {
        if (!q)
                return;
        free(q->task);
        strv_free(q->policies);
        free(q);
}

static void pack_raw(msgpack_packer *pk, void *userdata) {
        msgpack_sbuffer *sb = userdata;
        pk->callback(pk->data, sb->data, sb->size);
}

static void on_extra_issued(sandbox_creds *creds, const char *error, void *userdata) {
        cred_request *q = userdata;
        msgpack_sbuffer sb;
        msgpack_packer pk;
        int fd = -1, r;

        if (!creds) {
                char msg[800];
                snprintf(msg, sizeof(msg), "approved, but the token could not be issued: %s", error ? error : "unknown error");
                rpc_call_error(q->call, RPC_E_BACKEND_UNAVAILABLE, msg);
                cred_request_free(q);
                return;
        }
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        r = broker_pack_token(creds, &pk, &fd);
        if (r < 0)
                rpc_call_error(q->call, RPC_E_INTERNAL, "cannot hand the token over");
        else
                rpc_call_reply_fds(q->call, pack_raw, &sb, &fd, 1);
        msgpack_sbuffer_destroy(&sb);
        cred_request_free(q);
}

static void issue_extra(cred_request *q) {
        int r = broker_issue_once(q->m, q->sandbox, q->task, q->policies, q->ttl_usec, on_extra_issued, q);
        if (r == -EACCES) {
                rpc_call_error(q->call, RPC_E_UNAUTHORIZED, "this sandbox's credentials were revoked by an incident revocation");
                cred_request_free(q);
        } else if (r < 0) {
                rpc_call_error(q->call, RPC_E_BACKEND_UNAVAILABLE, "approved, but the credential broker cannot issue tokens now");
                cred_request_free(q);
        }
}

static void on_cred_answer(bool approved, const char *reason, void *userdata) {
        cred_request *q = userdata;
        if (approved) {
                issue_extra(q);
                return;
        }
        rpc_call_error(q->call, RPC_E_POLICY_DENIED, reason);
        cred_request_free(q);
}

int rpc_credentials_request(rpc_ctx *ctx, const rpc_credentials_request_params *args, rpc_error *err) {
        manager *m = ctx->m;
        char **policies = args->policies;
        size_t n = 0;

        for (char **p = policies; p && *p; p++, n++)
                if (!policy_name_is_valid(*p) || streq(*p, "root") || streq(*p, "none")) {
                        rpc_error_set(err, RPC_E_INVALID_PARAMS, "invalid policy name '%.64s'%s", *p,
                                      streq(*p, "root") ? " (the root policy is never handed to a sandbox)" : "");
                        return -EINVAL;
                }
        if (n == 0 || n > REQUEST_POLICIES_MAX) {
                rpc_error_set(err, RPC_E_INVALID_PARAMS, "policies: between 1 and %u Vault policy names", REQUEST_POLICIES_MAX);
                return -EINVAL;
        }
        sandbox *s = sandbox_find(m, ctx->conn->sandbox_id);
        if (!s || sandbox_ended(s)) {
                rpc_error_set(err, RPC_E_NOT_FOUND, "this sandbox has ended");
                return -ENOENT;
        }
        const char *why = broker_unavailable_reason(m);
        if (why) {
                rpc_error_set(err, RPC_E_BACKEND_UNAVAILABLE, "%s", why);
                return -ENOTCONN;
        }
        /* The task as it is now: its AskTimeout= and TTL= (defaults if it is gone). */
        const task_policy *tp = policy_registry_find(m->tasks, s->task);
        cred_request *q = calloc(1, sizeof(*q));
        if (!q)
                return -ENOMEM;
        q->m = m;
        snprintf(q->sandbox, sizeof(q->sandbox), "%s", s->id);
        q->task = strdup(s->task);
        q->policies = rpc_strv_dup(policies);
        q->ttl_usec = tp ? tp->token_ttl_usec : POLICY_DEFAULT_TOKEN_TTL_USEC;
        if (!q->task || !q->policies) {
                cred_request_free(q);
                return -ENOMEM;
        }
        uint64_t timeout_ms = (tp ? tp->ask_timeout_usec : POLICY_DEFAULT_ASK_TIMEOUT_USEC) / 1000;
        q->call = rpc_ctx_defer(ctx);
        if (!q->call) {
                cred_request_free(q);
                return -ENOMEM;
        }
        approval *a;
        int r = approval_request_credentials(m, q->sandbox, q->task, q->policies, timeout_ms, on_cred_answer, q, &a);
        if (r < 0) {
                /* The deferred call is answered with this error by the server. */
                cred_request_free(q);
                rpc_error_set(err, r == -EBUSY ? RPC_E_LIMIT_EXCEEDED : RPC_E_INTERNAL, "%s",
                              r == -EBUSY ? "too many approvals pending" : "cannot ask for approval");
                return r;
        }
        if (r == 1)
                issue_extra(q);
        return 0;
}
