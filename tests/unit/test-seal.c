/* Unit tests for the broker's sealing (daemon/lib/seal.c).
 *
 * The TPM cases run against two private swtpm instances this test starts itself
 * (fork/exec, free loopback ports, temporary state dirs), so they need neither
 * root nor a TPM on the machine. Without swtpm installed those cases are not
 * run and the test exits 77 (meson's SKIP) after the software cases pass: a
 * skipped TPM case must show up as skipped, never as passed. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <tss2/tss2_esys.h>
#include <tss2/tss2_tctildr.h>

#include "macro.h"
#include "seal.h"

typedef struct swtpm {
        pid_t pid;
        int port;
        char dir[PATH_MAX];
        char tcti[128];
} swtpm;

static swtpm tpm_a = { .pid = -1 }, tpm_b = { .pid = -1 };
static char swtpm_path[PATH_MAX];
static char workdir[PATH_MAX];
static char closed_tcti[128];

/* ---- helpers ------------------------------------------------------------ */

static bool find_in_path(const char *name, char *out, size_t size) {
        const char *path = getenv("PATH");
        char buf[4096];

        snprintf(buf, sizeof(buf), "%s", path ?: "/usr/local/bin:/usr/bin:/bin");
        for (char *save = NULL, *dir = strtok_r(buf, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
                snprintf(out, size, "%s/%s", dir, name);
                if (access(out, X_OK) == 0)
                        return true;
        }
        return false;
}

static int bind_loopback(int port) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -1;
        struct sockaddr_in sa = {
                .sin_family = AF_INET,
                .sin_port = htons((uint16_t) port),
                .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
        };
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                close(fd);
                return -1;
        }
        return fd;
}

/* A port P with P+1 also free (swtpm's data and control channels). Racy by
 * nature; start_swtpm retries when swtpm cannot bind. With `keep`, the two
 * sockets stay bound but never listen: connecting is refused, and no swtpm
 * started later can take the ports. */
static int free_port_pair_keep(int keep[2]) {
        for (int i = 0; i < 100; i++) {
                int fd = bind_loopback(0);
                struct sockaddr_in sa;
                socklen_t sl = sizeof(sa);
                if (fd < 0 || getsockname(fd, (struct sockaddr *) &sa, &sl) < 0) {
                        safe_close(fd);
                        return -1;
                }
                int port = ntohs(sa.sin_port);
                int fd2 = port < 65535 ? bind_loopback(port + 1) : -1;
                if (fd2 >= 0 && keep) {
                        keep[0] = fd;
                        keep[1] = fd2;
                        return port;
                }
                close(fd);
                if (fd2 >= 0) {
                        close(fd2);
                        return port;
                }
        }
        return -1;
}

static int free_port_pair(void) {
        return free_port_pair_keep(NULL);
}

static bool port_answers(int port) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in sa = {
                .sin_family = AF_INET,
                .sin_port = htons((uint16_t) port),
                .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
        };
        bool ok = fd >= 0 && connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0;
        safe_close(fd);
        return ok;
}

static void sleep_ms(long ms) {
        struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
        nanosleep(&ts, NULL);
}

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw) {
        return remove(path) < 0 ? -1 : 0;
}

