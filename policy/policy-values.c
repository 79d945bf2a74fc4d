/* Value parsers for task files: booleans, durations, sizes, host:port, shell-like
 * word splitting and ~ expansion, plus the small strv helpers the parser needs.
 * Every parser is strict: trailing junk, overflow and empty input are errors. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <arpa/inet.h>

#include "fd.h"
#include "policy-internal.h"

int strv_push(char ***l, char *value) {
        size_t n = strv_length(*l);
        char **c;

        if (!value)
                return -ENOMEM;
        c = reallocarray(*l, n + 2, sizeof(char *));
        if (!c) {
                free(value);
                return -ENOMEM;
        }
        c[n] = value;
        c[n + 1] = NULL;
        *l = c;
        return 0;
}

int strv_extend_strv(char ***l, char **add) {
        for (char **i = add; i && *i; i++) {
                int r = strv_push(l, strdup(*i));
                if (r < 0)
                        return r;
        }
        return 0;
}

char **strv_copy(char *const *l) {
        char **c = calloc(strv_length(l) + 1, sizeof(char *));
        if (!c)
                return NULL;
        for (size_t i = 0; l && l[i]; i++) {
                c[i] = strdup(l[i]);
                if (!c[i]) {
                        strv_free(c);
                        return NULL;
                }
        }
        return c;
}

int strv_join(char *const *l, const char *sep, char **ret) {
        size_t n = 1, k = 0;
        char *s;

        for (size_t i = 0; l && l[i]; i++)
                n += strlen(l[i]) + strlen(sep);
        s = malloc(n);
        if (!s)
                return -ENOMEM;
        for (size_t i = 0; l && l[i]; i++) {
                if (i > 0)
                        k += (size_t) sprintf(s + k, "%s", sep);
                k += (size_t) sprintf(s + k, "%s", l[i]);
        }
        s[k] = 0;
        *ret = s;
        return 0;
}

void policy_host_done(policy_host *h) {
        if (!h)
                return;
        free(h->host);
        h->host = NULL;
}

int policy_error_set(policy_error *err, const char *file, unsigned line, const char *fmt, ...) {
        va_list ap;

        if (!err)
                return -EINVAL;
        memset(err, 0, sizeof(*err));
        snprintf(err->file, sizeof(err->file), "%s", file ? file : "");
        err->line = line;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof(err->message), fmt, ap);
        va_end(ap);
        return -EINVAL;
}

void policy_error_set_key(policy_error *err, const char *key) {
        if (err)
                snprintf(err->key, sizeof(err->key), "%s", key ? key : "");
}

bool policy_name_is_valid(const char *name) {
        size_t n;

        if (!name)
                return false;
        n = strlen(name);
        if (n < 1 || n > POLICY_NAME_MAX)
                return false;
        /* "." and ".." would be path components, never task names. */
        if (streq(name, ".") || streq(name, ".."))
                return false;
        for (const char *p = name; *p; p++)
                if (!isascii((unsigned char) *p) ||
                    !(isalnum((unsigned char) *p) || *p == '_' || *p == '.' || *p == '-'))
                        return false;
        return true;
}

int policy_parse_bool(const char *s, bool *ret) {
        static const char *const yes[] = { "yes", "true", "1", "on" }, *const no[] = { "no", "false", "0", "off" };

        if (!s)
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
                if (strcasecmp(s, yes[i]) == 0) {
                        *ret = true;
                        return 0;
                }
                if (strcasecmp(s, no[i]) == 0) {
                        *ret = false;
                        return 0;
                }
        }
        return -EINVAL;
}

/* A decimal unsigned number without sign, spaces or overflow; *end is set past it. */
static int parse_u64_prefix(const char *s, uint64_t *ret, const char **end) {
        uint64_t v = 0;
        const char *p = s;

        if (!isdigit((unsigned char) *p))
                return -EINVAL;
        for (; isdigit((unsigned char) *p); p++) {
                unsigned d = (unsigned) (*p - '0');
                if (v > (UINT64_MAX - d) / 10)
                        return -ERANGE;
                v = v * 10 + d;
        }
        *ret = v;
        *end = p;
        return 0;
}

