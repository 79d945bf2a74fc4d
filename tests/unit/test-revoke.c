/* incident/revoke.c on a composed daemon (fixture.h): credentials.revoke as
 * `agentctl revoke --all` sends it freezes the running sandboxes, then kills
 * them, writes the lockdown marker and refuses new spawns until agentd.unlock;
 * a marker that cannot be written makes the revoke an error (fail closed); a
 * marker left by an earlier run locks the daemon at start. With tests/vaultdev:
 * revoking one sandbox revokes its token at Vault and its broker socket
 * refuses it a token from then on. */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "fixture-vault.h"
#include "fixture.h"
#include "unit.h"

static fixture f;

static const char marker_text[] = "locked by credentials.revoke all\n";

static void marker_path(char *buf, size_t size) {
        snprintf(buf, size, "%s/agentd/lockdown", f.state_home);
}

static void pack_revoke_all(msgpack_packer *pk, void *arg) {
        (void) arg;
        msgpack_pack_map(pk, 1);
        mp_pack_kv_bool(pk, "all", true);
}

static void pack_revoke_sandbox_freeze_only(msgpack_packer *pk, void *arg) {
        msgpack_pack_map(pk, 2);
        mp_pack_kv_str(pk, "sandbox", arg);
        mp_pack_kv_bool(pk, "freeze_only", true);
}

static bool strv_has(const msgpack_object *a, const char *s) {
        ck_assert(a && a->type == MSGPACK_OBJECT_ARRAY);
        for (uint32_t i = 0; i < a->via.array.size; i++) {
                const msgpack_object *e = &a->via.array.ptr[i];
                if (e->type == MSGPACK_OBJECT_STR && e->via.str.size == strlen(s) && memcmp(e->via.str.ptr, s, e->via.str.size) == 0)
                        return true;
        }
        return false;
}

static void assert_killed(int c, const char *id) {
        fixture_reply r;
        ck_assert(fixture_call_str(&f, c, &r, "sandbox.wait", "id", id, NULL));
        const msgpack_object *sig = fixture_get(r.result, "signal");
        ck_assert(sig && sig->type == MSGPACK_OBJECT_POSITIVE_INTEGER);
        ck_assert_uint_eq(sig->via.u64, SIGKILL);
        fixture_reply_free(&r);
        char state[32];
        fixture_sandbox_state(&f, c, id, state, sizeof(state));
        ck_assert_str_eq(state, "killed");
}

static void assert_spawn_refused(int c) {
        fixture_reply r;
        const char *argv[] = { "/bin/sh", "-c", "exit 0", NULL };
        ck_assert(!fixture_spawn(&f, c, &(fixture_spawn_req) { .task = "default", .workspace = f.workspace, .argv = argv }, NULL, 0, &r));
        ck_assert_str_eq(r.code, "locked_down");
        fixture_reply_free(&r);
}

/* The states the subscribed stream reported for `id`, in order, as "a,b,c". */
static void states_seen(fixture_stream *st, const char *id, char *buf, size_t size) {
        fixture_reply msg;
        buf[0] = 0;
        while (fixture_stream_next(&f, st, 200, &msg)) {
                char method[64], sid[64], state[32];
                const msgpack_object *p = fixture_notification(&msg, method, sizeof(method));
                if (p && strcmp(method, "sandbox.state") == 0 && fixture_get_str(p, "id", sid, sizeof(sid)) &&
                    strcmp(sid, id) == 0 && fixture_get_str(p, "state", state, sizeof(state))) {
                        size_t l = strlen(buf);
                        snprintf(buf + l, size - l, "%s%s", l ? "," : "", state);
                }
                fixture_reply_free(&msg);
        }
}

