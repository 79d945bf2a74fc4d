/* Sealing broker secrets to this machine.
 *
 * TPM path: a storage primary key under the owner hierarchy is re-derived from
 * a fixed template at every call (nothing persistent to provision, nothing to
 * go stale), and the secret becomes a KEYEDHASH sealed data object under it.
 * Only the TPM that derived the primary can load the object again, so a blob
 * copied to another machine (or kept across a TPM clear) does not open.
 * There is no resource manager assumed (swtpm, /dev/tpm0): every transient
 * object and session we create is flushed on every path, by one cleanup
 * function that runs whatever happened.
 *
 * Software path (AllowSoftwareKey=yes and no TPM): AES-256-GCM under a 32-byte
 * key file. It protects against a stolen blob, not against someone who can
 * read our files; the status the daemon reports says so.
 *
 * Library error codes are turned into -errno plus words in exactly two places:
 * tss_fail() for TSS2_RC and ossl_fail() for OpenSSL. */
#include "seal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#include "file.h"
#include "macro.h"

#define IN_SET(x, ...)                                                  \
        ({                                                              \
                const int _set_[] = { __VA_ARGS__ };                    \
                bool _found_ = false;                                   \
                for (size_t _i_ = 0; _i_ < ELEMENTSOF(_set_); _i_++)    \
                        if (_set_[_i_] == (x))                          \
                                _found_ = true;                         \
                _found_;                                                \
        })

/* The contract's default ([TPM] TCTI=): the kernel resource manager. */
#define SEAL_DEFAULT_TCTI "device:/dev/tpmrm0"

/* Blob layout (all integers big-endian):
 *   0  magic "AGSEAL1\0"
 *   8  u8  kind      (1 TPM, 2 software; wire values, not seal_kind)
 *   9  u8  version   (1)
 *  10  u16 reserved  (0)
 *  12  u32 length of part A
 *  16  u32 length of part B
 *  20  part A, part B
 * TPM: A = TPM2B_PUBLIC, B = TPM2B_PRIVATE (TSS2 MU marshalling).
 * Software: A = 12-byte GCM nonce, B = ciphertext || 16-byte tag; the 20-byte
 * header is the GCM additional data, so kind/version/lengths cannot be edited. */
#define BLOB_MAGIC "AGSEAL1"
#define BLOB_MAGIC_SIZE 8
#define BLOB_HEADER_SIZE 20
#define BLOB_VERSION 1
#define BLOB_KIND_TPM 1
#define BLOB_KIND_SOFTWARE 2
/* Far above anything we write (a sealed object's public+private are ~250 bytes)
 * and low enough that a garbage header cannot make us trust a huge length. */
#define BLOB_PART_MAX 4096

#define SOFT_KEY_SIZE 32
#define SOFT_NONCE_SIZE 12
#define SOFT_TAG_SIZE 16

/* Distinctive unique field of the primary template: the key derived from it is
 * ours alone, not the SRK some other tool persisted or expects. Changing it
 * orphans every existing blob, hence the version in the label. */
#define PRIMARY_LABEL "agentd-seal-primary-v1"

/* ---- error reporting ---------------------------------------------------- */

_printf_(4, 5) static int fail(seal_error *err, int r, const char *step, const char *fmt, ...) {
        if (err) {
                va_list ap;
                snprintf(err->step, sizeof(err->step), "%s", step);
                va_start(ap, fmt);
                vsnprintf(err->message, sizeof(err->message), fmt, ap);
                va_end(ap);
        }
        return r;
}

/* ---- secure memory ------------------------------------------------------ */

/* The mapping's length is stored in front of the user's bytes so that a free
 * with a wrong `n` still unmaps (and wipes) exactly what was mapped. The header
 * is a whole cache line so the returned pointer stays generously aligned. */
#define SECURE_HEADER 64

void *secure_alloc(size_t n) {
        size_t page = (size_t) sysconf(_SC_PAGESIZE);

        if (n > SIZE_MAX - SECURE_HEADER - page) {
                errno = ENOMEM;
                return NULL;
        }
        size_t total = (SECURE_HEADER + n + page - 1) / page * page;

        /* A private mapping rather than malloc: mlock/munlock work on pages, and
         * unlocking a malloc'd page would unlock unrelated neighbours too. */
        uint8_t *m = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
                return NULL;

        /* Best effort all three: DONTDUMP and WIPEONFORK only fail on kernels too
         * old to run agentd's sandbox anyway, mlock fails under a small
         * RLIMIT_MEMLOCK, and refusing to hold the secret would help no one. */
        (void) madvise(m, total, MADV_DONTDUMP);
#ifdef MADV_WIPEONFORK
        (void) madvise(m, total, MADV_WIPEONFORK);
#endif
        (void) mlock(m, total);

        memcpy(m, &total, sizeof(total));
        return m + SECURE_HEADER;
}

void secure_free(void *p, size_t n) {
        if (!p)
                return;

        uint8_t *m = (uint8_t *) p - SECURE_HEADER;
        size_t total;
        memcpy(&total, m, sizeof(total));
        if (total == 0) {
                /* Wiped by MADV_WIPEONFORK: we are a forked child; recompute. */
                size_t page = (size_t) sysconf(_SC_PAGESIZE);
                total = (SECURE_HEADER + n + page - 1) / page * page;
        }
        explicit_bzero(m, total);
        (void) munlock(m, total);
        (void) munmap(m, total);
}

