/* Workspace review: what a sandbox changed in its copy-on-write layer (diff),
 * applying reviewed changes to the real tree (promote) and throwing them
 * away (discard). Works on the overlay upper directory alone, so it works
 * after the sandbox ended and after a daemon restart.
 *
 * These functions block (they read whole trees and fsync what they write):
 * call them from a worker thread (uv_queue_work), never from the loop. They
 * keep no global state, so several may run at once on different sandboxes.
 * Every file is opened O_NONBLOCK|O_NOFOLLOW and checked to be the regular
 * file the walk saw, so a sandbox that swaps a file for a FIFO cannot stall
 * them; the walks keep an explicit stack, so depth is not limited. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef enum ws_change_kind {
        WS_ADDED,
        WS_MODIFIED,
        WS_DELETED,
} ws_change_kind;

typedef struct ws_change {
        char *path;            /* relative to the workspace, raw bytes */
        ws_change_kind change;
        char type;             /* 'f' file, 'd' directory, 'l' symlink, 'o' other */
        bool guarded;          /* something the host runs or obeys later (see ws_path_is_guarded) */
} ws_change;

typedef struct ws_changes {
        ws_change *v;
        size_t n, cap;
        char **guard_prefixes; /* host-derived guarded locations (core.hooksPath, gitdir targets ...) */
} ws_changes;

const char *ws_change_kind_to_string(ws_change_kind k);

/* The static rules, closed under descent (a path is guarded when any of its
 * components is): any ".git" component (the repository, a .git file with
 * gitdir:, commondir, info/, worktrees/, modules/, objects/info/alternates,
 * refs, index ...), editor and dev-container settings (.vscode, .idea,
 * .devcontainer), files tools obey on entering a directory (.envrc,
 * .gitattributes, .gitmodules, ...), and agentd's own configuration
 * (agentd.conf, *.task). workspace_diff adds what it learns from the host:
 * core.hooksPath / core.fsmonitor of the workspace's repository, a gitdir or
 * commondir that lies inside the workspace, and any directory that looks
 * like a git directory (HEAD with objects or refs, or a commondir). */
bool ws_path_is_guarded(const char *rel);

/* A time limit the loop may shorten while a worker runs (to cancel it):
 * deadline_ns is CLOCK_MONOTONIC (ws_now_ns()). NULL budgets are unlimited. */
typedef struct ws_budget {
        _Atomic int64_t deadline_ns;
} ws_budget;
bool ws_budget_spent(ws_budget *b);

/* Lists the changes, sorted by path; -ETIMEDOUT once the budget is spent.
 * err (may be NULL) explains a failure. */
int workspace_diff(const char *workspace, const char *upper, ws_budget *budget, ws_changes *ret, agentd_error *err);
void ws_changes_free(ws_changes *c);

typedef struct ws_item {
        char *path;
        char *detail;          /* conflict reason, or the sha256 of promoted content */
} ws_item;

typedef struct ws_items {
        ws_item *v;
        size_t n, cap;
} ws_items;

typedef struct ws_promote_result {
        ws_items promoted;     /* detail: sha256 hex of the content (files), "" otherwise */
        ws_items conflicts;    /* detail: why it was not applied */
        ws_items guarded;      /* skipped: needs include_hooks */
} ws_promote_result;

/* started_at_ns: CLOCK_REALTIME when the sandbox started; a host file whose
 * ctime is later was changed on the host since, and is a conflict. paths:
 * NULL for everything, else each selects that path and what is beneath it.
 * A change not applied before the budget is spent is reported as a conflict.
 * Files are written to temporary names, made durable with one syncfs() per
 * batch and renamed into place. */
int workspace_promote(const char *workspace, const char *upper, int64_t started_at_ns, char *const *paths,
                      bool include_hooks, ws_budget *budget, ws_promote_result *ret, agentd_error *err);
void ws_promote_result_free(ws_promote_result *r);

/* Removes a directory tree without following symlinks (also the overlay's
 * work dir, whose inner directory has mode 000). */
int workspace_remove_tree(const char *path);

/* CLOCK_MONOTONIC in ns, the clock of every deadline_ns above. */
int64_t ws_now_ns(void);