START_TEST(test_revoke_all_freezes_kills_and_locks_down) {
        fixture_init(&f);
        fixture_start(&f, NULL);
        int c = fixture_connect(&f);
        fixture_reply r;
        fixture_stream st;
        int ev = fixture_subscribe(&f, &st);

        char a[64], b[64];
        fixture_spawn_sh(&f, c, "default", "exec sleep 60", a, sizeof(a));
        fixture_spawn_sh(&f, c, "default", "exec sleep 60", b, sizeof(b));

        ck_assert(fixture_call(&f, c, "credentials.revoke", pack_revoke_all, NULL, &r));
        ck_assert_uint_eq(fixture_u64(r.result, "frozen"), 2);
        ck_assert_uint_eq(fixture_u64(r.result, "killed"), 2);
        ck_assert_uint_eq(fixture_u64(r.result, "tokens_revoked"), 0);
        const msgpack_object *ld = fixture_get(r.result, "locked_down");
        ck_assert(ld && ld->type == MSGPACK_OBJECT_BOOLEAN && ld->via.boolean);
        ck_assert(strv_has(fixture_get(r.result, "sandboxes"), a));
        ck_assert(strv_has(fixture_get(r.result, "sandboxes"), b));
        const msgpack_object *fl = fixture_get(r.result, "failures");
        ck_assert(fl && fl->type == MSGPACK_OBJECT_ARRAY && fl->via.array.size == 0);
        /* A snapshot per sandbox, taken while frozen: the directories exist. */
        const msgpack_object *snaps = fixture_get(r.result, "snapshots");
        ck_assert(snaps && snaps->type == MSGPACK_OBJECT_ARRAY && snaps->via.array.size == 2);
        for (uint32_t i = 0; i < 2; i++) {
                char dir[PATH_MAX];
                struct stat sb;
                snprintf(dir, sizeof(dir), "%.*s", (int) snaps->via.array.ptr[i].via.str.size, snaps->via.array.ptr[i].via.str.ptr);
                ck_assert_msg(stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode), "snapshot %s", dir);
        }
        fixture_reply_free(&r);

        assert_killed(c, a);
        assert_killed(c, b);
        /* Frozen first (through the state writer: an event), then killed. */
        char seen[256];
        states_seen(&st, a, seen, sizeof(seen));
        ck_assert_msg(strstr(seen, "frozen,killed") != NULL, "states of %s: %s", a, seen);

        /* The marker, durable, in the state directory. */
        char path[PATH_MAX], text[128] = "";
        marker_path(path, sizeof(path));
        FILE *fp = fopen(path, "re");
        ck_assert_msg(fp != NULL, "no lockdown marker at %s", path);
        ck_assert_ptr_nonnull(fgets(text, sizeof(text), fp));
        fclose(fp);
        ck_assert_str_eq(text, marker_text);

        assert_spawn_refused(c);
        ck_assert(fixture_call(&f, c, "agentd.status", NULL, NULL, &r));
        ld = fixture_get(r.result, "locked_down");
        ck_assert(ld && ld->type == MSGPACK_OBJECT_BOOLEAN && ld->via.boolean);
        fixture_reply_free(&r);

        /* Unlock: the marker goes, spawning works again. */
        ck_assert(fixture_call(&f, c, "agentd.unlock", NULL, NULL, &r));
        const msgpack_object *was = fixture_get(r.result, "was_locked_down");
        ck_assert(was && was->type == MSGPACK_OBJECT_BOOLEAN && was->via.boolean);
        fixture_reply_free(&r);
        ck_assert_int_eq(access(path, F_OK), -1);
        ck_assert_int_eq(errno, ENOENT);
        char id[64];
        fixture_spawn_sh(&f, c, "default", "exit 0", id, sizeof(id));
        fixture_call_ok(&f, c, "sandbox.wait", "id", id, NULL);
        ck_assert(fixture_call(&f, c, "agentd.unlock", NULL, NULL, &r));
        was = fixture_get(r.result, "was_locked_down");
        ck_assert(was && was->type == MSGPACK_OBJECT_BOOLEAN && !was->via.boolean);
        fixture_reply_free(&r);

        fixture_stream_free(&st);
        close(ev);
        close(c);
        fixture_stop(&f);
}
END_TEST

/* Root is not stopped by file modes, but nobody renames a file over a
 * directory: a directory where the marker goes makes writing it fail. */
START_TEST(test_unwritable_marker_is_an_error) {
        fixture_init(&f);
        fixture_start(&f, NULL);
        char path[PATH_MAX], inside[PATH_MAX + 8];
        marker_path(path, sizeof(path));
        ck_assert_int_eq(mkdir(path, 0700), 0);
        snprintf(inside, sizeof(inside), "%s/keep", path);
        FILE *fp = fopen(inside, "we");
        ck_assert_ptr_nonnull(fp);
        fclose(fp);

        int c = fixture_connect(&f);
        char a[64];
        fixture_spawn_sh(&f, c, "default", "exec sleep 60", a, sizeof(a));
        fixture_reply r;
        ck_assert(!fixture_call(&f, c, "credentials.revoke", pack_revoke_all, NULL, &r));
        ck_assert_str_eq(r.code, "backend_unavailable");
        ck_assert_msg(strstr(r.message, "could not be persisted") != NULL, "message: %s", r.message);
        ck_assert_msg(strstr(r.message, "1 frozen, 1 killed") != NULL, "message: %s", r.message);
        fixture_reply_free(&r);
        /* What could be done was done: killed, and locked down until agentd stops. */
        assert_killed(c, a);
        assert_spawn_refused(c);

        ck_assert_int_eq(unlink(inside), 0);
        ck_assert_int_eq(rmdir(path), 0);
        close(c);
        fixture_stop(&f);
}
END_TEST

