/* The spec's writer, used by the daemon (and the spec unit test): entries in
 * the format helper/spec.c reads, keys from spec.def. Libc only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spec.h"

static void append(SpecWriter *w, const char *data, size_t n) {
        if (w->oom)
                return;
        if (w->len + n > w->cap) {
                size_t ncap = (w->cap + n) * 2;
                char *b = realloc(w->buf, ncap);
                if (!b) {
                        w->oom = true;
                        return;
                }
                w->buf = b;
                w->cap = ncap;
        }
        memcpy(w->buf + w->len, data, n);
        w->len += n;
}

void spec_write_str(SpecWriter *w, SpecKey key, const char *value) {
        const char *name = spec_key_names[key];
        append(w, name, strlen(name));
        append(w, "=", 1);
        append(w, value, strlen(value) + 1);
}

void spec_write_u64(SpecWriter *w, SpecKey key, uint64_t value) {
        char buf[32];
        snprintf(buf, sizeof(buf), "%llu", (unsigned long long) value);
        spec_write_str(w, key, buf);
}

void spec_write_bool(SpecWriter *w, SpecKey key, bool value) {
        spec_write_str(w, key, value ? "1" : "0");
}

void spec_write_mode(SpecWriter *w, SpecKey key, workspace_mode value) {
        const char *s = workspace_mode_to_string(value);
        if (!s) {
                w->oom = true; /* a bug of the caller's: fail the spawn rather than write a default */
                return;
        }
        spec_write_str(w, key, s);
}

void spec_write_umask(SpecWriter *w, SpecKey key, unsigned value) {
        char buf[16];
        snprintf(buf, sizeof(buf), "%03o", value & 0777);
        spec_write_str(w, key, buf);
}

void spec_write_entries(SpecWriter *w, const char *entries, size_t len) {
        append(w, entries, len);
}
