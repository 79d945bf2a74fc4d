/* The egress proxy (see netproxy.h). One listening Unix socket per sandbox, on
 * which the sandbox's bridge hands over each TCP connection it accepted inside
 * the sandbox (one byte + the socket, SCM_RIGHTS). Each connection reads a
 * bounded request head, is decided against that sandbox's Allow= list,
 * resolved (off the loop thread), checked address by address, connected to the
 * checked address, and then relayed byte for byte through one buffer per
 * direction.
 *
 * Two relay paths. The default copies through one buffer per direction: 256
 * KiB to start with, 1 MiB (from a bounded pool) once the direction proves to
 * be bulk (see RELAY_BUF_BIG). The other splices (socket -> pipe -> socket, no copy through
 * user space) with the pipe enlarged to 1 MiB (F_SETPIPE_SZ); it is on with
 * AGENTD_NETPROXY_SPLICE=1 in the environment, and falls back to copying
 * when a pipe cannot be made. Measured on the 2-vCPU VM (BENCHMARKS.md §6),
 * splice was no faster for 100 MB through CONNECT (0.82-1.03x of copying)
 * and not faster for many small connections (two extra fds and pipe set-up per
 * direction), so copying stays the default; a machine with spare cores may
 * differ: bench/bench-egress.py measures both side by side (and BENCHMARKS.md
 * §11 the CPU each path costs: splice saves agentd its two copies, but the
 * receiver then pays more than that). Why not libuv streams: they read 64 KiB
 * at a time and queue writes; a read as large as the buffer, written out at
 * once, is what keeps the syscalls and the TCP work per byte low.
 *
 * All sockets are driven with uv_poll and plain non-blocking syscalls
 * (MSG_DONTWAIT).
 *
 * Memory: a connection owns up to four handles (timer, handoff socket, client
 * socket, upstream socket) and possibly an outstanding getaddrinfo; it is freed
 * when the last of those is gone, never earlier, so a callback can always look
 * at its connection. A sandbox is freed when its listener, its accept timer
 * and all its connections are gone, the proxy when all sandboxes are (after
 * netproxy_free()). */
#include "netproxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "macro.h"
#include "socket.h"

/* The proxy's lists (sandboxes, a sandbox's connections) are doubly linked
 * through prev/next, with a head pointer. */
#define LIST_PREPEND(head, x)                        \
        do {                                         \
                (x)->prev = NULL;                    \
                (x)->next = (head);                  \
                if (head)                            \
                        (head)->prev = (x);          \
                (head) = (x);                        \
        } while (0)
#define LIST_UNLINK(head, x)                         \
        do {                                         \
                if ((x)->prev)                       \
                        (x)->prev->next = (x)->next; \
                else                                 \
                        (head) = (x)->next;          \
                if ((x)->next)                       \
                        (x)->next->prev = (x)->prev; \
                (x)->prev = (x)->next = NULL;        \
        } while (0)

/* The whole head (request line + headers) plus whatever arrived after it in
 * the same reads must fit here: a proxy request head is a few hundred bytes. */
#define HEAD_MAX (16U * 1024U)
/* Per direction, the most that is read before it is written out again.
 * Backpressure is this buffer: a side is not read while the buffer holds
 * bytes the other side does not take, so a connection holds at most two of
 * them (plus the kernel's socket buffers).
 *
 * A direction starts with RELAY_BUF. Once one read fills it, the direction
 * is a bulk one and gets a big buffer from the proxy's pool: measured
 * (BENCHMARKS.md §11), 1 MiB reads and writes cost agentd ~25-30% less CPU
 * per MB than 256 KiB ones on loopback (fewer window updates and pushes, not
 * just fewer syscalls). At most RELAY_BIG_MAX big buffers exist at once;
 * beyond that a bulk direction keeps RELAY_BUF. */
#define RELAY_BUF (256U * 1024U)
#define RELAY_BUF_BIG (1024U * 1024U)
#define RELAY_BIG_MAX 32U
/* Freed big buffers kept for the next bulk direction (no mmap/munmap per tunnel). */
#define RELAY_BIG_KEEP 4U
/* The splice path's pipe per direction: its capacity plays the buffer's role. */
#define RELAY_PIPE (1024U * 1024U)
/* What netproxy_set_relay_size() and AGENTD_NETPROXY_BUF / _PIPE accept. */
#define RELAY_SIZE_MIN (4U * 1024U)
#define RELAY_SIZE_MAX (16U * 1024U * 1024U)
/* Fairness: at most this many bytes per direction and wake-up (at least one
 * buffer-full); a busy connection then waits for the next loop iteration like
 * everybody else. */
#define RELAY_WAKE_BYTES (1024U * 1024U)
#define DEFAULT_HEADER_TIMEOUT_MS UINT64_C(10000)
/* Resolution plus TCP connect; a SYN to a black hole would otherwise take minutes. */
#define CONNECT_TIMEOUT_MS UINT64_C(30000)
/* A final response (400/403/502...) is small; a peer that does not take it
 * within this time is dropped. */
#define RESPONSE_TIMEOUT_MS UINT64_C(5000)
#define DEFAULT_MAX_CONNECTIONS 256U
/* A held connection outlives its approval's timeout by at most this. */
#define HOLD_GRACE_MS UINT64_C(5000)
/* accept() ran out of fds or memory: the listener stays readable, so stop
 * polling it for a while instead of spinning. */
#define ACCEPT_BACKOFF_MS UINT64_C(100)
/* Connections accepted per wake-up of a listener. */
#define ACCEPT_BATCH 16U
#define METHOD_MAX 32U
#define HOST_MAX 253U
/* The "Allowed: ..." list in a 403 body is a hint, not a dump. */
#define ALLOWED_LIST_MAX 2048U

typedef struct np_sandbox np_sandbox;
typedef struct np_conn np_conn;

typedef struct np_override {
        char *name;
        char *ip;                    /* NULL: the lookup fails */
        struct np_override *next;
} np_override;

struct netproxy {
        uv_loop_t *loop;
        netproxy_event_cb cb;
        void *userdata;
        netproxy_hold_cb hold_cb;
        void *hold_userdata;
        uint64_t next_conn_id;

        np_sandbox *sandboxes;       /* active ones (not yet removed) */
        unsigned n_live;             /* sandboxes not yet freed, removed ones included */
        np_override *overrides;

        uint64_t header_timeout_ms;
        unsigned max_connections;
        bool splice;                 /* relay with splice(2) (AGENTD_NETPROXY_SPLICE=1) */
        size_t relay_big;            /* a bulk direction's buffer (RELAY_BUF_BIG) */
        void *big_free[RELAY_BIG_KEEP];   /* kept big buffers, relay_big bytes each */
        unsigned n_big_free, n_big_out;   /* kept; handed out to directions */
        unsigned big_max;                 /* at most this many out at once (RELAY_BIG_MAX) */
        size_t relay_pipe;           /* the splice path's pipe size per direction (RELAY_PIPE) */
        netproxy_relay_stats stats;

        bool freeing;
        void (*done)(void *userdata);
        void *done_userdata;
};

struct np_sandbox {
        netproxy *proxy;
        np_sandbox *prev, *next;     /* in proxy->sandboxes while active */
        char *id, *task, *socket_path;
        policy_host *allow;
        size_t n_allow;
        uint64_t ask_timeout_ms;     /* > 0: Network.Ask=yes, hold what Allow= does not name */

        uv_poll_t listener;
        int listen_fd;
        uv_timer_t accept_timer;     /* accept backoff */
        bool removed;
        unsigned refs;               /* the listener, the accept timer and each connection */
        np_conn *conns;              /* connections not yet closing */
        unsigned n_conns;            /* connections not yet freed */
};

typedef enum conn_state {
        CONN_HANDOFF,                /* waiting for the bridge to pass the client socket */
        CONN_HEAD,                   /* reading the request head */
        CONN_HELD,                   /* outside Allow=, waiting for a human's answer */
        CONN_RESOLVING,
        CONN_CONNECTING,
        CONN_RELAY,
        CONN_RESPONDING,             /* writing a final error response */
        CONN_CLOSED,
} conn_state;

/* What a relay direction waits for before it can go on. */
typedef enum dir_wait {
        WAIT_NOTHING,                /* finished */
        WAIT_SOURCE,                 /* readable source (the buffer is empty) */
        WAIT_SINK,                   /* writable sink (the buffer or the prefix holds data) */
} dir_wait;

/* One direction of a relayed connection. */
typedef struct np_dir {
        char *buf;                   /* cap bytes */
        size_t cap;                  /* the buffer's size, or the pipe's capacity */
        bool big;                    /* buf is one of the proxy's big buffers */
        netproxy *proxy;
        size_t off, len;             /* buf[off..len) is read and not yet written */
        char *prefix;                /* sent before anything from the buffer */
        size_t prefix_len, prefix_off;
        bool prefix_counted;         /* the prefix counts toward *count */
        bool eof;                    /* the source has ended */
        bool shut;                   /* ... and the sink has been shut down for writing */
        dir_wait wait;
        uint64_t *count;             /* bytes the sink took */
        bool spliced;                /* relays through pipe[] (else through buf) */
        int pipe[2];
        size_t in_pipe;              /* bytes read into the pipe, not yet written out */
        netproxy_relay_stats *stats;
} np_dir;

struct np_conn {
        np_sandbox *sb;
        np_conn *prev, *next;
        uint64_t id;                 /* for netproxy_release() */
        conn_state state;
        bool over_limit;             /* accepted beyond max_connections: answered 503 */

        uv_timer_t timer;
        uv_poll_t handoff, client, upstream;
        int handoff_fd, client_fd, upstream_fd;   /* -1 until there; closed with their handle */
        bool handoff_open, client_open, upstream_open;
        int client_events, upstream_events;       /* what each is polled for */
        uv_getaddrinfo_t gai;
        unsigned n_pending;          /* open handles + an outstanding getaddrinfo */
        bool gai_pending;

