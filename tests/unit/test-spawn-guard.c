/* Unit tests for daemon/sandbox/spawn-guard.c: the places a workspace may never
 * be (/, kernel trees, $HOME and its ancestors, agentd's own directories, also
 * through a symlink), the task paths that would reach agentd's files, and what
 * RequireLimits= does with limits that cannot hold. A temporary home with the
 * daemon's directories in it stands in for the user's. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cgroup.h"
#include "spawn-guard.h"
#include "unit.h"

static char tmp[] = "/tmp/test-spawn-guard-XXXXXX";
static char home[300], state[300], runtime[300], sock[300], conf[300], tasks[300], project[300];
static spawn_guard g;

static void mk(char *buf, const char *rel) {
        snprintf(buf, 300, "%s/%s", tmp, rel);
        ck_assert_msg(mkdir(buf, 0700) == 0 || errno == EEXIST, "%s: %s", buf, strerror(errno));
}

static void setup(void) {
        char scratch[300];
        strcpy(tmp, "/tmp/test-spawn-guard-XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(tmp));
        mk(home, "home");
        mk(scratch, "home/.local");
        mk(scratch, "home/.local/state");
        mk(state, "home/.local/state/agentd");
        mk(scratch, "home/.config");
        mk(conf, "home/.config/agentd");
        mk(tasks, "home/.config/agentd/tasks");
        mk(project, "home/project");
        mk(runtime, "run");
        snprintf(sock, sizeof(sock), "%s/agentd.sock", runtime);
        snprintf(scratch, sizeof(scratch), "%s/agentd.conf", conf);
        static char conf_file[300];
        strcpy(conf_file, scratch);
        g = (spawn_guard) {
                .home = home, .runtime_dir = runtime, .socket_path = sock, .config_path = conf_file,
                .task_dir = tasks, .state_dir = state,
        };
}

static void teardown(void) {
        char cmd[400];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
        (void) !system(cmd);
}

/* Refused with this errno and code, the message containing `what`. */
static void refused(const char *ws, int want_r, rpc_error_code want_code, const char *what) {
        _cleanup_error_ rpc_error err = {};
        char *path = NULL;
        int r = spawn_guard_workspace(&g, ws, &path, &err);
        ck_assert_msg(r == want_r, "workspace %s: got %d (%s), want %d", ws, r, err.message, want_r);
        ck_assert_ptr_null(path);
        ck_assert_int_eq(err.code, want_code);
        ck_assert_msg(strstr(err.message, what), "workspace %s: '%s' lacks '%s'", ws, err.message, what);
}

START_TEST(test_project_directory_allowed) {
        _cleanup_error_ rpc_error err = {};
        char *path = NULL;
        ck_assert_int_eq(spawn_guard_workspace(&g, project, &path, &err), 0);
        ck_assert_str_eq(path, project);
        free(path);
        /* Resolved: a symlink to it and a ".." spelling give the directory itself. */
        char link[300], dots[300];
        snprintf(link, sizeof(link), "%s/link", tmp);
        ck_assert_int_eq(symlink(project, link), 0);
        ck_assert_int_eq(spawn_guard_workspace(&g, link, &path, &err), 0);
        ck_assert_str_eq(path, project);
        free(path);
        snprintf(dots, sizeof(dots), "%s/.config/../project", home);
        ck_assert_int_eq(spawn_guard_workspace(&g, dots, &path, &err), 0);
        ck_assert_str_eq(path, project);
        free(path);
}
END_TEST

START_TEST(test_bad_requests) {
        refused(NULL, -EINVAL, RPC_E_INVALID_PARAMS, "absolute");
        refused("project", -EINVAL, RPC_E_INVALID_PARAMS, "absolute");
        char p[300];
        snprintf(p, sizeof(p), "%s/missing", tmp);
        refused(p, -ENOENT, RPC_E_INVALID_PARAMS, "No such file");
        snprintf(p, sizeof(p), "%s/file", tmp);
        FILE *f = fopen(p, "w");
        fclose(f);
        refused(p, -ENOTDIR, RPC_E_INVALID_PARAMS, "not a directory");
}
END_TEST