static int mul_add(uint64_t *acc, uint64_t n, uint64_t unit) {
        if (n != 0 && unit > UINT64_MAX / n)
                return -ERANGE;
        if (*acc > UINT64_MAX - n * unit)
                return -ERANGE;
        *acc += n * unit;
        return 0;
}

int policy_parse_duration(const char *s, uint64_t *ret_usec) {
        static const struct {
                const char *suffix;
                uint64_t usec;
        } units[] = {
                /* longest first, so "min" is not read as "m" + junk and "ms" not as "m" */
                { "msec", 1000 }, { "ms", 1000 },
                { "usec", 1 }, { "us", 1 },
                { "seconds", USEC_PER_SEC }, { "second", USEC_PER_SEC }, { "sec", USEC_PER_SEC }, { "s", USEC_PER_SEC },
                { "minutes", USEC_PER_MINUTE }, { "minute", USEC_PER_MINUTE }, { "min", USEC_PER_MINUTE }, { "m", USEC_PER_MINUTE },
                { "hours", 60 * USEC_PER_MINUTE }, { "hour", 60 * USEC_PER_MINUTE }, { "hr", 60 * USEC_PER_MINUTE }, { "h", 60 * USEC_PER_MINUTE },
                { "days", 24 * 60 * USEC_PER_MINUTE }, { "day", 24 * 60 * USEC_PER_MINUTE }, { "d", 24 * 60 * USEC_PER_MINUTE },
        };
        uint64_t total = 0;
        const char *p = s;
        bool any = false;

        if (!s)
                return -EINVAL;
        for (;;) {
                uint64_t n, unit = USEC_PER_SEC;
                const char *e;
                int r;

                while (*p == ' ' || *p == '\t')
                        p++;
                if (!*p)
                        break;
                r = parse_u64_prefix(p, &n, &e);
                if (r < 0)
                        return r;
                p = e;
                while (*p == ' ' || *p == '\t')
                        p++;
                if (isalpha((unsigned char) *p)) {
                        size_t len = 0, i;

                        while (isalpha((unsigned char) p[len]))
                                len++;
                        for (i = 0; i < ELEMENTSOF(units); i++)
                                if (strlen(units[i].suffix) == len && strncmp(p, units[i].suffix, len) == 0)
                                        break;
                        if (i >= ELEMENTSOF(units))
                                return -EINVAL;
                        unit = units[i].usec;
                        p += len;
                }
                r = mul_add(&total, n, unit);
                if (r < 0)
                        return r;
                any = true;
        }
        if (!any)
                return -EINVAL;
        *ret_usec = total;
        return 0;
}

int policy_parse_size(const char *s, uint64_t *ret) {
        static const char suffixes[] = "KMGTPE";
        uint64_t n, mul = 1;
        const char *e;
        int r;

        if (!s)
                return -EINVAL;
        if (streq(s, "infinity")) {
                *ret = POLICY_INFINITY;
                return 0;
        }
        r = parse_u64_prefix(s, &n, &e);
        if (r < 0)
                return r;
        if (*e) {
                const char *k = strchr(suffixes, toupper((unsigned char) *e));
                if (!k || !*k)
                        return -EINVAL;
                for (const char *i = suffixes; i <= k; i++)
                        mul *= 1024;
                e++;
                /* accept "4G", "4GB" and "4GiB"; nothing else after the unit */
                if (*e == 'i' && e[1] == 'B')
                        e += 2;
                else if (*e == 'B')
                        e++;
                if (*e)
                        return -EINVAL;
        }
        if (n != 0 && mul > UINT64_MAX / n)
                return -ERANGE;
        /* UINT64_MAX means infinity; a number that large is surely a mistake */
        if (n * mul == POLICY_INFINITY)
                return -ERANGE;
        *ret = n * mul;
        return 0;
}