/* Secret bytes with their length, for _cleanup_. */
typedef struct secure_buf {
        uint8_t *p;
        size_t n;
} secure_buf;

static void secure_buf_done(secure_buf *b) {
        secure_free(b->p, b->n);
        b->p = NULL;
        b->n = 0;
}

/* ---- blob framing ------------------------------------------------------- */

typedef struct blob_view {
        uint8_t kind;
        const uint8_t *header;
        const uint8_t *a;
        size_t a_len;
        const uint8_t *b;
        size_t b_len;
} blob_view;

static void put_be16(uint8_t *p, uint16_t v) {
        p[0] = (uint8_t) (v >> 8);
        p[1] = (uint8_t) v;
}

static void put_be32(uint8_t *p, uint32_t v) {
        p[0] = (uint8_t) (v >> 24);
        p[1] = (uint8_t) (v >> 16);
        p[2] = (uint8_t) (v >> 8);
        p[3] = (uint8_t) v;
}

static uint16_t get_be16(const uint8_t *p) {
        return (uint16_t) ((p[0] << 8) | p[1]);
}

static uint32_t get_be32(const uint8_t *p) {
        return ((uint32_t) p[0] << 24) | ((uint32_t) p[1] << 16) | ((uint32_t) p[2] << 8) | p[3];
}

static void blob_header(uint8_t hdr[BLOB_HEADER_SIZE], uint8_t kind, size_t a_len, size_t b_len) {
        memset(hdr, 0, BLOB_HEADER_SIZE);
        memcpy(hdr, BLOB_MAGIC, BLOB_MAGIC_SIZE); /* includes the NUL */
        hdr[8] = kind;
        hdr[9] = BLOB_VERSION;
        put_be16(hdr + 10, 0);
        put_be32(hdr + 12, (uint32_t) a_len);
        put_be32(hdr + 16, (uint32_t) b_len);
}

/* Allocates header + parts. `b` may be NULL: the caller fills part B itself
 * (the software path encrypts straight into the blob). */
static int blob_new(uint8_t kind, const void *a, size_t a_len, const void *b, size_t b_len,
                    uint8_t **ret, size_t *ret_len, seal_error *err) {
        size_t len = BLOB_HEADER_SIZE + a_len + b_len;
        uint8_t *blob = malloc(len);
        if (!blob)
                return fail(err, -ENOMEM, "blob", "out of memory allocating a %zu-byte blob", len);

        blob_header(blob, kind, a_len, b_len);
        memcpy(blob + BLOB_HEADER_SIZE, a, a_len);
        if (b)
                memcpy(blob + BLOB_HEADER_SIZE + a_len, b, b_len);
        *ret = blob;
        *ret_len = len;
        return 0;
}

/* Defensive parse: every length is checked against what is really there before
 * anything is read, and the total must match exactly (no trailing bytes). */
static int blob_parse(const void *blob, size_t len, blob_view *v, seal_error *err) {
        const uint8_t *p = blob;

        if (!p || len < BLOB_HEADER_SIZE)
                return fail(err, -EBADMSG, "blob",
                            "sealed blob is truncated: %zu bytes, the header alone needs %d", len,
                            BLOB_HEADER_SIZE);
        if (memcmp(p, BLOB_MAGIC, BLOB_MAGIC_SIZE) != 0)
                return fail(err, -EBADMSG, "blob", "not an agentd sealed blob (bad magic)");
        if (p[9] == 0)
                return fail(err, -EBADMSG, "blob", "sealed blob has invalid version 0");
        if (p[9] > BLOB_VERSION)
                return fail(err, -EPROTONOSUPPORT, "blob",
                            "sealed blob has version %u, this agentd reads version %d: it was written by a newer agentd",
                            p[9], BLOB_VERSION);
        if (p[8] != BLOB_KIND_TPM && p[8] != BLOB_KIND_SOFTWARE)
                return fail(err, -EBADMSG, "blob", "sealed blob has unknown kind %u", p[8]);
        if (get_be16(p + 10) != 0)
                return fail(err, -EBADMSG, "blob", "sealed blob has non-zero reserved bits");

        uint32_t a_len = get_be32(p + 12), b_len = get_be32(p + 16);
        if (a_len > BLOB_PART_MAX || b_len > BLOB_PART_MAX)
                return fail(err, -EBADMSG, "blob", "sealed blob claims implausible part sizes (%" PRIu32 ", %" PRIu32 ")",
                            a_len, b_len);
        size_t want = BLOB_HEADER_SIZE + (size_t) a_len + (size_t) b_len;
        if (len != want)
                return fail(err, -EBADMSG, "blob",
                            "sealed blob is %zu bytes but its header says %zu: truncated or corrupted", len, want);

        *v = (blob_view) {
                .kind = p[8],
                .header = p,
                .a = p + BLOB_HEADER_SIZE,
                .a_len = a_len,
                .b = p + BLOB_HEADER_SIZE + a_len,
                .b_len = b_len,
        };
        return 0;
}

/* ---- TSS2 boundary ------------------------------------------------------ */

