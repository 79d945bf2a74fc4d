/* proto/: MessagePack-RPC framing, limits, envelope decoding, parameter
 * validation and the method table. No I/O, no libuv: bytes in, bytes out. */
#pragma once

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* Bumped on any incompatible change of the wire protocol; additions keep it. */
#define AGENTD_PROTOCOL_VERSION 1

#define PROTO_DEFAULT_MAX_MESSAGE (1024u * 1024u)
#define PROTO_MAX_DEPTH 32u
#define PROTO_DEFAULT_MAX_ELEMENTS 65536u
#define PROTO_MAX_METHOD_NAME 64u

/* Stable error codes (CONTRACT §2): common/error.h's, under proto's names. */
#define RPC_ERROR_CODES(X) ERROR_CODES(X)

typedef error_code rpc_error_code;
#define RPC_E_INVALID_REQUEST ERROR_INVALID_REQUEST
#define RPC_E_METHOD_NOT_FOUND ERROR_METHOD_NOT_FOUND
#define RPC_E_INVALID_PARAMS ERROR_INVALID_PARAMS
#define RPC_E_NOT_FOUND ERROR_NOT_FOUND
#define RPC_E_POLICY_DENIED ERROR_POLICY_DENIED
#define RPC_E_LIMIT_EXCEEDED ERROR_LIMIT_EXCEEDED
#define RPC_E_UNAUTHORIZED ERROR_UNAUTHORIZED
#define RPC_E_LOCKED_DOWN ERROR_LOCKED_DOWN
#define RPC_E_BACKEND_UNAVAILABLE ERROR_BACKEND_UNAVAILABLE
#define RPC_E_INTERNAL ERROR_INTERNAL
#define RPC_E_SPAWN_FAILED ERROR_SPAWN_FAILED
#define _RPC_E_MAX _ERROR_CODE_MAX

const char *rpc_error_code_to_string(rpc_error_code c);

/* ---- incremental framing ---------------------------------------------- */

typedef struct proto_limits {
        size_t max_message;   /* bytes of one message */
        unsigned max_depth;   /* container nesting, the envelope included */
        size_t max_elements;  /* objects in one message, bounds decoder memory */
} proto_limits;

void proto_limits_default(proto_limits *l);

typedef enum proto_scan_error {
        PROTO_SCAN_OK = 0,
        PROTO_SCAN_TOO_BIG,       /* message (or a declared length) exceeds max_message */
        PROTO_SCAN_TOO_DEEP,      /* nesting exceeds max_depth */
        PROTO_SCAN_TOO_MANY,      /* more than max_elements objects */
        PROTO_SCAN_MALFORMED,     /* a byte that is not msgpack (0xc1) */
} proto_scan_error;

/* Finds the end of one msgpack object in a byte stream that arrives in pieces,
 * checking every limit from the headers alone, before anything is allocated.
 * Resumable: feed the same (growing) buffer again after more bytes arrive. */
typedef struct proto_scanner {
        size_t pos;
        unsigned depth;
        size_t elements;
        uint32_t remaining[PROTO_MAX_DEPTH + 2];
        /* What is known of the envelope so far, for error replies. */
        uint32_t top_index;      /* index of the next element of the top-level array */
        bool top_is_array;
        bool have_type;
        uint8_t type;
        bool have_msgid;
        uint32_t msgid;
} proto_scanner;

void proto_scanner_reset(proto_scanner *s);
/* Returns 1 and the message length when buf holds a complete message, 0 when
 * more bytes are needed, or -1 with *ret_error set. */
int proto_scan(proto_scanner *s, const proto_limits *lim, const uint8_t *buf, size_t len,
               size_t *ret_len, proto_scan_error *ret_error);
const char *proto_scan_error_to_string(proto_scan_error e);

/* ---- the method table -------------------------------------------------- */

enum {
        RPC_HOST_ONLY = 1u << 0,      /* refused on a sandbox's broker socket */
        RPC_ASYNC = 1u << 1,          /* the reply may come later */
        RPC_SANDBOX_ONLY = 1u << 2,   /* only on a sandbox's broker socket */
        RPC_READ_ONLY = 1u << 3,      /* changes nothing: answered even while the audit log cannot record */
        RPC_CONTAINMENT = 1u << 4,    /* stops, revokes or frees space: answered (and logged as well as can be) even then */
};

