/* The tamper-evident audit log: hash-chained, HMAC'd JSON Lines with an HMAC'd
 * head file as the anchor for the end of the chain. The format, and exactly which
 * bytes are hashed and MAC'd, is documented in audit.h. */
#include "audit.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <math.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <syslog.h>
#include <assert.h>
#include <systemd/sd-journal.h>
#include <time.h>
#include <unistd.h>

#include "fd.h"
#include "file.h"

#define HASH_LEN 32
#define HEX_LEN (2 * HASH_LEN)
#define HEAD_NAME "audit.head"
#define HEAD_TMP_NAME "audit.head.tmp"
#define JOURNAL_SOCKET "/run/systemd/journal/socket"
/* ,"hmac":"<64 hex>"}  — the part of a line the HMAC does not cover (plus the '}' it does). */
#define HMAC_SUFFIX_PREFIX ",\"hmac\":\""
#define HMAC_SUFFIX_LEN (sizeof(HMAC_SUFFIX_PREFIX) - 1 + HEX_LEN + 2)
#define TYPE_MAX 64
#define SANDBOX_MAX 256
/* json-c's parser stops at depth 32; the record adds one level. */
#define FIELDS_DEPTH_MAX 16
/* How much of a torn line goes into the audit.recovered record, as hex. */
#define TORN_DATA_MAX 1024

typedef struct hmac_state hmac_state;

typedef struct audit_key {
        const uint8_t *key;     /* in its own page (key_page_new), followed by: */
        size_t len;
        hmac_state *hmac;       /* the key's HMAC state, in the same page */
} audit_key;

struct audit_log {
        int dir_fd;
        int fd;                         /* the newest file, O_APPEND */
        unsigned file_no;
        uint64_t file_size;
        uint64_t rotate_bytes;
        size_t max_record;
        bool journal;

        uint8_t *key_page;              /* one locked, non-dumpable page holding the key */
        size_t key_page_size;
        audit_key key;

        uint64_t seq;                   /* of the last record written */
        uint8_t last_hash[HASH_LEN];    /* SHA-256 of that record's line */
        bool ready;                     /* opened completely: only then may close write a head */
        bool dirty;                     /* written, not yet fsync'd */
        uint64_t head_seq;              /* what audit.head says */
        bool head_current;

        /* Group commit (audit_append_deferred): records chained in memory, not
         * yet written. seq/last_hash above include them; base_* is the chain
         * end on disk, where seq/last_hash go back to if the write fails. */
        char *batch;
        size_t batch_len, batch_cap;
        struct pending_rec {
                size_t len;
                uint64_t seq;
                uint8_t hash[HASH_LEN];
        } *recs;
        size_t n_recs, recs_cap;
        uint64_t base_seq;
        uint8_t base_hash[HASH_LEN];

        audit_flush_job *flush_job;     /* the flush in a worker, if any (audit_flush_begin) */
};

/* A flush handed to a worker: everything it needs, so that the log may go on
 * appending (or be closed) while it runs. */
#define HEAD_LINE_MAX 512
struct audit_flush_job {
        audit_log *log;                 /* loop side; NULL once a synchronous flush took over */
        int fd;                         /* a duplicate of the newest file's fd, or -1: nothing to fsync */
        int dir_fd;                     /* a duplicate of the directory fd */
        bool write_head;
        char head[HEAD_LINE_MAX];       /* formatted and MAC'd on the loop: the worker never sees the key */
        size_t head_len;
        uint64_t seq;                   /* what the head vouches for: all of it written before the job began */
        bool cancelled;                 /* under flush_lock */
        int result;
};

/* Held while fsyncing and rewriting audit.head (a worker's flush or a
 * synchronous one): one flush at a time, through the one tmp name. */
static pthread_mutex_t flush_lock = PTHREAD_MUTEX_INITIALIZER;

DEFINE_TRIVIAL_CLEANUP_FUNC(struct json_object *, json_object_put)
DEFINE_TRIVIAL_CLEANUP_FUNC(json_tokener *, json_tokener_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(DIR *, closedir)

/* The log's own failures are the daemon's ("internal"); callers wrap or
 * re-code them where they mean more. */
_printf_(3, 4) static int fail(agentd_error *err, int r, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        r = error_setv(err, ERROR_INTERNAL, r, fmt, ap);
        va_end(ap);
        return r;
}

/* ---- crypto and hex ---- */

/* SHA-256 and HMAC-SHA256 through OpenSSL's low-level SHA-256 (the same
 * assembly EVP ends in). For a 300-byte record, OpenSSL 3's EVP layer (a context
 * allocated per call, the provider looked up, a fresh HMAC keyed per record)
 * cost several times the hashing itself, and agentd writes a record per
 * request. These functions are deprecated in OpenSSL 3.0, not removed; this
 * section is their only user. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

static int sha256(const void *p, size_t n, uint8_t out[HASH_LEN]) {
        SHA256_CTX c;

        if (SHA256_Init(&c) != 1 || SHA256_Update(&c, p, n) != 1 || SHA256_Final(out, &c) != 1)
                return -EIO;
        return 0;
}

/* HMAC (RFC 2104) with the key's two padded blocks hashed once, when the key
 * is set up: `inner` is SHA-256 after (key ^ ipad), `outer` after (key ^ opad).
 * Both are as good as the key, so they live in the key's locked, non-dumpable
 * page, as does the context each call works in (one thread per key). */
#define HMAC_BLOCK 64
struct hmac_state {
        SHA256_CTX inner, outer, work;
        uint8_t pad[HMAC_BLOCK];
};

static int hmac_state_init(hmac_state *h, const uint8_t *key, size_t len) {
        int ok = 1;

        if (len > HMAC_BLOCK)
                return -EINVAL;         /* AUDIT_KEY_MAX: never hashed down */
        for (size_t i = 0; i < HMAC_BLOCK; i++)
                h->pad[i] = (uint8_t) ((i < len ? key[i] : 0) ^ 0x36);
        ok &= SHA256_Init(&h->inner) & SHA256_Update(&h->inner, h->pad, HMAC_BLOCK);
        for (size_t i = 0; i < HMAC_BLOCK; i++)
                h->pad[i] = (uint8_t) ((i < len ? key[i] : 0) ^ 0x5c);
        ok &= SHA256_Init(&h->outer) & SHA256_Update(&h->outer, h->pad, HMAC_BLOCK);
        explicit_zero(h->pad, sizeof(h->pad));
        return ok == 1 ? 0 : -EIO;
}

/* HMAC-SHA256 over the concatenation a || b. */
static int hmac_sha256(const audit_key *key, const void *a, size_t na, const void *b, size_t nb,
                       uint8_t out[HASH_LEN]) {
        hmac_state *h = key->hmac;
        uint8_t inner[HASH_LEN];
        int ok = 1;

        h->work = h->inner;
        ok &= SHA256_Update(&h->work, a, na);
        if (nb > 0)
                ok &= SHA256_Update(&h->work, b, nb);
        ok &= SHA256_Final(inner, &h->work);
        h->work = h->outer;
        ok &= SHA256_Update(&h->work, inner, HASH_LEN) & SHA256_Final(out, &h->work);
        explicit_zero(&h->work, sizeof(h->work));
        return ok == 1 ? 0 : -EIO;
}

#pragma GCC diagnostic pop

static void hex_encode(const uint8_t *p, size_t n, char *out) {
        static const char digits[] = "0123456789abcdef";

        for (size_t i = 0; i < n; i++) {
                out[2 * i] = digits[p[i] >> 4];
                out[2 * i + 1] = digits[p[i] & 15];
        }
        out[2 * n] = 0;
}

/* Lowercase only: the writer never emits anything else, so anything else is not ours. */
static int hex_digit(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        return -1;
}

static bool hex_decode(const char *s, size_t len, uint8_t *out, size_t n) {
        if (len != 2 * n)
                return false;
        for (size_t i = 0; i < n; i++) {
                int h = hex_digit(s[2 * i]), l = hex_digit(s[2 * i + 1]);
                if (h < 0 || l < 0)
                        return false;
                out[i] = (uint8_t) (h << 4 | l);
        }
        return true;
}

/* ---- the key ---- */

/* One page of its own: locked so it never reaches swap, excluded from core dumps,
 * and wiped in children so the sandboxes the daemon forks never inherit it. A
 * failing mlock is tolerated: the daemon held the unsealed key in ordinary memory
 * before handing it over, so refusing to run would protect nothing. */
static int key_page_new(const uint8_t *key, size_t len, uint8_t **ret, size_t *ret_size) {
        long pg = sysconf(_SC_PAGESIZE);
        size_t size = pg > 0 ? (size_t) pg : 4096;
        void *p;

        p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
                return -errno;
        (void) madvise(p, size, MADV_DONTDUMP);
#ifdef MADV_WIPEONFORK
        (void) madvise(p, size, MADV_WIPEONFORK);
#endif
        (void) mlock(p, size);
        memcpy(p, key, len);
        *ret = p;
        *ret_size = size;
        return 0;
}

static void key_page_free(uint8_t *p, size_t size) {
        if (!p)
                return;
        explicit_zero(p, size);
        (void) munlock(p, size);
        (void) munmap(p, size);
}

/* The HMAC state goes into the key's page, behind the key. */
#define KEY_HMAC_OFFSET 128
_Static_assert(AUDIT_KEY_MAX <= KEY_HMAC_OFFSET, "the key fits before its HMAC state");

static int key_setup(audit_key *k, uint8_t *page, size_t page_size, size_t len) {
        if (page_size < KEY_HMAC_OFFSET + sizeof(hmac_state))
                return -ENOMEM;
        *k = (audit_key) { .key = page, .len = len, .hmac = (hmac_state *) (void *) (page + KEY_HMAC_OFFSET) };
        return hmac_state_init(k->hmac, k->key, len);
}

/* ---- small file helpers ---- */

static void file_name(unsigned no, char buf[static 32]) {
        snprintf(buf, 32, "audit-%06u.jsonl", no);
}

/* Only the canonical spelling counts, so "audit-1.jsonl" cannot pose as file 1. */
static bool parse_file_name(const char *name, unsigned *ret) {
        char canon[32], *end;
        unsigned long v;

        if (strncmp(name, "audit-", 6) != 0 || name[6] < '0' || name[6] > '9')
                return false;
        errno = 0;
        v = strtoul(name + 6, &end, 10);
        if (errno != 0 || end == name + 6 || !streq(end, ".jsonl") || v == 0 || v > 999999999UL)
                return false;
        file_name((unsigned) v, canon);
        if (!streq(canon, name))
                return false;
        *ret = (unsigned) v;
        return true;
}

static int cmp_unsigned(const void *a, const void *b) {
        unsigned x = *(const unsigned *) a, y = *(const unsigned *) b;
        return x < y ? -1 : x > y;
}

/* The log files' numbers, ascending. */
static int list_files(int dir_fd, unsigned **ret, size_t *ret_n) {
        _cleanup_(closedirp) DIR *d = NULL;
        _cleanup_free_ unsigned *v = NULL;
        size_t n = 0, cap = 0;
        struct dirent *de;
        int fd;

        fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        d = fdopendir(fd);
        if (!d) {
                safe_close(fd);
                return -errno;
        }
        for (;;) {
                unsigned no;

                errno = 0;
                de = readdir(d);
                if (!de) {
                        if (errno != 0)
                                return -errno;
                        break;
                }
                if (!parse_file_name(de->d_name, &no))
                        continue;
                if (n == cap) {
                        size_t c = cap ? cap * 2 : 16;
                        unsigned *nv = realloc(v, c * sizeof(*v));
                        if (!nv)
                                return -ENOMEM;
                        v = nv;
                        cap = c;
                }
                v[n++] = no;
        }
        if (n > 0)
                qsort(v, n, sizeof(*v), cmp_unsigned);
        *ret = TAKE_PTR(v);
        *ret_n = n;
        return 0;
}

/* ---- reading lines with a bound ---- */

typedef struct line_reader {
        int fd;
        char *buf;
        size_t cap, start, end;
        uint64_t offset;                /* file offset of buf[start] */
        bool eof;
} line_reader;

enum {
        LINE_EOF,
        LINE_OK,                        /* a complete line, '\n' not included */
        LINE_TORN,                      /* bytes at the end of the file without '\n' */
        LINE_OVERLONG,                  /* longer than the buffer; content not available */
};

static int reader_init(line_reader *r, int fd) {
        *r = (line_reader) { .fd = fd, .cap = AUDIT_RECORD_MAX_LIMIT };
        r->buf = malloc(r->cap);
        return r->buf ? 0 : -ENOMEM;
}

static void reader_done(line_reader *r) {
        free(r->buf);
        r->buf = NULL;
}

static int reader_next(line_reader *r, const char **ret_line, size_t *ret_len, uint64_t *ret_offset) {
        bool skipping = false;
        uint64_t skip_offset = 0;

        for (;;) {
                char *nl = memchr(r->buf + r->start, '\n', r->end - r->start);
                ssize_t n;

                if (nl) {
                        size_t len = (size_t) (nl - (r->buf + r->start));

                        *ret_line = r->buf + r->start;
                        *ret_len = len;
                        *ret_offset = skipping ? skip_offset : r->offset;
                        r->start += len + 1;
                        r->offset += len + 1;
                        return skipping ? LINE_OVERLONG : LINE_OK;
                }
                if (r->eof) {
                        if (r->start == r->end && !skipping)
                                return LINE_EOF;
                        *ret_line = r->buf + r->start;
                        *ret_len = r->end - r->start;
                        *ret_offset = skipping ? skip_offset : r->offset;
                        r->offset += r->end - r->start;
                        r->start = r->end;
                        return LINE_TORN;
                }
                if (r->start > 0) {
                        memmove(r->buf, r->buf + r->start, r->end - r->start);
                        r->end -= r->start;
                        r->start = 0;
                }
                if (r->end == r->cap) {
                        /* Longer than any record can be: drop it and look for its end, so one
                         * planted giant line costs neither unbounded memory nor the rest of the file. */
                        if (!skipping) {
                                skipping = true;
                                skip_offset = r->offset;
                        }
                        r->offset += r->end;
                        r->end = 0;
                }
                n = read(r->fd, r->buf + r->end, r->cap - r->end);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        r->eof = true;
                else
                        r->end += (size_t) n;
        }
}

/* ---- records ---- */

typedef struct record_info {
        uint64_t seq;
        uint8_t prev[HASH_LEN];
        uint8_t hash[HASH_LEN];         /* SHA-256 of the line */
} record_info;

enum {
        REC_OK,
        REC_MALFORMED,
        REC_BAD_HMAC,                   /* well-formed, but not written with this key */
};

/* A complete JSON object spanning exactly the line, or NULL. */
static struct json_object *parse_line(json_tokener *tok, const char *line, size_t len) {
        struct json_object *o;

        if (len == 0 || len > INT_MAX)
                return NULL;
        json_tokener_reset(tok);
        o = json_tokener_parse_ex(tok, line, (int) len);
        if (!o)
                return NULL;
        if (json_tokener_get_error(tok) != json_tokener_success || json_tokener_get_parse_end(tok) != len ||
            !json_object_is_type(o, json_type_object)) {
                json_object_put(o);
                return NULL;
        }
        return o;
}

static bool get_member(struct json_object *o, const char *key, json_type type, struct json_object **ret) {
        struct json_object *v = NULL;

        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, type))
                return false;
        if (ret)
                *ret = v;
        return true;
}