START_TEST(test_root_and_kernel_trees) {
        refused("/", -EPERM, RPC_E_POLICY_DENIED, "root directory");
        refused("/proc", -EPERM, RPC_E_POLICY_DENIED, "pseudo-filesystem (proc)");
        refused("/proc/self", -EPERM, RPC_E_POLICY_DENIED, "(proc)");
        refused("/sys", -EPERM, RPC_E_POLICY_DENIED, "(sysfs)");
        refused("/dev", -EPERM, RPC_E_POLICY_DENIED, "/dev");
        /* A tmpfs inside /dev is still the host's, by path. */
        struct stat st;
        if (stat("/dev/shm", &st) == 0)
                refused("/dev/shm", -EPERM, RPC_E_POLICY_DENIED, "kernel's tree /dev");
}
END_TEST

START_TEST(test_home_and_ancestors) {
        refused(home, -EPERM, RPC_E_POLICY_DENIED, "is the home directory");
        refused(tmp, -EPERM, RPC_E_POLICY_DENIED, "an ancestor of the home directory");
        /* Without a home (or anything else) to protect, the temporary directory is an ordinary one. */
        g = (spawn_guard) { 0 };
        _cleanup_error_ rpc_error err = {};
        char *path = NULL;
        ck_assert_int_eq(spawn_guard_workspace(&g, tmp, &path, &err), 0);
        free(path);
}
END_TEST

START_TEST(test_agentd_directories) {
        char p[300];
        refused(state, -EPERM, RPC_E_POLICY_DENIED, "is agentd's state directory");
        snprintf(p, sizeof(p), "%s/sandboxes", state);
        ck_assert_int_eq(mkdir(p, 0700), 0);
        refused(p, -EPERM, RPC_E_POLICY_DENIED, "is inside agentd's state directory");
        snprintf(p, sizeof(p), "%s/.local", home);
        refused(p, -EPERM, RPC_E_POLICY_DENIED, "contains agentd's state directory");
        refused(conf, -EPERM, RPC_E_POLICY_DENIED, "is agentd's config directory");
        refused(tasks, -EPERM, RPC_E_POLICY_DENIED, "is inside agentd's config directory");
        refused(runtime, -EPERM, RPC_E_POLICY_DENIED, "the runtime directory $XDG_RUNTIME_DIR");
        /* The socket's directory, when it is not the runtime directory. */
        g.runtime_dir = NULL;
        refused(runtime, -EPERM, RPC_E_POLICY_DENIED, "is the directory of agentd's socket");
        /* Through a symlink: the rule applies to where it leads. */
        snprintf(p, sizeof(p), "%s/innocent", project);
        ck_assert_int_eq(symlink(state, p), 0);
        refused(p, -EPERM, RPC_E_POLICY_DENIED, "is agentd's state directory");
}
END_TEST

START_TEST(test_task_paths) {
        task_policy *p = NULL;
        ck_assert_int_eq(task_policy_new("build", "test", &p), 0);
        _cleanup_error_ rpc_error err = {};
        char **hide = NULL;
        char inside[300], *ro[3] = { NULL }, *rw[2] = { NULL };

        /* Nothing named: nothing to hide. */
        ck_assert_int_eq(spawn_guard_task_paths(&g, p, &hide, &err), 0);
        ck_assert_ptr_null(hide[0]);
        free(hide);

        /* Inside the state directory: refused, read-only or writable. */
        snprintf(inside, sizeof(inside), "%s/sandboxes", state);
        ro[0] = inside;
        p->read_only_paths = ro;
        hide = NULL;
        ck_assert_int_eq(spawn_guard_task_paths(&g, p, &hide, &err), -EPERM);
        ck_assert_ptr_null(hide);
        ck_assert_int_eq(err.code, RPC_E_POLICY_DENIED);
        ck_assert_msg(strstr(err.message, "ReadOnlyPaths=") && strstr(err.message, "inside agentd's state directory"), "%s",
                      err.message);

        /* The config directory may be read, never written. */
        ro[0] = conf;
        ck_assert_int_eq(spawn_guard_task_paths(&g, p, &hide, &err), 0);
        ck_assert_ptr_null(hide[0]);
        free(hide);
        rw[0] = conf;
        p->writable_paths = rw;
        hide = NULL;
        ck_assert_int_eq(spawn_guard_task_paths(&g, p, &hide, &err), -EPERM);
        ck_assert_msg(strstr(err.message, "WritablePaths=") && strstr(err.message, "agentd's config directory"), "%s", err.message);
        p->writable_paths = NULL;

        /* Above them: allowed, and the directories inside are masked. */
        ro[0] = home;
        ck_assert_int_eq(spawn_guard_task_paths(&g, p, &hide, &err), 0);
        ck_assert_ptr_nonnull(hide[0]);
        ck_assert_str_eq(hide[0], state);
        ck_assert_ptr_null(hide[1]);
        for (char **i = hide; *i; i++)
                free(*i);
        free(hide);
        p->read_only_paths = NULL;
        task_policy_free(p);
}
END_TEST

