/* Unit tests for proto/'s method table: the typed parameter decoder
 * (rpc_params_decode: types, missing, optional, nil, unknown keys) and the
 * peer check (rpc_method_check_peer: host-only / sandbox-only), and
 * rpc_params_str (a decoded string parameter by key, for the audit hook). */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "unit.h"

/* A params map packed by the test, unpacked as the server does. */
typedef struct packed {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_unpacked up;
} packed;

static void packed_init(packed *p) {
        msgpack_sbuffer_init(&p->sb);
        msgpack_packer_init(&p->pk, &p->sb, msgpack_sbuffer_write);
        msgpack_unpacked_init(&p->up);
}

static const msgpack_object *packed_object(packed *p) {
        size_t off = 0;
        ck_assert_int_eq(msgpack_unpack_next(&p->up, p->sb.data, p->sb.size, &off), MSGPACK_UNPACK_SUCCESS);
        return &p->up.data;
}

static void packed_done(packed *p) {
        msgpack_unpacked_destroy(&p->up);
        msgpack_sbuffer_destroy(&p->sb);
}

static const rpc_method *method(const char *name) {
        const rpc_method *m = rpc_method_find(name, strlen(name));
        ck_assert_ptr_nonnull(m);
        return m;
}

static int decode(packed *p, const char *name, rpc_params_any *args, rpc_error *err) {
        error_free(err);
        const msgpack_object *o = packed_object(p);
        return rpc_params_decode(method(name), o, p->up.zone, args, err);
}

static void str(msgpack_packer *pk, const char *s) {
        mp_pack_cstr(pk, s);
}

START_TEST(test_decode_every_type) {
        packed p;
        packed_init(&p);
        msgpack_pack_map(&p.pk, 7);
        str(&p.pk, "task"), str(&p.pk, "build");
        str(&p.pk, "argv"), msgpack_pack_array(&p.pk, 2), str(&p.pk, "make"), str(&p.pk, "-j4");
        str(&p.pk, "env"), msgpack_pack_map(&p.pk, 1), str(&p.pk, "K"), str(&p.pk, "V");
        str(&p.pk, "tty"), msgpack_pack_false(&p.pk);
        str(&p.pk, "attach"), msgpack_pack_true(&p.pk);
        str(&p.pk, "umask"), msgpack_pack_uint32(&p.pk, 022);
        str(&p.pk, "workspace"), msgpack_pack_nil(&p.pk);   /* nil: the default */
        rpc_params_any a;
        _cleanup_error_ rpc_error err = {};
        memset(&a, 0xa5, sizeof(a));   /* the decoder zeroes what is not given */
        ck_assert_int_eq(decode(&p, "sandbox.spawn", &a, &err), 0);
        const rpc_sandbox_spawn_params *s = &a.sandbox_spawn;
        ck_assert_str_eq(s->task, "build");
        ck_assert_ptr_nonnull(s->argv);
        ck_assert_str_eq(s->argv[0], "make");
        ck_assert_str_eq(s->argv[1], "-j4");
        ck_assert_ptr_null(s->argv[2]);
        ck_assert_ptr_nonnull(s->env);
        ck_assert_int_eq(s->env->type, MSGPACK_OBJECT_MAP);
        ck_assert_uint_eq(s->env->via.map.size, 1);
        ck_assert(s->has_tty && !s->tty);
        ck_assert(s->has_attach && s->attach);
        ck_assert(!s->has_detach && !s->detach);
        ck_assert(s->has_umask);
        ck_assert_uint_eq(s->umask, 022);
        ck_assert_ptr_null(s->workspace);
        ck_assert_ptr_null(s->path);
        packed_done(&p);
}
END_TEST

