/* sandbox.diff / sandbox.promote / sandbox.discard: reviewing what a sandbox
 * changed before anything reaches the real workspace. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auditlog.h"
#include "log.h"
#include "macro.h"
#include "policy.h"
#include "report.h"
#include "sandbox.h"
#include "server.h"
#include "workspace.h"

static sandbox *lookup_layer(rpc_ctx *ctx, rpc_error *err, char *upper, size_t n) {
        _cleanup_free_ char *id = rpc_param_strdup(ctx->params, "id");
        sandbox *s = id ? sandbox_find(ctx->m, id) : NULL;
        if (!s) {
                rpc_error_set(err, RPC_E_NOT_FOUND, "no sandbox with id '%.64s'", id ? id : "");
                return NULL;
        }
        if (s->workspace_mode != WORKSPACE_OVERLAY) {
                rpc_error_set(err, RPC_E_NOT_FOUND, "sandbox %s has no change layer (its workspace was not copy-on-write)", s->id);
                return NULL;
        }
        if (s->discarded) {
                rpc_error_set(err, RPC_E_NOT_FOUND, "sandbox %s: its changes were discarded", s->id);
                return NULL;
        }
        snprintf(upper, n, "%s/upper", s->dir);
        return s;
}

int rpc_sandbox_diff(rpc_ctx *ctx, rpc_error *err) {
        char upper[PATH_MAX];
        sandbox *s = lookup_layer(ctx, err, upper, sizeof(upper));
        if (!s)
                return -ENOENT;
        bool patch = rpc_param_bool(ctx->params, "patch", false);
        ws_changes c = { 0 };
        _cleanup_free_ char *why = NULL;
        int r = workspace_diff(s->workspace, upper, &c, &why);
        if (r < 0) {
                rpc_error_set(err, RPC_E_INTERNAL, "sandbox %s: %s", s->id, why ? why : strerror(-r));
                return r;
        }
        msgpack_pack_array(ctx->pk, c.n);
        for (size_t i = 0; i < c.n; i++) {
                const ws_change *ch = &c.v[i];
                msgpack_pack_map(ctx->pk, patch ? 6 : 4);
                mp_pack_kv_str(ctx->pk, "path", ch->path);
                mp_pack_kv_str(ctx->pk, "change", ws_change_kind_to_string(ch->change));
                char type[2] = { ch->type, 0 };
                mp_pack_kv_str(ctx->pk, "type", streq(type, "f") ? "file" : streq(type, "d") ? "directory"
                                                  : streq(type, "l") ? "symlink" : "other");
                mp_pack_kv_bool(ctx->pk, "guarded", ch->guarded);
                if (patch) {
                        char p[PATH_MAX * 2];
                        snprintf(p, sizeof(p), "%s/%s", s->workspace, ch->path);
                        mp_pack_kv_str(ctx->pk, "host_path", p);
                        snprintf(p, sizeof(p), "%s/%s", upper, ch->path);
                        mp_pack_kv_str(ctx->pk, "layer_path", p);
                }
        }
        ws_changes_free(&c);
        return 0;
}

static void pack_items(msgpack_packer *pk, const ws_items *l, bool as_map, const char *detail_key) {
        msgpack_pack_array(pk, l->n);
        for (size_t i = 0; i < l->n; i++) {
                if (!as_map) {
                        mp_pack_cstr(pk, l->v[i].path);
                        continue;
                }
                msgpack_pack_map(pk, 2);
                mp_pack_kv_str(pk, "path", l->v[i].path);
                mp_pack_kv_str(pk, detail_key, l->v[i].detail);
        }
}

int rpc_sandbox_promote(rpc_ctx *ctx, rpc_error *err) {
        char upper[PATH_MAX];
        sandbox *s = lookup_layer(ctx, err, upper, sizeof(upper));
        if (!s)
                return -ENOENT;
        if (!sandbox_ended(s)) {
                rpc_error_set(err, RPC_E_POLICY_DENIED, "sandbox %s is still running: wait for it or kill it before promoting", s->id);
                return -EBUSY;
        }
        _cleanup_strv_free_ char **paths = rpc_param_strv(ctx->params, "paths");
        for (size_t i = 0; paths && paths[i]; i++)
                if (paths[i][0] == '/' || strstr(paths[i], "..") || !paths[i][0]) {
                        rpc_error_set(err, RPC_E_INVALID_PARAMS, "paths are relative to the workspace, without '..': '%.200s'", paths[i]);
                        return -EINVAL;
                }
        bool hooks = rpc_param_bool(ctx->params, "include_hooks", false);
        ws_promote_result res = { 0 };
        _cleanup_free_ char *why = NULL;
        int r = workspace_promote(s->workspace, upper, s->started_ns, paths, hooks, &res, &why);
        if (r < 0) {
                rpc_error_set(err, RPC_E_INTERNAL, "sandbox %s: %s", s->id, why ? why : strerror(-r));
                return r;
        }
        log_sandbox(LOG_INFO, s->id, s->task, "promote", "sandbox %s: promoted %zu paths into %s (%zu conflicts, %zu guarded skipped)", s->id, res.promoted.n,
                 s->workspace, res.conflicts.n, res.guarded.n);
        {
                json_object *ev = json_object_new_object(), *pr = json_object_new_object(), *cf = json_object_new_array(),
                            *gd = json_object_new_array();
                for (size_t i = 0; i < res.promoted.n; i++)
                        json_object_object_add(pr, res.promoted.v[i].path,
                                               res.promoted.v[i].detail[0] ? json_object_new_string(res.promoted.v[i].detail) : NULL);
                for (size_t i = 0; i < res.conflicts.n; i++)
                        json_object_array_add(cf, json_object_new_string(res.conflicts.v[i].path));
                for (size_t i = 0; i < res.guarded.n; i++)
                        json_object_array_add(gd, json_object_new_string(res.guarded.v[i].path));
                json_object_object_add(ev, "workspace", json_object_new_string(s->workspace));
                json_object_object_add(ev, "promoted_sha256", pr);
                json_object_object_add(ev, "conflicts", cf);
                json_object_object_add(ev, "guarded_skipped", gd);
                json_object_object_add(ev, "include_hooks", json_object_new_boolean(hooks));
                report_annotate_peer(ev, ctx->conn);
                audit_event(ctx->m, "sandbox.promote", s->id, ev);
        }
        msgpack_pack_map(ctx->pk, 5);
        mp_pack_cstr(ctx->pk, "promoted");
        pack_items(ctx->pk, &res.promoted, false, NULL);
        mp_pack_cstr(ctx->pk, "conflicts");
        pack_items(ctx->pk, &res.conflicts, true, "reason");
        mp_pack_cstr(ctx->pk, "guarded");
        pack_items(ctx->pk, &res.guarded, true, "change");
        mp_pack_cstr(ctx->pk, "sha256");
        size_t nh = 0;
        for (size_t i = 0; i < res.promoted.n; i++)
                if (res.promoted.v[i].detail[0])
                        nh++;
        msgpack_pack_map(ctx->pk, nh);
        for (size_t i = 0; i < res.promoted.n; i++)
                if (res.promoted.v[i].detail[0])
                        mp_pack_kv_str(ctx->pk, res.promoted.v[i].path, res.promoted.v[i].detail);
        mp_pack_kv_str(ctx->pk, "workspace", s->workspace);
        ws_promote_result_free(&res);
        return 0;
}

int rpc_sandbox_discard(rpc_ctx *ctx, rpc_error *err) {
        char upper[PATH_MAX];
        sandbox *s = lookup_layer(ctx, err, upper, sizeof(upper));
        if (!s)
                return -ENOENT;
        if (!sandbox_ended(s)) {
                rpc_error_set(err, RPC_E_POLICY_DENIED, "sandbox %s is still running: kill it before discarding its changes", s->id);
                return -EBUSY;
        }
        char work[PATH_MAX];
        snprintf(work, sizeof(work), "%s/work", s->dir);
        int r = workspace_remove_tree(upper);
        if (r == 0)
                r = workspace_remove_tree(work);
        if (r < 0) {
                rpc_error_set(err, RPC_E_INTERNAL, "sandbox %s: cannot remove its change layer: %s", s->id, strerror(-r));
                return r;
        }
        s->discarded = true;
        (void) sandbox_save_meta(s);
        log_sandbox(LOG_INFO, s->id, s->task, "discard", "sandbox %s: changes discarded", s->id);
        json_object *ev = json_object_new_object();
        report_annotate_peer(ev, ctx->conn);
        audit_event(ctx->m, "sandbox.discard", s->id, ev);
        msgpack_pack_map(ctx->pk, 0);
        return 0;
}
