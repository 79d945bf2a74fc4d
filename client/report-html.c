/* agentctl report --html: one self-contained page (inline CSS, no script, no
 * external resource; a CSP of default-src 'none' makes the browser refuse any
 * that a value could smuggle in). Every value from the report is escaped. */
#include "report.h"

#include <inttypes.h>
#include <string.h>

static void esc_n(FILE *f, const char *p, size_t n) {
        for (size_t i = 0; i < n; i++) {
                switch (p[i]) {
                case '<': fputs("&lt;", f); break;
                case '>': fputs("&gt;", f); break;
                case '&': fputs("&amp;", f); break;
                case '"': fputs("&quot;", f); break;
                case '\'': fputs("&#39;", f); break;
                default:
                        if ((unsigned char) p[i] < 0x20 && p[i] != '\n' && p[i] != '\t')
                                fputs("&#xfffd;", f);
                        else
                                fputc(p[i], f);
                }
        }
}

/* An object as escaped text: strings as they are, numbers in decimal, anything else as "?". */
static void val(FILE *f, const msgpack_object *o) {
        if (!o)
                fputs("&mdash;", f);
        else if (o->type == MSGPACK_OBJECT_STR)
                esc_n(f, o->via.str.ptr, o->via.str.size);
        else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                fprintf(f, "%" PRIu64, o->via.u64);
        else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
                fprintf(f, "%" PRId64, o->via.i64);
        else if (o->type == MSGPACK_OBJECT_BOOLEAN)
                fputs(o->via.boolean ? "yes" : "no", f);
        else if (o->type == MSGPACK_OBJECT_ARRAY)
                for (uint32_t i = 0; i < o->via.array.size; i++) {
                        if (i)
                                fputc(' ', f);
                        val(f, &o->via.array.ptr[i]);
                }
        else
                fputs("?", f);
}

/* The HTML text `before`, then the value. */
static void put_val(FILE *f, const char *before, const msgpack_object *o) {
        fputs(before, f);
        val(f, o);
}

static void kv(FILE *f, const char *label, const msgpack_object *o) {
        fprintf(f, "<tr><th>%s</th><td>", label);
        val(f, o);
        fputs("</td></tr>\n", f);
}

static void peer(FILE *f, const msgpack_object *p) {
        if (!p) {
                fputs("not recorded", f);
                return;
        }
        put_val(f, "<b>", rep_get(p, "comm"));
        put_val(f, "</b> (pid ", rep_get(p, "pid"));
        put_val(f, ", uid ", rep_get(p, "uid"));
        put_val(f, ", <code>", rep_get(p, "exe"));
        fputs("</code>)", f);
}

static const char CSS[] =
        "body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}"
        "main{max-width:1100px;margin:0 auto;padding:24px}"
        "h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d5d9e0;padding-bottom:4px}"
        ".sub{color:#5a6372;margin-bottom:16px}"
        ".banner{padding:12px 16px;border-radius:6px;font-weight:600;margin:12px 0}"
        ".ok{background:#e3f4e8;border:1px solid #7cc495;color:#14532d}.bad{background:#fde8e8;border:1px solid #e08a8a;color:#7f1d1d}"
        "table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #d5d9e0}"
        "th,td{text-align:left;padding:5px 10px;border-bottom:1px solid #eceef2;vertical-align:top}"
        "th{width:170px;color:#4a5262;font-weight:600;background:#fafbfc}"
        "thead th{width:auto}code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px;word-break:break-all}"
        ".allowed{color:#15803d;font-weight:600}.denied{color:#b91c1c;font-weight:600}"
        "ol.tl{list-style:none;padding:0;margin:0;border-left:3px solid #c9ced8;margin-left:10px}"
        "ol.tl li{position:relative;padding:6px 0 6px 22px}"
        "ol.tl li:before{content:'';position:absolute;left:-10px;top:10px;width:13px;height:13px;border-radius:50%;"
        "background:#8a94a6;border:2px solid #f5f6f8}"
        "ol.tl li.k-spawn:before{background:#2563eb}ol.tl li.k-exit:before{background:#475569}"
        "ol.tl li.k-egress:before{background:#0891b2}ol.tl li.k-token:before{background:#a16207}"
        "ol.tl li.k-promote:before{background:#15803d}ol.tl li.k-incident:before{background:#b91c1c}"
        "ol.tl li.unverified{background:#fde8e8}"
        ".t{color:#5a6372;font-family:ui-monospace,monospace;font-size:12px;margin-right:8px}"
        ".seq{color:#8a94a6;font-size:12px;margin-left:6px}.flag{color:#b91c1c;font-weight:700;margin-left:8px}"
        "footer{margin-top:28px;color:#5a6372;font-size:13px}";

