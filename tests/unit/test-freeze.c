/* sandbox/freeze.c and cgroup.c on a composed daemon (fixture.h): a running
 * sandbox is frozen through credentials.revoke {sandbox, freeze_only} — by
 * its cgroup (cgroup.freeze, confirmed in cgroup.events) when the daemon has
 * a cgroup subtree, else by SIGSTOP to every process, confirmed in /proc —
 * and the review walk of a running sandbox (sandbox.diff) freezes its cgroup
 * and thaws it after. Without a cgroup nothing claims the cgroup method. */
#include <check.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "fixture.h"
#include "unit.h"

static fixture f;
static int conn = -1;

/* The daemon in the fixture's own cgroup subtree; false (the test is skipped)
 * without one. */
static bool start_in_cgroup(void) {
        fixture_init(&f);
        if (!f.cgroup[0]) {
                fprintf(stderr, "skipped: no writable cgroup v2 hierarchy\n");
                fixture_stop(&f);
                return false;
        }
        fixture_start(&f, NULL);
        conn = fixture_connect(&f);
        return true;
}

static void stop(void) {
        close(conn);
        fixture_stop(&f);
}

/* credentials.revoke {sandbox: id, freeze_only: true}: frozen count and method. */
static void pack_freeze(msgpack_packer *pk, void *arg) {
        msgpack_pack_map(pk, 2);
        mp_pack_kv_str(pk, "sandbox", arg);
        mp_pack_kv_bool(pk, "freeze_only", true);
}

static unsigned long long freeze(const char *id, char method[32]) {
        fixture_reply r;
        bool ok = fixture_call(&f, conn, "credentials.revoke", pack_freeze, (void *) id, &r);
        ck_assert_msg(ok, "revoke: %s: %s", r.code, r.message);
        const msgpack_object *n = fixture_get(r.result, "frozen");
        ck_assert_ptr_nonnull(n);
        ck_assert_ptr_nonnull(fixture_get_str(r.result, "freeze_method", method, 32));
        unsigned long long frozen = n->via.u64;
        fixture_reply_free(&r);
        return frozen;
}

static bool cgroup_frozen(const char *id) {
        char path[PATH_MAX + 64];
        snprintf(path, sizeof(path), "%s/sb-%s/cgroup.events", f.cgroup, id);
        char *text = fixture_read_file(path);
        ck_assert_msg(text != NULL, "no %s", path);
        bool yes = strstr(text, "frozen 1") != NULL;
        ck_assert(yes || strstr(text, "frozen 0"));
        free(text);
        return yes;
}

static pid_t init_pid(const char *id) {
        fixture_reply r;
        ck_assert(fixture_call(&f, conn, "sandbox.list", NULL, NULL, &r));
        pid_t pid = 0;
        for (uint32_t i = 0; i < r.result->via.array.size; i++) {
                char buf[32];
                const msgpack_object *e = &r.result->via.array.ptr[i];
                if (fixture_get_str(e, "id", buf, sizeof(buf)) && strcmp(buf, id) == 0)
                        pid = (pid_t) fixture_get(e, "pid")->via.u64;
        }
        fixture_reply_free(&r);
        ck_assert_int_gt(pid, 0);
        return pid;
}

/* The state letter of /proc/<pid>/stat. */
static char proc_state(pid_t pid) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
        char *text = fixture_read_file(path);
        ck_assert_ptr_nonnull(text);
        char *p = strrchr(text, ')');
        ck_assert_ptr_nonnull(p);
        char st = p[2];
        free(text);
        return st;
}

/* The sandbox's init has a child (the script's sleep) that runs too. */
static const char two_procs[] = "sleep 60 & wait";

