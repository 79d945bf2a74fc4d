/* Workspace review without overlayfs: an "upper" directory stands for the
 * change layer (a whiteout needs mknod, so deletions are covered by the
 * integration tests). Guards, final-tree symlinks, modes, deep trees, the
 * non-blocking open, and git-style name quoting. */
#include <check.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "macro.h"
#include "quote.h"
#include "workspace-fs.h"
#include "workspace.h"
#include "unit.h"

static char root[256], ws[300], up[300];

static void sh(const char *fmt, ...) _printf_(1, 2);
static void sh(const char *fmt, ...) {
        char cmd[4096];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(cmd, sizeof(cmd), fmt, ap);
        va_end(ap);
        ck_assert_msg(system(cmd) == 0, "%s", cmd);
}

static void setup(void) {
        const char *tmp = getenv("TMPDIR");
        snprintf(root, sizeof(root), "%s/agentd-test-ws-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        ck_assert_ptr_nonnull(mkdtemp(root));
        snprintf(ws, sizeof(ws), "%s/ws", root);
        snprintf(up, sizeof(up), "%s/up", root);
        ck_assert_int_eq(mkdir(ws, 0755), 0);
        ck_assert_int_eq(mkdir(up, 0755), 0);
}

static void teardown(void) {
        sh("rm -rf '%s'", root);
}

static const ws_change *find(const ws_changes *c, const char *path) {
        for (size_t i = 0; i < c->n; i++)
                if (streq(c->v[i].path, path))
                        return &c->v[i];
        return NULL;
}

static bool in_items(const ws_items *l, const char *path) {
        for (size_t i = 0; i < l->n; i++)
                if (streq(l->v[i].path, path))
                        return true;
        return false;
}

START_TEST(test_quote_path) {
        static const struct {
                const char *in, *out;
        } cases[] = {
                { "plain name.txt", "plain name.txt" },
                { "evil\nD forged", "\"evil\\nD forged\"" },
                { "\033[2J", "\"\\033[2J\"" },
                { "tab\there", "\"tab\\there\"" },
                { "hi\377", "\"hi\\377\"" },
                { "q\"uote\\", "\"q\\\"uote\\\\\"" },
                { "del\177", "\"del\\177\"" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *q = quote_path(cases[i].in);
                ck_assert_str_eq(q, cases[i].out);
        }
}
END_TEST

START_TEST(test_static_guards) {
        static const char *const guarded[] = {
                ".git", ".git/commondir", ".git/objects/info/alternates", ".git/modules/x/config", ".git/worktrees/w/gitdir",
                ".git/index", ".git/refs/heads/main", "sub/.git", "sub/.git/config", ".vscode/tasks.json", ".envrc",
                "a/.envrc", "agentd.conf", "cfg/agentd.conf", "x.task", "tasks/build.task", ".devcontainer/devcontainer.json",
        };
        static const char *const plain[] = { "src/main.c", "git/config", ".github/workflows/ci.yml", "task", "my.tasks", "README" };
        for (size_t i = 0; i < ELEMENTSOF(guarded); i++)
                ck_assert_msg(ws_path_is_guarded(guarded[i]), "%s", guarded[i]);
        for (size_t i = 0; i < ELEMENTSOF(plain); i++)
                ck_assert_msg(!ws_path_is_guarded(plain[i]), "%s", plain[i]);
}
END_TEST

START_TEST(test_hookspath_and_gitdir_guarded) {
        sh("cd '%s' && mkdir -p .git tools gd/objects gd/refs sub && printf '[core]\\n\\tbare = false\\n\\thooksPath = \"tools/hooks\" ; team hooks\\n' > .git/config"
           " && echo 'ref: refs/heads/main' > gd/HEAD && echo 'gitdir: ../gd' > sub/.git", ws);
        sh("cd '%s' && mkdir -p tools/hooks gd other && echo x > tools/hooks/pre-commit && echo x > gd/config && echo x > other/f"
           " && ln -s elsewhere tools2", up);
        ws_changes c = { 0 };
        _cleanup_error_ agentd_error why = {};
        ck_assert_int_eq(workspace_diff(ws, up, NULL, &c, &why), 0);
        ck_assert(find(&c, "tools/hooks")->guarded);
        ck_assert(find(&c, "tools/hooks/pre-commit")->guarded);
        ck_assert(find(&c, "gd/config")->guarded);
        ck_assert(!find(&c, "other/f")->guarded);
        ck_assert(!find(&c, "tools2")->guarded);
        ws_changes_free(&c);
}
END_TEST

/* The repository's config names the workspace through a symlink; its .git is a symlink too. */
START_TEST(test_hookspath_through_symlinks) {
        sh("cd '%s' && mkdir realgit && ln -s ws wslink && ln -s ../realgit ws/.git"
           " && printf '[core]\\n\\thooksPath = %s/wslink/hooks\\n' > realgit/config", root, root);
        sh("cd '%s' && mkdir hooks && echo x > hooks/post-checkout && echo x > plain", up);
        ws_changes c = { 0 };
        _cleanup_error_ agentd_error why = {};
        ck_assert_int_eq(workspace_diff(ws, up, NULL, &c, &why), 0);
        ck_assert(find(&c, "hooks/post-checkout")->guarded);
        ck_assert(!find(&c, "plain")->guarded);
        ws_changes_free(&c);
}
END_TEST

START_TEST(test_symlinks_in_final_tree) {
        sh("cd '%s' && mkdir d && echo b > d/b", ws);
        sh("cd '%s' && mkdir sub p p/q && ln -s .. sub/u && ln -s sub/u/.. x && ln -s c2 c1 && ln -s ../.. c2"
           " && ln -s p/q pq && ln -s pq/../.. z && ln -s sub/u/d/b through && ln -s '%s/d' absin && ln -s /etc absout", up, ws);
        ws_promote_result r = { 0 };
        _cleanup_error_ agentd_error why = {};
        ck_assert_int_eq(workspace_promote(ws, up, INT64_MAX, NULL, false, NULL, &r, &why), 0);
        static const char *const refused[] = { "x", "c1", "c2", "absout" };
        static const char *const fine[] = { "sub/u", "z", "through", "absin" };
        for (size_t i = 0; i < ELEMENTSOF(refused); i++)
                ck_assert_msg(in_items(&r.conflicts, refused[i]), "%s", refused[i]);
        for (size_t i = 0; i < ELEMENTSOF(fine); i++)
                ck_assert_msg(in_items(&r.promoted, fine[i]), "%s", fine[i]);
        ck_assert_uint_eq(r.conflicts.n, ELEMENTSOF(refused));
        ws_promote_result_free(&r);
}
END_TEST

START_TEST(test_modes) {
        sh("cd '%s' && echo a > f644 && chmod 644 f644 && echo a > g664 && chmod 664 g664", ws);
        sh("cd '%s' && echo b > f644 && chmod 666 f644 && echo b > g664 && chmod 664 g664 && mkdir nd && chmod 777 nd"
           " && echo c > nd/n && chmod 4777 nd/n", up);
        ws_promote_result r = { 0 };
        _cleanup_error_ agentd_error why = {};
        ck_assert_int_eq(workspace_promote(ws, up, INT64_MAX, NULL, false, NULL, &r, &why), 0);
        ck_assert_uint_eq(r.conflicts.n, 0);
        static const struct {
                const char *path;
                mode_t mode;
        } want[] = { { "f644", 0644 }, { "g664", 0664 }, { "nd", 0755 }, { "nd/n", 0755 } };
        for (size_t i = 0; i < ELEMENTSOF(want); i++) {
                char p[512];
                struct stat st;
                snprintf(p, sizeof(p), "%s/%s", ws, want[i].path);
                ck_assert_int_eq(lstat(p, &st), 0);
                ck_assert_msg((st.st_mode & 07777) == want[i].mode, "%s: %o", want[i].path, st.st_mode & 07777);
        }
        ws_promote_result_free(&r);
}
END_TEST

/* 300 levels of 15 bytes: deeper than the old recursion limit, longer than PATH_MAX. */
START_TEST(test_deep_tree) {
        int fd = open(up, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        for (int i = 0; i < 300; i++) {
                ck_assert_int_eq(mkdirat(fd, "dddddddddddddd", 0755), 0);
                int n = openat(fd, "dddddddddddddd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                close(fd);
                fd = n;
        }
        int f = openat(fd, "leaf", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        ck_assert_int_eq(write(f, "x\n", 2), 2);
        close(f);
        close(fd);
        ws_changes c = { 0 };
        _cleanup_error_ agentd_error why = {};
        ck_assert_int_eq(workspace_diff(ws, up, NULL, &c, &why), 0);
        ck_assert_uint_eq(c.n, 301);
        ck_assert(strlen(c.v[300].path) > 4096);
        ws_changes_free(&c);
        ws_promote_result r = { 0 };
        ck_assert_int_eq(workspace_promote(ws, up, INT64_MAX, NULL, false, NULL, &r, &why), 0);
        ck_assert_uint_eq(r.promoted.n, 301);
        ck_assert_uint_eq(r.conflicts.n, 0);
        ws_promote_result_free(&r);
        ck_assert_int_eq(workspace_diff(ws, up, NULL, &c, &why), 0);
        ck_assert_uint_eq(c.n, 0);
        ws_changes_free(&c);
        ck_assert_int_eq(workspace_remove_tree(up), 0);
        ck_assert_int_eq(access(up, F_OK), -1);
}
END_TEST

/* The entry the walk saw was a regular file; by the time it is opened it is
 * a FIFO without a writer. A blocking open() would never return. */
START_TEST(test_fifo_swap_does_not_block) {
        char p[512];
        snprintf(p, sizeof(p), "%s/f", up);
        sh("echo data > '%s'", p);
        struct stat seen;
        ck_assert_int_eq(lstat(p, &seen), 0);
        /* Held open, the walked file's inode cannot be reused by what replaces it. */
        int held = open(p, O_RDONLY | O_CLOEXEC);
        ck_assert_int_ge(held, 0);
        ck_assert_int_eq(unlink(p), 0);
        ck_assert_int_eq(mkfifo(p, 0644), 0);
        int dfd = open(up, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        alarm(5);
        ck_assert_int_eq(ws_open_regular(dfd, "f", &seen), -ESTALE);
        /* A different regular file at the same name is refused as well (the
         * walked file is still held, so its inode number differs). */
        sh("echo other > '%s.new' && mv '%s.new' '%s'", p, p, p);
        ck_assert_int_eq(ws_open_regular(dfd, "f", &seen), -ESTALE);
        alarm(0);
        close(held);
        close(dfd);
}
END_TEST

START_TEST(test_budget_spent) {
        sh("cd '%s' && mkdir -p a && for i in $(seq 1 600); do : > a/f$i; done", up);
        ws_budget b;
        atomic_init(&b.deadline_ns, 1);
        ws_changes c = { 0 };
        _cleanup_error_ agentd_error why = {};
        ck_assert_int_eq(workspace_diff(ws, up, &b, &c, &why), -ETIMEDOUT);
        ck_assert_int_eq(why.code, ERROR_LIMIT_EXCEEDED);
        ck_assert_str_eq(error_message(&why), "reading the change layer took longer than the time limit");
}
END_TEST

static Suite *workspace_suite(void) {
        Suite *s = suite_create("workspace");
        TCase *tc = tcase_create("review");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_quote_path);
        tcase_add_test(tc, test_static_guards);
        tcase_add_test(tc, test_hookspath_and_gitdir_guarded);
        tcase_add_test(tc, test_hookspath_through_symlinks);
        tcase_add_test(tc, test_symlinks_in_final_tree);
        tcase_add_test(tc, test_modes);
        tcase_add_test(tc, test_deep_tree);
        tcase_add_test(tc, test_fifo_swap_does_not_block);
        tcase_add_test(tc, test_budget_spent);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        /* The host's own git configuration must not leak into the guard tests. */
        (void) setenv("HOME", "/nonexistent", 1);
        (void) unsetenv("XDG_CONFIG_HOME");
        return unit_run(workspace_suite(), false);
}
