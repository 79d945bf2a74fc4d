/* Unit tests for proto/: framing limits, partial input, envelope decoding,
 * parameter validation and every error code. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "unit.h"

typedef struct buf {
        msgpack_sbuffer sb;
        msgpack_packer pk;
} buf;

static void buf_init(buf *b) {
        msgpack_sbuffer_init(&b->sb);
        msgpack_packer_init(&b->pk, &b->sb, msgpack_sbuffer_write);
}

static void buf_done(buf *b) {
        msgpack_sbuffer_destroy(&b->sb);
}

/* Scans bytes fed one at a time; returns the scan result at the end. */
static int scan_bytewise(const uint8_t *data, size_t len, const proto_limits *lim, size_t *ret_len, proto_scan_error *e) {
        proto_scanner s;
        proto_scanner_reset(&s);
        for (size_t n = 1; n <= len; n++) {
                int r = proto_scan(&s, lim, data, n, ret_len, e);
                if (r != 0)
                        return r;
        }
        return 0;
}

/* One proto_scan of data[0..n) from a fresh scanner, which must refuse it
 * with `want`; *s is left for the caller's msgid checks. */
static void scan_refused(proto_scanner *s, const proto_limits *lim, const void *data, size_t n, proto_scan_error want) {
        proto_scan_error e = PROTO_SCAN_OK;
        size_t len;

        proto_scanner_reset(s);
        ck_assert_int_eq(proto_scan(s, lim, data, n, &len, &e), -1);
        ck_assert_int_eq(e, want);
}

static void pack_every_type(msgpack_packer *pk) {
        msgpack_pack_array(pk, 16);
        msgpack_pack_nil(pk);
        msgpack_pack_true(pk);
        msgpack_pack_false(pk);
        msgpack_pack_uint8(pk, 200);
        msgpack_pack_uint16(pk, 60000);
        msgpack_pack_uint32(pk, 4000000000u);
        msgpack_pack_uint64(pk, 1ull << 60);
        msgpack_pack_int8(pk, -100);
        msgpack_pack_int64(pk, -(1ll << 40));
        msgpack_pack_float(pk, 1.5f);
        msgpack_pack_double(pk, 2.25);
        msgpack_pack_str_with_body(pk, "hello", 5);
        msgpack_pack_bin_with_body(pk, "\x00\x01\x02", 3);
        msgpack_pack_ext_with_body(pk, "abcd", 4, 7);
        msgpack_pack_map(pk, 1);
        msgpack_pack_str_with_body(pk, "k", 1);
        msgpack_pack_array(pk, 0);
        char big[70000];
        memset(big, 'x', sizeof(big));
        msgpack_pack_str_with_body(pk, big, sizeof(big));
}

START_TEST(test_scan_every_type_bytewise) {
        buf b;
        buf_init(&b);
        pack_every_type(&b.pk);
        /* Trailing bytes of a second message must not be consumed. */
        msgpack_pack_nil(&b.pk);
        proto_limits lim;
        proto_limits_default(&lim);
        size_t len = 0;
        proto_scan_error e = PROTO_SCAN_OK;
        int r = scan_bytewise((const uint8_t *) b.sb.data, b.sb.size - 1, &lim, &len, &e);
        ck_assert_msg(r == 1, "r=%d error=%s", r, proto_scan_error_to_string(e));
        ck_assert_uint_eq(len, b.sb.size - 1);

        /* And all at once, with the extra byte present. */
        proto_scanner s;
        proto_scanner_reset(&s);
        r = proto_scan(&s, &lim, (const uint8_t *) b.sb.data, b.sb.size, &len, &e);
        ck_assert_int_eq(r, 1);
        ck_assert_uint_eq(len, b.sb.size - 1);
        buf_done(&b);
}
END_TEST