        char *head;                  /* HEAD_MAX bytes while reading the head */
        size_t head_len;

        char method[METHOD_MAX];
        bool is_connect;
        char *host;
        uint16_t port;
        int host_family;             /* AF_INET/AF_INET6 for an IP literal, else AF_UNSPEC */
        union {
                struct in_addr v4;
                struct in6_addr v6;
        } host_ip;
        const policy_host *rule;     /* the Allow= entry that matched, or &approved */
        policy_host approved;        /* what a human approved: exactly host:port (host borrowed) */

        char *forward;               /* sent upstream first once connected */
        size_t forward_len;

        char *response;              /* a final response being written */
        size_t response_len, response_off;

        char address[INET6_ADDRSTRLEN];
        bool allowed;                /* ALLOWED emitted: CLOSED owed */
        np_dir up, down;             /* client -> upstream, upstream -> client */
        uint64_t bytes_up, bytes_down;
};

static void conn_close(np_conn *c);
static void conn_respond(np_conn *c, const char *status, const char *extra_headers, const char *body);
static void on_timer(uv_timer_t *t);
static void conn_proceed(np_conn *c);
static void conn_hold(np_conn *c);

static void *memdup(const void *p, size_t n) {
        void *q = malloc(n);
        return q ? memcpy(q, p, n) : NULL;
}

static void *mfree(void *p) {
        free(p);
        return NULL;
}

/* ---- address checks ---- */

static const char *class_v4(uint32_t a) {
        if (a == 0)
                return "an unspecified address";
        if ((a >> 24) == 0)
                return "a reserved address";               /* 0/8 "this network" */
        if ((a >> 24) == 127)
                return "a loopback address";
        if ((a >> 24) == 10 || (a >> 20) == 0xac1 || (a >> 16) == 0xc0a8)
                return "a private address";                /* 10/8 172.16/12 192.168/16 */
        if ((a >> 16) == 0xa9fe)
                return "a link-local address";             /* 169.254/16, cloud metadata */
        if ((a >> 22) == (100U << 2 | 1U))
                return "a shared (CGNAT) address";         /* 100.64/10 */
        if (a == UINT32_C(0xffffffff))
                return "a broadcast address";
        if ((a >> 28) == 0xe)
                return "a multicast address";
        if ((a >> 28) == 0xf)
                return "a reserved address";               /* 240/4 */
        /* 192.0.0/24 (protocol assignments: DS-Lite, NAT64 discovery) and
         * 198.18/15 (benchmarking) are used inside networks, never on the Internet. */
        if ((a >> 8) == 0xc00000 || (a >> 17) == (0xc612 >> 1))
                return "a reserved address";
        return NULL;
}

static uint32_t v4_at(const uint8_t *b) {
        return (uint32_t) b[0] << 24 | (uint32_t) b[1] << 16 | (uint32_t) b[2] << 8 | b[3];
}

const char *netproxy_address_class(const struct sockaddr *sa) {
        if (!sa)
                return "an unknown address";
        if (sa->sa_family == AF_INET)
                return class_v4(ntohl(((const struct sockaddr_in *) sa)->sin_addr.s_addr));
        if (sa->sa_family != AF_INET6)
                return "an unknown address";

        const struct in6_addr *a = &((const struct sockaddr_in6 *) sa)->sin6_addr;
        const uint8_t *b = a->s6_addr;
        static const uint8_t nat64[12] = { 0x00, 0x64, 0xff, 0x9b };

        if (IN6_IS_ADDR_UNSPECIFIED(a))
                return "an unspecified address";
        if (IN6_IS_ADDR_LOOPBACK(a))
                return "a loopback address";
        /* Forms that carry an IPv4 address reach that IPv4 address (the kernel
         * for mapped ones, a translator for the others): judge that one. */
        if (IN6_IS_ADDR_V4MAPPED(a) || IN6_IS_ADDR_V4COMPAT(a) || memcmp(b, nat64, sizeof(nat64)) == 0)
                return class_v4(v4_at(b + 12));
        if (b[0] == 0x20 && b[1] == 0x02)                  /* 6to4 2002::/16 */
                return class_v4(v4_at(b + 2));
        if (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && b[4] == 0x00 && b[5] == 0x01)
                return "a private address";                /* 64:ff9b:1::/48, local-use NAT64 */
        if ((b[0] & 0xfe) == 0xfc)
                return "a private address";                /* fc00::/7 ULA */
        if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
                return "a link-local address";             /* fe80::/10 */
        if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0)
                return "a private address";                /* fec0::/10, old site-local */
        if (b[0] == 0xff)
                return "a multicast address";
        if (b[0] == 0x01 && b[1] == 0x00 && memcmp(b + 2, (const uint8_t[6]) {}, 6) == 0)
                return "a reserved address";               /* 100::/64 discard-only */
        return NULL;
}

/* The IPv4 address an IPv4-mapped IPv6 address stands for, so that
 * ::ffff:192.168.1.5 is recognised as this host's 192.168.1.5. */
static bool sockaddr_v4(const struct sockaddr *sa, struct in_addr *ret) {
        if (sa->sa_family == AF_INET) {
                *ret = ((const struct sockaddr_in *) sa)->sin_addr;
                return true;
        }
        if (sa->sa_family == AF_INET6) {
                const struct in6_addr *a = &((const struct sockaddr_in6 *) sa)->sin6_addr;
                if (IN6_IS_ADDR_V4MAPPED(a)) {
                        memcpy(&ret->s_addr, a->s6_addr + 12, 4);
                        return true;
                }
        }
        return false;
}

static bool address_is_host_owned(const struct ifaddrs *ifs, const struct sockaddr *sa) {
        struct in_addr v4, iv4;
        bool is_v4 = sockaddr_v4(sa, &v4);

        for (const struct ifaddrs *i = ifs; i; i = i->ifa_next) {
                if (!i->ifa_addr)
                        continue;
                if (is_v4) {
                        if (sockaddr_v4(i->ifa_addr, &iv4) && iv4.s_addr == v4.s_addr)
                                return true;
                } else if (sa->sa_family == AF_INET6 && i->ifa_addr->sa_family == AF_INET6 &&
                           memcmp(&((const struct sockaddr_in6 *) i->ifa_addr)->sin6_addr,
                                  &((const struct sockaddr_in6 *) sa)->sin6_addr, sizeof(struct in6_addr)) == 0)
                        return true;
        }
        return false;
}

static void sockaddr_to_string(const struct sockaddr *sa, char *buf, size_t size) {
        const void *a = sa->sa_family == AF_INET ? (const void *) &((const struct sockaddr_in *) sa)->sin_addr
                                                 : (const void *) &((const struct sockaddr_in6 *) sa)->sin6_addr;
        if (!inet_ntop(sa->sa_family, a, buf, (socklen_t) size))
                snprintf(buf, size, "?");
}

/* ---- request parsing ---- */