/* How to read a TSS2_RC: while connecting, everything means "no usable TPM";
 * on a command whose input came from the blob, a TPM parameter error means the
 * blob cannot be used with this TPM. */
enum {
        TSS_OPEN = 1 << 0,
        TSS_BLOB_INPUT = 1 << 1,
};

/* The one place a TSS2_RC becomes -errno and words. */
static int tss_fail(seal_error *err, const char *step, const char *what, TSS2_RC rc, unsigned flags) {
        TSS2_RC layer = rc & TSS2_RC_LAYER_MASK;
        TSS2_RC base = rc & 0xFFFF; /* TSS2_BASE_RC_*, meaningful for non-TPM layers */
        /* A TPM response code without handle/parameter/session numbers. */
        TSS2_RC tpm = (rc & TPM2_RC_FMT1) ? (rc & (TPM2_RC_FMT1 | 0x3F)) : (rc & 0xFFF);
        const char *decoded = Tss2_RC_Decode(rc);
        const char *hint = "";
        int r = -EIO;

        if (layer == TSS2_TPM_RC_LAYER || layer == TSS2_RESMGR_TPM_RC_LAYER) {
                if (tpm == TPM2_RC_BAD_AUTH || tpm == TPM2_RC_AUTH_FAIL) {
                        r = -EACCES;
                        hint = " (the owner hierarchy has an authorization value; agentd needs it empty)";
                } else if (tpm == TPM2_RC_LOCKOUT) {
                        r = -EBUSY;
                        hint = " (the TPM is in dictionary-attack lockout)";
                } else if (tpm == TPM2_RC_HIERARCHY) {
                        r = -EPERM;
                        hint = " (the owner hierarchy is disabled)";
                } else if (tpm == TPM2_RC_OBJECT_MEMORY || tpm == TPM2_RC_SESSION_MEMORY ||
                           tpm == TPM2_RC_OBJECT_HANDLES || tpm == TPM2_RC_SESSION_HANDLES) {
                        r = -EBUSY;
                        hint = " (TPM slots exhausted: another client without a resource manager leaked handles)";
                } else if (tpm == TPM2_RC_RETRY || tpm == TPM2_RC_YIELDED || tpm == TPM2_RC_TESTING ||
                           tpm == TPM2_RC_NV_RATE) {
                        r = -EAGAIN;
                        hint = " (the TPM is busy; try again)";
                } else if (tpm == TPM2_RC_INITIALIZE) {
                        r = -ENODEV;
                        hint = " (TPM2_Startup was never sent to this TPM)";
                } else if ((flags & TSS_BLOB_INPUT) && (rc & TPM2_RC_FMT1)) {
                        r = -EBADMSG;
                        hint = ": the blob was not sealed by this TPM (another machine or TPM, an owner hierarchy "
                               "cleared since, or corrupted bytes)";
                }
        } else if (base == TSS2_BASE_RC_MEMORY) {
                r = -ENOMEM;
        } else if (layer == TSS2_MU_RC_LAYER && (flags & TSS_BLOB_INPUT)) {
                r = -EBADMSG;
                hint = ": the TPM parts of the blob are malformed";
        } else if (base == TSS2_BASE_RC_IO_ERROR || base == TSS2_BASE_RC_NO_CONNECTION ||
                   base == TSS2_BASE_RC_NOT_SUPPORTED || base == TSS2_BASE_RC_INCOMPATIBLE_TCTI) {
                r = -ENODEV;
                hint = " (lost the connection to the TPM)";
        }

        /* Nothing reached means no TPM, whatever the code says (wrong TCTI name,
         * device absent or not ours, nothing answering); `what` says why. */
        if ((flags & TSS_OPEN) && r != -ENOMEM) {
                r = -ENODEV;
                if (layer != TSS2_TPM_RC_LAYER)
                        hint = "";
        }

        return fail(err, r, step, "%s: %s (0x%" PRIx32 ")%s", what, decoded ?: "unknown error", rc, hint);
}

/* ---- TPM session ---------------------------------------------------------- */

typedef struct tpm {
        TSS2_TCTI_CONTEXT *tcti;
        ESYS_CONTEXT *esys;
        ESYS_TR primary;
        ESYS_TR session;
        ESYS_TR object;
} tpm;

#define TPM_INIT { .primary = ESYS_TR_NONE, .session = ESYS_TR_NONE, .object = ESYS_TR_NONE }

static void tpm_flush(tpm *t, ESYS_TR *h) {
        if (*h == ESYS_TR_NONE)
                return;
        /* If the flush fails (connection gone) the TPM keeps the slot until it
         * is reset or the kernel RM closes our fd; we can still free ESAPI's
         * bookkeeping. */
        if (Esys_FlushContext(t->esys, *h) != TSS2_RC_SUCCESS)
                (void) Esys_TR_Close(t->esys, h);
        *h = ESYS_TR_NONE;
}

/* Runs on every exit path of every TPM operation. */
static void tpm_done(tpm *t) {
        if (t->esys) {
                tpm_flush(t, &t->object);
                tpm_flush(t, &t->session);
                tpm_flush(t, &t->primary);
                Esys_Finalize(&t->esys);
        }
        if (t->tcti)
                Tss2_TctiLdr_Finalize(&t->tcti);
}

/* The TCTI's own code is usually just "IO failure"; the operator needs the
 * why: the device node missing or not ours, the socket refused. */
