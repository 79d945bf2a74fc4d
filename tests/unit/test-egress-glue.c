/* egress/egress.c on a composed daemon (fixture.h): a [Network] Mode=proxy
 * sandbox gets the proxy (its proxy socket, $HTTPS_PROXY inside); a CONNECT
 * its Allow= does not name is refused with 403 and audited as an egress
 * denial; an allowed one reaches a listener here and passes bytes both ways,
 * audited as allowed and, once closed, with its byte counts; past
 * [Response] EgressDenials= the sandbox is frozen and subscribers get an
 * alert. One sandbox runs curl through the real bridge. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fixture.h"
#include "unit.h"

static fixture f;
static uint16_t allowed_port;
static int listener = -1;

/* A task whose Allow= names the listener made here (an IP literal permits loopback). */
static void start_with_proxy_task(const char *config) {
        listener = fixture_listen(&allowed_port);
        fixture_init(&f);
        char text[256];
        snprintf(text, sizeof(text), "[Task]\nDescription=egress\n[Network]\nMode=proxy\nAllow=127.0.0.1:%u\n",
                 (unsigned) allowed_port);
        fixture_write_task(&f, "net", text);
        fixture_start(&f, config);
}

static void stop(void) {
        close(listener);
        listener = -1;
        fixture_stop(&f);
}

/* A loopback port nothing listens on and Allow= does not name. */
static uint16_t other_port(void) {
        uint16_t port;
        close(fixture_listen(&port));
        ck_assert_uint_ne(port, allowed_port);
        return port;
}

static void kill_sandbox(int c, const char *sid) {
        fixture_call_ok(&f, c, "sandbox.kill", "id", sid, "signal", "KILL", NULL);
        fixture_call_ok(&f, c, "sandbox.wait", "id", sid, NULL);
}

START_TEST(test_denied_and_allowed_connect) {
        start_with_proxy_task("[Response]\nEgressDenials=0\n");
        int c = fixture_connect(&f);
        char sid[64], path[PATH_MAX];
        fixture_spawn_sh(&f, c, "net", "exec sleep 60", sid, sizeof(sid));
        struct stat st;
        snprintf(path, sizeof(path), "%s/agentd/sandboxes/%s/proxy.sock", f.state_home, sid);
        ck_assert_msg(stat(path, &st) == 0 && S_ISSOCK(st.st_mode), "no proxy socket at %s", path);

        /* Denied: 403, nothing connects, and an egress record says why. */
        uint16_t denied = other_port();
        int p = fixture_proxy_connect_to(&f, sid, denied);
        fixture_reader rd;
        ck_assert_msg(fixture_read_until(&f, &rd, p, "\r\n\r\n", 5000), "no answer: %s", rd.buf);
        ck_assert_msg(strncmp(rd.buf, "HTTP/1.1 403", 12) == 0, "answer: %s", rd.buf);
        close(p);
        char port_text[32];
        snprintf(port_text, sizeof(port_text), "\"port\"=>%u", (unsigned) denied);
        fixture_audit_match q = { .f = &f, .c = c, .sandbox = sid, .type = "egress",
                         .needles = { "\"decision\"=>\"denied\"", port_text, "not in Allow= of task net" } };
        ck_assert_msg(fixture_run_until(&f, 5000, fixture_audited, &q), "no egress denial recorded");

        /* Allowed: 200, then bytes both ways through the listener here. */
        p = fixture_proxy_connect_to(&f, sid, allowed_port);
        ck_assert_msg(fixture_read_until(&f, &rd, p, "\r\n\r\n", 5000), "no answer: %s", rd.buf);
        ck_assert_msg(strncmp(rd.buf, "HTTP/1.1 200", 12) == 0, "answer: %s", rd.buf);
        int up = fixture_accept(&f, listener, 5000);
        ck_assert_int_ge(up, 0);
        ck_assert_int_eq(write(p, "ping", 4), 4);
        ck_assert(fixture_read_until(&f, &rd, up, "ping", 5000));
        ck_assert_int_eq(write(up, "pong!", 5), 5);
        ck_assert(fixture_read_until(&f, &rd, p, "pong!", 5000));
        snprintf(port_text, sizeof(port_text), "\"port\"=>%u", (unsigned) allowed_port);
        fixture_audit_match qa = { .f = &f, .c = c, .sandbox = sid, .type = "egress",
                          .needles = { "\"decision\"=>\"allowed\"", port_text, "\"address\"=>\"127.0.0.1\"" } };
        ck_assert_msg(fixture_run_until(&f, 5000, fixture_audited, &qa), "no egress allowed record");
        close(up);
        close(p);
        fixture_audit_match qc = { .f = &f, .c = c, .sandbox = sid, .type = "egress.closed",
                          .needles = { port_text, "\"bytes_up\"=>4", "\"bytes_down\"=>5" } };
        ck_assert_msg(fixture_run_until(&f, 5000, fixture_audited, &qc), "no egress.closed record with the byte counts");

        /* Denials below the limit (0: none) change nothing. */
        char state[32];
        fixture_sandbox_state(&f, c, sid, state, sizeof(state));
        ck_assert_str_eq(state, "running");
        kill_sandbox(c, sid);
        close(c);
        stop();
}
END_TEST

typedef struct alert_q {
        fixture_stream *st;
        char sandbox[64], action[128];
} alert_q;

