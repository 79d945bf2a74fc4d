/* sandbox/spawn.c on a composed daemon (fixture.h): the step list's refusals
 * answer with the stable code (CONTRACT §2) and leave nothing behind — no
 * sandbox directory in the state directory, no sb-* cgroup, no entry in
 * sandbox.list — while the audit log records the refused request. A failure
 * late in the list (after the record and the cgroup exist) is undone. */
#include <check.h>
#include <fcntl.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "fixture.h"
#include "unit.h"

static fixture f;

/* The daemon in the fixture's cgroup subtree (f.cgroup), so sb-* can be counted. */
static void start(void) {
        fixture_init(&f);
        fixture_start(&f, NULL);
}

static void stop(void) {
        fixture_stop(&f);
}

static size_t n_sandbox_dirs(void) {
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s/agentd/sandboxes", f.state_home);
        return fixture_count_entries(dir, NULL);
}

/* The spawn is refused with `code`, and nothing is left of it. */
static void refused(int c, const fixture_spawn_req *s, const char *code) {
        size_t dirs = n_sandbox_dirs(), listed = fixture_list_count(&f, c);
        size_t cgroups = f.cgroup[0] ? fixture_count_entries(f.cgroup, "sb-") : 0;
        fixture_reply r;
        char id[16];
        ck_assert_msg(!fixture_spawn(&f, c, s, id, sizeof(id), &r), "spawn of %s should be refused", s->workspace);
        ck_assert_msg(strcmp(r.code, code) == 0, "%s: %s (want %s)", r.code, r.message, code);
        fixture_reply_free(&r);
        ck_assert_uint_eq(n_sandbox_dirs(), dirs);
        ck_assert_uint_eq(fixture_list_count(&f, c), listed);
        if (f.cgroup[0])
                ck_assert_uint_eq(fixture_count_entries(f.cgroup, "sb-"), cgroups);
        char outcome[80];
        snprintf(outcome, sizeof(outcome), "\"outcome\"=>\"%s\"", code);
        fixture_audit_match q = { .f = &f, .c = c, .type = "rpc", .needles = { "\"method\"=>\"sandbox.spawn\"", outcome } };
        ck_assert_msg(fixture_audited(&q), "no audit record of the refusal (%s)", code);
}

static const char *const true_argv[] = { "/bin/true", NULL };

START_TEST(test_workspace_refusals) {
        start();
        int c = fixture_connect(&f);
        char path[PATH_MAX], file[PATH_MAX], link_home[PATH_MAX], link_root[PATH_MAX];
        snprintf(path, sizeof(path), "%s/nosuch", f.home);
        refused(c, &(fixture_spawn_req) { .workspace = path, .argv = true_argv }, "invalid_params");

        snprintf(file, sizeof(file), "%s/a-file", f.home);
        fixture_write_file(file, "not a directory\n");
        refused(c, &(fixture_spawn_req) { .workspace = file, .argv = true_argv }, "invalid_params");

        /* A symlink is followed: what counts is where it leads. */
        snprintf(link_home, sizeof(link_home), "%s/to-home", f.workspace);
        ck_assert_int_eq(symlink(f.home, link_home), 0);
        refused(c, &(fixture_spawn_req) { .workspace = link_home, .argv = true_argv }, "policy_denied");
        snprintf(link_root, sizeof(link_root), "%s/to-root", f.workspace);
        ck_assert_int_eq(symlink("/", link_root), 0);
        refused(c, &(fixture_spawn_req) { .workspace = link_root, .argv = true_argv }, "policy_denied");
        snprintf(link_root, sizeof(link_root), "%s/to-proc", f.workspace);
        ck_assert_int_eq(symlink("/proc/self", link_root), 0);
        refused(c, &(fixture_spawn_req) { .workspace = link_root, .argv = true_argv }, "policy_denied");
        snprintf(link_root, sizeof(link_root), "%s/to-state", f.workspace);
        snprintf(path, sizeof(path), "%s/agentd", f.state_home);
        ck_assert_int_eq(symlink(path, link_root), 0);
        refused(c, &(fixture_spawn_req) { .workspace = link_root, .argv = true_argv }, "policy_denied");
        refused(c, &(fixture_spawn_req) { .workspace = "relative/dir", .argv = true_argv }, "invalid_params");
        close(c);
        stop();
}
END_TEST

START_TEST(test_task_and_argv_refusals) {
        start();
        int c = fixture_connect(&f);
        refused(c, &(fixture_spawn_req) { .task = "nosuch", .workspace = f.workspace, .argv = true_argv }, "not_found");
        static const char *const none[] = { NULL };
        refused(c, &(fixture_spawn_req) { .workspace = f.workspace, .argv = none }, "invalid_params");
        static const char *const empty0[] = { "", "x", NULL };
        refused(c, &(fixture_spawn_req) { .workspace = f.workspace, .argv = empty0 }, "invalid_params");

        /* 5000 arguments: over MAX_ARGV_COUNT (4096). */
        static const char *many[5001];
        for (size_t i = 0; i < 5000; i++)
                many[i] = "x";
        refused(c, &(fixture_spawn_req) { .workspace = f.workspace, .argv = many }, "limit_exceeded");
        /* One argument of 300 KiB: over MAX_ARGV_BYTES (256 KiB). */
        char *big = malloc(300 * 1024 + 1);
        ck_assert_ptr_nonnull(big);
        memset(big, 'y', 300 * 1024);
        big[300 * 1024] = 0;
        const char *const bigv[] = { "/bin/echo", big, NULL };
        refused(c, &(fixture_spawn_req) { .workspace = f.workspace, .argv = bigv }, "limit_exceeded");
        free(big);
        close(c);
        stop();
}
END_TEST

