/* broker/broker.c on a composed daemon (fixture.h). Without [Vault]: the
 * status says unconfigured, credentials.get is for sandboxes only, an
 * enrolment without a TPM fails with backend_unavailable and stores nothing,
 * and a task with VaultPolicies= is refused at spawn leaving nothing behind.
 * With tests/vaultdev's Vault-compatible server (started here on a free
 * loopback port) and a software seal: enrol, log in, spawn a credentialed
 * sandbox, fetch its child token on the sandbox's broker socket, check it at
 * Vault, and see it revoked when the sandbox ends. */
#include <arpa/inet.h>
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fixture-vault.h"
#include "fixture.h"
#include "unit.h"

static fixture f;


static const char creds_task[] = "[Task]\nDescription=gets a token\n[Credentials]\nVaultPolicies=ci-read\n";

static void pack_enroll(msgpack_packer *pk, void *arg) {
        (void) arg;
        msgpack_pack_map(pk, 2);
        mp_pack_kv_str(pk, "role_id", ROLE_ID);
        mp_pack_kv_str(pk, "secret_id", SECRET_ID);
}

static void status_str(int c, const char *method, const char *key, char *buf, size_t size) {
        fixture_reply r;
        ck_assert(fixture_call(&f, c, method, NULL, NULL, &r));
        ck_assert_msg(fixture_get_str(r.result, key, buf, size) != NULL, "%s has no '%s'", method, key);
        fixture_reply_free(&r);
}

/* Entries of a directory other than . and .. (-1 if it cannot be read). */
static int count_entries(const char *path) {
        DIR *d = opendir(path);
        if (!d)
                return -1;
        int n = 0;
        struct dirent *de;
        while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
                        n++;
        closedir(d);
        return n;
}

static void state_path(char *buf, size_t size, const char *rel) {
        snprintf(buf, size, "%s/agentd/%s", f.state_home, rel);
}

START_TEST(test_unconfigured_status_and_methods) {
        fixture_init(&f);
        fixture_start(&f, NULL);
        int c = fixture_connect(&f);
        char v[256];
        status_str(c, "broker.status", "vault", v, sizeof(v));
        ck_assert_str_eq(v, "unconfigured");
        status_str(c, "broker.status", "tpm", v, sizeof(v));
        ck_assert_str_eq(v, "unconfigured");
        status_str(c, "agentd.status", "vault", v, sizeof(v));
        ck_assert_str_eq(v, "unconfigured");
        fixture_reply r;
        ck_assert(fixture_call(&f, c, "broker.status", NULL, NULL, &r));
        const msgpack_object *e = fixture_get(r.result, "enrolled");
        ck_assert(e && e->type == MSGPACK_OBJECT_BOOLEAN && !e->via.boolean);
        e = fixture_get(r.result, "tokens_live");
        ck_assert(e && e->type == MSGPACK_OBJECT_POSITIVE_INTEGER && e->via.u64 == 0);
        ck_assert_ptr_null(fixture_get(r.result, "session_expires_at"));
        fixture_reply_free(&r);

        /* A token is handed out only on a sandbox's broker socket. */
        fixture_call_fails(&f, c, "unauthorized", "credentials.get", NULL);
        close(c);
        fixture_stop(&f);
}
END_TEST

