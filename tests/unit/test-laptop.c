/* sandbox/laptop.c on a composed daemon (fixture.h): a fake toolchain in the
 * fixture's $HOME (~/.cargo/bin/cargo, a shell script) is shown read-only and
 * stays on the caller's PATH with Toolchains=auto, is absent with
 * Toolchains=none, and the credential files stay hidden even inside a shown
 * tree. What the sandbox saw is read from sandbox.logs. */
#include <check.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fixture.h"
#include "unit.h"

static fixture f;

static void home_write(const char *rel, const char *text, mode_t mode) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", f.home, rel);
        /* mkdir -p of its directory */
        for (char *p = path + strlen(f.home) + 1; (p = strchr(p, '/')); p++) {
                *p = 0;
                ck_assert(mkdir(path, 0755) == 0 || errno == EEXIST);
                *p = '/';
        }
        fixture_write_file(path, text);
        ck_assert_int_eq(chmod(path, mode), 0);
}

/* Runs the script to its end with the caller's PATH `path`; its stdout (caller frees). */
static char *run(int c, const char *task, const char *path, const char *script) {
        const char *argv[] = { "/bin/sh", "-c", script, NULL };
        fixture_spawn_req s = { .task = task, .workspace = f.workspace, .path = path, .argv = argv };
        fixture_reply r;
        char id[16];
        bool ok = fixture_spawn(&f, c, &s, id, sizeof(id), &r);
        ck_assert_msg(ok, "spawn: %s: %s", r.code, r.message);
        fixture_wait(&f, c, id, NULL, NULL);
        char *out = malloc(65536);
        ck_assert_ptr_nonnull(out);
        fixture_logs(&f, c, id, "stdout", out, 65536);
        return out;
}

static void fake_toolchain(void) {
        home_write(".cargo/bin/cargo", "#!/bin/sh\necho \"fake cargo $*\"\n", 0755);
        home_write(".rustup/toolchains/x/bin/rustc", "#!/bin/sh\necho fake rustc\n", 0755);
        home_write(".cargo/credentials.toml", "SECRET cargo token\n", 0600);
        home_write(".aws/credentials", "SECRET aws key\n", 0600);
}

START_TEST(test_toolchains_auto_shown_read_only) {
        fixture_init(&f);
        fake_toolchain();
        fixture_start(&f, NULL);
        int c = fixture_connect(&f);
        char path[PATH_MAX * 2], want[PATH_MAX * 2];
        snprintf(path, sizeof(path), "%s/.cargo/bin:/usr/bin:/bin", f.home);
        char *out = run(c, "default", path,
                        "command -v cargo; cargo build; ls ~/.rustup/toolchains/x/bin; "
                        "touch ~/.cargo/bin/x 2>/dev/null || echo read-only");
        snprintf(want, sizeof(want), "%s/.cargo/bin/cargo\nfake cargo build\nrustc\nread-only\n", f.home);
        ck_assert_str_eq(out, want);
        free(out);
        snprintf(want, sizeof(want), "%s/.cargo/bin/x", f.home);
        ck_assert_int_lt(access(want, F_OK), 0);
        close(c);
        fixture_stop(&f);
}
END_TEST

START_TEST(test_toolchains_none_shows_nothing) {
        fixture_init(&f);
        fake_toolchain();
        fixture_write_task(&f, "bare",
                           "[Task]\nCommand=/bin/sh\n[Filesystem]\nWorkspace=overlay\nToolchains=none\n[Network]\nMode=none\n");
        fixture_start(&f, NULL);
        int c = fixture_connect(&f);
        char path[PATH_MAX * 2];
        snprintf(path, sizeof(path), "%s/.cargo/bin:/usr/bin:/bin", f.home);
        char *out = run(c, "bare", path,
                        "command -v cargo || echo missing; ls ~/.cargo 2>/dev/null || echo no-cargo-dir; "
                        "case \"$PATH\" in *\"$HOME\"*) echo home-on-path;; esac");
        ck_assert_str_eq(out, "missing\nno-cargo-dir\n");
        free(out);
        close(c);
        fixture_stop(&f);
}
END_TEST

START_TEST(test_secrets_hidden_in_a_shown_tree) {
        fixture_init(&f);
        fake_toolchain();
        fixture_start(&f, NULL);
        int c = fixture_connect(&f);
        char *out = run(c, "default", "/usr/bin:/bin",
                        "test -x ~/.cargo/bin/cargo && echo shown; cat ~/.cargo/credentials.toml 2>/dev/null; "
                        "cat ~/.aws/credentials 2>/dev/null; ls -A ~/.aws 2>/dev/null; echo END");
        ck_assert_str_eq(out, "shown\nEND\n");
        free(out);
        /* They are there outside: the test is not vacuous. */
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/.cargo/credentials.toml", f.home);
        char *text = fixture_read_file(path);
        ck_assert_str_eq(text, "SECRET cargo token\n");
        free(text);
        close(c);
        fixture_stop(&f);
}
END_TEST

int main(void) {
        Suite *s = suite_create("laptop");
        TCase *tc = tcase_create("laptop");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_toolchains_auto_shown_read_only);
        tcase_add_test(tc, test_toolchains_none_shows_nothing);
        tcase_add_test(tc, test_secrets_hidden_in_a_shown_tree);
        suite_add_tcase(s, tc);
        return unit_run(s, false);
}