/* Checks one line (without '\n'): shape, then hmac. On REC_OK fills *info. On
 * REC_BAD_HMAC *info->seq holds the seq the line claims. *ret_why says what is
 * malformed. */
static int record_check(const audit_key *k, json_tokener *tok, const char *line, size_t len, record_info *info,
                        const char **ret_why) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        struct json_object *v;
        uint8_t mac[HASH_LEN], want[HASH_LEN];
        const char *suffix;
        int64_t seq;
        int r;

        *info = (record_info) {};
        *ret_why = NULL;

        if (len < HMAC_SUFFIX_LEN + 2) {
                *ret_why = "too short";
                return REC_MALFORMED;
        }
        suffix = line + len - HMAC_SUFFIX_LEN;
        if (memcmp(suffix, HMAC_SUFFIX_PREFIX, sizeof(HMAC_SUFFIX_PREFIX) - 1) != 0 ||
            !hex_decode(suffix + sizeof(HMAC_SUFFIX_PREFIX) - 1, HEX_LEN, mac, HASH_LEN) ||
            memcmp(line + len - 2, "\"}", 2) != 0) {
                *ret_why = "does not end with the hmac member";
                return REC_MALFORMED;
        }

        o = parse_line(tok, line, len);
        if (!o) {
                *ret_why = "not a JSON object";
                return REC_MALFORMED;
        }
        if (!get_member(o, "seq", json_type_int, &v) || (seq = json_object_get_int64(v)) <= 0) {
                *ret_why = "no valid seq";
                return REC_MALFORMED;
        }
        info->seq = (uint64_t) seq;
        if (!get_member(o, "time", json_type_string, NULL) || !get_member(o, "type", json_type_string, NULL) ||
            !get_member(o, "fields", json_type_object, NULL) ||
            !(get_member(o, "sandbox", json_type_string, NULL) || get_member(o, "sandbox", json_type_null, NULL))) {
                *ret_why = "a member is missing or of the wrong type";
                return REC_MALFORMED;
        }
        if (!get_member(o, "prev", json_type_string, &v) ||
            !hex_decode(json_object_get_string(v), (size_t) json_object_get_string_len(v), info->prev, HASH_LEN)) {
                *ret_why = "no valid prev";
                return REC_MALFORMED;
        }

        /* The MAC'd bytes: the line up to the hmac member, closed with '}'. */
        r = hmac_sha256(k, line, len - HMAC_SUFFIX_LEN, "}", 1, want);
        if (r < 0)
                return r;
        if (CRYPTO_memcmp(mac, want, HASH_LEN) != 0)
                return REC_BAD_HMAC;

        r = sha256(line, len, info->hash);
        if (r < 0)
                return r;
        return REC_OK;
}

/* ---- the head ---- */

enum {
        HEAD_OK,
        HEAD_MISSING,
        HEAD_INVALID,
};

/* The line of the head and the checkpoint files: the JSON object u[0..n)
 * with ,"hmac":"<HMAC of u>" added before its closing brace, and a newline. */
static int signed_line(const audit_key *k, const char *u, size_t n, char *buf, size_t size, size_t *ret_len) {
        char mhex[HEX_LEN + 1];
        uint8_t mac[HASH_LEN];
        int m, r;

        r = hmac_sha256(k, u, n, NULL, 0, mac);
        if (r < 0)
                return r;
        hex_encode(mac, HASH_LEN, mhex);
        m = snprintf(buf, size, "%.*s,\"hmac\":\"%s\"}\n", (int) n - 1, u, mhex);
        if (m < 0 || (size_t) m >= size)
                return -EINVAL;
        *ret_len = (size_t) m;
        return 0;
}

/* Reads a small file of ours (not following a symlink) into buf, NUL-terminated:
 * 0, or -ENOENT, -ELOOP (a symlink) or another -errno. */
static int small_file_read(int dir_fd, const char *name, char *buf, size_t size, size_t *ret_len) {
        _cleanup_close_ int fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
        ssize_t n;

        if (fd < 0)
                return -errno;
        n = fd_read_full(fd, buf, size - 1);
        if (n < 0)
                return (int) n;
        buf[n] = 0;
        *ret_len = (size_t) n;
        return 0;
}

static int head_format(const audit_key *k, uint64_t seq, const uint8_t hash[HASH_LEN], char *buf, size_t size,
                       size_t *ret_len) {
        char hex[HEX_LEN + 1], u[160];
        int n;

        hex_encode(hash, HASH_LEN, hex);
        n = snprintf(u, sizeof(u), "{\"audit_head\":1,\"seq\":%" PRIu64 ",\"hash\":\"%s\"}", seq, hex);
        if (n < 0 || (size_t) n >= sizeof(u))
                return -EINVAL;
        return signed_line(k, u, (size_t) n, buf, size, ret_len);
}

/* Reads and authenticates audit.head: HEAD_OK with *ret_seq and ret_hash filled,
 * HEAD_MISSING, HEAD_INVALID, or a negative errno. */
static int head_read(int dir_fd, const audit_key *k, uint64_t *ret_seq, uint8_t ret_hash[HASH_LEN]) {
        char buf[512], canon[512], hex[HEX_LEN + 1];
        size_t n = 0, canon_len;
        uint64_t seq;
        int r;

        r = small_file_read(dir_fd, HEAD_NAME, buf, sizeof(buf), &n);
        if (r == -ENOENT)
                return HEAD_MISSING;
        if (r == -ELOOP)
                return HEAD_INVALID;
        if (r < 0)
                return r;

        /* Parse loosely, then require the file to be byte for byte what we would write. */
        if (sscanf(buf, "{\"audit_head\":1,\"seq\":%" SCNu64 ",\"hash\":\"%64[0-9a-f]\"", &seq, hex) != 2 ||
            !hex_decode(hex, strlen(hex), ret_hash, HASH_LEN))
                return HEAD_INVALID;
        r = head_format(k, seq, ret_hash, canon, sizeof(canon), &canon_len);
        if (r < 0)
                return r;
        if (canon_len != n || CRYPTO_memcmp(canon, buf, n) != 0)
                return HEAD_INVALID;
        *ret_seq = seq;
        return HEAD_OK;
}

/* Atomically: a reader sees the old head or the new one, never half of either.
 * Takes no state but the directory: it also runs in a worker (audit_flush_run). */
static int head_store(int dir_fd, const char *buf, size_t len) {
        return write_file_replace_at(dir_fd, HEAD_TMP_NAME, HEAD_NAME, buf, len, 0600, WRITE_FILE_SYNC_DIR);
}

static int head_write(audit_log *a) {
        char buf[HEAD_LINE_MAX];
        size_t len;
        int r;

        r = head_format(&a->key, a->seq, a->last_hash, buf, sizeof(buf), &len);
        if (r < 0)
                return r;
        return head_store(a->dir_fd, buf, len);
}

/* ---- the checkpoint: where a pruned log starts ---- */

#define CHECKPOINT_NAME "audit.checkpoint"
#define CHECKPOINT_TMP_NAME "audit.checkpoint.tmp"

enum {
        CP_OK,
        CP_MISSING,
        CP_INVALID,
};

static int checkpoint_format(const audit_key *k, unsigned file, uint64_t seq, const uint8_t hash[HASH_LEN], char *buf,
                             size_t size, size_t *ret_len) {
        char hex[HEX_LEN + 1], u[200];
        int n;

        hex_encode(hash, HASH_LEN, hex);
        n = snprintf(u, sizeof(u), "{\"audit_checkpoint\":1,\"file\":%u,\"seq\":%" PRIu64 ",\"hash\":\"%s\"}", file, seq,
                     hex);
        if (n < 0 || (size_t) n >= sizeof(u))
                return -EINVAL;
        return signed_line(k, u, (size_t) n, buf, size, ret_len);
}

/* CP_OK with the first kept file's number and the seq and hash of the record
 * before its first one; CP_MISSING (never pruned); CP_INVALID; or -errno. */
static int checkpoint_read(int dir_fd, const audit_key *k, unsigned *ret_file, uint64_t *ret_seq,
                           uint8_t ret_hash[HASH_LEN]) {
        char buf[512], canon[512], hex[HEX_LEN + 1];
        size_t n = 0, canon_len;
        unsigned file;
        uint64_t seq;
        int r;

        r = small_file_read(dir_fd, CHECKPOINT_NAME, buf, sizeof(buf), &n);
        if (r < 0)
                return r == -ENOENT ? CP_MISSING : r == -ELOOP ? CP_INVALID : r;
        if (sscanf(buf, "{\"audit_checkpoint\":1,\"file\":%u,\"seq\":%" SCNu64 ",\"hash\":\"%64[0-9a-f]\"", &file, &seq,
                   hex) != 3 ||
            !hex_decode(hex, strlen(hex), ret_hash, HASH_LEN))
                return CP_INVALID;
        r = checkpoint_format(k, file, seq, ret_hash, canon, sizeof(canon), &canon_len);
        if (r < 0)
                return r;
        if (canon_len != n || CRYPTO_memcmp(canon, buf, n) != 0)
                return CP_INVALID;
        *ret_file = file;
        *ret_seq = seq;
        return CP_OK;
}

