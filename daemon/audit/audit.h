/* The tamper-evident audit log: append-only JSON Lines in the state dir, each
 * record hash-chained to the one before it and authenticated with an HMAC whose
 * key the daemon unseals from the TPM (or the software key). Someone who can
 * write the files but does not hold the key can delete, reorder, truncate or
 * edit records, but audit_verify() will name the first seq where that happened.
 *
 * Files
 * -----
 * <dir>/audit-000001.jsonl, audit-000002.jsonl, ...   mode 0600, dir mode 0700.
 * A new file is started when the current one would grow past rotate_bytes; seq
 * and the chain continue across files (the first record of a file chains to the
 * last record of the previous one). Old files are removed only by audit_prune(),
 * which leaves a signed checkpoint where the kept log starts.
 *
 * <dir>/audit.head    the anchor: the seq and hash of the newest durable record,
 * rewritten atomically (tmp + rename) by every audit_flush(). Without it, deleting
 * the newest file or cutting records off its end would leave a valid, shorter
 * chain. One line:
 *
 *     {"audit_head":1,"seq":N,"hash":"<64 hex>","hmac":"<64 hex>"}\n
 *
 * where hmac = HMAC-SHA256(key, `{"audit_head":1,"seq":N,"hash":"<64 hex>"}`).
 * The head records "seq":0 and 64 zeros for an empty log.
 * Records and the head share the key; their MAC'd bytes cannot be confused, as
 * one starts with {"seq": and the other with {"audit_head":.
 *
 * Record format (one line each, '\n'-terminated, UTF-8, no other whitespace)
 * ------------------------------------------------------------------------
 *     {"seq":N,"time":"2026-11-24T19:21:12.123456Z","type":T,"sandbox":S,
 *      "fields":F,"prev":"<64 hex>","hmac":"<64 hex>"}
 *
 * - the members appear in exactly this order; N is a decimal integer without
 *   leading zeros, starting at 1; time is UTC with microseconds; T is a JSON
 *   string; S is a JSON string or null; F is a JSON object (json-c's plain
 *   serialization, slashes not escaped); all hex is lowercase.
 * - prev is SHA-256 of the previous record line exactly as written, without its
 *   '\n' (64 zeros for seq 1).
 * - hmac is HMAC-SHA256(key, U) where U, the "unsigned record", is the line with
 *   the hmac member removed:
 *
 *     U = {"seq":N,"time":"...","type":T,"sandbox":S,"fields":F,"prev":"<hex>"}
 *
 *   Equivalently: take the line without '\n'; it must end with the 75 bytes
 *   ,"hmac":"<64 hex>"}  — drop them and append a single '}'. Those are the
 *   HMAC'd bytes, byte for byte; nothing is re-serialized for verification.
 *
 * What is refused
 * ---------------
 * audit_append() returns -EINVAL, and writes nothing, when `fields` is not an
 * object or contains, at any depth (inside nested objects and arrays), a key
 * named "token", "client_token", "secret_id" or "password" (compared ignoring
 * case): a future caller passing a whole Vault response must fail loudly rather
 * than put a secret into a file that lives for years. Tokens are named by their
 * accessor only (e.g. "accessor"). Non-finite doubles are refused as well (they
 * have no JSON spelling). type must be 1..64 characters of [a-z0-9._-]; sandbox
 * at most 256 bytes.
 *
 * Size bound: a record line is at most max_record_bytes (default 64 KiB). Longer
 * string values in fields are cut at a UTF-8 boundary and end with
 * "...[truncated N bytes]"; if that is not enough, fields is replaced by
 * {"_truncated":true,"_original_bytes":N}.
 *
 * Durability: audit_append() write(2)s the line at once (audit_append_deferred()
 * at the next audit_commit(), see below) (so a daemon crash loses
 * nothing already appended); audit_flush() fsyncs the file and then rewrites
 * audit.head. The daemon flushes from a short timer, in a worker thread
 * (audit_flush_begin/run/end); audit_close() flushes.
 *
 * Journald: each record is also sent with sd_journal_send() (MESSAGE,
 * AGENTD_AUDIT_TYPE, AGENTD_AUDIT_SEQ, AGENTD_SANDBOX_ID, AGENTD_AUDIT_FIELDS)
 * when /run/systemd/journal/socket exists at open time and opt->no_journal is
 * not set, except the per-request "rpc" records (an IDE polling status would fill the
 * journal with them). The journal is a convenience mirror; the files are the record.
 *
 * Not single-writer safe across processes: one daemon per user owns the dir.
 * The functions are not thread-safe; the daemon calls them from its loop
 * (except audit_flush_run() and the audit_snapshot_* readers, which are meant
 * for a worker thread). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "macro.h"

struct json_object;

typedef struct audit_log audit_log;

#define AUDIT_ROTATE_BYTES_DEFAULT (16u * 1024u * 1024u)
#define AUDIT_RECORD_MAX_DEFAULT (64u * 1024u)
/* Bounds for max_record_bytes; verification and query read lines up to the upper one. */
#define AUDIT_RECORD_MAX_MIN 4096u
#define AUDIT_RECORD_MAX_LIMIT (1024u * 1024u)
#define AUDIT_KEY_MIN 16u
#define AUDIT_KEY_MAX 64u