static bool hostname_is_valid(const char *h) {
        size_t n = strlen(h), label = 0;

        if (n == 0 || n > 253)
                return false;
        if (h[0] == '.' || h[n - 1] == '.' || h[0] == '-')
                return false;
        for (const char *p = h; *p; p++) {
                if (*p == '.') {
                        if (label == 0 || p[-1] == '-')
                                return false;
                        label = 0;
                        continue;
                }
                if (!(isalnum((unsigned char) *p) || *p == '-' || *p == '_') || !isascii((unsigned char) *p))
                        return false;
                if (label == 0 && *p == '-')
                        return false;
                if (++label > 63)
                        return false;
        }
        return true;
}

int policy_parse_host_port(const char *s, policy_host *ret) {
        _cleanup_free_ char *host = NULL;
        const char *colon, *port_str;
        bool wildcard = false, is_ip = false;
        uint64_t port;
        const char *e;

        if (!s || !*s)
                return -EINVAL;
        if (s[0] == '[') {
                const char *close = strchr(s, ']');
                struct in6_addr a6;

                if (!close || close[1] != ':')
                        return -EINVAL;
                host = strndup(s + 1, (size_t) (close - s - 1));
                if (!host)
                        return -ENOMEM;
                if (inet_pton(AF_INET6, host, &a6) != 1)
                        return -EINVAL;
                is_ip = true;
                port_str = close + 2;
        } else {
                struct in_addr a4;

                colon = strrchr(s, ':');
                if (!colon)
                        return -EINVAL;        /* a port is required */
                if (memchr(s, ':', (size_t) (colon - s)))
                        return -EINVAL;        /* bare IPv6 without brackets is ambiguous */
                host = strndup(s, (size_t) (colon - s));
                if (!host)
                        return -ENOMEM;
                port_str = colon + 1;
                if (strncmp(host, "*.", 2) == 0) {
                        wildcard = true;
                        memmove(host, host + 2, strlen(host + 2) + 1);
                }
                for (char *p = host; *p; p++)
                        *p = (char) tolower((unsigned char) *p);
                if (inet_pton(AF_INET, host, &a4) == 1)
                        is_ip = true;
                else if (!hostname_is_valid(host) || strchr(host, '*'))
                        return -EINVAL;
                /* "*.1.2.3.4" or "*.com" would be meaningless or far too broad */
                if (wildcard && (is_ip || !strchr(host, '.')))
                        return -EINVAL;
                /* all-numeric labels that are not a valid address (e.g. 1.2.3) are typos */
                if (!is_ip && strspn(host, "0123456789.") == strlen(host))
                        return -EINVAL;
        }
        if (parse_u64_prefix(port_str, &port, &e) < 0 || *e || port < 1 || port > 65535)
                return -EINVAL;

        *ret = (policy_host) {
                .host = TAKE_PTR(host),
                .port = (uint16_t) port,
                .wildcard = wildcard,
                .is_ip = is_ip,
        };
        return 0;
}

bool policy_host_match(const policy_host *h, const char *host, uint16_t port) {
        size_t hl, nl;

        if (!h || !host || h->port != port)
                return false;
        if (!h->wildcard)
                return strcasecmp(h->host, host) == 0;
        hl = strlen(h->host);
        nl = strlen(host);
        return nl > hl + 1 && host[nl - hl - 1] == '.' && strcasecmp(host + nl - hl, h->host) == 0;
}