START_TEST(test_freeze_by_cgroup_then_kill) {
        if (!start_in_cgroup())
                return;
        char id[16], method[32];
        fixture_spawn_sh(&f, conn, NULL, two_procs, id, sizeof(id));
        ck_assert(!cgroup_frozen(id));
        ck_assert_uint_eq(freeze(id, method), 1);
        ck_assert_str_eq(method, "cgroup");
        ck_assert(cgroup_frozen(id));
        fixture_entry e;
        ck_assert(fixture_list_find(&f, conn, id, &e));
        ck_assert_str_eq(e.state, "frozen");
        ck_assert(fixture_meta_state_is(&f, id, "frozen"));
        /* Frozen again: nothing to do, and still frozen. */
        ck_assert_uint_eq(freeze(id, method), 1);
        ck_assert(cgroup_frozen(id));

        /* A frozen sandbox can be killed. */
        fixture_call_ok(&f, conn, "sandbox.kill", "id", id, "signal", "KILL", NULL);
        long long sig = 0;
        fixture_wait(&f, conn, id, NULL, &sig);
        ck_assert_int_eq(sig, SIGKILL);
        ck_assert(fixture_list_find(&f, conn, id, &e));
        ck_assert_str_eq(e.state, "killed");
        /* An ended sandbox is not frozen: a revoke does not count it. */
        ck_assert_uint_eq(freeze(id, method), 0);
        stop();
}
END_TEST

/* The review walk of a running sandbox freezes its cgroup and thaws it after. */
START_TEST(test_diff_of_a_running_sandbox_thaws_it) {
        if (!start_in_cgroup())
                return;
        char id[16];
        fixture_spawn_sh(&f, conn, NULL, "echo x > x; exec sleep 60", id, sizeof(id));
        fixture_call_ok(&f, conn, "sandbox.diff", "id", id, NULL);
        ck_assert(!cgroup_frozen(id));
        fixture_entry e;
        ck_assert(fixture_list_find(&f, conn, id, &e));
        ck_assert_str_eq(e.state, "running");
        char state = proc_state(init_pid(id));
        ck_assert_msg(state != 'T' && state != 't', "state %c", state);
        stop();
}
END_TEST

/* No cgroup (CgroupPath= is not a cgroup the daemon can write): agentd.status
 * says so, and a freeze stops every process by signal, confirmed. */
START_TEST(test_without_cgroup_freezes_by_signal) {
        fixture_init(&f);
        fixture_start(&f, "[Daemon]\nCgroupPath=/nonexistent/agentd-no-cgroup\n");
        conn = fixture_connect(&f);
        fixture_reply r;
        ck_assert(fixture_call(&f, conn, "agentd.status", NULL, NULL, &r));
        char status[512];
        ck_assert_ptr_nonnull(fixture_get_str(r.result, "cgroup", status, sizeof(status)));
        ck_assert_msg(strncmp(status, "unavailable", 11) == 0, "cgroup: %s", status);
        fixture_reply_free(&r);

        char id[16], method[32];
        fixture_spawn_sh(&f, conn, NULL, two_procs, id, sizeof(id));
        pid_t init = init_pid(id);
        ck_assert_uint_eq(freeze(id, method), 1);
        ck_assert_str_eq(method, "signal");
        fixture_entry e;
        ck_assert(fixture_list_find(&f, conn, id, &e));
        ck_assert_str_eq(e.state, "frozen");
        /* Every process of it is stopped: the init and its child. */
        ck_assert_int_eq(proc_state(init), 'T');
        char path[96];
        snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int) init, (int) init);
        char *children = fixture_read_file(path);
        ck_assert_ptr_nonnull(children);
        int child = atoi(children);
        free(children);
        ck_assert_int_gt(child, 0);
        ck_assert_int_eq(proc_state(child), 'T');
        /* Stopped processes still die of SIGKILL. */
        fixture_call_ok(&f, conn, "sandbox.kill", "id", id, "signal", "KILL", NULL);
        long long sig = 0;
        fixture_wait(&f, conn, id, NULL, &sig);
        ck_assert_int_eq(sig, SIGKILL);
        stop();
}
END_TEST

int main(void) {
        Suite *s = suite_create("freeze");
        TCase *tc = tcase_create("freeze");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_freeze_by_cgroup_then_kill);
        tcase_add_test(tc, test_diff_of_a_running_sandbox_thaws_it);
        tcase_add_test(tc, test_without_cgroup_freezes_by_signal);
        suite_add_tcase(s, tc);
        return unit_run(s, false);
}
