/* agentctl report as terminal text: the sections a reviewer reads top to
 * bottom, then the timeline, then the audit records it was built from. */
#include "report.h"

#include <inttypes.h>
#include <string.h>

const msgpack_object *rep_get(const msgpack_object *m, const char *key) {
        if (!m || m->type != MSGPACK_OBJECT_MAP)
                return NULL;
        size_t kl = strlen(key);
        for (uint32_t i = 0; i < m->via.map.size; i++) {
                const msgpack_object *k = &m->via.map.ptr[i].key;
                if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == kl && memcmp(k->via.str.ptr, key, kl) == 0)
                        return m->via.map.ptr[i].val.type == MSGPACK_OBJECT_NIL ? NULL : &m->via.map.ptr[i].val;
        }
        return NULL;
}

static const char *obj_str(const msgpack_object *o, char *buf, size_t size, const char *def) {
        if (!o || o->type != MSGPACK_OBJECT_STR || size == 0)
                return def;
        size_t n = o->via.str.size < size - 1 ? o->via.str.size : size - 1;
        /* Names come from the sandbox (its files, its argv): no control
         * character reaches the terminal, and none starts a line of its own. */
        for (size_t i = 0; i < n; i++) {
                unsigned char ch = (unsigned char) o->via.str.ptr[i];
                buf[i] = ch < 0x20 || ch == 0x7f ? '?' : (char) ch;
        }
        buf[n] = 0;
        return buf;
}

const char *rep_str(const msgpack_object *m, const char *key, char *buf, size_t size, const char *def) {
        return obj_str(rep_get(m, key), buf, size, def);
}