static void rm_rf(const char *path) {
        if (path[0])
                (void) nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void start_swtpm(swtpm *t) {
        snprintf(t->dir, sizeof(t->dir), "%s/swtpm-XXXXXX", workdir);
        ck_assert_ptr_nonnull(mkdtemp(t->dir));

        for (int attempt = 0; attempt < 5; attempt++) {
                t->port = free_port_pair();
                ck_assert_msg(t->port > 0, "no free loopback port pair");
                char server[64], ctrl[64], state[PATH_MAX + 8];
                snprintf(server, sizeof(server), "type=tcp,port=%d,bindaddr=127.0.0.1", t->port);
                snprintf(ctrl, sizeof(ctrl), "type=tcp,port=%d,bindaddr=127.0.0.1", t->port + 1);
                snprintf(state, sizeof(state), "dir=%s", t->dir);

                pid_t pid = fork();
                ck_assert_int_ge(pid, 0);
                if (pid == 0) {
                        /* Dies with us even if the test crashes before teardown. */
                        (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
                        if (null >= 0) {
                                dup2(null, STDIN_FILENO);
                                dup2(null, STDOUT_FILENO);
                        }
                        execl(swtpm_path, "swtpm", "socket", "--tpm2", "--server", server, "--ctrl", ctrl,
                              "--flags", "not-need-init,startup-clear", "--tpmstate", state, (char *) NULL);
                        _exit(127);
                }

                for (int i = 0; i < 200; i++) {
                        int status;
                        if (waitpid(pid, &status, WNOHANG) == pid)
                                break; /* exited: port taken meanwhile, try another */
                        if (port_answers(t->port) && port_answers(t->port + 1)) {
                                t->pid = pid;
                                snprintf(t->tcti, sizeof(t->tcti), "swtpm:host=127.0.0.1,port=%d", t->port);
                                return;
                        }
                        sleep_ms(25);
                }
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
        }
        ck_abort_msg("swtpm (%s) did not start", swtpm_path);
}

static void stop_swtpm(swtpm *t) {
        if (t->pid > 0) {
                kill(t->pid, SIGTERM);
                for (int i = 0; i < 100; i++) {
                        if (waitpid(t->pid, NULL, WNOHANG) == t->pid) {
                                t->pid = -1;
                                break;
                        }
                        sleep_ms(20);
                }
                if (t->pid > 0) {
                        kill(t->pid, SIGKILL);
                        waitpid(t->pid, NULL, 0);
                        t->pid = -1;
                }
        }
        rm_rf(t->dir);
        t->dir[0] = 0;
}

static void tpm_setup(void) {
        start_swtpm(&tpm_a);
        start_swtpm(&tpm_b);
}

static void tpm_teardown(void) {
        stop_swtpm(&tpm_a);
        stop_swtpm(&tpm_b);
}

/* How many handles of one type (transient objects, loaded sessions) the TPM
 * holds, asked through ESAPI like any other client would. */
static int count_handles(const char *tcti, TPM2_HANDLE first) {
        TSS2_TCTI_CONTEXT *tc = NULL;
        ESYS_CONTEXT *esys = NULL;
        TPMS_CAPABILITY_DATA *cap = NULL;
        TPMI_YES_NO more;

        ck_assert_int_eq(Tss2_TctiLdr_Initialize(tcti, &tc), TSS2_RC_SUCCESS);
        ck_assert_int_eq(Esys_Initialize(&esys, tc, NULL), TSS2_RC_SUCCESS);
        ck_assert_int_eq(Esys_GetCapability(esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, TPM2_CAP_HANDLES, first,
                                            TPM2_MAX_CAP_HANDLES, &more, &cap),
                         TSS2_RC_SUCCESS);
        int n = (int) cap->data.handles.count;
        Esys_Free(cap);
        Esys_Finalize(&esys);
        Tss2_TctiLdr_Finalize(&tc);
        return n;
}

/* Spelled out: the TSS headers' TPM2_TRANSIENT_FIRST shifts a signed int into
 * the sign bit, which UBSan rightly reports. */
#define TRANSIENT_FIRST UINT32_C(0x80000000)
#define LOADED_SESSION_FIRST UINT32_C(0x02000000)

static void assert_no_tpm_handles(const char *tcti) {
        ck_assert_msg(count_handles(tcti, TRANSIENT_FIRST) == 0, "transient objects left on %s", tcti);
        ck_assert_msg(count_handles(tcti, LOADED_SESSION_FIRST) == 0, "sessions left on %s", tcti);
}

static void fill_secret(uint8_t *s, size_t n) {
        for (size_t i = 0; i < n; i++)
                s[i] = (uint8_t) (0xA5 ^ (i * 37 + 11));
}

static bool blob_contains(const void *blob, size_t blob_len, const void *s, size_t n) {
        return memmem(blob, blob_len, s, n) != NULL;
}

static void key_path(char *out, size_t size, const char *name) {
        snprintf(out, size, "%s/%s", workdir, name);
}

/* Every prefix of a valid blob is refused as malformed. */
static void assert_truncations_refused(const char *tcti, const char *key, const uint8_t *blob, size_t len) {
        for (size_t i = 0; i < len; i++) {
                uint8_t *out = NULL;
                size_t out_len = 0;
                seal_error e = {};
                int r = unseal_secret(tcti, key, blob, i, &out, &out_len, &e);
                ck_assert_msg(r == -EBADMSG, "prefix of %zu bytes: %d (%s: %s)", i, r, e.step, e.message);
                ck_assert_ptr_null(out);
                ck_assert_str_ne(e.message, "");
        }
}

/* Flipping a bit at `stride`-spaced offsets (and every header byte) is refused
 * as malformed or unauthentic, never accepted, never a crash. */
static void assert_bitflips_refused(const char *tcti, const char *key, const uint8_t *blob, size_t len,
                                    size_t stride) {
        _cleanup_free_ uint8_t *copy = malloc(len);
        ck_assert_ptr_nonnull(copy);
        for (size_t i = 0; i < len; i += i < 20 ? 1 : stride) {
                memcpy(copy, blob, len);
                copy[i] ^= 0x01;
                uint8_t *out = NULL;
                size_t out_len = 0;
                seal_error e = {};
                int r = unseal_secret(tcti, key, copy, len, &out, &out_len, &e);
                ck_assert_msg(r == -EBADMSG, "bit flip at %zu: %d (%s: %s)", i, r, e.step, e.message);
                ck_assert_ptr_null(out);
        }
}

/* ---- TPM cases ---------------------------------------------------------- */

START_TEST(test_tpm_probe) {
        seal_error e = {};
        ck_assert_int_eq(seal_probe(tpm_a.tcti, &e), 0);
        ck_assert_int_eq(seal_probe(tpm_b.tcti, &e), 0);
}
END_TEST

START_TEST(test_tpm_roundtrip) {
        size_t sizes[] = { 1, 32, SEAL_SECRET_MAX };

        for (size_t k = 0; k < ELEMENTSOF(sizes); k++) {
                uint8_t secret[SEAL_SECRET_MAX];
                size_t n = sizes[k];
                fill_secret(secret, n);

                _cleanup_free_ void *blob = NULL;
                size_t blob_len = 0;
                seal_kind kind = SEAL_SOFTWARE;
                seal_error e = {};
                int r = seal_secret(tpm_a.tcti, false, NULL, secret, n, &kind, &blob, &blob_len, &e);
                ck_assert_msg(r == 0, "seal: %d %s: %s", r, e.step, e.message);
                ck_assert_int_eq(kind, SEAL_TPM);
                ck_assert_int_gt(blob_len, 20);
                ck_assert_mem_eq(blob, "AGSEAL1\0", 8);
                if (n >= 4)
                        ck_assert_msg(!blob_contains(blob, blob_len, secret, n), "secret in clear in the blob");

                uint8_t *out = NULL;
                size_t out_len = 0;
                r = unseal_secret(tpm_a.tcti, NULL, blob, blob_len, &out, &out_len, &e);
                ck_assert_msg(r == 0, "unseal: %d %s: %s", r, e.step, e.message);
                ck_assert_uint_eq(out_len, n);
                ck_assert_mem_eq(out, secret, n);
                secure_free(out, out_len);
        }
}
END_TEST

START_TEST(test_bad_sizes) {
        uint8_t secret[SEAL_SECRET_MAX + 1] = {};
        void *blob = NULL;
        size_t blob_len = 0;
        seal_error e = {};

        ck_assert_int_eq(seal_secret(closed_tcti, false, NULL, secret, 0, NULL, &blob, &blob_len, &e), -EINVAL);
        ck_assert_int_eq(seal_secret(closed_tcti, false, NULL, secret, SEAL_SECRET_MAX + 1, NULL, &blob, &blob_len, &e),
                         -EINVAL);
        ck_assert_int_eq(seal_secret(closed_tcti, true, NULL, secret, 8, NULL, &blob, &blob_len, &e), -EINVAL);
        ck_assert_ptr_null(blob);
}
END_TEST

START_TEST(test_tpm_other_tpm_refuses) {
        uint8_t secret[24];
        fill_secret(secret, sizeof(secret));
        _cleanup_free_ void *blob = NULL;
        size_t blob_len = 0;
        seal_error e = {};

        ck_assert_int_eq(seal_secret(tpm_a.tcti, false, NULL, secret, sizeof(secret), NULL, &blob, &blob_len, &e), 0);

        uint8_t *out = NULL;
        size_t out_len = 0;
        int r = unseal_secret(tpm_b.tcti, NULL, blob, blob_len, &out, &out_len, &e);
        ck_assert_int_eq(r, -EBADMSG);
        ck_assert_ptr_null(out);
        ck_assert_str_eq(e.step, "load");
        ck_assert_msg(strstr(e.message, "not sealed by this TPM"), "unclear message: %s", e.message);

        /* And the right TPM still opens it. */
        ck_assert_int_eq(unseal_secret(tpm_a.tcti, NULL, blob, blob_len, &out, &out_len, &e), 0);
        ck_assert_mem_eq(out, secret, sizeof(secret));
        secure_free(out, out_len);

        assert_no_tpm_handles(tpm_a.tcti);
        assert_no_tpm_handles(tpm_b.tcti);
}
END_TEST

START_TEST(test_tpm_corrupt_blob) {
        uint8_t secret[16];
        fill_secret(secret, sizeof(secret));
        _cleanup_free_ uint8_t *blob = NULL;
        size_t blob_len = 0;
        seal_error e = {};

        ck_assert_int_eq(seal_secret(tpm_a.tcti, false, NULL, secret, sizeof(secret), NULL, (void **) &blob,
                                     &blob_len, &e),
                         0);
        assert_truncations_refused(tpm_a.tcti, NULL, blob, blob_len);
        assert_bitflips_refused(tpm_a.tcti, NULL, blob, blob_len, 7);

        /* Plausible header, garbage parts. */
        _cleanup_free_ uint8_t *junk = malloc(blob_len);
        ck_assert_ptr_nonnull(junk);
        memcpy(junk, blob, 20);
        for (size_t i = 20; i < blob_len; i++)
                junk[i] = (uint8_t) (i * 131 + 7);
        uint8_t *out = NULL;
        size_t out_len = 0;
        ck_assert_int_eq(unseal_secret(tpm_a.tcti, NULL, junk, blob_len, &out, &out_len, &e), -EBADMSG);
        ck_assert_ptr_null(out);

        /* A newer format version is told apart from garbage. */
        memcpy(junk, blob, blob_len);
        junk[9] = 2;
        ck_assert_int_eq(unseal_secret(tpm_a.tcti, NULL, junk, blob_len, &out, &out_len, &e), -EPROTONOSUPPORT);

        assert_no_tpm_handles(tpm_a.tcti);
}
END_TEST

START_TEST(test_tpm_preferred_over_software) {
        char key[PATH_MAX];
        key_path(key, sizeof(key), "unused.key");
        uint8_t secret[8];
        fill_secret(secret, sizeof(secret));
        _cleanup_free_ void *blob = NULL;
        size_t blob_len = 0;
        seal_kind kind = SEAL_SOFTWARE;
        seal_error e = {};

        ck_assert_int_eq(seal_secret(tpm_a.tcti, true, key, secret, sizeof(secret), &kind, &blob, &blob_len, &e), 0);
        ck_assert_int_eq(kind, SEAL_TPM);
        ck_assert_int_eq(access(key, F_OK), -1);

        /* A TPM blob whose TPM is gone: -ENODEV, not a silent software attempt. */
        uint8_t *out = NULL;
        size_t out_len = 0;
        ck_assert_int_eq(unseal_secret(closed_tcti, key, blob, blob_len, &out, &out_len, &e), -ENODEV);
        ck_assert_str_eq(e.step, "tpm");
}
END_TEST

START_TEST(test_tpm_no_leaks) {
        uint8_t secret[32];
        _cleanup_free_ void *first = NULL;
        size_t first_len = 0;
        seal_error e = {};

        for (int i = 0; i < 50; i++) {
                fill_secret(secret, sizeof(secret));
                secret[0] = (uint8_t) i;
                _cleanup_free_ void *blob = NULL;
                size_t blob_len = 0;
                int r = seal_secret(tpm_a.tcti, false, NULL, secret, sizeof(secret), NULL, &blob, &blob_len, &e);
                ck_assert_msg(r == 0, "iteration %d: seal: %d %s: %s", i, r, e.step, e.message);

                uint8_t *out = NULL;
                size_t out_len = 0;
                r = unseal_secret(tpm_a.tcti, NULL, blob, blob_len, &out, &out_len, &e);
                ck_assert_msg(r == 0, "iteration %d: unseal: %d %s: %s", i, r, e.step, e.message);
                ck_assert_mem_eq(out, secret, sizeof(secret));
                secure_free(out, out_len);

                /* Failure paths must flush too: the wrong TPM fails after
                 * CreatePrimary and StartAuthSession, in Load. */
                r = unseal_secret(tpm_b.tcti, NULL, blob, blob_len, &out, &out_len, &e);
                ck_assert_int_eq(r, -EBADMSG);

                if (!first) {
                        first = TAKE_PTR(blob);
                        first_len = blob_len;
                }
        }

        /* Blobs stay valid across many calls (the primary is re-derived, not
         * a leftover handle). */
        uint8_t *out = NULL;
        size_t out_len = 0;
        ck_assert_int_eq(unseal_secret(tpm_a.tcti, NULL, first, first_len, &out, &out_len, &e), 0);
        secure_free(out, out_len);

        assert_no_tpm_handles(tpm_a.tcti);
        assert_no_tpm_handles(tpm_b.tcti);
}
END_TEST

/* ---- no TPM, software key ------------------------------------------------- */

START_TEST(test_no_tpm) {
        uint8_t secret[8];
        fill_secret(secret, sizeof(secret));
        void *blob = NULL;
        size_t blob_len = 0;
        seal_error e = {};

        ck_assert_int_eq(seal_secret(closed_tcti, false, NULL, secret, sizeof(secret), NULL, &blob, &blob_len, &e),
                         -ENODEV);
        ck_assert_ptr_null(blob);
        ck_assert_str_eq(e.step, "tpm");
        ck_assert_msg(strstr(e.message, "no TPM") && strstr(e.message, closed_tcti), "unclear message: %s",
                      e.message);

        e = (seal_error) {};
        ck_assert_int_eq(seal_probe(closed_tcti, &e), -ENODEV);
        ck_assert_str_eq(e.step, "tpm");
        ck_assert_str_ne(e.message, "");

        /* A TCTI that does not exist at all. */
        e = (seal_error) {};
        ck_assert_int_eq(seal_probe("agentd-no-such-tcti", &e), -ENODEV);
        ck_assert_str_eq(e.step, "tpm");
        ck_assert_str_ne(e.message, "");

        /* A TPM device that is not there. */
        e = (seal_error) {};
        ck_assert_int_eq(seal_probe("device:/nonexistent/tpmrm0", &e), -ENODEV);
        ck_assert_str_ne(e.message, "");
}
END_TEST

START_TEST(test_software_roundtrip) {
        char key[PATH_MAX];
        key_path(key, sizeof(key), "soft.key");
        uint8_t secret[48];
        fill_secret(secret, sizeof(secret));
        _cleanup_free_ void *blob = NULL;
        size_t blob_len = 0;
        seal_kind kind = SEAL_TPM;
        seal_error e = {};

        int r = seal_secret(closed_tcti, true, key, secret, sizeof(secret), &kind, &blob, &blob_len, &e);
        ck_assert_msg(r == 0, "seal: %d %s: %s", r, e.step, e.message);
        ck_assert_int_eq(kind, SEAL_SOFTWARE);
        ck_assert(!blob_contains(blob, blob_len, secret, sizeof(secret)));

        struct stat st;
        ck_assert_int_eq(lstat(key, &st), 0);
        ck_assert(S_ISREG(st.st_mode));
        ck_assert_int_eq(st.st_mode & 07777, 0600);
        ck_assert_int_eq(st.st_size, 32);
        ck_assert_int_eq(st.st_uid, geteuid());

        uint8_t *out = NULL;
        size_t out_len = 0;
        r = unseal_secret(closed_tcti, key, blob, blob_len, &out, &out_len, &e);
        ck_assert_msg(r == 0, "unseal: %d %s: %s", r, e.step, e.message);
        ck_assert_uint_eq(out_len, sizeof(secret));
        ck_assert_mem_eq(out, secret, sizeof(secret));
        secure_free(out, out_len);

        /* The key is reused, not regenerated: the first blob still opens after
         * a second seal, and two seals of the same secret differ (fresh nonce). */
        _cleanup_free_ void *blob2 = NULL;
        size_t blob2_len = 0;
        ck_assert_int_eq(seal_secret(closed_tcti, true, key, secret, sizeof(secret), &kind, &blob2, &blob2_len, &e), 0);
        ck_assert_uint_eq(blob_len, blob2_len);
        ck_assert(memcmp(blob, blob2, blob_len) != 0);
        ck_assert_int_eq(unseal_secret(closed_tcti, key, blob, blob_len, &out, &out_len, &e), 0);
        secure_free(out, out_len);

        /* A software blob needs no TPM: a TCTI that answers is irrelevant, a
         * missing key path (AllowSoftwareKey=no) is a clear refusal. */
        ck_assert_int_eq(unseal_secret("agentd-no-such-tcti", key, blob2, blob2_len, &out, &out_len, &e), 0);
        secure_free(out, out_len);
        e = (seal_error) {};
        out = NULL;
        ck_assert_int_eq(unseal_secret(closed_tcti, NULL, blob, blob_len, &out, &out_len, &e), -ENOKEY);
        ck_assert_ptr_null(out);
        ck_assert_msg(strstr(e.message, "AllowSoftwareKey"), "unclear message: %s", e.message);

        assert_truncations_refused(closed_tcti, key, blob, blob_len);
        assert_bitflips_refused(closed_tcti, key, blob, blob_len, 1);
}
END_TEST

START_TEST(test_software_key_mode) {
        char key[PATH_MAX];
        key_path(key, sizeof(key), "mode.key");
        uint8_t secret[8];
        fill_secret(secret, sizeof(secret));
        _cleanup_free_ void *blob = NULL;
        size_t blob_len = 0;
        seal_error e = {};

        ck_assert_int_eq(seal_secret(closed_tcti, true, key, secret, sizeof(secret), NULL, &blob, &blob_len, &e), 0);

        ck_assert_int_eq(chmod(key, 0644), 0);
        void *blob2 = NULL;
        size_t blob2_len = 0;
        e = (seal_error) {};
        ck_assert_int_eq(seal_secret(closed_tcti, true, key, secret, sizeof(secret), NULL, &blob2, &blob2_len, &e),
                         -EPERM);
        ck_assert_ptr_null(blob2);
        ck_assert_str_eq(e.step, "key-file");
        ck_assert_msg(strstr(e.message, "0644"), "message does not name the mode: %s", e.message);

        uint8_t *out = NULL;
        size_t out_len = 0;
        ck_assert_int_eq(unseal_secret(closed_tcti, key, blob, blob_len, &out, &out_len, &e), -EPERM);
        ck_assert_ptr_null(out);

        ck_assert_int_eq(chmod(key, 0600), 0);
        ck_assert_int_eq(unseal_secret(closed_tcti, key, blob, blob_len, &out, &out_len, &e), 0);
        secure_free(out, out_len);

        /* A symlink in place of the key file is refused, not followed. */
        char link_path[PATH_MAX];
        key_path(link_path, sizeof(link_path), "link.key");
        ck_assert_int_eq(symlink(key, link_path), 0);
        ck_assert_int_eq(unseal_secret(closed_tcti, link_path, blob, blob_len, &out, &out_len, &e), -EPERM);
        ck_assert_int_eq(seal_secret(closed_tcti, true, link_path, secret, sizeof(secret), NULL, &blob2, &blob2_len, &e),
                         -EPERM);

        /* Someone else's key file (only testable with the right to chown). */
        if (geteuid() == 0) {
                ck_assert_int_eq(chown(key, 65534, 65534), 0);
                ck_assert_int_eq(unseal_secret(closed_tcti, key, blob, blob_len, &out, &out_len, &e), -EPERM);
                ck_assert_msg(strstr(e.message, "owned by"), "unclear message: %s", e.message);
        }
}
END_TEST

START_TEST(test_software_wrong_key) {
        char key1[PATH_MAX], key2[PATH_MAX], missing[PATH_MAX];
        key_path(key1, sizeof(key1), "one.key");
        key_path(key2, sizeof(key2), "two.key");
        key_path(missing, sizeof(missing), "missing.key");
        uint8_t secret[8];
        fill_secret(secret, sizeof(secret));
        _cleanup_free_ void *blob1 = NULL, *blob2 = NULL;
        size_t blob1_len = 0, blob2_len = 0;
        seal_error e = {};

        ck_assert_int_eq(seal_secret(closed_tcti, true, key1, secret, sizeof(secret), NULL, &blob1, &blob1_len, &e), 0);
        ck_assert_int_eq(seal_secret(closed_tcti, true, key2, secret, sizeof(secret), NULL, &blob2, &blob2_len, &e), 0);

        uint8_t *out = NULL;
        size_t out_len = 0;
        ck_assert_int_eq(unseal_secret(closed_tcti, key2, blob1, blob1_len, &out, &out_len, &e), -EBADMSG);
        ck_assert_ptr_null(out);
        ck_assert_str_eq(e.step, "decrypt");
        ck_assert_msg(strstr(e.message, "different software key"), "unclear message: %s", e.message);

        /* Unsealing never creates a key file. */
        ck_assert_int_eq(unseal_secret(closed_tcti, missing, blob1, blob1_len, &out, &out_len, &e), -ENOKEY);
        ck_assert_int_eq(access(missing, F_OK), -1);
}
END_TEST

START_TEST(test_garbage_blobs) {
        uint8_t *out = NULL;
        size_t out_len = 0;
        seal_error e = {};
        uint8_t buf[600];

        ck_assert_int_eq(unseal_secret(closed_tcti, NULL, NULL, 0, &out, &out_len, &e), -EBADMSG);
        ck_assert_int_eq(unseal_secret(closed_tcti, NULL, "", 0, &out, &out_len, &e), -EBADMSG);

        /* Pseudo-random buffers, with and without a valid magic. */
        unsigned x = 12345;
        for (int round = 0; round < 2000; round++) {
                size_t n = (size_t) (round % (int) sizeof(buf));
                for (size_t i = 0; i < n; i++) {
                        x = x * 1103515245 + 12345;
                        buf[i] = (uint8_t) (x >> 16);
                }
                if (n >= 20 && round % 2) {
                        memcpy(buf, "AGSEAL1\0", 8);
                        buf[8] = 1 + (round % 4 == 1);
                        buf[9] = 1;
                        buf[10] = buf[11] = 0;
                        /* Sometimes make the lengths add up. */
                        if (round % 3 == 0) {
                                uint32_t a = (uint32_t) ((n - 20) / 2), b = (uint32_t) (n - 20 - a);
                                buf[12] = buf[13] = 0;
                                buf[14] = (uint8_t) (a >> 8);
                                buf[15] = (uint8_t) a;
                                buf[16] = buf[17] = 0;
                                buf[18] = (uint8_t) (b >> 8);
                                buf[19] = (uint8_t) b;
                        }
                }
                int r = unseal_secret(closed_tcti, "/nonexistent/agentd.key", buf, n, &out, &out_len, &e);
                ck_assert_msg(r == -EBADMSG || r == -ENOKEY || r == -ENODEV || r == -EPROTONOSUPPORT,
                              "garbage of %zu bytes: %d (%s: %s)", n, r, e.step, e.message);
                ck_assert_ptr_null(out);
        }
}
END_TEST

START_TEST(test_secure_alloc) {
        size_t sizes[] = { 0, 1, 32, 4096, 100000 };
        for (size_t i = 0; i < ELEMENTSOF(sizes); i++) {
                uint8_t *p = secure_alloc(sizes[i]);
                ck_assert_ptr_nonnull(p);
                memset(p, 0x5A, sizes[i]);
                secure_free(p, sizes[i]);
        }
        secure_free(NULL, 10);

        /* Excluded from forked children (MADV_WIPEONFORK), where freeing it
         * must still work. */
        uint8_t *p = secure_alloc(64);
        ck_assert_ptr_nonnull(p);
        memset(p, 0x5A, 64);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                int bad = 0;
                for (int i = 0; i < 64; i++)
                        bad |= p[i] == 0x5A;
                secure_free(p, 64);
                _exit(bad ? 1 : 0);
        }
        int status;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert(WIFEXITED(status));
#ifdef MADV_WIPEONFORK
        ck_assert_msg(WEXITSTATUS(status) == 0, "secret visible in a forked child");
#endif
        ck_assert_int_eq(p[0], 0x5A);
        secure_free(p, 64);
}
END_TEST

/* ---- runner ------------------------------------------------------------- */

static Suite *seal_suite(bool with_tpm) {
        Suite *s = suite_create("seal");

        TCase *tc = tcase_create("software");
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_bad_sizes);
        tcase_add_test(tc, test_no_tpm);
        tcase_add_test(tc, test_software_roundtrip);
        tcase_add_test(tc, test_software_key_mode);
        tcase_add_test(tc, test_software_wrong_key);
        tcase_add_test(tc, test_garbage_blobs);
        tcase_add_test(tc, test_secure_alloc);
        suite_add_tcase(s, tc);

        if (with_tpm) {
                tc = tcase_create("tpm");
                /* Started once in the runner (tests run forked), shared. */
                tcase_add_unchecked_fixture(tc, tpm_setup, tpm_teardown);
                tcase_set_timeout(tc, 600);
                tcase_add_test(tc, test_tpm_probe);
                tcase_add_test(tc, test_tpm_roundtrip);
                tcase_add_test(tc, test_tpm_other_tpm_refuses);
                tcase_add_test(tc, test_tpm_corrupt_blob);
                tcase_add_test(tc, test_tpm_preferred_over_software);
                tcase_add_test(tc, test_tpm_no_leaks);
                suite_add_tcase(s, tc);
        }
        return s;
}