static bool is_tchar(char ch) {
        return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
               (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* Splits host[:port] or [v6][:port] into the host (without brackets) and
 * the port text (NULL when there is none). */
static int split_authority(const char *s, size_t n, const char **ret_host, size_t *ret_host_len,
                           const char **ret_port, const char **why) {
        if (s[0] == '[') {
                const char *close = memchr(s, ']', n);
                if (!close) {
                        *why = "unterminated IPv6 literal";
                        return -EINVAL;
                }
                *ret_host = s + 1;
                *ret_host_len = (size_t) (close - s - 1);
                *ret_port = NULL;
                if (close + 1 < s + n) {
                        if (close[1] != ':') {
                                *why = "bad authority";
                                return -EINVAL;
                        }
                        *ret_port = close + 2;
                }
        } else {
                const char *colon = memchr(s, ':', n);
                *ret_host = s;
                *ret_host_len = colon ? (size_t) (colon - s) : n;
                *ret_port = colon ? colon + 1 : NULL;
        }
        return 0;
}

/* The port text port_start..end: 1-65535 in at most five digits. */
static int parse_port(const char *port_start, const char *end, unsigned long *ret_port, const char **why) {
        size_t plen = (size_t) (end - port_start);
        unsigned long port;

        if (plen == 0 || plen > 5 || strspn(port_start, "0123456789") < plen) {
                *why = "bad port";
                return -EINVAL;
        }
        port = strtoul(port_start, NULL, 10);
        if (port < 1 || port > 65535) {
                *why = "bad port";
                return -EINVAL;
        }
        *ret_port = port;
        return 0;
}

/* Dot-separated labels of 1-63 characters from [a-z0-9_-]. */
static int check_host_name(const char *host, const char **why) {
        const char *label = host;

        for (const char *p = host;; p++) {
                if (*p == '.' || *p == '\0') {
                        if (p == label || p - label > 63) {
                                *why = "bad host name";
                                return -EINVAL;
                        }
                        if (*p == '\0')
                                return 0;
                        label = p + 1;
                } else if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_')) {
                        *why = "bad host name";
                        return -EINVAL;
                }
        }
}

/* Sets c->host_family and c->host_ip from the lowercased host: an IPv6
 * literal (bracketed), a dotted IPv4 address, or a host name. */
static int classify_host(np_conn *c, const char *host, bool bracketed, const char **why) {
        struct in_addr aton;

        c->host_family = AF_UNSPEC;
        if (bracketed) {
                if (inet_pton(AF_INET6, host, &c->host_ip.v6) != 1) {
                        *why = "bad IPv6 literal";
                        return -EINVAL;
                }
                c->host_family = AF_INET6;
        } else if (inet_pton(AF_INET, host, &c->host_ip.v4) == 1)
                c->host_family = AF_INET;
        else if (inet_aton(host, &aton) != 0) {
                *why = "ambiguous numeric host";
                return -EINVAL;
        } else
                return check_host_name(host, why);
        return 0;
}

/* host[:port] or [v6][:port]. Lowercases, strips one trailing dot, and refuses
 * anything a resolver could read differently from us: numeric forms inet_aton
 * takes but inet_pton does not ("0x7f.1", "2130706433"), userinfo, zone ids. */
static int parse_authority(np_conn *c, const char *s, size_t n, bool port_required, const char **why) {
        _cleanup_free_ char *host = NULL;
        const char *host_start, *port_start;
        size_t host_len;
        unsigned long port = 80;
        int r;

        if (n == 0) {
                *why = "missing host";
                return -EINVAL;
        }
        if (memchr(s, '@', n)) {
                *why = "userinfo in the authority";
                return -EINVAL;
        }
        r = split_authority(s, n, &host_start, &host_len, &port_start, why);
        if (r < 0)
                return r;
        if (port_start) {
                r = parse_port(port_start, s + n, &port, why);
                if (r < 0)
                        return r;
        } else if (port_required) {
                *why = "missing port";
                return -EINVAL;
        }

        if (host_len > 0 && host_start[host_len - 1] == '.' && s[0] != '[')
                host_len--;
        if (host_len == 0 || host_len > HOST_MAX) {
                *why = "missing or overlong host";
                return -EINVAL;
        }
        host = strndup(host_start, host_len);
        if (!host)
                return -ENOMEM;
        for (char *p = host; *p; p++)
                if (*p >= 'A' && *p <= 'Z')
                        *p = (char) (*p - 'A' + 'a');

        r = classify_host(c, host, s[0] == '[', why);
        if (r < 0)
                return r;
        c->host = TAKE_PTR(host);
        c->port = (uint16_t) port;
        return 0;
}

static bool header_is_dropped(const char *line, size_t name_len) {
        /* Hop-by-hop headers and the proxy's own: Proxy-Authorization must never
         * reach the origin, Host is replaced by the URI's authority (so the
         * origin sees the host that was checked), Connection by "close". */
        static const char *const dropped[] = { "host", "connection", "keep-alive", "te", "trailer", "upgrade" };

        if (name_len >= 6 && strncasecmp(line, "proxy-", 6) == 0)
                return true;
        for (size_t i = 0; i < ELEMENTSOF(dropped); i++)
                if (strlen(dropped[i]) == name_len && strncasecmp(line, dropped[i], name_len) == 0)
                        return true;
        return false;
}

/* Appends to a growing buffer; the result always fits in what was reserved. */
static void append(char *buf, size_t *len, const char *s, size_t n) {
        memcpy(buf + *len, s, n);
        *len += n;
}

/* The request line, split: "METHOD TARGET VERSION\r\n". */
typedef struct request_line {
        const char *line_end; /* at its CRLF */
        const char *target, *version;
        size_t method_len, target_len, version_len;
} request_line;

/* Checks the request line of head and copies its method to c->method. */
static int parse_request_line(np_conn *c, const char *head, size_t head_end, request_line *rl, const char **why) {
        const char *sp1, *sp2;

        rl->line_end = memmem(head, head_end, "\r\n", 2);
        sp1 = memchr(head, ' ', (size_t) (rl->line_end - head));
        if (!sp1) {
                *why = "malformed request line";
                return -EINVAL;
        }
        sp2 = memchr(sp1 + 1, ' ', (size_t) (rl->line_end - sp1 - 1));
        if (!sp2) {
                *why = "malformed request line";
                return -EINVAL;
        }
        rl->method_len = (size_t) (sp1 - head);
        if (rl->method_len == 0 || rl->method_len >= METHOD_MAX) {
                *why = "malformed request line";
                return -EINVAL;
        }
        for (size_t i = 0; i < rl->method_len; i++)
                if (!is_tchar(head[i])) {
                        *why = "malformed request line";
                        return -EINVAL;
                }
        memcpy(c->method, head, rl->method_len);
        c->method[rl->method_len] = '\0';

        rl->target = sp1 + 1;
        rl->target_len = (size_t) (sp2 - rl->target);
        rl->version = sp2 + 1;
        rl->version_len = (size_t) (rl->line_end - rl->version);
        if (rl->target_len == 0 || !(rl->version_len == 8 && (memcmp(rl->version, "HTTP/1.1", 8) == 0 ||
                                                               memcmp(rl->version, "HTTP/1.0", 8) == 0))) {
                *why = "malformed request line";
                return -EINVAL;
        }
        for (size_t i = 0; i < rl->target_len; i++)
                if (rl->target[i] <= ' ' || rl->target[i] >= 0x7f) {
                        *why = "malformed request target";
                        return -EINVAL;
                }
        return 0;
}

/* Every header line in [l, end) (end at the final CRLF) must be "name: value"
 * with no bare CR/LF and no obs-fold: anything we and the origin could split
 * differently is a request-smuggling vector. */
static int check_header_lines(const char *l, const char *end, const char **why) {
        while (l < end) {
                const char *le = memmem(l, (size_t) (end + 2 - l), "\r\n", 2);
                const char *colon = memchr(l, ':', (size_t) (le - l));
                if (!colon || colon == l || memchr(l, '\r', (size_t) (le - l)) || memchr(l, '\n', (size_t) (le - l))) {
                        *why = "malformed header";
                        return -EINVAL;
                }
                for (const char *p = l; p < colon; p++)
                        if (!is_tchar(*p)) {
                                *why = "malformed header";
                                return -EINVAL;
                        }
                l = le + 2;
        }
        return 0;
}

/* CONNECT host:port; bytes sent right behind the head go into the tunnel. */
static int parse_connect(np_conn *c, const request_line *rl, size_t head_end, const char **why) {
        size_t leftover = c->head_len - head_end;
        int r;

        c->is_connect = true;
        r = parse_authority(c, rl->target, rl->target_len, true, why);
        if (r < 0)
                return r;
        /* Bytes sent right behind the CONNECT head (a TLS ClientHello sent
         * eagerly) belong to the tunnel. */
        if (leftover > 0) {
                c->forward = memdup(c->head + head_end, leftover);
                if (!c->forward)
                        return -ENOMEM;
                c->forward_len = leftover;
        }
        return 0;
}

/* The head sent to the origin for an absolute-URI request: origin-form
 * target, Host from the URI, the client's headers less the dropped ones,
 * "Connection: close", then whatever body bytes came with the head. */
static int build_forward_head(np_conn *c, const request_line *rl, const char *path, const char *path_end,
                              size_t head_end) {
        const char *end = c->head + head_end - 2; /* at the final CRLF */
        size_t leftover = c->head_len - head_end;
        /* The new head is never longer than the old one plus the lines we add. */
        size_t cap = head_end + leftover + strlen(c->host) + 64;
        _cleanup_free_ char *f = malloc(cap);
        size_t n = 0;
        char hostline[HOST_MAX + 32];
        int k;

        if (!f)
                return -ENOMEM;
        append(f, &n, c->method, rl->method_len);
        append(f, &n, " ", 1);
        if (path == path_end || *path != '/')
                append(f, &n, "/", 1);
        append(f, &n, path, (size_t) (path_end - path));
        append(f, &n, " ", 1);
        append(f, &n, rl->version, rl->version_len);
        append(f, &n, "\r\n", 2);
        k = snprintf(hostline, sizeof(hostline), "Host: %s%s%s", c->host_family == AF_INET6 ? "[" : "", c->host,
                     c->host_family == AF_INET6 ? "]" : "");
        append(f, &n, hostline, (size_t) k);
        if (c->port != 80) {
                k = snprintf(hostline, sizeof(hostline), ":%u", (unsigned) c->port);
                append(f, &n, hostline, (size_t) k);
        }
        append(f, &n, "\r\n", 2);
        for (const char *l = rl->line_end + 2; l < end;) {
                const char *le = memmem(l, (size_t) (end + 2 - l), "\r\n", 2);
                const char *colon = memchr(l, ':', (size_t) (le - l));
                if (!header_is_dropped(l, (size_t) (colon - l)))
                        append(f, &n, l, (size_t) (le + 2 - l));
                l = le + 2;
        }
        append(f, &n, "Connection: close\r\n\r\n", 21);
        append(f, &n, c->head + head_end, leftover);

        c->forward = TAKE_PTR(f);
        c->forward_len = n;
        return 0;
}

/* Parses the head in c->head[0..head_end) and prepares c->forward. Returns 0,
 * -EINVAL with *why set (answered 400), or -ENOMEM. */
static int parse_request(np_conn *c, size_t head_end, const char **why) {
        const char *head = c->head, *end = c->head + head_end - 2; /* at the final CRLF */
        request_line rl;
        int r;

        if (memchr(head, '\0', head_end)) {
                *why = "NUL byte in request head";
                return -EINVAL;
        }
        r = parse_request_line(c, head, head_end, &rl, why);
        if (r < 0)
                return r;
        r = check_header_lines(rl.line_end + 2, end, why);
        if (r < 0)
                return r;
        if (streq(c->method, "CONNECT"))
                return parse_connect(c, &rl, head_end, why);

        /* Absolute-URI form. https:// would need TLS here: clients use CONNECT. */
        if (rl.target_len < 7 || strncasecmp(rl.target, "http://", 7) != 0) {
                *why = rl.target[0] == '/' ? "origin-form request: this is a proxy, send an absolute URI or CONNECT"
                                           : "unsupported request target (only http:// URIs and CONNECT)";
                return -EINVAL;
        }
        const char *auth = rl.target + 7, *tend = rl.target + rl.target_len;
        const char *auth_end = auth;
        while (auth_end < tend && !strchr("/?#", *auth_end))
                auth_end++;
        r = parse_authority(c, auth, (size_t) (auth_end - auth), false, why);
        if (r < 0)
                return r;
        const char *path = auth_end, *path_end = memchr(path, '#', (size_t) (tend - path));
        if (!path_end)
                path_end = tend;
        return build_forward_head(c, &rl, path, path_end, head_end);
}

/* ---- allow list ---- */

static const policy_host *find_rule(const np_sandbox *sb, const np_conn *c) {
        for (size_t i = 0; i < sb->n_allow; i++) {
                const policy_host *h = &sb->allow[i];

                if (h->port != c->port)
                        continue;
                if (c->host_family != AF_UNSPEC) {
                        /* Compare addresses, not spellings: [::1] and [0:0::1] are one. */
                        union {
                                struct in_addr v4;
                                struct in6_addr v6;
                        } a;
                        if (!h->is_ip || inet_pton(c->host_family, h->host, &a) != 1)
                                continue;
                        if (memcmp(&a, &c->host_ip, c->host_family == AF_INET ? sizeof(a.v4) : sizeof(a.v6)) == 0)
                                return h;
                } else if (!h->is_ip && policy_host_match(h, c->host, c->port))
                        return h;
        }
        return NULL;
}

static void format_allowed(const np_sandbox *sb, char *buf, size_t size) {
        size_t n = 0;

        buf[0] = '\0';
        if (sb->n_allow == 0) {
                snprintf(buf, size, "(nothing)");
                return;
        }
        for (size_t i = 0; i < sb->n_allow; i++) {
                const policy_host *h = &sb->allow[i];
                bool v6 = h->is_ip && strchr(h->host, ':');
                int k = snprintf(buf + n, size - n, "%s%s%s%s%s:%u", i > 0 ? ", " : "", h->wildcard ? "*." : "",
                                 v6 ? "[" : "", h->host, v6 ? "]" : "", (unsigned) h->port);
                if (k < 0 || (size_t) k >= size - n) {
                        /* Cut at the last whole entry. */
                        buf[n] = '\0';
                        snprintf(buf + n, size - n, ", ...");
                        return;
                }
                n += (size_t) k;
        }
}

/* ---- events and lifetime ---- */

static void emit(np_conn *c, netproxy_event_kind kind, const char *reason) {
        netproxy *p = c->sb->proxy;
        netproxy_event ev = {
                .kind = kind,
                .sandbox_id = c->sb->id,
                .task = c->sb->task,
                .host = c->host,
                .port = c->port,
                .address = kind == NETPROXY_DENIED || !c->address[0] ? NULL : c->address,
                .reason = reason,
                .method = c->method,
                .bytes_up = c->bytes_up,
                .bytes_down = c->bytes_down,
        };

        if (p->cb)
                p->cb(&ev, p->userdata);
}

static void proxy_finalize(netproxy *p) {
        void (*done)(void *) = p->done;
        void *ud = p->done_userdata;

        while (p->n_big_free > 0)
                free(p->big_free[--p->n_big_free]);

        for (np_override *o = p->overrides, *next; o; o = next) {
                next = o->next;
                free(o->name);
                free(o->ip);
                free(o);
        }
        free(p);
        if (done)
                done(ud);
}

/* What a sandbox entry owns, and the entry. */
static void sandbox_free(np_sandbox *sb) {
        for (size_t i = 0; i < sb->n_allow; i++)
                free(sb->allow[i].host);
        free(sb->allow);
        free(sb->id);
        free(sb->task);
        free(sb->socket_path);
        free(sb);
}

static void sandbox_unref(np_sandbox *sb) {
        netproxy *p = sb->proxy;

        if (--sb->refs > 0)
                return;
        sandbox_free(sb);
        if (--p->n_live == 0 && p->freeing)
                proxy_finalize(p);
}

/* A big buffer of cap bytes back to the pool (kept for the next bulk
 * direction if it still has the size the pool hands out, else freed). */
static void big_put(netproxy *p, void *buf, size_t cap) {
        p->n_big_out--;
        if (p->n_big_free < RELAY_BIG_KEEP && cap == p->relay_big)
                p->big_free[p->n_big_free++] = buf;
        else
                free(buf);
}

static void *big_get(netproxy *p) {
        void *buf;

        if (p->n_big_out >= p->big_max)
                return NULL;
        buf = p->n_big_free > 0 ? p->big_free[--p->n_big_free] : malloc(p->relay_big);
        if (buf)
                p->n_big_out++;
        return buf;
}

static void dir_free(np_dir *d) {
        if (d->big)
                big_put(d->proxy, TAKE_PTR(d->buf), d->cap);
        d->big = false;
        d->buf = mfree(d->buf);
        d->prefix = mfree(d->prefix);
        if (d->spliced) {
                safe_close(d->pipe[0]);
                safe_close(d->pipe[1]);
                d->spliced = false;
        }
}

static void conn_release(np_conn *c) {
        np_sandbox *sb = c->sb;

        if (--c->n_pending > 0)
                return;
        /* CLOSED is emitted here, after every handle is gone; the counts were
         * final when conn_close() ran (every transfer is a synchronous syscall). */
        if (c->allowed)
                emit(c, NETPROXY_CLOSED, NULL);
        dir_free(&c->up);
        dir_free(&c->down);
        free(c->head);
        free(c->host);
        free(c->forward);
        free(c->response);
        free(c);
        sb->n_conns--;
        sandbox_unref(sb);
}

/* uv_close() on a poll handle leaves the fd open: it is closed here, once
 * libuv no longer watches it. */
static void poll_closed(np_conn *c, int *fd) {
        *fd = safe_close(*fd);
        conn_release(c);
}

static void on_handoff_closed(uv_handle_t *h) {
        np_conn *c = container_of((uv_poll_t *) h, np_conn, handoff);
        poll_closed(c, &c->handoff_fd);
}

static void on_client_closed(uv_handle_t *h) {
        np_conn *c = container_of((uv_poll_t *) h, np_conn, client);
        poll_closed(c, &c->client_fd);
}

static void on_upstream_closed(uv_handle_t *h) {
        np_conn *c = container_of((uv_poll_t *) h, np_conn, upstream);
        poll_closed(c, &c->upstream_fd);
}

static void on_timer_closed(uv_handle_t *h) {
        conn_release(container_of((uv_timer_t *) h, np_conn, timer));
}

/* Closes a poll handle of c once; its close callback closes the fd. */
static void poll_close(uv_poll_t *h, bool *open, uv_close_cb cb) {
        if (!*open)
                return;
        *open = false;
        uv_close((uv_handle_t *) h, cb);
}

static void close_handoff(np_conn *c) {
        poll_close(&c->handoff, &c->handoff_open, on_handoff_closed);
}

static void conn_close(np_conn *c) {
        np_sandbox *sb = c->sb;

        if (c->state == CONN_CLOSED)
                return;
        c->state = CONN_CLOSED;
        LIST_UNLINK(sb->conns, c);

        /* Whatever is still buffered was never taken by its sink: dropped,
         * and not counted. */
        dir_free(&c->up);
        dir_free(&c->down);
        close_handoff(c);
        poll_close(&c->client, &c->client_open, on_client_closed);
        poll_close(&c->upstream, &c->upstream_open, on_upstream_closed);
        uv_close((uv_handle_t *) &c->timer, on_timer_closed);
        if (c->gai_pending)
                (void) uv_cancel((uv_req_t *) &c->gai);   /* if it already runs, its callback comes later */
}

/* Polls h for `events` (0: not at all), touching libuv only on a change. */
static int poll_set(uv_poll_t *h, int *current, int events, uv_poll_cb cb) {
        int r;

        if (events == *current)
                return 0;
        r = events ? uv_poll_start(h, events, cb) : uv_poll_stop(h);
        if (r < 0)
                return r;
        *current = events;
        return 0;
}

static void on_client_poll(uv_poll_t *h, int status, int events);
static void on_upstream_poll(uv_poll_t *h, int status, int events);

static int poll_client(np_conn *c, int events) {
        return poll_set(&c->client, &c->client_events, events, on_client_poll);
}

static int poll_upstream(np_conn *c, int events) {
        return c->upstream_open ? poll_set(&c->upstream, &c->upstream_events, events, on_upstream_poll) : 0;
}

/* ---- final responses ---- */

/* 1: all written, 0: the rest when the client is writable, <0: failed. */
static int response_flush(np_conn *c) {
        while (c->response_off < c->response_len) {
                ssize_t n = send(c->client_fd, c->response + c->response_off, c->response_len - c->response_off,
                                 MSG_DONTWAIT | MSG_NOSIGNAL);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return errno == EAGAIN ? 0 : -errno;
                }
                c->response_off += (size_t) n;
        }
        return 1;
}