typedef struct audit_options {
        uint64_t rotate_bytes;          /* 0: AUDIT_ROTATE_BYTES_DEFAULT */
        size_t max_record_bytes;        /* 0: AUDIT_RECORD_MAX_DEFAULT; clamped to [MIN, LIMIT] */
        bool no_journal;                /* do not mirror to journald */
} audit_options;

/* dir: the audit directory (created 0700 with its parents if missing). key: the
 * HMAC key, AUDIT_KEY_MIN..AUDIT_KEY_MAX bytes (32 from the TPM); it is copied
 * into locked, non-dumpable memory and zeroed on close. opt may be NULL.
 *
 * Continues seq and the chain from the newest valid record. Crash debris is
 * handled and recorded, never silently dropped:
 * - a torn last line (no '\n') is cut off and an "audit.recovered" record with
 *   reason "torn" names its file, offset, length, sha256, the seq it claimed
 *   and its first bytes in hex;
 * - if audit.head vouches for more records than the files hold (tail truncated
 *   or the newest file deleted), seq continues after the head, so the gap stays
 *   visible to audit_verify(), and a record with reason "truncated" says which
 *   seqs are missing;
 * - a missing or forged audit.head while records exist gives reason
 *   "head_missing" / "head_invalid".
 * Returns 0, or a negative errno with err set (err may be NULL). */
int audit_open(const char *dir, const uint8_t *key, size_t key_len, const audit_options *opt,
               audit_log **ret, agentd_error *err);

/* Flushes (fsync + head) and frees. NULL is fine. */
void audit_close(audit_log *a);
DEFINE_TRIVIAL_CLEANUP_FUNC(audit_log *, audit_close)
#define _cleanup_audit_log_ _cleanup_(audit_closep)

/* Appends one record (see the format above). type like "rpc", "sandbox.spawn";
 * sandbox may be NULL; fields a json object or NULL ({}), borrowed (not consumed,
 * not modified). Returns 0, -EINVAL (bad type/sandbox, a refused key), -ENOMEM,
 * or the write error (then nothing of the record stays in the file and seq does
 * not advance). */
int audit_append(audit_log *a, const char *type, const char *sandbox, struct json_object *fields);

/* Group commit. audit_append_deferred() checks, builds and chains a record
 * exactly like audit_append() (seq and the chain advance at once; audit_seq()
 * counts it) but keeps the line in memory; audit_commit() writes every pending
 * record, in order, with one writev(2) per file (rotating between records as
 * audit_append() would). A record is "written" only once audit_commit() has
 * returned: the daemon holds back every reply until then, so a reply never
 * precedes its record in the file. On a write error the records not written
 * are dropped (a partial line is truncated away), seq and the chain go back to
 * the last record on disk, *ret_lost (may be NULL) says how many were dropped,
 * and the error is returned. audit_append() = deferred + commit, so it writes
 * any pending records first. audit_flush(), audit_verify(), audit_query*(),
 * audit_prune(), audit_snapshot_new() and audit_close() commit first. There is
 * no bound on the batch here: the caller commits at least once per loop
 * iteration. */
int audit_append_deferred(audit_log *a, const char *type, const char *sandbox, struct json_object *fields);

/* audit_append_deferred() for a flat fields object given as members, in order
 * (keys distinct): a string member (str, str_len bytes) or an integer (num,
 * when str is NULL). The record is byte for byte the one audit_append_deferred()
 * makes from a json-c object holding the same members added in the same
 * order; when no string needs escaping and no bound applies, it is built
 * directly, without json-c or an allocation (the daemon's per-request "rpc"
 * record), else through that object. Refuses what audit_append() refuses. */