START_TEST(test_limits) {
        task_policy *p = NULL;
        ck_assert_int_eq(task_policy_new("big", "test", &p), 0);
        p->memory_max = 1 << 30;
        p->tasks_max = 100;
        ck_assert_uint_eq(task_limits_asked(p), CGROUP_LIMIT_MEMORY | CGROUP_LIMIT_PIDS);
        p->cpu_weight = 50;
        ck_assert_uint_eq(task_limits_asked(p), CGROUP_LIMIT_MEMORY | CGROUP_LIMIT_PIDS | CGROUP_LIMIT_CPU);
        p->cpu_weight = 0;

        /* No cgroup, RequireLimits=no: the note says what holds. */
        char *note = strdup("cgroup note");
        agentd_error error = {};
        ck_assert_int_eq(spawn_guard_limits(&g, p, CGROUP_LIMIT_MEMORY | CGROUP_LIMIT_PIDS, "unavailable: not delegated", &note,
                                            &error), 0);
        ck_assert_str_eq(note, "MemoryMax not enforced (cgroup unavailable: not delegated); TasksMax held by RLIMIT_NPROC only");
        ck_assert(!error_is_set(&error));
        /* TasksMax alone always holds, even with RequireLimits=yes. */
        g.require_limits = true;
        ck_assert_int_eq(spawn_guard_limits(&g, p, CGROUP_LIMIT_PIDS, "unavailable: x", &note, &error), 0);
        ck_assert_str_eq(note, "TasksMax held by RLIMIT_NPROC only (cgroup unavailable: x)");
        /* RequireLimits=yes and a memory limit that cannot hold: refused, saying why. */
        ck_assert_int_eq(spawn_guard_limits(&g, p, CGROUP_LIMIT_MEMORY, "unavailable: x", &note, &error), -EOPNOTSUPP);
        ck_assert_int_eq(error.code, ERROR_BACKEND_UNAVAILABLE);
        ck_assert_str_eq(error_message(&error), "task 'big' sets MemoryMax, which cannot be enforced here (cgroup unavailable: x), and agentd.conf "
                                "says RequireLimits=yes");
        error_free(&error);
        /* With a cgroup, its own note stays. */
        g.require_limits = false;
        free(note);
        note = strdup("memory.max refused");
        ck_assert_int_eq(spawn_guard_limits(&g, p, CGROUP_LIMIT_MEMORY, NULL, &note, &error), 0);
        ck_assert_str_eq(note, "memory.max refused");
        free(note);
        task_policy_free(p);
}
END_TEST

int main(void) {
        Suite *s = suite_create("spawn-guard");
        TCase *tc = tcase_create("spawn-guard");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_project_directory_allowed);
        tcase_add_test(tc, test_bad_requests);
        tcase_add_test(tc, test_root_and_kernel_trees);
        tcase_add_test(tc, test_home_and_ancestors);
        tcase_add_test(tc, test_agentd_directories);
        tcase_add_test(tc, test_task_paths);
        tcase_add_test(tc, test_limits);
        suite_add_tcase(s, tc);
        return unit_run(s, false);
}