int policy_split_words(const char *s, char ***ret) {
        _cleanup_strv_free_ char **l = NULL;
        _cleanup_free_ char *word = NULL;
        size_t n = 0;
        const char *p = s;

        if (!s)
                return -EINVAL;
        word = malloc(strlen(s) + 1);
        if (!word)
                return -ENOMEM;
        l = calloc(1, sizeof(char *));
        if (!l)
                return -ENOMEM;

        for (;;) {
                bool in_word = false;
                int r;

                while (*p == ' ' || *p == '\t')
                        p++;
                if (!*p)
                        break;
                n = 0;
                while (*p && !(*p == ' ' || *p == '\t')) {
                        in_word = true;
                        if (*p == '\'') {
                                const char *close = strchr(p + 1, '\'');
                                if (!close)
                                        return -EINVAL;
                                memcpy(word + n, p + 1, (size_t) (close - p - 1));
                                n += (size_t) (close - p - 1);
                                p = close + 1;
                        } else if (*p == '"') {
                                p++;
                                while (*p && *p != '"') {
                                        /* inside double quotes a backslash escapes only " \ and $ ` like sh */
                                        if (*p == '\\' && p[1] && strchr("\"\\$`", p[1]))
                                                p++;
                                        word[n++] = *p++;
                                }
                                if (*p != '"')
                                        return -EINVAL;
                                p++;
                        } else if (*p == '\\') {
                                if (!p[1])
                                        return -EINVAL;
                                word[n++] = p[1];
                                p += 2;
                        } else
                                word[n++] = *p++;
                }
                if (!in_word)
                        continue;
                r = strv_push(&l, strndup(word, n));
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(l);
        return 0;
}

/* Collapse "//", "/./" and trailing "/"; refuse ".." so a policy path means what it says. */
static int path_normalize(char *p) {
        char *w = p, *r = p;

        if (*r != '/')
                return -EINVAL;
        while (*r) {
                if (*r == '/') {
                        while (*r == '/')
                                r++;
                        if (r[0] == '.' && (r[1] == '/' || r[1] == 0)) {
                                r++;
                                continue;
                        }
                        if (r[0] == '.' && r[1] == '.' && (r[2] == '/' || r[2] == 0))
                                return -EINVAL;
                        *w++ = '/';
                        continue;
                }
                *w++ = *r++;
        }
        if (w > p + 1 && w[-1] == '/')
                w--;
        *w = 0;
        return 0;
}

int policy_expand_path(const char *s, const char *home, char **ret) {
        _cleanup_free_ char *p = NULL;
        int r;

        if (!s || !*s)
                return -EINVAL;
        if (s[0] == '~') {
                if (s[1] != 0 && s[1] != '/')
                        return -EINVAL;        /* ~user is not supported */
                if (!home || home[0] != '/')
                        return -EINVAL;
                if (asprintf(&p, "%s%s", home, s + 1) < 0)
                        return -ENOMEM;
        } else if (s[0] == '/') {
                p = strdup(s);
                if (!p)
                        return -ENOMEM;
        } else
                return -EINVAL;
        if (strlen(p) >= PATH_MAX)
                return -ENAMETOOLONG;
        r = path_normalize(p);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(p);
        return 0;
}

int policy_format_duration(uint64_t usec, char **ret) {
        static const struct {
                const char *suffix;
                uint64_t usec;
        } units[] = {
                { "d", 24 * 60 * USEC_PER_MINUTE }, { "h", 60 * USEC_PER_MINUTE }, { "min", USEC_PER_MINUTE },
                { "s", USEC_PER_SEC }, { "ms", 1000 }, { "us", 1 },
        };
        char buf[128];
        size_t k = 0;

        if (usec == 0)
                return (*ret = strdup("0")) ? 0 : -ENOMEM;
        for (size_t i = 0; i < ELEMENTSOF(units); i++) {
                if (usec < units[i].usec)
                        continue;
                k += (size_t) snprintf(buf + k, sizeof(buf) - k, "%s%" PRIu64 "%s", k ? " " : "",
                                       usec / units[i].usec, units[i].suffix);
                usec %= units[i].usec;
        }
        *ret = strdup(buf);
        return *ret ? 0 : -ENOMEM;
}

int policy_format_size(uint64_t bytes, char **ret) {
        static const char suffixes[] = "KMGTPE";
        int i;

        if (bytes == POLICY_INFINITY)
                return (*ret = strdup("infinity")) ? 0 : -ENOMEM;
        for (i = 5; i >= 0; i--) {
                uint64_t unit = UINT64_C(1) << (10 * (i + 1));
                if (bytes >= unit && bytes % unit == 0)
                        return asprintf(ret, "%" PRIu64 "%c", bytes / unit, suffixes[i]) < 0 ? -ENOMEM : 0;
        }
        return asprintf(ret, "%" PRIu64, bytes) < 0 ? -ENOMEM : 0;
}

int policy_quote(const char *s, char **ret) {
        size_t n = 2;
        char *q, *w;

        for (const char *p = s; *p; p++)
                n += (*p == '"' || *p == '\\' || *p == '$' || *p == '`') ? 2 : 1;
        q = malloc(n + 1);
        if (!q)
                return -ENOMEM;
        w = q;
        *w++ = '"';
        for (const char *p = s; *p; p++) {
                if (*p == '"' || *p == '\\' || *p == '$' || *p == '`')
                        *w++ = '\\';
                *w++ = *p;
        }
        *w++ = '"';
        *w = 0;
        *ret = q;
        return 0;
}

/* Decode one UTF-8 sequence; returns its length or 0 if invalid. */
static size_t utf8_len(const unsigned char *p, size_t left) {
        unsigned c = p[0];
        size_t n;
        uint32_t cp;

        if (c < 0x80)
                return 1;
        if ((c & 0xe0) == 0xc0)
                n = 2, cp = c & 0x1f;
        else if ((c & 0xf0) == 0xe0)
                n = 3, cp = c & 0x0f;
        else if ((c & 0xf8) == 0xf0)
                n = 4, cp = c & 0x07;
        else
                return 0;
        if (n > left)
                return 0;
        for (size_t i = 1; i < n; i++) {
                if ((p[i] & 0xc0) != 0x80)
                        return 0;
                cp = (cp << 6) | (p[i] & 0x3f);
        }
        /* overlong forms, surrogates and beyond U+10FFFF */
        if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
            (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
                return 0;
        return n;
}

/* Refuse what inih would misread or silently truncate: NUL bytes, control
 * characters, invalid UTF-8 and over-long lines. */
int policy_check_text(const char *buf, size_t len, unsigned *ret_line, const char **ret_why) {
        unsigned line = 1;
        size_t col = 0;

        for (size_t i = 0; i < len;) {
                unsigned char c = (unsigned char) buf[i];
                size_t n;

                if (c == '\n') {
                        line++;
                        col = 0;
                        i++;
                        continue;
                }
                if (c == 0 || (c < 0x20 && c != '\t' && c != '\r') || c == 0x7f) {
                        *ret_line = line;
                        *ret_why = c == 0 ? "NUL byte in file (binary data?)" : "control character in file (binary data?)";
                        return -EINVAL;
                }
                n = utf8_len((const unsigned char *) buf + i, len - i);
                if (n == 0) {
                        *ret_line = line;
                        *ret_why = "invalid UTF-8 (binary data?)";
                        return -EINVAL;
                }
                col += n;
                if (col > POLICY_LINE_MAX) {
                        *ret_line = line;
                        *ret_why = "line longer than 4096 bytes";
                        return -EINVAL;
                }
                i += n;
        }
        return 0;
}

int policy_read_file(const char *path, size_t max, char **ret, size_t *ret_len) {
        _cleanup_close_ int fd = -1;
        _cleanup_free_ char *buf = NULL;
        struct stat st;
        ssize_t k;
        size_t n;

        /* O_NONBLOCK so a FIFO planted in a tasks directory cannot hang the daemon */
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (S_ISDIR(st.st_mode))
                return -EISDIR;
        if (!S_ISREG(st.st_mode))
                return -EBADFD;
        if ((uint64_t) st.st_size > max)
                return -EFBIG;
        buf = malloc(max + 1);
        if (!buf)
                return -ENOMEM;
        /* the size may change under us: read until EOF, never beyond max */
        k = fd_read_full(fd, buf, max + 1);
        if (k < 0)
                return (int) k;
        n = (size_t) k;
        if (n > max)
                return -EFBIG;
        buf[n] = 0;
        *ret = TAKE_PTR(buf);
        *ret_len = n;
        return 0;
}
