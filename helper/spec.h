/* The spec codec shared by the daemon (writer) and the helper (reader): the
 * keys (spec.def), the names both ends agree on, and the writer. Libc only:
 * the daemon links spec-write.c, the helper spec.c. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/un.h>

#include "workspace-mode.h"

#define SPEC_MAX (1024 * 1024)

/* sizeof(sun_path): a socket path the spec names must fit (with its NUL). */
#define SPEC_SUN_PATH_MAX (sizeof(((struct sockaddr_un *) 0)->sun_path))

/* Where the helper shows what the spec names, inside the sandbox. */
#define SANDBOX_RUN_DIR "/run/agentd"
#define SANDBOX_BROKER_PATH SANDBOX_RUN_DIR "/broker.sock"      /* broker_socket= */
#define SANDBOX_AGENTCTL_DIR SANDBOX_RUN_DIR "/bin"
#define SANDBOX_AGENTCTL_PATH SANDBOX_AGENTCTL_DIR "/agentctl"  /* agentctl= */

/* The helper's fixed fds (the zygote and posix_spawn put them there). */
#define SPEC_FD_SPEC 3
#define SPEC_FD_STATUS 4
#define SPEC_FD_SECCOMP 5   /* or /dev/null with unsafe_no_seccomp=1 */
#define SPEC_FD_CGROUP 6    /* only with a cgroup */

typedef enum SpecKey {
#define SPEC_KEY(name, kind, member) SPEC_KEY_##name,
#include "spec.def"
#undef SPEC_KEY
        _SPEC_KEY_MAX,
} SpecKey;

typedef enum SpecKind {
        SPEC_KIND_LIST,
        SPEC_KIND_ENV,
        SPEC_KIND_PATHS,
        SPEC_KIND_LOWERS,
        SPEC_KIND_PATH,
        SPEC_KIND_SOCKET,
        SPEC_KIND_PORT,
        SPEC_KIND_U64,
        SPEC_KIND_MODE,
        SPEC_KIND_HOSTNAME,
        SPEC_KIND_BOOL,
        SPEC_KIND_UMASK,
        SPEC_KIND_FD,
} SpecKind;

static const char *const spec_key_names[_SPEC_KEY_MAX] = {
#define SPEC_KEY(name, kind, member) [SPEC_KEY_##name] = #name,
#include "spec.def"
#undef SPEC_KEY
};

static const SpecKind spec_key_kinds[_SPEC_KEY_MAX] = {
#define SPEC_KEY(name, kind, member) [SPEC_KEY_##name] = SPEC_KIND_##kind,
#include "spec.def"
#undef SPEC_KEY
};

static inline bool spec_kind_repeats(SpecKind k) {
        return k == SPEC_KIND_LIST || k == SPEC_KIND_ENV || k == SPEC_KIND_PATHS || k == SPEC_KIND_LOWERS;
}

/* ---- the writer (spec-write.c) ----------------------------------------------- */

/* A growing buffer of entries; `oom` sticks once an allocation failed (check it
 * once at the end). Zero-initialise; free(buf) when done. */
typedef struct SpecWriter {
        char *buf;
        size_t len, cap;
        bool oom;
} SpecWriter;

void spec_write_str(SpecWriter *w, SpecKey key, const char *value);
void spec_write_u64(SpecWriter *w, SpecKey key, uint64_t value);
void spec_write_bool(SpecWriter *w, SpecKey key, bool value);
void spec_write_mode(SpecWriter *w, SpecKey key, workspace_mode value);
void spec_write_umask(SpecWriter *w, SpecKey key, unsigned value);
/* Entries written by another writer (e.g. a plan prepared ahead of time). */
void spec_write_entries(SpecWriter *w, const char *entries, size_t len);

/* The C type each kind is written from, and one typed writer per key:
 * spec_put_<name>(w, value). */
#define SPEC_CTYPE_LIST const char *
#define SPEC_CTYPE_ENV const char *
#define SPEC_CTYPE_PATHS const char *
#define SPEC_CTYPE_LOWERS const char *
#define SPEC_CTYPE_PATH const char *
#define SPEC_CTYPE_SOCKET const char *
#define SPEC_CTYPE_PORT unsigned
#define SPEC_CTYPE_U64 uint64_t
#define SPEC_CTYPE_MODE workspace_mode
#define SPEC_CTYPE_HOSTNAME const char *
#define SPEC_CTYPE_BOOL bool
#define SPEC_CTYPE_UMASK unsigned
#define SPEC_CTYPE_FD int
#define SPEC_WRITE_LIST spec_write_str
#define SPEC_WRITE_ENV spec_write_str
#define SPEC_WRITE_PATHS spec_write_str
#define SPEC_WRITE_LOWERS spec_write_str
#define SPEC_WRITE_PATH spec_write_str
#define SPEC_WRITE_SOCKET spec_write_str
#define SPEC_WRITE_PORT spec_write_u64
#define SPEC_WRITE_U64 spec_write_u64
#define SPEC_WRITE_MODE spec_write_mode
#define SPEC_WRITE_HOSTNAME spec_write_str
#define SPEC_WRITE_BOOL spec_write_bool
#define SPEC_WRITE_UMASK spec_write_umask
#define SPEC_WRITE_FD spec_write_u64

#define SPEC_KEY(name, kind, member)                                                    \
        static inline void spec_put_##name(SpecWriter *w, SPEC_CTYPE_##kind value) {    \
                SPEC_WRITE_##kind(w, SPEC_KEY_##name, value);                           \
        }
#include "spec.def"
#undef SPEC_KEY