START_TEST(test_scan_incomplete) {
        buf b;
        buf_init(&b);
        pack_every_type(&b.pk);
        proto_limits lim;
        proto_limits_default(&lim);
        for (size_t cut = 0; cut < b.sb.size; cut += 997) {
                proto_scanner s;
                proto_scanner_reset(&s);
                size_t len;
                proto_scan_error e;
                ck_assert_int_eq(proto_scan(&s, &lim, (const uint8_t *) b.sb.data, cut, &len, &e), 0);
        }
        buf_done(&b);
}
END_TEST

START_TEST(test_scan_size_limit_from_header) {
        /* str32 declaring 2 GiB: refused from the 5-byte header alone. */
        const uint8_t hdr[] = { 0x94, 0x00, 0x01, 0xdb, 0x80, 0x00, 0x00, 0x00 };
        proto_limits lim;
        proto_limits_default(&lim);
        size_t len;
        proto_scan_error e = PROTO_SCAN_OK;
        proto_scanner s;
        scan_refused(&s, &lim, hdr, sizeof(hdr), PROTO_SCAN_TOO_BIG);
        ck_assert(s.have_msgid);
        ck_assert_uint_eq(s.msgid, 1);

        /* array32 with 2^31 elements: refused likewise. */
        const uint8_t arr[] = { 0xdd, 0x80, 0x00, 0x00, 0x00 };
        scan_refused(&s, &lim, arr, sizeof(arr), PROTO_SCAN_TOO_BIG);
        ck_assert(!s.have_msgid);

        /* A configured smaller limit applies exactly. */
        lim.max_message = 1024;
        buf b;
        buf_init(&b);
        char big[1100];
        memset(big, 'a', sizeof(big));
        msgpack_pack_str_with_body(&b.pk, big, 1000);
        proto_scanner_reset(&s);
        ck_assert_int_eq(proto_scan(&s, &lim, (const uint8_t *) b.sb.data, b.sb.size, &len, &e), 1);
        buf_done(&b);
        buf_init(&b);
        msgpack_pack_str_with_body(&b.pk, big, 1100);
        scan_refused(&s, &lim, (const uint8_t *) b.sb.data, 3, PROTO_SCAN_TOO_BIG);
        buf_done(&b);
}
END_TEST

START_TEST(test_scan_depth_limit) {
        proto_limits lim;
        proto_limits_default(&lim);
        /* 32 levels are fine, 33 are not. */
        uint8_t ok[64], bad[64];
        memset(ok, 0x91, 31);
        ok[31] = 0x90;
        memset(bad, 0x91, 32);
        bad[32] = 0x90;
        size_t len;
        proto_scan_error e = PROTO_SCAN_OK;
        proto_scanner s;
        proto_scanner_reset(&s);
        ck_assert_int_eq(proto_scan(&s, &lim, ok, 32, &len, &e), 1);
        ck_assert_uint_eq(len, 32);
        scan_refused(&s, &lim, bad, 33, PROTO_SCAN_TOO_DEEP);

        /* 100,000-deep nesting inside a request: refused, msgid still known. */
        size_t n = 100000 + 8;
        uint8_t *deep = malloc(n);
        deep[0] = 0x94;
        deep[1] = 0x00;
        deep[2] = 0x2a;
        deep[3] = 0xa1;
        deep[4] = 'x';
        memset(deep + 5, 0x91, n - 5);
        scan_refused(&s, &lim, deep, n, PROTO_SCAN_TOO_DEEP);
        ck_assert(s.have_msgid);
        ck_assert_uint_eq(s.msgid, 42);
        free(deep);

        /* The decoder accepts what the scanner lets through at the limit. */
        uint8_t req[64] = { 0x94, 0x00, 0x01, 0xa1, 'm' };
        memset(req + 5, 0x91, 30);
        req[35] = 0x90;
        proto_scanner_reset(&s);
        ck_assert_int_eq(proto_scan(&s, &lim, req, 36, &len, &e), 1);
        rpc_message m;
        _cleanup_error_ rpc_error err = {};
        ck_assert_int_eq(rpc_message_decode(&m, req, len, &err), -EINVAL); /* params not [] / [map] */
        ck_assert_int_eq(err.code, RPC_E_INVALID_PARAMS);
        rpc_message_done(&m);
}
END_TEST