START_TEST(test_decode_optional_and_defaults) {
        rpc_params_any a;
        _cleanup_error_ rpc_error err = {};
        packed p;

        /* Absent optional: zero, has_ false. */
        packed_init(&p);
        msgpack_pack_map(&p.pk, 1);
        str(&p.pk, "id"), str(&p.pk, "abc");
        ck_assert_int_eq(decode(&p, "sandbox.diff", &a, &err), 0);
        ck_assert_str_eq(a.sandbox_diff.id, "abc");
        ck_assert(!a.sandbox_diff.has_patch && !a.sandbox_diff.patch);
        packed_done(&p);

        /* Given false: has_ true. Nil: as if absent. */
        packed_init(&p);
        msgpack_pack_map(&p.pk, 2);
        str(&p.pk, "patch"), msgpack_pack_false(&p.pk);
        str(&p.pk, "id"), str(&p.pk, "abc");
        ck_assert_int_eq(decode(&p, "sandbox.diff", &a, &err), 0);
        ck_assert(a.sandbox_diff.has_patch && !a.sandbox_diff.patch);
        packed_done(&p);
        packed_init(&p);
        msgpack_pack_map(&p.pk, 2);
        str(&p.pk, "id"), str(&p.pk, "abc");
        str(&p.pk, "patch"), msgpack_pack_nil(&p.pk);
        ck_assert_int_eq(decode(&p, "sandbox.diff", &a, &err), 0);
        ck_assert(!a.sandbox_diff.has_patch);
        packed_done(&p);

        /* No params at all: fine without required keys, else the first one is named. */
        ck_assert_int_eq(rpc_params_decode(method("agentd.ping"), NULL, NULL, &a, &err), 0);
        ck_assert_int_eq(rpc_params_decode(method("approval.answer"), NULL, NULL, &a, &err), -EINVAL);
        ck_assert_int_eq(err.code, RPC_E_INVALID_PARAMS);
        ck_assert_str_eq(err.message, "missing parameter 'id'");

        /* An empty array is an empty map for STRMAP (Lua's {}). */
        packed_init(&p);
        msgpack_pack_map(&p.pk, 1);
        str(&p.pk, "env"), msgpack_pack_array(&p.pk, 0);
        ck_assert_int_eq(decode(&p, "sandbox.spawn", &a, &err), 0);
        ck_assert_ptr_nonnull(a.sandbox_spawn.env);
        ck_assert_uint_eq(a.sandbox_spawn.env->via.map.size, 0);
        packed_done(&p);
}
END_TEST

/* One key/value map for sandbox.diff / sandbox.promote / sandbox.spawn; the expected message. */
typedef struct bad_case {
        const char *method;
        void (*fill)(msgpack_packer *pk);
        const char *message;
} bad_case;

static void fill_missing(msgpack_packer *pk) {
        msgpack_pack_map(pk, 1);
        str(pk, "patch"), msgpack_pack_true(pk);
}
static void fill_required_nil(msgpack_packer *pk) {
        msgpack_pack_map(pk, 1);
        str(pk, "id"), msgpack_pack_nil(pk);
}
static void fill_unknown(msgpack_packer *pk) {
        msgpack_pack_map(pk, 2);
        str(pk, "id"), str(pk, "x");
        str(pk, "nope"), msgpack_pack_true(pk);
}
static void fill_unknown_before_missing(msgpack_packer *pk) {
        msgpack_pack_map(pk, 1);
        str(pk, "nope"), msgpack_pack_true(pk);
}
static void fill_twice(msgpack_packer *pk) {
        msgpack_pack_map(pk, 2);
        str(pk, "id"), str(pk, "x");
        str(pk, "id"), str(pk, "y");
}
static void fill_key_not_string(msgpack_packer *pk) {
        msgpack_pack_map(pk, 1);
        msgpack_pack_uint8(pk, 1), str(pk, "x");
}
static void fill_str_wrong(msgpack_packer *pk) {
        msgpack_pack_map(pk, 1);
        str(pk, "id"), msgpack_pack_uint8(pk, 7);
}
static void fill_str_nul(msgpack_packer *pk) {
        msgpack_pack_map(pk, 1);
        str(pk, "id"), msgpack_pack_str(pk, 3), msgpack_pack_str_body(pk, "a\0b", 3);
}
static void fill_bool_wrong(msgpack_packer *pk) {
        msgpack_pack_map(pk, 2);
        str(pk, "id"), str(pk, "x");
        str(pk, "patch"), str(pk, "yes");
}
static void fill_strv_wrong(msgpack_packer *pk) {
        msgpack_pack_map(pk, 2);
        str(pk, "id"), str(pk, "x");
        str(pk, "paths"), msgpack_pack_array(pk, 2), str(pk, "a"), msgpack_pack_uint8(pk, 1);
}
static void fill_strmap_wrong(msgpack_packer *pk) {
        msgpack_pack_map(pk, 1);
        str(pk, "env"), msgpack_pack_map(pk, 1), str(pk, "K"), msgpack_pack_uint8(pk, 1);
}
static void fill_uint_negative(msgpack_packer *pk) {
        msgpack_pack_map(pk, 1);
        str(pk, "umask"), msgpack_pack_int8(pk, -1);
}