typedef enum rpc_method_id {
#define METHOD(name, ident, flags, params, cli, summary) RPC_METHOD_##ident,
#include "methods.def"
#undef METHOD
        _RPC_METHOD_MAX,
} rpc_method_id;

/* Parameter types of methods.def. */
typedef enum rpc_param_type {
        RPC_PARAM_STR,     /* const char *: NUL-terminated, no NUL inside */
        RPC_PARAM_BOOL,    /* bool + has_<key> */
        RPC_PARAM_UINT,    /* uint64_t + has_<key> */
        RPC_PARAM_INT,     /* int64_t + has_<key> */
        RPC_PARAM_STRV,    /* char **: NULL-terminated array of strings */
        RPC_PARAM_STRMAP,  /* const msgpack_object *: a map of strings to strings, or an empty array (Lua's {}) */
        RPC_PARAM_ANY,     /* const msgpack_object *: anything but nil; the handler checks it */
        RPC_PARAM_SECRET,  /* const msgpack_object *: a string like STR, but not copied, so the
                            * handler can take it into locked memory and wipe the request's bytes */
        _RPC_PARAM_TYPE_MAX,
} rpc_param_type;

/* Each method's parameters as a struct, rpc_<ident>_params, one member per key.
 * An absent (or nil) optional key leaves its member zero: NULL, or has_<key> false.
 * Strings and string arrays live in the request's msgpack zone: valid while the
 * handler runs, so a handler that keeps one (an async job) copies it. */
#define RPC_PARAM_FIELD_STR(k) const char *k;
#define RPC_PARAM_FIELD_BOOL(k) bool k; bool has_##k;
#define RPC_PARAM_FIELD_UINT(k) uint64_t k; bool has_##k;
#define RPC_PARAM_FIELD_INT(k) int64_t k; bool has_##k;
#define RPC_PARAM_FIELD_STRV(k) char **k;
#define RPC_PARAM_FIELD_STRMAP(k) const msgpack_object *k;
#define RPC_PARAM_FIELD_ANY(k) const msgpack_object *k;
#define RPC_PARAM_FIELD_SECRET(k) const msgpack_object *k;
#define PARAMS(...) __VA_ARGS__
#define REQ(k, T) RPC_PARAM_FIELD_##T(k)
#define OPT(k, T) RPC_PARAM_FIELD_##T(k)
#define METHOD(name, ident, flags, params, cli, summary) typedef struct rpc_##ident##_params { params } rpc_##ident##_params;
#include "methods.def"
#undef METHOD
/* Big enough and aligned for any method's parameters. */
typedef union rpc_params_any {
#define METHOD(name, ident, flags, params, cli, summary) rpc_##ident##_params ident;
#include "methods.def"
#undef METHOD
} rpc_params_any;
#undef OPT
#undef REQ
#undef PARAMS

/* One key of a method's parameter table (generated from methods.def). */
typedef struct rpc_param_desc {
        const char *key;
        rpc_param_type type;
        bool optional;
        size_t offset;       /* offsetof the member in rpc_<ident>_params */
        size_t has_offset;   /* offsetof has_<key>, or 0 for types without one */
} rpc_param_desc;

typedef struct rpc_method {
        const char *name;
        rpc_method_id id;
        unsigned flags;
        const rpc_param_desc *(*param_table)(void);   /* n_params entries: use rpc_method_params() */
        size_t n_params;
        size_t params_size;             /* sizeof(rpc_<ident>_params) */
        const char *cli;
        const char *summary;
} rpc_method;

extern const rpc_method rpc_methods[_RPC_METHOD_MAX];
const rpc_method *rpc_method_find(const char *name, size_t len);
/* The method's parameter table, n_params entries in methods.def order. */
const rpc_param_desc *rpc_method_params(const rpc_method *m);
/* The wire type name of a parameter type ("string", "[string]", ...), as PROTOCOL.md shows it. */
const char *rpc_param_type_to_string(rpc_param_type t);

/* ---- envelope ---------------------------------------------------------- */

