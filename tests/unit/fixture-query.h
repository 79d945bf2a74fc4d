/* Small helpers over fixture.h for the tests that read the daemon's status and
 * its audit log through RPC (test-config, test-auditlog, test-rpc-daemon,
 * test-report, test-telemetry): numbers from replies, agentd.status fields,
 * the audit log becoming ready, and audit.query pages. Header-only: each test
 * is one executable. */
#pragma once

#include <check.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fixture.h"

/* An unsigned integer member of a map; fails the test when it is absent. */
static inline uint64_t fq_u64(const msgpack_object *map, const char *key) {
        const msgpack_object *v = fixture_get(map, key);
        ck_assert_msg(v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER, "no unsigned '%s' in the reply", key);
        return v->via.u64;
}

/* A string member, copied into buf; fails the test when it is absent. */
static inline const char *fq_str(const msgpack_object *map, const char *key, char *buf, size_t size) {
        const char *s = fixture_get_str(map, key, buf, size);
        ck_assert_msg(s != NULL, "no string '%s' in the reply", key);
        return s;
}

/* A boolean member; fails the test when it is absent. */
static inline bool fq_bool(const msgpack_object *map, const char *key) {
        const msgpack_object *v = fixture_get(map, key);
        ck_assert_msg(v && v->type == MSGPACK_OBJECT_BOOLEAN, "no boolean '%s' in the reply", key);
        return v->via.boolean;
}

/* agentd.status's string `key` on a fresh connection. */
static inline const char *fq_status_str(fixture *f, const char *key, char *buf, size_t size) {
        int c = fixture_connect(f);
        fixture_reply r;
        ck_assert(fixture_call(f, c, "agentd.status", NULL, NULL, &r));
        fq_str(r.result, key, buf, size);
        fixture_reply_free(&r);
        close(c);
        return buf;
}

typedef struct fq_wait_status {
        fixture *f;
        const char *key, *prefix;
} fq_wait_status;

static inline bool fq_status_has_prefix(void *arg) {
        fq_wait_status *w = arg;
        char buf[512];
        return strncmp(fq_status_str(w->f, w->key, buf, sizeof(buf)), w->prefix, strlen(w->prefix)) == 0;
}

/* Runs the loop until agentd.status's `key` starts with `prefix` (30 s at most:
 * the audit key is unsealed off the loop, slowly on a loaded machine). */
static inline void fq_wait_status_prefix(fixture *f, const char *key, const char *prefix) {
        fq_wait_status w = { f, key, prefix };
        char buf[512];
        ck_assert_msg(fixture_run_until(f, 30000, fq_status_has_prefix, &w), "status %s is '%s', not '%s...'", key,
                      fq_status_str(f, key, buf, sizeof(buf)), prefix);
}

/* Until the audit log records (state-changing requests such as sandbox.spawn
 * are refused before: the key is unsealed off the loop). */
static inline void fq_wait_audit_ready(fixture *f) {
        fq_wait_status_prefix(f, "audit", "ok (key sealed: ");
}

/* audit.query's parameters; 0 / NULL: not sent. */
typedef struct fq_query {
        const char *sandbox;
        uint64_t limit, before, since;
} fq_query;

static inline void fq_pack_query(msgpack_packer *pk, void *arg) {
        const fq_query *q = arg;
        msgpack_pack_map(pk, (q->sandbox != NULL) + (q->limit > 0) + (q->before > 0) + (q->since > 0));
        if (q->sandbox)
                mp_pack_kv_str(pk, "sandbox", q->sandbox);
        if (q->limit > 0)
                mp_pack_kv_u64(pk, "limit", q->limit);
        if (q->before > 0)
                mp_pack_kv_u64(pk, "before", q->before);
        if (q->since > 0)
                mp_pack_kv_u64(pk, "since", q->since);
}

/* audit.query on connection c; the reply (an array of records) in r. */
static inline void fq_audit_query(fixture *f, int c, const fq_query *q, fixture_reply *r) {
        ck_assert_msg(fixture_call(f, c, "audit.query", fq_pack_query, (void *) q, r), "audit.query: %s: %s", r->code,
                      r->message);
        ck_assert_int_eq(r->result->type, MSGPACK_OBJECT_ARRAY);
}

/* The "rpc" record's fields.method (or "" for other records) into buf. */
static inline const char *fq_record_method(const msgpack_object *rec, char *buf, size_t size) {
        buf[0] = 0;
        char type[64];
        if (fixture_get_str(rec, "type", type, sizeof(type)) && strcmp(type, "rpc") == 0)
                (void) fixture_get_str(fixture_get(rec, "fields"), "method", buf, size);
        return buf;
}