static const bad_case bad_cases[] = {
        { "sandbox.diff", fill_missing, "missing parameter 'id'" },
        { "sandbox.diff", fill_required_nil, "parameter 'id' is required and must not be nil" },
        { "sandbox.diff", fill_unknown, "unknown parameter 'nope' for sandbox.diff" },
        { "sandbox.diff", fill_unknown_before_missing, "unknown parameter 'nope' for sandbox.diff" },
        { "sandbox.diff", fill_twice, "parameter 'id' given twice" },
        { "sandbox.diff", fill_key_not_string, "parameter names must be strings" },
        { "sandbox.diff", fill_str_wrong, "parameter 'id' must be a string" },
        { "sandbox.diff", fill_str_nul, "parameter 'id' must be a string" },
        { "sandbox.diff", fill_bool_wrong, "parameter 'patch' must be a boolean" },
        { "sandbox.promote", fill_strv_wrong, "parameter 'paths' must be an array of strings" },
        { "sandbox.spawn", fill_strmap_wrong, "parameter 'env' must be a map of strings to strings" },
        { "sandbox.spawn", fill_uint_negative, "parameter 'umask' must be an unsigned integer" },
};

START_TEST(test_decode_invalid_params) {
        const bad_case *c = &bad_cases[_i];
        packed p;
        packed_init(&p);
        c->fill(&p.pk);
        rpc_params_any a;
        _cleanup_error_ rpc_error err = {};
        ck_assert_int_eq(decode(&p, c->method, &a, &err), -EINVAL);
        ck_assert_int_eq(err.code, RPC_E_INVALID_PARAMS);
        ck_assert_str_eq(err.message, c->message);
        packed_done(&p);
}
END_TEST

/* A SECRET is left where it arrived, so the handler can wipe the request's bytes. */
START_TEST(test_decode_secret_not_copied) {
        packed p;
        packed_init(&p);
        msgpack_pack_map(&p.pk, 2);
        str(&p.pk, "role_id"), str(&p.pk, "role");
        str(&p.pk, "secret_id"), str(&p.pk, "s3cret");
        rpc_params_any a;
        _cleanup_error_ rpc_error err = {};
        ck_assert_int_eq(decode(&p, "broker.enroll", &a, &err), 0);
        const msgpack_object *sid = a.broker_enroll.secret_id;
        ck_assert_ptr_nonnull(sid);
        ck_assert_uint_eq(sid->via.str.size, 6);
        ck_assert(sid->via.str.ptr >= p.sb.data && sid->via.str.ptr + 6 <= p.sb.data + p.sb.size);
        ck_assert_str_eq(a.broker_enroll.role_id, "role");
        packed_done(&p);
}
END_TEST

START_TEST(test_table_matches_structs) {
        const rpc_method *m = method("sandbox.diff");
        ck_assert_uint_eq(m->params_size, sizeof(rpc_sandbox_diff_params));
        ck_assert_uint_eq(m->n_params, 2);
        const rpc_param_desc *t = rpc_method_params(m);
        ck_assert_str_eq(t[0].key, "id");
        ck_assert(!t[0].optional && t[0].type == RPC_PARAM_STR);
        ck_assert_uint_eq(t[0].offset, offsetof(rpc_sandbox_diff_params, id));
        ck_assert_str_eq(t[1].key, "patch");
        ck_assert(t[1].optional && t[1].type == RPC_PARAM_BOOL);
        ck_assert_uint_eq(t[1].offset, offsetof(rpc_sandbox_diff_params, patch));
        ck_assert_uint_eq(t[1].has_offset, offsetof(rpc_sandbox_diff_params, has_patch));
        for (size_t i = 0; i < _RPC_METHOD_MAX; i++) {
                ck_assert_uint_le(rpc_methods[i].params_size, sizeof(rpc_params_any));
                ck_assert_ptr_null(rpc_method_params(&rpc_methods[i])[rpc_methods[i].n_params].key);
        }
}
END_TEST

