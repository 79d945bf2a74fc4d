/* The egress proxy for Network.Mode=proxy sandboxes. A sandbox's network
 * namespace has only loopback; its one way out is a per-sandbox Unix socket.
 * The sandbox's bridge (helper/bridge.c) listens on 127.0.0.1:PORT
 * inside and passes each accepted TCP socket over that Unix socket (one byte +
 * the fd, SCM_RIGHTS); this proxy then speaks HTTP CONNECT and absolute-URI
 * HTTP on the TCP socket itself. Anything but one connected TCP socket per
 * Unix connection is refused. The Unix socket a connection arrives on says
 * which sandbox (and so which task's Allow= list) it is from; nothing the
 * sandbox sends can change that.
 *
 * Names are resolved here (the sandbox has no resolver), every resolved address
 * is checked against loopback/private/link-local/host-owned ranges (DNS
 * rebinding, SSRF to 169.254.169.254), and the proxy connects to exactly the
 * address it checked. Runs on the daemon's libuv loop; not thread-safe. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#include "policy.h"

typedef struct netproxy netproxy;

typedef enum netproxy_event_kind {
        NETPROXY_ALLOWED,
        NETPROXY_DENIED,
        NETPROXY_CLOSED,
} netproxy_event_kind;

/* Every string is borrowed for the duration of the callback only. */
typedef struct netproxy_event {
        netproxy_event_kind kind;
        const char *sandbox_id, *task;
        const char *host;        /* as asked, lowercased, no trailing dot, IPv6 without brackets */
        uint16_t port;
        const char *address;     /* the IP connected to (ALLOWED/CLOSED), or NULL */
        const char *reason;      /* DENIED: why, e.g. "not in Allow= of task build" */
        const char *method;      /* "CONNECT" or "GET"... */
        uint64_t bytes_up;       /* CLOSED: bytes written to the upstream (for absolute-URI
                                  * requests the rewritten head included) */
        uint64_t bytes_down;     /* CLOSED: bytes relayed from the upstream to the sandbox */
} netproxy_event;

/* Called on the loop thread. It may call netproxy_remove_sandbox() or
 * netproxy_free() (e.g. an automatic response to repeated denials). Every
 * ALLOWED is followed by exactly one CLOSED. Requests too malformed to name a
 * host:port are answered 400 and produce no event. */
typedef void (*netproxy_event_cb)(const netproxy_event *ev, void *userdata);

/* Network.Ask: a connection Allow= does not permit is held, and the hold
 * callback (on the loop thread; it may remove the sandbox) says what to do.
 * HOLD means the daemon answers later with netproxy_release(); it must, at
 * the latest after timeout_ms (the proxy drops a held connection a few
 * seconds after that). Strings are borrowed for the call only. */
typedef enum netproxy_verdict {
        NETPROXY_VERDICT_DENY,
        NETPROXY_VERDICT_ALLOW,      /* e.g. an approval remembered for the sandbox or task */
        NETPROXY_VERDICT_HOLD,
} netproxy_verdict;

typedef struct netproxy_hold {
        uint64_t conn_id;
        const char *sandbox_id, *task;
        const char *host;            /* as in netproxy_event */
        uint16_t port;
        uint64_t timeout_ms;         /* the sandbox's Network.AskTimeout */
} netproxy_hold;

typedef netproxy_verdict (*netproxy_hold_cb)(const netproxy_hold *h, void *userdata);

int netproxy_new(uv_loop_t *loop, netproxy_event_cb cb, void *userdata, netproxy **ret);

/* Starts a listener for one sandbox on a new Unix socket at socket_path (created
 * mode 0600; the parent directory must exist; a stale socket there is replaced).
 * Copies the allow list. -EEXIST if the sandbox id is taken, -ENAMETOOLONG if
 * the path does not fit in sun_path. */
int netproxy_add_sandbox(netproxy *p, const char *sandbox_id, const char *task,
                         const policy_host *allow, size_t n_allow, const char *socket_path);