static void tcti_reason(const char *conf, int saved_errno, char *buf, size_t size) {
        const char *path = NULL;

        buf[0] = 0;
        if (streq(conf, "device"))
                path = "/dev/tpm0"; /* the device TCTI's own default */
        else if (strncmp(conf, "device:", 7) == 0)
                path = conf + 7;

        if (path) {
                if (access(path, R_OK | W_OK) < 0)
                        snprintf(buf, size, " (%s: %s%s)", path, strerror(errno),
                                 errno == EACCES ? "; the TPM device is usually group \"tss\": add the user to it" : "");
                return;
        }
        if (IN_SET(saved_errno, ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, ENETUNREACH, ECONNRESET, ENOENT, EACCES))
                snprintf(buf, size, " (%s)", strerror(saved_errno));
}

static int tpm_open(tpm *t, const char *tcti, seal_error *err) {
        const char *conf = tcti && *tcti ? tcti : SEAL_DEFAULT_TCTI;
        char what[400], reason[200];
        TSS2_RC rc;

        errno = 0;
        rc = Tss2_TctiLdr_Initialize(conf, &t->tcti);
        if (rc != TSS2_RC_SUCCESS) {
                if ((rc & 0xFFFF) == TSS2_BASE_RC_NOT_SUPPORTED)
                        snprintf(reason, sizeof(reason), " (no such TCTI module is installed)");
                else
                        tcti_reason(conf, errno, reason, sizeof(reason));
                snprintf(what, sizeof(what), "no TPM: TCTI \"%s\" did not initialise%s", conf, reason);
                return tss_fail(err, "tpm", what, rc, TSS_OPEN);
        }
        rc = Esys_Initialize(&t->esys, t->tcti, NULL);
        if (rc != TSS2_RC_SUCCESS) {
                snprintf(what, sizeof(what), "no TPM: ESAPI could not start on TCTI \"%s\"", conf);
                return tss_fail(err, "tpm", what, rc, TSS_OPEN);
        }

        /* Some TCTIs (swtpm, mssim) connect lazily: ask something cheap so "no
         * TPM" is told apart from a TPM that failed mid-operation. */
        TPMS_CAPABILITY_DATA *cap = NULL;
        TPMI_YES_NO more;
        errno = 0;
        rc = Esys_GetCapability(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, TPM2_CAP_TPM_PROPERTIES,
                                TPM2_PT_MANUFACTURER, 1, &more, &cap);
        Esys_Free(cap);
        if (rc != TSS2_RC_SUCCESS) {
                tcti_reason(conf, errno, reason, sizeof(reason));
                snprintf(what, sizeof(what), "no TPM answers on TCTI \"%s\"%s", conf, reason);
                return tss_fail(err, "tpm", what, rc, TSS_OPEN);
        }
        return 0;
}

/* Re-derives our storage primary key. Same template on the same TPM (same
 * owner seed) gives the same key, which is what makes Load work later. ECC
 * P-256 rather than RSA: derivation is milliseconds instead of seconds. */
static int tpm_create_primary(tpm *t, seal_error *err) {
        static const TPM2B_SENSITIVE_CREATE sensitive = {}; /* empty auth, no data */
        static const TPM2B_DATA outside_info = {};
        static const TPML_PCR_SELECTION creation_pcr = {};
        TPM2B_PUBLIC template = {
                .publicArea = {
                        .type = TPM2_ALG_ECC,
                        .nameAlg = TPM2_ALG_SHA256,
                        /* noDA: the auth is empty, so failures are not guesses
                         * worth counting towards lockout. */
                        .objectAttributes = TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT | TPMA_OBJECT_FIXEDTPM |
                                            TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN |
                                            TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_NODA,
                        .parameters.eccDetail = {
                                .symmetric = {
                                        .algorithm = TPM2_ALG_AES,
                                        .keyBits.aes = 128,
                                        .mode.aes = TPM2_ALG_CFB,
                                },
                                .scheme.scheme = TPM2_ALG_NULL,
                                .curveID = TPM2_ECC_NIST_P256,
                                .kdf.scheme = TPM2_ALG_NULL,
                        },
                },
        };
        template.publicArea.unique.ecc.x.size = sizeof(PRIMARY_LABEL) - 1;
        memcpy(template.publicArea.unique.ecc.x.buffer, PRIMARY_LABEL, sizeof(PRIMARY_LABEL) - 1);

        /* The owner hierarchy's auth is empty on a machine nobody "took
         * ownership" of; a password session carries that empty value. */
        TSS2_RC rc = Esys_CreatePrimary(t->esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                                        &sensitive, &template, &outside_info, &creation_pcr, &t->primary, NULL,
                                        NULL, NULL, NULL);
        if (rc != TSS2_RC_SUCCESS)
                return tss_fail(err, "create-primary", "cannot derive the agentd storage key (TPM2_CreatePrimary)",
                                rc, 0);
        return 0;
}

/* An HMAC session salted with the primary key, used for parameter encryption:
 * the secret crosses the bus (LPC/SPI, or the swtpm socket) encrypted in
 * TPM2_Create's command and TPM2_Unseal's response, not in clear. Salting
 * makes the session key unknown to a passive observer of the bus. */