static const char *kind_class(const char *type) {
        if (strcmp(type, "sandbox.spawn") == 0)
                return "k-spawn";
        if (strcmp(type, "sandbox.exit") == 0)
                return "k-exit";
        if (strncmp(type, "egress", 6) == 0)
                return "k-egress";
        if (strncmp(type, "token", 5) == 0)
                return "k-token";
        if (strcmp(type, "sandbox.promote") == 0 || strcmp(type, "sandbox.discard") == 0)
                return "k-promote";
        if (strcmp(type, "revoke") == 0 || strcmp(type, "alert") == 0)
                return "k-incident";
        return "k-other";
}

static void html_verification(FILE *f, const msgpack_object *v) {
        const msgpack_object *probs = rep_get(v, "problems");
        if (rep_bool(v, "ok")) {
                fprintf(f, "<div class=\"banner ok\" id=\"verified\">Verified: %zu audit records of this sandbox; HMACs and the hash chain "
                           "are intact (log checked to seq %" PRId64 ").</div>\n",
                        rep_len(rep_get(v, "seqs")), rep_int(v, "chain_last_seq", 0));
                return;
        }
        fputs("<div class=\"banner bad\" id=\"verified\">NOT VERIFIED: the audit log does not verify; do not trust this report.", f);
        if (!rep_bool(v, "chain_ok")) {
                fprintf(f, "<br>Chain broken at seq %" PRId64 ": ", rep_int(v, "first_bad_seq", 0));
                val(f, rep_get(v, "reason"));
        }
        for (size_t i = 0; i < rep_len(probs); i++) {
                fprintf(f, "<br>seq %" PRId64 " (", rep_int(&probs->via.array.ptr[i], "seq", 0));
                val(f, rep_get(&probs->via.array.ptr[i], "type"));
                put_val(f, "): ", rep_get(&probs->via.array.ptr[i], "problem"));
        }
        fputs("</div>\n", f);
}

static void html_summary(FILE *f, const msgpack_object *r) {
        const msgpack_object *req = rep_get(r, "requested_by"), *pol = rep_get(r, "policy"), *ex = rep_get(r, "exit"),
                             *u = rep_get(r, "usage");
        fputs("<h2>Who asked, and what ran</h2>\n<table>\n<tr><th>Asked by</th><td>", f);
        peer(f, req);
        put_val(f, " at ", rep_get(req, "time"));
        fputs("</td></tr>\n", f);
        kv(f, "Task", rep_get(pol, "task"));
        put_val(f, "<tr><th>Policy SHA-256</th><td class=\"mono\">", rep_get(pol, "sha256"));
        fputs("</td></tr>\n", f);
        kv(f, "Policy from", rep_get(pol, "source"));
        kv(f, "Capabilities", rep_get(pol, "capabilities"));
        kv(f, "Workspace", rep_get(r, "workspace"));
        put_val(f, "<tr><th>Command</th><td class=\"mono\">", rep_get(r, "argv"));
        fputs("</td></tr>\n", f);
        kv(f, "Environment names", rep_get(r, "env_names"));
        fputs("<tr><th>Ended</th><td>", f);
        if (ex) {
                val(f, rep_get(ex, "state"));
                fprintf(f, ", exit code %" PRId64 ", signal %" PRId64, rep_int(ex, "exit_code", 0), rep_int(ex, "signal", 0));
                if (rep_get(ex, "reason")) {
                        put_val(f, ", ", rep_get(ex, "reason"));
                }
                put_val(f, " at ", rep_get(ex, "time"));
        } else
                fputs("still running", f);
        fputs("</td></tr>\n<tr><th>Resources</th><td>", f);
        if (rep_get(u, "cpu_usec"))
                fprintf(f, "CPU %.1f ms; ", rep_int(u, "cpu_usec", 0) / 1000.0);
        if (rep_get(u, "memory_peak_bytes"))
                fprintf(f, "peak memory %.1f MiB; ", rep_int(u, "memory_peak_bytes", 0) / 1048576.0);
        if (rep_get(u, "layer_bytes"))
                fprintf(f, "%" PRId64 " bytes written to the change layer", rep_int(u, "layer_bytes", 0));
        if (!u)
                fputs("not recorded", f);
        fputs("</td></tr>\n</table>\n", f);
}