static int checkpoint_write(audit_log *a, unsigned file, uint64_t seq, const uint8_t hash[HASH_LEN]) {
        char buf[512];
        size_t len;
        int r;

        r = checkpoint_format(&a->key, file, seq, hash, buf, sizeof(buf), &len);
        if (r < 0)
                return r;
        return write_file_replace_at(a->dir_fd, CHECKPOINT_TMP_NAME, CHECKPOINT_NAME, buf, len, 0600,
                                     WRITE_FILE_SYNC_DIR);
}

/* ---- what fields may contain ---- */

/* ASCII case-insensitive equality of n bytes (b is lower case). */
static bool ascii_eq_nocase(const char *a, const char *b, size_t n) {
        for (size_t i = 0; i < n; i++) {
                char c = a[i] >= 'A' && a[i] <= 'Z' ? (char) (a[i] + ('a' - 'A')) : a[i];
                if (c != b[i])
                        return false;
        }
        return true;
}

/* Checked for every member of every record: lengths known, no strcasecmp. */
static bool key_refused(const char *k) {
#define REFUSED(s) { s, sizeof(s) - 1 }
        static const struct {
                const char *key;
                size_t len;
        } refused[] = { REFUSED("token"), REFUSED("client_token"), REFUSED("secret_id"), REFUSED("password") };
#undef REFUSED
        size_t n = strlen(k);

        for (size_t i = 0; i < ELEMENTSOF(refused); i++)
                if (n == refused[i].len && ascii_eq_nocase(k, refused[i].key, n))
                        return true;
        return false;
}