static void pack_revoke_all(msgpack_packer *pk, void *arg) {
        (void) arg;
        msgpack_pack_map(pk, 1);
        mp_pack_kv_bool(pk, "all", true);
}

START_TEST(test_locked_down_after_revoke_all) {
        start();
        int c = fixture_connect(&f);
        fixture_reply r;
        ck_assert(fixture_call(&f, c, "credentials.revoke", pack_revoke_all, NULL, &r));
        fixture_reply_free(&r);
        ck_assert(fixture_call(&f, c, "agentd.status", NULL, NULL, &r));
        const msgpack_object *ld = fixture_get(r.result, "locked_down");
        ck_assert(ld && ld->type == MSGPACK_OBJECT_BOOLEAN && ld->via.boolean);
        fixture_reply_free(&r);

        refused(c, &(fixture_spawn_req) { .workspace = f.workspace, .argv = true_argv }, "locked_down");

        /* Unlocked, the same spawn runs. */
        fixture_call_ok(&f, c, "agentd.unlock", NULL);
        char id[16];
        ck_assert(fixture_spawn(&f, c, &(fixture_spawn_req) { .workspace = f.workspace, .argv = true_argv }, id, sizeof(id), &r));
        long long code = -1;
        fixture_wait(&f, c, id, &code, NULL);
        ck_assert_int_eq(code, 0);
        close(c);
        stop();
}
END_TEST

/* attach with a stdin the relay refuses (an eventfd): the stdin-relay step
 * fails after the record, the cgroup and the state directory's files were
 * made; the undo removes the cgroup and the record. */
START_TEST(test_late_failure_is_undone) {
        start();
        int c = fixture_connect(&f);
        size_t listed = fixture_list_count(&f, c);
        int p[2];
        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
        int dfd = eventfd(0, EFD_CLOEXEC);
        ck_assert_int_ge(dfd, 0);

        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        uint32_t msgid = f.next_msgid++;
        rpc_pack_request_header(&pk, msgid, "sandbox.spawn");
        msgpack_pack_array(&pk, 1);
        msgpack_pack_map(&pk, 3);
        mp_pack_kv_str(&pk, "workspace", f.workspace);
        mp_pack_kv_bool(&pk, "attach", true);
        mp_pack_cstr(&pk, "argv");
        msgpack_pack_array(&pk, 1);
        mp_pack_cstr(&pk, "/bin/true");
        int fds[3] = { dfd, p[1], p[1] };
        fixture_send_raw(&f, c, sb.data, sb.size, fds, 3);
        msgpack_sbuffer_destroy(&sb);
        fixture_reply r;
        ck_assert(!fixture_recv(&f, c, msgid, &r));
        ck_assert_msg(strcmp(r.code, "invalid_params") == 0, "%s: %s", r.code, r.message);
        ck_assert_ptr_nonnull(strstr(r.message, "stdin"));
        fixture_reply_free(&r);
        close(dfd);
        close(p[0]);
        close(p[1]);

        ck_assert_uint_eq(fixture_list_count(&f, c), listed);
        if (f.cgroup[0])
                ck_assert_uint_eq(fixture_count_entries(f.cgroup, "sb-"), 0);
        /* Its directory may stay (swept at the next start), never its record. */
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s/agentd/sandboxes", f.state_home);
        DIR *d = opendir(dir);
        struct dirent *de;
        while (d && (de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                char meta[PATH_MAX];
                fixture_sandbox_path(&f, de->d_name, "meta.json", meta, sizeof(meta));
                ck_assert_msg(access(meta, F_OK) < 0, "%s is left behind", meta);
        }
        if (d)
                closedir(d);
        fixture_audit_match q = { .f = &f, .c = c, .type = "rpc",
                                  .needles = { "\"method\"=>\"sandbox.spawn\"", "\"outcome\"=>\"invalid_params\"" } };
        ck_assert(fixture_audited(&q));
        close(c);
        stop();
}
END_TEST

int main(void) {
        Suite *s = suite_create("spawn");
        TCase *tc = tcase_create("spawn");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_workspace_refusals);
        tcase_add_test(tc, test_task_and_argv_refusals);
        tcase_add_test(tc, test_locked_down_after_revoke_all);
        tcase_add_test(tc, test_late_failure_is_undone);
        suite_add_tcase(s, tc);
        return unit_run(s, false);
}