static void html_egress(FILE *f, const msgpack_object *a) {
        fprintf(f, "<h2>Network egress (%zu)</h2>\n", rep_len(a));
        if (!rep_len(a)) {
                fputs("<p>No connection was attempted.</p>\n", f);
                return;
        }
        fputs("<table><thead><tr><th>Time</th><th>Host</th><th>Port</th><th>Decision</th><th>Bytes up / down</th></tr></thead>\n", f);
        for (size_t i = 0; i < rep_len(a); i++) {
                const msgpack_object *e = &a->via.array.ptr[i];
                char d[16];
                put_val(f, "<tr><td class=\"mono\">", rep_get(e, "time"));
                put_val(f, "</td><td>", rep_get(e, "host"));
                put_val(f, "</td><td>", rep_get(e, "port"));
                fprintf(f, "</td><td class=\"%s\">", strcmp(rep_str(e, "decision", d, sizeof(d), ""), "allowed") == 0 ? "allowed" : "denied");
                val(f, rep_get(e, "decision"));
                if (rep_get(e, "reason")) {
                        put_val(f, ": ", rep_get(e, "reason"));
                }
                fputs("</td><td>", f);
                if (rep_get(e, "bytes_up"))
                        fprintf(f, "%" PRId64 " / %" PRId64, rep_int(e, "bytes_up", 0), rep_int(e, "bytes_down", 0));
                fputs("</td></tr>\n", f);
        }
        fputs("</table>\n", f);
}

static void html_tokens(FILE *f, const msgpack_object *a) {
        fprintf(f, "<h2>Tokens (%zu)</h2>\n", rep_len(a));
        if (!rep_len(a)) {
                fputs("<p>No token was issued.</p>\n", f);
                return;
        }
        fputs("<table><thead><tr><th>Accessor</th><th>Policies</th><th>Issued</th><th>Status</th></tr></thead>\n", f);
        for (size_t i = 0; i < rep_len(a); i++) {
                const msgpack_object *t = &a->via.array.ptr[i];
                put_val(f, "<tr><td class=\"mono\">", rep_get(t, "accessor"));
                put_val(f, "</td><td>", rep_get(t, "policies"));
                put_val(f, "</td><td class=\"mono\">", rep_get(t, "issued"));
                put_val(f, "</td><td>", rep_get(t, "status"));
                if (rep_get(t, "revoked_at")) {
                        put_val(f, " at ", rep_get(t, "revoked_at"));
                }
                fputs("</td></tr>\n", f);
        }
        fputs("</table>\n", f);
}