/* Length of the valid UTF-8 sequence at p, 0 if there is none. */
static size_t utf8_len(const uint8_t *p, size_t n) {
        uint32_t cp, min;
        size_t len;

        if (p[0] < 0x80)
                return 1;
        if ((p[0] & 0xe0) == 0xc0) {
                len = 2, cp = p[0] & 0x1f, min = 0x80;
        } else if ((p[0] & 0xf0) == 0xe0) {
                len = 3, cp = p[0] & 0x0f, min = 0x800;
        } else if ((p[0] & 0xf8) == 0xf0) {
                len = 4, cp = p[0] & 0x07, min = 0x10000;
        } else
                return 0;
        if (n < len)
                return 0;
        for (size_t i = 1; i < len; i++) {
                if ((p[i] & 0xc0) != 0x80)
                        return 0;
                cp = cp << 6 | (p[i] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
                return 0;
        return len;
}

static bool utf8_valid(const char *s, size_t n) {
        for (size_t i = 0; i < n;) {
                size_t l = utf8_len((const uint8_t *) s + i, n - i);
                if (l == 0)
                        return false;
                i += l;
        }
        return true;
}

/* Refuses secret-looking keys, non-finite doubles and deep nesting; notes the longest
 * string and whether any string or key needs repairing (invalid UTF-8: json-c would
 * write it through, and the log is meant to be readable JSON for years). */
static int fields_check(struct json_object *o, unsigned depth, size_t *longest, bool *needs_repair) {
        int r;

        if (depth > FIELDS_DEPTH_MAX)
                return -EINVAL;
        switch (json_object_get_type(o)) {
        case json_type_object: {
                json_object_object_foreach(o, key, val) {
                        if (key_refused(key))
                                return -EINVAL;
                        if (!utf8_valid(key, strlen(key)))
                                *needs_repair = true;
                        r = fields_check(val, depth + 1, longest, needs_repair);
                        if (r < 0)
                                return r;
                }
                return 0;
        }
        case json_type_array:
                for (size_t i = 0; i < json_object_array_length(o); i++) {
                        r = fields_check(json_object_array_get_idx(o, i), depth + 1, longest, needs_repair);
                        if (r < 0)
                                return r;
                }
                return 0;
        case json_type_string: {
                size_t n = (size_t) json_object_get_string_len(o);
                if (n > *longest)
                        *longest = n;
                if (!utf8_valid(json_object_get_string(o), n))
                        *needs_repair = true;
                return 0;
        }
        case json_type_double:
                return isfinite(json_object_get_double(o)) ? 0 : -EINVAL;
        default:
                return 0;
        }
}

/* s as valid UTF-8 (U+FFFD for what is not) of at most `limit` bytes, cut at a
 * character boundary and marked when cut. */
static char *string_repair(const char *s, size_t n, size_t limit, size_t *ret_len) {
        static const char replacement[] = "\xef\xbf\xbd";
        size_t cap = (n < limit ? n : limit) * 3 + 64, o = 0, i = 0;
        char *out;

        out = malloc(cap);
        if (!out)
                return NULL;
        while (i < n) {
                size_t l = utf8_len((const uint8_t *) s + i, n - i);
                size_t emit = l ? l : 3;

                if (o + emit > limit)
                        break;
                if (l)
                        memcpy(out + o, s + i, l);
                else
                        memcpy(out + o, replacement, 3);
                o += emit;
                i += l ? l : 1;
        }
        if (i < n)
                o += (size_t) snprintf(out + o, cap - o, "...[truncated %zu bytes]", n - i);
        out[o] = 0;
        *ret_len = o;
        return out;
}

/* A copy of o with every string and key repaired and cut to `limit` bytes. */
static int fields_copy(struct json_object *o, size_t limit, struct json_object **ret) {
        _cleanup_(json_object_putp) struct json_object *n = NULL;
        int r;

        switch (json_object_get_type(o)) {
        case json_type_object: {
                n = json_object_new_object();
                if (!n)
                        return -ENOMEM;
                json_object_object_foreach(o, key, val) {
                        _cleanup_free_ char *k = NULL;
                        struct json_object *c = NULL;
                        size_t kl;

                        k = string_repair(key, strlen(key), limit, &kl);
                        if (!k)
                                return -ENOMEM;
                        r = fields_copy(val, limit, &c);
                        if (r < 0)
                                return r;
                        if (json_object_object_add(n, k, c) < 0) {
                                json_object_put(c);
                                return -ENOMEM;
                        }
                }
                break;
        }
        case json_type_array: {
                size_t len = json_object_array_length(o);

                n = json_object_new_array_ext((int) (len > 0 ? len : 1));
                if (!n)
                        return -ENOMEM;
                for (size_t i = 0; i < len; i++) {
                        struct json_object *c = NULL;

                        r = fields_copy(json_object_array_get_idx(o, i), limit, &c);
                        if (r < 0)
                                return r;
                        if (json_object_array_add(n, c) < 0) {
                                json_object_put(c);
                                return -ENOMEM;
                        }
                }
                break;
        }
        case json_type_string: {
                _cleanup_free_ char *s = NULL;
                size_t len;

                s = string_repair(json_object_get_string(o), (size_t) json_object_get_string_len(o), limit, &len);
                if (!s)
                        return -ENOMEM;
                n = json_object_new_string_len(s, (int) len);
                if (!n)
                        return -ENOMEM;
                break;
        }
        default:
                /* Numbers, booleans; null is the NULL pointer and stays so. */
                n = json_object_get(o);
                break;
        }
        *ret = TAKE_PTR(n);
        return 0;
}

static const char *to_json(struct json_object *o) {
        return json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
}

/* s as a JSON string literal (or null), malloc'd. */
static char *json_quote(const char *s) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        const char *q;

        if (!s)
                return strdup("null");
        /* Fast path (types, sandbox ids): nothing to escape, so json-c would
         * produce exactly "s". */
        size_t n = strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-");
        if (s[n] == '\0') {
                char *r = malloc(n + 3);
                if (!r)
                        return NULL;
                r[0] = '"';
                memcpy(r + 1, s, n);
                r[n + 1] = '"';
                r[n + 2] = '\0';
                return r;
        }
        o = json_object_new_string(s);
        if (!o)
                return NULL;
        q = to_json(o);
        return q ? strdup(q) : NULL;
}

static bool type_valid(const char *type) {
        size_t n = type ? strlen(type) : 0;

        if (n == 0 || n > TYPE_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!((type[i] >= 'a' && type[i] <= 'z') || (type[i] >= '0' && type[i] <= '9') || strchr("._-", type[i])))
                        return false;
        return true;
}

/* UTC with microseconds, 2026-11-24T19:21:12.123456Z: the part up to the
 * second is formatted once per second (a record is written per request). */
static int format_time(char buf[static 40], size_t *ret_len) {
        static _Thread_local time_t cached_sec = -1;
        static _Thread_local char cached[32];
        static _Thread_local size_t cached_len;
        struct timespec ts;
        long us;

        if (clock_gettime(CLOCK_REALTIME, &ts) < 0)
                return -errno;
        if (ts.tv_sec != cached_sec) {
                struct tm tm;
                int n;

                if (!gmtime_r(&ts.tv_sec, &tm))
                        return -EOVERFLOW;
                n = snprintf(cached, sizeof(cached), "%04d-%02d-%02dT%02d:%02d:%02d.", tm.tm_year + 1900,
                             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
                if (n < 0 || (size_t) n >= sizeof(cached))
                        return -EOVERFLOW;
                cached_len = (size_t) n;
                cached_sec = ts.tv_sec;
        }
        memcpy(buf, cached, cached_len);
        us = ts.tv_nsec / 1000;
        for (size_t i = 6; i > 0; i--, us /= 10)
                buf[cached_len + i - 1] = (char) ('0' + us % 10);
        memcpy(buf + cached_len + 6, "Z", 2);
        *ret_len = cached_len + 7;
        return 0;
}

static bool parse_time_ms(const char *s, uint64_t *ret) {
        unsigned y, mo, d, h, mi, sec, usec;
        struct tm tm = {};
        char z = 0;
        time_t t;

        if (sscanf(s, "%4u-%2u-%2uT%2u:%2u:%2u.%6u%c", &y, &mo, &d, &h, &mi, &sec, &usec, &z) != 8 || z != 'Z')
                return false;
        tm.tm_year = (int) y - 1900;
        tm.tm_mon = (int) mo - 1;
        tm.tm_mday = (int) d;
        tm.tm_hour = (int) h;
        tm.tm_min = (int) mi;
        tm.tm_sec = (int) sec;
        t = timegm(&tm);
        if (t < 0)
                return false;
        *ret = (uint64_t) t * 1000 + usec / 1000;
        return true;
}

/* ---- writing ---- */

static int audit_rotate(audit_log *a) {
        char name[32];
        int fd;

        /* The old file's tail must be durable before a successor exists, or a crash
         * could leave a hole in the middle of the chain. */
        if (fsync(a->fd) < 0)
                return -errno;
        file_name(a->file_no + 1, name);
        fd = openat(a->dir_fd, name, O_RDWR | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
        if (fd < 0)
                return -errno;
        if (fsync(a->dir_fd) < 0) {
                int r = -errno;
                safe_close(fd);
                return r;
        }
        safe_close(a->fd);
        a->fd = fd;
        a->file_no++;
        a->file_size = 0;
        return 0;
}

static void audit_journal(audit_log *a, uint64_t seq, const char *type, const char *sandbox, const char *fields) {
        /* Per-request records stay in the files: an IDE polling status would fill the journal. */
        if (!a->journal || strcmp(type, "rpc") == 0)
                return;
        if (sandbox)
                (void) sd_journal_send("MESSAGE=audit %s seq=%" PRIu64 " sandbox=%s", type, seq, sandbox,
                                       "PRIORITY=%i", LOG_INFO,
                                       "AGENTD_AUDIT_TYPE=%s", type,
                                       "AGENTD_AUDIT_SEQ=%" PRIu64, seq,
                                       "AGENTD_SANDBOX_ID=%s", sandbox,
                                       "AGENTD_AUDIT_FIELDS=%s", fields,
                                       NULL);
        else
                (void) sd_journal_send("MESSAGE=audit %s seq=%" PRIu64, type, seq,
                                       "PRIORITY=%i", LOG_INFO,
                                       "AGENTD_AUDIT_TYPE=%s", type,
                                       "AGENTD_AUDIT_SEQ=%" PRIu64, seq,
                                       "AGENTD_AUDIT_FIELDS=%s", fields,
                                       NULL);
}

/* The pieces of a record; its unsigned form U (see audit.h) is
 *   {"seq":N,"time":"T","type":Q,"sandbox":Q,"fields":F,"prev":"H"} */
typedef struct record_parts {
        const char *type, *sandbox;     /* as given: for the journal */
        const char *type_q, *sandbox_q, *fields;
        size_t type_q_len, sandbox_q_len, fields_len;
        char time[40];
        size_t time_len;
} record_parts;

#define U_SEQ "{\"seq\":"
#define U_TIME ",\"time\":\""
#define U_TYPE "\",\"type\":"
#define U_SANDBOX ",\"sandbox\":"
#define U_FIELDS ",\"fields\":"
#define U_PREV ",\"prev\":\""
#define U_END "\"}"
#define U_FIXED_LEN (sizeof(U_SEQ U_TIME U_TYPE U_SANDBOX U_FIELDS U_PREV U_END) - 1 + HEX_LEN)

static size_t u64_decimal(uint64_t v, char buf[static 21]) {
        char t[20];
        size_t n = 0;

        do
                t[n++] = (char) ('0' + v % 10);
        while ((v /= 10) > 0);
        for (size_t i = 0; i < n; i++)
                buf[i] = t[n - 1 - i];
        buf[n] = 0;
        return n;
}

static size_t record_unsigned_len(uint64_t seq, const record_parts *p) {
        char num[21];

        return U_FIXED_LEN + u64_decimal(seq, num) + p->time_len + p->type_q_len + p->sandbox_q_len + p->fields_len;
}

/* Room for one more line of len bytes (and the NUL hex_encode() writes). */
static int batch_reserve(audit_log *a, size_t len) {
        if (a->batch_len + len + 1 > a->batch_cap) {
                size_t cap = a->batch_cap ? a->batch_cap : 4096;
                while (cap < a->batch_len + len + 1)
                        cap *= 2;
                char *b = realloc(a->batch, cap);
                if (!b)
                        return -ENOMEM;
                a->batch = b;
                a->batch_cap = cap;
        }
        if (a->n_recs == a->recs_cap) {
                size_t cap = a->recs_cap ? a->recs_cap * 2 : 16;
                struct pending_rec *n = reallocarray(a->recs, cap, sizeof(*n));
                if (!n)
                        return -ENOMEM;
                a->recs = n;
                a->recs_cap = cap;
        }
        return 0;
}

/* Chains the next record (seq a->seq + 1, prev a->last_hash) onto the batch:
 * U is written in place and MAC'd, then its closing '}' becomes
 * ,"hmac":"<hex>"}\n; prev of the next record is SHA-256 of the line without
 * its '\n'. Nothing is allocated once the batch has grown to its size. */
static int record_push(audit_log *a, const record_parts *p) {
        char num[21];
        uint8_t mac[HASH_LEN], hash[HASH_LEN];
        uint64_t seq = a->seq + 1;
        size_t numlen = u64_decimal(seq, num);
        size_t ulen = record_unsigned_len(seq, p), len = ulen - 1 + HMAC_SUFFIX_LEN + 1;
        int r;

        r = batch_reserve(a, len);
        if (r < 0)
                return r;
        char *line = a->batch + a->batch_len, *e = line;
        e = mempcpy(e, U_SEQ, sizeof(U_SEQ) - 1);
        e = mempcpy(e, num, numlen);
        e = mempcpy(e, U_TIME, sizeof(U_TIME) - 1);
        e = mempcpy(e, p->time, p->time_len);
        e = mempcpy(e, U_TYPE, sizeof(U_TYPE) - 1);
        e = mempcpy(e, p->type_q, p->type_q_len);
        e = mempcpy(e, U_SANDBOX, sizeof(U_SANDBOX) - 1);
        e = mempcpy(e, p->sandbox_q, p->sandbox_q_len);
        e = mempcpy(e, U_FIELDS, sizeof(U_FIELDS) - 1);
        e = mempcpy(e, p->fields, p->fields_len);
        e = mempcpy(e, U_PREV, sizeof(U_PREV) - 1);
        hex_encode(a->last_hash, HASH_LEN, e);
        e = mempcpy(e + HEX_LEN, U_END, sizeof(U_END) - 1);
        assert((size_t) (e - line) == ulen);

        r = hmac_sha256(&a->key, line, ulen, NULL, 0, mac);
        if (r < 0)
                return r;
        e = mempcpy(line + ulen - 1, HMAC_SUFFIX_PREFIX, sizeof(HMAC_SUFFIX_PREFIX) - 1);
        hex_encode(mac, HASH_LEN, e);
        memcpy(e + HEX_LEN, "\"}\n", 3);
        r = sha256(line, len - 1, hash);
        if (r < 0)
                return r;

        audit_journal(a, seq, p->type, p->sandbox, p->fields);
        if (a->n_recs == 0) {
                a->base_seq = a->seq;
                memcpy(a->base_hash, a->last_hash, HASH_LEN);
        }
        a->batch_len += len;
        a->recs[a->n_recs++] = (struct pending_rec) { .len = len, .seq = seq };
        memcpy(a->recs[a->n_recs - 1].hash, hash, HASH_LEN);
        a->seq = seq;
        memcpy(a->last_hash, hash, HASH_LEN);
        return 0;
}

/* Bytes that json-c's plain serialization (slashes not escaped) writes as they
 * are: printable ASCII except '"' and '\\'. */
static bool json_plain(const char *s, size_t n) {
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char) s[i];
                if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\')
                        return false;
        }
        return true;
}

/* "s" into buf (size > n + 2) when s needs no escaping; else NULL. */
static const char *quote_plain(const char *s, size_t n, char *buf, size_t size, size_t *ret_len) {
        if (n + 3 > size || !json_plain(s, n))
                return NULL;
        buf[0] = '"';
        memcpy(buf + 1, s, n);
        memcpy(buf + n + 1, "\"", 2);
        *ret_len = n + 2;
        return buf;
}

/* Checks the record's type and sandbox, quotes them and takes the time. *ret_sandbox_q
 * is set when the sandbox had to be quoted by json-c (free() it). */
static int record_start(const char *type, const char *sandbox, record_parts *p, char type_buf[static TYPE_MAX + 3],
                        char sandbox_buf[static SANDBOX_MAX + 3], char **ret_sandbox_q) {
        *ret_sandbox_q = NULL;
        if (!type_valid(type))
                return -EINVAL;
        if (sandbox && (strlen(sandbox) > SANDBOX_MAX || !utf8_valid(sandbox, strlen(sandbox))))
                return -EINVAL;
        *p = (record_parts) { .type = type, .sandbox = sandbox };
        /* A valid type is plain. */
        p->type_q = quote_plain(type, strlen(type), type_buf, TYPE_MAX + 3, &p->type_q_len);
        if (!sandbox) {
                p->sandbox_q = "null";
                p->sandbox_q_len = 4;
        } else if (!(p->sandbox_q = quote_plain(sandbox, strlen(sandbox), sandbox_buf, SANDBOX_MAX + 3,
                                                &p->sandbox_q_len))) {
                *ret_sandbox_q = json_quote(sandbox);
                if (!*ret_sandbox_q)
                        return -ENOMEM;
                p->sandbox_q = *ret_sandbox_q;
                p->sandbox_q_len = strlen(p->sandbox_q);
        }
        if (!p->type_q)
                return -EINVAL;
        return format_time(p->time, &p->time_len);
}

/* Builds the next record of the chain from json fields and puts it in the batch. */
static int record_build(audit_log *a, const char *type, const char *sandbox, struct json_object *fields) {
        _cleanup_(json_object_putp) struct json_object *copy = NULL;
        _cleanup_free_ char *sandbox_q = NULL, *fallback = NULL;
        static const size_t limits[] = { 4096, 512, 64 };
        char type_buf[TYPE_MAX + 3], sandbox_buf[SANDBOX_MAX + 3];
        const char *fields_s = "{}";
        size_t longest = 0, original;
        bool needs_repair = false;
        record_parts p;
        int r;

        if (!a)
                return -EINVAL;
        if (fields) {
                if (!json_object_is_type(fields, json_type_object))
                        return -EINVAL;
                r = fields_check(fields, 0, &longest, &needs_repair);
                if (r < 0)
                        return r;
        }
        r = record_start(type, sandbox, &p, type_buf, sandbox_buf, &sandbox_q);
        if (r < 0)
                return r;

        if (fields) {
                if (needs_repair) {
                        r = fields_copy(fields, SIZE_MAX / 4, &copy);
                        if (r < 0)
                                return r;
                }
                fields_s = to_json(copy ?: fields);
                if (!fields_s)
                        return -ENOMEM;
        }
        original = strlen(fields_s);

        /* Bound the record: cut long strings harder until it fits, and as a last
         * resort say only how big the fields were. */
        for (size_t i = 0;; i++) {
                p.fields = fields_s;
                p.fields_len = strlen(fields_s);
                if (record_unsigned_len(a->seq + 1, &p) + HMAC_SUFFIX_LEN <= a->max_record)
                        break;
                while (i < ELEMENTSOF(limits) && limits[i] >= longest)
                        i++;            /* would cut nothing */
                if (i < ELEMENTSOF(limits)) {
                        json_object_put(copy);
                        copy = NULL;
                        r = fields_copy(fields, limits[i], &copy);
                        if (r < 0)
                                return r;
                        fields_s = to_json(copy);
                        if (!fields_s)
                                return -ENOMEM;
                        continue;
                }
                if (fallback)
                        return -E2BIG;  /* cannot happen: type and sandbox are bounded */
                if (asprintf(&fallback, "{\"_truncated\":true,\"_original_bytes\":%zu}", original) < 0)
                        return -ENOMEM;
                fields_s = fallback;
                i = ELEMENTSOF(limits);
        }
        return record_push(a, &p);
}

/* writev(2) until everything is written (a regular file may take part of it). */
static int writev_all(int fd, struct iovec *iov, int n) {
        while (n > 0) {
                ssize_t k = writev(fd, iov, n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        return -EIO;
                while (n > 0 && (size_t) k >= iov->iov_len) {
                        k -= (ssize_t) iov->iov_len;
                        iov++;
                        n--;
                }
                if (n > 0) {
                        iov->iov_base = (char *) iov->iov_base + k;
                        iov->iov_len -= (size_t) k;
                }
        }
        return 0;
}

#define COMMIT_IOV_MAX 64

int audit_commit(audit_log *a, size_t *ret_lost) {
        size_t i = 0, off = 0;
        int r = 0;

        if (ret_lost)
                *ret_lost = 0;
        if (!a)
                return -EINVAL;
        while (i < a->n_recs) {
                if (a->file_size > 0 && a->file_size + a->recs[i].len > a->rotate_bytes) {
                        r = audit_rotate(a);
                        if (r < 0)
                                break;
                }
                /* The records that fit into this file (at least one), one writev. */
                struct iovec iov[COMMIT_IOV_MAX];
                size_t j = i, total = 0;
                int n = 0;
                while (j < a->n_recs && n < COMMIT_IOV_MAX &&
                       (j == i || a->file_size + total + a->recs[j].len <= a->rotate_bytes)) {
                        iov[n++] = (struct iovec) { a->batch + off + total, a->recs[j].len };
                        total += a->recs[j].len;
                        j++;
                }
                r = writev_all(a->fd, iov, n);
                if (r < 0) {
                        /* Take back a partial line (ENOSPC mid-write), so the next record does not
                         * land behind garbage and the file stays a valid chain. */
                        (void) ftruncate(a->fd, (off_t) a->file_size);
                        break;
                }
                a->file_size += total;
                a->dirty = true;
                a->head_current = false;
                off += total;
                i = j;
        }
        /* The chain continues from the last record on disk. */
        if (i < a->n_recs) {
                a->seq = i > 0 ? a->recs[i - 1].seq : a->base_seq;
                memcpy(a->last_hash, i > 0 ? a->recs[i - 1].hash : a->base_hash, HASH_LEN);
                if (ret_lost)
                        *ret_lost = a->n_recs - i;
        }
        a->n_recs = 0;
        a->batch_len = 0;
        return r;
}

size_t audit_pending(const audit_log *a) {
        return a ? a->n_recs : 0;
}

int audit_append_deferred(audit_log *a, const char *type, const char *sandbox, struct json_object *fields) {
        return record_build(a, type, sandbox, fields);
}

/* The same object through json-c, for what the direct path does not take. */
static int members_json(const audit_member *m, size_t n, struct json_object **ret) {
        _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();

        if (!o)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                struct json_object *v = m[i].str ? json_object_new_string_len(m[i].str, (int) m[i].str_len)
                                                 : json_object_new_int64(m[i].num);
                if (!v || json_object_object_add(o, m[i].key, v) < 0) {
                        json_object_put(v);
                        return -ENOMEM;
                }
        }
        *ret = TAKE_PTR(o);
        return 0;
}

#define MEMBERS_DIRECT_MAX 1024

int audit_append_members_deferred(audit_log *a, const char *type, const char *sandbox, const audit_member *m, size_t n) {
        _cleanup_free_ char *sandbox_q = NULL;
        char type_buf[TYPE_MAX + 3], sandbox_buf[SANDBOX_MAX + 3], fields[MEMBERS_DIRECT_MAX], num[24];
        size_t len = 1;
        record_parts p;
        int r;

        if (!a || (n > 0 && !m))
                return -EINVAL;
        fields[0] = '{';
        for (size_t i = 0; i < n; i++) {
                size_t kl = strlen(m[i].key), vl;
                const char *v;

                if (key_refused(m[i].key))
                        return -EINVAL;
                for (size_t k = 0; k < i; k++)
                        if (streq(m[k].key, m[i].key))
                                goto general;   /* json-c keeps the last one, in the first one's place */
                if (m[i].str) {
                        if (!json_plain(m[i].str, m[i].str_len))
                                goto general;
                        v = m[i].str;
                        vl = m[i].str_len;
                } else {
                        /* As json-c writes its integers (PRId64). */
                        uint64_t u = m[i].num < 0 ? -(uint64_t) m[i].num : (uint64_t) m[i].num;
                        num[0] = '-';
                        vl = u64_decimal(u, num + (m[i].num < 0)) + (m[i].num < 0);
                        v = num;
                }
                /* ,"key":"value" or ,"key":number, then the closing brace */
                if (!json_plain(m[i].key, kl) || len + kl + vl + 8 > sizeof(fields))
                        goto general;
                if (i > 0)
                        fields[len++] = ',';
                fields[len++] = '"';
                len = (size_t) ((char *) mempcpy(fields + len, m[i].key, kl) - fields);
                memcpy(fields + len, "\":", 2);
                len += 2;
                if (m[i].str)
                        fields[len++] = '"';
                len = (size_t) ((char *) mempcpy(fields + len, v, vl) - fields);
                if (m[i].str)
                        fields[len++] = '"';
        }
        memcpy(fields + len, "}", 2);
        len++;

        r = record_start(type, sandbox, &p, type_buf, sandbox_buf, &sandbox_q);
        if (r < 0)
                return r;
        p.fields = fields;
        p.fields_len = len;
        if (record_unsigned_len(a->seq + 1, &p) + HMAC_SUFFIX_LEN > a->max_record)
                goto general;           /* the size bound cuts strings: json-c's path */
        return record_push(a, &p);

general: {
        _cleanup_(json_object_putp) struct json_object *o = NULL;

        r = members_json(m, n, &o);
        if (r < 0)
                return r;
        return record_build(a, type, sandbox, o);
}
}

int audit_append(audit_log *a, const char *type, const char *sandbox, struct json_object *fields) {
        int r = audit_append_deferred(a, type, sandbox, fields);
        if (r < 0)
                return r;
        return audit_commit(a, NULL);
}

/* A synchronous flush (or close) takes over from a worker's flush that has
 * not finished: that one writes nothing more (its head would be older than
 * ours), and its work counts as not done. */
static void flush_job_detach(audit_log *a) {
        audit_flush_job *j = a->flush_job;

        if (!j)
                return;
        pthread_mutex_lock(&flush_lock);
        j->cancelled = true;
        pthread_mutex_unlock(&flush_lock);
        j->log = NULL;
        a->flush_job = NULL;
        if (j->fd >= 0)
                a->dirty = true;
        if (j->write_head)
                a->head_current = false;
}

int audit_flush(audit_log *a) {
        int r;

        if (!a)
                return -EINVAL;
        r = audit_commit(a, NULL);
        if (r < 0)
                return r;
        flush_job_detach(a);
        if (!a->dirty && a->head_current)
                return 0;
        pthread_mutex_lock(&flush_lock);
        if (a->dirty) {
                if (fsync(a->fd) < 0) {
                        r = -errno;
                        goto out;
                }
                a->dirty = false;
        }
        if (!a->head_current) {
                /* Only after the records are durable may the head vouch for them. */
                r = head_write(a);
                if (r < 0)
                        goto out;
                a->head_seq = a->seq;
                a->head_current = true;
        }
out:
        pthread_mutex_unlock(&flush_lock);
        return r;
}

static void flush_job_free(audit_flush_job *j) {
        if (!j)
                return;
        safe_close(j->fd);
        safe_close(j->dir_fd);
        free(j);
}

int audit_flush_begin(audit_log *a, audit_flush_job **ret) {
        audit_flush_job *j;
        int r;

        if (!a || !ret)
                return -EINVAL;
        if (a->flush_job)
                return -EBUSY;
        r = audit_commit(a, NULL);
        if (r < 0)
                return r;
        if (!a->dirty && a->head_current) {
                *ret = NULL;
                return 0;
        }
        j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        j->fd = j->dir_fd = -1;
        j->write_head = !a->head_current;
        j->seq = a->seq;
        if (j->write_head)
                r = head_format(&a->key, a->seq, a->last_hash, j->head, sizeof(j->head), &j->head_len);
        if (r == 0 && a->dirty && (j->fd = fcntl(a->fd, F_DUPFD_CLOEXEC, 3)) < 0)
                r = -errno;
        if (r == 0 && (j->dir_fd = fcntl(a->dir_fd, F_DUPFD_CLOEXEC, 3)) < 0)
                r = -errno;
        if (r < 0) {
                flush_job_free(j);
                return r;
        }
        /* Taken as done; audit_flush_end() puts it back if it was not. */
        a->dirty = false;
        a->head_current = true;
        j->log = a;
        a->flush_job = j;
        *ret = j;
        return 0;
}

void audit_flush_run(audit_flush_job *j) {
        int r = 0;

        pthread_mutex_lock(&flush_lock);
        if (!j->cancelled) {
                /* Only after the records are durable may the head vouch for them. */
                if (j->fd >= 0 && fsync(j->fd) < 0)
                        r = -errno;
                if (r == 0 && j->write_head)
                        r = head_store(j->dir_fd, j->head, j->head_len);
        }
        j->result = r;
        pthread_mutex_unlock(&flush_lock);
}

int audit_flush_end(audit_flush_job *j) {
        audit_log *a;
        int r;

        if (!j)
                return 0;
        a = j->log;
        r = a ? j->result : 0;
        if (a) {
                a->flush_job = NULL;
                if (r < 0) {
                        a->dirty = a->dirty || j->fd >= 0;
                        a->head_current = a->head_current && !j->write_head;
                } else if (j->write_head)
                        a->head_seq = j->seq;
        }
        flush_job_free(j);
        return r;
}

uint64_t audit_seq(const audit_log *a) {
        return a ? a->seq : 0;
}

void audit_close(audit_log *a) {
        if (!a)
                return;
        /* A half-opened log must not write a head: it could vouch for a state that
         * recovery never examined. */
        if (a->ready && a->fd >= 0)
                (void) audit_flush(a);
        else if (a->fd >= 0)
                (void) audit_commit(a, NULL);
        flush_job_detach(a);
        safe_close(a->fd);
        safe_close(a->dir_fd);
        key_page_free(a->key_page, a->key_page_size);
        free(a->batch);
        free(a->recs);
        free(a);
}

/* ---- opening ---- */

typedef struct tail_scan {
        bool found;
        record_info last;               /* the last authentic record */
        bool torn;
        uint64_t torn_offset;
} tail_scan;

static int scan_file(const audit_key *k, int fd, tail_scan *ret) {
        _cleanup_(json_tokener_freep) json_tokener *tok = NULL;
        line_reader rd;
        int r;

        *ret = (tail_scan) {};
        tok = json_tokener_new();
        if (!tok)
                return -ENOMEM;
        if (lseek(fd, 0, SEEK_SET) < 0)
                return -errno;
        r = reader_init(&rd, fd);
        if (r < 0)
                return r;
        for (;;) {
                const char *line, *why;
                uint64_t offset;
                record_info info;
                size_t len;

                r = reader_next(&rd, &line, &len, &offset);
                if (r < 0 || r == LINE_EOF)
                        break;
                if (r == LINE_TORN) {
                        ret->torn = true;
                        ret->torn_offset = offset;
                        continue;
                }
                if (r != LINE_OK)
                        continue;
                /* Anything unauthentic is skipped here and left in place for verify to name. */
                r = record_check(k, tok, line, len, &info, &why);
                if (r < 0)
                        break;
                if (r == REC_OK) {
                        ret->found = true;
                        ret->last = info;
                }
        }
        reader_done(&rd);
        return r < 0 ? r : 0;
}

typedef struct torn_info {
        uint64_t offset, length;
        uint8_t hash[HASH_LEN];
        char *data_hex;
        bool has_seq;
        uint64_t seq;
} torn_info;

/* Copies out what the crash left behind, then cuts it off: appending behind a line
 * without '\n' would glue the next record onto it. */
static int torn_take(int fd, uint64_t offset, torn_info *ret) {
        _cleanup_free_ char *head = NULL;
        EVP_MD_CTX *md = NULL;
        struct stat st;
        uint64_t pos;
        char buf[65536];
        size_t headn = 0;
        unsigned hl = 0;
        int r = 0;

        *ret = (torn_info) { .offset = offset };
        if (fstat(fd, &st) < 0)
                return -errno;
        ret->length = (uint64_t) st.st_size > offset ? (uint64_t) st.st_size - offset : 0;

        head = malloc(TORN_DATA_MAX + 1);
        md = EVP_MD_CTX_new();
        if (!head || !md) {
                EVP_MD_CTX_free(md);
                return -ENOMEM;
        }
        if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
                EVP_MD_CTX_free(md);
                return -EIO;
        }
        for (pos = offset; pos < (uint64_t) st.st_size;) {
                ssize_t n = pread(fd, buf, sizeof(buf), (off_t) pos);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        break;
                }
                if (n == 0)
                        break;
                if (headn < TORN_DATA_MAX) {
                        size_t c = (size_t) n < TORN_DATA_MAX - headn ? (size_t) n : TORN_DATA_MAX - headn;
                        memcpy(head + headn, buf, c);
                        headn += c;
                }
                if (EVP_DigestUpdate(md, buf, (size_t) n) != 1) {
                        r = -EIO;
                        break;
                }
                pos += (uint64_t) n;
        }
        if (r == 0 && (EVP_DigestFinal_ex(md, ret->hash, &hl) != 1 || hl != HASH_LEN))
                r = -EIO;
        EVP_MD_CTX_free(md);
        if (r < 0)
                return r;

        head[headn] = 0;
        if (headn > 7 && strncmp(head, "{\"seq\":", 7) == 0) {
                char *end;
                unsigned long long v;

                errno = 0;
                v = strtoull(head + 7, &end, 10);
                if (errno == 0 && end > head + 7 && v > 0) {
                        ret->has_seq = true;
                        ret->seq = v;
                }
        }
        ret->data_hex = malloc(2 * headn + 1);
        if (!ret->data_hex)
                return -ENOMEM;
        hex_encode((const uint8_t *) head, headn, ret->data_hex);

        if (ftruncate(fd, (off_t) offset) < 0 || fsync(fd) < 0) {
                r = -errno;
                free(ret->data_hex);
                ret->data_hex = NULL;
                return r;
        }
        return 0;
}