START_TEST(test_repeated_denials_freeze_and_alert) {
        start_with_proxy_task("[Response]\nEgressDenials=3\nEgressWindowSec=600\n");
        int c = fixture_connect(&f);
        fixture_stream st;
        int ev = fixture_subscribe(&f, &st);
        char sid[64], state[32];
        fixture_spawn_sh(&f, c, "net", "exec sleep 60", sid, sizeof(sid));
        uint16_t denied = other_port();
        fixture_reader rd;
        for (int i = 0; i < 3; i++) {
                fixture_sandbox_state(&f, c, sid, state, sizeof(state));
                ck_assert_msg(strcmp(state, "running") == 0, "after %d denials: %s", i, state);
                int p = fixture_proxy_connect_to(&f, sid, denied);
                ck_assert(fixture_read_until(&f, &rd, p, "\r\n\r\n", 5000));
                ck_assert_msg(strncmp(rd.buf, "HTTP/1.1 403", 12) == 0, "answer: %s", rd.buf);
                close(p);
        }
        fixture_sandbox_state(&f, c, sid, state, sizeof(state));
        ck_assert_str_eq(state, "frozen");

        /* The alert: a notification, and an audit record. */
        fixture_reply msg;
        bool alerted = false;
        while (!alerted && fixture_stream_next(&f, &st, 2000, &msg)) {
                char method[64], got[64], rule[64];
                const msgpack_object *p = fixture_notification(&msg, method, sizeof(method));
                if (p && strcmp(method, "alert") == 0) {
                        ck_assert_str_eq(fixture_get_str(p, "sandbox", got, sizeof(got)), sid);
                        ck_assert_str_eq(fixture_get_str(p, "rule", rule, sizeof(rule)), "EgressDenials=3 within 600s");
                        alerted = true;
                }
                fixture_reply_free(&msg);
        }
        ck_assert_msg(alerted, "no alert notification");
        fixture_audit_match q = { .f = &f, .c = c, .sandbox = sid, .type = "alert", .needles = { "EgressDenials=3 within 600s", "frozen" } };
        ck_assert_msg(fixture_run_until(&f, 5000, fixture_audited, &q), "no alert record");

        fixture_stream_free(&st);
        kill_sandbox(c, sid);
        close(ev);
        close(c);
        stop();
}
END_TEST

/* The whole path: curl inside, the sandbox's bridge, the proxy, a server here. */
typedef struct http_server {
        int fd;
        bool answered;
        fixture_reader rd;
} http_server;

static bool serve_one(void *arg) {
        http_server *h = arg;
        if (h->fd < 0)
                h->fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (h->fd < 0)
                return false;
        h->rd.fd = h->fd;
        h->rd.needle = "\r\n\r\n";
        if (!fixture_reader_pred(&h->rd))
                return false;
        static const char resp[] = "HTTP/1.0 200 OK\r\nContent-Length: 14\r\nConnection: close\r\n\r\nhello-sandbox\n";
        ck_assert_int_eq(write(h->fd, resp, sizeof(resp) - 1), (ssize_t) sizeof(resp) - 1);
        close(h->fd);
        h->answered = true;
        return true;
}

START_TEST(test_curl_inside_the_sandbox) {
        if (access("/usr/bin/curl", X_OK) != 0) {
                fprintf(stderr, "test_curl_inside_the_sandbox: skipped (no /usr/bin/curl)\n");
                return;
        }
        start_with_proxy_task("[Response]\nEgressDenials=0\n");
        int c = fixture_connect(&f);
        uint16_t denied = other_port();
        char cmd[512], sid[64];
        /* no_proxy names 127.0.0.1: --noproxy '' makes curl use the proxy anyway. */
        snprintf(cmd, sizeof(cmd),
                 "echo \"proxy=$HTTPS_PROXY\"; "
                 "/usr/bin/curl -sS --max-time 20 --noproxy '' -x \"$HTTP_PROXY\" http://127.0.0.1:%u/x; "
                 "/usr/bin/curl -s --max-time 20 --noproxy '' -x \"$HTTP_PROXY\" -o /dev/null -w 'denied=%%{http_code}\\n' "
                 "http://127.0.0.1:%u/y",
                 (unsigned) allowed_port, (unsigned) denied);
        fixture_spawn_sh(&f, c, "net", cmd, sid, sizeof(sid));
        http_server h = { .fd = -1 };
        ck_assert_msg(fixture_run_until(&f, 20000, serve_one, &h), "curl's request never arrived");
        fixture_call_ok(&f, c, "sandbox.wait", "id", sid, NULL);
        char out[1024];
        fixture_logs(&f, c, sid, "stdout", out, sizeof(out));
        ck_assert_msg(strstr(out, "proxy=http://127.0.0.1:3128\n") != NULL, "stdout: %s", out);
        ck_assert_msg(strstr(out, "hello-sandbox\n") != NULL, "stdout: %s", out);
        ck_assert_msg(strstr(out, "denied=403\n") != NULL, "stdout: %s", out);
        ck_assert_msg(strstr(h.rd.buf, "GET /x HTTP/1.1\r\n") != NULL, "request: %s", h.rd.buf);
        close(c);
        stop();
}
END_TEST

int main(void) {
        Suite *s = suite_create("egress-glue");
        TCase *tc = tcase_create("egress-glue");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_denied_and_allowed_connect);
        tcase_add_test(tc, test_repeated_denials_freeze_and_alert);
        tcase_add_test(tc, test_curl_inside_the_sandbox);
        suite_add_tcase(s, tc);
        return unit_run(s, false);
}
