/* tests/vaultdev's Vault-compatible dev server for the fixture tests that need
 * Vault: started on a free loopback port with an AppRole (ROLE_ID, SECRET_ID,
 * policies agentd, ci-read, deploy), stopped with the test (also when an
 * assertion ends it), and a blocking GET to ask it about a token.
 * Header-only: no build change needed beyond FIXTURE_SOURCE_DIR. */
#pragma once

#include <arpa/inet.h>
#include <check.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fixture.h"

#define ROLE_ID "unit-role-id"
#define SECRET_ID "unit-s3cret-approle-id-0123"
#define ROOT_TOKEN "root-token-for-unit-tests"

typedef struct vault_dev {
        pid_t pid;
        int port;
} vault_dev;

static inline void vault_start(vault_dev *v) {
        int pfd[2];
        ck_assert_int_eq(pipe2(pfd, O_CLOEXEC), 0);
        v->pid = fork();
        ck_assert_int_ge(v->pid, 0);
        if (v->pid == 0) {
                /* Gone with the test, even when an assertion ends it. */
                (void) prctl(PR_SET_PDEATHSIG, SIGTERM);
                dup2(pfd[1], STDOUT_FILENO);
                execl("/usr/bin/python3", "python3", FIXTURE_SOURCE_DIR "/../vaultdev/vault_dev.py", "--port", "0",
                      "--role-id", ROLE_ID, "--secret-id", SECRET_ID, "--role-policies", "agentd,ci-read,deploy",
                      "--grant", "agentd=auth/token/revoke-accessor", "--root-token", ROOT_TOKEN, (char *) NULL);
                _exit(127);
        }
        close(pfd[1]);
        FILE *fp = fdopen(pfd[0], "r");
        ck_assert_ptr_nonnull(fp);
        char line[256];
        v->port = 0;
        while (fgets(line, sizeof(line), fp))
                if (sscanf(line, "READY %d", &v->port) == 1)
                        break;
        fclose(fp);
        ck_assert_msg(v->port > 0, "vault_dev.py did not start");
}

static inline void vault_stop(vault_dev *v) {
        if (v->pid > 0) {
                kill(v->pid, SIGTERM);
                (void) waitpid(v->pid, NULL, 0);
                v->pid = 0;
        }
}

/* GET /v1/<path> with a token: the HTTP status, the body in buf. */
static inline int vault_get(const vault_dev *v, const char *path, const char *token, char *buf, size_t size) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t) v->port) };
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ck_assert_int_eq(connect(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        char req[1024];
        int n = snprintf(req, sizeof(req), "GET /v1/%s HTTP/1.0\r\nHost: 127.0.0.1\r\nX-Vault-Token: %s\r\n\r\n", path, token);
        ck_assert_int_eq(write(fd, req, (size_t) n), n);
        size_t len = 0;
        ssize_t k;
        while (len + 1 < size && (k = read(fd, buf + len, size - 1 - len)) > 0)
                len += (size_t) k;
        buf[len] = 0;
        close(fd);
        int status = 0;
        ck_assert_int_eq(sscanf(buf, "HTTP/%*s %d", &status), 1);
        return status;
}

static inline void fv_pack_enroll(msgpack_packer *pk, void *arg) {
        (void) arg;
        msgpack_pack_map(pk, 2);
        mp_pack_kv_str(pk, "role_id", ROLE_ID);
        mp_pack_kv_str(pk, "secret_id", SECRET_ID);
}

typedef struct fv_conn {
        fixture *f;
        int c;
} fv_conn;

static inline bool fv_vault_ok(void *arg) {
        fv_conn *x = arg;
        fixture_reply r;
        char v[256] = "";
        ck_assert(fixture_call(x->f, x->c, "broker.status", NULL, NULL, &r));
        (void) fixture_get_str(r.result, "vault", v, sizeof(v));
        fixture_reply_free(&r);
        return strcmp(v, "ok") == 0;
}

/* broker.enroll with the dev server's AppRole (a software seal: the
 * configuration must say AllowSoftwareKey=yes), then waits for the login. */
static inline void fv_enroll_and_login(fixture *f, int c) {
        fixture_reply r;
        ck_assert_msg(fixture_call(f, c, "broker.enroll", fv_pack_enroll, NULL, &r), "%s: %s", r.code, r.message);
        fixture_reply_free(&r);
        fv_conn x = { .f = f, .c = c };
        ck_assert_msg(fixture_run_until(f, 20000, fv_vault_ok, &x), "no Vault session");
}

/* A composed daemon whose [Vault] is the dev server (software seal allowed)
 * with a task `creds` that needs a token (VaultPolicies=ci-read); a host
 * connection. */
static inline int fv_compose(fixture *f, const vault_dev *v) {
        fixture_init(f);
        fixture_write_task(f, "creds", "[Task]\nDescription=token\n[Credentials]\nVaultPolicies=ci-read\n");
        char conf[256];
        snprintf(conf, sizeof(conf), "[Vault]\nAddress=http://127.0.0.1:%d\n[TPM]\nAllowSoftwareKey=yes\n", v->port);
        fixture_start(f, conf);
        return fixture_connect(f);
}

/* The dev server started, the daemon composed (fv_compose), enrolled and
 * logged in, and a `creds` sandbox running `sleep 60` (its id in sid); the
 * host connection. */
static inline int fv_compose_with_creds_sandbox(fixture *f, vault_dev *v, char *sid, size_t size) {
        vault_start(v);
        int c = fv_compose(f, v);
        fv_enroll_and_login(f, c);
        fixture_spawn_sh(f, c, "creds", "exec sleep 60", sid, size);
        return c;
}
