/* sandbox/plan-cache.c on a composed daemon (fixture.h), [Pool] off: two
 * spawns of a task build its plan once (agentd.status "plan_cache_builds"),
 * another task builds its own; a task reload, revoke --all, a mount, a toolchain
 * appearing on a probed path and a probed path replaced by a symlink drop it,
 * and the next spawn sees the machine as it is now; files appearing elsewhere
 * ($TMPDIR, the workspace, the home) leave it alone; a credential file that
 * appears after the plan was cached is hidden at the next spawn without a
 * rebuild; a task with a seccomp profile file is never cached. What the
 * sandbox saw is read from sandbox.logs. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fixture.h"
#include "proto.h"
#include "unit.h"

static fixture f;
static int conn = -1;

/* ---- local helpers ----------------------------------------------------------- */

static void write_file(const char *path, const char *text, mode_t mode) {
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s", path);
        for (char *p = dir + 1; (p = strchr(p, '/')); p++) { /* mkdir -p of its directory */
                *p = 0;
                ck_assert_msg(mkdir(dir, 0755) == 0 || errno == EEXIST, "mkdir %s: %s", dir, strerror(errno));
                *p = '/';
        }
        FILE *fp = fopen(path, "we");
        ck_assert_msg(fp != NULL, "open %s: %s", path, strerror(errno));
        ck_assert_int_ge(fputs(text, fp), 0);
        ck_assert_int_eq(fclose(fp), 0);
        ck_assert_int_eq(chmod(path, mode), 0);
}

static void home_path(const char *rel, char *buf, size_t size) {
        snprintf(buf, size, "%s/%s", f.home, rel);
}

static void home_write(const char *rel, const char *text, mode_t mode) {
        char path[PATH_MAX];
        home_path(rel, path, sizeof(path));
        write_file(path, text, mode);
}

static void start(const char *extra_config) {
        char conf[1024];
        snprintf(conf, sizeof(conf), "[Pool]\nWarmSandboxes=0\n%s", extra_config ? extra_config : "");
        fixture_start(&f, conf);
        conn = fixture_connect(&f);
}

static void stop(void) {
        close(conn);
        conn = -1;
        fixture_stop(&f);
}