START_TEST(test_scan_element_limit) {
        proto_limits lim;
        proto_limits_default(&lim);
        lim.max_elements = 100;
        buf b;
        buf_init(&b);
        msgpack_pack_array(&b.pk, 200);
        for (int i = 0; i < 200; i++)
                msgpack_pack_nil(&b.pk);
        proto_scanner s;
        scan_refused(&s, &lim, (const uint8_t *) b.sb.data, b.sb.size, PROTO_SCAN_TOO_MANY);
        buf_done(&b);
}
END_TEST

START_TEST(test_scan_malformed) {
        const uint8_t bad[] = { 0x94, 0x00, 0x07, 0xc1 };
        proto_limits lim;
        proto_limits_default(&lim);
        proto_scanner s;
        scan_refused(&s, &lim, bad, sizeof(bad), PROTO_SCAN_MALFORMED);
        ck_assert(s.have_msgid);
        ck_assert_uint_eq(s.msgid, 7);
}
END_TEST

static int decode_packed(buf *b, rpc_message *m, rpc_error *err) {
        return rpc_message_decode(m, (const uint8_t *) b->sb.data, b->sb.size, err);
}

START_TEST(test_decode_request) {
        buf b;
        buf_init(&b);
        rpc_pack_request_header(&b.pk, 77, "sandbox.kill");
        msgpack_pack_array(&b.pk, 1);
        msgpack_pack_map(&b.pk, 2);
        mp_pack_kv_str(&b.pk, "id", "abc");
        mp_pack_kv_i64(&b.pk, "signal", 9);
        rpc_message m;
        _cleanup_error_ rpc_error err = {};
        ck_assert_int_eq(decode_packed(&b, &m, &err), 0);
        ck_assert_int_eq(m.type, RPC_REQUEST);
        ck_assert_uint_eq(m.msgid, 77);
        ck_assert_uint_eq(m.method_len, strlen("sandbox.kill"));
        const rpc_method *meth = rpc_method_find(m.method, m.method_len);
        ck_assert_ptr_nonnull(meth);
        rpc_params_any args;
        ck_assert_int_eq(rpc_params_decode(meth, m.params, m.unpacked.zone, &args, &err), 0);
        ck_assert_str_eq(args.sandbox_kill.id, "abc");
        ck_assert_ptr_nonnull(args.sandbox_kill.signal);
        ck_assert_int_eq(args.sandbox_kill.signal->via.u64, 9);
        rpc_message_done(&m);
        buf_done(&b);
}
END_TEST

/* The decode zone is kept for the next message (proto/rpc.c), and what a
 * message decoded into it is wiped when the message is done. */
START_TEST(test_decode_zone_reused_and_wiped) {
        static const char marker[] = "zone-wipe-marker-0123456789";
        msgpack_zone *first = NULL;

        for (unsigned i = 0; i < 3; i++) {
                buf b;
                buf_init(&b);
                rpc_pack_request_header(&b.pk, 100 + i, "sandbox.kill");
                msgpack_pack_array(&b.pk, 1);
                msgpack_pack_map(&b.pk, 1);
                mp_pack_kv_str(&b.pk, "id", marker);
                rpc_message m;
                _cleanup_error_ rpc_error err = {};
                ck_assert_int_eq(decode_packed(&b, &m, &err), 0);
                ck_assert_uint_eq(m.msgid, 100 + i);
                if (i == 0)
                        first = m.unpacked.zone;
                else
                        ck_assert_ptr_eq(m.unpacked.zone, first);
                rpc_params_any args;
                ck_assert_int_eq(rpc_params_decode(rpc_method_find(m.method, m.method_len), m.params, m.unpacked.zone,
                                                   &args, &err), 0);
                ck_assert_str_eq(args.sandbox_kill.id, marker);
                const char *copy = args.sandbox_kill.id;
                buf_done(&b);
                rpc_message_done(&m);
                /* the copy lived in the kept zone: zeroed, not freed */
                for (size_t k = 0; k < sizeof(marker); k++)
                        ck_assert_int_eq(copy[k], 0);
        }
}
END_TEST

