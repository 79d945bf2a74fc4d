/* Unit tests for daemon/audit/: the record format and exactly which bytes are
 * hashed and MAC'd, rotation keeping the chain, every kind of tampering named by
 * its exact first bad seq, reopen and crash recovery, query filters, the secret-key
 * guard and the size bound. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "macro.h"
#include "unit.h"

#define N_RECORDS 60
#define ROTATE 2048

static const uint8_t KEY[32] = {
        0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
        0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78, 0x87, 0x96, 0xa5, 0xb4, 0xc3, 0xd2, 0xe1, 0xf0,
};
static const uint8_t WRONG_KEY[32] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                       17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32 };

DEFINE_TRIVIAL_CLEANUP_FUNC(struct json_object *, json_object_put)

static char tmp[64];
static char master[128], copy[128];

/* ---- file helpers ---- */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        return remove(path);
}

static void setup(void) {
        snprintf(tmp, sizeof(tmp), "/tmp/test-audit-XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(tmp));
        snprintf(master, sizeof(master), "%s/master", tmp);
        snprintf(copy, sizeof(copy), "%s/copy", tmp);
}

static void teardown(void) {
        (void) nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static char *read_all(const char *path, size_t *ret_len) {
        FILE *f = fopen(path, "re");
        char *buf = NULL;
        size_t cap = 0, n = 0;

        ck_assert_msg(f, "open %s: %m", path);
        for (;;) {
                if (n + 4096 > cap) {
                        cap = cap ? cap * 2 : 8192;
                        buf = realloc(buf, cap + 1);
                        ck_assert_ptr_nonnull(buf);
                }
                size_t k = fread(buf + n, 1, cap - n, f);
                n += k;
                if (k == 0)
                        break;
        }
        fclose(f);
        buf[n] = 0;
        if (ret_len)
                *ret_len = n;
        return buf;
}

static void write_all_file(const char *path, const char *p, size_t n) {
        FILE *f = fopen(path, "we");
        ck_assert_msg(f, "open %s: %m", path);
        ck_assert_uint_eq(fwrite(p, 1, n, f), n);
        ck_assert_int_eq(fclose(f), 0);
}

static void append_file(const char *path, const char *p) {
        int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(write(fd, p, strlen(p)), (ssize_t) strlen(p));
        close(fd);
}

static void copy_dir(const char *src, const char *dst) {
        (void) nftw(dst, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        ck_assert_int_eq(mkdir(dst, 0700), 0);
        for (unsigned no = 1; no < 1000; no++) {
                char s[256], d[256];
                snprintf(s, sizeof(s), "%s/audit-%06u.jsonl", src, no);
                if (access(s, F_OK) < 0)
                        continue; /* a pruned log starts later */
                snprintf(d, sizeof(d), "%s/audit-%06u.jsonl", dst, no);
                size_t n;
                _cleanup_free_ char *c = read_all(s, &n);
                write_all_file(d, c, n);
        }
        char s[256], d[256];
        snprintf(s, sizeof(s), "%s/audit.head", src);
        snprintf(d, sizeof(d), "%s/audit.head", dst);
        size_t n;
        _cleanup_free_ char *c = read_all(s, &n);
        write_all_file(d, c, n);
        snprintf(s, sizeof(s), "%s/audit.checkpoint", src);
        snprintf(d, sizeof(d), "%s/audit.checkpoint", dst);
        if (access(s, F_OK) == 0) {
                _cleanup_free_ char *cp = read_all(s, &n);
                write_all_file(d, cp, n);
        }
}

/* ---- the log's files as lines, for tampering ---- */

typedef struct lfile {
        unsigned no;
        char *lines[512];
        size_t n;
} lfile;

typedef struct lset {
        lfile f[256];
        size_t n;
} lset;

static void lset_load(const char *dir, lset *s) {
        memset(s, 0, sizeof(*s));
        for (unsigned no = 1; no < 1000; no++) {
                char p[256];
                snprintf(p, sizeof(p), "%s/audit-%06u.jsonl", dir, no);
                if (access(p, F_OK) < 0)
                        continue;
                lfile *f = &s->f[s->n++];
                f->no = no;
                _cleanup_free_ char *c = read_all(p, NULL);
                char *save = NULL;
                for (char *l = strtok_r(c, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
                        ck_assert_uint_lt(f->n, ELEMENTSOF(f->lines));
                        f->lines[f->n++] = strdup(l);
                }
        }
}

static void lset_store(const char *dir, lset *s) {
        for (size_t i = 0; i < s->n; i++) {
                char p[256];
                snprintf(p, sizeof(p), "%s/audit-%06u.jsonl", dir, s->f[i].no);
                FILE *f = fopen(p, "we");
                ck_assert_ptr_nonnull(f);
                for (size_t j = 0; j < s->f[i].n; j++)
                        fprintf(f, "%s\n", s->f[i].lines[j]);
                ck_assert_int_eq(fclose(f), 0);
        }
}

static void lset_free(lset *s) {
        for (size_t i = 0; i < s->n; i++)
                for (size_t j = 0; j < s->f[i].n; j++)
                        free(s->f[i].lines[j]);
        s->n = 0;
}

static uint64_t line_seq(const char *l) {
        ck_assert_int_eq(strncmp(l, "{\"seq\":", 7), 0);
        return strtoull(l + 7, NULL, 10);
}

static char **lset_find(lset *s, uint64_t seq) {
        for (size_t i = 0; i < s->n; i++)
                for (size_t j = 0; j < s->f[i].n; j++)
                        if (line_seq(s->f[i].lines[j]) == seq)
                                return &s->f[i].lines[j];
        ck_abort_msg("seq %" PRIu64 " not found", seq);
        return NULL;
}

static void lset_delete(lset *s, uint64_t seq) {
        for (size_t i = 0; i < s->n; i++)
                for (size_t j = 0; j < s->f[i].n; j++)
                        if (line_seq(s->f[i].lines[j]) == seq) {
                                free(s->f[i].lines[j]);
                                memmove(&s->f[i].lines[j], &s->f[i].lines[j + 1],
                                        (s->f[i].n - j - 1) * sizeof(char *));
                                s->f[i].n--;
                                return;
                        }
        ck_abort_msg("seq %" PRIu64 " not found", seq);
}

static void hexify(const uint8_t *p, size_t n, char *out) {
        for (size_t i = 0; i < n; i++)
                sprintf(out + 2 * i, "%02x", p[i]);
}

static void sha256_hex(const char *p, size_t n, char out[65]) {
        uint8_t h[32];
        unsigned l = 0;
        ck_assert_int_eq(EVP_Digest(p, n, h, &l, EVP_sha256(), NULL), 1);
        hexify(h, 32, out);
}

/* What audit.h documents: HMAC-SHA256 over the line minus its 75-byte hmac suffix, plus '}'. */
static void record_hmac_hex(const uint8_t *key, const char *line, char out[65]) {
        size_t len = strlen(line);
        ck_assert_uint_gt(len, 75);
        _cleanup_free_ char *u = strndup(line, len - 75 + 1);
        u[len - 75] = '}';
        uint8_t mac[32];
        unsigned ml = 0;
        ck_assert_ptr_nonnull(HMAC(EVP_sha256(), key, 32, (const uint8_t *) u, len - 74, mac, &ml));
        hexify(mac, 32, out);
}

/* Re-signs a line with `key`, keeping everything else. */
static char *resign(const uint8_t *key, const char *line) {
        char mac[65];
        record_hmac_hex(key, line, mac);
        size_t len = strlen(line);
        char *n = strdup(line);
        memcpy(n + len - 66, mac, 64);
        return n;
}

static void set_prev(char **line, const char *prev_hex) {
        char *p = strstr(*line, ",\"prev\":\"");
        ck_assert_ptr_nonnull(p);
        memcpy(p + 9, prev_hex, 64);
}

/* ---- building logs ---- */

static const char *sandbox_of(int i) {
        return i % 3 == 0 ? "sb1" : i % 3 == 1 ? "sb2" : NULL;
}

static void append_n(audit_log *a, int from, int to) {
        for (int i = from; i <= to; i++) {
                _cleanup_(json_object_putp) struct json_object *f = json_object_new_object();
                json_object_object_add(f, "n", json_object_new_int(i));
                json_object_object_add(f, "method", json_object_new_string("sandbox.list"));
                struct json_object *argv = json_object_new_array();
                json_object_array_add(argv, json_object_new_string("make"));
                json_object_array_add(argv, json_object_new_string("-j4 /path/with/slash"));
                json_object_object_add(f, "argv", argv);
                ck_assert_int_eq(audit_append(a, "rpc", sandbox_of(i), f), 0);
        }
}

static audit_log *open_log(const char *dir) {
        audit_options opt = { .rotate_bytes = ROTATE, .no_journal = true };
        _cleanup_error_ agentd_error err = {};
        audit_log *a = NULL;
        int r = audit_open(dir, KEY, sizeof(KEY), &opt, &a, &err);
        ck_assert_msg(r == 0, "audit_open: %d %s", r, error_message(&err));
        ck_assert_ptr_nonnull(a);
        return a;
}

static void build(const char *dir, int n) {
        audit_log *a = open_log(dir);
        append_n(a, 1, n);
        ck_assert_int_eq(audit_seq(a), n);
        audit_close(a);
}

static void expect_ok(const char *dir, uint64_t records) {
        bool ok = false;
        uint64_t n = 0, bad = 0;
        _cleanup_free_ char *reason = NULL;
        ck_assert_int_eq(audit_verify_dir(dir, KEY, sizeof(KEY), &ok, &n, &bad, &reason), 0);
        ck_assert_msg(ok, "verify failed at %" PRIu64 ": %s", bad, reason);
        ck_assert_uint_eq(n, records);
        ck_assert_ptr_null(reason);
}

static void expect_bad(const char *dir, uint64_t first_bad, const char *reason_part) {
        bool ok = true;
        uint64_t n = 0, bad = 0;
        _cleanup_free_ char *reason = NULL;
        ck_assert_int_eq(audit_verify_dir(dir, KEY, sizeof(KEY), &ok, &n, &bad, &reason), 0);
        ck_assert_msg(!ok, "tampering not detected");
        ck_assert_ptr_nonnull(reason);
        ck_assert_msg(bad == first_bad, "first bad seq %" PRIu64 ", expected %" PRIu64 " (%s)", bad, first_bad,
                      reason);
        ck_assert_msg(!reason_part || strstr(reason, reason_part), "reason '%s' lacks '%s'", reason, reason_part);
        ck_assert_uint_lt(n, first_bad);
}

/* The master log, and a fresh copy to tamper with. */
static void master_and_copy(lset *s) {
        build(master, N_RECORDS);
        expect_ok(master, N_RECORDS);
        copy_dir(master, copy);
        expect_ok(copy, N_RECORDS);
        lset_load(copy, s);
        ck_assert_uint_ge(s->n, 5);
}

static void path_of(char *buf, size_t size, const char *dir, unsigned no) {
        snprintf(buf, size, "%s/audit-%06u.jsonl", dir, no);
}

/* ---- tests ---- */

/* ---- group commit ---- */

static void append_deferred_n(audit_log *a, int from, int to) {
        for (int i = from; i <= to; i++) {
                _cleanup_(json_object_putp) struct json_object *f = json_object_new_object();
                json_object_object_add(f, "n", json_object_new_int(i));
                json_object_object_add(f, "method", json_object_new_string("agentd.ping"));
                ck_assert_int_eq(audit_append_deferred(a, "rpc", sandbox_of(i), f), 0);
        }
}

static size_t lines_on_disk(const char *dir) {
        lset s;
        size_t n = 0;
        lset_load(dir, &s);
        for (size_t i = 0; i < s.n; i++)
                n += s.f[i].n;
        lset_free(&s);
        return n;
}

/* A batch of records is chained in memory, written by one commit (rotating
 * between records where it must) and verifies like records appended one by one. */
START_TEST(test_batch_commit) {
        audit_log *a = open_log(master);
        size_t lost = 99;

        append_n(a, 1, 3);
        append_deferred_n(a, 4, N_RECORDS);
        ck_assert_uint_eq(audit_pending(a), N_RECORDS - 3);
        ck_assert_uint_eq(audit_seq(a), N_RECORDS);
        /* Nothing of the batch is in the files yet. */
        ck_assert_uint_eq(lines_on_disk(master), 3);

        ck_assert_int_eq(audit_commit(a, &lost), 0);
        ck_assert_uint_eq(lost, 0);
        ck_assert_uint_eq(audit_pending(a), 0);
        ck_assert_uint_eq(lines_on_disk(master), N_RECORDS);
        ck_assert_int_eq(audit_commit(a, &lost), 0);   /* empty: nothing to do */

        /* Rotation inside the batch kept every full file within rotate_bytes. */
        lset s;
        lset_load(master, &s);
        ck_assert_uint_ge(s.n, 3);
        for (size_t i = 0; i + 1 < s.n; i++) {
                char p[256];
                struct stat st;
                path_of(p, sizeof(p), master, s.f[i].no);
                ck_assert_int_eq(stat(p, &st), 0);
                ck_assert_uint_le(st.st_size, ROTATE);
        }
        lset_free(&s);

        /* An immediate append after deferred ones writes them first, in chain order. */
        append_deferred_n(a, N_RECORDS + 1, N_RECORDS + 2);
        append_n(a, N_RECORDS + 3, N_RECORDS + 3);
        ck_assert_uint_eq(audit_pending(a), 0);
        ck_assert_uint_eq(lines_on_disk(master), N_RECORDS + 3);

        /* Pending records are committed by verify (and flush, query, close). */
        append_deferred_n(a, N_RECORDS + 4, N_RECORDS + 5);
        bool ok = false;
        uint64_t n = 0;
        ck_assert_int_eq(audit_verify(a, &ok, &n, NULL, NULL), 0);
        ck_assert(ok);
        ck_assert_uint_eq(n, N_RECORDS + 5);
        append_deferred_n(a, N_RECORDS + 6, N_RECORDS + 6);
        audit_close(a);
        expect_ok(master, N_RECORDS + 6);
}
END_TEST

/* A batch that cannot be written is reported: the error, how many records were
 * dropped, no partial line left behind, and the chain goes on from the file. */
START_TEST(test_batch_write_failure) {
        audit_options opt = { .rotate_bytes = 1u << 20, .no_journal = true };
        _cleanup_error_ agentd_error err = {};
        audit_log *a = NULL;
        struct rlimit old, lim;
        struct stat st;
        char p[256];
        size_t lost = 0;

        ck_assert_int_eq(audit_open(master, KEY, sizeof(KEY), &opt, &a, &err), 0);
        append_n(a, 1, 2);
        path_of(p, sizeof(p), master, 1);
        ck_assert_int_eq(stat(p, &st), 0);
        off_t before = st.st_size;

        /* Room for one and a half more records: the batch of five does not fit. */
        signal(SIGXFSZ, SIG_IGN);
        ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
        lim = old;
        lim.rlim_cur = (rlim_t) (before + before / 2 + before / 4);
        ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
        append_deferred_n(a, 3, 7);
        ck_assert_uint_eq(audit_seq(a), 7);
        int r = audit_commit(a, &lost);
        ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
        signal(SIGXFSZ, SIG_DFL);

        ck_assert_int_eq(r, -EFBIG);
        ck_assert_uint_eq(lost, 5);
        ck_assert_uint_eq(audit_pending(a), 0);
        ck_assert_uint_eq(audit_seq(a), 2);
        ck_assert_int_eq(stat(p, &st), 0);
        ck_assert_int_eq(st.st_size, before);   /* no torn line left behind */

        /* Writing works again: the chain continues from seq 2. */
        append_deferred_n(a, 3, 4);
        ck_assert_int_eq(audit_commit(a, &lost), 0);
        ck_assert_uint_eq(audit_seq(a), 4);
        audit_close(a);
        expect_ok(master, 4);
}
END_TEST

START_TEST(test_format_and_rotation) {
        lset s;
        char p[256];
        struct stat st;

        build(master, N_RECORDS);
        expect_ok(master, N_RECORDS);
        lset_load(master, &s);
        ck_assert_uint_ge(s.n, 5);

        ck_assert_int_eq(stat(master, &st), 0);
        ck_assert_int_eq(st.st_mode & 07777, 0700);

        char prev[65];
        memset(prev, '0', 64);
        prev[64] = 0;
        uint64_t expect = 1;
        for (size_t i = 0; i < s.n; i++) {
                path_of(p, sizeof(p), master, s.f[i].no);
                ck_assert_int_eq(stat(p, &st), 0);
                ck_assert_int_eq(st.st_mode & 07777, 0600);
                /* Every file but the last stays at or below rotate_bytes. */
                if (i + 1 < s.n)
                        ck_assert_uint_le(st.st_size, ROTATE);
                for (size_t j = 0; j < s.f[i].n; j++, expect++) {
                        const char *l = s.f[i].lines[j];
                        char want[128], mac[65], hash[65];

                        ck_assert_uint_eq(line_seq(l), expect);
                        /* Fixed member order. */
                        snprintf(want, sizeof(want), "{\"seq\":%" PRIu64 ",\"time\":\"", expect);
                        ck_assert_int_eq(strncmp(l, want, strlen(want)), 0);
                        ck_assert_ptr_nonnull(strstr(l, "Z\",\"type\":\"rpc\",\"sandbox\":"));
                        /* time: UTC with microseconds, 2026-11-24T19:21:12.123456Z */
                        const char *t = strstr(l, "\"time\":\"") + 8;
                        ck_assert_int_eq(t[4], '-');
                        ck_assert_int_eq(t[10], 'T');
                        ck_assert_int_eq(t[19], '.');
                        ck_assert_int_eq(t[26], 'Z');
                        ck_assert_int_eq(t[27], '"');
                        ck_assert_ptr_nonnull(strstr(l, ",\"fields\":{\"n\":"));
                        ck_assert_ptr_nonnull(strstr(l, "\"-j4 /path/with/slash\""));
                        /* prev: SHA-256 of the previous line as written, across file boundaries. */
                        snprintf(want, sizeof(want), ",\"prev\":\"%s\",\"hmac\":\"", prev);
                        ck_assert_msg(strstr(l, want), "seq %" PRIu64 " does not chain", expect);
                        /* hmac: over the documented bytes. */
                        record_hmac_hex(KEY, l, mac);
                        snprintf(want, sizeof(want), ",\"hmac\":\"%s\"}", mac);
                        ck_assert_str_eq(l + strlen(l) - strlen(want), want);
                        sha256_hex(l, strlen(l), hash);
                        memcpy(prev, hash, 65);
                }
        }
        ck_assert_uint_eq(expect - 1, N_RECORDS);

        /* The head vouches for the last record. */
        snprintf(p, sizeof(p), "%s/audit.head", master);
        _cleanup_free_ char *head = read_all(p, NULL);
        char want[256];
        snprintf(want, sizeof(want), "{\"audit_head\":1,\"seq\":%d,\"hash\":\"%s\",\"hmac\":\"", N_RECORDS, prev);
        ck_assert_int_eq(strncmp(head, want, strlen(want)), 0);
        lset_free(&s);
}
END_TEST

START_TEST(test_tamper_modify) {
        lset s;
        master_and_copy(&s);
        char **l = lset_find(&s, 25);
        char *p = strstr(*l, "\"n\":25");
        ck_assert_ptr_nonnull(p);
        p[5] = '6';
        lset_store(copy, &s);
        expect_bad(copy, 25, "hmac");
        expect_ok(master, N_RECORDS);
        lset_free(&s);
}
END_TEST

START_TEST(test_tamper_delete_record) {
        lset s;
        master_and_copy(&s);
        lset_delete(&s, 25);
        lset_store(copy, &s);
        /* The seq after the gap. */
        expect_bad(copy, 26, "expected");
        lset_free(&s);
}
END_TEST

START_TEST(test_tamper_reorder) {
        lset s;
        master_and_copy(&s);
        /* Two records of the same file, and two across a file boundary. */
        char **a = lset_find(&s, 30), **b = lset_find(&s, 31);
        char *t = *a;
        *a = *b;
        *b = t;
        lset_store(copy, &s);
        /* The first record found out of place. */
        expect_bad(copy, 31, "reordered");

        lset_free(&s);
        copy_dir(master, copy);
        lset_load(copy, &s);
        uint64_t last1 = line_seq(s.f[1].lines[s.f[1].n - 1]);
        a = lset_find(&s, last1);
        b = lset_find(&s, last1 + 1);
        t = *a;
        *a = *b;
        *b = t;
        lset_store(copy, &s);
        expect_bad(copy, last1 + 1, "reordered");
        lset_free(&s);
}
END_TEST

START_TEST(test_tamper_truncate_last) {
        lset s;
        char p[256];

        /* The whole last line removed: only audit.head knows it existed. */
        master_and_copy(&s);
        lset_delete(&s, N_RECORDS);
        lset_store(copy, &s);
        expect_bad(copy, N_RECORDS, "removed from the end");

        /* Cut in the middle of the last line. */
        copy_dir(master, copy);
        path_of(p, sizeof(p), copy, s.f[s.n - 1].no);
        size_t n;
        _cleanup_free_ char *c = read_all(p, &n);
        ck_assert_ptr_nonnull(c);
        ck_assert_int_eq(truncate(p, (off_t) (n - 40)), 0);
        expect_bad(copy, N_RECORDS, "torn");
        lset_free(&s);
}
END_TEST

START_TEST(test_tamper_delete_last_file) {
        lset s;
        char p[256];

        master_and_copy(&s);
        uint64_t first_of_last = line_seq(s.f[s.n - 1].lines[0]);
        path_of(p, sizeof(p), copy, s.f[s.n - 1].no);
        ck_assert_int_eq(unlink(p), 0);
        expect_bad(copy, first_of_last, "removed from the end");
        lset_free(&s);
}
END_TEST

START_TEST(test_tamper_delete_middle_file) {
        lset s;
        char p[256];

        master_and_copy(&s);
        uint64_t first_after = line_seq(s.f[3].lines[0]);
        path_of(p, sizeof(p), copy, s.f[2].no);
        ck_assert_int_eq(unlink(p), 0);
        expect_bad(copy, first_after, "expected");

        /* The first file. */
        copy_dir(master, copy);
        path_of(p, sizeof(p), copy, s.f[0].no);
        ck_assert_int_eq(unlink(p), 0);
        expect_bad(copy, line_seq(s.f[1].lines[0]), "expected");
        lset_free(&s);
}
END_TEST

START_TEST(test_tamper_forge) {
        lset s;
        char hash[65];

        /* Modify record 25, re-MAC it with a wrong key and fix record 26's prev to the
         * new SHA-256: the chain of hashes is consistent again, the hmac is not. */
        master_and_copy(&s);
        char **l = lset_find(&s, 25);
        char *p = strstr(*l, "\"n\":25");
        p[5] = '6';
        char *forged = resign(WRONG_KEY, *l);
        free(*l);
        *l = forged;
        sha256_hex(forged, strlen(forged), hash);
        set_prev(lset_find(&s, 26), hash);
        lset_store(copy, &s);
        expect_bad(copy, 25, "hmac");
        lset_free(&s);

        /* A record appended at the end: right seq, right prev, wrong key. */
        copy_dir(master, copy);
        lset_load(copy, &s);
        char *last = *lset_find(&s, N_RECORDS);
        sha256_hex(last, strlen(last), hash);
        char *n = strdup(last);
        char *q = strstr(n, ",\"time\"");
        char buf[4096];
        snprintf(buf, sizeof(buf), "{\"seq\":%d%s", N_RECORDS + 1, q);
        free(n);
        char *nl = strdup(buf);
        set_prev(&nl, hash);
        lfile *f = &s.f[s.n - 1];
        f->lines[f->n++] = resign(WRONG_KEY, nl);
        lset_store(copy, &s);
        expect_bad(copy, N_RECORDS + 1, "hmac");

        /* The same record signed with the right key passes (audit.head still says
         * N_RECORDS: the chain just goes further), so the key alone made the difference. */
        free(f->lines[f->n - 1]);
        f->lines[f->n - 1] = resign(KEY, nl);
        free(nl);
        lset_store(copy, &s);
        expect_ok(copy, N_RECORDS + 1);
        lset_free(&s);
}
END_TEST

START_TEST(test_tamper_head) {
        lset s;
        char p[256], hash[65];

        master_and_copy(&s);
        snprintf(p, sizeof(p), "%s/audit.head", copy);

        /* Hide a truncation by rewinding the head: the head's hmac gives it away. */
        lset_delete(&s, N_RECORDS);
        lset_store(copy, &s);
        char *l = *lset_find(&s, N_RECORDS - 1);
        sha256_hex(l, strlen(l), hash);
        _cleanup_free_ char *head = read_all(p, NULL);
        char *mac = strstr(head, ",\"hmac\":\"");
        ck_assert_ptr_nonnull(mac);
        char forged[512];
        snprintf(forged, sizeof(forged), "{\"audit_head\":1,\"seq\":%d,\"hash\":\"%s\"%s", N_RECORDS - 1, hash, mac);
        write_all_file(p, forged, strlen(forged));
        expect_bad(copy, N_RECORDS, "audit.head is not valid");

        /* Only the head edited: the records are fine, the tail cannot be vouched for. */
        copy_dir(master, copy);
        _cleanup_free_ char *h2 = read_all(p, NULL);
        char *d = strstr(h2, "\"hash\":\"") + 8;
        *d = *d == 'a' ? 'b' : 'a';
        write_all_file(p, h2, strlen(h2));
        expect_bad(copy, N_RECORDS + 1, "audit.head is not valid");

        /* Removed. */
        ck_assert_int_eq(unlink(p), 0);
        expect_bad(copy, N_RECORDS + 1, "audit.head is missing");
        lset_free(&s);
}
END_TEST

START_TEST(test_reopen_continues) {
        lset s;
        char hash[65];

        build(master, 10);
        audit_log *a = open_log(master);
        ck_assert_uint_eq(audit_seq(a), 10);
        append_n(a, 11, 15);
        ck_assert_uint_eq(audit_seq(a), 15);

        bool ok = false;
        uint64_t n = 0, bad = 0;
        char *reason = NULL;
        ck_assert_int_eq(audit_verify(a, &ok, &n, &bad, &reason), 0);
        ck_assert_msg(ok, "%s", reason);
        ck_assert_uint_eq(n, 15);
        audit_close(a);
        expect_ok(master, 15);

        lset_load(master, &s);
        char *l10 = *lset_find(&s, 10);
        sha256_hex(l10, strlen(l10), hash);
        ck_assert_ptr_nonnull(strstr(*lset_find(&s, 11), hash));
        lset_free(&s);

        /* No recovery records for a clean close. */
        a = open_log(master);
        _cleanup_(json_object_putp) struct json_object *q = NULL;
        ck_assert_int_eq(audit_query(a, NULL, 0, 0, &q), 0);
        ck_assert_uint_eq(json_object_array_length(q), 15);
        audit_close(a);
}
END_TEST

START_TEST(test_torn_line) {
        char p[256];
        lset s;

        build(master, 10);
        lset_load(master, &s);
        path_of(p, sizeof(p), master, s.f[s.n - 1].no);
        size_t before;
        free(read_all(p, &before));
        /* A crash halfway through writing record 11. */
        append_file(p, "{\"seq\":11,\"time\":\"2026-11-24T19:2");

        /* Verify names it... */
        expect_bad(master, 11, "torn");

        /* ...and so does open: the torn bytes leave the file and a record says what they were. */
        audit_log *a = open_log(master);
        ck_assert_uint_eq(audit_seq(a), 11);
        _cleanup_(json_object_putp) struct json_object *q = NULL;
        ck_assert_int_eq(audit_query(a, NULL, 0, 1, &q), 0);
        ck_assert_uint_eq(json_object_array_length(q), 1);
        struct json_object *r = json_object_array_get_idx(q, 0), *f, *v;
        ck_assert(json_object_object_get_ex(r, "type", &v));
        ck_assert_str_eq(json_object_get_string(v), "audit.recovered");
        ck_assert(json_object_object_get_ex(r, "seq", &v));
        ck_assert_int_eq(json_object_get_int64(v), 11);
        ck_assert(json_object_object_get_ex(r, "fields", &f));
        ck_assert(json_object_object_get_ex(f, "reason", &v));
        ck_assert_str_eq(json_object_get_string(v), "torn");
        ck_assert(json_object_object_get_ex(f, "claimed_seq", &v));
        ck_assert_int_eq(json_object_get_int64(v), 11);
        ck_assert(json_object_object_get_ex(f, "offset", &v));
        ck_assert_int_eq(json_object_get_int64(v), (int64_t) before);
        ck_assert(json_object_object_get_ex(f, "length", &v));
        ck_assert_int_eq(json_object_get_int64(v), 33);
        ck_assert(json_object_object_get_ex(f, "file", &v));
        ck_assert_ptr_nonnull(strstr(p, json_object_get_string(v)));

        append_n(a, 12, 13);
        bool ok = false;
        uint64_t n = 0, bad = 0;
        char *reason = NULL;
        ck_assert_int_eq(audit_verify(a, &ok, &n, &bad, &reason), 0);
        ck_assert_msg(ok, "%s", reason);
        ck_assert_uint_eq(n, 13);
        audit_close(a);
        expect_ok(master, 13);
        lset_free(&s);
}
END_TEST

START_TEST(test_truncated_while_down) {
        lset s;

        build(master, 20);
        lset_load(master, &s);
        lset_delete(&s, 20);
        lset_delete(&s, 19);
        lset_store(master, &s);
        lset_free(&s);
        expect_bad(master, 19, "removed from the end");

        /* Open continues after the head, so the hole stays visible; a record says so. */
        audit_log *a = open_log(master);
        ck_assert_uint_eq(audit_seq(a), 21);
        _cleanup_(json_object_putp) struct json_object *q = NULL;
        ck_assert_int_eq(audit_query(a, NULL, 0, 1, &q), 0);
        struct json_object *f, *v;
        ck_assert(json_object_object_get_ex(json_object_array_get_idx(q, 0), "fields", &f));
        ck_assert(json_object_object_get_ex(f, "reason", &v));
        ck_assert_str_eq(json_object_get_string(v), "truncated");
        ck_assert(json_object_object_get_ex(f, "missing_from", &v));
        ck_assert_int_eq(json_object_get_int64(v), 19);
        ck_assert(json_object_object_get_ex(f, "missing_to", &v));
        ck_assert_int_eq(json_object_get_int64(v), 20);

        bool ok = true;
        uint64_t n = 0, bad = 0;
        _cleanup_free_ char *reason = NULL;
        ck_assert_int_eq(audit_verify(a, &ok, &n, &bad, &reason), 0);
        ck_assert(!ok);
        ck_assert_uint_eq(bad, 21);
        audit_close(a);
}
END_TEST

START_TEST(test_live_tamper) {
        lset s;

        audit_log *a = open_log(master);
        append_n(a, 1, 20);
        ck_assert_int_eq(audit_flush(a), 0);
        append_n(a, 21, 25);
        /* Not flushed: audit.head still says 20, only the open log knows about 25. */
        lset_load(master, &s);
        lset_delete(&s, 25);
        lset_store(master, &s);
        lset_free(&s);

        bool ok = true;
        uint64_t n = 0, bad = 0;
        char *reason = NULL;
        ck_assert_int_eq(audit_verify(a, &ok, &n, &bad, &reason), 0);
        ck_assert(!ok);
        ck_assert_uint_eq(bad, 25);
        ck_assert_uint_eq(n, 24);
        ck_assert_ptr_nonnull(strstr(reason, "this daemon"));
        free(reason);
        audit_close(a);
}
END_TEST

START_TEST(test_query) {
        audit_log *a = open_log(master);
        struct timespec ts;

        append_n(a, 1, 30);
        usleep(5000);
        ck_assert_int_eq(clock_gettime(CLOCK_REALTIME, &ts), 0);
        uint64_t since = (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
        append_n(a, 31, 35);

        struct json_object *q = NULL, *v;
        ck_assert_int_eq(audit_query(a, NULL, 0, 0, &q), 0);
        ck_assert_uint_eq(json_object_array_length(q), 35);
        for (size_t i = 0; i < 35; i++) {
                ck_assert(json_object_object_get_ex(json_object_array_get_idx(q, i), "seq", &v));
                ck_assert_int_eq(json_object_get_int64(v), (int64_t) i + 1);
        }
        json_object_put(q);

        /* By sandbox. */
        ck_assert_int_eq(audit_query(a, "sb1", 0, 0, &q), 0);
        ck_assert_uint_eq(json_object_array_length(q), 11);       /* 3, 6, ..., 33 */
        for (size_t i = 0; i < json_object_array_length(q); i++) {
                ck_assert(json_object_object_get_ex(json_object_array_get_idx(q, i), "sandbox", &v));
                ck_assert_str_eq(json_object_get_string(v), "sb1");
        }
        json_object_put(q);

        /* The last N, newest last. */
        ck_assert_int_eq(audit_query(a, NULL, 0, 3, &q), 0);
        ck_assert_uint_eq(json_object_array_length(q), 3);
        for (size_t i = 0; i < 3; i++) {
                ck_assert(json_object_object_get_ex(json_object_array_get_idx(q, i), "seq", &v));
                ck_assert_int_eq(json_object_get_int64(v), 33 + (int64_t) i);
        }
        json_object_put(q);
        ck_assert_int_eq(audit_query(a, "sb2", 0, 2, &q), 0);
        ck_assert_uint_eq(json_object_array_length(q), 2);
        ck_assert(json_object_object_get_ex(json_object_array_get_idx(q, 1), "seq", &v));
        ck_assert_int_eq(json_object_get_int64(v), 34);
        json_object_put(q);
        ck_assert_int_eq(audit_query(a, NULL, 0, 100, &q), 0);
        ck_assert_uint_eq(json_object_array_length(q), 35);
        json_object_put(q);

        /* Since. */
        ck_assert_int_eq(audit_query(a, NULL, since, 0, &q), 0);
        ck_assert_uint_eq(json_object_array_length(q), 5);
        ck_assert(json_object_object_get_ex(json_object_array_get_idx(q, 0), "seq", &v));
        ck_assert_int_eq(json_object_get_int64(v), 31);
        json_object_put(q);
        ck_assert_int_eq(audit_query(a, "sb1", since, 0, &q), 0);
        ck_assert_uint_eq(json_object_array_length(q), 1);       /* 33 */
        json_object_put(q);
        ck_assert_int_eq(audit_query(a, "nope", 0, 0, &q), 0);
        ck_assert_uint_eq(json_object_array_length(q), 0);
        json_object_put(q);
        audit_close(a);
}
END_TEST

START_TEST(test_query_page_bounded) {
        audit_log *a = open_log(master);
        append_n(a, 1, 40);

        struct json_object *q = NULL, *v;
        bool more = false;
        /* limit 0 is refused, never "everything". */
        audit_query_opts o = { .limit = 0 };
        ck_assert_int_eq(audit_query_page(a, &o, &q, &more), -EINVAL);

        /* A cursor walks back page by page, contiguous, to the start. */
        uint64_t before = 0, expect_last = 40;
        for (int page = 0; page < 4; page++) {
                o = (audit_query_opts) { .limit = 10, .before_seq = before };
                ck_assert_int_eq(audit_query_page(a, &o, &q, &more), 0);
                ck_assert_uint_eq(json_object_array_length(q), 10);
                ck_assert(json_object_object_get_ex(json_object_array_get_idx(q, 9), "seq", &v));
                ck_assert_int_eq(json_object_get_int64(v), (int64_t) expect_last);
                ck_assert(json_object_object_get_ex(json_object_array_get_idx(q, 0), "seq", &v));
                before = (uint64_t) json_object_get_int64(v);
                ck_assert(more == (page < 3));
                expect_last -= 10;
                json_object_put(q);
        }
        /* A byte bound keeps the newest lines that fit, at least one. */
        o = (audit_query_opts) { .limit = 1000, .max_bytes = 1000 };
        ck_assert_int_eq(audit_query_page(a, &o, &q, &more), 0);
        size_t n = json_object_array_length(q);
        ck_assert_uint_ge(n, 1);
        ck_assert_uint_lt(n, 10);
        ck_assert(more);
        ck_assert(json_object_object_get_ex(json_object_array_get_idx(q, n - 1), "seq", &v));
        ck_assert_int_eq(json_object_get_int64(v), 40);
        json_object_put(q);
        o = (audit_query_opts) { .limit = 1000, .max_bytes = 1 };
        ck_assert_int_eq(audit_query_page(a, &o, &q, &more), 0);
        ck_assert_uint_eq(json_object_array_length(q), 1);
        json_object_put(q);
        audit_close(a);
}
END_TEST

static unsigned count_files(const char *dir) {
        lset s;
        lset_load(dir, &s);
        unsigned n = (unsigned) s.n;
        lset_free(&s);
        return n;
}

START_TEST(test_prune_keeps_chain_verifiable) {
        build(master, N_RECORDS);
        unsigned before = count_files(master);
        ck_assert_uint_ge(before, 5);

        audit_log *a = open_log(master);
        audit_prune_result res;
        _cleanup_error_ agentd_error err = {};
        /* Nothing is old enough and there is no byte bound: nothing goes. */
        ck_assert_int_eq(audit_prune(a, 1, 0, &res, &err), 0);
        ck_assert_uint_eq(res.files_removed, 0);
        /* A byte bound removes the oldest files, never the current one. */
        ck_assert_int_eq(audit_prune(a, 0, 3 * ROTATE, &res, &err), 0);
        ck_assert_uint_ge(res.files_removed, 1);
        ck_assert_uint_gt(res.first_seq, 1);
        ck_assert_uint_lt(count_files(master), before);
        bool ok = false;
        uint64_t n = 0, bad = 0;
        _cleanup_free_ char *reason = NULL;
        ck_assert_int_eq(audit_verify(a, &ok, &n, &bad, &reason), 0);
        ck_assert_msg(ok, "after prune: %s", reason);
        uint64_t last = audit_seq(a);
        /* Everything from first_seq on (the audit.pruned record included) is verified. */
        ck_assert_uint_eq(n, last - res.first_seq + 1);
        audit_close(a);
        expect_ok(master, last - res.first_seq + 1);

        /* Reopening continues the chain. */
        a = open_log(master);
        append_n(a, 1, 3);
        audit_close(a);
        expect_ok(master, last + 3 - res.first_seq + 1);
        uint64_t first_seq = res.first_seq;

        /* Removing the checkpoint: the log starts at first_seq with nothing to vouch for it. */
        char p[256];
        copy_dir(master, copy);
        snprintf(p, sizeof(p), "%s/audit.checkpoint", copy);
        ck_assert_int_eq(unlink(p), 0);
        expect_bad(copy, first_seq, "expected");

        /* Editing it (moving the start later) is caught by its hmac. */
        copy_dir(master, copy);
        size_t len;
        _cleanup_free_ char *cp = read_all(p, &len);
        char *at = strstr(cp, "\"seq\":");
        ck_assert_ptr_nonnull(at);
        at[6] = at[6] == '9' ? '8' : at[6] + 1;
        write_all_file(p, cp, len);
        expect_bad(copy, 1, "checkpoint");

        /* Deleting the first kept file too. */
        lset s;
        copy_dir(master, copy);
        lset_load(copy, &s);
        path_of(p, sizeof(p), copy, s.f[0].no);
        ck_assert_int_eq(unlink(p), 0);
        expect_bad(copy, first_seq, "missing");
        lset_free(&s);
}
END_TEST

START_TEST(test_prune_refuses_broken_chain) {
        lset s;
        char p[256];

        master_and_copy(&s);
        /* Delete a record in the second file: pruning the first two must not hide it. */
        path_of(p, sizeof(p), copy, s.f[1].no);
        size_t len;
        _cleanup_free_ char *text = read_all(p, &len);
        char *nl = strchr(text, '\n');
        ck_assert_ptr_nonnull(nl);
        write_all_file(p, nl + 1, len - (size_t) (nl + 1 - text));
        audit_log *a = open_log(copy);
        audit_prune_result res;
        _cleanup_error_ agentd_error err = {};
        ck_assert_int_eq(audit_prune(a, 0, 2 * ROTATE, &res, &err), -EBADMSG);
        ck_assert_msg(strstr(error_message(&err), "does not verify"), "%s", error_message(&err));
        ck_assert_uint_eq(res.files_removed, 0);
        audit_close(a);
        ck_assert_uint_eq(count_files(copy), s.n);
        lset_free(&s);
}
END_TEST

START_TEST(test_secret_guard) {
        static const char *const refused[] = { "token", "client_token", "secret_id", "password", "Token" };
        audit_log *a = open_log(master);
        char p[256];

        append_n(a, 1, 1);
        for (size_t i = 0; i < ELEMENTSOF(refused); i++) {
                /* At the top... */
                _cleanup_(json_object_putp) struct json_object *f = json_object_new_object();
                json_object_object_add(f, refused[i], json_object_new_string("hvs.SECRETSECRET"));
                ck_assert_int_eq(audit_append(a, "token.issued", "sb1", f), -EINVAL);

                /* ...and deep inside objects and arrays. */
                _cleanup_(json_object_putp) struct json_object *g = json_object_new_object();
                struct json_object *inner = json_object_new_object(), *arr = json_object_new_array(),
                                   *leaf = json_object_new_object();
                json_object_object_add(leaf, refused[i], json_object_new_string("hvs.SECRETSECRET"));
                json_object_array_add(arr, json_object_new_int(1));
                json_object_array_add(arr, leaf);
                json_object_object_add(inner, "list", arr);
                json_object_object_add(g, "auth", inner);
                ck_assert_int_eq(audit_append(a, "token.issued", "sb1", g), -EINVAL);
        }
        ck_assert_uint_eq(audit_seq(a), 1);

        /* An accessor is what records name a token by. */
        _cleanup_(json_object_putp) struct json_object *ok = json_object_new_object();
        json_object_object_add(ok, "accessor", json_object_new_string("acc-123"));
        json_object_object_add(ok, "token_accessor", json_object_new_string("acc-123"));
        ck_assert_int_eq(audit_append(a, "token.issued", "sb1", ok), 0);

        /* Other refusals. */
        _cleanup_(json_object_putp) struct json_object *arr = json_object_new_array();
        ck_assert_int_eq(audit_append(a, "rpc", NULL, arr), -EINVAL);
        ck_assert_int_eq(audit_append(a, "RPC", NULL, NULL), -EINVAL);
        ck_assert_int_eq(audit_append(a, "", NULL, NULL), -EINVAL);
        ck_assert_int_eq(audit_append(a, "a\"b", NULL, NULL), -EINVAL);
        _cleanup_(json_object_putp) struct json_object *nan = json_object_new_object();
        json_object_object_add(nan, "x", json_object_new_double(0.0 / 0.0));
        ck_assert_int_eq(audit_append(a, "rpc", NULL, nan), -EINVAL);
        ck_assert_int_eq(audit_append(a, "rpc", NULL, NULL), 0);
        ck_assert_uint_eq(audit_seq(a), 3);
        audit_close(a);

        path_of(p, sizeof(p), master, 1);
        _cleanup_free_ char *c = read_all(p, NULL);
        ck_assert_ptr_null(strstr(c, "SECRETSECRET"));
        expect_ok(master, 3);
}
END_TEST

START_TEST(test_size_bound) {
        audit_options opt = { .no_journal = true };
        _cleanup_error_ agentd_error err = {};
        audit_log *a = NULL;

        ck_assert_int_eq(audit_open(master, KEY, sizeof(KEY), &opt, &a, &err), 0);

        /* One huge string: cut, marked. */
        _cleanup_free_ char *big = malloc(200001);
        memset(big, 'A', 200000);
        big[200000] = 0;
        _cleanup_(json_object_putp) struct json_object *f = json_object_new_object();
        json_object_object_add(f, "stdout", json_object_new_string(big));
        ck_assert_int_eq(audit_append(a, "sandbox.exit", "sb1", f), 0);

        /* Many medium strings: cut harder. */
        _cleanup_(json_object_putp) struct json_object *g = json_object_new_object();
        struct json_object *arr = json_object_new_array();
        for (int i = 0; i < 100; i++)
                json_object_array_add(arr, json_object_new_string_len(big, 4000));
        json_object_object_add(g, "argv", arr);
        ck_assert_int_eq(audit_append(a, "sandbox.spawn", "sb1", g), 0);

        /* Thousands of small values: only the size survives. */
        _cleanup_(json_object_putp) struct json_object *h = json_object_new_object();
        arr = json_object_new_array();
        for (int i = 0; i < 20000; i++)
                json_object_array_add(arr, json_object_new_int(123456));
        json_object_object_add(h, "numbers", arr);
        ck_assert_int_eq(audit_append(a, "sandbox.spawn", "sb1", h), 0);

        /* Invalid UTF-8 is repaired, not written through. */
        _cleanup_(json_object_putp) struct json_object *u = json_object_new_object();
        json_object_object_add(u, "arg", json_object_new_string("bad\xff\xfe utf8 \xc3\xa9"));
        ck_assert_int_eq(audit_append(a, "rpc", NULL, u), 0);
        audit_close(a);

        lset s;
        lset_load(master, &s);
        ck_assert_uint_eq(s.n, 1);
        ck_assert_uint_eq(s.f[0].n, 4);
        for (size_t i = 0; i < 4; i++)
                ck_assert_uint_le(strlen(s.f[0].lines[i]) + 1, AUDIT_RECORD_MAX_DEFAULT);
        ck_assert_ptr_nonnull(strstr(s.f[0].lines[0], "AAAA...[truncated "));
        ck_assert_ptr_nonnull(strstr(s.f[0].lines[1], "...[truncated "));
        ck_assert_ptr_nonnull(strstr(s.f[0].lines[2], "\"fields\":{\"_truncated\":true,\"_original_bytes\":"));
        ck_assert_ptr_nonnull(strstr(s.f[0].lines[3], "bad\xef\xbf\xbd\xef\xbf\xbd utf8 \xc3\xa9"));
        lset_free(&s);
        expect_ok(master, 4);
}
END_TEST

START_TEST(test_durable_after_flush) {
        char p[256];
        audit_log *a = open_log(master);

        /* The head exists from the start, even for an empty log. */
        snprintf(p, sizeof(p), "%s/audit.head", master);
        _cleanup_free_ char *h0 = read_all(p, NULL);
        ck_assert_int_eq(strncmp(h0, "{\"audit_head\":1,\"seq\":0,\"hash\":\"0000", 36), 0);

        append_n(a, 1, 3);
        ck_assert_int_eq(audit_flush(a), 0);
        ck_assert_int_eq(audit_flush(a), 0);           /* nothing pending: cheap, fine */
        path_of(p, sizeof(p), master, 1);
        _cleanup_free_ char *c = read_all(p, NULL);
        ck_assert_ptr_nonnull(strstr(c, "{\"seq\":3,"));
        ck_assert_int_eq(c[strlen(c) - 1], '\n');
        snprintf(p, sizeof(p), "%s/audit.head", master);
        _cleanup_free_ char *h = read_all(p, NULL);
        ck_assert_int_eq(strncmp(h, "{\"audit_head\":1,\"seq\":3,", 24), 0);
        /* No leftover temporary. */
        snprintf(p, sizeof(p), "%s/audit.head.tmp", master);
        ck_assert_int_ne(access(p, F_OK), 0);
        audit_close(a);
        expect_ok(master, 3);
}
END_TEST

/* ---- records from members (audit_append_members_deferred) ---- */

#define S(k, v) { .key = (k), .str = (v), .str_len = sizeof(v) - 1 }
#define I(k, v) { .key = (k), .num = (v) }

typedef struct member_case {
        const char *sandbox;
        audit_member m[6];
        size_t n;
} member_case;

static struct json_object *members_as_json(const audit_member *m, size_t n) {
        struct json_object *o = json_object_new_object();
        for (size_t i = 0; i < n; i++)
                json_object_object_add(o, m[i].key, m[i].str ? json_object_new_string_len(m[i].str, (int) m[i].str_len)
                                                             : json_object_new_int64(m[i].num));
        return o;
}

/* From "type": to ,"prev": : type, sandbox and fields, which must not depend on the path. */
static char *record_body(const char *line) {
        const char *b = strstr(line, ",\"type\":"), *e = strstr(line, ",\"prev\":\"");
        ck_assert_ptr_nonnull(b);
        ck_assert_ptr_nonnull(e);
        return strndup(b, (size_t) (e - b));
}

/* The direct path writes exactly the bytes the json-c path writes, for the
 * daemon's rpc record and for everything it hands back to json-c. */
START_TEST(test_members_same_bytes) {
        static char longstr[6000];
        memset(longstr, 'x', sizeof(longstr) - 1);
        const member_case cases[] = {
                { NULL, { S("method", "agentd.ping"), I("peer_pid", 4242), I("peer_uid", 1000), S("outcome", "ok") }, 4 },
                { "sb-1.a_b", { S("method", "sandbox.list"), I("peer_pid", 1), I("peer_uid", 0), S("outcome", "pending") }, 4 },
                { NULL, { I("min", INT64_MIN), I("max", INT64_MAX), I("zero", 0), I("neg", -17) }, 4 },
                { NULL, { S("slash", "/usr/bin/env a/b"), S("space", "a b ~!@#$%^&*()"), S("empty", "") }, 3 },
                { NULL, { S("quote", "say \"hi\""), S("bs", "c:\\x") }, 2 },
                { NULL, { S("ctl", "a\nb\tc\x01d\x1f"), S("del", "x\x7fy") }, 2 },
                { NULL, { S("utf8", "caf\xc3\xa9 \xe2\x82\xac"), S("bad", "ab\xff\xfe") }, 2 },
                { NULL, { S("k\"ey", "v"), S("caf\xc3\xa9", "v") }, 2 },
                { NULL, { S("a", "1"), I("b", 2), S("a", "3") }, 3 },
                { "odd \"sandbox\"", { S("method", "agentd.ping") }, 1 },
                { NULL, { { 0 } }, 0 },
                { NULL, { { .key = "long", .str = longstr, .str_len = sizeof(longstr) - 1 }, S("after", "y") }, 2 },
        };
        audit_options opt = { .rotate_bytes = 1u << 20, .max_record_bytes = 4096, .no_journal = true };
        _cleanup_error_ agentd_error err = {};
        audit_log *direct = NULL, *viajson = NULL;

        ck_assert_int_eq(audit_open(master, KEY, sizeof(KEY), &opt, &direct, &err), 0);
        ck_assert_int_eq(audit_open(copy, KEY, sizeof(KEY), &opt, &viajson, &err), 0);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(json_object_putp) struct json_object *o = members_as_json(cases[i].m, cases[i].n);
                ck_assert_int_eq(audit_append_members_deferred(direct, "rpc", cases[i].sandbox, cases[i].m, cases[i].n), 0);
                ck_assert_int_eq(audit_append_deferred(viajson, "rpc", cases[i].sandbox, o), 0);
        }
        /* Refused like any record: a secret's key, a bad type; nothing is chained. */
        const audit_member secret[] = { S("method", "x"), S("Password", "hunter2") };
        uint64_t seq = audit_seq(direct);
        ck_assert_int_eq(audit_append_members_deferred(direct, "rpc", NULL, secret, 2), -EINVAL);
        ck_assert_int_eq(audit_append_members_deferred(direct, "RPC!", NULL, secret, 1), -EINVAL);
        ck_assert_uint_eq(audit_seq(direct), seq);
        audit_close(direct);
        audit_close(viajson);

        lset a, b;
        lset_load(master, &a);
        lset_load(copy, &b);
        ck_assert_uint_eq(a.n, 1);
        ck_assert_uint_eq(b.n, 1);
        ck_assert_uint_eq(a.f[0].n, b.f[0].n);
        ck_assert_uint_eq(a.f[0].n, ELEMENTSOF(cases));
        for (size_t i = 0; i < a.f[0].n; i++) {
                _cleanup_free_ char *x = record_body(a.f[0].lines[i]), *y = record_body(b.f[0].lines[i]);
                ck_assert_msg(streq(x, y), "record %zu differs:\n direct: %s\n json-c: %s", i, x, y);
        }
        /* The long string was cut by the size bound the same way on both paths. */
        ck_assert_ptr_nonnull(strstr(a.f[0].lines[a.f[0].n - 1], "...[truncated "));
        lset_free(&a);
        lset_free(&b);
        expect_ok(master, ELEMENTSOF(cases));
        expect_ok(copy, ELEMENTSOF(cases));
}
END_TEST

/* ---- the flush in a worker (audit_flush_begin/run/end) ---- */

static uint64_t head_seq_of(const char *dir) {
        char p[256];
        snprintf(p, sizeof(p), "%s/audit.head", dir);
        _cleanup_free_ char *h = read_all(p, NULL);
        uint64_t seq = 0;
        ck_assert_int_eq(sscanf(h, "{\"audit_head\":1,\"seq\":%" SCNu64 ",", &seq), 1);
        return seq;
}

static void *flush_thread(void *job) {
        audit_flush_run(job);
        return NULL;
}

/* As the daemon does it: the slow part on another thread. */
static void run_in_thread(audit_flush_job *j) {
        pthread_t t;
        ck_assert_int_eq(pthread_create(&t, NULL, flush_thread, j), 0);
        ck_assert_int_eq(pthread_join(t, NULL), 0);
}

/* The head a worker writes vouches for what was written before the job
 * began, never for records appended while it ran; one job at a time. */
START_TEST(test_flush_job) {
        audit_log *a = open_log(master);
        audit_flush_job *j = NULL, *j2 = NULL;

        append_n(a, 1, 3);
        append_deferred_n(a, 4, 5);                     /* begin commits these */
        ck_assert_int_eq(audit_flush_begin(a, &j), 0);
        ck_assert_ptr_nonnull(j);
        ck_assert_uint_eq(audit_pending(a), 0);
        ck_assert_int_eq(audit_flush_begin(a, &j2), -EBUSY);
        append_n(a, 6, 7);                              /* while the job is out */
        ck_assert_uint_eq(head_seq_of(master), 0);      /* nothing before the job runs */
        run_in_thread(j);
        ck_assert_int_eq(audit_flush_end(j), 0);
        ck_assert_uint_eq(head_seq_of(master), 5);
        expect_ok(master, 7);

        /* The records appended meanwhile are the next job's. */
        ck_assert_int_eq(audit_flush_begin(a, &j), 0);
        ck_assert_ptr_nonnull(j);
        run_in_thread(j);
        ck_assert_int_eq(audit_flush_end(j), 0);
        ck_assert_uint_eq(head_seq_of(master), 7);
        ck_assert_int_eq(audit_flush_begin(a, &j), 0);
        ck_assert_ptr_null(j);                          /* all durable and anchored */
        ck_assert_int_eq(audit_flush_end(NULL), 0);
        audit_close(a);
        expect_ok(master, 7);
}
END_TEST

/* A synchronous flush takes over from a job that has not run: the job then
 * writes nothing, so its older head never lands over the newer one. */
START_TEST(test_flush_job_taken_over) {
        audit_log *a = open_log(master);
        audit_flush_job *j = NULL;

        append_n(a, 1, 3);
        ck_assert_int_eq(audit_flush_begin(a, &j), 0);
        ck_assert_ptr_nonnull(j);
        append_n(a, 4, 4);
        ck_assert_int_eq(audit_flush(a), 0);
        ck_assert_uint_eq(head_seq_of(master), 4);
        run_in_thread(j);                               /* late: cancelled */
        ck_assert_uint_eq(head_seq_of(master), 4);
        ck_assert_int_eq(audit_flush_end(j), 0);
        ck_assert_int_eq(audit_flush_begin(a, &j), 0);
        ck_assert_ptr_null(j);

        /* And audit_close() with a job out: the job is detached and writes nothing. */
        append_n(a, 5, 6);
        ck_assert_int_eq(audit_flush_begin(a, &j), 0);
        ck_assert_ptr_nonnull(j);
        audit_close(a);
        ck_assert_uint_eq(head_seq_of(master), 6);
        run_in_thread(j);
        ck_assert_int_eq(audit_flush_end(j), 0);
        ck_assert_uint_eq(head_seq_of(master), 6);
        expect_ok(master, 6);
}
END_TEST

/* A job that fails reports it, and the log counts the flush as not done. */
START_TEST(test_flush_job_failure) {
        audit_log *a = open_log(master);
        audit_flush_job *j = NULL;
        char p[256];

        append_n(a, 1, 3);
        snprintf(p, sizeof(p), "%s/audit.head.tmp", master);
        ck_assert_int_eq(mkdir(p, 0700), 0);            /* the head cannot be written */
        ck_assert_int_eq(audit_flush_begin(a, &j), 0);
        run_in_thread(j);
        ck_assert_int_eq(audit_flush_end(j), -EISDIR);
        ck_assert_uint_eq(head_seq_of(master), 0);
        ck_assert_int_eq(rmdir(p), 0);
        ck_assert_int_eq(audit_flush_begin(a, &j), 0);
        ck_assert_ptr_nonnull(j);                       /* still to do */
        run_in_thread(j);
        ck_assert_int_eq(audit_flush_end(j), 0);
        ck_assert_uint_eq(head_seq_of(master), 3);
        audit_close(a);
        expect_ok(master, 3);
}
END_TEST

START_TEST(test_open_errors) {
        _cleanup_error_ agentd_error err = {};
        audit_log *a = NULL;

        ck_assert_int_eq(audit_open(master, KEY, 8, NULL, &a, &err), -EINVAL);
        ck_assert_ptr_null(a);
        ck_assert_str_ne(error_message(&err), "");
        ck_assert_int_eq(audit_open(NULL, KEY, 32, NULL, &a, &err), -EINVAL);

        /* A log written with another key: verify says so at seq 1, open does not
         * take foreign records as its chain. */
        build(master, 3);
        bool ok = true;
        uint64_t bad = 0;
        _cleanup_free_ char *reason = NULL;
        ck_assert_int_eq(audit_verify_dir(master, WRONG_KEY, 32, &ok, NULL, &bad, &reason), 0);
        ck_assert(!ok);
        ck_assert_uint_eq(bad, 1);

        /* Nested directories are created 0700. */
        char p[256];
        struct stat st;
        snprintf(p, sizeof(p), "%s/a/b/audit", tmp);
        audit_options opt = { .no_journal = true };
        ck_assert_int_eq(audit_open(p, KEY, 32, &opt, &a, &err), 0);
        audit_close(a);
        ck_assert_int_eq(stat(p, &st), 0);
        ck_assert_int_eq(st.st_mode & 07777, 0700);
}
END_TEST

static bool pick_sb1(struct json_object *rec, void *userdata) {
        struct json_object *v;
        (*(unsigned *) userdata)++;
        return json_object_object_get_ex(rec, "sandbox", &v) && json_object_is_type(v, json_type_string) &&
               streq(json_object_get_string(v), "sb1");
}

static uint64_t sel_seq(const audit_selection *sel, size_t i, bool *ret_verified, const char **ret_problem) {
        struct json_object *r = json_object_array_get_idx(sel->selected, i), *v;
        ck_assert(json_object_object_get_ex(r, "verified", &v));
        *ret_verified = json_object_get_boolean(v);
        *ret_problem = json_object_object_get_ex(r, "problem", &v) ? json_object_get_string(v) : NULL;
        ck_assert(json_object_object_get_ex(r, "seq", &v));
        return (uint64_t) json_object_get_int64(v);
}

/* Appends text to the newest log file (a line still being written). */
static void append_to_newest(const char *master, const char *text) {
        char newest[256];
        unsigned no = 1;

        for (;; no++) {
                path_of(newest, sizeof(newest), master, no + 1);
                if (access(newest, F_OK) != 0)
                        break;
        }
        path_of(newest, sizeof(newest), master, no);
        append_file(newest, text);
}

START_TEST(test_snapshot_select) {
        audit_log *a = open_log(master);
        audit_snapshot *snap = NULL;
        audit_selection sel;
        unsigned seen = 0;
        bool verified;
        const char *problem;
        lset s;

        append_n(a, 1, 30);
        ck_assert_int_eq(audit_snapshot_new(a, &snap), 0);
        /* After the snapshot: more records, and a line still being written. */
        append_n(a, 31, 40);
        lset_load(master, &s);
        ck_assert_uint_ge(s.n, 2); /* rotated: the chain spans files */
        lset_free(&s);
        append_to_newest(master, "{\"seq\":41,\"time\":\"2026-");
        ck_assert_int_eq(audit_snapshot_select(snap, pick_sb1, &seen, &sel), 0);
        ck_assert_msg(sel.ok, "%s", sel.reason);
        ck_assert_uint_eq(sel.last_seq, 30);
        ck_assert_uint_eq(seen, 30);
        ck_assert_uint_eq(json_object_array_length(sel.selected), 10); /* 3, 6, ..., 30 */
        for (size_t i = 0; i < 10; i++) {
                ck_assert_uint_eq(sel_seq(&sel, i, &verified, &problem), 3 * (i + 1));
                ck_assert(verified);
                ck_assert_ptr_null(problem);
        }
        audit_selection_done(&sel);
        audit_snapshot_free(snap);
        audit_close(a);

        /* A record of sb1 rewritten: selected all the same, and marked; what follows is after the break.
         * (Reopening also cuts the torn line off and records that.) */
        lset_load(master, &s);
        char **l = lset_find(&s, 9);
        ck_assert_ptr_nonnull(l);
        char *p = strstr(*l, "\"n\":9");
        ck_assert_ptr_nonnull(p);
        p[4] = '8';
        lset_store(master, &s);
        lset_free(&s);
        a = open_log(master);
        ck_assert_int_eq(audit_snapshot_new(a, &snap), 0);
        ck_assert_int_eq(audit_snapshot_select(snap, pick_sb1, &seen, &sel), 0);
        ck_assert(!sel.ok);
        ck_assert_uint_eq(sel.first_bad_seq, 9);
        ck_assert_uint_eq(sel_seq(&sel, 0, &verified, &problem), 3);
        ck_assert(verified);
        ck_assert_uint_eq(sel_seq(&sel, 2, &verified, &problem), 9);
        ck_assert(!verified);
        ck_assert_ptr_nonnull(strstr(problem, "invalid hmac"));
        ck_assert_uint_eq(sel_seq(&sel, 3, &verified, &problem), 12);
        ck_assert(!verified);
        ck_assert_ptr_nonnull(strstr(problem, "after the break in the chain at seq 9"));
        audit_selection_done(&sel);
        audit_snapshot_free(snap);
        audit_close(a);
}
END_TEST

static uint64_t arr_seq(struct json_object *arr, size_t i) {
        struct json_object *v;
        ck_assert(json_object_object_get_ex(json_object_array_get_idx(arr, i), "seq", &v));
        return (uint64_t) json_object_get_int64(v);
}

/* audit.query's worker: a page over a snapshot reads nothing written after it,
 * torn or whole, and keeps the cursor, limit and sandbox filter. */
START_TEST(test_snapshot_query_page) {
        audit_log *a = open_log(master);
        audit_snapshot *snap = NULL;
        struct json_object *arr = NULL;
        bool more = true;

        append_n(a, 1, 30);
        ck_assert_int_eq(audit_snapshot_new(a, &snap), 0);
        append_n(a, 31, 40);
        append_to_newest(master, "{\"seq\":41,\"time\":\"2026-");
        audit_query_opts q = { .limit = 100, .max_bytes = AUDIT_QUERY_MAX_BYTES };
        ck_assert_int_eq(audit_snapshot_query_page(snap, &q, &arr, &more), 0);
        ck_assert_uint_eq(json_object_array_length(arr), 30);
        for (size_t i = 0; i < 30; i++)
                ck_assert_uint_eq(arr_seq(arr, i), i + 1);
        ck_assert(!more);
        json_object_put(arr);

        q = (audit_query_opts) { .limit = 3, .before_seq = 10, .max_bytes = AUDIT_QUERY_MAX_BYTES };
        ck_assert_int_eq(audit_snapshot_query_page(snap, &q, &arr, &more), 0);
        ck_assert_uint_eq(json_object_array_length(arr), 3);
        ck_assert_uint_eq(arr_seq(arr, 0), 7);
        ck_assert_uint_eq(arr_seq(arr, 2), 9);
        ck_assert(more);
        json_object_put(arr);

        q = (audit_query_opts) { .limit = 2, .sandbox = "sb1", .max_bytes = AUDIT_QUERY_MAX_BYTES };
        ck_assert_int_eq(audit_snapshot_query_page(snap, &q, &arr, &more), 0);
        ck_assert_uint_eq(json_object_array_length(arr), 2);
        ck_assert_uint_eq(arr_seq(arr, 0), 27);
        ck_assert_uint_eq(arr_seq(arr, 1), 30);
        json_object_put(arr);

        /* The live log, by contrast, has them all (its query commits first). */
        q = (audit_query_opts) { .limit = 1, .max_bytes = AUDIT_QUERY_MAX_BYTES };
        ck_assert_int_eq(audit_query_page(a, &q, &arr, &more), 0);
        ck_assert_uint_eq(arr_seq(arr, 0), 40);
        json_object_put(arr);
        ck_assert_int_eq(audit_snapshot_query_page(NULL, &q, &arr, &more), -EINVAL);
        audit_snapshot_free(snap);
        audit_close(a);
}
END_TEST

static Suite *audit_suite(void) {
        Suite *s = suite_create("audit");
        TCase *tc = tcase_create("audit");

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_format_and_rotation);
        tcase_add_test(tc, test_batch_commit);
        tcase_add_test(tc, test_batch_write_failure);
        tcase_add_test(tc, test_tamper_modify);
        tcase_add_test(tc, test_snapshot_select);
        tcase_add_test(tc, test_snapshot_query_page);
        tcase_add_test(tc, test_tamper_delete_record);
        tcase_add_test(tc, test_tamper_reorder);
        tcase_add_test(tc, test_tamper_truncate_last);
        tcase_add_test(tc, test_tamper_delete_last_file);
        tcase_add_test(tc, test_tamper_delete_middle_file);
        tcase_add_test(tc, test_tamper_forge);
        tcase_add_test(tc, test_tamper_head);
        tcase_add_test(tc, test_reopen_continues);
        tcase_add_test(tc, test_torn_line);
        tcase_add_test(tc, test_truncated_while_down);
        tcase_add_test(tc, test_live_tamper);
        tcase_add_test(tc, test_query);
        tcase_add_test(tc, test_secret_guard);
        tcase_add_test(tc, test_size_bound);
        tcase_add_test(tc, test_durable_after_flush);
        tcase_add_test(tc, test_members_same_bytes);
        tcase_add_test(tc, test_flush_job);
        tcase_add_test(tc, test_flush_job_taken_over);
        tcase_add_test(tc, test_flush_job_failure);
        tcase_add_test(tc, test_open_errors);
        tcase_add_test(tc, test_query_page_bounded);
        tcase_add_test(tc, test_prune_keeps_chain_verifiable);
        tcase_add_test(tc, test_prune_refuses_broken_chain);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return unit_run(audit_suite(), false);
}