static void response_continue(np_conn *c) {
        int r = response_flush(c);

        /* Written (or the client is gone): the response is in the kernel,
         * closing now delivers it, then EOF. */
        if (r != 0 || poll_client(c, UV_WRITABLE) < 0)
                conn_close(c);
}

static void conn_respond(np_conn *c, const char *status, const char *extra_headers, const char *body) {
        int n;

        if (c->state == CONN_CLOSED || c->state == CONN_RESPONDING)
                return;
        if (!c->client_open) {
                conn_close(c);
                return;
        }
        c->state = CONN_RESPONDING;
        /* Nothing more is read from the client, nothing is waited for upstream. */
        if (poll_client(c, 0) < 0 || poll_upstream(c, 0) < 0) {
                conn_close(c);
                return;
        }
        (void) uv_timer_start(&c->timer, on_timer, RESPONSE_TIMEOUT_MS, 0);

        n = asprintf(&c->response,
                     "HTTP/1.1 %s\r\n"
                     "Content-Type: text/plain; charset=utf-8\r\n"
                     "Content-Length: %zu\r\n"
                     "Connection: close\r\n"
                     "%s"
                     "\r\n"
                     "%s",
                     status, strlen(body), extra_headers ?: "", body);
        if (n < 0) {
                c->response = NULL;
                conn_close(c);
                return;
        }
        c->response_len = (size_t) n;
        response_continue(c);
}

