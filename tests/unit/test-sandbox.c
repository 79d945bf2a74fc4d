/* sandbox/sandbox.c and rpc/rpc-sandbox.c on a composed daemon (fixture.h):
 * sandboxes really spawn through sandbox.spawn; sandbox.list, sandbox.wait,
 * sandbox.kill and sandbox.logs answer from the sandbox part, and meta.json
 * in the sandbox's state directory follows its state. */
#include <check.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "fixture.h"
#include "unit.h"

static fixture f;

static void pack_id(msgpack_packer *pk, void *arg) {
        msgpack_pack_map(pk, 1);
        mp_pack_kv_str(pk, "id", arg);
}

START_TEST(test_exit_code_state_and_meta) {
        fixture_init(&f);
        fixture_start(&f, NULL);
        int c = fixture_connect(&f);
        char id[16];
        fixture_spawn_sh(&f, c, NULL, "exit 7", id, sizeof(id));
        long long code = -1, sig = -1;
        fixture_wait(&f, c, id, &code, &sig);
        ck_assert_int_eq(code, 7);
        ck_assert_int_eq(sig, 0);
        fixture_entry e;
        ck_assert(fixture_list_find(&f, c, id, &e));
        ck_assert_str_eq(e.state, "exited");
        ck_assert(e.ended);
        ck_assert_int_eq(e.exit_code, 7);
        ck_assert(fixture_meta_state_is(&f, id, "exited"));
        /* A wait on a sandbox that has ended answers at once, with the same result. */
        code = sig = -1;
        fixture_wait(&f, c, id, &code, &sig);
        ck_assert_int_eq(code, 7);
        ck_assert_int_eq(sig, 0);
        close(c);
        fixture_stop(&f);
}
END_TEST

START_TEST(test_logs_capture_output) {
        fixture_init(&f);
        fixture_start(&f, NULL);
        int c = fixture_connect(&f);
        char id[16];
        fixture_spawn_sh(&f, c, NULL, "echo out-line; echo err-line >&2", id, sizeof(id));
        fixture_wait(&f, c, id, NULL, NULL);
        fixture_reply r;
        ck_assert(fixture_call_str(&f, c, &r, "sandbox.logs", "id", id, NULL));
        const msgpack_object *o = fixture_get(r.result, "stdout"), *e = fixture_get(r.result, "stderr");
        ck_assert(o && o->type == MSGPACK_OBJECT_BIN && e && e->type == MSGPACK_OBJECT_BIN);
        ck_assert_int_eq(o->via.bin.size, 9);
        ck_assert(memcmp(o->via.bin.ptr, "out-line\n", 9) == 0);
        ck_assert_int_eq(e->via.bin.size, 9);
        ck_assert(memcmp(e->via.bin.ptr, "err-line\n", 9) == 0);
        fixture_reply_free(&r);
        close(c);
        fixture_stop(&f);
}
END_TEST

static void pack_kill(msgpack_packer *pk, void *arg) {
        const char **kv = arg;
        msgpack_pack_map(pk, 2);
        mp_pack_kv_str(pk, "id", kv[0]);
        mp_pack_kv_str(pk, "signal", kv[1]);
}

