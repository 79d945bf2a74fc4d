/* incident/approval.c on a composed daemon (fixture.h). A task with
 * [Network] Mode=proxy, Ask=yes: a CONNECT its Allow= does not name, sent on
 * the sandbox's proxy socket as its bridge would, is held; approval.list shows
 * it, subscribers get approval.requested, approval.answer approve lets it
 * through to a listener here and deny answers 403; an unknown id is
 * not_found; AskTimeout= passing is a denial (audited, by "timeout"). With
 * tests/vaultdev: credentials.request on the broker socket waits for a person
 * and then gets a token, or policy_denied. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "fixture-vault.h"
#include "fixture.h"
#include "unit.h"

static fixture f;

/* Allow= names only port 9 of loopback; AskTimeout=1s for the expiry test. */
static const char ask_task[] = "[Task]\nDescription=asks\n[Network]\nMode=proxy\nAllow=127.0.0.1:9\nAsk=yes\nAskTimeout=%s\n";

static void write_ask_task(const char *timeout) {
        char text[256];
        snprintf(text, sizeof(text), ask_task, timeout);
        fixture_write_task(&f, "ask", text);
}

typedef struct pending_q {
        int c;
        char id[64], sandbox[64], kind[32], what[300];
        unsigned n;
} pending_q;

/* approval.list: how many are pending, the first one's fields. */
static bool has_pending(void *arg) {
        pending_q *q = arg;
        fixture_reply r;
        ck_assert(fixture_call(&f, q->c, "approval.list", NULL, NULL, &r));
        ck_assert_int_eq(r.result->type, MSGPACK_OBJECT_ARRAY);
        q->n = r.result->via.array.size;
        if (q->n > 0) {
                const msgpack_object *a = &r.result->via.array.ptr[0];
                ck_assert_ptr_nonnull(fixture_get_str(a, "id", q->id, sizeof(q->id)));
                ck_assert_ptr_nonnull(fixture_get_str(a, "sandbox", q->sandbox, sizeof(q->sandbox)));
                ck_assert_ptr_nonnull(fixture_get_str(a, "kind", q->kind, sizeof(q->kind)));
                ck_assert_ptr_nonnull(fixture_get_str(a, "what", q->what, sizeof(q->what)));
        }
        fixture_reply_free(&r);
        return q->n > 0;
}

static void wait_pending(pending_q *q, int c) {
        memset(q, 0, sizeof(*q));
        q->c = c;
        ck_assert_msg(fixture_run_until(&f, 10000, has_pending, q), "nothing pending");
        ck_assert_uint_eq(q->n, 1);
}

static void answer(int c, const char *id, const char *decision) {
        fixture_reply r;
        ck_assert_msg(fixture_call_str(&f, c, &r, "approval.answer", "id", id, "decision", decision, NULL), "%s: %s", r.code,
                      r.message);
        fixture_reply_free(&r);
}

/* The approval.* notification with `method` for approval `id` on the stream. */
static bool saw_notification(fixture_stream *st, const char *method, const char *id, char *decision, size_t size) {
        fixture_reply msg;
        bool found = false;
        while (!found && fixture_stream_next(&f, st, 2000, &msg)) {
                char m[64], got[64];
                const msgpack_object *p = fixture_notification(&msg, m, sizeof(m));
                if (p && strcmp(m, method) == 0 && fixture_get_str(p, "id", got, sizeof(got)) && strcmp(got, id) == 0) {
                        found = true;
                        if (decision)
                                ck_assert_ptr_nonnull(fixture_get_str(p, "decision", decision, size));
                }
                fixture_reply_free(&msg);
        }
        return found;
}

/* A daemon with the `ask` task (AskTimeout=timeout) and one sandbox of it
 * running (its id in sid): the host connection. */
static int start_ask_sandbox(const char *timeout, char *sid, size_t size) {
        fixture_init(&f);
        write_ask_task(timeout);
        fixture_start(&f, NULL);
        int c = fixture_connect(&f);
        fixture_spawn_sh(&f, c, "ask", "exec sleep 60", sid, size);
        return c;
}