static int tpm_start_session(tpm *t, seal_error *err) {
        static const TPMT_SYM_DEF symmetric = {
                .algorithm = TPM2_ALG_AES,
                .keyBits.aes = 128,
                .mode.aes = TPM2_ALG_CFB,
        };
        TSS2_RC rc = Esys_StartAuthSession(t->esys, t->primary, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                           ESYS_TR_NONE, NULL, TPM2_SE_HMAC, &symmetric, TPM2_ALG_SHA256,
                                           &t->session);
        if (rc != TSS2_RC_SUCCESS)
                return tss_fail(err, "session", "cannot start a salted session (TPM2_StartAuthSession)", rc, 0);
        return 0;
}

/* continueSession always: we flush the session ourselves, so its fate does not
 * depend on whether the command succeeded. */
static int tpm_session_attrs(tpm *t, TPMA_SESSION attrs, seal_error *err) {
        TSS2_RC rc = Esys_TRSess_SetAttributes(t->esys, t->session, attrs | TPMA_SESSION_CONTINUESESSION, 0xFF);
        if (rc != TSS2_RC_SUCCESS)
                return tss_fail(err, "session", "cannot set session attributes", rc, 0);
        return 0;
}

/* Connects, creates the primary key and starts a salted session with
 * `session_attrs`: the first steps of both seal and unseal. */
static int tpm_begin(tpm *t, const char *tcti, TPMA_SESSION session_attrs, seal_error *err) {
        int r = tpm_open(t, tcti, err);
        if (r < 0)
                return r;
        r = tpm_create_primary(t, err);
        if (r < 0)
                return r;
        r = tpm_start_session(t, err);
        if (r < 0)
                return r;
        return tpm_session_attrs(t, session_attrs, err);
}

static int tpm_seal(const char *tcti, const void *secret, size_t len, uint8_t **ret_blob, size_t *ret_len,
                    seal_error *err) {
        _cleanup_(tpm_done) tpm t = TPM_INIT;
        TPM2B_PRIVATE *out_private = NULL;
        TPM2B_PUBLIC *out_public = NULL;
        TSS2_RC rc;
        int r;

        r = tpm_begin(&t, tcti, TPMA_SESSION_DECRYPT, err);
        if (r < 0)
                return r;

        /* A sealed data object: KEYEDHASH with no sign/decrypt, so the TPM will
         * only ever hand the data back through TPM2_Unseal. Not
         * sensitiveDataOrigin: we supply the data. fixedTPM|fixedParent: it
         * can never be duplicated off this TPM. */
        static const TPM2B_DATA outside_info = {};
        static const TPML_PCR_SELECTION creation_pcr = {};
        static const TPM2B_PUBLIC template = {
                .publicArea = {
                        .type = TPM2_ALG_KEYEDHASH,
                        .nameAlg = TPM2_ALG_SHA256,
                        .objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                                            TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_NODA,
                        .parameters.keyedHashDetail.scheme.scheme = TPM2_ALG_NULL,
                },
        };
        TPM2B_SENSITIVE_CREATE sensitive = {
                .sensitive.data.size = (UINT16) len,
        };
        memcpy(sensitive.sensitive.data.buffer, secret, len);

        rc = Esys_Create(t.esys, t.primary, t.session, ESYS_TR_NONE, ESYS_TR_NONE, &sensitive, &template,
                         &outside_info, &creation_pcr, &out_private, &out_public, NULL, NULL, NULL);
        explicit_bzero(&sensitive, sizeof(sensitive));
        if (rc != TSS2_RC_SUCCESS)
                return tss_fail(err, "create", "cannot create the sealed object (TPM2_Create)", rc, 0);

        uint8_t pub[sizeof(TPM2B_PUBLIC)], priv[sizeof(TPM2B_PRIVATE)];
        size_t pub_len = 0, priv_len = 0;
        rc = Tss2_MU_TPM2B_PUBLIC_Marshal(out_public, pub, sizeof(pub), &pub_len);
        if (rc == TSS2_RC_SUCCESS)
                rc = Tss2_MU_TPM2B_PRIVATE_Marshal(out_private, priv, sizeof(priv), &priv_len);
        Esys_Free(out_public);
        Esys_Free(out_private);
        if (rc != TSS2_RC_SUCCESS)
                return tss_fail(err, "create", "cannot marshal the sealed object", rc, 0);

        return blob_new(BLOB_KIND_TPM, pub, pub_len, priv, priv_len, ret_blob, ret_len, err);
}