START_TEST(test_decode_bad_envelopes) {
        rpc_message m;
        _cleanup_error_ rpc_error err = {};
        buf b;

        /* Not an array. */
        buf_init(&b);
        msgpack_pack_uint8(&b.pk, 5);
        memset(&err, 0, sizeof(err));
        ck_assert_int_lt(decode_packed(&b, &m, &err), 0);
        ck_assert_int_eq(err.code, RPC_E_INVALID_REQUEST);
        ck_assert(!m.have_msgid);
        rpc_message_done(&m);
        buf_done(&b);

        /* msgid not a uint32. */
        buf_init(&b);
        msgpack_pack_array(&b.pk, 4);
        msgpack_pack_uint8(&b.pk, 0);
        msgpack_pack_int8(&b.pk, -1);
        mp_pack_cstr(&b.pk, "agentd.ping");
        msgpack_pack_array(&b.pk, 0);
        ck_assert_int_lt(decode_packed(&b, &m, &err), 0);
        ck_assert_int_eq(err.code, RPC_E_INVALID_REQUEST);
        rpc_message_done(&m);
        buf_done(&b);

        /* Method not a string: msgid known. */
        buf_init(&b);
        msgpack_pack_array(&b.pk, 4);
        msgpack_pack_uint8(&b.pk, 0);
        msgpack_pack_uint8(&b.pk, 3);
        msgpack_pack_uint8(&b.pk, 3);
        msgpack_pack_array(&b.pk, 0);
        ck_assert_int_lt(decode_packed(&b, &m, &err), 0);
        ck_assert_int_eq(err.code, RPC_E_INVALID_REQUEST);
        ck_assert(m.have_msgid);
        ck_assert_uint_eq(m.msgid, 3);
        rpc_message_done(&m);
        buf_done(&b);

        /* Params not an array. */
        buf_init(&b);
        rpc_pack_request_header(&b.pk, 4, "agentd.ping");
        msgpack_pack_map(&b.pk, 0);
        ck_assert_int_lt(decode_packed(&b, &m, &err), 0);
        ck_assert_int_eq(err.code, RPC_E_INVALID_REQUEST);
        rpc_message_done(&m);
        buf_done(&b);

        /* Positional params. */
        buf_init(&b);
        rpc_pack_request_header(&b.pk, 5, "task.show");
        msgpack_pack_array(&b.pk, 1);
        mp_pack_cstr(&b.pk, "default");
        ck_assert_int_lt(decode_packed(&b, &m, &err), 0);
        ck_assert_int_eq(err.code, RPC_E_INVALID_PARAMS);
        rpc_message_done(&m);
        buf_done(&b);
}
END_TEST

static int params_decode(const rpc_method *meth, rpc_message *m, rpc_error *err) {
        rpc_params_any args;
        return rpc_params_decode(meth, m->params, m->unpacked.zone, &args, err);
}

static int validate(const char *method, void (*fill)(msgpack_packer *), rpc_error *err) {
        buf b;
        buf_init(&b);
        rpc_pack_request_header(&b.pk, 1, method);
        msgpack_pack_array(&b.pk, 1);
        fill(&b.pk);
        rpc_message m;
        int r = decode_packed(&b, &m, err);
        if (r == 0)
                r = params_decode(rpc_method_find(m.method, m.method_len), &m, err);
        rpc_message_done(&m);
        buf_done(&b);
        return r;
}