static void html_changes(FILE *f, const msgpack_object *r) {
        const msgpack_object *c = rep_get(r, "changes"), *files = rep_get(c, "files"), *pr = rep_get(r, "promotions"),
                             *dis = rep_get(r, "discarded");
        put_val(f, "<h2>Changes</h2>\n<p>Change layer: ", rep_get(c, "layer"));
        if (files)
                fprintf(f, ", %zu change(s) not promoted", rep_len(files));
        fputs("</p>\n", f);
        if (rep_len(files)) {
                fputs("<table><thead><tr><th>Change</th><th>Path</th><th>SHA-256 (in the layer)</th></tr></thead>\n", f);
                for (size_t i = 0; i < rep_len(files); i++) {
                        const msgpack_object *e = &files->via.array.ptr[i];
                        put_val(f, "<tr><td>", rep_get(e, "change"));
                        put_val(f, "</td><td class=\"mono\">", rep_get(e, "path"));
                        if (rep_bool(e, "guarded"))
                                fputs(" <b>[guarded]</b>", f);
                        put_val(f, "</td><td class=\"mono\">", rep_get(e, "sha256"));
                        fputs("</td></tr>\n", f);
                }
                fputs("</table>\n", f);
        }
        for (size_t i = 0; i < rep_len(pr); i++) {
                const msgpack_object *e = &pr->via.array.ptr[i], *m = rep_get(e, "files");
                put_val(f, "<p><b>Promoted</b> at ", rep_get(e, "time"));
                fputs(" by ", f);
                peer(f, rep_get(e, "by"));
                fprintf(f, ": %zu path(s), %zu conflict(s)</p>\n", rep_len(m), rep_len(rep_get(e, "conflicts")));
                if (!rep_len(m))
                        continue;
                fputs("<table><thead><tr><th>Path</th><th>SHA-256 (promoted)</th></tr></thead>\n", f);
                for (uint32_t k = 0; m->type == MSGPACK_OBJECT_MAP && k < m->via.map.size; k++) {
                        put_val(f, "<tr><td class=\"mono\">", &m->via.map.ptr[k].key);
                        put_val(f, "</td><td class=\"mono\">", m->via.map.ptr[k].val.type == MSGPACK_OBJECT_NIL ? NULL : &m->via.map.ptr[k].val);
                        fputs("</td></tr>\n", f);
                }
                fputs("</table>\n", f);
        }
        if (dis) {
                put_val(f, "<p><b>Discarded</b> at ", rep_get(dis, "time"));
                fputs(" by ", f);
                peer(f, rep_get(dis, "by"));
                fputs("</p>\n", f);
        }
}

static void html_timeline(FILE *f, const msgpack_object *a) {
        fprintf(f, "<h2>Timeline (%zu audit records)</h2>\n<ol class=\"tl\" id=\"timeline\">\n", rep_len(a));
        for (size_t i = 0; i < rep_len(a); i++) {
                const msgpack_object *e = &a->via.array.ptr[i];
                char type[64];
                bool ok = rep_bool(e, "verified");
                fprintf(f, "<li class=\"%s%s\" data-seq=\"%" PRId64 "\"><span class=\"t\">", kind_class(rep_str(e, "type", type, sizeof(type), "")),
                        ok ? "" : " unverified", rep_int(e, "seq", 0));
                val(f, rep_get(e, "time"));
                put_val(f, "</span>", rep_get(e, "summary"));
                fprintf(f, "<span class=\"seq\">seq %" PRId64 "</span>%s</li>\n", rep_int(e, "seq", 0),
                        ok ? "" : "<span class=\"flag\">NOT VERIFIED</span>");
        }
        fputs("</ol>\n", f);
}

void report_print_html(FILE *f, const msgpack_object *r) {
        fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
              "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n"
              "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>agentd report: sandbox ", f);
        val(f, rep_get(r, "id"));
        fprintf(f, "</title>\n<style>%s</style>\n</head><body><main>\n<h1>Sandbox ", CSS);
        val(f, rep_get(r, "id"));
        put_val(f, "</h1>\n<div class=\"sub\">task ", rep_get(r, "task"));
        put_val(f, " &middot; ", rep_get(r, "state"));
        fputs("</div>\n", f);
        html_verification(f, rep_get(r, "verification"));
        html_summary(f, r);
        html_egress(f, rep_get(r, "egress"));
        html_tokens(f, rep_get(r, "tokens"));
        fprintf(f, "<h2>Approvals and incidents</h2>\n<p>%zu approval(s); %zu incident record(s) (freezes, revocations, alerts): "
                   "see the timeline.</p>\n",
                rep_len(rep_get(r, "approvals")), rep_len(rep_get(r, "incidents")));
        if (rep_len(rep_get(r, "snapshots"))) {
                put_val(f, "<p>Forensic snapshots: <code>", rep_get(r, "snapshots"));
                fputs("</code></p>\n", f);
        }
        html_changes(f, r);
        html_timeline(f, rep_get(r, "timeline"));
        put_val(f, "<footer>Built by agentd from the audit records with seq ", rep_get(rep_get(r, "verification"), "seqs"));
        fputs(".</footer>\n</main></body></html>\n", f);
}