static int tpm_unseal(const char *tcti, const blob_view *v, uint8_t **ret_secret, size_t *ret_len,
                      seal_error *err) {
        _cleanup_(tpm_done) tpm t = TPM_INIT;
        TPM2B_PUBLIC pub = {};
        TPM2B_PRIVATE priv = {};
        size_t off;
        TSS2_RC rc;
        int r;

        /* Parse before connecting: garbage is -EBADMSG whether or not a TPM is
         * there, and costs no TPM round trip. */
        off = 0;
        rc = Tss2_MU_TPM2B_PUBLIC_Unmarshal(v->a, v->a_len, &off, &pub);
        if (rc != TSS2_RC_SUCCESS)
                return tss_fail(err, "blob", "cannot parse the sealed object's public part", rc, TSS_BLOB_INPUT);
        if (off != v->a_len)
                return fail(err, -EBADMSG, "blob", "sealed object's public part has %zu trailing bytes",
                            v->a_len - off);
        off = 0;
        rc = Tss2_MU_TPM2B_PRIVATE_Unmarshal(v->b, v->b_len, &off, &priv);
        if (rc != TSS2_RC_SUCCESS)
                return tss_fail(err, "blob", "cannot parse the sealed object's private part", rc, TSS_BLOB_INPUT);
        if (off != v->b_len)
                return fail(err, -EBADMSG, "blob", "sealed object's private part has %zu trailing bytes",
                            v->b_len - off);
        if (pub.publicArea.type != TPM2_ALG_KEYEDHASH)
                return fail(err, -EBADMSG, "blob", "sealed blob does not hold a sealed data object (type 0x%x)",
                            pub.publicArea.type);

        r = tpm_begin(&t, tcti, 0, err);
        if (r < 0)
                return r;

        /* A different TPM derives a different primary from the same template,
         * and the private part's integrity check fails here. */
        rc = Esys_Load(t.esys, t.primary, t.session, ESYS_TR_NONE, ESYS_TR_NONE, &priv, &pub, &t.object);
        if (rc != TSS2_RC_SUCCESS)
                return tss_fail(err, "load", "cannot load the sealed object (TPM2_Load)", rc, TSS_BLOB_INPUT);

        r = tpm_session_attrs(&t, TPMA_SESSION_ENCRYPT, err);
        if (r < 0)
                return r;

        TPM2B_SENSITIVE_DATA *data = NULL;
        rc = Esys_Unseal(t.esys, t.object, t.session, ESYS_TR_NONE, ESYS_TR_NONE, &data);
        if (rc != TSS2_RC_SUCCESS)
                return tss_fail(err, "unseal", "cannot unseal (TPM2_Unseal)", rc, 0);

        if (data->size == 0 || data->size > SEAL_SECRET_MAX) {
                unsigned size = data->size;
                explicit_bzero(data, sizeof(*data));
                Esys_Free(data);
                return fail(err, -EBADMSG, "unseal", "the sealed object holds %u bytes, not a secret we sealed",
                            size);
        }
        uint8_t *out = secure_alloc(data->size);
        if (!out) {
                explicit_bzero(data, sizeof(*data));
                Esys_Free(data);
                return fail(err, -ENOMEM, "unseal", "cannot allocate locked memory for the secret");
        }
        memcpy(out, data->buffer, data->size);
        *ret_len = data->size;
        *ret_secret = out;
        explicit_bzero(data, sizeof(*data));
        Esys_Free(data);
        return 0;
}

/* ---- OpenSSL boundary --------------------------------------------------- */

/* The one place OpenSSL's error queue becomes words. `r` is the errno the
 * caller chose: OpenSSL's codes do not map onto errno, the call site knows
 * what a failure there means. The queue is drained so the next call on this
 * thread starts clean. */
static int ossl_fail(seal_error *err, int r, const char *step, const char *what) {
        unsigned long e = ERR_get_error();
        char buf[256] = "";

        if (e != 0)
                ERR_error_string_n(e, buf, sizeof(buf));
        ERR_clear_error();

        if (buf[0])
                return fail(err, r, step, "%s: %s", what, buf);
        return fail(err, r, step, "%s", what);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_CIPHER_CTX *, EVP_CIPHER_CTX_free)

/* ---- software key file ---------------------------------------------------- */

static int key_file_create(const char *path, seal_error *err) {
        _cleanup_(secure_buf_done) secure_buf key = {};
        char tmp[4096];
        uint64_t rnd;

        key.p = secure_alloc(SOFT_KEY_SIZE);
        if (!key.p)
                return fail(err, -ENOMEM, "key-file", "cannot allocate locked memory for the key");
        key.n = SOFT_KEY_SIZE;
        if (RAND_bytes(key.p, SOFT_KEY_SIZE) != 1)
                return ossl_fail(err, -EIO, "key-file", "cannot generate the software key");

        /* Written under a temporary name and linked into place, so a
         * concurrent reader (another worker thread, another agentd) sees no
         * file or a complete one, never a half-written key. link() fails with
         * EEXIST rather than following a planted symlink. */
        if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
                return fail(err, -errno, "key-file", "getrandom: %m");
        if ((size_t) snprintf(tmp, sizeof(tmp), "%s.tmp-%016" PRIx64, path, rnd) >= sizeof(tmp))
                return fail(err, -ENAMETOOLONG, "key-file", "key file path is too long");

        int r = write_file(tmp, key.p, SOFT_KEY_SIZE, 0600, WRITE_FILE_EXCL);
        if (r < 0) {
                if (r != -EEXIST) /* a temp file we did not create is not ours to remove */
                        (void) unlink(tmp);
                return fail(err, r, "key-file", "cannot write %s: %s", tmp, strerror(-r));
        }
        if (link(tmp, path) < 0 && errno != EEXIST)
                r = fail(err, -errno, "key-file", "cannot install the key file %s: %m", path);
        (void) unlink(tmp);
        return r;
}

/* Reads the 32-byte key. With `create`, a missing file is made first. The
 * checks are on the opened fd (fstat), so what we check is what we read. */
