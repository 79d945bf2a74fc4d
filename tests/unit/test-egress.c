/* Unit tests for daemon/egress/egress-record.c: the audit record of each egress
 * proxy event (the fields agentctl report and the audit log rely on), and the
 * denial window that trips the automatic response. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "egress-record.h"
#include "unit.h"

static const char *field(json_object *o, const char *key) {
        json_object *v;
        return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : NULL;
}

START_TEST(test_allowed_record) {
        netproxy_event ev = {
                .kind = NETPROXY_ALLOWED, .sandbox_id = "0123456789ab", .host = "example.org", .port = 443,
                .address = "93.184.216.34", .method = "CONNECT",
        };
        const char *type = NULL;
        json_object *o = egress_event_record(&ev, &type);
        ck_assert_str_eq(type, "egress");
        ck_assert_str_eq(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE),
                         "{\"host\":\"example.org\",\"port\":443,\"method\":\"CONNECT\",\"address\":\"93.184.216.34\","
                         "\"decision\":\"allowed\"}");
        json_object_put(o);
}
END_TEST

START_TEST(test_denied_record) {
        netproxy_event ev = { .kind = NETPROXY_DENIED, .host = "evil.example", .port = 80, .reason = "not in Allow= of task build" };
        const char *type = NULL;
        json_object *o = egress_event_record(&ev, &type);
        ck_assert_str_eq(type, "egress");
        ck_assert_str_eq(field(o, "decision"), "denied");
        ck_assert_str_eq(field(o, "reason"), "not in Allow= of task build");
        ck_assert_ptr_null(field(o, "address"));
        ck_assert_ptr_null(field(o, "method"));
        ck_assert_ptr_null(field(o, "bytes_up"));
        json_object_put(o);
        /* Missing strings are empty, never absent or NULL. */
        ev.host = ev.reason = NULL;
        o = egress_event_record(&ev, &type);
        ck_assert_str_eq(field(o, "host"), "");
        ck_assert_str_eq(field(o, "reason"), "");
        json_object_put(o);
}
END_TEST

START_TEST(test_closed_record) {
        netproxy_event ev = { .kind = NETPROXY_CLOSED, .host = "example.org", .port = 443, .bytes_up = 5000000000ULL, .bytes_down = 7 };
        const char *type = NULL;
        json_object *o = egress_event_record(&ev, &type);
        ck_assert_str_eq(type, "egress.closed");
        json_object *v;
        ck_assert(json_object_object_get_ex(o, "bytes_up", &v));
        ck_assert_int_eq(json_object_get_int64(v), 5000000000LL);
        ck_assert_str_eq(field(o, "bytes_down"), "7");
        ck_assert_ptr_null(field(o, "decision"));
        json_object_put(o);
        ev.kind = (netproxy_event_kind) 99;
        type = "x";
        ck_assert_ptr_null(egress_event_record(&ev, &type));
        ck_assert_ptr_null(type);
}
END_TEST

START_TEST(test_denial_window) {
        uint64_t ring[4] = { 0 };
        unsigned n = 0;
        /* Three within 10 s; the fourth comes after the first left the window. */
        ck_assert_uint_eq(egress_denials_note(ring, 4, &n, 1000, 10000), 1);
        ck_assert_uint_eq(egress_denials_note(ring, 4, &n, 2000, 10000), 2);
        ck_assert_uint_eq(egress_denials_note(ring, 4, &n, 11000, 10000), 3);
        ck_assert_uint_eq(egress_denials_note(ring, 4, &n, 11500, 10000), 3);
        ck_assert_uint_eq(n, 4);
        /* The ring wraps: the oldest is overwritten, counts stay bounded by it. */
        ck_assert_uint_eq(egress_denials_note(ring, 4, &n, 11600, 10000), 4);
        ck_assert_uint_eq(ring[0], 11600);
        ck_assert_uint_eq(egress_denials_note(ring, 4, &n, 11700, 10000), 4);
        ck_assert_uint_eq(n, 6);
        /* Long after: only the new one counts. */
        ck_assert_uint_eq(egress_denials_note(ring, 4, &n, 100000, 10000), 1);
        /* Window 0: only denials at this very millisecond. */
        ck_assert_uint_eq(egress_denials_note(ring, 4, &n, 100000, 0), 2);
}
END_TEST

int main(void) {
        Suite *s = suite_create("egress");
        TCase *tc = tcase_create("egress");
        tcase_add_test(tc, test_allowed_record);
        tcase_add_test(tc, test_denied_record);
        tcase_add_test(tc, test_closed_record);
        tcase_add_test(tc, test_denial_window);
        suite_add_tcase(s, tc);
        return unit_run(s, false);
}