/* ---- relaying ---- */

/* Moves what it can from src to dst: the prefix, then buffer-fulls read from
 * src and written to dst, until one side would block, the source ends or the
 * round budget is spent. Sets d->wait. Returns <0 if a side failed. */
/* The half-close, once everything before it was passed on. */
static int dir_finish(np_dir *d, int dst) {
        if (shutdown(dst, SHUT_WR) < 0)
                return -errno;
        d->shut = true;
        d->wait = WAIT_NOTHING;
        return 0;
}

/* When the sink has taken everything: 1 to read the source again; else
 * what the pump returns (the direction is finished at EOF, and after
 * RELAY_WAKE_BYTES read in this wake-up it waits: level-triggered, a still
 * readable source wakes us right away). */
static int dir_next_round(np_dir *d, int dst, size_t moved) {
        if (d->eof)
                return dir_finish(d, dst);
        if (moved >= RELAY_WAKE_BYTES) {
                d->wait = WAIT_SOURCE;
                return 0;
        }
        return 1;
}

/* The result n of one read of the source: 1 with data or EOF (d->eof),
 * 0 when it has nothing now (d->wait = WAIT_SOURCE), -EINTR to try again, or
 * another -errno. */
static int dir_source_read(np_dir *d, ssize_t n) {
        if (n < 0) {
                if (errno != EAGAIN)
                        return -errno; /* -EINTR included: the caller tries again */
                d->wait = WAIT_SOURCE;
                return 0;
        }
        if (n == 0)
                d->eof = true;
        return 1;
}

/* Back-pressure's evidence: the most one direction ever held (read from its
 * source and not yet taken by its sink). */
static void held_mark(np_dir *d, size_t held) {
        if (held > d->stats->max_held)
                d->stats->max_held = held;
}

/* A write to the sink failed (errno): -EINTR (try again), 0 when the sink is
 * full (d->wait = WAIT_SINK: backpressure, src is not read until the sink
 * takes what is held), else -errno. */
static inline int dir_sink_failed(np_dir *d) {
        if (errno == EINTR)
                return -EINTR;
        if (errno != EAGAIN)
                return -errno;
        d->wait = WAIT_SINK;
        return 0;
}