START_TEST(test_marker_from_an_earlier_run_locks_at_start) {
        fixture_init(&f);
        char dir[PATH_MAX], path[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s/agentd", f.state_home);
        ck_assert_int_eq(mkdir(dir, 0700), 0);
        marker_path(path, sizeof(path));
        FILE *fp = fopen(path, "we");
        ck_assert_ptr_nonnull(fp);
        fputs(marker_text, fp);
        fclose(fp);
        fixture_start(&f, NULL);
        int c = fixture_connect(&f);
        assert_spawn_refused(c);
        fixture_call_ok(&f, c, "agentd.unlock", NULL);
        ck_assert_int_eq(access(path, F_OK), -1);
        close(c);
        fixture_stop(&f);
}
END_TEST

START_TEST(test_freeze_only_keeps_it_frozen_and_unlocked) {
        fixture_init(&f);
        fixture_start(&f, NULL);
        int c = fixture_connect(&f);
        char a[64], state[32];
        fixture_spawn_sh(&f, c, "default", "exec sleep 60", a, sizeof(a));
        fixture_reply r;
        ck_assert(fixture_call(&f, c, "credentials.revoke", pack_revoke_sandbox_freeze_only, a, &r));
        ck_assert_uint_eq(fixture_u64(r.result, "frozen"), 1);
        ck_assert_uint_eq(fixture_u64(r.result, "killed"), 0);
        const msgpack_object *ld = fixture_get(r.result, "locked_down");
        ck_assert(ld && ld->type == MSGPACK_OBJECT_BOOLEAN && !ld->via.boolean);
        fixture_reply_free(&r);
        fixture_sandbox_state(&f, c, a, state, sizeof(state));
        ck_assert_str_eq(state, "frozen");
        char path[PATH_MAX];
        marker_path(path, sizeof(path));
        ck_assert_int_eq(access(path, F_OK), -1);

        /* Bad requests: none or two of all/sandbox/task, an unknown sandbox. */
        fixture_call_fails(&f, c, "invalid_params", "credentials.revoke", NULL);
        fixture_call_fails(&f, c, "invalid_params", "credentials.revoke", "sandbox", a, "task", "default", NULL);
        fixture_call_fails(&f, c, "not_found", "credentials.revoke", "sandbox", "nosuch", NULL);

        /* The same sandbox without freeze_only: killed now. */
        ck_assert(fixture_call_str(&f, c, &r, "credentials.revoke", "sandbox", a, NULL));
        ck_assert_uint_eq(fixture_u64(r.result, "killed"), 1);
        fixture_reply_free(&r);
        assert_killed(c, a);
        close(c);
        fixture_stop(&f);
}
END_TEST

/* ---- with Vault: the tokens ---------------------------------------------- */

typedef struct token_check {
        const vault_dev *v;
        const char *token;
} token_check;

static int lookup_self(const token_check *t) {
        char body[8192];
        return vault_get(t->v, "auth/token/lookup-self", t->token, body, sizeof(body));
}

START_TEST(test_revoke_sandbox_revokes_its_token_at_vault) {
        vault_dev v = {};
        char a[64];
        int c = fv_compose_with_creds_sandbox(&f, &v, a, sizeof(a));

        int b = fixture_broker_connect(&f, a);
        fixture_reply r;
        ck_assert_msg(fixture_call(&f, b, "credentials.get", NULL, NULL, &r), "%s: %s", r.code, r.message);
        ck_assert_uint_eq(r.n_fds, 1);
        char token[256] = "";
        ssize_t n = pread(r.fds[0], token, sizeof(token) - 1, 0);
        ck_assert_int_gt(n, 0);
        token[strcspn(token, "\n")] = 0;
        close(r.fds[0]);
        fixture_reply_free(&r);
        token_check t = { .v = &v, .token = token };
        ck_assert_int_eq(lookup_self(&t), 200);

        /* Frozen and kept (freeze_only): the token is revoked at Vault all the same. */
        ck_assert(fixture_call(&f, c, "credentials.revoke", pack_revoke_sandbox_freeze_only, a, &r));
        ck_assert_uint_eq(fixture_u64(r.result, "frozen"), 1);
        ck_assert_uint_eq(fixture_u64(r.result, "tokens_revoked"), 1);
        ck_assert_uint_eq(fixture_u64(r.result, "tokens_pending"), 0);
        fixture_reply_free(&r);
        ck_assert_int_eq(lookup_self(&t), 403);
        fixture_call_fails(&f, b, "unauthorized", "credentials.get", NULL);

        close(b);
        fixture_call_ok(&f, c, "credentials.revoke", "sandbox", a, NULL);
        assert_killed(c, a);
        close(c);
        fixture_stop(&f);
        vault_stop(&v);
}
END_TEST

int main(void) {
        Suite *s = suite_create("revoke");
        TCase *tc = tcase_create("revoke");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_revoke_all_freezes_kills_and_locks_down);
        tcase_add_test(tc, test_unwritable_marker_is_an_error);
        tcase_add_test(tc, test_marker_from_an_earlier_run_locks_at_start);
        tcase_add_test(tc, test_freeze_only_keeps_it_frozen_and_unlocked);
        tcase_add_test(tc, test_revoke_sandbox_revokes_its_token_at_vault);
        suite_add_tcase(s, tc);
        return unit_run(s, false);
}
