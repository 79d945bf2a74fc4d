/* A growing byte buffer for data that may hold secrets (Vault responses with
 * tokens): realloc() would leave the old copy behind in freed memory, so it
 * grows by malloc + copy + wipe + free, and it is wiped before it is freed. */
#pragma once

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"

/* Tests define SECBUF_FREE to look at what is freed. */
#ifndef SECBUF_FREE
#define SECBUF_FREE free
#endif

typedef struct secbuf {
        char *data;     /* NUL-terminated when non-NULL */
        size_t len, cap;
} secbuf;

static inline void secbuf_wipe_free(secbuf *b) {
        if (b->data) {
                explicit_zero(b->data, b->cap);
                SECBUF_FREE(b->data);
        }
        b->data = NULL;
        b->len = b->cap = 0;
}

/* Appends n bytes, keeping a NUL after them; -EFBIG past max bytes, -ENOMEM. */
static inline int secbuf_append(secbuf *b, const void *p, size_t n, size_t max) {
        /* No object is larger than PTRDIFF_MAX: a larger n is always too big
         * (and saying so lets the compiler see the copy below is bounded). */
        if (n > max || n > (size_t) PTRDIFF_MAX / 2 || b->len > max - n)
                return -EFBIG;
        if (b->len + n + 1 > b->cap) {
                size_t cap = b->cap ? b->cap : 256;
                while (cap < b->len + n + 1)
                        cap *= 2;
                char *nd = malloc(cap);
                if (!nd)
                        return -ENOMEM;
                if (b->data) {
                        memcpy(nd, b->data, b->len);
                        explicit_zero(b->data, b->cap);
                        SECBUF_FREE(b->data);
                }
                b->data = nd;
                b->cap = cap;
        }
        memcpy(b->data + b->len, p, n);
        b->len += n;
        b->data[b->len] = 0;
        return 0;
}