typedef enum rpc_msg_type {
        RPC_REQUEST = 0,
        RPC_RESPONSE = 1,
        RPC_NOTIFICATION = 2,
} rpc_msg_type;

/* A decoded message. Strings point into the zone of `unpacked`. */
typedef struct rpc_message {
        msgpack_unpacked unpacked;
        rpc_msg_type type;
        bool have_msgid;
        uint32_t msgid;
        const char *method;      /* not NUL-terminated */
        size_t method_len;
        const msgpack_object *params;    /* the single map, or NULL for [] */
        const msgpack_object *error;     /* responses */
        const msgpack_object *result;
        const char *zone_start;          /* where this message's allocations began (rpc.c) */
        const void *zone_head;
} rpc_message;

/* The error an operation failed with; set only on failure. It is the one
 * error object (common/error.h): free it with error_free() / _cleanup_error_.
 * rpc_error_set() is error_set() with the code's usual errno. */
typedef agentd_error rpc_error;

void rpc_error_set(rpc_error *e, rpc_error_code code, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* Decodes one complete message (as delimited by proto_scan). On failure the
 * msgid is still filled in when it could be read. */
int rpc_message_decode(rpc_message *m, const uint8_t *buf, size_t len, rpc_error *err);
void rpc_message_done(rpc_message *m);

/* Decodes a request's params (NULL: none given) into ret, the method's
 * rpc_<ident>_params (params_size bytes, zeroed here first), allocating strings
 * and string arrays in zone. Every invalid_params answer comes from here: a key
 * that is not a string, unknown or given twice, a value of the wrong type (nil
 * means "default" for an optional key), a required key missing or nil. */
int rpc_params_decode(const rpc_method *method, const msgpack_object *params, msgpack_zone *zone, void *ret,
                      rpc_error *err);

/* Whether a peer may call the method: on a sandbox's broker socket only
 * RPC_SANDBOX_ONLY methods, on the host socket every other one. unauthorized otherwise. */
int rpc_method_check_peer(const rpc_method *method, bool on_sandbox_socket, rpc_error *err);

/* The STR parameter `key` from a request decoded into args (the method's
 * rpc_<ident>_params), or NULL when the method has no such string parameter or
 * it was not given. For code that runs for every method (the audit hook);
 * handlers use their struct. */
const char *rpc_params_str(const rpc_method *method, const void *args, const char *key);
/* A malloc'd copy of a decoded string array (free with strv_free), for a handler that keeps it. */
char **rpc_strv_dup(char *const *v);

/* ---- encoding ---------------------------------------------------------- */

/* [1, msgid, nil, <result follows>]: the caller packs exactly one result object. */
void rpc_pack_response_header(msgpack_packer *pk, uint32_t msgid);
/* [1, msgid, [kind, "code: message"], nil]; msgid nil when it could not be read. */
void rpc_pack_error_response(msgpack_packer *pk, bool have_msgid, uint32_t msgid,
                             rpc_error_code code, const char *message);
/* 1 for invalid_request, invalid_params, method_not_found; 0 for the rest. */
unsigned rpc_error_kind(rpc_error_code code);
/* Splits an error object [kind, "code: message"] into its code and message
 * (NUL-terminated, truncated to the sizes); -EBADMSG if it has another shape. */
int rpc_error_parse(const msgpack_object *error, char *ret_code, size_t code_size, char *ret_message,
                    size_t message_size);
void rpc_pack_request_header(msgpack_packer *pk, uint32_t msgid, const char *method);
void rpc_pack_notification_header(msgpack_packer *pk, const char *method);

/* Packing conveniences. */
void mp_pack_cstr(msgpack_packer *pk, const char *s);
void mp_pack_kv_str(msgpack_packer *pk, const char *key, const char *value);
void mp_pack_kv_u64(msgpack_packer *pk, const char *key, uint64_t value);
void mp_pack_kv_i64(msgpack_packer *pk, const char *key, int64_t value);
void mp_pack_kv_bool(msgpack_packer *pk, const char *key, bool value);
void mp_pack_kv_nil(msgpack_packer *pk, const char *key);
void mp_pack_strv(msgpack_packer *pk, char *const *v);

bool mp_str_eq(const msgpack_object *o, const char *s);