static int key_file_load(const char *path, bool create, secure_buf *ret, seal_error *err) {
        _cleanup_(secure_buf_done) secure_buf key = {};
        _cleanup_close_ int fd = -1;
        struct stat st;
        int r;

        if (!path || !*path)
                return fail(err, -EINVAL, "key-file", "no software key file path configured");

        for (int attempt = 0;; attempt++) {
                fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
                if (fd >= 0)
                        break;
                if (errno == ELOOP)
                        return fail(err, -EPERM, "key-file", "refusing software key file %s: it is a symlink", path);
                if (errno != ENOENT)
                        return fail(err, -errno, "key-file", "cannot open software key file %s: %m", path);
                if (!create)
                        return fail(err, -ENOKEY, "key-file",
                                    "software key file %s does not exist: the blob cannot be unsealed without it", path);
                if (attempt > 0)
                        return fail(err, -EIO, "key-file", "software key file %s vanished after creation", path);
                r = key_file_create(path, err);
                if (r < 0)
                        return r;
        }

        if (fstat(fd, &st) < 0)
                return fail(err, -errno, "key-file", "cannot stat %s: %m", path);
        if (!S_ISREG(st.st_mode))
                return fail(err, -EPERM, "key-file", "refusing software key file %s: not a regular file", path);
        if (st.st_uid != geteuid())
                return fail(err, -EPERM, "key-file", "refusing software key file %s: owned by uid %u, not by us (uid %u)",
                            path, (unsigned) st.st_uid, (unsigned) geteuid());
        if (st.st_mode & 0077)
                return fail(err, -EPERM, "key-file",
                            "refusing software key file %s: mode %04o lets others read it (must be 0600; chmod 600 it)",
                            path, (unsigned) (st.st_mode & 07777));
        if (st.st_size != SOFT_KEY_SIZE)
                return fail(err, -EBADMSG, "key-file", "software key file %s is %jd bytes, expected %d", path,
                            (intmax_t) st.st_size, SOFT_KEY_SIZE);

        key.p = secure_alloc(SOFT_KEY_SIZE);
        if (!key.p)
                return fail(err, -ENOMEM, "key-file", "cannot allocate locked memory for the key");
        key.n = SOFT_KEY_SIZE;

        size_t got = 0;
        while (got < SOFT_KEY_SIZE) {
                ssize_t n = read(fd, key.p + got, SOFT_KEY_SIZE - got);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return fail(err, -errno, "key-file", "cannot read %s: %m", path);
                if (n == 0)
                        return fail(err, -EBADMSG, "key-file", "software key file %s is shorter than %d bytes", path,
                                    SOFT_KEY_SIZE);
                got += (size_t) n;
        }

        *ret = key;
        key = (secure_buf) {};
        return 0;
}

static int soft_seal(const char *key_path, const void *secret, size_t len, uint8_t **ret_blob, size_t *ret_len,
                     seal_error *err) {
        _cleanup_(secure_buf_done) secure_buf key = {};
        _cleanup_(EVP_CIPHER_CTX_freep) EVP_CIPHER_CTX *ctx = NULL;
        _cleanup_free_ uint8_t *blob = NULL;
        uint8_t nonce[SOFT_NONCE_SIZE];
        size_t blob_len = 0;
        int n, r;

        ERR_clear_error();

        r = key_file_load(key_path, true, &key, err);
        if (r < 0)
                return r;

        /* A fresh random nonce per seal: with a long-lived key a repeated
         * nonce would be fatal for GCM, and 96 random bits make that
         * negligible for the number of seals one user will ever do. */
        if (RAND_bytes(nonce, sizeof(nonce)) != 1)
                return ossl_fail(err, -EIO, "encrypt", "cannot generate a nonce");

        r = blob_new(BLOB_KIND_SOFTWARE, nonce, sizeof(nonce), NULL, len + SOFT_TAG_SIZE, &blob, &blob_len, err);
        if (r < 0)
                return r;
        uint8_t *ct = blob + BLOB_HEADER_SIZE + SOFT_NONCE_SIZE;

        ctx = EVP_CIPHER_CTX_new();
        if (!ctx)
                return ossl_fail(err, -ENOMEM, "encrypt", "cannot allocate a cipher context");
        if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, SOFT_NONCE_SIZE, NULL) != 1 ||
            EVP_EncryptInit_ex(ctx, NULL, NULL, key.p, nonce) != 1)
                return ossl_fail(err, -EIO, "encrypt", "cannot set up AES-256-GCM");
        if (EVP_EncryptUpdate(ctx, NULL, &n, blob, BLOB_HEADER_SIZE) != 1)
                return ossl_fail(err, -EIO, "encrypt", "cannot authenticate the blob header");
        if (EVP_EncryptUpdate(ctx, ct, &n, secret, (int) len) != 1 || (size_t) n != len)
                return ossl_fail(err, -EIO, "encrypt", "cannot encrypt");
        if (EVP_EncryptFinal_ex(ctx, ct + len, &n) != 1 || n != 0)
                return ossl_fail(err, -EIO, "encrypt", "cannot finish encryption");
        if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, SOFT_TAG_SIZE, ct + len) != 1)
                return ossl_fail(err, -EIO, "encrypt", "cannot get the GCM tag");

        *ret_blob = TAKE_PTR(blob);
        *ret_len = blob_len;
        return 0;
}

