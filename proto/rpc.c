/* MessagePack-RPC envelopes: decoding requests, validating parameters against
 * the method table, and packing responses, errors and notifications. */
#include "proto.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"

const char *rpc_error_code_to_string(rpc_error_code c) {
        return error_code_to_string(c);
}

/* Each method's parameter table: offsetof() into its rpc_<ident>_params,
 * which is named S inside the function holding the table (a macro argument
 * cannot carry the method's name into REQ/OPT). */
#define PARAMS(...) __VA_ARGS__
#define REQ(k, T) PARAM_DESC(k, T, false)
#define OPT(k, T) PARAM_DESC(k, T, true)
#define PARAM_DESC(k, T, opt) \
        { .key = #k, .type = RPC_PARAM_##T, .optional = opt, .offset = offsetof(S, k), .has_offset = HAS_OFFSET_##T(k) },
#define HAS_OFFSET_STR(k) 0
#define HAS_OFFSET_BOOL(k) offsetof(S, has_##k)
#define HAS_OFFSET_UINT(k) offsetof(S, has_##k)
#define HAS_OFFSET_INT(k) offsetof(S, has_##k)
#define HAS_OFFSET_STRV(k) 0
#define HAS_OFFSET_STRMAP(k) 0
#define HAS_OFFSET_ANY(k) 0
#define HAS_OFFSET_SECRET(k) 0
#define METHOD(n, ident, f, params, c, s)                                             \
        static const rpc_param_desc *param_table_##ident(void) {                     \
                typedef rpc_##ident##_params S __attribute__((unused));               \
                static const rpc_param_desc table[] = { params { .key = NULL } };     \
                return table;                                                         \
        }
#include "methods.def"
#undef METHOD
#undef PARAM_DESC
#undef REQ
#undef OPT