static int mkdir_p(const char *path, mode_t mode) {
        _cleanup_free_ char *p = strdup(path);

        if (!p)
                return -ENOMEM;
        for (char *s = p + 1; *s; s++) {
                if (*s != '/')
                        continue;
                *s = 0;
                if (mkdir(p, mode) < 0 && errno != EEXIST)
                        return -errno;
                *s = '/';
        }
        if (mkdir(p, mode) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

/* Adds one member to a recovery record, ignoring allocation failure of the value
 * (the record then lacks it; better than no record). */
static void add(struct json_object *o, const char *k, struct json_object *v) {
        if (v && json_object_object_add(o, k, v) < 0)
                json_object_put(v);
}

/* The log's directory, created 0700 and ours alone. */
static int open_dir(audit_log *a, const char *dir, agentd_error *err) {
        struct stat st;
        int r = mkdir_p(dir, 0700);
        if (r < 0)
                return fail(err, r, "audit: cannot create %s: %s", dir, strerror(-r));
        a->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (a->dir_fd < 0)
                return fail(err, -errno, "audit: cannot open %s: %m", dir);
        /* An existing directory may have been created looser; the log is ours alone. */
        if (fstat(a->dir_fd, &st) < 0)
                return fail(err, -errno, "audit: cannot stat %s: %m", dir);
        if (st.st_uid != geteuid())
                return fail(err, -EPERM, "audit: %s is owned by uid %u, not us", dir, (unsigned) st.st_uid);
        if ((st.st_mode & 07777) != 0700 && fchmod(a->dir_fd, 0700) < 0)
                return fail(err, -errno, "audit: cannot chmod %s: %m", dir);
        return 0;
}

/* The recovery record of a torn end of file `name` (cut off at scan's offset). */
static int torn_event(audit_log *a, const char *dir, const char *name, const tail_scan *scan, struct json_object **ret,
                      agentd_error *err) {
        torn_info t;
        int r = torn_take(a->fd, scan->torn_offset, &t);
        if (r < 0)
                return fail(err, r, "audit: cannot recover the torn end of %s/%s: %s", dir, name, strerror(-r));
        struct json_object *ev = json_object_new_object();
        if (!ev) {
                free(t.data_hex);
                return fail(err, -ENOMEM, "audit: out of memory");
        }
        char hex[HEX_LEN + 1];
        hex_encode(t.hash, HASH_LEN, hex);
        add(ev, "reason", json_object_new_string("torn"));
        add(ev, "file", json_object_new_string(name));
        add(ev, "offset", json_object_new_int64((int64_t) t.offset));
        add(ev, "length", json_object_new_int64((int64_t) t.length));
        add(ev, "sha256", json_object_new_string(hex));
        if (t.has_seq)
                add(ev, "claimed_seq", json_object_new_uint64(t.seq));
        add(ev, "data_hex", json_object_new_string(t.data_hex));
        free(t.data_hex);
        *ret = ev;
        return 0;
}

/* Opens the newest file (creates the first) and finds the chain's last
 * authentic record; *ret_torn is the recovery record of a torn end, if any. */
static int open_files(audit_log *a, const char *dir, struct json_object **ret_torn, agentd_error *err) {
        _cleanup_free_ unsigned *files = NULL;
        tail_scan scan = {};
        size_t n_files = 0;
        char name[32];
        struct stat st;
        int r = list_files(a->dir_fd, &files, &n_files);
        if (r < 0)
                return fail(err, r, "audit: cannot list %s: %s", dir, strerror(-r));

        if (n_files == 0) {
                a->file_no = 1;
                file_name(a->file_no, name);
                a->fd = openat(a->dir_fd, name, O_RDWR | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY,
                               0600);
                if (a->fd < 0)
                        return fail(err, -errno, "audit: cannot create %s/%s: %m", dir, name);
                if (fsync(a->dir_fd) < 0)
                        return fail(err, -errno, "audit: cannot fsync %s: %m", dir);
                return 0;
        }
        a->file_no = files[n_files - 1];
        file_name(a->file_no, name);
        a->fd = openat(a->dir_fd, name, O_RDWR | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
        if (a->fd < 0)
                return fail(err, -errno, "audit: cannot open %s/%s: %m", dir, name);
        r = scan_file(&a->key, a->fd, &scan);
        if (r < 0)
                return fail(err, r, "audit: cannot read %s/%s: %s", dir, name, strerror(-r));
        if (scan.torn && (r = torn_event(a, dir, name, &scan, ret_torn, err)) < 0)
                return r;

        /* A file without any record of ours (a crash right after rotating): the
         * chain continues from an older one. */
        for (size_t i = n_files - 1; !scan.found && i > 0; i--) {
                _cleanup_close_ int fd = -1;
                char older[32];

                file_name(files[i - 1], older);
                fd = openat(a->dir_fd, older, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
                if (fd < 0)
                        continue;
                r = scan_file(&a->key, fd, &scan);
                if (r < 0)
                        return fail(err, r, "audit: cannot read %s/%s: %s", dir, older, strerror(-r));
        }
        if (scan.found) {
                a->seq = scan.last.seq;
                memcpy(a->last_hash, scan.last.hash, HASH_LEN);
        }
        if (fstat(a->fd, &st) < 0)
                return fail(err, -errno, "audit: cannot stat %s/%s: %m", dir, name);
        a->file_size = (uint64_t) st.st_size;
        return 0;
}

/* Compares the chain's end with the head file; *ret_ev is the recovery
 * record of a disagreement, if any. */
static int check_head(audit_log *a, const char *dir, struct json_object **ret_ev, agentd_error *err) {
        uint64_t head_seq = 0;
        uint8_t head_hash[HASH_LEN];
        struct json_object *ev = NULL;
        int head = head_read(a->dir_fd, &a->key, &head_seq, head_hash);
        if (head < 0)
                return fail(err, head, "audit: cannot read %s/" HEAD_NAME ": %s", dir, strerror(-head));
        if (head == HEAD_OK && head_seq > a->seq) {
                /* The files end before what was once durable: records were cut off or the
                 * newest file removed. Continue after the head, so the hole stays in the
                 * chain for verify to name instead of being papered over. */
                ev = json_object_new_object();
                if (!ev)
                        return fail(err, -ENOMEM, "audit: out of memory");
                add(ev, "reason", json_object_new_string("truncated"));
                add(ev, "missing_from", json_object_new_uint64(a->seq + 1));
                add(ev, "missing_to", json_object_new_uint64(head_seq));
                a->seq = head_seq;
                memcpy(a->last_hash, head_hash, HASH_LEN);
        } else if (head == HEAD_OK && head_seq == a->seq && memcmp(head_hash, a->last_hash, HASH_LEN) != 0) {
                ev = json_object_new_object();
                if (!ev)
                        return fail(err, -ENOMEM, "audit: out of memory");
                add(ev, "reason", json_object_new_string("head_mismatch"));
                add(ev, "head_seq", json_object_new_uint64(head_seq));
        } else if (head == HEAD_INVALID || (head == HEAD_MISSING && a->seq > 0)) {
                ev = json_object_new_object();
                if (!ev)
                        return fail(err, -ENOMEM, "audit: out of memory");
                add(ev, "reason", json_object_new_string(head == HEAD_INVALID ? "head_invalid" : "head_missing"));
                add(ev, "last_seq", json_object_new_uint64(a->seq));
        } else if (head == HEAD_OK && head_seq == a->seq)
                a->head_current = true;
        a->head_seq = head == HEAD_OK ? head_seq : 0;
        *ret_ev = ev;
        return 0;
}

int audit_open(const char *dir, const uint8_t *key, size_t key_len, const audit_options *opt, audit_log **ret,
               agentd_error *err) {
        _cleanup_(audit_closep) audit_log *a = NULL;
        _cleanup_(json_object_putp) struct json_object *ev_torn = NULL, *ev_head = NULL;
        int r;

        if (!dir || !key || !ret)
                return fail(err, -EINVAL, "audit: missing argument");
        if (key_len < AUDIT_KEY_MIN || key_len > AUDIT_KEY_MAX)
                return fail(err, -EINVAL, "audit: key must be %u..%u bytes, got %zu", AUDIT_KEY_MIN, AUDIT_KEY_MAX,
                            key_len);

        a = calloc(1, sizeof(*a));
        if (!a)
                return fail(err, -ENOMEM, "audit: out of memory");
        a->dir_fd = a->fd = -1;
        a->rotate_bytes = opt && opt->rotate_bytes ? opt->rotate_bytes : AUDIT_ROTATE_BYTES_DEFAULT;
        a->max_record = opt && opt->max_record_bytes ? opt->max_record_bytes : AUDIT_RECORD_MAX_DEFAULT;
        if (a->max_record < AUDIT_RECORD_MAX_MIN)
                a->max_record = AUDIT_RECORD_MAX_MIN;
        if (a->max_record > AUDIT_RECORD_MAX_LIMIT)
                a->max_record = AUDIT_RECORD_MAX_LIMIT;
        a->journal = !(opt && opt->no_journal) && access(JOURNAL_SOCKET, F_OK) == 0;

        r = key_page_new(key, key_len, &a->key_page, &a->key_page_size);
        if (r < 0)
                return fail(err, r, "audit: cannot allocate key memory: %s", strerror(-r));
        r = key_setup(&a->key, a->key_page, a->key_page_size, key_len);
        if (r < 0)
                return fail(err, r, "audit: cannot set up the HMAC key: %s", strerror(-r));

        if ((r = open_dir(a, dir, err)) < 0 || (r = open_files(a, dir, &ev_torn, err)) < 0 ||
            (r = check_head(a, dir, &ev_head, err)) < 0)
                return r;

        if (ev_torn) {
                r = audit_append(a, "audit.recovered", NULL, ev_torn);
                if (r < 0)
                        return fail(err, r, "audit: cannot record the recovery: %s", strerror(-r));
        }
        if (ev_head) {
                r = audit_append(a, "audit.recovered", NULL, ev_head);
                if (r < 0)
                        return fail(err, r, "audit: cannot record the recovery: %s", strerror(-r));
        }
        /* Records past the head (written before a crash, never flushed) become durable
         * and anchored now; a new log gets its head at once, so a missing head later
         * always means someone removed it. */
        a->dirty = true;
        r = audit_flush(a);
        if (r < 0)
                return fail(err, r, "audit: cannot flush %s: %s", dir, strerror(-r));

        a->ready = true;
        *ret = TAKE_PTR(a);
        return 0;
}

/* ---- verification ---- */

typedef struct anchor {
        bool set;
        uint64_t seq;
        uint8_t hash[HASH_LEN];
        const char *what;
} anchor;

typedef struct verdict {
        bool bad;
        uint64_t seq;
        char *reason;
} verdict;

_printf_(3, 4) static void verdict_set(verdict *v, uint64_t seq, const char *fmt, ...) {
        va_list ap;

        if (v->bad)
                return;
        v->bad = true;
        v->seq = seq;
        va_start(ap, fmt);
        if (vasprintf(&v->reason, fmt, ap) < 0)
                v->reason = NULL;
        va_end(ap);
}

static int verify_file(const audit_key *k, int dir_fd, unsigned no, const anchor *anchors, size_t n_anchors,
                       uint64_t limit, uint64_t *expected, uint8_t prev[HASH_LEN], uint64_t *records, verdict *v) {
        _cleanup_(json_tokener_freep) json_tokener *tok = NULL;
        _cleanup_close_ int fd = -1;
        line_reader rd;
        char name[32];
        int r;

        file_name(no, name);
        fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
        if (fd < 0) {
                if (errno == EIO || errno == ENOMEM)
                        return -errno;
                verdict_set(v, *expected, "%s: cannot be opened: %m", name);
                return 0;
        }
        tok = json_tokener_new();
        if (!tok)
                return -ENOMEM;
        r = reader_init(&rd, fd);
        if (r < 0)
                return r;

        /* limit: records after it may still be being written by the loop (a snapshot). */
        while (!v->bad && (limit == 0 || *expected <= limit)) {
                const char *line, *why;
                record_info info;
                uint64_t offset;
                size_t len;

                r = reader_next(&rd, &line, &len, &offset);
                if (r < 0 || r == LINE_EOF)
                        break;
                if (r == LINE_TORN) {
                        verdict_set(v, *expected, "%s: torn record at offset %" PRIu64 " (%zu bytes without a newline)",
                                    name, offset, len);
                        break;
                }
                if (r == LINE_OVERLONG) {
                        verdict_set(v, *expected, "%s: line at offset %" PRIu64 " is longer than any record can be",
                                    name, offset);
                        break;
                }
                r = record_check(k, tok, line, len, &info, &why);
                if (r < 0)
                        break;
                if (r == REC_MALFORMED) {
                        verdict_set(v, *expected, "%s: line at offset %" PRIu64 " is not an audit record (%s)", name,
                                    offset, why);
                        break;
                }
                if (r == REC_BAD_HMAC) {
                        verdict_set(v, *expected,
                                    "%s: record at offset %" PRIu64 " (claiming seq %" PRIu64
                                    ") has an invalid hmac: modified or forged",
                                    name, offset, info.seq);
                        break;
                }
                if (info.seq != *expected) {
                        verdict_set(v, info.seq,
                                    "%s: seq %" PRIu64 " found where %" PRIu64 " was expected (records deleted or reordered)",
                                    name, info.seq, *expected);
                        break;
                }
                if (memcmp(info.prev, prev, HASH_LEN) != 0) {
                        verdict_set(v, info.seq, "%s: seq %" PRIu64 " does not chain to the record before it", name,
                                    info.seq);
                        break;
                }
                for (size_t i = 0; i < n_anchors; i++)
                        if (anchors[i].set && anchors[i].seq == info.seq &&
                            memcmp(anchors[i].hash, info.hash, HASH_LEN) != 0)
                                verdict_set(v, info.seq, "%s: seq %" PRIu64 " is not the record %s vouches for", name,
                                            info.seq, anchors[i].what);
                if (v->bad)
                        break;
                memcpy(prev, info.hash, HASH_LEN);
                (*expected)++;
                (*records)++;
        }
        reader_done(&rd);
        return r < 0 ? r : 0;
}

static int verify_core(int dir_fd, const audit_key *k, const anchor *mem, uint64_t limit, bool *ret_ok,
                       uint64_t *ret_records, uint64_t *ret_first_bad_seq, char **ret_reason) {
        _cleanup_free_ unsigned *files = NULL;
        anchor anchors[2] = {};
        verdict v = {};
        uint8_t prev[HASH_LEN] = {};
        uint64_t expected = 1, records = 0, last;
        size_t n_files = 0;
        int head, r;

        head = head_read(dir_fd, k, &anchors[0].seq, anchors[0].hash);
        if (head < 0)
                return head;
        anchors[0].set = head == HEAD_OK && anchors[0].seq > 0;
        anchors[0].what = HEAD_NAME;
        if (mem && mem->set && mem->seq > 0) {
                anchors[1] = *mem;
                anchors[1].what = "this daemon's last write";
        }
        /* A head newer than the limit vouches for records this check does not read. */
        for (size_t i = 0; limit > 0 && i < ELEMENTSOF(anchors); i++)
                if (anchors[i].seq > limit)
                        anchors[i].set = false;

        /* A pruned log starts where its checkpoint says; files before that one
         * are what an interrupted prune had not removed yet. */
        unsigned cp_file = 0;
        uint64_t cp_seq = 0;
        int cp = checkpoint_read(dir_fd, k, &cp_file, &cp_seq, prev);
        if (cp < 0)
                return cp;
        if (cp == CP_INVALID)
                verdict_set(&v, 1, CHECKPOINT_NAME " is not valid (edited or forged): where the pruned log starts cannot be vouched for");
        if (cp == CP_OK)
                expected = cp_seq + 1;

        r = list_files(dir_fd, &files, &n_files);
        if (r < 0)
                return r;
        bool first = true;
        for (size_t i = 0; i < n_files && !v.bad; i++) {
                if (cp == CP_OK && files[i] < cp_file)
                        continue;
                if (cp == CP_OK && first && files[i] != cp_file) {
                        verdict_set(&v, expected, "audit-%06u.jsonl, where " CHECKPOINT_NAME " says the log starts, is missing",
                                    cp_file);
                        break;
                }
                first = false;
                r = verify_file(k, dir_fd, files[i], anchors, ELEMENTSOF(anchors), limit, &expected, prev, &records, &v);
                if (r < 0) {
                        free(v.reason);
                        return r;
                }
        }

        /* A valid chain that stops early is a truncated one, if anything says it went further. */
        last = expected - 1;
        for (size_t i = 0; i < ELEMENTSOF(anchors) && !v.bad; i++)
                if (anchors[i].set && anchors[i].seq > last)
                        verdict_set(&v, last + 1,
                                    "the log ends at seq %" PRIu64 " but %s has seq %" PRIu64
                                    " (records removed from the end)",
                                    last, anchors[i].what, anchors[i].seq);
        if (!v.bad && head == HEAD_INVALID)
                verdict_set(&v, last + 1, HEAD_NAME " is not valid (edited or forged); records after seq %" PRIu64
                            " cannot be vouched for", last);
        if (!v.bad && head == HEAD_MISSING && last > 0)
                verdict_set(&v, last + 1, HEAD_NAME " is missing; records after seq %" PRIu64
                            " cannot be vouched for", last);

        if (v.bad && !v.reason) {
                v.reason = strdup("verification failed");
                if (!v.reason)
                        return -ENOMEM;
        }
        if (ret_ok)
                *ret_ok = !v.bad;
        if (ret_records)
                *ret_records = records;
        if (ret_first_bad_seq)
                *ret_first_bad_seq = v.bad ? v.seq : 0;
        if (ret_reason)
                *ret_reason = TAKE_PTR(v.reason);
        free(v.reason);
        return 0;
}

int audit_verify(audit_log *a, bool *ret_ok, uint64_t *ret_records, uint64_t *ret_first_bad_seq, char **ret_reason) {
        anchor mem = { .set = true };

        if (!a)
                return -EINVAL;
        (void) audit_commit(a, NULL);   /* pending records are part of what this process wrote */
        mem.seq = a->seq;
        memcpy(mem.hash, a->last_hash, HASH_LEN);
        return verify_core(a->dir_fd, &a->key, &mem, 0, ret_ok, ret_records, ret_first_bad_seq, ret_reason);
}

int audit_verify_dir(const char *dir, const uint8_t *key, size_t key_len, bool *ret_ok, uint64_t *ret_records,
                     uint64_t *ret_first_bad_seq, char **ret_reason) {
        _cleanup_close_ int dir_fd = -1;
        uint8_t *page = NULL;
        size_t page_size = 0;
        audit_key k;
        int r;

        if (!dir || !key || key_len < AUDIT_KEY_MIN || key_len > AUDIT_KEY_MAX)
                return -EINVAL;
        dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (dir_fd < 0)
                return -errno;
        r = key_page_new(key, key_len, &page, &page_size);
        if (r < 0)
                return r;
        r = key_setup(&k, page, page_size, key_len);
        if (r == 0)
                r = verify_core(dir_fd, &k, NULL, 0, ret_ok, ret_records, ret_first_bad_seq, ret_reason);
        key_page_free(page, page_size);
        return r;
}

/* ---- pruning ---- */

/* The record before file `no`'s first one, as its first record names it
 * (seq - 1 and prev); an authentic record is required. */
static int first_record_anchor(audit_log *a, unsigned no, uint64_t *ret_seq, uint8_t ret_hash[HASH_LEN]) {
        _cleanup_(json_tokener_freep) json_tokener *tok = json_tokener_new();
        _cleanup_close_ int fd = -1;
        line_reader rd;
        char name[32];
        int r;

        if (!tok)
                return -ENOMEM;
        file_name(no, name);
        fd = openat(a->dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
        if (fd < 0)
                return -errno;
        r = reader_init(&rd, fd);
        if (r < 0)
                return r;
        const char *line, *why;
        uint64_t offset;
        size_t len;
        record_info info;
        r = reader_next(&rd, &line, &len, &offset);
        if (r == LINE_OK)
                r = record_check(&a->key, tok, line, len, &info, &why) == REC_OK ? 0 : -EBADMSG;
        else if (r >= 0)
                r = -ENODATA;
        reader_done(&rd);
        if (r < 0)
                return r;
        *ret_seq = info.seq - 1;
        memcpy(ret_hash, info.prev, HASH_LEN);
        return 0;
}

int audit_prune(audit_log *a, int64_t older_than_s, uint64_t max_bytes, audit_prune_result *ret, agentd_error *err) {
        _cleanup_free_ unsigned *files = NULL;
        _cleanup_free_ struct stat *st = NULL;
        size_t n_files = 0, cut = 0;
        uint64_t total = 0, removed_bytes = 0;
        int r;

        if (!a || !ret)
                return -EINVAL;
        *ret = (audit_prune_result) {};
        r = audit_flush(a);
        if (r < 0)
                return fail(err, r, "audit: cannot flush before pruning: %s", strerror(-r));
        r = list_files(a->dir_fd, &files, &n_files);
        if (r < 0)
                return fail(err, r, "audit: cannot list the log files: %s", strerror(-r));
        st = calloc(n_files ? n_files : 1, sizeof(*st));
        if (!st)
                return -ENOMEM;
        for (size_t i = 0; i < n_files; i++) {
                char name[32];
                file_name(files[i], name);
                if (fstatat(a->dir_fd, name, &st[i], AT_SYMLINK_NOFOLLOW) < 0)
                        return fail(err, -errno, "audit: cannot stat %s: %m", name);
                total += (uint64_t) st[i].st_size;
        }
        /* The oldest files, never the one being written, while too old or too many bytes. */
        while (cut + 1 < n_files && files[cut] != a->file_no &&
               ((older_than_s > 0 && st[cut].st_mtim.tv_sec < older_than_s) || (max_bytes > 0 && total > max_bytes))) {
                total -= (uint64_t) st[cut].st_size;
                removed_bytes += (uint64_t) st[cut].st_size;
                cut++;
        }
        if (cut == 0)
                return 0;

        /* Pruning must not launder a break: the whole chain verifies first. */
        bool ok = false;
        uint64_t bad = 0;
        _cleanup_free_ char *reason = NULL;
        r = audit_verify(a, &ok, NULL, &bad, &reason);
        if (r < 0)
                return fail(err, r, "audit: cannot verify before pruning: %s", strerror(-r));
        if (!ok)
                return fail(err, -EBADMSG, "audit: not pruning a log that does not verify (seq %" PRIu64 ": %s)", bad,
                            reason ? reason : "?");

        uint64_t seq = 0;
        uint8_t hash[HASH_LEN];
        r = first_record_anchor(a, files[cut], &seq, hash);
        if (r < 0)
                return fail(err, r, "audit: cannot read the first record of file %u: %s", files[cut], strerror(-r));
        /* Checkpoint first: a crash between it and the unlinks leaves files that
         * verify skips and the next prune removes, never a log without a start. */
        r = checkpoint_write(a, files[cut], seq, hash);
        if (r < 0)
                return fail(err, r, "audit: cannot write %s: %s", CHECKPOINT_NAME, strerror(-r));
        for (size_t i = 0; i < cut; i++) {
                char name[32];
                file_name(files[i], name);
                if (unlinkat(a->dir_fd, name, 0) < 0 && errno != ENOENT)
                        return fail(err, -errno, "audit: cannot remove %s: %m", name);
        }
        if (fsync(a->dir_fd) < 0)
                return fail(err, -errno, "audit: cannot fsync the audit directory: %m");

        char hex[HEX_LEN + 1];
        hex_encode(hash, HASH_LEN, hex);
        _cleanup_(json_object_putp) struct json_object *f = json_object_new_object();
        if (f) {
                add(f, "files_removed", json_object_new_int64((int64_t) cut));
                add(f, "bytes_removed", json_object_new_int64((int64_t) removed_bytes));
                add(f, "first_file", json_object_new_int64(files[cut]));
                add(f, "first_seq", json_object_new_int64((int64_t) seq + 1));
                add(f, "prev", json_object_new_string(hex));
                (void) audit_append(a, "audit.pruned", NULL, f);
        }
        ret->files_removed = (unsigned) cut;
        ret->bytes_removed = removed_bytes;
        ret->first_seq = seq + 1;
        return 0;
}

/* ---- query ---- */

static bool record_matches(struct json_object *o, const audit_query_opts *q) {
        struct json_object *v;
        uint64_t ms;

        if (!get_member(o, "seq", json_type_int, &v))
                return false;
        if (q->before_seq > 0 && (uint64_t) json_object_get_int64(v) >= q->before_seq)
                return false;
        if (q->sandbox) {
                if (!get_member(o, "sandbox", json_type_string, &v) || !streq(json_object_get_string(v), q->sandbox))
                        return false;
        }
        if (q->since_ms > 0) {
                if (!get_member(o, "time", json_type_string, &v) || !parse_time_ms(json_object_get_string(v), &ms) ||
                    ms < q->since_ms)
                        return false;
        }
        return true;
}

/* The newest matching lines, as written: at most `cap` of them and (when
 * max_bytes is set) at most max_bytes of line text. Only lines are kept while
 * walking, never parsed objects, so memory is bounded by the page, not the log. */
typedef struct line_ring {
        char **line;
        size_t *len;
        size_t cap, first, n, bytes;
        uint64_t dropped;             /* matches that fell out (older than the page) */
} line_ring;

static void ring_drop_oldest(line_ring *g) {
        free(g->line[g->first]);
        g->line[g->first] = NULL;
        g->bytes -= g->len[g->first];
        g->first = (g->first + 1) % g->cap;
        g->n--;
        g->dropped++;
}

static int ring_push(line_ring *g, const char *line, size_t len, size_t max_bytes) {
        char *copy = malloc(len + 1);
        if (!copy)
                return -ENOMEM;
        memcpy(copy, line, len);
        copy[len] = 0;
        if (g->n == g->cap)
                ring_drop_oldest(g);
        size_t at = (g->first + g->n) % g->cap;
        g->line[at] = copy;
        g->len[at] = len;
        g->n++;
        g->bytes += len;
        while (max_bytes > 0 && g->bytes > max_bytes && g->n > 1)
                ring_drop_oldest(g);
        return 0;
}

static void ring_free(line_ring *g) {
        for (size_t i = 0; g->line && i < g->cap; i++)
                free(g->line[i]);
        free(g->line);
        free(g->len);
}

/* The seq a parsed record carries (0: none). */
static uint64_t record_seq(struct json_object *o) {
        struct json_object *v;
        if (!get_member(o, "seq", json_type_int, &v) || json_object_get_int64(v) <= 0)
                return 0;
        return (uint64_t) json_object_get_int64(v);
}

/* The query over the files in dir_fd, reading no record after last_seq (the
 * files are in chain order, so the walk stops at the first one after it). */
static int query_dir(int dir_fd, uint64_t last_seq, const audit_query_opts *q, struct json_object **ret_array,
                     bool *ret_more) {
        _cleanup_(json_tokener_freep) json_tokener *tok = NULL;
        _cleanup_free_ unsigned *files = NULL;
        size_t n_files = 0;
        line_ring g = { 0 };
        bool done = false;
        int r;

        if (!q || !ret_array || q->limit == 0)
                return -EINVAL;
        tok = json_tokener_new();
        g.cap = q->limit;
        g.line = calloc(g.cap, sizeof(*g.line));
        g.len = calloc(g.cap, sizeof(*g.len));
        if (!tok || !g.line || !g.len) {
                ring_free(&g);
                return -ENOMEM;
        }

        r = list_files(dir_fd, &files, &n_files);
        for (size_t i = 0; r >= 0 && !done && i < n_files; i++) {
                _cleanup_close_ int fd = -1;
                line_reader rd;
                char name[32];

                file_name(files[i], name);
                fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
                if (fd < 0)
                        continue;
                r = reader_init(&rd, fd);
                if (r < 0)
                        break;
                for (;;) {
                        const char *line;
                        uint64_t offset;
                        size_t len;

                        r = reader_next(&rd, &line, &len, &offset);
                        if (r < 0 || r == LINE_EOF)
                                break;
                        if (r != LINE_OK)
                                continue;
                        struct json_object *o = parse_line(tok, line, len);
                        if (!o)
                                continue;
                        if (record_seq(o) > last_seq) {
                                json_object_put(o);
                                done = true;
                                break;
                        }
                        bool match = record_matches(o, q);
                        json_object_put(o);
                        if (match && (r = ring_push(&g, line, len, q->max_bytes)) < 0)
                                break;
                }
                reader_done(&rd);
        }

        struct json_object *arr = r >= 0 ? json_object_new_array_ext((int) (g.n > 0 ? g.n : 1)) : NULL;
        if (r >= 0 && !arr)
                r = -ENOMEM;
        for (size_t i = 0; r >= 0 && i < g.n; i++) {
                size_t at = (g.first + i) % g.cap;
                struct json_object *o = parse_line(tok, g.line[at], g.len[at]);
                if (o && json_object_array_add(arr, o) < 0) {
                        json_object_put(o);
                        r = -ENOMEM;
                }
        }
        bool more = g.dropped > 0;
        ring_free(&g);
        if (r < 0) {
                json_object_put(arr);
                return r;
        }
        *ret_array = arr;
        if (ret_more)
                *ret_more = more;
        return 0;
}

int audit_query_page(audit_log *a, const audit_query_opts *q, struct json_object **ret_array, bool *ret_more) {
        if (!a)
                return -EINVAL;
        (void) audit_commit(a, NULL);
        return query_dir(a->dir_fd, UINT64_MAX, q, ret_array, ret_more);
}

/* ---- snapshots: verify and select off the loop ---- */

struct audit_snapshot {
        int dir_fd;
        uint8_t *key_page;
        size_t key_page_size;
        audit_key key;
        anchor mem;
};

int audit_snapshot_new(audit_log *a, audit_snapshot **ret) {
        audit_snapshot *s;
        int r;

        if (!a || !ret)
                return -EINVAL;
        (void) audit_commit(a, NULL);
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->dir_fd = fcntl(a->dir_fd, F_DUPFD_CLOEXEC, 3);
        if (s->dir_fd < 0) {
                free(s);
                return -errno;
        }
        r = key_page_new(a->key.key, a->key.len, &s->key_page, &s->key_page_size);
        if (r < 0) {
                audit_snapshot_free(s);
                return r;
        }
        /* Its own HMAC state too: the worker must not share the log's. */
        r = key_setup(&s->key, s->key_page, s->key_page_size, a->key.len);
        if (r < 0) {
                audit_snapshot_free(s);
                return r;
        }
        s->mem = (anchor) { .set = a->seq > 0, .seq = a->seq };
        memcpy(s->mem.hash, a->last_hash, HASH_LEN);
        *ret = s;
        return 0;
}

void audit_snapshot_free(audit_snapshot *s) {
        if (!s)
                return;
        safe_close(s->dir_fd);
        key_page_free(s->key_page, s->key_page_size);
        free(s);
}

void audit_selection_done(audit_selection *sel) {
        if (!sel)
                return;
        free(sel->reason);
        json_object_put(sel->selected);
        *sel = (audit_selection) {};
}

/* Marks a selected record with what the checks said about it. */
static void selection_mark(struct json_object *o, int rec, uint64_t seq, const audit_selection *sel) {
        const char *problem = NULL;
        char buf[128];

        if (rec == REC_BAD_HMAC)
                problem = "invalid hmac: modified or forged";
        else if (rec != REC_OK)
                problem = "not a valid record";
        else if (!sel->ok && seq >= sel->first_bad_seq) {
                snprintf(buf, sizeof(buf), "after the break in the chain at seq %" PRIu64, sel->first_bad_seq);
                problem = buf;
        }
        json_object_object_add(o, "verified", json_object_new_boolean(!problem));
        if (problem)
                json_object_object_add(o, "problem", json_object_new_string(problem));
}

static int select_file(audit_snapshot *s, json_tokener *tok, unsigned no, uint64_t limit, audit_select_fn fn,
                       void *userdata, audit_selection *sel, bool *ret_done) {
        _cleanup_close_ int fd = -1;
        line_reader rd;
        char name[32];
        int r;

        file_name(no, name);
        fd = openat(s->dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
        if (fd < 0)
                return 0; /* the verdict already says so */
        r = reader_init(&rd, fd);
        if (r < 0)
                return r;
        for (;;) {
                struct json_object *o, *v;
                const char *line, *why;
                record_info info;
                uint64_t offset, seq;
                size_t len;
                int rec;

                r = reader_next(&rd, &line, &len, &offset);
                if (r < 0 || r == LINE_EOF)
                        break;
                if (r != LINE_OK)
                        continue;
                rec = record_check(&s->key, tok, line, len, &info, &why);
                if (rec < 0) {
                        r = rec;
                        break;
                }
                o = parse_line(tok, line, len);
                if (!o)
                        continue;
                if (!get_member(o, "seq", json_type_int, &v) || json_object_get_int64(v) <= 0) {
                        json_object_put(o);
                        continue;
                }
                seq = (uint64_t) json_object_get_int64(v);
                if (seq > limit) {
                        json_object_put(o);
                        *ret_done = true;
                        break;
                }
                if (!fn(o, userdata)) {
                        json_object_put(o);
                        continue;
                }
                selection_mark(o, rec, seq, sel);
                if (json_object_array_add(sel->selected, o) < 0) {
                        json_object_put(o);
                        r = -ENOMEM;
                        break;
                }
        }
        reader_done(&rd);
        return r < 0 ? r : 0;
}

int audit_snapshot_select(audit_snapshot *s, audit_select_fn fn, void *userdata, audit_selection *ret) {
        _cleanup_(json_tokener_freep) json_tokener *tok = NULL;
        _cleanup_free_ unsigned *files = NULL;
        audit_selection sel = {};
        uint8_t head_hash[HASH_LEN];
        uint64_t head_seq = 0;
        size_t n_files = 0;
        bool done = false;
        int r;

        if (!s || !fn || !ret)
                return -EINVAL;
        /* Everything up to the newer of our last write and the head is complete on disk. */
        r = head_read(s->dir_fd, &s->key, &head_seq, head_hash);
        if (r < 0)
                return r;
        sel.last_seq = s->mem.seq;
        if (r == HEAD_OK && head_seq > sel.last_seq)
                sel.last_seq = head_seq;
        r = verify_core(s->dir_fd, &s->key, &s->mem, sel.last_seq > 0 ? sel.last_seq : 0, &sel.ok, &sel.records,
                        &sel.first_bad_seq, &sel.reason);
        if (r < 0)
                return r;
        tok = json_tokener_new();
        sel.selected = json_object_new_array();
        if (!tok || !sel.selected) {
                audit_selection_done(&sel);
                return -ENOMEM;
        }
        r = list_files(s->dir_fd, &files, &n_files);
        for (size_t i = 0; r >= 0 && !done && i < n_files; i++)
                r = select_file(s, tok, files[i], sel.last_seq, fn, userdata, &sel, &done);
        if (r < 0) {
                audit_selection_done(&sel);
                return r;
        }
        *ret = sel;
        return 0;
}

int audit_query(audit_log *a, const char *sandbox, uint64_t since_ms, size_t limit, struct json_object **ret_array) {
        audit_query_opts q = {
                .sandbox = sandbox, .since_ms = since_ms, .limit = limit > 0 ? limit : AUDIT_QUERY_MAX,
                .max_bytes = AUDIT_QUERY_MAX_BYTES,
        };
        return audit_query_page(a, &q, ret_array, NULL);
}

int audit_snapshot_query_page(audit_snapshot *s, const audit_query_opts *q, struct json_object **ret_array,
                              bool *ret_more) {
        if (!s)
                return -EINVAL;
        /* Up to what this process had written when the snapshot was made: the
         * lines after it may be half written while we read. */
        return query_dir(s->dir_fd, s->mem.seq, q, ret_array, ret_more);
}