int main(void) {
        const char *tmp = getenv("TMPDIR");
        bool with_tpm;
        int failed;

        /* ESAPI logs every TPM error to stderr; the failures here are wanted.
         * TSS2_LOG=all+warning in the environment brings them back. */
        (void) setenv("TSS2_LOG", "all+none", 0);

        snprintf(workdir, sizeof(workdir), "%s/agentd-test-seal-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(workdir)) {
                perror("mkdtemp");
                return EXIT_FAILURE;
        }

        /* A TCTI on which nothing listens: a free port pair, left closed. */
        int closed_fds[2];
        int port = free_port_pair_keep(closed_fds);
        if (port < 0) {
                fprintf(stderr, "no free loopback port pair: %m\n");
                return EXIT_FAILURE;
        }
        snprintf(closed_tcti, sizeof(closed_tcti), "swtpm:host=127.0.0.1,port=%d", port);

        with_tpm = find_in_path("swtpm", swtpm_path, sizeof(swtpm_path));
        if (!with_tpm)
                fprintf(stderr, "SKIP: swtpm is not installed (apt install swtpm): the TPM cases of test-seal "
                                "are NOT run, only the software-key cases\n");

        SRunner *sr = srunner_create(seal_suite(with_tpm));
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);

        /* Stray swtpm processes if a fixture aborted half-way. */
        tpm_teardown();
        rm_rf(workdir);
        safe_close(closed_fds[0]);
        safe_close(closed_fds[1]);

        if (failed)
                return EXIT_FAILURE;
        return with_tpm ? EXIT_SUCCESS : 77;
}