START_TEST(test_running_then_killed_by_signal_and_two_waits) {
        fixture_init(&f);
        fixture_start(&f, NULL);
        int c = fixture_connect(&f), c2 = fixture_connect(&f), c3 = fixture_connect(&f);
        char id[16];
        fixture_spawn_sh(&f, c, NULL, "exec sleep 60", id, sizeof(id));
        fixture_entry e;
        ck_assert(fixture_list_find(&f, c, id, &e));
        ck_assert_str_eq(e.state, "running");
        ck_assert(!e.ended);
        ck_assert(fixture_meta_state_is(&f, id, "running"));

        /* Two waits on one sandbox, on two connections: both are answered. */
        uint32_t w1 = fixture_send(&f, c2, "sandbox.wait", pack_id, id);
        uint32_t w2 = fixture_send(&f, c3, "sandbox.wait", pack_id, id);
        fixture_run(&f, 50);

        fixture_reply r;
        const char *kill[] = { id, "USR1" };
        ck_assert(fixture_call(&f, c, "sandbox.kill", pack_kill, kill, &r));
        ck_assert_int_eq(r.result->type, MSGPACK_OBJECT_MAP);
        fixture_reply_free(&r);

        for (int i = 0; i < 2; i++) {
                ck_assert(fixture_recv(&f, i ? c3 : c2, i ? w2 : w1, &r));
                const msgpack_object *s = fixture_get(r.result, "signal");
                ck_assert_ptr_nonnull(s);
                ck_assert_int_eq(s->via.u64, SIGUSR1);
                fixture_reply_free(&r);
        }
        ck_assert(fixture_list_find(&f, c, id, &e));
        ck_assert(e.ended);
        ck_assert_int_eq(e.signal, SIGUSR1);
        ck_assert_str_eq(e.state, "exited");   /* a signal it was sent, not a kill of ours */
        ck_assert(fixture_meta_state_is(&f, id, "exited"));

        /* It has ended: a kill is refused. */
        ck_assert(!fixture_call(&f, c, "sandbox.kill", pack_kill, kill, &r));
        ck_assert_str_eq(r.code, "not_found");
        fixture_reply_free(&r);
        close(c);
        close(c2);
        close(c3);
        fixture_stop(&f);
}
END_TEST

START_TEST(test_sigkill_is_killed) {
        fixture_init(&f);
        fixture_start(&f, NULL);
        int c = fixture_connect(&f);
        char id[16];
        fixture_spawn_sh(&f, c, NULL, "exec sleep 60", id, sizeof(id));
        fixture_reply r;
        const char *kill[] = { id, "KILL" };
        ck_assert(fixture_call(&f, c, "sandbox.kill", pack_kill, kill, &r));
        fixture_reply_free(&r);
        long long code = -1, sig = -1;
        fixture_wait(&f, c, id, &code, &sig);
        ck_assert_int_eq(sig, SIGKILL);
        fixture_entry e;
        ck_assert(fixture_list_find(&f, c, id, &e));
        ck_assert_str_eq(e.state, "killed");
        ck_assert(fixture_meta_state_is(&f, id, "killed"));
        close(c);
        fixture_stop(&f);
}
END_TEST

START_TEST(test_unknown_ids_and_bad_signal) {
        fixture_init(&f);
        fixture_start(&f, NULL);
        int c = fixture_connect(&f);
        fixture_reply r;
        static const char *const methods[] = { "sandbox.wait", "sandbox.kill", "sandbox.logs", "sandbox.diff" };
        for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
                ck_assert(!fixture_call_str(&f, c, &r, methods[i], "id", "0123456789ab", NULL));
                ck_assert_msg(strcmp(r.code, "not_found") == 0, "%s: %s", methods[i], r.code);
                fixture_reply_free(&r);
        }
        char id[16];
        fixture_spawn_sh(&f, c, NULL, "exec sleep 60", id, sizeof(id));
        const char *bad[] = { id, "NOSUCHSIG" };
        ck_assert(!fixture_call(&f, c, "sandbox.kill", pack_kill, bad, &r));
        ck_assert_str_eq(r.code, "invalid_params");
        fixture_reply_free(&r);
        /* The refused kill did nothing. */
        fixture_entry e;
        ck_assert(fixture_list_find(&f, c, id, &e));
        ck_assert_str_eq(e.state, "running");
        close(c);
        fixture_stop(&f);
}
END_TEST

int main(void) {
        Suite *s = suite_create("sandbox");
        TCase *tc = tcase_create("sandbox");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_exit_code_state_and_meta);
        tcase_add_test(tc, test_logs_capture_output);
        tcase_add_test(tc, test_running_then_killed_by_signal_and_two_waits);
        tcase_add_test(tc, test_sigkill_is_killed);
        tcase_add_test(tc, test_unknown_ids_and_bad_signal);
        suite_add_tcase(s, tc);
        return unit_run(s, false);
}
