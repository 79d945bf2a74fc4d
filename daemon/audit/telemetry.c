/* OTLP/HTTP JSON export of agentd's events, redacted by default (see telemetry.h). */
#include "telemetry.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "agentd-build.h"
#include "lib/vault.h"
#include "core/log.h"
#include "file.h"
#include "macro.h"

#define BATCH_MAX 256u
#define OPEN_SPANS_MAX 4096
#define KEY_LEN 32

typedef enum signal_kind {
        SIG_LOGS,
        SIG_TRACES,
        SIG_METRICS,
        _SIG_MAX,
} signal_kind;

static const char *const signal_path[_SIG_MAX] = { "logs", "traces", "metrics" };

typedef struct counters {
        uint64_t spawned, exited, egress_allowed, egress_denied, tokens_issued, tokens_revoked, revocations, alerts,
                approvals;
} counters;

typedef struct telemetry {
        manager *m;
        vault_client *http;
        char *endpoint;
        char *state;
        uint8_t key[KEY_LEN];
        bool include_args;
        unsigned queue_max;
        json_object *queue[2];          /* SIG_LOGS, SIG_TRACES: arrays of OTLP records */
        bool in_flight[_SIG_MAX];
        unsigned batch_n[_SIG_MAX];     /* records in the request in flight */
        uv_timer_t timer;
        bool timer_init;
        uint64_t start_ns;
        json_object *open_spans;        /* sandbox id -> start ns */
        counters c;
        bool counters_dirty;
        uint64_t sent[_SIG_MAX], dropped_queue_full, dropped_failed, batches_failed;
} telemetry;

static telemetry T;

static uint64_t realtime_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
}

static void set_state(const char *fmt, const char *arg) {
        free(T.state);
        if (asprintf(&T.state, fmt, arg ? arg : "") < 0)
                T.state = NULL;
}

/* ---- redaction ---- */

/* "hmac-sha256:<32 hex>": stable for this machine's key, not reversible without it. */
static json_object *redacted(const char *s) {
        uint8_t mac[32];
        size_t n = 0;
        char out[12 + 33] = "hmac-sha256:";
        if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, T.key, sizeof(T.key), (const unsigned char *) s, strlen(s), mac,
                       sizeof(mac), &n))
                return json_object_new_string("hmac-sha256:unavailable");
        for (size_t i = 0; i < 16; i++)
                sprintf(out + 12 + 2 * i, "%02x", mac[i]);
        return json_object_new_string(out);
}

static int load_key(const char *dir) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/telemetry.key", dir);
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd >= 0)
                return read(fd, T.key, KEY_LEN) == KEY_LEN ? 0 : -EINVAL;
        if (errno != ENOENT)
                return -errno;
        if (getrandom(T.key, KEY_LEN, 0) != KEY_LEN)
                return -EIO;
        return write_file(path, T.key, KEY_LEN, 0600, WRITE_FILE_EXCL);
}

/* ---- OTLP/JSON building blocks (int64 as decimal strings, ids as hex) ---- */

static json_object *u64s(uint64_t v) {
        char b[24];
        snprintf(b, sizeof(b), "%" PRIu64, v);
        return json_object_new_string(b);
}

static void attr(json_object *attrs, const char *key, json_object *value) {
        if (!value)
                return;
        json_object *kv = json_object_new_object(), *v = json_object_new_object();
        switch (json_object_get_type(value)) {
        case json_type_boolean: json_object_object_add(v, "boolValue", json_object_get(value)); break;
        case json_type_int: {
                char b[24];
                snprintf(b, sizeof(b), "%" PRId64, json_object_get_int64(value));
                json_object_object_add(v, "intValue", json_object_new_string(b));
                break;
        }
        case json_type_double: json_object_object_add(v, "doubleValue", json_object_get(value)); break;
        case json_type_array: {
                json_object *vals = json_object_new_array(), *av = json_object_new_object();
                for (size_t i = 0; i < json_object_array_length(value); i++) {
                        json_object *e = json_object_new_object();
                        json_object_object_add(e, "stringValue",
                                               json_object_new_string(json_object_get_string(json_object_array_get_idx(value, i)) ?: ""));
                        json_object_array_add(vals, e);
                }
                json_object_object_add(av, "values", vals);
                json_object_object_add(v, "arrayValue", av);
                break;
        }
        default: json_object_object_add(v, "stringValue", json_object_new_string(json_object_get_string(value) ?: "")); break;
        }
        json_object_put(value);
        json_object_object_add(kv, "key", json_object_new_string(key));
        json_object_object_add(kv, "value", v);
        json_object_array_add(attrs, kv);
}