static int soft_unseal(const char *key_path, const blob_view *v, uint8_t **ret_secret, size_t *ret_len,
                       seal_error *err) {
        _cleanup_(secure_buf_done) secure_buf key = {};
        _cleanup_(secure_buf_done) secure_buf out = {};
        _cleanup_(EVP_CIPHER_CTX_freep) EVP_CIPHER_CTX *ctx = NULL;
        int n, r;

        ERR_clear_error();

        if (v->a_len != SOFT_NONCE_SIZE)
                return fail(err, -EBADMSG, "blob", "software blob has a %zu-byte nonce, expected %d", v->a_len,
                            SOFT_NONCE_SIZE);
        if (v->b_len <= SOFT_TAG_SIZE || v->b_len > SOFT_TAG_SIZE + SEAL_SECRET_MAX)
                return fail(err, -EBADMSG, "blob", "software blob has an implausible ciphertext length %zu", v->b_len);
        if (!key_path)
                return fail(err, -ENOKEY, "key-file",
                            "the blob was sealed with the software key (no TPM at the time) but software keys are "
                            "not allowed here (AllowSoftwareKey=no)");

        size_t len = v->b_len - SOFT_TAG_SIZE;
        r = key_file_load(key_path, false, &key, err);
        if (r < 0)
                return r;

        out.p = secure_alloc(len);
        if (!out.p)
                return fail(err, -ENOMEM, "decrypt", "cannot allocate locked memory for the secret");
        out.n = len;

        ctx = EVP_CIPHER_CTX_new();
        if (!ctx)
                return ossl_fail(err, -ENOMEM, "decrypt", "cannot allocate a cipher context");
        if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, SOFT_NONCE_SIZE, NULL) != 1 ||
            EVP_DecryptInit_ex(ctx, NULL, NULL, key.p, v->a) != 1)
                return ossl_fail(err, -EIO, "decrypt", "cannot set up AES-256-GCM");
        if (EVP_DecryptUpdate(ctx, NULL, &n, v->header, BLOB_HEADER_SIZE) != 1 ||
            EVP_DecryptUpdate(ctx, out.p, &n, v->b, (int) len) != 1 || (size_t) n != len)
                return ossl_fail(err, -EIO, "decrypt", "cannot decrypt");
        /* The tag is const for us; OpenSSL's ctrl API takes a non-const pointer. */
        uint8_t tag[SOFT_TAG_SIZE];
        memcpy(tag, v->b + len, SOFT_TAG_SIZE);
        if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, SOFT_TAG_SIZE, tag) != 1)
                return ossl_fail(err, -EIO, "decrypt", "cannot set the GCM tag");
        if (EVP_DecryptFinal_ex(ctx, out.p + len, &n) != 1)
                return ossl_fail(err, -EBADMSG, "decrypt",
                                 "authentication failed: the blob was sealed with a different software key file, "
                                 "or it is corrupted");

        *ret_secret = TAKE_PTR(out.p);
        *ret_len = len;
        out.n = 0;
        return 0;
}

/* ---- API ---------------------------------------------------------------- */

int seal_secret(const char *tcti, bool allow_software, const char *software_key_path, const void *secret,
                size_t len, seal_kind *ret_kind, void **ret_blob, size_t *ret_blob_len, seal_error *err) {
        uint8_t *blob = NULL;
        size_t blob_len = 0;
        seal_error tpm_err = {};
        int r;

        if (!secret || !ret_blob || !ret_blob_len)
                return fail(err, -EINVAL, "args", "missing argument");
        if (len < 1 || len > SEAL_SECRET_MAX)
                return fail(err, -EINVAL, "args", "secret is %zu bytes; 1 to %d can be sealed", len, SEAL_SECRET_MAX);
        if (allow_software && (!software_key_path || !*software_key_path))
                return fail(err, -EINVAL, "args", "software keys allowed but no key file path given");

        r = tpm_seal(tcti, secret, len, &blob, &blob_len, &tpm_err);
        if (r == -ENODEV && allow_software) {
                r = soft_seal(software_key_path, secret, len, &blob, &blob_len, err);
                if (r < 0)
                        return r;
                if (ret_kind)
                        *ret_kind = SEAL_SOFTWARE;
        } else if (r < 0) {
                if (err)
                        *err = tpm_err;
                return r;
        } else if (ret_kind)
                *ret_kind = SEAL_TPM;

        *ret_blob = blob;
        *ret_blob_len = blob_len;
        return 0;
}

int unseal_secret(const char *tcti, const char *software_key_path, const void *blob, size_t blob_len,
                  uint8_t **ret_secret, size_t *ret_len, seal_error *err) {
        blob_view v = {};
        int r;

        if (!ret_secret || !ret_len)
                return fail(err, -EINVAL, "args", "missing argument");

        r = blob_parse(blob, blob_len, &v, err);
        if (r < 0)
                return r;

        if (v.kind == BLOB_KIND_TPM)
                return tpm_unseal(tcti, &v, ret_secret, ret_len, err);
        return soft_unseal(software_key_path, &v, ret_secret, ret_len, err);
}

int seal_probe(const char *tcti, seal_error *err) {
        _cleanup_(tpm_done) tpm t = TPM_INIT;

        return tpm_open(&t, tcti, err);
}