static void fill_missing(msgpack_packer *pk) {
        msgpack_pack_map(pk, 0);
}
static void fill_wrong_type(msgpack_packer *pk) {
        msgpack_pack_map(pk, 1);
        mp_pack_cstr(pk, "name");
        msgpack_pack_uint8(pk, 1);
}
static void fill_unknown(msgpack_packer *pk) {
        msgpack_pack_map(pk, 2);
        mp_pack_kv_str(pk, "name", "x");
        mp_pack_kv_str(pk, "bogus", "x");
}
static void fill_dup(msgpack_packer *pk) {
        msgpack_pack_map(pk, 2);
        mp_pack_kv_str(pk, "name", "x");
        mp_pack_kv_str(pk, "name", "y");
}
static void fill_argv_bad(msgpack_packer *pk) {
        msgpack_pack_map(pk, 1);
        mp_pack_cstr(pk, "argv");
        msgpack_pack_array(pk, 2);
        mp_pack_cstr(pk, "ls");
        msgpack_pack_uint8(pk, 1);
}
static void fill_env_bad(msgpack_packer *pk) {
        msgpack_pack_map(pk, 1);
        mp_pack_cstr(pk, "env");
        msgpack_pack_map(pk, 1);
        mp_pack_cstr(pk, "A");
        msgpack_pack_true(pk);
}
static void fill_nul(msgpack_packer *pk) {
        msgpack_pack_map(pk, 1);
        mp_pack_cstr(pk, "name");
        msgpack_pack_str_with_body(pk, "a\0b", 3);
}
static void fill_ok(msgpack_packer *pk) {
        msgpack_pack_map(pk, 3);
        mp_pack_cstr(pk, "argv");
        msgpack_pack_array(pk, 1);
        mp_pack_cstr(pk, "true");
        mp_pack_kv_bool(pk, "tty", false);
        mp_pack_kv_nil(pk, "task");
}

static void fill_env_empty_array(msgpack_packer *pk) {
        msgpack_pack_map(pk, 1);
        mp_pack_cstr(pk, "env");
        msgpack_pack_array(pk, 0);
}
static void fill_empty_array(msgpack_packer *pk) {
        msgpack_pack_array(pk, 0);
}

/* Every method's every required parameter, given as nil (the others present
 * and valid): invalid_params naming it, from the one validation place. */
static void pack_value_of_type(msgpack_packer *pk, rpc_param_type t) {
        switch (t) {
        case RPC_PARAM_BOOL: msgpack_pack_true(pk); break;
        case RPC_PARAM_UINT: case RPC_PARAM_INT: msgpack_pack_uint8(pk, 1); break;
        case RPC_PARAM_STRV: msgpack_pack_array(pk, 0); break;
        case RPC_PARAM_STRMAP: msgpack_pack_map(pk, 0); break;
        default: mp_pack_cstr(pk, "x");
        }
}

START_TEST(test_required_nil_every_method) {
        unsigned checked = 0;
        for (size_t mi = 0; mi < _RPC_METHOD_MAX; mi++) {
                const rpc_param_desc *items = rpc_method_params(&rpc_methods[mi]);
                size_t n = rpc_methods[mi].n_params;
                for (size_t nil_at = 0; nil_at < n; nil_at++) {
                        if (items[nil_at].optional)
                                continue;
                        buf b;
                        buf_init(&b);
                        rpc_pack_request_header(&b.pk, 1, rpc_methods[mi].name);
                        msgpack_pack_array(&b.pk, 1);
                        size_t n_required = 0;
                        for (size_t i = 0; i < n; i++)
                                n_required += !items[i].optional;
                        msgpack_pack_map(&b.pk, n_required);
                        for (size_t i = 0; i < n; i++) {
                                if (items[i].optional)
                                        continue;
                                mp_pack_cstr(&b.pk, items[i].key);
                                if (i == nil_at)
                                        msgpack_pack_nil(&b.pk);
                                else
                                        pack_value_of_type(&b.pk, items[i].type);
                        }
                        rpc_message m;
                        _cleanup_error_ rpc_error err = {};
                        ck_assert_int_eq(decode_packed(&b, &m, &err), 0);
                        ck_assert_int_eq(params_decode(&rpc_methods[mi], &m, &err), -EINVAL);
                        ck_assert_int_eq(err.code, RPC_E_INVALID_PARAMS);
                        char want[64];
                        snprintf(want, sizeof(want), "'%s'", items[nil_at].key);
                        ck_assert_msg(strstr(err.message, want), "%s: %s", rpc_methods[mi].name, err.message);
                        rpc_message_done(&m);
                        buf_done(&b);
                        checked++;
                }
        }
        /* task.show name, sandbox.{wait,kill,logs,diff,promote,discard} id, broker.enroll role_id, secret_id. */
        ck_assert_uint_ge(checked, 9);
}
END_TEST