typedef struct audit_member {
        const char *key;
        const char *str;
        size_t str_len;
        int64_t num;
} audit_member;
int audit_append_members_deferred(audit_log *a, const char *type, const char *sandbox, const audit_member *m,
                                  size_t n);
int audit_commit(audit_log *a, size_t *ret_lost);
size_t audit_pending(const audit_log *a);

/* Makes every appended record durable: fsync of the current file, then audit.head
 * is rewritten (tmp, fsync, rename, fsync dir). Cheap when nothing is pending.
 * Takes over from a flush job that has not finished (see below). */
int audit_flush(audit_log *a);

/* The same flush, with its slow part in a worker thread (the daemon's 50 ms
 * timer), so the loop goes on serving while the disk syncs:
 *
 *   audit_flush_begin()  loop: commits, then takes what the flush needs: a
 *                        duplicate of the newest file's fd when it holds writes
 *                        not yet fsync'd, and the head line for the end of the
 *                        chain as it is now, formatted and MAC'd here (the
 *                        worker never sees the key). *ret is NULL when there is
 *                        nothing to flush; -EBUSY while a job is not ended.
 *   audit_flush_run()    any thread: fsync, then audit.head as audit_flush()
 *                        writes it. The head names only records written before
 *                        begin, and is written only after their fsync succeeded.
 *   audit_flush_end()    loop: the result (0 or a negative errno); frees the job.
 *                        On failure the log counts the work as not done.
 *
 * One flush at a time: audit_flush() (and so audit_close() and audit_prune())
 * cancels a job that has not finished, waiting while one is in its fsync; a
 * cancelled job writes nothing and its end returns 0. Records appended
 * while a job runs are not vouched for by its head; the next flush covers them. */
typedef struct audit_flush_job audit_flush_job;
int audit_flush_begin(audit_log *a, audit_flush_job **ret);
void audit_flush_run(audit_flush_job *job);
int audit_flush_end(audit_flush_job *job);

/* The seq of the last appended record (0: empty log). */
uint64_t audit_seq(const audit_log *a);

/* Verifies every file in order: each line parses as a record of the format above,
 * its hmac is valid, seq is exactly the previous seq + 1 (starting at 1, across
 * files), prev is the SHA-256 of the previous line; then the end of the chain
 * against audit.head and (for an open log) against what this process wrote.
 *
 * *ret_ok false: *ret_first_bad_seq is where the chain breaks —
 *   - a line that is torn, unparsable or whose hmac fails: the seq expected at
 *     that position (the seq it claims is not trusted);
 *   - an authentic record at the wrong position: the seq it carries (a deleted
 *     record or file: the seq after the gap; a reorder: the first record found
 *     out of place);
 *   - the chain ends before audit.head's seq (truncated tail, deleted newest
 *     file): the first missing seq, i.e. last seq + 1;
 *   - audit.head itself missing or forged: last seq + 1 (nothing after the last
 *     record can be vouched for);
 * and *ret_reason (free() it; NULL when ok) says what and where.
 * *ret_records: records verified good before the break (all of them when ok).
 * Returns 0, or a negative errno when the files could not be read at all. Any of
 * the ret_ pointers may be NULL. */
int audit_verify(audit_log *a, bool *ret_ok, uint64_t *ret_records, uint64_t *ret_first_bad_seq, char **ret_reason);

/* The same over a directory that is not open (offline verification, or a copy):
 * anchored only by its audit.head. */
int audit_verify_dir(const char *dir, const uint8_t *key, size_t key_len, bool *ret_ok, uint64_t *ret_records,
                     uint64_t *ret_first_bad_seq, char **ret_reason);

/* Retention. Removes whole files, oldest first and never the one being
 * written: those last modified before older_than_s (unix seconds; 0: none by
 * age), and more while the files total over max_bytes (0: no bound). The
 * chain must verify first (-EBADMSG otherwise: a break is never pruned away).
 * Then <dir>/audit.checkpoint is written atomically:
 *
 *     {"audit_checkpoint":1,"file":F,"seq":S,"hash":"<64 hex>","hmac":"<64 hex>"}\n
 *
 * hmac = HMAC-SHA256(key, the line without its hmac member, closed by '}'), as
 * for audit.head: file F is the first kept, its first record has seq S+1 and
 * prev = hash. audit_verify() starts there (files numbered below F are
 * leftovers of an interrupted prune and are skipped); a missing checkpoint
 * while the log does not start at seq 1, a forged one, or a missing file F is
 * a break. Finally an "audit.pruned" record names what went. */