START_TEST(test_network_ask_approve_and_deny) {
        char sid[64];
        int c = start_ask_sandbox("60s", sid, sizeof(sid));
        fixture_stream st;
        int ev = fixture_subscribe(&f, &st);
        uint16_t port;
        int l = fixture_listen(&port);

        /* Held: nothing reaches the listener while it is pending. */
        int p = fixture_proxy_connect_to(&f, sid, port);
        pending_q q;
        wait_pending(&q, c);
        ck_assert_str_eq(q.sandbox, sid);
        ck_assert_str_eq(q.kind, "network");
        char what[64];
        snprintf(what, sizeof(what), "127.0.0.1:%u", port);
        ck_assert_str_eq(q.what, what);
        ck_assert_int_lt(fixture_accept(&f, l, 100), 0);
        ck_assert(saw_notification(&st, "approval.requested", q.id, NULL, 0));

        answer(c, q.id, "approve");
        fixture_reader rd;
        ck_assert_msg(fixture_read_until(&f, &rd, p, "\r\n\r\n", 5000), "no answer to the CONNECT: %s", rd.buf);
        ck_assert_msg(strncmp(rd.buf, "HTTP/1.1 200", 12) == 0, "answer: %s", rd.buf);
        int up = fixture_accept(&f, l, 5000);
        ck_assert_int_ge(up, 0);
        ck_assert_int_eq(write(p, "ping", 4), 4);
        ck_assert(fixture_read_until(&f, &rd, up, "ping", 5000));
        char decision[16];
        ck_assert(saw_notification(&st, "approval.answered", q.id, decision, sizeof(decision)));
        ck_assert_str_eq(decision, "approve");
        close(up);
        close(p);
        /* Answered: gone from the list, and answering again is not_found. */
        ck_assert(!has_pending(&q));
        fixture_call_fails(&f, c, "not_found", "approval.answer", "id", q.id, "decision", "deny", NULL);

        /* Approved once only: the next connection asks again; deny is a 403. */
        p = fixture_proxy_connect_to(&f, sid, port);
        wait_pending(&q, c);
        answer(c, q.id, "deny");
        ck_assert(fixture_read_until(&f, &rd, p, "\r\n\r\n", 5000));
        ck_assert_msg(strncmp(rd.buf, "HTTP/1.1 403", 12) == 0, "answer: %s", rd.buf);
        ck_assert_int_lt(fixture_accept(&f, l, 100), 0);
        ck_assert(saw_notification(&st, "approval.answered", q.id, decision, sizeof(decision)));
        ck_assert_str_eq(decision, "deny");
        close(p);

        close(l);
        fixture_stream_free(&st);
        fixture_call_ok(&f, c, "sandbox.kill", "id", sid, "signal", "KILL", NULL);
        close(ev);
        close(c);
        fixture_stop(&f);
}
END_TEST

START_TEST(test_answer_errors) {
        fixture_init(&f);
        fixture_start(&f, NULL);
        int c = fixture_connect(&f);
        fixture_reply r;
        fixture_call_fails(&f, c, "not_found", "approval.answer", "id", "ap-0000000000", "decision", "approve", NULL);
        fixture_call_fails(&f, c, "invalid_params", "approval.answer", "id", "ap-0000000000", "decision", "maybe", NULL);
        ck_assert(!fixture_call_str(&f, c, &r, "approval.answer", "id", "ap-0000000000", "decision", "approve", "scope",
                                    "forever", NULL));
        ck_assert_str_eq(r.code, "invalid_params");
        fixture_reply_free(&r);
        ck_assert(fixture_call(&f, c, "approval.list", NULL, NULL, &r));
        ck_assert_uint_eq(r.result->via.array.size, 0);
        fixture_reply_free(&r);
        close(c);
        fixture_stop(&f);
}
END_TEST