/* rpc_params_str: a method's STR parameter by key from the decoded struct (the
 * audit hook's "target"): NULL when absent, not a string, or not the method's. */
START_TEST(test_params_str_by_key) {
        rpc_params_any a;
        _cleanup_error_ rpc_error err = {};
        packed p;
        packed_init(&p);
        msgpack_pack_map(&p.pk, 2);
        str(&p.pk, "id"), str(&p.pk, "abc");
        str(&p.pk, "signal"), str(&p.pk, "KILL");
        ck_assert_int_eq(decode(&p, "sandbox.kill", &a, &err), 0);
        ck_assert_str_eq(rpc_params_str(method("sandbox.kill"), &a, "id"), "abc");
        ck_assert_ptr_null(rpc_params_str(method("sandbox.kill"), &a, "signal"));   /* ANY, not STR */
        ck_assert_ptr_null(rpc_params_str(method("sandbox.kill"), &a, "sandbox"));  /* not its key */
        packed_done(&p);

        packed_init(&p);
        msgpack_pack_map(&p.pk, 1);
        str(&p.pk, "freeze_only"), msgpack_pack_true(&p.pk);
        ck_assert_int_eq(decode(&p, "credentials.revoke", &a, &err), 0);
        ck_assert_ptr_null(rpc_params_str(method("credentials.revoke"), &a, "sandbox"));   /* absent */
        packed_done(&p);
        packed_init(&p);
        msgpack_pack_map(&p.pk, 1);
        str(&p.pk, "sandbox"), str(&p.pk, "0123456789ab");
        ck_assert_int_eq(decode(&p, "credentials.revoke", &a, &err), 0);
        ck_assert_str_eq(rpc_params_str(method("credentials.revoke"), &a, "sandbox"), "0123456789ab");
        ck_assert_ptr_null(rpc_params_str(method("agentd.ping"), &a, "id"));
        packed_done(&p);
}
END_TEST

/* Every method is exactly one of host-only and sandbox-only, and the peer
 * check holds each to its flag. */
START_TEST(test_peer_check_every_method) {
        unsigned host = 0, sandbox = 0;
        for (size_t i = 0; i < _RPC_METHOD_MAX; i++) {
                const rpc_method *m = &rpc_methods[i];
                bool h = m->flags & RPC_HOST_ONLY, s = m->flags & RPC_SANDBOX_ONLY;
                ck_assert_msg(h != s, "%s: exactly one of RPC_HOST_ONLY and RPC_SANDBOX_ONLY", m->name);
                _cleanup_error_ rpc_error err = {};
                ck_assert_int_eq(rpc_method_check_peer(m, false, &err), h ? 0 : -EPERM);
                ck_assert_int_eq(rpc_method_check_peer(m, true, &err), s ? 0 : -EPERM);
                ck_assert_int_eq(err.code, RPC_E_UNAUTHORIZED);
                host += h;
                sandbox += s;
        }
        ck_assert_uint_eq(sandbox, 2);
        ck_assert_uint_ge(host, 20);
        _cleanup_error_ rpc_error err = {};
        ck_assert_int_eq(rpc_method_check_peer(method("approval.answer"), true, &err), -EPERM);
        ck_assert_str_eq(err.message, "approval.answer is not available from inside a sandbox");
        ck_assert_int_eq(rpc_method_check_peer(method("credentials.get"), false, &err), -EPERM);
        ck_assert_str_eq(err.message, "credentials.get is only answered on a sandbox's broker socket ($AGENTD_BROKER)");
}
END_TEST

static Suite *rpc_suite(void) {
        Suite *s = suite_create("rpc");
        TCase *tc = tcase_create("params");
        tcase_add_test(tc, test_decode_every_type);
        tcase_add_test(tc, test_decode_optional_and_defaults);
        tcase_add_loop_test(tc, test_decode_invalid_params, 0, sizeof(bad_cases) / sizeof(bad_cases[0]));
        tcase_add_test(tc, test_decode_secret_not_copied);
        tcase_add_test(tc, test_table_matches_structs);
        tcase_add_test(tc, test_peer_check_every_method);
        tcase_add_test(tc, test_params_str_by_key);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return unit_run(rpc_suite(), false);
}