typedef struct audit_prune_result {
        unsigned files_removed;
        uint64_t bytes_removed;
        uint64_t first_seq;             /* the oldest seq kept */
} audit_prune_result;
int audit_prune(audit_log *a, int64_t older_than_s, uint64_t max_bytes, audit_prune_result *ret, agentd_error *err);

/* A page of records, bounded in count and bytes whatever the log's size.
 * Queries never hold more than one page: AUDIT_QUERY_MAX records and
 * AUDIT_QUERY_MAX_BYTES of record text (lines are at most AUDIT_RECORD_MAX_LIMIT). */
#define AUDIT_QUERY_MAX 10000u
#define AUDIT_QUERY_MAX_BYTES (8u * 1024u * 1024u)

typedef struct audit_query_opts {
        const char *sandbox;            /* only this sandbox's records (NULL: all) */
        uint64_t since_ms;              /* time >= since_ms (unix ms; 0: all) */
        uint64_t before_seq;            /* seq < before_seq (0: up to the newest): the cursor for the next page */
        size_t limit;                   /* 1..any: the newest `limit` matches */
        size_t max_bytes;               /* 0: no byte bound; else the newest matches whose lines fit */
} audit_query_opts;

/* Records as a new json array of objects (seq, time, type, sandbox, fields,
 * prev, hmac), oldest first, newest last: of the records matching q, the newest
 * that fit q->limit and q->max_bytes (at least one when any matches). Memory is
 * O(page), not O(log): lines are kept while walking and parsed at the end.
 * *ret_more (may be NULL): older matches exist; ask again with before_seq =
 * the first returned seq. Lines that do not parse are skipped; query does not
 * check hmacs — that is audit_verify()'s job. Returns 0, -EINVAL (limit 0), or
 * a negative errno. */
int audit_query_page(audit_log *a, const audit_query_opts *q, struct json_object **ret_array, bool *ret_more);

/* audit_query_page() without a cursor: limit 0 means AUDIT_QUERY_MAX; the
 * byte bound is AUDIT_QUERY_MAX_BYTES. */
int audit_query(audit_log *a, const char *sandbox, uint64_t since_ms, size_t limit, struct json_object **ret_array);

/* Reading the log off the loop. A snapshot, made on the loop, holds its own
 * locked copy of the key, a duplicate of the directory fd and this process's
 * end of the chain; audit_snapshot_select() may then run in a worker thread
 * while the loop goes on appending (one thread per snapshot at a time).
 * Records appended after the snapshot are not read: the chain is checked up to
 * the newer of the snapshot's last write and audit.head. */
typedef struct audit_snapshot audit_snapshot;
int audit_snapshot_new(audit_log *a, audit_snapshot **ret);
void audit_snapshot_free(audit_snapshot *s);

/* Called for every record that parses (authentic or not, in chain order) with
 * the parsed record; returns true to select it. */
typedef bool (*audit_select_fn)(struct json_object *record, void *userdata);

typedef struct audit_selection {
        bool ok;                        /* the whole chain verified, as audit_verify() */
        uint64_t records;               /* records verified good before any break */
        uint64_t first_bad_seq;         /* when !ok */
        char *reason;                   /* when !ok */
        uint64_t last_seq;              /* the end of the chain that was read */
        /* The selected records, oldest first, each with "verified": true, or
         * false and "problem": its hmac fails, or it lies at or after the break. */
        struct json_object *selected;
} audit_selection;

/* Verifies the chain (as audit_verify()) and selects records with fn. A
 * tampered record is selected, marked, when fn picks it: a report built on
 * the selection must say so rather than leave it out. Returns 0 or a
 * negative errno; on success the caller owns *ret (audit_selection_done()). */
int audit_snapshot_select(audit_snapshot *s, audit_select_fn fn, void *userdata, audit_selection *ret);
void audit_selection_done(audit_selection *sel);

/* audit_query_page() over a snapshot, in a worker thread: only records up to
 * the snapshot's last seq (later ones, perhaps half written, are not read). */
int audit_snapshot_query_page(audit_snapshot *s, const audit_query_opts *q, struct json_object **ret_array,
                              bool *ret_more);