START_TEST(test_ask_timeout_denies) {
        char sid[64];
        int c = start_ask_sandbox("1s", sid, sizeof(sid));
        uint16_t port;
        int l = fixture_listen(&port);
        int p = fixture_proxy_connect_to(&f, sid, port);
        pending_q q;
        wait_pending(&q, c);
        /* Nobody answers: after AskTimeout=1s it is a denial. */
        fixture_reader rd;
        ck_assert_msg(fixture_read_until(&f, &rd, p, "\r\n\r\n", 10000), "no answer: %s", rd.buf);
        ck_assert_msg(strncmp(rd.buf, "HTTP/1.1 403", 12) == 0, "answer: %s", rd.buf);
        ck_assert_int_lt(fixture_accept(&f, l, 100), 0);
        ck_assert(!has_pending(&q));
        fixture_audit_match aq = { .f = &f, .c = c, .sandbox = sid, .type = "approval.answered", .needles = { "\"by\"=>\"timeout\"" } };
        ck_assert_msg(fixture_run_until(&f, 5000, fixture_audited, &aq), "no approval.answered record by timeout");
        close(p);
        close(l);
        fixture_call_ok(&f, c, "sandbox.kill", "id", sid, "signal", "KILL", NULL);
        close(c);
        fixture_stop(&f);
}
END_TEST

/* ---- credentials.request (needs Vault) ------------------------------------ */

static void pack_request(msgpack_packer *pk, void *arg) {
        msgpack_pack_map(pk, 1);
        mp_pack_cstr(pk, "policies");
        msgpack_pack_array(pk, 1);
        mp_pack_cstr(pk, arg);
}

/* Sends credentials.request on the broker socket without waiting (the answer
 * comes once a person decides). */
static void send_request(int b, uint32_t msgid, const char *policy) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        rpc_pack_request_header(&pk, msgid, "credentials.request");
        msgpack_pack_array(&pk, 1);
        pack_request(&pk, (void *) policy);
        ck_assert_int_eq(write(b, sb.data, sb.size), (ssize_t) sb.size);
        msgpack_sbuffer_destroy(&sb);
}

/* The response to msgid on the stream: its error text ("" for a result). */
static void response(fixture_stream *st, uint32_t msgid, char *error, size_t size) {
        fixture_reply msg;
        ck_assert_msg(fixture_stream_next(&f, st, 10000, &msg), "no answer to credentials.request");
        const msgpack_object *o = &msg.u.data;
        ck_assert(o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size == 4 && o->via.array.ptr[0].via.u64 == 1);
        ck_assert_uint_eq(o->via.array.ptr[1].via.u64, msgid);
        const msgpack_object *e = &o->via.array.ptr[2];
        error[0] = 0;
        if (e->type == MSGPACK_OBJECT_ARRAY)
                snprintf(error, size, "%.*s", (int) e->via.array.ptr[1].via.str.size, e->via.array.ptr[1].via.str.ptr);
        else
                ck_assert_ptr_nonnull(fixture_get(&o->via.array.ptr[3], "accessor"));
        fixture_reply_free(&msg);
}

START_TEST(test_credentials_request_approve_and_deny) {
        vault_dev v = {};
        char sid[64];
        int c = fv_compose_with_creds_sandbox(&f, &v, sid, sizeof(sid));

        int b = fixture_broker_connect(&f, sid);
        fixture_stream st;
        fixture_stream_init(&st, b);

        send_request(b, 1, "deploy");
        pending_q q;
        wait_pending(&q, c);
        ck_assert_str_eq(q.kind, "credentials");
        ck_assert_str_eq(q.what, "deploy");
        ck_assert_str_eq(q.sandbox, sid);
        answer(c, q.id, "approve");
        char err[256];
        response(&st, 1, err, sizeof(err));
        ck_assert_msg(err[0] == 0, "approved request failed: %s", err);

        send_request(b, 2, "deploy");
        wait_pending(&q, c);
        answer(c, q.id, "deny");
        response(&st, 2, err, sizeof(err));
        ck_assert_msg(strncmp(err, "policy_denied: ", 15) == 0, "denied request: %s", err);

        fixture_stream_free(&st);
        close(b);
        fixture_call_ok(&f, c, "sandbox.kill", "id", sid, "signal", "KILL", NULL);
        close(c);
        fixture_stop(&f);
        vault_stop(&v);
}
END_TEST

int main(void) {
        Suite *s = suite_create("approval");
        TCase *tc = tcase_create("approval");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_network_ask_approve_and_deny);
        tcase_add_test(tc, test_answer_errors);
        tcase_add_test(tc, test_ask_timeout_denies);
        tcase_add_test(tc, test_credentials_request_approve_and_deny);
        suite_add_tcase(s, tc);
        return unit_run(s, false);
}
