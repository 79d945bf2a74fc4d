/* sandbox/pool.c on a composed daemon (fixture.h) with [Pool] WarmSandboxes=:
 * after a spawn of a task its pool fills (agentd.status "warm_sandboxes", a
 * cgroup sb-w<id> in the daemon's cgroup subtree), the next spawn of the task
 * runs in the warm one, a reload of the task policies drains it, and
 * WarmSandboxes=0 keeps none. */
#include <check.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "fixture.h"
#include "unit.h"

static fixture f;
static int conn = -1;

/* After fixture_init (tasks may be written between); false (the test is
 * skipped) without a cgroup v2 subtree, which the sb-w* checks need. */
static bool start(unsigned warm) {
        char conf[PATH_MAX + 128];
        if (!f.cgroup[0]) {
                fprintf(stderr, "skipped: no writable cgroup v2 hierarchy\n");
                fixture_stop(&f);
                return false;
        }
        snprintf(conf, sizeof(conf), "[Pool]\nWarmSandboxes=%u\n", warm);
        fixture_start(&f, conf);
        conn = fixture_connect(&f);
        return true;
}

static void stop(void) {
        close(conn);
        fixture_stop(&f);
}

static unsigned long long status_warm(void) {
        fixture_reply r;
        ck_assert(fixture_call(&f, conn, "agentd.status", NULL, NULL, &r));
        const msgpack_object *w = fixture_get(r.result, "warm_sandboxes");
        ck_assert_ptr_nonnull(w);
        unsigned long long n = w->via.u64;
        fixture_reply_free(&r);
        return n;
}

/* Warm sandboxes: as agentd.status counts them, and their sb-w* cgroups. */
static bool n_warm(void *arg) {
        const unsigned *n = arg;
        return status_warm() == n[0] && fixture_count_entries(f.cgroup, "sb-w") == n[1];
}

/* n warm, and n_cgroups sb-w* cgroups (a sandbox that took one runs in its cgroup). */
static bool wait_warm_cg(unsigned n, unsigned n_cgroups) {
        return fixture_run_until(&f, 15000, n_warm, (unsigned[2]) { n, n_cgroups });
}

static bool wait_warm(unsigned n) {
        return wait_warm_cg(n, n);
}

/* The sb-w* cgroup names, "/name\n" each, concatenated. */
static void warm_cgroups(char *buf, size_t size) {
        DIR *d = opendir(f.cgroup);
        ck_assert_ptr_nonnull(d);
        struct dirent *de;
        buf[0] = 0;
        while ((de = readdir(d)))
                if (strncmp(de->d_name, "sb-w", 4) == 0) {
                        size_t n = strlen(buf);
                        snprintf(buf + n, size - n, "/%s\n", de->d_name);
                }
        closedir(d);
}

static const char pooled_task[] =
        "[Task]\nCommand=/bin/sh\n[Filesystem]\nWorkspace=overlay\n[Network]\nMode=none\n";

static void spawn_and_end(const char *task) {
        char id[16];
        fixture_spawn_sh(&f, conn, task, "exit 0", id, sizeof(id));
        fixture_wait(&f, conn, id, NULL, NULL);
}

/* The cgroup line ("0::/path\n") of the newest sandbox's init. */
static char *newest_cgroup(void) {
        fixture_reply r;
        ck_assert(fixture_call(&f, conn, "sandbox.list", NULL, NULL, &r));
        const msgpack_object *pid = fixture_get(&r.result->via.array.ptr[r.result->via.array.size - 1], "pid");
        ck_assert(pid && pid->type == MSGPACK_OBJECT_POSITIVE_INTEGER);
        char path[64];
        snprintf(path, sizeof(path), "/proc/%llu/cgroup", (unsigned long long) pid->via.u64);
        fixture_reply_free(&r);
        char *text = fixture_read_file(path);
        ck_assert_ptr_nonnull(text);
        char *line = strstr(text, "0::");
        ck_assert_ptr_nonnull(line);
        char *name = strrchr(line, '/');
        ck_assert_ptr_nonnull(name);
        char *copy = strdup(name);
        free(text);
        return copy;
}

START_TEST(test_fills_serves_and_drains) {
        fixture_init(&f);
        fixture_write_task(&f, "pooled", pooled_task);
        if (!start(1))
                return;
        /* The default task's pool fills at start; any other's after its first spawn. */
        ck_assert_msg(wait_warm(1), "the default task's pool did not fill");
        spawn_and_end("pooled");
        ck_assert_msg(wait_warm(2), "the pool of task pooled did not fill");
        char before[512];
        warm_cgroups(before, sizeof(before));

        /* The next spawn of the task runs in a warm sandbox (its cgroup), made before. */
        char id[16];
        fixture_spawn_sh(&f, conn, "pooled", "exec sleep 60", id, sizeof(id));
        char *name = newest_cgroup();
        ck_assert_msg(strncmp(name, "/sb-w", 5) == 0 && strstr(before, name), "the sandbox runs in %s, not in one of %s", name,
                      before);
        free(name);
        char own[32];
        snprintf(own, sizeof(own), "sb-%s", id);
        ck_assert_uint_eq(fixture_count_entries(f.cgroup, own), 0);    /* no cgroup of its own */

        /* It took the last one: the pool fills again. */
        ck_assert_msg(wait_warm_cg(2, 3), "the pool did not refill");
        fixture_call_ok(&f, conn, "sandbox.kill", "id", id, "signal", "KILL", NULL);
        fixture_wait(&f, conn, id, NULL, NULL);
        ck_assert(wait_warm(2));

        /* A change in the task directory reloads the policies: every pool is drained. */
        fixture_write_task(&f, "unit", "[Task]\nCommand=/bin/true\n[Network]\nMode=none\n");
        ck_assert_msg(wait_warm(0), "a reload did not drain the pools");
        stop();
}
END_TEST

START_TEST(test_zero_keeps_none) {
        fixture_init(&f);
        fixture_write_task(&f, "pooled", pooled_task);
        if (!start(0))
                return;
        spawn_and_end(NULL);
        spawn_and_end("pooled");
        /* A refill would start within a loop iteration or two of the exit. */
        fixture_run(&f, 300);
        ck_assert_uint_eq(status_warm(), 0);
        ck_assert_uint_eq(fixture_count_entries(f.cgroup, "sb-w"), 0);
        stop();
}
END_TEST

int main(void) {
        Suite *s = suite_create("pool");
        TCase *tc = tcase_create("pool");
        tcase_set_timeout(tc, 90);
        tcase_add_test(tc, test_fills_serves_and_drains);
        tcase_add_test(tc, test_zero_keeps_none);
        suite_add_tcase(s, tc);
        return unit_run(s, false);
}