/* No TPM here (the default TCTI names /dev/tpmrm0) and no software key allowed. */
START_TEST(test_enroll_without_tpm_is_backend_unavailable) {
        ck_assert_int_ne(access("/dev/tpmrm0", F_OK), 0);
        fixture_init(&f);
        fixture_start(&f, NULL);
        int c = fixture_connect(&f);
        fixture_reply r;
        ck_assert(!fixture_call(&f, c, "broker.enroll", pack_enroll, NULL, &r));
        ck_assert_str_eq(r.code, "backend_unavailable");
        ck_assert_msg(strncmp(r.message, "TPM: cannot seal the secret", 27) == 0, "message: %s", r.message);
        ck_assert_msg(strstr(r.message, "AllowSoftwareKey=yes") != NULL, "message: %s", r.message);
        fixture_reply_free(&r);
        char path[PATH_MAX];
        state_path(path, sizeof(path), "broker/approle-secret.sealed");
        ck_assert_int_ne(access(path, F_OK), 0);
        state_path(path, sizeof(path), "broker/approle-role-id");
        ck_assert_int_ne(access(path, F_OK), 0);
        ck_assert(fixture_call(&f, c, "broker.status", NULL, NULL, &r));
        const msgpack_object *e = fixture_get(r.result, "enrolled");
        ck_assert(e && e->type == MSGPACK_OBJECT_BOOLEAN && !e->via.boolean);
        fixture_reply_free(&r);

        /* Bad parameters are refused before the TPM is asked. */
        fixture_call_fails(&f, c, "invalid_params", "broker.enroll", "role_id", "", "secret_id", "x", NULL);
        close(c);
        fixture_stop(&f);
}
END_TEST

START_TEST(test_credentialed_spawn_without_vault_leaves_nothing) {
        fixture_init(&f);
        fixture_write_task(&f, "creds", creds_task);
        fixture_start(&f, NULL);
        int c = fixture_connect(&f);
        fixture_reply r;
        const char *argv[] = { "/bin/sh", "-c", "exit 0", NULL };
        ck_assert(!fixture_spawn(&f, c, &(fixture_spawn_req) { .task = "creds", .workspace = f.workspace, .argv = argv }, NULL, 0, &r));
        ck_assert_str_eq(r.code, "backend_unavailable");
        ck_assert_msg(strstr(r.message, "task 'creds' needs Vault credentials (VaultPolicies=ci-read)") != NULL, "message: %s",
                      r.message);
        ck_assert_msg(strstr(r.message, "Vault is unconfigured") != NULL, "message: %s", r.message);
        fixture_reply_free(&r);
        ck_assert(fixture_call(&f, c, "sandbox.list", NULL, NULL, &r));
        ck_assert_int_eq(r.result->type, MSGPACK_OBJECT_ARRAY);
        ck_assert_uint_eq(r.result->via.array.size, 0);
        fixture_reply_free(&r);
        char path[PATH_MAX];
        state_path(path, sizeof(path), "sandboxes");
        int n = count_entries(path);
        ck_assert_msg(n <= 0, "%d entries in %s", n, path);
        state_path(path, sizeof(path), "broker/accessors");
        ck_assert_int_eq(count_entries(path), 0);
        /* The daemon still spawns what needs no credentials. */
        char id[64];
        fixture_spawn_sh(&f, c, "default", "exit 0", id, sizeof(id));
        fixture_call_ok(&f, c, "sandbox.wait", "id", id, NULL);
        close(c);
        fixture_stop(&f);
}
END_TEST

/* ---- with the Vault dev server ------------------------------------------- */

static bool vault_ok(void *arg) {
        int c = *(int *) arg;
        char v[256];
        status_str(c, "broker.status", "vault", v, sizeof(v));
        return strcmp(v, "ok") == 0;
}

typedef struct token_check {
        const vault_dev *v;
        const char *token;
} token_check;

static bool token_dead(void *arg) {
        token_check *t = arg;
        char body[8192];
        return vault_get(t->v, "auth/token/lookup-self", t->token, body, sizeof(body)) == 403;
}