static unsigned long long builds(void) {
        fixture_reply r;
        ck_assert(fixture_call(&f, conn, "agentd.status", NULL, NULL, &r));
        const msgpack_object *b = fixture_get(r.result, "plan_cache_builds");
        ck_assert_ptr_nonnull(b);
        ck_assert_int_eq(b->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
        unsigned long long n = b->via.u64;
        fixture_reply_free(&r);
        return n;
}

typedef struct run_args {
        const char *task, *script, *path;
} run_args;

static void pack_run(msgpack_packer *pk, void *arg) {
        const run_args *a = arg;
        msgpack_pack_map(pk, a->path ? 4 : 3);
        mp_pack_kv_str(pk, "task", a->task);
        mp_pack_kv_str(pk, "workspace", f.workspace);
        if (a->path)
                mp_pack_kv_str(pk, "path", a->path);
        mp_pack_cstr(pk, "argv");
        msgpack_pack_array(pk, 3);
        mp_pack_cstr(pk, "/bin/sh");
        mp_pack_cstr(pk, "-c");
        mp_pack_cstr(pk, a->script);
}

/* sandbox.spawn of `sh -c script`; false with r kept (code, message) on an error. */
static bool try_run(const char *task, const char *path, const char *script, char **ret_out, fixture_reply *r) {
        run_args a = { task, script, path };
        if (!fixture_call(&f, conn, "sandbox.spawn", pack_run, &a, r))
                return false;
        char id[16];
        ck_assert_ptr_nonnull(fixture_get_str(r->result, "id", id, sizeof(id)));
        fixture_reply_free(r);
        bool ok = fixture_call_str(&f, conn, r, "sandbox.wait", "id", id, NULL);
        ck_assert_msg(ok, "wait %s: %s: %s", id, r->code, r->message);
        fixture_reply_free(r);
        ck_assert(fixture_call_str(&f, conn, r, "sandbox.logs", "id", id, NULL));
        const msgpack_object *o = fixture_get(r->result, "stdout");
        ck_assert(o && o->type == MSGPACK_OBJECT_BIN);
        *ret_out = strndup(o->via.bin.ptr, o->via.bin.size);
        ck_assert_ptr_nonnull(*ret_out);
        fixture_reply_free(r);
        return true;
}

/* The script's stdout (caller frees); the spawn must succeed. */
static char *run(const char *task, const char *path, const char *script) {
        fixture_reply r;
        char *out = NULL;
        bool ok = try_run(task, path, script, &out, &r);
        ck_assert_msg(ok, "spawn: %s: %s", r.code, r.message);
        return out;
}

static void run_expect(const char *task, const char *path, const char *script, const char *want) {
        char *out = run(task, path, script);
        ck_assert_str_eq(out, want);
        free(out);
}

/* task.show's [Task] Description= is `want`: the reload took effect. */
static bool description_is(void *arg) {
        const char *const *a = arg;
        fixture_reply r;
        bool ok = fixture_call_str(&f, conn, &r, "task.show", "name", a[0], NULL);
        char buf[128];
        const msgpack_object *task = ok ? fixture_get(r.result, "Task") : NULL;
        bool yes = task && fixture_get_str(task, "Description", buf, sizeof(buf)) && strcmp(buf, a[1]) == 0;
        fixture_reply_free(&r);
        return yes;
}

static const char plain_task[] = "[Task]\nDescription=%s\nCommand=/bin/sh\n[Filesystem]\nWorkspace=overlay\n"
                                 "TmpSize=%s\n[Network]\nMode=none\n";

static void write_plain_task(const char *name, const char *description, const char *tmp_size) {
        char text[512];
        snprintf(text, sizeof(text), plain_task, description, tmp_size);
        fixture_write_task(&f, name, text);
}

/* ---- the tests ----------------------------------------------------------------- */

START_TEST(test_one_build_per_task) {
        fixture_init(&f);
        write_plain_task("alpha", "a", "16M");
        write_plain_task("beta", "b", "16M");
        start(NULL);
        ck_assert_uint_eq(builds(), 0);
        run_expect("alpha", NULL, "echo one", "one\n");
        ck_assert_uint_eq(builds(), 1);
        run_expect("alpha", NULL, "echo two", "two\n");
        ck_assert_uint_eq(builds(), 1);
        run_expect("beta", NULL, "echo three", "three\n");
        ck_assert_uint_eq(builds(), 2);
        run_expect("beta", NULL, "echo four", "four\n");
        run_expect("alpha", NULL, "echo five", "five\n");
        ck_assert_uint_eq(builds(), 2);
        stop();
}
END_TEST

/* The task file rewritten: the next spawn runs under the new policy (a
 * smaller /tmp), built anew. */
START_TEST(test_task_reload_drops_it) {
        fixture_init(&f);
        write_plain_task("sized", "sixteen", "16M");
        start(NULL);
        const char *df = "df -k /tmp | tail -1 | awk '{print $2}'";
        run_expect("sized", NULL, df, "16384\n");
        run_expect("sized", NULL, df, "16384\n");
        ck_assert_uint_eq(builds(), 1);
        write_plain_task("sized", "eight", "8M");
        ck_assert(fixture_run_until(&f, 10000, description_is, (const char *[]) { "sized", "eight" }));
        run_expect("sized", NULL, df, "8192\n");
        ck_assert_uint_eq(builds(), 2);
        run_expect("sized", NULL, df, "8192\n");
        ck_assert_uint_eq(builds(), 2);
        stop();
}
END_TEST

/* revoke --all drains the pool and the plan cache; after agentd.unlock the
 * next spawn builds again. */
static void pack_revoke_all(msgpack_packer *pk, void *arg) {
        (void) arg;
        msgpack_pack_map(pk, 1);
        mp_pack_kv_bool(pk, "all", true);
}

START_TEST(test_revoke_all_drops_it) {
        fixture_init(&f);
        write_plain_task("alpha", "a", "16M");
        start(NULL);
        run_expect("alpha", NULL, "echo one", "one\n");
        run_expect("alpha", NULL, "echo two", "two\n");
        ck_assert_uint_eq(builds(), 1);
        fixture_reply r;
        bool ok = fixture_call(&f, conn, "credentials.revoke", pack_revoke_all, NULL, &r);
        ck_assert_msg(ok, "revoke: %s: %s", r.code, r.message);
        fixture_reply_free(&r);
        ok = fixture_call(&f, conn, "agentd.unlock", NULL, NULL, &r);
        ck_assert_msg(ok, "unlock: %s: %s", r.code, r.message);
        fixture_reply_free(&r);
        run_expect("alpha", NULL, "echo three", "three\n");
        ck_assert_uint_eq(builds(), 2);
        stop();
}
END_TEST

/* ~/.cargo (a Toolchains=auto location) appears after the plan was cached:
 * the next spawn shows it and has it on PATH. */
START_TEST(test_new_toolchain_dir_drops_it) {
        fixture_init(&f);
        start(NULL);
        char path[PATH_MAX + 32];
        snprintf(path, sizeof(path), "%s/.cargo/bin:/usr/bin:/bin", f.home);
        run_expect("default", path, "command -v cargo || echo missing", "missing\n");
        run_expect("default", path, "command -v cargo || echo missing", "missing\n");
        ck_assert_uint_eq(builds(), 1);
        home_write(".cargo/bin/cargo", "#!/bin/sh\necho fake cargo\n", 0755);
        run_expect("default", path, "cargo", "fake cargo\n");
        ck_assert_uint_eq(builds(), 2);
        stop();
}
END_TEST

/* Task "ro" with ReadOnlyPaths=~/data (a directory holding f): two spawns
 * running `look` print `want` on one plan build; then ~/data is replaced by a
 * symlink to `target`. */
static void ro_data_then_link(const char *look, const char *want, const char *target) {
        home_write("data/f", "data\n", 0644);
        fixture_write_task(&f, "ro", "[Task]\nCommand=/bin/sh\n[Filesystem]\nWorkspace=overlay\nToolchains=none\n"
                                     "ReadOnlyPaths=~/data\n[Network]\nMode=none\n");
        start(NULL);
        run_expect("ro", NULL, look, want);
        run_expect("ro", NULL, look, want);
        ck_assert_uint_eq(builds(), 1);
        char data[PATH_MAX], data_f[PATH_MAX];
        home_path("data", data, sizeof(data));
        home_path("data/f", data_f, sizeof(data_f));
        ck_assert_int_eq(unlink(data_f), 0);
        ck_assert_int_eq(rmdir(data), 0);
        ck_assert_int_eq(symlink(target, data), 0);
}

/* ReadOnlyPaths=~/data, a directory when the plan was built, then replaced
 * by a symlink to ~/other: the next spawn shows what the link points to now
 * (~/other), not the stale resolution. */
START_TEST(test_path_replaced_by_symlink_drops_it) {
        fixture_init(&f);
        home_write("other/f", "other\n", 0644);
        const char *look = "cat ~/data/f 2>/dev/null || echo no-data; cat ~/other/f 2>/dev/null || echo no-other";
        char other[PATH_MAX];
        home_path("other", other, sizeof(other));
        ro_data_then_link(look, "data\nno-other\n", other);
        char *out = run("ro", NULL, look);
        ck_assert_msg(strstr(out, "no-other") == NULL, "the sandbox followed the stale plan: %s", out);
        free(out);
        ck_assert_uint_eq(builds(), 2);
        stop();
}
END_TEST

/* The same with the link pointing at agentd's state directory: the next
 * spawn is refused (the task-path check runs again on the new resolution),
 * it never shows the state directory through the stale plan's bind. */
START_TEST(test_path_replaced_by_symlink_to_state_dir_refused) {
        fixture_init(&f);
        const char *look = "ls ~/data; echo END";
        char state[PATH_MAX];
        snprintf(state, sizeof(state), "%s/agentd", f.state_home);
        ro_data_then_link(look, "f\nEND\n", state);
        fixture_reply r;
        char *out = NULL;
        bool ok = try_run("ro", NULL, look, &out, &r);
        ck_assert_msg(!ok, "spawned through the stale plan; it saw: %s", out);
        ck_assert_str_eq(r.code, "policy_denied");
        ck_assert_ptr_nonnull(strstr(r.message, "agentd's state directory"));
        fixture_reply_free(&r);
        stop();
}
END_TEST

/* Entries appearing in directories on the way to probed paths, under names
 * no probe looks at ($TMPDIR, the workspace, the home): the cache holds. */
START_TEST(test_unrelated_churn_keeps_it) {
        fixture_init(&f);
        start(NULL);
        run_expect("default", NULL, "echo one", "one\n");
        ck_assert_uint_eq(builds(), 1);
        const char *tmp = getenv("TMPDIR");
        char tmpfile[PATH_MAX], ws[PATH_MAX];
        snprintf(tmpfile, sizeof(tmpfile), "%s/agentd-plan-cache-churn-%d", tmp && *tmp == '/' ? tmp : "/tmp", (int) getpid());
        write_file(tmpfile, "x\n", 0644);
        snprintf(ws, sizeof(ws), "%s/src/main.c", f.workspace);
        write_file(ws, "int main(void) { return 0; }\n", 0644);
        home_write("notes.txt", "x\n", 0644);
        run_expect("default", NULL, "cat src/main.c", "int main(void) { return 0; }\n");
        ck_assert_int_eq(unlink(tmpfile), 0);
        run_expect("default", NULL, "echo three", "three\n");
        ck_assert_uint_eq(builds(), 1);
        stop();
}
END_TEST

/* Credential files appear while the plan is cached (the home shown
 * read-only): unreadable at the very next spawn, with no rebuild. */
START_TEST(test_secret_after_cached_plan_hidden) {
        fixture_init(&f);
        fixture_write_task(&f, "home", "[Task]\nCommand=/bin/sh\n[Filesystem]\nReadOnlyPaths=~\n[Network]\nMode=none\n");
        start(NULL);
        const char *look = "cat ~/.aws/credentials ~/.ssh/id_ed25519 2>/dev/null; ls -A ~/.aws 2>/dev/null; ls -A ~/.ssh 2>/dev/null; "
                           "cat ~/visible; echo END";
        home_write("visible", "shown\n", 0644);
        run_expect("home", NULL, look, "shown\nEND\n");
        run_expect("home", NULL, look, "shown\nEND\n");
        ck_assert_uint_eq(builds(), 1);
        home_write(".aws/credentials", "SECRET aws\n", 0600);
        home_write(".ssh/id_ed25519", "SECRET ssh\n", 0600);
        run_expect("home", NULL, look, "shown\nEND\n");
        ck_assert_uint_eq(builds(), 1);
        /* They are readable outside: the test is not vacuous. */
        char path[PATH_MAX];
        home_path(".ssh/id_ed25519", path, sizeof(path));
        FILE *fp = fopen(path, "re");
        char buf[64] = "";
        ck_assert_ptr_nonnull(fp);
        ck_assert_ptr_nonnull(fgets(buf, sizeof(buf), fp));
        fclose(fp);
        ck_assert_str_eq(buf, "SECRET ssh\n");
        stop();
}
END_TEST

/* Seccomp=FILE: the file may change in place, so the plan is built per
 * spawn (never stored) and the next spawn runs under the file as it is now. */
START_TEST(test_seccomp_profile_file_never_cached) {
        fixture_init(&f);
        char profile[PATH_MAX], task[PATH_MAX + 256];
        snprintf(profile, sizeof(profile), "%s/profile.seccomp", f.root);
        write_file(profile, "include default\nmkdir eperm\nmkdirat eperm\n", 0644);
        snprintf(task, sizeof(task), "[Task]\nCommand=/bin/sh\n[Filesystem]\nWorkspace=overlay\n[Network]\nMode=none\n"
                                     "[Security]\nSeccomp=%s\n", profile);
        fixture_write_task(&f, "filtered", task);
        start(NULL);
        const char *try_mkdir = "mkdir /tmp/d 2>/dev/null && echo made || echo refused";
        run_expect("filtered", NULL, try_mkdir, "refused\n");
        run_expect("filtered", NULL, try_mkdir, "refused\n");
        ck_assert_uint_eq(builds(), 0);
        write_file(profile, "include default\n", 0644);
        run_expect("filtered", NULL, try_mkdir, "made\n");
        ck_assert_uint_eq(builds(), 0);
        /* A built-in profile is cached. */
        run_expect("default", NULL, try_mkdir, "made\n");
        ck_assert_uint_eq(builds(), 1);
        stop();
}
END_TEST

/* A change of agentd's mount table (a tmpfs mounted in a private mount
 * namespace of this test process, which is agentd here): the cache is
 * dropped. Needs root (CAP_SYS_ADMIN); skipped otherwise. */
START_TEST(test_mount_change_drops_it) {
        if (geteuid() != 0 || unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
                fprintf(stderr, "skipped: no private mount namespace (needs root)\n");
                return;
        }
        fixture_init(&f);
        start(NULL);
        run_expect("default", NULL, "echo one", "one\n");
        run_expect("default", NULL, "echo two", "two\n");
        ck_assert_uint_eq(builds(), 1);
        char mnt[PATH_MAX];
        snprintf(mnt, sizeof(mnt), "%s/mnt", f.root);
        ck_assert_int_eq(mkdir(mnt, 0755), 0);
        ck_assert_int_eq(mount("tmpfs", mnt, "tmpfs", 0, "size=1m"), 0);
        run_expect("default", NULL, "echo three", "three\n");
        ck_assert_uint_eq(builds(), 2);
        ck_assert_int_eq(umount(mnt), 0);
        stop();
}
END_TEST

int main(void) {
        Suite *s = suite_create("plan-cache");
        TCase *tc = tcase_create("plan-cache");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_one_build_per_task);
        tcase_add_test(tc, test_task_reload_drops_it);
        tcase_add_test(tc, test_revoke_all_drops_it);
        tcase_add_test(tc, test_new_toolchain_dir_drops_it);
        tcase_add_test(tc, test_path_replaced_by_symlink_drops_it);
        tcase_add_test(tc, test_path_replaced_by_symlink_to_state_dir_refused);
        tcase_add_test(tc, test_unrelated_churn_keeps_it);
        tcase_add_test(tc, test_secret_after_cached_plan_hidden);
        tcase_add_test(tc, test_seccomp_profile_file_never_cached);
        tcase_add_test(tc, test_mount_change_drops_it);
        suite_add_tcase(s, tc);
        return unit_run(s, false);
}