/* Hold instead of refusing what Allow= does not name (timeout_ms > 0) for
 * this sandbox; 0 turns it off. -ENOENT for an unknown sandbox. */
int netproxy_set_ask(netproxy *p, const char *sandbox_id, uint64_t timeout_ms);
void netproxy_set_hold_cb(netproxy *p, netproxy_hold_cb cb, void *userdata);

/* Answers a held connection: allow goes on as if Allow= named exactly its
 * host:port (an IP literal in any range, a name only to public addresses);
 * otherwise 403 and a DENIED event whose reason is `why`. -ENOENT if the
 * connection is gone, -EBUSY if it is not held. */
int netproxy_release(netproxy *p, uint64_t conn_id, bool allow, const char *why);

/* Closes the listener (and unlinks its socket) and every connection of that
 * sandbox; each allowed connection emits CLOSED once its handles are closed. */
void netproxy_remove_sandbox(netproxy *p, const char *sandbox_id);

/* Closes everything; `done` (may be NULL) runs once all handles are closed, so
 * the loop can end cleanly (uv_loop_close() == 0). If nothing is open it runs
 * before netproxy_free() returns. */
void netproxy_free(netproxy *p, void (*done)(void *userdata), void *userdata);

/* Tests: map a name to an IP without DNS; ip NULL makes the lookup fail. */
int netproxy_set_resolver_override(netproxy *p, const char *name, const char *ip);

/* Tests and tuning: the deadline for the whole request head (default 10 s; the
 * deadline is not extended by progress, against slowloris) and the number of
 * connections one sandbox may hold open (default 256). */
void netproxy_set_header_timeout_ms(netproxy *p, uint64_t ms);
void netproxy_set_max_connections(netproxy *p, unsigned n);

/* The relay path. Each direction of a relayed connection copies through a
 * buffer, or, with splicing on, splices through a pipe of its own (zero copy;
 * copying when no pipe could be made). Off by default (measured: no faster
 * here, see netproxy.c); on with netproxy_set_splice(p, true) or
 * AGENTD_NETPROXY_SPLICE=1 in the environment at netproxy_new(). Bytes are
 * counted in the events the same way on both paths. */
typedef struct netproxy_relay_stats {
        uint64_t spliced_dirs, copied_dirs;     /* directions set up per path */
        uint64_t spliced_bytes, copied_bytes;   /* payload relayed per path (prefixes not included) */
        uint64_t max_held;      /* the most one direction held at once (read, not yet written):
                                 * back-pressure keeps it at most the buffer or pipe size */
        uint64_t grown_dirs;    /* copied directions that went bulk and got a big buffer */
} netproxy_relay_stats;
void netproxy_set_splice(netproxy *p, bool on);

/* The relay's size per direction: the copy path's buffer for a bulk
 * direction (one whose read filled its 256 KiB starting buffer; default 1 MiB,
 * from a pool of at most 32 such buffers per proxy, beyond that 256 KiB;
 * AGENTD_NETPROXY_BUF=bytes at netproxy_new()) and the splice path's pipe
 * (default 1 MiB, AGENTD_NETPROXY_PIPE=bytes; the kernel may round it up). Both
 * 4 KiB..16 MiB, else -EINVAL; applies to directions that grow from then on. */
int netproxy_set_relay_size(netproxy *p, size_t buf, size_t pipe);
/* Tests: how many big buffers may be out at once (default 32; 0: none). */
void netproxy_set_relay_pool(netproxy *p, unsigned n);
netproxy_relay_stats netproxy_get_relay_stats(const netproxy *p);

/* NULL if the address is an ordinary public one; otherwise why a name may not
 * resolve to it, as a phrase ("a loopback address", "a private address",
 * "a link-local address", ...). IPv4-mapped, IPv4-compatible, NAT64 and 6to4
 * forms are judged by the IPv4 address they carry. Does not include the
 * host's own addresses (those are checked per request). Exposed for tests. */
const char *netproxy_address_class(const struct sockaddr *sa);