/* dir_pump() for a spliced direction: src -> pipe -> dst, in the kernel. */
static int dir_pump_splice(np_dir *d, int src, int dst) {
        ssize_t n;
        int r;

        for (size_t moved = 0;;) {
                while (d->in_pipe > 0) {
                        n = splice(d->pipe[0], NULL, dst, NULL, d->in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
                        if (n < 0) {
                                r = dir_sink_failed(d);
                                if (r == -EINTR)
                                        continue;
                                return r;
                        }
                        if (n == 0)
                                return -EIO;
                        d->in_pipe -= (size_t) n;
                        *d->count += (uint64_t) n;
                        d->stats->spliced_bytes += (uint64_t) n;
                }
                r = dir_next_round(d, dst, moved);
                if (r <= 0)
                        return r;
                /* The pipe is empty here: if nothing comes, it is the source that has nothing. */
                n = splice(src, NULL, d->pipe[1], NULL, d->cap, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
                r = dir_source_read(d, n);
                if (r == -EINTR)
                        continue;
                if (r <= 0)
                        return r;
                d->in_pipe = (size_t) n;
                moved += (size_t) n;
                held_mark(d, d->in_pipe);
        }
}

/* Sends buf[*off..len) to dst without blocking, adding what went to *sent:
 * 1 when all of it has gone, 0 when the sink is full (d->wait = WAIT_SINK:
 * backpressure, src is not read until the sink takes this), or -errno. */
static int dir_send(np_dir *d, int dst, const char *buf, size_t *off, size_t len, uint64_t *sent) {
        while (*off < len) {
                ssize_t n = send(dst, buf + *off, len - *off, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (n < 0) {
                        int r = dir_sink_failed(d);
                        if (r == -EINTR)
                                continue;
                        return r;
                }
                *off += (size_t) n;
                *sent += (uint64_t) n;
        }
        return 1;
}

/* The last read filled the (now empty) buffer: a bulk direction. It gets a
 * big buffer if the pool has one to give; else it keeps the one it has. */
static void dir_grow(np_dir *d) {
        netproxy *p = d->proxy;
        void *buf;

        if (d->big || d->cap >= p->relay_big)
                return;
        buf = big_get(p);
        if (!buf)
                return;
        free(d->buf);
        d->buf = buf;
        d->cap = p->relay_big;
        d->big = true;
        d->len = d->off = 0;
        p->stats.grown_dirs++;
}

static int dir_pump(np_dir *d, int src, int dst) {
        uint64_t sent = 0;
        ssize_t n;
        int r;

        if (d->shut) {
                d->wait = WAIT_NOTHING;
                return 0;
        }
        r = dir_send(d, dst, d->prefix, &d->prefix_off, d->prefix_len, &sent);
        if (d->prefix_counted)
                *d->count += sent;
        if (r <= 0)
                return r;
        if (d->spliced)
                return dir_pump_splice(d, src, dst);

        for (size_t moved = 0;;) {
                sent = 0;
                r = dir_send(d, dst, d->buf, &d->off, d->len, &sent);
                *d->count += sent;
                d->stats->copied_bytes += sent;
                if (r <= 0)
                        return r;
                r = dir_next_round(d, dst, moved);
                if (r <= 0)
                        return r;
                if (d->len == d->cap)
                        dir_grow(d);
                n = recv(src, d->buf, d->cap, MSG_DONTWAIT);
                r = dir_source_read(d, n);
                if (r == -EINTR)
                        continue;
                if (r <= 0)
                        return r;
                d->off = 0;
                d->len = (size_t) n;
                moved += (size_t) n;
                held_mark(d, d->len);
        }
}

static void relay(np_conn *c, bool pump_up, bool pump_down) {
        int r = 0;

        if (c->state != CONN_RELAY)
                return;
        if (pump_up)
                r = dir_pump(&c->up, c->client_fd, c->upstream_fd);
        if (r >= 0 && pump_down)
                r = dir_pump(&c->down, c->upstream_fd, c->client_fd);
        if (r < 0 || (c->up.shut && c->down.shut)) {
                /* A side failed, or both directions have ended and been passed on. */
                conn_close(c);
                return;
        }
        if (poll_client(c, (c->up.wait == WAIT_SOURCE ? UV_READABLE : 0) |
                                   (c->down.wait == WAIT_SINK ? UV_WRITABLE : 0)) < 0 ||
            poll_upstream(c, (c->down.wait == WAIT_SOURCE ? UV_READABLE : 0) |
                                     (c->up.wait == WAIT_SINK ? UV_WRITABLE : 0)) < 0)
                conn_close(c);
}

static int dir_init(np_dir *d, netproxy *p, uint64_t *count, const char *prefix, size_t prefix_len, bool counted) {
        d->count = count;
        d->stats = &p->stats;
        d->proxy = p;
        if (p->splice && pipe2(d->pipe, O_NONBLOCK | O_CLOEXEC) == 0) {
                /* Best effort: a pipe at the default size still works, just in smaller steps. */
                int sz = fcntl(d->pipe[1], F_SETPIPE_SZ, (int) p->relay_pipe);
                if (sz < 0)
                        sz = fcntl(d->pipe[1], F_GETPIPE_SZ);
                d->cap = sz > 0 ? (size_t) sz : 65536U;
                d->spliced = true;
                p->stats.spliced_dirs++;
        } else {
                d->cap = MIN((size_t) RELAY_BUF, p->relay_big);
                d->buf = malloc(d->cap);
                if (!d->buf)
                        return -ENOMEM;
                p->stats.copied_dirs++;
        }
        if (prefix_len > 0) {
                d->prefix = memdup(prefix, prefix_len);
                if (!d->prefix)
                        return -ENOMEM;
                d->prefix_len = prefix_len;
                d->prefix_counted = counted;
        }
        return 0;
}

/* The upstream connect finished (either way). */
static void upstream_connected(np_conn *c, int error) {
        static const char established[] = "HTTP/1.1 200 Connection established\r\n\r\n";
        char body[512];

        if (error != 0) {
                snprintf(body, sizeof(body), "agentd: cannot connect to %s:%u (%s): %s\n", c->host, (unsigned) c->port,
                         c->address, uv_strerror(-error));
                conn_respond(c, "502 Bad Gateway", NULL, body);
                return;
        }
        (void) uv_timer_stop(&c->timer);
        c->state = CONN_RELAY;

        /* The answer to CONNECT goes before anything from the upstream; the
         * rewritten head (or what followed CONNECT's) before anything from the client. */
        if (dir_init(&c->up, c->sb->proxy, &c->bytes_up, c->forward, c->forward_len, true) < 0 ||
            dir_init(&c->down, c->sb->proxy, &c->bytes_down, established, c->is_connect ? sizeof(established) - 1 : 0, false) < 0) {
                conn_close(c);
                return;
        }
        c->forward = mfree(c->forward);
        c->forward_len = 0;
        relay(c, true, true);
}

static void on_upstream_poll(uv_poll_t *h, int status, int events) {
        np_conn *c = container_of(h, np_conn, upstream);

        if (status < 0)
                c->upstream_events = 0;   /* libuv stopped the handle */
        if (c->state == CONN_CONNECTING) {
                int error = 0;
                socklen_t len = sizeof(error);

                if (getsockopt(c->upstream_fd, SOL_SOCKET, SO_ERROR, &error, &len) < 0)
                        error = errno;
                else if (error == 0 && status < 0)
                        error = ECONNREFUSED;
                (void) poll_upstream(c, 0);
                upstream_connected(c, error);
                return;
        }
        if (c->state != CONN_RELAY)
                return;
        if (status < 0) {
                conn_close(c);
                return;
        }
        relay(c, events & UV_WRITABLE, events & UV_READABLE);
}

/* Connects to the checked address; the result arrives in on_upstream_poll(). */
static int upstream_connect(np_conn *c, const struct sockaddr *sa) {
        socklen_t len = sa->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
        _cleanup_close_ int fd = -1;
        int r;

        fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, sa, len) < 0 && errno != EINPROGRESS)
                return -errno;
        r = uv_poll_init(c->sb->proxy->loop, &c->upstream, fd);
        if (r < 0)
                return r;
        c->upstream_fd = TAKE_FD(fd);
        c->upstream_open = true;
        c->n_pending++;
        /* Writable once connected or failed; SO_ERROR then says which. */
        return poll_upstream(c, UV_WRITABLE);
}
/* ---- deciding ---- */

static void deny(np_conn *c, const char *event_reason, const char *detail) {
        char allowed[ALLOWED_LIST_MAX], body[ALLOWED_LIST_MAX + 1024];
        bool v6 = c->host_family == AF_INET6;

        emit(c, NETPROXY_DENIED, event_reason);
        if (c->state == CONN_CLOSED)
                return;        /* the callback removed the sandbox */
        format_allowed(c->sb, allowed, sizeof(allowed));
        snprintf(body, sizeof(body), "agentd: egress to %s%s%s:%u denied by task '%s' (%s). Allowed: %s\n",
                 v6 ? "[" : "", c->host, v6 ? "]" : "", (unsigned) c->port, c->sb->task, detail, allowed);
        conn_respond(c, "403 Forbidden", "X-Agentd-Denied: 1\r\n", body);
}

static void dns_failed(np_conn *c, const char *why) {
        char body[512];

        emit(c, NETPROXY_DENIED, "DNS lookup failed");
        if (c->state == CONN_CLOSED)
                return;
        snprintf(body, sizeof(body), "agentd: cannot resolve %s: %s\n", c->host, why);
        conn_respond(c, "502 Bad Gateway", NULL, body);
}

/* Picks the first acceptable address of the candidates and connects to it. */
static void decide_addresses(np_conn *c, const struct sockaddr *const *addrs, size_t n) {
        const struct sockaddr *chosen = NULL;
        char first_bad[INET6_ADDRSTRLEN] = "";
        const char *first_class = NULL;
        struct ifaddrs *ifs = NULL;
        int r;

        /* An Allow= entry naming the IP literal the client asked for permits that
         * address whatever its range: the user said so explicitly. A name never
         * does: it may be re-pointed at any time (DNS rebinding). */
        if (c->rule->is_ip)
                chosen = n > 0 ? addrs[0] : NULL;
        else {
                if (getifaddrs(&ifs) < 0) {
                        deny(c, "cannot list this host's addresses", "this host's addresses could not be listed");
                        return;
                }
                for (size_t i = 0; i < n && !chosen; i++) {
                        const char *cls = netproxy_address_class(addrs[i]);
                        if (!cls && address_is_host_owned(ifs, addrs[i]))
                                cls = "an address of this host";
                        if (!cls)
                                chosen = addrs[i];
                        else if (!first_class) {
                                first_class = cls;
                                sockaddr_to_string(addrs[i], first_bad, sizeof(first_bad));
                        }
                }
                freeifaddrs(ifs);
        }

        if (!chosen) {
                char reason[256], detail[512];
                if (!first_class) {
                        dns_failed(c, "no usable address");
                        return;
                }
                snprintf(reason, sizeof(reason), "resolves to %s %s", first_class, first_bad);
                snprintf(detail, sizeof(detail),
                         "%s resolves to %s %s, which only an Allow= entry naming that IP permits", c->host,
                         first_class, first_bad);
                deny(c, reason, detail);
                return;
        }

        sockaddr_to_string(chosen, c->address, sizeof(c->address));
        c->state = CONN_CONNECTING;
        c->allowed = true;
        emit(c, NETPROXY_ALLOWED, NULL);
        if (c->state != CONN_CONNECTING)
                return;
        /* The very address just checked, with the port set here: no second lookup. */
        r = upstream_connect(c, chosen);
        if (r < 0) {
                char body[512];
                snprintf(body, sizeof(body), "agentd: cannot connect to %s:%u (%s): %s\n", c->host, (unsigned) c->port,
                         c->address, uv_strerror(r));
                conn_respond(c, "502 Bad Gateway", NULL, body);
        }
}

static void set_port(struct sockaddr *sa, uint16_t port) {
        if (sa->sa_family == AF_INET)
                ((struct sockaddr_in *) sa)->sin_port = htons(port);
        else
                ((struct sockaddr_in6 *) sa)->sin6_port = htons(port);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
        np_conn *c = container_of(req, np_conn, gai);
        const struct sockaddr *addrs[16];
        size_t n = 0;

        c->gai_pending = false;
        if (c->state != CONN_RESOLVING) {
                uv_freeaddrinfo(res);
                if (c->state == CONN_CLOSED)
                        conn_release(c);
                else
                        c->n_pending--;        /* its handles still hold it */
                return;
        }
        c->n_pending--;
        if (status < 0) {
                uv_freeaddrinfo(res);
                dns_failed(c, uv_strerror(status));
                return;
        }
        for (struct addrinfo *ai = res; ai && n < ELEMENTSOF(addrs); ai = ai->ai_next)
                if (ai->ai_family == AF_INET || ai->ai_family == AF_INET6) {
                        set_port(ai->ai_addr, c->port);
                        addrs[n++] = ai->ai_addr;
                }
        decide_addresses(c, addrs, n);
        uv_freeaddrinfo(res);
}

static int literal_sockaddr(int family, const void *a, uint16_t port, struct sockaddr_storage *ret) {
        memset(ret, 0, sizeof(*ret));
        if (family == AF_INET) {
                struct sockaddr_in *s = (struct sockaddr_in *) ret;
                s->sin_family = AF_INET;
                memcpy(&s->sin_addr, a, sizeof(s->sin_addr));
        } else if (family == AF_INET6) {
                struct sockaddr_in6 *s = (struct sockaddr_in6 *) ret;
                s->sin6_family = AF_INET6;
                memcpy(&s->sin6_addr, a, sizeof(s->sin6_addr));
        } else
                return -EAFNOSUPPORT;
        set_port((struct sockaddr *) ret, port);
        return 0;
}

/* An approval treats exactly the approved host:port like an Allow= entry
 * naming it: an IP literal is then permitted whatever its range, a name must
 * still resolve to public addresses. */
static void conn_approve(np_conn *c) {
        c->approved = (policy_host) {
                .host = c->host,
                .port = c->port,
                .is_ip = c->host_family != AF_UNSPEC,
        };
        c->rule = &c->approved;
        conn_proceed(c);
}

/* Network.Ask: the daemon decides now (a remembered approval or a refusal)
 * or later through netproxy_release(). Nothing is resolved meanwhile. */
static void conn_hold(np_conn *c) {
        netproxy *p = c->sb->proxy;
        netproxy_hold hold = {
                .conn_id = c->id,
                .sandbox_id = c->sb->id,
                .task = c->sb->task,
                .host = c->host,
                .port = c->port,
                .timeout_ms = c->sb->ask_timeout_ms,
        };
        char reason[160];

        c->state = CONN_HELD;
        /* A backstop only: the daemon answers (at the latest on its own
         * timeout) through netproxy_release(). */
        (void) uv_timer_start(&c->timer, on_timer, c->sb->ask_timeout_ms + HOLD_GRACE_MS, 0);
        netproxy_verdict v = p->hold_cb(&hold, p->hold_userdata);
        if (c->state != CONN_HELD)
                return;        /* the callback removed the sandbox */
        switch (v) {
        case NETPROXY_VERDICT_HOLD:
                return;
        case NETPROXY_VERDICT_ALLOW:
                conn_approve(c);
                return;
        case NETPROXY_VERDICT_DENY:
        default:
                snprintf(reason, sizeof(reason), "not in Allow= of task %s, and cannot ask", c->sb->task);
                deny(c, reason, "not in Network Allow=; no approval could be requested");
                return;
        }
}

static void conn_decide(np_conn *c, size_t head_end) {
        netproxy *p = c->sb->proxy;
        const char *why = NULL;
        int r;

        r = parse_request(c, head_end, &why);
        free(c->head);
        c->head = NULL;
        if (r == -EINVAL) {
                char body[256];
                snprintf(body, sizeof(body), "agentd: bad proxy request: %s\n", why);
                conn_respond(c, "400 Bad Request", NULL, body);
                return;
        }
        if (r < 0) {
                conn_respond(c, "500 Internal Server Error", NULL, "agentd: out of memory\n");
                return;
        }

        /* Allow= before any lookup: a name outside the list is never resolved,
         * so queries for made-up names cannot carry data out (DNS exfiltration);
         * only a wildcard entry's own subdomains can be looked up. */
        c->rule = find_rule(c->sb, c);
        if (!c->rule) {
                char reason[128];
                if (c->sb->ask_timeout_ms > 0 && p->hold_cb) {
                        conn_hold(c);
                        return;
                }
                snprintf(reason, sizeof(reason), "not in Allow= of task %s", c->sb->task);
                deny(c, reason, "not in Network Allow=");
                return;
        }
        conn_proceed(c);
}

/* Past the allow list (c->rule is set): resolve, check the addresses, connect. */
static void conn_proceed(np_conn *c) {
        netproxy *p = c->sb->proxy;
        struct sockaddr_storage ss;
        const struct sockaddr *one[1] = { (const struct sockaddr *) &ss };
        int r;

        /* The head deadline is over; resolving and connecting get their own. */
        (void) uv_timer_start(&c->timer, on_timer, CONNECT_TIMEOUT_MS, 0);

        if (c->host_family != AF_UNSPEC) {
                (void) literal_sockaddr(c->host_family, &c->host_ip, c->port, &ss);
                decide_addresses(c, one, 1);
                return;
        }
        for (np_override *o = p->overrides; o; o = o->next) {
                if (!streq(o->name, c->host))
                        continue;
                unsigned char a[sizeof(struct in6_addr)];
                int family = o->ip && strchr(o->ip, ':') ? AF_INET6 : AF_INET;
                if (!o->ip || inet_pton(family, o->ip, a) != 1) {
                        dns_failed(c, "lookup failed (override)");
                        return;
                }
                (void) literal_sockaddr(family, a, c->port, &ss);
                decide_addresses(c, one, 1);
                return;
        }

        struct addrinfo hints = {
                .ai_family = AF_UNSPEC,
                .ai_socktype = SOCK_STREAM,
        };
        c->state = CONN_RESOLVING;
        r = uv_getaddrinfo(p->loop, &c->gai, on_resolved, c->host, NULL, &hints);
        if (r < 0) {
                dns_failed(c, uv_strerror(r));
                return;
        }
        c->gai_pending = true;
        c->n_pending++;
}


static void on_timer(uv_timer_t *t) {
        np_conn *c = container_of(t, np_conn, timer);
        char body[256];

        switch (c->state) {
        case CONN_HEAD:
                snprintf(body, sizeof(body), "agentd: request head not complete within %llu ms\n",
                         (unsigned long long) c->sb->proxy->header_timeout_ms);
                conn_respond(c, "408 Request Timeout", NULL, body);
                break;
        case CONN_RESOLVING:
        case CONN_CONNECTING:
                snprintf(body, sizeof(body), "agentd: timed out resolving or connecting to %s:%u\n", c->host,
                         (unsigned) c->port);
                conn_respond(c, "504 Gateway Timeout", NULL, body);
                break;
        default:
                /* A handoff that never came (nobody to answer), or a final
                 * response the peer does not take. */
                conn_close(c);
                break;
        }
}

/* ---- reading the head ---- */

static void head_read(np_conn *c) {
        const char *end;
        size_t from;
        ssize_t n;

        /* Reads land directly in the head buffer, never past its end. */
        n = recv(c->client_fd, c->head + c->head_len, HEAD_MAX - c->head_len, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
        if (n <= 0) {
                /* EOF or error before a complete head: nobody to answer. */
                conn_close(c);
                return;
        }
        /* The terminator may straddle reads: look back three bytes. */
        from = c->head_len >= 3 ? c->head_len - 3 : 0;
        c->head_len += (size_t) n;
        end = memmem(c->head + from, c->head_len - from, "\r\n\r\n", 4);
        if (!end) {
                if (c->head_len >= HEAD_MAX) {
                        char body[128];
                        snprintf(body, sizeof(body), "agentd: request head larger than %u bytes\n", HEAD_MAX);
                        conn_respond(c, "431 Request Header Fields Too Large", NULL, body);
                }
                return;
        }
        if (poll_client(c, 0) < 0) {
                conn_close(c);
                return;
        }
        conn_decide(c, (size_t) (end + 4 - c->head));
}

static void on_client_poll(uv_poll_t *h, int status, int events) {
        np_conn *c = container_of(h, np_conn, client);

        if (status < 0) {
                /* An error on the client socket (a reset): libuv stopped the handle. */
                c->client_events = 0;
                conn_close(c);
                return;
        }
        switch (c->state) {
        case CONN_HEAD:
                head_read(c);
                break;
        case CONN_RESPONDING:
                response_continue(c);
                break;
        case CONN_RELAY:
                relay(c, events & UV_READABLE, events & UV_WRITABLE);
                break;
        default:
                break;
        }
}

/* ---- the handoff: the bridge passes the client socket ---- */

/* The only thing accepted is a connected TCP socket: the bridge's end of a
 * connection from inside the sandbox. Its network namespace does not matter
 * to reading and writing it. Which sandbox it is from is said by the listener
 * it arrived on, never by anything it carries. */
static int check_client_socket(int fd) {
        int type = 0, domain = 0, protocol = 0;
        socklen_t len;
        struct sockaddr_storage peer;

        len = sizeof(type);
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
                return -errno;
        len = sizeof(domain);
        if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0)
                return -errno;
        len = sizeof(protocol);
        if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &len) < 0)
                return -errno;
        if (type != SOCK_STREAM || (domain != AF_INET && domain != AF_INET6) || protocol != IPPROTO_TCP)
                return -EPROTOTYPE;
        /* Listening and unconnected sockets have no peer. */
        len = sizeof(peer);
        if (getpeername(fd, (struct sockaddr *) &peer, &len) < 0)
                return -errno;
        return 0;
}