START_TEST(test_params) {
        _cleanup_error_ rpc_error err = {};
        ck_assert_int_lt(validate("task.show", fill_missing, &err), 0);
        ck_assert_int_eq(err.code, RPC_E_INVALID_PARAMS);
        ck_assert_ptr_nonnull(strstr(err.message, "missing parameter 'name'"));
        ck_assert_int_lt(validate("task.show", fill_wrong_type, &err), 0);
        ck_assert_ptr_nonnull(strstr(err.message, "'name' must be a string"));
        ck_assert_int_lt(validate("task.show", fill_unknown, &err), 0);
        ck_assert_ptr_nonnull(strstr(err.message, "unknown parameter 'bogus'"));
        ck_assert_int_lt(validate("task.show", fill_dup, &err), 0);
        ck_assert_ptr_nonnull(strstr(err.message, "given twice"));
        ck_assert_int_lt(validate("task.show", fill_nul, &err), 0);
        ck_assert_int_lt(validate("sandbox.spawn", fill_argv_bad, &err), 0);
        ck_assert_ptr_nonnull(strstr(err.message, "array of strings"));
        ck_assert_int_lt(validate("sandbox.spawn", fill_env_bad, &err), 0);
        ck_assert_ptr_nonnull(strstr(err.message, "map of strings"));
        ck_assert_int_eq(validate("sandbox.spawn", fill_ok, &err), 0);
        /* An empty array where a map is taken is an empty map (Lua's {}). */
        ck_assert_int_eq(validate("sandbox.spawn", fill_env_empty_array, &err), 0);
        /* params [[]] is "all defaults", like [] and [{}]. */
        ck_assert_int_eq(validate("agentd.ping", fill_empty_array, &err), 0);
        ck_assert_int_eq(validate("sandbox.spawn", fill_empty_array, &err), 0);
        ck_assert_int_lt(validate("task.show", fill_empty_array, &err), 0);
        ck_assert_ptr_nonnull(strstr(err.message, "missing parameter 'name'"));
}
END_TEST

