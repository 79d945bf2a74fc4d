/* Incremental msgpack framing: finds where one message ends in a stream that
 * arrives in pieces, enforcing size, depth and element limits from the
 * headers alone, so a hostile length or nesting is refused before any
 * allocation happens. */
#include "proto.h"

#include <string.h>

void proto_limits_default(proto_limits *l) {
        l->max_message = PROTO_DEFAULT_MAX_MESSAGE;
        l->max_depth = PROTO_MAX_DEPTH;
        l->max_elements = PROTO_DEFAULT_MAX_ELEMENTS;
}

void proto_scanner_reset(proto_scanner *s) {
        memset(s, 0, sizeof(*s));
        s->remaining[0] = 1;
}

const char *proto_scan_error_to_string(proto_scan_error e) {
        switch (e) {
        case PROTO_SCAN_OK:
                return "ok";
        case PROTO_SCAN_TOO_BIG:
                return "message exceeds the size limit";
        case PROTO_SCAN_TOO_DEEP:
                return "message exceeds the nesting limit";
        case PROTO_SCAN_TOO_MANY:
                return "message exceeds the element limit";
        case PROTO_SCAN_MALFORMED:
                return "not msgpack";
        }
        return "unknown";
}

static uint64_t be(const uint8_t *p, unsigned n) {
        uint64_t v = 0;
        for (unsigned i = 0; i < n; i++)
                v = (v << 8) | p[i];
        return v;
}

/* Classifies the object starting at p[0]. *hdr: bytes of the header needed
 * before the rest can be known; *lenbytes: size of a big-endian length field
 * following the tag; *fixed: payload bytes known from the tag alone;
 * *container: 0 none, 1 array, 2 map. */
static int classify(uint8_t b, unsigned *lenbytes, uint64_t *fixed, int *container, unsigned *extra) {
        *lenbytes = 0;
        *fixed = 0;
        *container = 0;
        *extra = 0;
        if (b <= 0x7f || b >= 0xe0)
                return 0;
        if (b >= 0x80 && b <= 0x8f) {
                *container = 2;
                *fixed = b & 0x0f;
                return 0;
        }
        if (b >= 0x90 && b <= 0x9f) {
                *container = 1;
                *fixed = b & 0x0f;
                return 0;
        }
        if (b >= 0xa0 && b <= 0xbf) {
                *fixed = b & 0x1f;
                return 0;
        }
        switch (b) {
        case 0xc0: case 0xc2: case 0xc3:
                return 0;
        case 0xc4: case 0xd9: *lenbytes = 1; return 0;     /* bin8, str8 */
        case 0xc5: case 0xda: *lenbytes = 2; return 0;     /* bin16, str16 */
        case 0xc6: case 0xdb: *lenbytes = 4; return 0;     /* bin32, str32 */
        case 0xc7: *lenbytes = 1; *extra = 1; return 0;    /* ext8 */
        case 0xc8: *lenbytes = 2; *extra = 1; return 0;    /* ext16 */
        case 0xc9: *lenbytes = 4; *extra = 1; return 0;    /* ext32 */
        case 0xca: *fixed = 4; return 0;
        case 0xcb: *fixed = 8; return 0;
        case 0xcc: case 0xd0: *fixed = 1; return 0;
        case 0xcd: case 0xd1: *fixed = 2; return 0;
        case 0xce: case 0xd2: *fixed = 4; return 0;
        case 0xcf: case 0xd3: *fixed = 8; return 0;
        case 0xd4: *fixed = 2; return 0;                   /* fixext 1..16: type + data */
        case 0xd5: *fixed = 3; return 0;
        case 0xd6: *fixed = 5; return 0;
        case 0xd7: *fixed = 9; return 0;
        case 0xd8: *fixed = 17; return 0;
        case 0xdc: *container = 1; *lenbytes = 2; return 0;
        case 0xdd: *container = 1; *lenbytes = 4; return 0;
        case 0xde: *container = 2; *lenbytes = 2; return 0;
        case 0xdf: *container = 2; *lenbytes = 4; return 0;
        default:
                return -1; /* 0xc1, never used */
        }
}

