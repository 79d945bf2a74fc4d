/* Unit tests for daemon/audit/report-annotate.c: what an audit record gets for
 * sandbox.report. A request's peer as /proc says (this process is the peer:
 * pid, uid, exe, comm); an rpc record's "target" from the method's decoded
 * "id" parameter (bounded), with the peer only for host connections; nothing
 * for a method that names no sandbox or a connection without a peer. */
#include <check.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "report-annotate.h"
#include "unit.h"

static const char *str_of(json_object *o, const char *k) {
        json_object *v;
        return json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : NULL;
}

static bool has(json_object *o, const char *k) {
        return json_object_object_get_ex(o, k, NULL);
}

static connection host_peer(void) {
        connection c;
        memset(&c, 0, sizeof(c));
        c.peer.pid = getpid();
        c.peer.uid = getuid();
        c.peer.gid = getgid();
        return c;
}

static const rpc_method *method(const char *name) {
        const rpc_method *m = rpc_method_find(name, strlen(name));
        ck_assert_ptr_nonnull(m);
        return m;
}

START_TEST(peer_is_what_proc_says) {
        connection c = host_peer();
        json_object *ev = json_object_new_object();
        report_annotate_peer(ev, &c);
        char exe[PATH_MAX], comm[32];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        ck_assert_int_gt(n, 0);
        exe[n] = 0;
        int fd = open("/proc/self/comm", O_RDONLY | O_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        n = read(fd, comm, sizeof(comm) - 1);
        close(fd);
        ck_assert_int_gt(n, 1);
        comm[n - 1] = 0; /* the newline */
        ck_assert_int_eq(json_object_get_int(json_object_object_get(ev, "peer_pid")), getpid());
        ck_assert_int_eq(json_object_get_int(json_object_object_get(ev, "peer_uid")), (int) getuid());
        ck_assert_str_eq(str_of(ev, "peer_exe"), exe);
        ck_assert_str_eq(str_of(ev, "peer_comm"), comm);
        json_object_put(ev);
}
END_TEST

START_TEST(no_peer_adds_nothing) {
        json_object *ev = json_object_new_object();
        report_annotate_peer(ev, NULL);
        connection c;
        memset(&c, 0, sizeof(c));
        report_annotate_peer(ev, &c);
        ck_assert_int_eq(json_object_object_length(ev), 0);
        json_object_put(ev);
}
END_TEST

START_TEST(rpc_target_and_host_peer) {
        connection c = host_peer();
        rpc_sandbox_kill_params p = { .id = "0123456789ab" };
        rpc_ctx ctx = { .conn = &c, .args = &p, .method = method("sandbox.kill") };
        ck_assert(report_rpc_annotates(&ctx));
        json_object *ev = json_object_new_object();
        report_annotate_rpc(ev, &ctx);
        ck_assert_str_eq(str_of(ev, "target"), "0123456789ab");
        ck_assert(has(ev, "peer_pid"));
        ck_assert(has(ev, "peer_exe"));
        json_object_put(ev);
}
END_TEST

START_TEST(rpc_from_a_sandbox_has_no_peer) {
        connection c = host_peer();
        c.sandbox_id = (char *) "0123456789ab";
        rpc_sandbox_kill_params p = { .id = "ba9876543210" };
        rpc_ctx ctx = { .conn = &c, .args = &p, .method = method("sandbox.kill") };
        json_object *ev = json_object_new_object();
        report_annotate_rpc(ev, &ctx);
        ck_assert_str_eq(str_of(ev, "target"), "ba9876543210");
        ck_assert(!has(ev, "peer_pid"));
        ck_assert_int_eq(json_object_object_length(ev), 1);
        json_object_put(ev);
}
END_TEST

START_TEST(rpc_without_a_sandbox_adds_nothing) {
        connection c = host_peer();
        rpc_agentd_ping_params ping = {};
        rpc_ctx ctx = { .conn = &c, .args = &ping, .method = method("agentd.ping") };
        ck_assert(!report_rpc_annotates(&ctx));
        /* An id that is empty or longer than 64 bytes is no target either. */
        char longid[66];
        memset(longid, 'a', 65);
        longid[65] = 0;
        rpc_sandbox_kill_params p = { .id = longid };
        rpc_ctx kill = { .conn = &c, .args = &p, .method = method("sandbox.kill") };
        ck_assert(!report_rpc_annotates(&kill));
        p.id = "";
        ck_assert(!report_rpc_annotates(&kill));
        json_object *ev = json_object_new_object();
        report_annotate_rpc(ev, &ctx);
        report_annotate_rpc(ev, &kill);
        ck_assert_int_eq(json_object_object_length(ev), 0);
        json_object_put(ev);
}
END_TEST

int main(void) {
        Suite *s = suite_create("report-annotate");
        TCase *tc = tcase_create("annotate");
        tcase_add_test(tc, peer_is_what_proc_says);
        tcase_add_test(tc, no_peer_adds_nothing);
        tcase_add_test(tc, rpc_target_and_host_peer);
        tcase_add_test(tc, rpc_from_a_sandbox_has_no_peer);
        tcase_add_test(tc, rpc_without_a_sandbox_adds_nothing);
        suite_add_tcase(s, tc);
        return unit_run(s, false);
}