/* Reads the one handoff message: one byte with exactly one fd. Returns the
 * fd, -EAGAIN if it has not arrived yet, or another error (the caller closes:
 * there is nobody to answer). Extra fds are closed; the kernel drops the ones
 * that do not fit into the control buffer. */
static int handoff_receive(int fd) {
        SocketFdsInfo info;
        size_t n_fds = 0;
        int got = -1;
        char byte;
        ssize_t n;

        n = socket_recv_fds(fd, &byte, 1, &got, &n_fds, 1, MSG_DONTWAIT, &info);
        if (n < 0)
                return n == -EINTR ? -EAGAIN : (int) n;
        if (n == 0 && n_fds == 0)
                return -ECONNRESET;
        /* A second fd is closed (n_closed) or dropped by the kernel (MSG_CTRUNC). */
        if (n_fds != 1 || info.n_closed > 0 || (info.msg_flags & MSG_CTRUNC)) {
                safe_close(got);
                return -EBADMSG;
        }
        n = check_client_socket(got);
        if (n < 0) {
                safe_close(got);
                return (int) n;
        }
        return got;
}

static void on_handoff_poll(uv_poll_t *h, int status, int events) {
        np_conn *c = container_of(h, np_conn, handoff);
        netproxy *p = c->sb->proxy;
        int fd, r;

        if (c->state != CONN_HANDOFF)
                return;
        fd = status < 0 ? -ECONNRESET : handoff_receive(c->handoff_fd);
        if (fd == -EAGAIN)
                return;
        /* One message per connection: whatever else is queued is dropped with it. */
        close_handoff(c);
        if (fd < 0) {
                conn_close(c);
                return;
        }
        /* uv_poll_init() sets O_NONBLOCK; every call also says MSG_DONTWAIT or
         * SPLICE_F_NONBLOCK where it can. */
        r = uv_poll_init(p->loop, &c->client, fd);
        if (r < 0) {
                safe_close(fd);
                conn_close(c);
                return;
        }
        c->client_fd = fd;
        c->client_open = true;
        c->n_pending++;
        c->state = CONN_HEAD;

        if (c->over_limit) {
                char body[256];
                snprintf(body, sizeof(body), "agentd: too many proxy connections from sandbox %s (limit %u)\n",
                         c->sb->id, p->max_connections);
                conn_respond(c, "503 Service Unavailable", NULL, body);
                return;
        }
        c->head = malloc(HEAD_MAX);
        if (!c->head || poll_client(c, UV_READABLE) < 0)
                conn_close(c);
}

/* ---- listening ---- */

static void on_listener_poll(uv_poll_t *h, int status, int events);

static void on_accept_timer(uv_timer_t *t) {
        np_sandbox *sb = container_of(t, np_sandbox, accept_timer);

        if (!sb->removed)
                (void) uv_poll_start(&sb->listener, UV_READABLE, on_listener_poll);
}

static void conn_new(np_sandbox *sb, int fd) {
        netproxy *p = sb->proxy;
        np_conn *c;

        c = calloc(1, sizeof(*c));
        if (!c) {
                safe_close(fd);
                return;
        }
        c->sb = sb;
        c->id = ++p->next_conn_id;
        c->host_family = AF_UNSPEC;
        c->client_fd = c->upstream_fd = -1;
        if (uv_poll_init(p->loop, &c->handoff, fd) < 0) {
                safe_close(fd);
                free(c);
                return;
        }
        c->handoff_fd = fd;
        c->handoff_open = true;
        (void) uv_timer_init(p->loop, &c->timer);
        c->n_pending = 2;
        sb->refs++;
        /* Counted from the handoff on: a connection holds its slot until it is
         * freed, so a sandbox cannot open more than max_connections at once. */
        c->over_limit = sb->n_conns >= p->max_connections;
        sb->n_conns++;
        LIST_PREPEND(sb->conns, c);

        /* One deadline for the handoff and the whole head, not reset by
         * progress: a byte every few seconds must not hold a slot forever.
         * The bridge sends the handoff right after connecting, so it is
         * usually there already. */
        if (uv_timer_start(&c->timer, on_timer, p->header_timeout_ms, 0) < 0 ||
            uv_poll_start(&c->handoff, UV_READABLE, on_handoff_poll) < 0)
                conn_close(c);
}

static void on_listener_poll(uv_poll_t *h, int status, int events) {
        np_sandbox *sb = container_of(h, np_sandbox, listener);

        if (sb->removed)
                return;
        for (unsigned i = 0; i < ACCEPT_BATCH; i++) {
                int fd = accept4(sb->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) {
                        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                                (void) uv_poll_stop(&sb->listener);
                                (void) uv_timer_start(&sb->accept_timer, on_accept_timer, ACCEPT_BACKOFF_MS, 0);
                                return;
                        }
                        if (errno == EAGAIN)
                                return;
                        continue;        /* ECONNABORTED, EINTR and the like: the next one */
                }
                conn_new(sb, fd);
                if (sb->removed)
                        return;
        }
        /* status < 0 would mean an error on the listening socket itself; the
         * poll then stopped. Nothing to do but wait for removal. */
        (void) status;
}