static json_object *field(json_object *f, const char *k) {
        json_object *v;
        return f && json_object_object_get_ex(f, k, &v) && v ? json_object_get(v) : NULL;
}

static const char *fstr(json_object *f, const char *k) {
        json_object *v;
        return f && json_object_object_get_ex(f, k, &v) && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

static json_object *redacted_field(json_object *f, const char *k) {
        const char *s = fstr(f, k);
        return s ? redacted(s) : NULL;
}

static void hex(const uint8_t *p, size_t n, char *out) {
        for (size_t i = 0; i < n; i++)
                sprintf(out + 2 * i, "%02x", p[i]);
}

/* A sandbox's trace and span ids follow from its id, so its logs and its span correlate. */
static void sandbox_ids(const char *sandbox, char trace[33], char span[17]) {
        uint8_t d[32];
        unsigned dl = 0;
        char in[96];
        snprintf(in, sizeof(in), "agentd-sandbox:%s", sandbox);
        if (EVP_Digest(in, strlen(in), d, &dl, EVP_sha256(), NULL) != 1)
                memset(d, 0x5a, sizeof(d));
        hex(d, 16, trace);
        hex(d + 16, 8, span);
}

/* ---- what each event exports (everything else stays here) ---- */

/* An exported attribute taken from a record field, in clear or as a keyed hash. */
typedef struct attr_map {
        const char *attr, *field;
        bool redact;
} attr_map;

static void attrs_copy(json_object *a, json_object *f, const attr_map *m, size_t n) {
        for (size_t i = 0; i < n; i++)
                attr(a, m[i].attr, m[i].redact ? redacted_field(f, m[i].field) : field(f, m[i].field));
}
#define ATTRS_COPY(a, f, map) attrs_copy(a, f, map, ELEMENTSOF(map))

static const attr_map spawn_attrs[] = {
        { "agentd.task", "task" },
        { "agentd.policy.sha256", "policy_sha256" },
        { "agentd.policy.source.hmac", "policy_source", true },
        { "agentd.workspace.hmac", "workspace", true },
        { "agentd.peer.comm", "peer_comm" },
        { "agentd.peer.exe.hmac", "peer_exe", true },
};
static const attr_map exit_attrs[] = {
        { "agentd.state", "state" },
        { "process.exit.code", "exit_code" },
        { "agentd.signal", "signal" },
};
static const attr_map usage_attrs[] = {
        { "agentd.cpu_usec", "cpu_usec" },
        { "agentd.memory_peak_bytes", "memory_peak_bytes" },
        { "agentd.layer_bytes", "layer_bytes" },
};
static const attr_map egress_attrs[] = {
        { "server.address", "host" },
        { "server.port", "port" },
        { "agentd.egress.decision", "decision" },
        { "agentd.egress.reason", "reason" },
        { "agentd.bytes_up", "bytes_up" },
        { "agentd.bytes_down", "bytes_down" },
};
static const attr_map token_attrs[] = {
        { "agentd.token.accessor", "accessor" },
        { "agentd.token.ttl", "ttl" },
        { "agentd.token.policies", "policies" },
};
static const attr_map revoke_attrs[] = {
        { "agentd.revoke.all", "all" },
        { "agentd.revoke.sandboxes", "sandboxes" },
        { "agentd.revoke.frozen", "frozen" },
        { "agentd.revoke.killed", "killed" },
        { "agentd.revoke.tokens_revoked", "tokens_revoked" },
        { "agentd.revoke.tokens_pending", "tokens_pending" },
};
static const attr_map alert_attrs[] = {
        { "agentd.alert.rule", "rule" },
        { "agentd.alert.count", "count" },
};
static const attr_map peer_attrs[] = {
        { "agentd.peer.comm", "peer_comm" },
};

static void attrs_spawn(json_object *a, json_object *f) {
        ATTRS_COPY(a, f, spawn_attrs);
        json_object *argv = field(f, "argv");
        if (argv && T.include_args)
                attr(a, "process.command_args", argv);
        else {
                attr(a, "agentd.argc", json_object_new_int64(argv ? (int64_t) json_object_array_length(argv) : 0));
                json_object_put(argv);
        }
}

/* Why a sandbox ended, as exported: a setup failure's message names the
 * command or a path ("sandbox setup failed at exec: NAME: ..."), so only its
 * step goes out in clear, the whole of it as a keyed hash. */
static void attr_reason(json_object *a, json_object *f) {
        static const char setup[] = "sandbox setup failed at ";
        const char *why = fstr(f, "reason");
        const char *colon = why && strncmp(why, setup, strlen(setup)) == 0 ? strchr(why + strlen(setup), ':') : NULL;
        if (!colon) {
                attr(a, "agentd.reason", field(f, "reason"));
                return;
        }
        attr(a, "agentd.reason", json_object_new_string_len(why, (int) (colon - why)));
        attr(a, "agentd.reason.hmac", redacted(why));
}

static void attrs_for(json_object *a, const char *type, json_object *f) {
        if (streq(type, "sandbox.spawn"))
                attrs_spawn(a, f);
        else if (streq(type, "sandbox.exit")) {
                json_object *u = field(f, "usage");
                ATTRS_COPY(a, f, exit_attrs);
                attr_reason(a, f);
                ATTRS_COPY(a, u, usage_attrs);
                json_object_put(u);
        } else if (streq(type, "egress") || streq(type, "egress.closed"))
                ATTRS_COPY(a, f, egress_attrs);
        else if (strncmp(type, "token.", 6) == 0)
                ATTRS_COPY(a, f, token_attrs);
        else if (streq(type, "revoke"))
                ATTRS_COPY(a, f, revoke_attrs);
        else if (streq(type, "alert"))
                ATTRS_COPY(a, f, alert_attrs);
        else if (streq(type, "sandbox.promote")) {
                json_object *pr = field(f, "promoted_sha256"), *names = json_object_new_array();
                if (!pr || !json_object_is_type(pr, json_type_object)) {
                        json_object_put(pr);
                        pr = json_object_new_object();
                }
                json_object_object_foreach(pr, path, sha) {
                        (void) sha;
                        json_object *h = redacted(path);
                        json_object_array_add(names, json_object_new_string(json_object_get_string(h)));
                        json_object_put(h);
                }
                attr(a, "agentd.promote.files.hmac", names);
                json_object *cf = field(f, "conflicts");
                attr(a, "agentd.promote.conflicts", json_object_new_int64(cf ? (int64_t) json_object_array_length(cf) : 0));
                json_object_put(cf);
                json_object_put(pr);
                ATTRS_COPY(a, f, peer_attrs);
        } else if (streq(type, "sandbox.discard"))
                ATTRS_COPY(a, f, peer_attrs);
}

static bool exported(const char *type) {
        static const char *const types[] = { "sandbox.spawn", "sandbox.exit", "egress", "egress.closed", "token.issued",
                                             "token.revoked", "revoke", "alert", "lockdown", "unlock",
                                             "sandbox.promote", "sandbox.discard" };
        if (strncmp(type, "approval", 8) == 0)
                return true;
        for (size_t i = 0; i < ELEMENTSOF(types); i++)
                if (streq(type, types[i]))
                        return true;
        return false;
}

bool telemetry_exports(const char *type) {
        return type && exported(type);
}

static void count(const char *type, json_object *f) {
        const char *d = fstr(f, "decision");
        T.counters_dirty = true;
        if (streq(type, "sandbox.spawn"))
                T.c.spawned++;
        else if (streq(type, "sandbox.exit"))
                T.c.exited++;
        else if (streq(type, "egress") && d && streq(d, "allowed"))
                T.c.egress_allowed++;
        else if (streq(type, "egress") && d)
                T.c.egress_denied++;
        else if (streq(type, "token.issued"))
                T.c.tokens_issued++;
        else if (streq(type, "token.revoked"))
                T.c.tokens_revoked++;
        else if (streq(type, "revoke"))
                T.c.revocations++;
        else if (streq(type, "alert"))
                T.c.alerts++;
        else if (strncmp(type, "approval", 8) == 0)
                T.c.approvals++;
}

/* ---- the queue ---- */

static unsigned queued(void) {
        return (unsigned) (json_object_array_length(T.queue[SIG_LOGS]) + json_object_array_length(T.queue[SIG_TRACES]));
}

static void flush(void);

static void enqueue(signal_kind k, json_object *rec) {
        if (queued() >= T.queue_max) {
                T.dropped_queue_full++;
                json_object_put(rec);
                return;
        }
        json_object_array_add(T.queue[k], rec);
        if (json_object_array_length(T.queue[k]) >= BATCH_MAX && !T.in_flight[k])
                flush();
}

static json_object *span_new(const char *name, const char *trace, const char *span, uint64_t start, uint64_t end,
                             json_object *attrs, int status) {
        json_object *s = json_object_new_object(), *st = json_object_new_object();
        json_object_object_add(s, "traceId", json_object_new_string(trace));
        json_object_object_add(s, "spanId", json_object_new_string(span));
        json_object_object_add(s, "name", json_object_new_string(name));
        json_object_object_add(s, "kind", json_object_new_int(1)); /* SPAN_KIND_INTERNAL */
        json_object_object_add(s, "startTimeUnixNano", u64s(start));
        json_object_object_add(s, "endTimeUnixNano", u64s(end));
        json_object_object_add(s, "attributes", attrs);
        if (status) {
                json_object_object_add(st, "code", json_object_new_int(status));
                json_object_object_add(s, "status", st);
        } else
                json_object_put(st);
        return s;
}

static void spans_for(const char *type, const char *sandbox, json_object *f, uint64_t now) {
        if (streq(type, "sandbox.spawn") && sandbox) {
                if (json_object_object_length(T.open_spans) < OPEN_SPANS_MAX)
                        json_object_object_add(T.open_spans, sandbox, json_object_new_int64((int64_t) now));
        } else if (streq(type, "sandbox.exit") && sandbox) {
                json_object *start;
                if (!json_object_object_get_ex(T.open_spans, sandbox, &start))
                        return;
                char trace[33], span[17];
                sandbox_ids(sandbox, trace, span);
                json_object *a = json_object_new_array();
                attr(a, "agentd.sandbox.id", json_object_new_string(sandbox));
                attrs_for(a, type, f);
                const char *st = fstr(f, "state");
                enqueue(SIG_TRACES, span_new("agentd.sandbox", trace, span, (uint64_t) json_object_get_int64(start), now, a,
                                             st && streq(st, "killed") ? 2 : 0));
                json_object_object_del(T.open_spans, sandbox);
        } else if (streq(type, "revoke")) {
                uint8_t id[24];
                char trace[33], span[17];
                if (getrandom(id, sizeof(id), GRND_NONBLOCK) != sizeof(id))
                        memset(id, 0x7e, sizeof(id));
                hex(id, 16, trace);
                hex(id + 16, 8, span);
                json_object *d = field(f, "duration_us"), *a = json_object_new_array();
                uint64_t dur_ns = d ? (uint64_t) json_object_get_int64(d) * 1000 : 0;
                json_object_put(d);
                attrs_for(a, type, f);
                enqueue(SIG_TRACES, span_new("agentd.revoke", trace, span, now - (dur_ns < now ? dur_ns : 0), now, a, 0));
        }
}

void telemetry_event(manager *m, const char *type, const char *sandbox, json_object *fields) {
        if (!T.http || !type || !exported(type))
                return;
        uint64_t now = realtime_ns();
        count(type, fields);
        json_object *rec = json_object_new_object(), *a = json_object_new_array(), *body = json_object_new_object();
        json_object_object_add(rec, "timeUnixNano", u64s(now));
        json_object_object_add(rec, "observedTimeUnixNano", u64s(now));
        bool warn = streq(type, "alert") || streq(type, "revoke") || streq(type, "lockdown") ||
                    (streq(type, "egress") && fstr(fields, "decision") && !streq(fstr(fields, "decision"), "allowed"));
        json_object_object_add(rec, "severityNumber", json_object_new_int(warn ? 13 : 9)); /* WARN : INFO */
        json_object_object_add(rec, "severityText", json_object_new_string(warn ? "WARN" : "INFO"));
        json_object_object_add(body, "stringValue", json_object_new_string(type));
        json_object_object_add(rec, "body", body);
        attr(a, "agentd.event", json_object_new_string(type));
        if (sandbox)
                attr(a, "agentd.sandbox.id", json_object_new_string(sandbox));
        attrs_for(a, type, fields);
        json_object_object_add(rec, "attributes", a);
        if (sandbox) {
                char trace[33], span[17];
                sandbox_ids(sandbox, trace, span);
                json_object_object_add(rec, "traceId", json_object_new_string(trace));
                json_object_object_add(rec, "spanId", json_object_new_string(span));
        }
        enqueue(SIG_LOGS, rec);
        spans_for(type, sandbox, fields, now);
}

/* ---- sending ---- */

static json_object *resource_wrap(const char *outer, const char *scope_key, const char *items_key, json_object *items) {
        json_object *req = json_object_new_object(), *rs = json_object_new_array(), *r = json_object_new_object(),
                    *res = json_object_new_object(), *ra = json_object_new_array(), *ss = json_object_new_array(),
                    *s = json_object_new_object(), *scope = json_object_new_object();
        attr(ra, "service.name", json_object_new_string("agentd"));
        attr(ra, "service.version", json_object_new_string(AGENTD_VERSION));
        json_object_object_add(res, "attributes", ra);
        json_object_object_add(r, "resource", res);
        json_object_object_add(scope, "name", json_object_new_string("agentd"));
        json_object_object_add(scope, "version", json_object_new_string(AGENTD_VERSION));
        json_object_object_add(s, "scope", scope);
        json_object_object_add(s, items_key, items);
        json_object_array_add(ss, s);
        json_object_object_add(r, scope_key, ss);
        json_object_array_add(rs, r);
        json_object_object_add(req, outer, rs);
        return req;
}

static json_object *sum_metric(const char *name, const char *unit, uint64_t v, const char *attr_key, const char *attr_val,
                               uint64_t v2, const char *attr_val2) {
        json_object *mt = json_object_new_object(), *sum = json_object_new_object(), *dps = json_object_new_array();
        uint64_t now = realtime_ns();
        for (int i = 0; i < (attr_key ? 2 : 1); i++) {
                json_object *dp = json_object_new_object();
                json_object_object_add(dp, "startTimeUnixNano", u64s(T.start_ns));
                json_object_object_add(dp, "timeUnixNano", u64s(now));
                json_object_object_add(dp, "asInt", u64s(i ? v2 : v));
                if (attr_key) {
                        json_object *a = json_object_new_array();
                        attr(a, attr_key, json_object_new_string(i ? attr_val2 : attr_val));
                        json_object_object_add(dp, "attributes", a);
                }
                json_object_array_add(dps, dp);
        }
        json_object_object_add(sum, "dataPoints", dps);
        json_object_object_add(sum, "aggregationTemporality", json_object_new_int(2)); /* CUMULATIVE */
        json_object_object_add(sum, "isMonotonic", json_object_new_boolean(true));
        json_object_object_add(mt, "name", json_object_new_string(name));
        json_object_object_add(mt, "unit", json_object_new_string(unit));
        json_object_object_add(mt, "sum", sum);
        return mt;
}

static json_object *metrics_now(void) {
        json_object *ms = json_object_new_array();
        json_object_array_add(ms, sum_metric("agentd.sandboxes.spawned", "{sandbox}", T.c.spawned, NULL, NULL, 0, NULL));
        json_object_array_add(ms, sum_metric("agentd.sandboxes.exited", "{sandbox}", T.c.exited, NULL, NULL, 0, NULL));
        json_object_array_add(ms, sum_metric("agentd.egress.decisions", "{connection}", T.c.egress_allowed,
                                             "agentd.egress.decision", "allowed", T.c.egress_denied, "denied"));
        json_object_array_add(ms, sum_metric("agentd.tokens.issued", "{token}", T.c.tokens_issued, NULL, NULL, 0, NULL));
        json_object_array_add(ms, sum_metric("agentd.tokens.revoked", "{token}", T.c.tokens_revoked, NULL, NULL, 0, NULL));
        json_object_array_add(ms, sum_metric("agentd.revocations", "{revocation}", T.c.revocations, NULL, NULL, 0, NULL));
        json_object_array_add(ms, sum_metric("agentd.alerts", "{alert}", T.c.alerts, NULL, NULL, 0, NULL));
        json_object_array_add(ms, sum_metric("agentd.approvals", "{approval}", T.c.approvals, NULL, NULL, 0, NULL));
        json_object_array_add(ms, sum_metric("agentd.telemetry.dropped", "{record}", T.dropped_queue_full + T.dropped_failed,
                                             NULL, NULL, 0, NULL));
        return ms;
}

static void on_sent(const vault_response *resp, void *userdata) {
        signal_kind k = (signal_kind) (uintptr_t) userdata;
        T.in_flight[k] = false;
        if (resp->cancelled)
                return;
        if (resp->status >= 200 && resp->status < 300) {
                T.sent[k] += T.batch_n[k];
                if (T.state && strncmp(T.state, "ok", 2) != 0)
                        set_state("ok: exporting to %s", T.endpoint);
        } else {
                T.batches_failed++;
                if (k != SIG_METRICS)
                        T.dropped_failed += T.batch_n[k];
                char why[600];
                if (resp->status > 0)
                        snprintf(why, sizeof(why), "the collector answered HTTP %ld on /v1/%s", resp->status, signal_path[k]);
                else
                        snprintf(why, sizeof(why), "%.500s", resp->error);
                set_state("failing: %s", why);
        }
        T.batch_n[k] = 0;
}

static void send_batch(signal_kind k, json_object *req, unsigned n) {
        T.batch_n[k] = n;
        T.in_flight[k] = true;
        int r = vault_request(T.http, "POST", signal_path[k], NULL, req, on_sent, (void *) (uintptr_t) k);
        json_object_put(req);
        if (r < 0) {
                T.in_flight[k] = false;
                T.batches_failed++;
                if (k != SIG_METRICS)
                        T.dropped_failed += n;
                set_state("failing: cannot start a request: %s", strerror(-r));
        }
}

static void flush_queue(signal_kind k) {
        json_object *q = T.queue[k];
        size_t n = json_object_array_length(q);
        if (T.in_flight[k] || n == 0)
                return;
        size_t take = n < BATCH_MAX ? n : BATCH_MAX;
        json_object *items = json_object_new_array_ext((int) take);
        for (size_t i = 0; i < take; i++)
                json_object_array_add(items, json_object_get(json_object_array_get_idx(q, i)));
        json_object_array_del_idx(q, 0, take);
        json_object *req = k == SIG_LOGS ? resource_wrap("resourceLogs", "scopeLogs", "logRecords", items)
                                         : resource_wrap("resourceSpans", "scopeSpans", "spans", items);
        send_batch(k, req, (unsigned) take);
}

static void flush(void) {
        flush_queue(SIG_LOGS);
        flush_queue(SIG_TRACES);
        if (T.counters_dirty && !T.in_flight[SIG_METRICS]) {
                T.counters_dirty = false;
                send_batch(SIG_METRICS, resource_wrap("resourceMetrics", "scopeMetrics", "metrics", metrics_now()), 1);
        }
}

static void on_timer(uv_timer_t *t) {
        flush();
}

int telemetry_init(manager *m) {
        agentd_config *c = m->config;
        T.m = m;
        if (!c->telemetry_endpoint) {
                set_state("off", NULL);
                return 0;
        }
        int r = load_key(c->state_directory);
        if (r < 0) {
                set_state("unavailable: cannot read or create telemetry.key: %s", strerror(-r));
                log_error("telemetry: %s", T.state);
                return 0;
        }
        vault_config vc = { .address = c->telemetry_endpoint, .max_retries = 2, .base_backoff_ms = 200, .timeout_ms = 10000 };
        r = vault_client_new(m->loop, &vc, &T.http);
        if (r < 0) {
                set_state("unavailable: cannot start the HTTP client: %s", strerror(-r));
                return 0;
        }
        T.endpoint = strdup(c->telemetry_endpoint);
        T.include_args = c->telemetry_include_arguments;
        T.queue_max = c->telemetry_queue_max;
        T.queue[SIG_LOGS] = json_object_new_array();
        T.queue[SIG_TRACES] = json_object_new_array();
        T.open_spans = json_object_new_object();
        T.start_ns = realtime_ns();
        set_state("ok: exporting to %s", c->telemetry_endpoint);
        uv_timer_init(m->loop, &T.timer);
        T.timer_init = true;
        uv_timer_start(&T.timer, on_timer, c->telemetry_flush_interval_ms, c->telemetry_flush_interval_ms);
        return 0;
}

void telemetry_free(manager *m) {
        if (T.timer_init) {
                uv_timer_stop(&T.timer);
                uv_close((uv_handle_t *) &T.timer, NULL);
                T.timer_init = false;
        }
        vault_client_free(T.http);
        T.http = NULL;
        for (size_t i = 0; i < ELEMENTSOF(T.queue); i++) {
                json_object_put(T.queue[i]);
                T.queue[i] = NULL;
        }
        json_object_put(T.open_spans);
        T.open_spans = NULL;
        explicit_zero(T.key, sizeof(T.key));
        free(T.endpoint);
        T.endpoint = NULL;
        free(T.state);
        T.state = NULL;
}

void telemetry_pack_status(msgpack_packer *pk) {
        bool on = T.http != NULL;
        msgpack_pack_map(pk, on ? 9 : 1);
        mp_pack_kv_str(pk, "state", T.state ? T.state : "off");
        if (!on)
                return;
        mp_pack_kv_str(pk, "endpoint", T.endpoint);
        mp_pack_kv_u64(pk, "queued", queued());
        mp_pack_kv_u64(pk, "sent_logs", T.sent[SIG_LOGS]);
        mp_pack_kv_u64(pk, "sent_spans", T.sent[SIG_TRACES]);
        mp_pack_kv_u64(pk, "sent_metrics", T.sent[SIG_METRICS]);
        mp_pack_kv_u64(pk, "dropped", T.dropped_queue_full + T.dropped_failed);
        mp_pack_kv_u64(pk, "dropped_queue_full", T.dropped_queue_full);
        mp_pack_kv_u64(pk, "dropped_failed", T.dropped_failed);
}