/* Remembers the envelope's type and msgid as they stream past, so that an
 * error found later in the message can still be answered to the right id. */
static void note_envelope(proto_scanner *s, const uint8_t *p, size_t objlen) {
        if (s->depth != 1 || !s->top_is_array)
                return;
        uint8_t b = p[0];
        uint64_t v = 0;
        bool is_uint = true;
        if (b <= 0x7f)
                v = b;
        else if (b >= 0xcc && b <= 0xcf && objlen > 1)
                v = be(p + 1, (unsigned) objlen - 1);
        else
                is_uint = false;

        if (s->top_index == 0 && is_uint && v <= 2) {
                s->have_type = true;
                s->type = (uint8_t) v;
        } else if (s->top_index == 1 && is_uint && v <= UINT32_MAX && s->have_type && s->type != RPC_NOTIFICATION) {
                s->have_msgid = true;
                s->msgid = (uint32_t) v;
        }
}

int proto_scan(proto_scanner *s, const proto_limits *lim, const uint8_t *buf, size_t len,
               size_t *ret_len, proto_scan_error *ret_error) {
        for (;;) {
                /* Close every container whose elements are all seen. */
                while (s->depth > 0 && s->remaining[s->depth] == 0) {
                        s->depth--;
                        if (s->depth == 1)
                                s->top_index++;
                }
                if (s->depth == 0 && s->remaining[0] == 0) {
                        *ret_len = s->pos;
                        return 1;
                }

                if (s->pos >= len)
                        return 0;

                const uint8_t *p = buf + s->pos;
                size_t avail = len - s->pos;
                unsigned lenbytes, extra;
                uint64_t fixed;
                int container;
                if (classify(p[0], &lenbytes, &fixed, &container, &extra) < 0) {
                        *ret_error = PROTO_SCAN_MALFORMED;
                        return -1;
                }

                size_t hdr = 1 + lenbytes + (container ? 0 : extra);
                if (s->pos + hdr > lim->max_message) {
                        *ret_error = PROTO_SCAN_TOO_BIG;
                        return -1;
                }
                if (avail < hdr)
                        return 0;

                uint64_t n = lenbytes ? be(p + 1, lenbytes) : fixed;

                if (s->elements + 1 > lim->max_elements) {
                        *ret_error = PROTO_SCAN_TOO_MANY;
                        return -1;
                }

                if (container) {
                        uint64_t count = container == 2 ? n * 2 : n;
                        /* Each element takes at least one byte: a count the
                         * size limit cannot hold is refused right here. */
                        if (s->pos + hdr + count > lim->max_message) {
                                *ret_error = PROTO_SCAN_TOO_BIG;
                                return -1;
                        }
                        if (s->depth + 1 > lim->max_depth || s->depth + 1 > PROTO_MAX_DEPTH) {
                                *ret_error = PROTO_SCAN_TOO_DEEP;
                                return -1;
                        }
                        if (s->depth == 0)
                                s->top_is_array = container == 1;
                        s->elements++;
                        s->remaining[s->depth]--;
                        s->depth++;
                        s->remaining[s->depth] = (uint32_t) count;
                        s->pos += hdr;
                        continue;
                }

                uint64_t total = (uint64_t) hdr + (lenbytes ? n : fixed);
                if (s->pos + total > lim->max_message) {
                        *ret_error = PROTO_SCAN_TOO_BIG;
                        return -1;
                }
                if (avail < total)
                        return 0;

                note_envelope(s, p, (size_t) total);
                s->elements++;
                s->remaining[s->depth]--;
                if (s->depth == 1)
                        s->top_index++;
                s->pos += (size_t) total;
        }
}
