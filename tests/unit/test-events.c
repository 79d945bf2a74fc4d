/* events.subscribe (rpc/rpc-sandbox.c) and the server's broadcast on a
 * composed daemon (fixture.h): a subscribed connection gets a sandbox's
 * sandbox.state notifications (running, then exited with its status) and its
 * output as sandbox.output; a subscription to one sandbox gets only that
 * sandbox's; an unknown sandbox is not_found; a connection that did not
 * subscribe gets nothing. */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fixture.h"
#include "unit.h"

static fixture f;

typedef struct seen {
        char states[256];          /* "running,exited" for the sandbox watched */
        char out[256], err[256];   /* its sandbox.output, by stream */
        int64_t exit_code, signal;
        unsigned others;           /* notifications about other sandboxes */
        bool ended;
} seen;

static void append(char *buf, size_t size, const char *sep, const char *s, size_t n) {
        size_t l = strlen(buf);
        snprintf(buf + l, size - l, "%s%.*s", l && sep ? sep : "", (int) n, s);
}

static int64_t get_i64(const msgpack_object *map, const char *key) {
        const msgpack_object *v = fixture_get(map, key);
        ck_assert_msg(v && (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER || v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER),
                      "no integer '%s'", key);
        return v->via.i64;
}

/* Reads notifications until the sandbox `id` ended (or `ms` of silence). */
static void collect(fixture_stream *st, const char *id, unsigned ms, seen *s) {
        fixture_reply msg;
        while (!s->ended && fixture_stream_next(&f, st, ms, &msg)) {
                char method[64], sid[64], state[32], stream[16];
                const msgpack_object *p = fixture_notification(&msg, method, sizeof(method));
                ck_assert_msg(p != NULL, "a subscribed connection got something other than a notification");
                ck_assert_ptr_nonnull(fixture_get_str(p, "id", sid, sizeof(sid)));
                if (strcmp(sid, id) != 0)
                        s->others++;
                else if (strcmp(method, "sandbox.state") == 0) {
                        ck_assert_ptr_nonnull(fixture_get_str(p, "state", state, sizeof(state)));
                        append(s->states, sizeof(s->states), ",", state, strlen(state));
                        if (strcmp(state, "exited") == 0 || strcmp(state, "killed") == 0) {
                                s->exit_code = get_i64(p, "exit_code");
                                s->signal = get_i64(p, "signal");
                                s->ended = true;
                        }
                } else if (strcmp(method, "sandbox.output") == 0) {
                        const msgpack_object *d = fixture_get(p, "data");
                        ck_assert(d && d->type == MSGPACK_OBJECT_BIN);
                        ck_assert_ptr_nonnull(fixture_get_str(p, "stream", stream, sizeof(stream)));
                        bool is_out = strcmp(stream, "stdout") == 0;
                        append(is_out ? s->out : s->err, sizeof(s->out), NULL, d->via.bin.ptr, d->via.bin.size);
                }
                fixture_reply_free(&msg);
        }
}

static void subscribe(int c, const char *sandbox) {
        fixture_reply r;
        bool ok = sandbox ? fixture_call_str(&f, c, &r, "events.subscribe", "sandbox", sandbox, NULL)
                          : fixture_call(&f, c, "events.subscribe", NULL, NULL, &r);
        ck_assert_msg(ok, "%s: %s", r.code, r.message);
        ck_assert(r.result->type == MSGPACK_OBJECT_MAP && r.result->via.map.size == 0);
        fixture_reply_free(&r);
}

static void assert_quiet(int fd) {
        char b[64];
        ck_assert_int_eq(recv(fd, b, sizeof(b), MSG_DONTWAIT), -1);
        ck_assert_int_eq(errno, EAGAIN);
}

START_TEST(test_subscribe_then_spawn_delivers_state_and_output) {
        fixture_init(&f);
        fixture_start(&f, NULL);
        int c = fixture_connect(&f), ev = fixture_connect(&f), quiet = fixture_connect(&f);
        subscribe(ev, NULL);
        fixture_stream st;
        fixture_stream_init(&st, ev);
        char id[64];
        fixture_spawn_sh(&f, c, "default", "echo out-text; echo err-text >&2; exit 3", id, sizeof(id));
        seen s = {};
        collect(&st, id, 10000, &s);
        ck_assert_msg(s.ended, "no end event; states: %s", s.states);
        ck_assert_msg(strstr(s.states, "running") != NULL, "states: %s", s.states);
        ck_assert_msg(strcmp(s.states + strlen(s.states) - 6, "exited") == 0, "states: %s", s.states);
        ck_assert_int_eq(s.exit_code, 3);
        ck_assert_int_eq(s.signal, 0);
        ck_assert_str_eq(s.out, "out-text\n");
        ck_assert_str_eq(s.err, "err-text\n");
        ck_assert_uint_eq(s.others, 0);
        /* The connection that did not subscribe got nothing. */
        assert_quiet(quiet);
        fixture_stream_free(&st);
        close(quiet);
        close(ev);
        close(c);
        fixture_stop(&f);
}
END_TEST

typedef struct running_q {
        int c;
        const char *id;
} running_q;

static bool is_running(void *arg) {
        running_q *q = arg;
        char state[32];
        fixture_sandbox_state(&f, q->c, q->id, state, sizeof(state));
        return strcmp(state, "running") == 0;
}

START_TEST(test_subscription_to_one_sandbox) {
        fixture_init(&f);
        fixture_start(&f, NULL);
        int c = fixture_connect(&f), ev = fixture_connect(&f);
        char a[64], b[64];
        fixture_spawn_sh(&f, c, "default", "exec sleep 60", a, sizeof(a));
        running_q rq = { .c = c, .id = a };
        ck_assert(fixture_run_until(&f, 10000, is_running, &rq));
        subscribe(ev, a);
        fixture_stream st;
        fixture_stream_init(&st, ev);

        /* Another sandbox runs and ends: nothing of it reaches this subscriber. */
        fixture_spawn_sh(&f, c, "default", "echo b-output", b, sizeof(b));
        fixture_call_ok(&f, c, "sandbox.wait", "id", b, NULL);
        fixture_call_ok(&f, c, "sandbox.kill", "id", a, "signal", "KILL", NULL);
        seen s = {};
        collect(&st, a, 10000, &s);
        ck_assert_msg(s.ended, "no end event for %s; states: %s", a, s.states);
        ck_assert_str_eq(s.states, "killed");
        ck_assert_int_eq(s.signal, SIGKILL);
        ck_assert_uint_eq(s.others, 0);

        /* An unknown sandbox: not_found. */
        int bad = fixture_connect(&f);
        fixture_call_fails(&f, bad, "not_found", "events.subscribe", "sandbox", "nosuch", NULL);
        char id[64];
        fixture_spawn_sh(&f, c, "default", "exit 0", id, sizeof(id));
        fixture_call_ok(&f, c, "sandbox.wait", "id", id, NULL);
        assert_quiet(bad);

        fixture_stream_free(&st);
        close(bad);
        close(ev);
        close(c);
        fixture_stop(&f);
}
END_TEST

int main(void) {
        Suite *s = suite_create("events");
        TCase *tc = tcase_create("events");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_subscribe_then_spawn_delivers_state_and_output);
        tcase_add_test(tc, test_subscription_to_one_sandbox);
        suite_add_tcase(s, tc);
        return unit_run(s, false);
}