#define REQ(k, T) +1
#define OPT(k, T) +1
const rpc_method rpc_methods[_RPC_METHOD_MAX] = {
#define METHOD(n, ident, f, params, c, s)                                                                   \
        [RPC_METHOD_##ident] = { .name = n, .id = RPC_METHOD_##ident, .flags = (f),                        \
                                 .param_table = param_table_##ident, .n_params = 0 params,                 \
                                 .params_size = sizeof(rpc_##ident##_params), .cli = c, .summary = s },
#include "methods.def"
#undef METHOD
};
#undef REQ
#undef OPT
#undef PARAMS

const rpc_param_desc *rpc_method_params(const rpc_method *m) {
        return m->param_table();
}

static const char *const param_type_names[_RPC_PARAM_TYPE_MAX] = {
        [RPC_PARAM_STR] = "string",     [RPC_PARAM_BOOL] = "bool",
        [RPC_PARAM_UINT] = "uint",      [RPC_PARAM_INT] = "int",
        [RPC_PARAM_STRV] = "[string]",  [RPC_PARAM_STRMAP] = "{string: string}",
        [RPC_PARAM_ANY] = "any",       [RPC_PARAM_SECRET] = "string",
};

const char *rpc_param_type_to_string(rpc_param_type t) {
        return (unsigned) t < _RPC_PARAM_TYPE_MAX ? param_type_names[t] : "?";
}

/* The names' lengths, known at compile time (every request looks its method up). */
static const uint8_t method_name_len[_RPC_METHOD_MAX] = {
#define METHOD(n, ident, f, params, c, s) [RPC_METHOD_##ident] = sizeof(n) - 1,
#include "methods.def"
#undef METHOD
};

const rpc_method *rpc_method_find(const char *name, size_t len) {
        for (size_t i = 0; i < _RPC_METHOD_MAX; i++)
                if (method_name_len[i] == len && memcmp(rpc_methods[i].name, name, len) == 0)
                        return &rpc_methods[i];
        return NULL;
}

void rpc_error_set(rpc_error *e, rpc_error_code code, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        (void) error_setv(e, code, error_code_to_errno(code), fmt, ap);
        va_end(ap);
}

bool mp_str_eq(const msgpack_object *o, const char *s) {
        size_t n = strlen(s);
        return o && o->type == MSGPACK_OBJECT_STR && o->via.str.size == n && memcmp(o->via.str.ptr, s, n) == 0;
}

/* A message's zone is kept for the next message of the same thread: a
 * request used to cost a zone and its first 8 KiB chunk from malloc and back
 * (msgpack_unpack_next() makes a new zone per call). What a message put into
 * it (its objects and decoded strings, which may be secrets) is zeroed before
 * the zone is kept; a zone that had to grow a second chunk is freed instead. */
static _Thread_local msgpack_zone *spare_zone;

static msgpack_zone *zone_take(void) {
        msgpack_zone *z = spare_zone;

        spare_zone = NULL;
        return z ?: msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
}

static void zone_give_back(msgpack_zone *z, const char *start, const void *head) {
        if (!z)
                return;
        if (spare_zone || z->chunk_list.head != head || z->finalizer_array.tail != z->finalizer_array.array) {
                msgpack_zone_free(z);
                return;
        }
        explicit_zero((char *) start, (size_t) (z->chunk_list.ptr - start));
        msgpack_zone_clear(z);
        spare_zone = z;
}

int rpc_message_decode(rpc_message *m, const uint8_t *buf, size_t len, rpc_error *err) {
        size_t off = 0;

        memset(m, 0, sizeof(*m));
        msgpack_unpacked_init(&m->unpacked);
        m->unpacked.zone = zone_take();
        if (!m->unpacked.zone) {
                rpc_error_set(err, RPC_E_INTERNAL, "out of memory");
                return -ENOMEM;
        }
        m->zone_start = m->unpacked.zone->chunk_list.ptr;
        m->zone_head = m->unpacked.zone->chunk_list.head;
        /* msgpack_unpack() fills a zone of ours (msgpack_unpack_next() makes its own) */
        msgpack_unpack_return r = msgpack_unpack((const char *) buf, len, &off, m->unpacked.zone, &m->unpacked.data);
        if (r != MSGPACK_UNPACK_SUCCESS || off != len) {
                rpc_error_set(err, RPC_E_INVALID_REQUEST, "not a msgpack-rpc message: undecodable msgpack");
                return -EBADMSG;
        }

        const msgpack_object *o = &m->unpacked.data;
        if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size < 3 || o->via.array.size > 4) {
                rpc_error_set(err, RPC_E_INVALID_REQUEST, "not a msgpack-rpc message: expected an array of 3 or 4 elements");
                return -EBADMSG;
        }
        const msgpack_object *a = o->via.array.ptr;
        if (a[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER || a[0].via.u64 > 2) {
                rpc_error_set(err, RPC_E_INVALID_REQUEST, "not a msgpack-rpc message: element 0 must be 0, 1 or 2");
                return -EBADMSG;
        }
        m->type = (rpc_msg_type) a[0].via.u64;

        if (m->type == RPC_NOTIFICATION) {
                if (o->via.array.size != 3) {
                        rpc_error_set(err, RPC_E_INVALID_REQUEST, "a notification has 3 elements");
                        return -EBADMSG;
                }
                if (a[1].type != MSGPACK_OBJECT_STR) {
                        rpc_error_set(err, RPC_E_INVALID_REQUEST, "method must be a string");
                        return -EBADMSG;
                }
                m->method = a[1].via.str.ptr;
                m->method_len = a[1].via.str.size;
                return 0;
        }

        if (o->via.array.size != 4) {
                rpc_error_set(err, RPC_E_INVALID_REQUEST, "requests and responses have 4 elements");
                return -EBADMSG;
        }
        if (a[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER || a[1].via.u64 > UINT32_MAX) {
                rpc_error_set(err, RPC_E_INVALID_REQUEST, "msgid must be a uint32");
                return -EBADMSG;
        }
        m->have_msgid = true;
        m->msgid = (uint32_t) a[1].via.u64;

        if (m->type == RPC_RESPONSE) {
                m->error = &a[2];
                m->result = &a[3];
                return 0;
        }

        if (a[2].type != MSGPACK_OBJECT_STR) {
                rpc_error_set(err, RPC_E_INVALID_REQUEST, "method must be a string");
                return -EBADMSG;
        }
        if (a[2].via.str.size == 0 || a[2].via.str.size > PROTO_MAX_METHOD_NAME) {
                rpc_error_set(err, RPC_E_INVALID_REQUEST, "method name must be 1..%u bytes", PROTO_MAX_METHOD_NAME);
                return -EBADMSG;
        }
        m->method = a[2].via.str.ptr;
        m->method_len = a[2].via.str.size;

        if (a[3].type != MSGPACK_OBJECT_ARRAY) {
                rpc_error_set(err, RPC_E_INVALID_REQUEST, "params must be an array");
                return -EBADMSG;
        }
        if (a[3].via.array.size > 1) {
                rpc_error_set(err, RPC_E_INVALID_PARAMS, "params must be [] or [{named parameters}]");
                return -EINVAL;
        }
        if (a[3].via.array.size == 1) {
                const msgpack_object *p = &a[3].via.array.ptr[0];
                /* [[]]: clients that cannot tell an empty map from an empty
                 * array (Lua's {}) mean "all defaults" (CONTRACT §2). */
                if (p->type == MSGPACK_OBJECT_NIL || (p->type == MSGPACK_OBJECT_ARRAY && p->via.array.size == 0))
                        m->params = NULL;
                else if (p->type != MSGPACK_OBJECT_MAP) {
                        rpc_error_set(err, RPC_E_INVALID_PARAMS, "params must be [] or [{named parameters}]");
                        return -EINVAL;
                } else
                        m->params = p;
        }
        return 0;
}

void rpc_message_done(rpc_message *m) {
        zone_give_back(m->unpacked.zone, m->zone_start, m->zone_head);
        memset(m, 0, sizeof(*m));
}

/* ---- parameters -------------------------------------------------------- */

static bool str_ok(const msgpack_object *v) {
        return v->type == MSGPACK_OBJECT_STR && !memchr(v->via.str.ptr, 0, v->via.str.size);
}

static bool type_matches(rpc_param_type t, const msgpack_object *v, const char **why) {
        switch (t) {
        case RPC_PARAM_STR:
        case RPC_PARAM_SECRET:
                *why = "a string";
                return str_ok(v);
        case RPC_PARAM_BOOL:
                *why = "a boolean";
                return v->type == MSGPACK_OBJECT_BOOLEAN;
        case RPC_PARAM_UINT:
                *why = "an unsigned integer";
                return v->type == MSGPACK_OBJECT_POSITIVE_INTEGER;
        case RPC_PARAM_INT:
                *why = "an integer";
                /* A positive integer above INT64_MAX does not fit the member. */
                return (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 <= INT64_MAX) ||
                       v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER;
        case RPC_PARAM_STRV:
                *why = "an array of strings";
                if (v->type != MSGPACK_OBJECT_ARRAY)
                        return false;
                for (uint32_t i = 0; i < v->via.array.size; i++)
                        if (!str_ok(&v->via.array.ptr[i]))
                                return false;
                return true;
        case RPC_PARAM_STRMAP:
                *why = "a map of strings to strings";
                /* An empty array is an empty map (Lua's {}); handlers read it
                 * through via.map.size, the common initial member. */
                if (v->type == MSGPACK_OBJECT_ARRAY && v->via.array.size == 0)
                        return true;
                if (v->type != MSGPACK_OBJECT_MAP)
                        return false;
                for (uint32_t i = 0; i < v->via.map.size; i++)
                        if (!str_ok(&v->via.map.ptr[i].key) || !str_ok(&v->via.map.ptr[i].val))
                                return false;
                return true;
        case RPC_PARAM_ANY:
                *why = "anything";
                return true;
        default:
                *why = "?";
                return false;
        }
}

static char *zone_strndup(msgpack_zone *zone, const char *s, size_t n) {
        char *r = msgpack_zone_malloc(zone, n + 1);
        if (!r)
                return NULL;
        memcpy(r, s, n);
        r[n] = 0;
        return r;
}

/* Stores one checked, non-nil value into its member. */
static int store_value(const rpc_param_desc *d, const msgpack_object *v, msgpack_zone *zone, uint8_t *base) {
        void *field = base + d->offset;
        switch (d->type) {
        case RPC_PARAM_STR: {
                char *s = zone_strndup(zone, v->via.str.ptr, v->via.str.size);
                if (!s)
                        return -ENOMEM;
                *(const char **) field = s;
                break;
        }
        case RPC_PARAM_BOOL:
                *(bool *) field = v->via.boolean;
                break;
        case RPC_PARAM_UINT:
                *(uint64_t *) field = v->via.u64;
                break;
        case RPC_PARAM_INT:
                *(int64_t *) field = v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ? v->via.i64 : (int64_t) v->via.u64;
                break;
        case RPC_PARAM_STRV: {
                char **strv = msgpack_zone_malloc(zone, (v->via.array.size + 1) * sizeof(char *));
                if (!strv)
                        return -ENOMEM;
                for (uint32_t i = 0; i < v->via.array.size; i++) {
                        strv[i] = zone_strndup(zone, v->via.array.ptr[i].via.str.ptr, v->via.array.ptr[i].via.str.size);
                        if (!strv[i])
                                return -ENOMEM;
                }
                strv[v->via.array.size] = NULL;
                *(char ***) field = strv;
                break;
        }
        case RPC_PARAM_STRMAP:
        case RPC_PARAM_ANY:
        case RPC_PARAM_SECRET:
        default:
                *(const msgpack_object **) field = v;
                break;
        }
        if (d->has_offset)
                *(bool *) (base + d->has_offset) = true;
        return 0;
}

static const rpc_param_desc *desc_find(const rpc_method *method, const char *key, size_t len) {
        const rpc_param_desc *t = rpc_method_params(method);
        for (size_t i = 0; i < method->n_params; i++)
                if (strlen(t[i].key) == len && memcmp(t[i].key, key, len) == 0)
                        return &t[i];
        return NULL;
}

/* The map's value for key, or NULL when the key is absent. */
static const msgpack_object *map_value(const msgpack_object *params, const char *key) {
        size_t n = strlen(key);
        for (uint32_t i = 0; params && i < params->via.map.size; i++) {
                const msgpack_object *k = &params->via.map.ptr[i].key;
                if (k->via.str.size == n && memcmp(k->via.str.ptr, key, n) == 0)
                        return &params->via.map.ptr[i].val;
        }
        return NULL;
}

/* Keys, in the order given: names, known, once, of the right type. */
static int check_keys(const rpc_method *method, const msgpack_object *params, rpc_error *err) {
        for (uint32_t i = 0; params && i < params->via.map.size; i++) {
                const msgpack_object_kv *kv = &params->via.map.ptr[i];
                if (kv->key.type != MSGPACK_OBJECT_STR) {
                        rpc_error_set(err, RPC_E_INVALID_PARAMS, "parameter names must be strings");
                        return -EINVAL;
                }
                const char *key = kv->key.via.str.ptr;
                size_t len = kv->key.via.str.size;
                const rpc_param_desc *d = desc_find(method, key, len);
                if (!d) {
                        rpc_error_set(err, RPC_E_INVALID_PARAMS, "unknown parameter '%.*s' for %s",
                                      (int) (len > 64 ? 64 : len), key, method->name);
                        return -EINVAL;
                }
                for (uint32_t j = 0; j < i; j++) {
                        const msgpack_object *k = &params->via.map.ptr[j].key;
                        if (k->via.str.size == len && memcmp(k->via.str.ptr, key, len) == 0) {
                                rpc_error_set(err, RPC_E_INVALID_PARAMS, "parameter '%.*s' given twice", (int) len, key);
                                return -EINVAL;
                        }
                }
                const char *why;
                /* nil means "default" for optional parameters. */
                if (kv->val.type == MSGPACK_OBJECT_NIL)
                        continue;
                if (!type_matches(d->type, &kv->val, &why)) {
                        rpc_error_set(err, RPC_E_INVALID_PARAMS, "parameter '%.*s' must be %s", (int) len, key, why);
                        return -EINVAL;
                }
        }
        return 0;
}

int rpc_params_decode(const rpc_method *method, const msgpack_object *params, msgpack_zone *zone, void *ret,
                      rpc_error *err) {
        memset(ret, 0, method->params_size);
        int r = check_keys(method, params, err);
        if (r < 0)
                return r;
        /* Then the table, in its order: required keys present and not nil. */
        const rpc_param_desc *t = rpc_method_params(method);
        for (size_t i = 0; i < method->n_params; i++) {
                const msgpack_object *v = map_value(params, t[i].key);
                if (!t[i].optional && !v) {
                        rpc_error_set(err, RPC_E_INVALID_PARAMS, "missing parameter '%s'", t[i].key);
                        return -EINVAL;
                }
                /* Required means present and non-nil: handlers never see a nil they must have. */
                if (!t[i].optional && v->type == MSGPACK_OBJECT_NIL) {
                        rpc_error_set(err, RPC_E_INVALID_PARAMS, "parameter '%s' is required and must not be nil", t[i].key);
                        return -EINVAL;
                }
                if (!v || v->type == MSGPACK_OBJECT_NIL)
                        continue;
                r = store_value(&t[i], v, zone, ret);
                if (r < 0) {
                        rpc_error_set(err, RPC_E_INTERNAL, "out of memory decoding parameter '%s'", t[i].key);
                        return r;
                }
        }
        return 0;
}

int rpc_method_check_peer(const rpc_method *method, bool on_sandbox_socket, rpc_error *err) {
        if (on_sandbox_socket && !(method->flags & RPC_SANDBOX_ONLY)) {
                rpc_error_set(err, RPC_E_UNAUTHORIZED, "%s is not available from inside a sandbox", method->name);
                return -EPERM;
        }
        if (!on_sandbox_socket && (method->flags & RPC_SANDBOX_ONLY)) {
                rpc_error_set(err, RPC_E_UNAUTHORIZED, "%s is only answered on a sandbox's broker socket ($AGENTD_BROKER)",
                              method->name);
                return -EPERM;
        }
        return 0;
}

const char *rpc_params_str(const rpc_method *method, const void *args, const char *key) {
        const rpc_param_desc *d = desc_find(method, key, strlen(key));
        if (!d || d->type != RPC_PARAM_STR)
                return NULL;
        return *(const char *const *) ((const uint8_t *) args + d->offset);
}

char **rpc_strv_dup(char *const *v) {
        size_t n = strv_length(v);
        _cleanup_strv_free_ char **r = calloc(n + 1, sizeof(char *));
        if (!r)
                return NULL;
        for (size_t i = 0; i < n; i++)
                if (!(r[i] = strdup(v[i])))
                        return NULL;
        return TAKE_PTR(r);
}

/* ---- encoding ---------------------------------------------------------- */

void mp_pack_cstr(msgpack_packer *pk, const char *s) {
        if (!s) {
                msgpack_pack_nil(pk);
                return;
        }
        size_t n = strlen(s);
        msgpack_pack_str(pk, n);
        msgpack_pack_str_body(pk, s, n);
}

void mp_pack_kv_str(msgpack_packer *pk, const char *key, const char *value) {
        mp_pack_cstr(pk, key);
        mp_pack_cstr(pk, value);
}

void mp_pack_kv_u64(msgpack_packer *pk, const char *key, uint64_t value) {
        mp_pack_cstr(pk, key);
        msgpack_pack_uint64(pk, value);
}

void mp_pack_kv_i64(msgpack_packer *pk, const char *key, int64_t value) {
        mp_pack_cstr(pk, key);
        msgpack_pack_int64(pk, value);
}

void mp_pack_kv_bool(msgpack_packer *pk, const char *key, bool value) {
        mp_pack_cstr(pk, key);
        if (value)
                msgpack_pack_true(pk);
        else
                msgpack_pack_false(pk);
}

void mp_pack_kv_nil(msgpack_packer *pk, const char *key) {
        mp_pack_cstr(pk, key);
        msgpack_pack_nil(pk);
}

void mp_pack_strv(msgpack_packer *pk, char *const *v) {
        size_t n = strv_length(v);
        msgpack_pack_array(pk, n);
        for (size_t i = 0; i < n; i++)
                mp_pack_cstr(pk, v[i]);
}

void rpc_pack_response_header(msgpack_packer *pk, uint32_t msgid) {
        msgpack_pack_array(pk, 4);
        msgpack_pack_uint32(pk, RPC_RESPONSE);
        msgpack_pack_uint32(pk, msgid);
        msgpack_pack_nil(pk);
}

void rpc_pack_error_response(msgpack_packer *pk, bool have_msgid, uint32_t msgid,
                             rpc_error_code code, const char *message) {
        msgpack_pack_array(pk, 4);
        msgpack_pack_uint32(pk, RPC_RESPONSE);
        if (have_msgid)
                msgpack_pack_uint32(pk, msgid);
        else
                msgpack_pack_nil(pk);
        /* [kind, "code: message"] (CONTRACT §2, errors v2). */
        const char *name = rpc_error_code_to_string(code);
        size_t nlen = strlen(name), mlen = message ? strlen(message) : 0;
        msgpack_pack_array(pk, 2);
        msgpack_pack_uint32(pk, rpc_error_kind(code));
        msgpack_pack_str(pk, nlen + 2 + mlen);
        msgpack_pack_str_body(pk, name, nlen);
        msgpack_pack_str_body(pk, ": ", 2);
        msgpack_pack_str_body(pk, message ? message : "", mlen);
        msgpack_pack_nil(pk);
}

unsigned rpc_error_kind(rpc_error_code code) {
        /* Neovim's validation type: the request itself was wrong. */
        return code == RPC_E_INVALID_REQUEST || code == RPC_E_INVALID_PARAMS || code == RPC_E_METHOD_NOT_FOUND ? 1 : 0;
}

static void copy_bounded(char *dst, size_t size, const char *src, size_t n) {
        if (size == 0)
                return;
        if (n >= size)
                n = size - 1;
        memcpy(dst, src, n);
        dst[n] = 0;
}

int rpc_error_parse(const msgpack_object *error, char *ret_code, size_t code_size, char *ret_message,
                    size_t message_size) {
        if (!error || error->type != MSGPACK_OBJECT_ARRAY || error->via.array.size != 2 ||
            error->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
            error->via.array.ptr[1].type != MSGPACK_OBJECT_STR)
                return -EBADMSG;
        const char *text = error->via.array.ptr[1].via.str.ptr;
        size_t len = error->via.array.ptr[1].via.str.size;
        /* The code is the prefix up to the first ": ", made of [a-z_]. */
        size_t i = 0;
        while (i < len && ((text[i] >= 'a' && text[i] <= 'z') || text[i] == '_'))
                i++;
        if (i == 0 || i + 1 >= len || text[i] != ':' || text[i + 1] != ' ')
                return -EBADMSG;
        copy_bounded(ret_code, code_size, text, i);
        copy_bounded(ret_message, message_size, text + i + 2, len - i - 2);
        return 0;
}

void rpc_pack_request_header(msgpack_packer *pk, uint32_t msgid, const char *method) {
        msgpack_pack_array(pk, 4);
        msgpack_pack_uint32(pk, RPC_REQUEST);
        msgpack_pack_uint32(pk, msgid);
        mp_pack_cstr(pk, method);
}

void rpc_pack_notification_header(msgpack_packer *pk, const char *method) {
        msgpack_pack_array(pk, 3);
        msgpack_pack_uint32(pk, RPC_NOTIFICATION);
        mp_pack_cstr(pk, method);
}