static void on_listener_closed(uv_handle_t *h) {
        np_sandbox *sb = container_of((uv_poll_t *) h, np_sandbox, listener);
        sb->listen_fd = safe_close(sb->listen_fd);
        sandbox_unref(sb);
}

static void on_accept_timer_closed(uv_handle_t *h) {
        sandbox_unref(container_of((uv_timer_t *) h, np_sandbox, accept_timer));
}

static int bind_unix(const char *path, int *ret) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_close_ int fd = -1;
        struct stat st;
        mode_t old;
        int r;

        /* libuv would silently truncate a long path. */
        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        /* A socket left by a daemon that died is ours to replace; anything else is not. */
        if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
                (void) unlink(path);
        /* The file gets its mode at bind(); a tighter umask meanwhile can only make
         * files other threads create stricter, never looser. */
        old = umask(0177);
        r = bind(fd, (struct sockaddr *) &sa, sizeof(sa));
        umask(old);
        if (r < 0)
                return -errno;
        *ret = TAKE_FD(fd);
        return 0;
}

static np_sandbox *sandbox_find(netproxy *p, const char *id) {
        for (np_sandbox *sb = p->sandboxes; sb; sb = sb->next)
                if (streq(sb->id, id))
                        return sb;
        return NULL;
}

static void sandbox_remove(np_sandbox *sb) {
        netproxy *p = sb->proxy;

        if (sb->removed)
                return;
        sb->removed = true;
        LIST_UNLINK(p->sandboxes, sb);

        (void) unlink(sb->socket_path);
        uv_close((uv_handle_t *) &sb->listener, on_listener_closed);
        uv_close((uv_handle_t *) &sb->accept_timer, on_accept_timer_closed);
        /* conn_close() unlinks the connection, so this ends. */
        while (sb->conns)
                conn_close(sb->conns);
}

int netproxy_add_sandbox(netproxy *p, const char *sandbox_id, const char *task, const policy_host *allow, size_t n_allow,
                         const char *socket_path) {
        np_sandbox *sb;
        int fd = -1, r;

        if (!p || !sandbox_id || !task || !socket_path || (n_allow > 0 && !allow))
                return -EINVAL;
        if (p->freeing)
                return -ESHUTDOWN;
        if (sandbox_find(p, sandbox_id))
                return -EEXIST;

        sb = calloc(1, sizeof(*sb));
        if (!sb)
                return -ENOMEM;
        sb->proxy = p;
        sb->listen_fd = -1;
        sb->id = strdup(sandbox_id);
        sb->task = strdup(task);
        sb->socket_path = strdup(socket_path);
        sb->allow = calloc(n_allow ?: 1, sizeof(policy_host));
        if (!sb->id || !sb->task || !sb->socket_path || !sb->allow) {
                r = -ENOMEM;
                goto fail;
        }
        for (size_t i = 0; i < n_allow; i++) {
                sb->allow[i] = allow[i];
                sb->allow[i].host = strdup(allow[i].host ?: "");
                if (!sb->allow[i].host) {
                        r = -ENOMEM;
                        goto fail;
                }
                sb->n_allow = i + 1;
        }

        r = bind_unix(socket_path, &fd);
        if (r < 0)
                goto fail;
        if (listen(fd, 128) < 0) {
                r = -errno;
                (void) unlink(socket_path);
                safe_close(fd);
                goto fail;
        }
        r = uv_poll_init(p->loop, &sb->listener, fd);
        if (r < 0) {
                (void) unlink(socket_path);
                safe_close(fd);
                goto fail;
        }
        /* From here the listener and the accept timer own the sandbox's memory. */
        sb->listen_fd = fd;
        (void) uv_timer_init(p->loop, &sb->accept_timer);
        sb->refs = 2;
        p->n_live++;
        r = uv_poll_start(&sb->listener, UV_READABLE, on_listener_poll);
        if (r < 0) {
                sb->removed = true;
                (void) unlink(socket_path);
                uv_close((uv_handle_t *) &sb->listener, on_listener_closed);
                uv_close((uv_handle_t *) &sb->accept_timer, on_accept_timer_closed);
                return r;
        }

        LIST_PREPEND(p->sandboxes, sb);
        return 0;

fail:
        sandbox_free(sb);
        return r;
}

void netproxy_remove_sandbox(netproxy *p, const char *sandbox_id) {
        np_sandbox *sb;

        if (!p || !sandbox_id)
                return;
        sb = sandbox_find(p, sandbox_id);
        if (sb)
                sandbox_remove(sb);
}

/* ---- the proxy ---- */

/* A relay size from the environment (bytes, RELAY_SIZE_MIN..RELAY_SIZE_MAX);
 * anything else leaves the default. */
static size_t relay_size_env(const char *name, size_t def) {
        const char *e = getenv(name);
        char *end;
        unsigned long long v;

        if (!e || !*e)
                return def;
        errno = 0;
        v = strtoull(e, &end, 10);
        if (errno != 0 || *end || v < RELAY_SIZE_MIN || v > RELAY_SIZE_MAX)
                return def;
        return (size_t) v;
}

int netproxy_new(uv_loop_t *loop, netproxy_event_cb cb, void *userdata, netproxy **ret) {
        netproxy *p;

        if (!loop || !ret)
                return -EINVAL;
        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->loop = loop;
        p->cb = cb;
        p->userdata = userdata;
        p->header_timeout_ms = DEFAULT_HEADER_TIMEOUT_MS;
        p->max_connections = DEFAULT_MAX_CONNECTIONS;
        const char *e = getenv("AGENTD_NETPROXY_SPLICE");
        p->splice = e && strcmp(e, "1") == 0;
        p->relay_big = relay_size_env("AGENTD_NETPROXY_BUF", RELAY_BUF_BIG);
        p->big_max = RELAY_BIG_MAX;
        p->relay_pipe = relay_size_env("AGENTD_NETPROXY_PIPE", RELAY_PIPE);
        *ret = p;
        return 0;
}

void netproxy_free(netproxy *p, void (*done)(void *userdata), void *userdata) {
        if (!p) {
                if (done)
                        done(userdata);
                return;
        }
        if (p->freeing)
                return;
        p->freeing = true;
        p->done = done;
        p->done_userdata = userdata;
        while (p->sandboxes)
                sandbox_remove(p->sandboxes);
        if (p->n_live == 0)
                proxy_finalize(p);
}

int netproxy_set_resolver_override(netproxy *p, const char *name, const char *ip) {
        _cleanup_free_ char *n = NULL, *i = NULL;
        size_t len;

        if (!p || !name)
                return -EINVAL;
        n = strdup(name);
        if (!n || (ip && !(i = strdup(ip))))
                return -ENOMEM;
        /* Stored the way requests are normalised: lowercase, no trailing dot. */
        for (char *c = n; *c; c++)
                if (*c >= 'A' && *c <= 'Z')
                        *c = (char) (*c - 'A' + 'a');
        len = strlen(n);
        if (len > 0 && n[len - 1] == '.')
                n[len - 1] = '\0';

        for (np_override *o = p->overrides; o; o = o->next)
                if (streq(o->name, n)) {
                        free(o->ip);
                        o->ip = TAKE_PTR(i);
                        return 0;
                }
        np_override *o = calloc(1, sizeof(*o));
        if (!o)
                return -ENOMEM;
        o->name = TAKE_PTR(n);
        o->ip = TAKE_PTR(i);
        o->next = p->overrides;
        p->overrides = o;
        return 0;
}

void netproxy_set_splice(netproxy *p, bool on) {
        p->splice = on;
}

void netproxy_set_relay_pool(netproxy *p, unsigned n) {
        if (p)
                p->big_max = n;
}

int netproxy_set_relay_size(netproxy *p, size_t buf, size_t pipe) {
        if (!p || buf < RELAY_SIZE_MIN || buf > RELAY_SIZE_MAX || pipe < RELAY_SIZE_MIN || pipe > RELAY_SIZE_MAX)
                return -EINVAL;
        p->relay_big = buf;
        while (p->n_big_free > 0)       /* kept ones have the old size */
                free(p->big_free[--p->n_big_free]);
        p->relay_pipe = pipe;
        return 0;
}

netproxy_relay_stats netproxy_get_relay_stats(const netproxy *p) {
        return p->stats;
}

void netproxy_set_header_timeout_ms(netproxy *p, uint64_t ms) {
        if (p)
                p->header_timeout_ms = ms ?: 1;
}

void netproxy_set_max_connections(netproxy *p, unsigned n) {
        if (p)
                p->max_connections = n ?: 1;
}

void netproxy_set_hold_cb(netproxy *p, netproxy_hold_cb cb, void *userdata) {
        p->hold_cb = cb;
        p->hold_userdata = userdata;
}

int netproxy_set_ask(netproxy *p, const char *sandbox_id, uint64_t timeout_ms) {
        np_sandbox *sb = p && sandbox_id ? sandbox_find(p, sandbox_id) : NULL;

        if (!sb)
                return -ENOENT;
        sb->ask_timeout_ms = timeout_ms;
        return 0;
}

int netproxy_release(netproxy *p, uint64_t conn_id, bool allow, const char *why) {
        char detail[256];

        if (!p)
                return -ENOENT;
        for (np_sandbox *sb = p->sandboxes; sb; sb = sb->next)
                for (np_conn *c = sb->conns; c; c = c->next) {
                        if (c->id != conn_id)
                                continue;
                        if (c->state != CONN_HELD)
                                return -EBUSY;
                        if (allow) {
                                conn_approve(c);
                                return 0;
                        }
                        snprintf(detail, sizeof(detail), "not in Network Allow=; %s", why ? why : "not approved");
                        deny(c, why ? why : "not approved", detail);
                        return 0;
                }
        return -ENOENT;
}