START_TEST(test_error_codes_and_table) {
        static const char *const want[] = {
                "invalid_request", "method_not_found", "invalid_params", "not_found", "policy_denied",
                "limit_exceeded", "unauthorized", "locked_down", "backend_unavailable", "internal",
        };
        for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
                ck_assert_str_eq(rpc_error_code_to_string((rpc_error_code) i), want[i]);

        /* Every method is findable, names are unique, specs parse. */
        for (size_t i = 0; i < _RPC_METHOD_MAX; i++) {
                const rpc_method *m = rpc_method_find(rpc_methods[i].name, strlen(rpc_methods[i].name));
                ck_assert_ptr_eq(m, &rpc_methods[i]);
                ck_assert(rpc_methods[i].cli && rpc_methods[i].summary);
        }
        ck_assert_ptr_null(rpc_method_find("agentd.nope", 11));

        /* An error response has exactly the contract's shape. */
        buf b;
        buf_init(&b);
        rpc_pack_error_response(&b.pk, true, 9, RPC_E_NOT_FOUND, "gone");
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        size_t off = 0;
        ck_assert_int_eq(msgpack_unpack_next(&u, b.sb.data, b.sb.size, &off), MSGPACK_UNPACK_SUCCESS);
        ck_assert_int_eq(u.data.type, MSGPACK_OBJECT_ARRAY);
        ck_assert_uint_eq(u.data.via.array.size, 4);
        ck_assert_uint_eq(u.data.via.array.ptr[1].via.u64, 9);
        /* Errors v2: [kind, "code: message"], kind 0 for not_found. */
        const msgpack_object *e = &u.data.via.array.ptr[2];
        ck_assert_int_eq(e->type, MSGPACK_OBJECT_ARRAY);
        ck_assert_uint_eq(e->via.array.size, 2);
        ck_assert_int_eq(e->via.array.ptr[0].type, MSGPACK_OBJECT_POSITIVE_INTEGER);
        ck_assert_uint_eq(e->via.array.ptr[0].via.u64, 0);
        ck_assert(mp_str_eq(&e->via.array.ptr[1], "not_found: gone"));
        ck_assert_int_eq(u.data.via.array.ptr[3].type, MSGPACK_OBJECT_NIL);
        char code[64], message[64];
        ck_assert_int_eq(rpc_error_parse(e, code, sizeof(code), message, sizeof(message)), 0);
        ck_assert_str_eq(code, "not_found");
        ck_assert_str_eq(message, "gone");
        msgpack_unpacked_destroy(&u);
        buf_done(&b);

        /* kind 1 exactly for the three validation codes. */
        for (int c = 0; c < _RPC_E_MAX; c++)
                ck_assert_uint_eq(rpc_error_kind((rpc_error_code) c),
                                  c == RPC_E_INVALID_REQUEST || c == RPC_E_INVALID_PARAMS || c == RPC_E_METHOD_NOT_FOUND);

        /* Without a msgid, with a message holding ": " itself, truncated. */
        buf_init(&b);
        rpc_pack_error_response(&b.pk, false, 0, RPC_E_INVALID_PARAMS, "parameter 'id': must be a string");
        msgpack_unpacked_init(&u);
        off = 0;
        ck_assert_int_eq(msgpack_unpack_next(&u, b.sb.data, b.sb.size, &off), MSGPACK_UNPACK_SUCCESS);
        ck_assert_int_eq(u.data.via.array.ptr[1].type, MSGPACK_OBJECT_NIL);
        e = &u.data.via.array.ptr[2];
        ck_assert_uint_eq(e->via.array.ptr[0].via.u64, 1);
        ck_assert_int_eq(rpc_error_parse(e, code, sizeof(code), message, 10), 0);
        ck_assert_str_eq(code, "invalid_params");
        ck_assert_str_eq(message, "parameter");
        msgpack_unpacked_destroy(&u);
        buf_done(&b);

        /* Other shapes are refused, not guessed at. */
        msgpack_object bad = { .type = MSGPACK_OBJECT_NIL };
        ck_assert_int_eq(rpc_error_parse(&bad, code, sizeof(code), message, sizeof(message)), -EBADMSG);
        msgpack_object items[2] = { { .type = MSGPACK_OBJECT_POSITIVE_INTEGER }, { .type = MSGPACK_OBJECT_STR } };
        items[1].via.str.ptr = "no colon";
        items[1].via.str.size = 8;
        bad.type = MSGPACK_OBJECT_ARRAY;
        bad.via.array.size = 2;
        bad.via.array.ptr = items;
        ck_assert_int_eq(rpc_error_parse(&bad, code, sizeof(code), message, sizeof(message)), -EBADMSG);
        items[1].via.str.ptr = "not_found: x";
        items[1].via.str.size = 12;
        ck_assert_int_eq(rpc_error_parse(&bad, code, sizeof(code), message, sizeof(message)), 0);
        ck_assert_str_eq(message, "x");
}
END_TEST

static Suite *codec_suite(void) {
        Suite *s = suite_create("codec");
        TCase *tc = tcase_create("codec");
        tcase_add_test(tc, test_scan_every_type_bytewise);
        tcase_add_test(tc, test_scan_incomplete);
        tcase_add_test(tc, test_scan_size_limit_from_header);
        tcase_add_test(tc, test_scan_depth_limit);
        tcase_add_test(tc, test_scan_element_limit);
        tcase_add_test(tc, test_scan_malformed);
        tcase_add_test(tc, test_decode_request);
        tcase_add_test(tc, test_decode_bad_envelopes);
        tcase_add_test(tc, test_decode_zone_reused_and_wiped);
        tcase_add_test(tc, test_params);
        tcase_add_test(tc, test_required_nil_every_method);
        tcase_add_test(tc, test_error_codes_and_table);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return unit_run(codec_suite(), false);
}