START_TEST(test_vault_login_and_child_token) {
        vault_dev v = {};
        vault_start(&v);
        fixture_init(&f);
        fixture_write_task(&f, "creds", creds_task);
        char conf[256];
        snprintf(conf, sizeof(conf), "[Vault]\nAddress=http://127.0.0.1:%d\n[TPM]\nAllowSoftwareKey=yes\n", v.port);
        fixture_start(&f, conf);
        int c = fixture_connect(&f);
        char st[256];
        status_str(c, "broker.status", "vault", st, sizeof(st));
        ck_assert_msg(strncmp(st, "unavailable: not enrolled", 25) == 0, "vault: %s", st);

        fixture_reply r;
        ck_assert_msg(fixture_call(&f, c, "broker.enroll", pack_enroll, NULL, &r), "%s: %s", r.code, r.message);
        char kind[32];
        ck_assert_str_eq(fixture_get_str(r.result, "sealed_with", kind, sizeof(kind)), "software");
        fixture_reply_free(&r);
        ck_assert_msg(fixture_run_until(&f, 20000, vault_ok, &c), "no Vault session");

        char id[64];
        fixture_spawn_sh(&f, c, "creds", "exec sleep 60", id, sizeof(id));
        int b = fixture_broker_connect(&f, id);
        /* Host methods are not for a sandbox. */
        fixture_call_fails(&f, b, "unauthorized", "sandbox.list", NULL);

        ck_assert_msg(fixture_call(&f, b, "credentials.get", NULL, NULL, &r), "%s: %s", r.code, r.message);
        ck_assert_uint_eq(r.n_fds, 1);
        char accessor[128];
        ck_assert_ptr_nonnull(fixture_get_str(r.result, "accessor", accessor, sizeof(accessor)));
        const msgpack_object *ttl = fixture_get(r.result, "ttl");
        ck_assert(ttl && ttl->type == MSGPACK_OBJECT_POSITIVE_INTEGER && ttl->via.u64 > 0);
        /* A sealed, read-only memfd. */
        int tfd = r.fds[0];
        ck_assert_int_ne(fcntl(tfd, F_GET_SEALS) & F_SEAL_WRITE, 0);
        ck_assert_int_eq(fcntl(tfd, F_GETFL) & O_ACCMODE, O_RDONLY);
        char token[256] = "";
        ssize_t n = pread(tfd, token, sizeof(token) - 1, 0);
        ck_assert_int_gt(n, 0);
        token[n] = 0;
        token[strcspn(token, "\n")] = 0;
        close(tfd);
        fixture_reply_free(&r);

        /* Vault knows it: a child token with the task's policy and the recorded accessor. */
        char body[8192];
        ck_assert_int_eq(vault_get(&v, "auth/token/lookup-self", token, body, sizeof(body)), 200);
        ck_assert_msg(strstr(body, "ci-read") != NULL, "lookup: %s", body);
        ck_assert_msg(strstr(body, accessor) != NULL, "lookup: %s", body);
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/agentd/broker/accessors/%s", f.state_home, accessor);
        ck_assert_int_eq(access(path, F_OK), 0);
        ck_assert(fixture_call(&f, c, "broker.status", NULL, NULL, &r));
        const msgpack_object *live = fixture_get(r.result, "tokens_live");
        ck_assert(live && live->type == MSGPACK_OBJECT_POSITIVE_INTEGER && live->via.u64 == 1);
        fixture_reply_free(&r);

        /* The sandbox ends: its token is revoked at Vault. */
        fixture_call_ok(&f, c, "sandbox.kill", "id", id, NULL);
        fixture_call_ok(&f, c, "sandbox.wait", "id", id, NULL);
        token_check tc = { .v = &v, .token = token };
        ck_assert_msg(fixture_run_until(&f, 20000, token_dead, &tc), "the token outlived its sandbox");

        close(b);
        close(c);
        fixture_stop(&f);
        vault_stop(&v);
}
END_TEST

int main(void) {
        Suite *s = suite_create("broker");
        TCase *tc = tcase_create("broker");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_unconfigured_status_and_methods);
        tcase_add_test(tc, test_enroll_without_tpm_is_backend_unavailable);
        tcase_add_test(tc, test_credentialed_spawn_without_vault_leaves_nothing);
        tcase_add_test(tc, test_vault_login_and_child_token);
        suite_add_tcase(s, tc);
        return unit_run(s, false);
}