int64_t rep_int(const msgpack_object *m, const char *key, int64_t def) {
        const msgpack_object *o = rep_get(m, key);
        if (o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                return (int64_t) o->via.u64;
        if (o && o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
                return o->via.i64;
        return def;
}

bool rep_bool(const msgpack_object *m, const char *key) {
        const msgpack_object *o = rep_get(m, key);
        return o && o->type == MSGPACK_OBJECT_BOOLEAN && o->via.boolean;
}

size_t rep_len(const msgpack_object *o) {
        if (!o)
                return 0;
        if (o->type == MSGPACK_OBJECT_ARRAY)
                return o->via.array.size;
        if (o->type == MSGPACK_OBJECT_MAP)
                return o->via.map.size;
        return 0;
}

bool report_verified(const msgpack_object *r) {
        return rep_bool(rep_get(r, "verification"), "ok");
}

static void print_peer(FILE *f, const msgpack_object *p) {
        char comm[64], exe[512];
        fprintf(f, "%s (pid %" PRId64 ", uid %" PRId64 ", %s)", rep_str(p, "comm", comm, sizeof(comm), "unknown"),
                rep_int(p, "pid", -1), rep_int(p, "uid", -1), rep_str(p, "exe", exe, sizeof(exe), "executable unknown"));
}

static void print_strings(FILE *f, const msgpack_object *a, const char *sep) {
        for (size_t i = 0; a && a->type == MSGPACK_OBJECT_ARRAY && i < a->via.array.size; i++) {
                char b[4096];
                fprintf(f, "%s%s", i ? sep : "", obj_str(&a->via.array.ptr[i], b, sizeof(b), "?"));
        }
}

static void print_verification(FILE *f, const msgpack_object *v) {
        const msgpack_object *seqs = rep_get(v, "seqs"), *probs = rep_get(v, "problems");
        char why[1024];
        if (rep_bool(v, "ok"))
                fprintf(f, "Verified:   yes: %zu audit records of this sandbox, HMAC and hash chain intact (log checked to seq %" PRId64 ")\n",
                        rep_len(seqs), rep_int(v, "chain_last_seq", 0));
        else {
                fprintf(f, "Verified:   NO: THE AUDIT LOG DOES NOT VERIFY; do not trust this report\n");
                if (!rep_bool(v, "chain_ok"))
                        fprintf(f, "            chain broken at seq %" PRId64 ": %s\n", rep_int(v, "first_bad_seq", 0),
                                rep_str(v, "reason", why, sizeof(why), "?"));
                if (rep_len(seqs) == 0)
                        fprintf(f, "            no audit record of this sandbox was found\n");
                for (size_t i = 0; i < rep_len(probs); i++) {
                        const msgpack_object *p = &probs->via.array.ptr[i];
                        char type[64];
                        fprintf(f, "            seq %" PRId64 " (%s): %s\n", rep_int(p, "seq", 0),
                                rep_str(p, "type", type, sizeof(type), "?"), rep_str(p, "problem", why, sizeof(why), "?"));
                }
        }
}

static void print_usage(FILE *f, const msgpack_object *u) {
        fprintf(f, "Resources: ");
        if (!u) {
                fprintf(f, " not recorded\n");
                return;
        }
        if (rep_get(u, "cpu_usec"))
                fprintf(f, " CPU %.1f ms (user %.1f, system %.1f);", rep_int(u, "cpu_usec", 0) / 1000.0,
                        rep_int(u, "cpu_user_usec", 0) / 1000.0, rep_int(u, "cpu_system_usec", 0) / 1000.0);
        if (rep_get(u, "memory_peak_bytes"))
                fprintf(f, " peak memory %.1f MiB;", rep_int(u, "memory_peak_bytes", 0) / 1048576.0);
        if (rep_get(u, "pids_peak"))
                fprintf(f, " peak tasks %" PRId64 ";", rep_int(u, "pids_peak", 0));
        if (rep_get(u, "layer_bytes"))
                fprintf(f, " %" PRId64 " bytes written to the change layer (%" PRId64 " entries)",
                        rep_int(u, "layer_bytes", 0), rep_int(u, "layer_entries", 0));
        fprintf(f, "\n");
}

static void print_egress(FILE *f, const msgpack_object *a) {
        fprintf(f, "\nNetwork egress (%zu decisions):\n", rep_len(a));
        for (size_t i = 0; i < rep_len(a); i++) {
                const msgpack_object *e = &a->via.array.ptr[i];
                char t[40], h[300], d[16], why[256];
                fprintf(f, "  %s  %s:%" PRId64 "  %s", rep_str(e, "time", t, sizeof(t), "?"), rep_str(e, "host", h, sizeof(h), "?"),
                        rep_int(e, "port", 0), rep_str(e, "decision", d, sizeof(d), "?"));
                if (rep_get(e, "reason"))
                        fprintf(f, " (%s)", rep_str(e, "reason", why, sizeof(why), ""));
                if (rep_get(e, "bytes_up"))
                        fprintf(f, "  %" PRId64 " bytes up, %" PRId64 " down", rep_int(e, "bytes_up", 0), rep_int(e, "bytes_down", 0));
                fprintf(f, "\n");
        }
}

static void print_tokens(FILE *f, const msgpack_object *a) {
        fprintf(f, "\nTokens (%zu, by accessor):\n", rep_len(a));
        for (size_t i = 0; i < rep_len(a); i++) {
                const msgpack_object *t = &a->via.array.ptr[i], *issued = rep_get(t, "issued");
                char acc[128], st[16], when[40];
                fprintf(f, "  %s  policies ", rep_str(t, "accessor", acc, sizeof(acc), "?"));
                print_strings(f, rep_get(t, "policies"), ",");
                fprintf(f, "  issued %zu time(s), first at %s  %s", rep_len(issued),
                        rep_len(issued) ? obj_str(&issued->via.array.ptr[0], when, sizeof(when), "?") : "?",
                        rep_str(t, "status", st, sizeof(st), "?"));
                if (rep_get(t, "revoked_at"))
                        fprintf(f, " at %s", rep_str(t, "revoked_at", when, sizeof(when), "?"));
                fprintf(f, "\n");
        }
}

static void print_changes(FILE *f, const msgpack_object *c) {
        const msgpack_object *files = rep_get(c, "files");
        char layer[32];
        fprintf(f, "\nChange layer: %s", rep_str(c, "layer", layer, sizeof(layer), "?"));
        if (files)
                fprintf(f, ", %zu change(s):", rep_len(files));
        fprintf(f, "\n");
        for (size_t i = 0; i < rep_len(files); i++) {
                const msgpack_object *e = &files->via.array.ptr[i];
                char ch[16], p[4096], h[80];
                fprintf(f, "  %-8s %s%s  %s\n", rep_str(e, "change", ch, sizeof(ch), "?"), rep_str(e, "path", p, sizeof(p), "?"),
                        rep_bool(e, "guarded") ? " [guarded]" : "", rep_str(e, "sha256", h, sizeof(h), ""));
        }
}

static void print_promotions(FILE *f, const msgpack_object *a, const msgpack_object *discarded) {
        for (size_t i = 0; i < rep_len(a); i++) {
                const msgpack_object *e = &a->via.array.ptr[i], *files = rep_get(e, "files");
                char t[40];
                fprintf(f, "\nPromoted at %s by ", rep_str(e, "time", t, sizeof(t), "?"));
                print_peer(f, rep_get(e, "by"));
                fprintf(f, ": %zu path(s), %zu conflict(s)\n", rep_len(files), rep_len(rep_get(e, "conflicts")));
                for (size_t k = 0; files && files->type == MSGPACK_OBJECT_MAP && k < files->via.map.size; k++) {
                        char p[4096], h[80];
                        fprintf(f, "  %s  %s\n", obj_str(&files->via.map.ptr[k].key, p, sizeof(p), "?"),
                                obj_str(&files->via.map.ptr[k].val, h, sizeof(h), "(not a file)"));
                }
        }
        if (discarded) {
                char t[40];
                fprintf(f, "\nDiscarded at %s by ", rep_str(discarded, "time", t, sizeof(t), "?"));
                print_peer(f, rep_get(discarded, "by"));
                fprintf(f, "\n");
        }
        if (!rep_len(a) && !discarded)
                fprintf(f, "\nNothing promoted or discarded.\n");
}

static void print_timeline(FILE *f, const msgpack_object *a) {
        fprintf(f, "\nTimeline (%zu audit records):\n", rep_len(a));
        for (size_t i = 0; i < rep_len(a); i++) {
                const msgpack_object *e = &a->via.array.ptr[i];
                char t[40], s[1024];
                fprintf(f, "  %6" PRId64 "  %s  %s%s\n", rep_int(e, "seq", 0), rep_str(e, "time", t, sizeof(t), "?"),
                        rep_str(e, "summary", s, sizeof(s), "?"), rep_bool(e, "verified") ? "" : "   [NOT VERIFIED]");
        }
}

void report_print_text(FILE *f, const msgpack_object *r) {
        const msgpack_object *req = rep_get(r, "requested_by"), *pol = rep_get(r, "policy"), *ex = rep_get(r, "exit");
        char id[80], task[128], state[32], ws[4096], b1[128], b2[256], b3[64];
        fprintf(f, "Sandbox %s: task %s, %s\n", rep_str(r, "id", id, sizeof(id), "?"), rep_str(r, "task", task, sizeof(task), "?"),
                rep_str(r, "state", state, sizeof(state), "no longer in the sandbox list"));
        print_verification(f, rep_get(r, "verification"));
        fprintf(f, "Asked by:   ");
        if (req) {
                print_peer(f, req);
                fprintf(f, " at %s\n", rep_str(req, "time", b1, sizeof(b1), "?"));
        } else
                fprintf(f, "not recorded\n");
        fprintf(f, "Policy:     task %s, sha256 %s, from %s\n", rep_str(pol, "task", task, sizeof(task), "?"),
                rep_str(pol, "sha256", b1, sizeof(b1), "?"), rep_str(pol, "source", b2, sizeof(b2), "?"));
        fprintf(f, "Workspace:  %s\nCommand:    ", rep_str(r, "workspace", ws, sizeof(ws), "?"));
        print_strings(f, rep_get(r, "argv"), " ");
        fprintf(f, "\nEnv names:  ");
        print_strings(f, rep_get(r, "env_names"), " ");
        fprintf(f, "\nEnded:      ");
        if (ex)
                fprintf(f, "%s, exit code %" PRId64 ", signal %" PRId64 "%s%s at %s\n", rep_str(ex, "state", state, sizeof(state), "ended"),
                        rep_int(ex, "exit_code", 0), rep_int(ex, "signal", 0), rep_get(ex, "reason") ? ", " : "",
                        rep_str(ex, "reason", b2, sizeof(b2), ""), rep_str(ex, "time", b3, sizeof(b3), "?"));
        else
                fprintf(f, "still running\n");
        print_usage(f, rep_get(r, "usage"));
        print_egress(f, rep_get(r, "egress"));
        print_tokens(f, rep_get(r, "tokens"));
        fprintf(f, "\nApprovals: %zu; incidents (freezes, revocations, alerts): %zu\n", rep_len(rep_get(r, "approvals")),
                rep_len(rep_get(r, "incidents")));
        const msgpack_object *snaps = rep_get(r, "snapshots");
        for (size_t i = 0; i < rep_len(snaps); i++) {
                char sp[4096];
                fprintf(f, "Snapshot:   %s\n", obj_str(&snaps->via.array.ptr[i], sp, sizeof(sp), "?"));
        }
        print_changes(f, rep_get(r, "changes"));
        print_promotions(f, rep_get(r, "promotions"), rep_get(r, "discarded"));
        print_timeline(f, rep_get(r, "timeline"));
        fprintf(f, "\nBuilt from audit records (seq): ");
        const msgpack_object *seqs = rep_get(rep_get(r, "verification"), "seqs");
        for (size_t i = 0; i < rep_len(seqs); i++)
                fprintf(f, "%s%" PRIu64, i ? " " : "", seqs->via.array.ptr[i].via.u64);
        fprintf(f, "\n");
}
