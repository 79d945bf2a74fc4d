/* incident/response.c on a composed daemon (fixture.h): denials reach it the
 * way they do in production, a CONNECT through the sandbox's proxy socket that
 * the task's Allow= does not name. [Response] EgressDenials=N within
 * EgressWindowSec=: N denials freeze the sandbox and raise one alert
 * (notification + audit record), N-1 do not, denials spread beyond the window
 * do not, and the window of a sandbox goes when the sandbox ends. */
#include <check.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fixture.h"
#include "incident/response.h"
#include "unit.h"

static fixture f;
static int c = -1;
static uint16_t denied_port;

static void start(const char *config) {
        fixture_init(&f);
        fixture_write_task(&f, "net", "[Task]\nDescription=egress\n[Network]\nMode=proxy\nAllow=example.invalid:443\n");
        fixture_start(&f, config);
        c = fixture_connect(&f);
        int l = fixture_listen(&denied_port);  /* a port nothing listens on (once closed) */
        close(l);
}

static void stop(void) {
        close(c);
        fixture_stop(&f);
}

/* One denied CONNECT: the proxy answers 403. */
static void deny(const char *sid) {
        int p = fixture_proxy_connect_to(&f, sid, denied_port);
        fixture_reader rd;
        ck_assert_msg(fixture_read_until(&f, &rd, p, "\r\n\r\n", 5000), "no answer: %s", rd.buf);
        ck_assert_msg(strncmp(rd.buf, "HTTP/1.1 403", 12) == 0, "answer: %s", rd.buf);
        close(p);
}

static void assert_state(const char *sid, const char *want) {
        char state[32];
        ck_assert_str_eq(fixture_sandbox_state(&f, c, sid, state, sizeof(state)), want);
}

typedef struct denials_q {
        const char *sid;
        unsigned want;
} denials_q;

static bool denials_recorded(void *arg) {
        denials_q *q = arg;
        fixture_reply r;
        fixture_audit_query(&f, c, &(fixture_query) { .sandbox = q->sid }, &r);
        unsigned n = 0;
        for (uint32_t i = 0; i < r.result->via.array.size; i++) {
                const msgpack_object *rec = &r.result->via.array.ptr[i];
                char type[32], decision[32];
                if (fixture_get_str(rec, "type", type, sizeof(type)) && streq(type, "egress") &&
                    fixture_get_str(fixture_get(rec, "fields"), "decision", decision, sizeof(decision)) &&
                    streq(decision, "denied"))
                        n++;
        }
        fixture_reply_free(&r);
        return n >= q->want;
}

/* All n egress denial records of the sandbox are in the log (written off the
 * loop); an alert would have been recorded with them. */
static void wait_denials_recorded(const char *sid, unsigned n) {
        denials_q q = { sid, n };
        ck_assert_msg(fixture_run_until(&f, 5000, denials_recorded, &q), "not %u egress denials recorded", n);
        fixture_run(&f, 50);
}

static bool has_alert(const char *sid) {
        fixture_audit_match q = { .f = &f, .c = c, .sandbox = sid, .type = "alert" };
        return fixture_audited(&q);
}

/* Alert notifications on the subscribed stream for sid within ms. */
static unsigned alerts(fixture_stream *st, const char *sid, unsigned ms, char *rule, size_t size) {
        fixture_reply msg;
        unsigned n = 0;
        while (fixture_stream_next(&f, st, ms, &msg)) {
                char method[64], got[64];
                const msgpack_object *p = fixture_notification(&msg, method, sizeof(method));
                if (p && streq(method, "alert") && fixture_get_str(p, "sandbox", got, sizeof(got)) && streq(got, sid)) {
                        n++;
                        (void) fixture_get_str(p, "rule", rule, size);
                }
                fixture_reply_free(&msg);
        }
        return n;
}

START_TEST(test_n_denials_freeze_and_alert_n_minus_1_do_not) {
        start("[Response]\nEgressDenials=3\nEgressWindowSec=600\n");
        fixture_stream st;
        int ev = fixture_subscribe(&f, &st);
        char sid[64], rule[64] = "";
        fixture_spawn_sh(&f, c, "net", "exec sleep 60", sid, sizeof(sid));

        /* N-1: still running, no alert. */
        deny(sid);
        deny(sid);
        wait_denials_recorded(sid, 2);
        assert_state(sid, "running");
        ck_assert_msg(!has_alert(sid), "an alert after 2 of 3 denials");
        ck_assert_uint_eq(alerts(&st, sid, 200, rule, sizeof(rule)), 0);

        /* N: frozen, one alert notification and one alert record naming the rule. */
        deny(sid);
        assert_state(sid, "frozen");
        ck_assert_uint_eq(alerts(&st, sid, 2000, rule, sizeof(rule)), 1);
        ck_assert_str_eq(rule, "EgressDenials=3 within 600s");
        fixture_audit_match q = { .f = &f, .c = c, .sandbox = sid, .type = "alert",
                                  .needles = { "EgressDenials=3 within 600s", "\"count\"=>3", "frozen" } };
        ck_assert_msg(fixture_run_until(&f, 5000, fixture_audited, &q), "no alert record");

        /* Once per sandbox: more denials raise no second alert. */
        deny(sid);
        deny(sid);
        deny(sid);
        ck_assert_uint_eq(alerts(&st, sid, 500, rule, sizeof(rule)), 0);

        fixture_stream_free(&st);
        close(ev);
        stop();
}
END_TEST

START_TEST(test_denials_spread_beyond_the_window_do_not) {
        start("[Response]\nEgressDenials=2\nEgressWindowSec=1\n");
        char sid[64];
        fixture_spawn_sh(&f, c, "net", "exec sleep 60", sid, sizeof(sid));
        deny(sid);
        /* More than the window between the two (a slow machine only makes it longer). */
        fixture_run(&f, 1200);
        deny(sid);
        wait_denials_recorded(sid, 2);
        assert_state(sid, "running");
        ck_assert_msg(!has_alert(sid), "an alert for denials 1.2 s apart with a 1 s window");
        stop();
}
END_TEST

START_TEST(test_an_ended_sandbox_drops_its_window) {
        start("[Response]\nEgressDenials=2\nEgressWindowSec=600\n");
        char sid[64];
        fixture_spawn_sh(&f, c, "net", "exec sleep 60", sid, sizeof(sid));
        deny(sid);
        /* What compose.c's sandbox_hooks.ended calls: the window goes, so the
         * next denial is the first of a new window. */
        response_sandbox_ended(sid);
        deny(sid);
        wait_denials_recorded(sid, 2);
        assert_state(sid, "running");
        ck_assert(!has_alert(sid));
        deny(sid);
        assert_state(sid, "frozen");

        /* A sandbox that ended gets no response, whatever its count. */
        char other[64];
        fixture_spawn_sh(&f, c, "net", "exit 0", other, sizeof(other));
        fixture_wait(&f, c, other, NULL, NULL);
        response_egress_denied(&f.m, other);
        response_egress_denied(&f.m, other);
        response_egress_denied(&f.m, other);
        ck_assert(!has_alert(other));
        fixture_call_ok(&f, c, "sandbox.kill", "id", sid, "signal", "KILL", NULL);
        stop();
}
END_TEST

int main(void) {
        Suite *s = suite_create("response");
        TCase *tc = tcase_create("response");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_n_denials_freeze_and_alert_n_minus_1_do_not);
        tcase_add_test(tc, test_denials_spread_beyond_the_window_do_not);
        tcase_add_test(tc, test_an_ended_sandbox_drops_its_window);
        suite_add_tcase(s, tc);
        return unit_run(s, false);
}
