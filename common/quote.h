/* File names as git prints them with core.quotePath=true: a name holding a
 * control character, DEL, a byte >= 0x80, '"' or '\' is printed in double
 * quotes with C escapes (\n, \t, \", \\ ...) and three-digit octal for any
 * other such byte; every other name is printed unchanged. A name chosen by a
 * sandbox can then neither forge an output line nor move the terminal's
 * cursor. Header-only; includes nothing of agentd's. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>

static inline bool quote_byte_needs_escape(unsigned char c) {
        return c < 0x20 || c == 0x7f || c >= 0x80 || c == '"' || c == '\\';
}

/* The quoted form of the n bytes at s (NUL-terminated, malloc'd), or NULL when out of memory. */
static inline char *quote_path_n(const char *s, size_t n) {
        bool need = false;
        for (size_t i = 0; i < n && !need; i++)
                need = quote_byte_needs_escape((unsigned char) s[i]);
        char *out = malloc(need ? 4 * n + 3 : n + 1), *o = out;
        if (!out)
                return NULL;
        if (need)
                *o++ = '"';
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char) s[i];
                if (!need || !quote_byte_needs_escape(c)) {
                        *o++ = (char) c;
                        continue;
                }
                static const char esc_from[] = "\a\b\t\n\v\f\r\"\\", esc_to[] = "abtnvfr\"\\";
                const char *e = c ? __builtin_strchr(esc_from, c) : NULL;
                *o++ = '\\';
                if (e)
                        *o++ = esc_to[e - esc_from];
                else {
                        *o++ = (char) ('0' + ((c >> 6) & 7));
                        *o++ = (char) ('0' + ((c >> 3) & 7));
                        *o++ = (char) ('0' + (c & 7));
                }
        }
        if (need)
                *o++ = '"';
        *o = 0;
        return out;
}

static inline char *quote_path(const char *s) {
        return quote_path_n(s, __builtin_strlen(s));
}
