/* Sealing of broker secrets (the Vault AppRole secret_id and friends) to this
 * machine: with a TPM 2.0 through ESAPI, or, only when the configuration allows
 * it ([TPM] AllowSoftwareKey=yes), with AES-256-GCM under a 0600 key file.
 *
 * Every function here blocks (TPM round trips, file I/O): the daemon calls them
 * from uv_queue_work, never from the loop thread. They keep no global state and
 * open their own TPM connection per call, so concurrent calls are safe; there is
 * no resource manager assumed, every transient object and session is flushed on
 * every path. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Largest secret we seal. A TPM sealed data object holds MAX_SYM_DATA (128). */
#define SEAL_SECRET_MAX 128

/* Human-readable failure report, written only when a function fails.
 * `step` names what was being done ("tpm", "create-primary", "load", "unseal",
 * "blob", "key-file", "decrypt", ...), `message` why, in words for the
 * operator (TSS2/OpenSSL decoded text included). */
typedef struct seal_error {
        char step[64];
        char message[512];
} seal_error;

typedef enum {
        SEAL_TPM,
        SEAL_SOFTWARE,
} seal_kind;

/* Seals `secret` (1..SEAL_SECRET_MAX bytes) and returns an opaque blob, malloc'd,
 * to store on disk (it embeds kind, version and the TPM public/private parts or
 * the software nonce+ciphertext; it never contains the secret in clear).
 *
 * `tcti` NULL or "" means the contract default "device:/dev/tpmrm0". When the
 * TPM cannot be reached (TCTI does not initialise, nothing answers) this fails
 * with -ENODEV and step "tpm", unless `allow_software`, in which case the
 * secret is sealed with the key file at `software_key_path` (created 0600 if
 * missing) and *ret_kind is SEAL_SOFTWARE. A TPM that answers but fails is an
 * error, never a reason to fall back.
 *
 * Errors: -EINVAL (bad arguments), -ENODEV (no TPM), -EPERM (key file unsafe),
 * -EACCES (TPM owner authorization set), -EBUSY (TPM in lockout), -EAGAIN
 * (TPM busy/self-testing), -ENOMEM, -EIO (anything else). */
int seal_secret(const char *tcti, bool allow_software, const char *software_key_path,
                const void *secret, size_t len,
                seal_kind *ret_kind, void **ret_blob, size_t *ret_blob_len, seal_error *err);

/* Unseals a blob made by seal_secret. The kind comes from the blob: a TPM blob
 * uses `tcti`, a software blob uses `software_key_path` (NULL: refused with
 * -ENOKEY, so a daemon without AllowSoftwareKey passes NULL). The key file is
 * never created here. *ret_secret comes from secure_alloc(*ret_len); release it
 * with secure_free(*ret_secret, *ret_len).
 *
 * Errors as seal_secret, plus -EBADMSG for a truncated/garbage blob and for a
 * blob this TPM or key cannot open (sealed by a different TPM, owner hierarchy
 * cleared, other key file, tampered bytes: authenticated encryption cannot tell
 * these apart, the message says which check failed), -EPROTONOSUPPORT for a
 * blob of a future version, -ENOKEY for a missing key file. */
int unseal_secret(const char *tcti, const char *software_key_path, const void *blob, size_t blob_len,
                  uint8_t **ret_secret, size_t *ret_len, seal_error *err);

/* 0 if a TPM answers on that TCTI (TPM2_GetCapability), -ENODEV otherwise. */
int seal_probe(const char *tcti, seal_error *err);

/* Memory for secrets: its own anonymous mapping, mlock'd (best effort: an
 * unprivileged RLIMIT_MEMLOCK may refuse, and a secret we cannot lock is still
 * better served than refused), MADV_DONTDUMP and MADV_WIPEONFORK (so neither a
 * core dump nor a forked sandbox helper sees it), zeroed on free. NULL on
 * failure with errno set. secure_free(NULL, n) is a no-op. */
void *secure_alloc(size_t n);
void secure_free(void *p, size_t n);

/* The result buffer of unseal_secret; the name the daemon's code uses. */
static inline uint8_t *seal_secret_buffer_new(size_t n) {
        return secure_alloc(n);
}
