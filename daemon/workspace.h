/* Workspace review: what a sandbox changed in its copy-on-write layer (diff),
 * applying reviewed changes to the real tree (promote) and throwing them
 * away (discard). Works on the overlay upper directory alone, so it works
 * after the sandbox ended and after a daemon restart. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum ws_change_kind {
        WS_ADDED,
        WS_MODIFIED,
        WS_DELETED,
} ws_change_kind;

typedef struct ws_change {
        char *path;            /* relative to the workspace */
        ws_change_kind change;
        char type;             /* 'f' file, 'd' directory, 'l' symlink, 'o' other */
        bool guarded;          /* a file the host runs later (hooks, .git/config, .envrc, ...) */
} ws_change;

typedef struct ws_changes {
        ws_change *v;
        size_t n, cap;
} ws_changes;

const char *ws_change_kind_to_string(ws_change_kind k);
bool ws_path_is_guarded(const char *rel);

/* Lists the changes, sorted by path. *ret_error explains a failure. */
int workspace_diff(const char *workspace, const char *upper, ws_changes *ret, char **ret_error);
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
 * NULL for everything, else each selects that path and what is beneath it. */
int workspace_promote(const char *workspace, const char *upper, int64_t started_at_ns, char *const *paths,
                      bool include_hooks, ws_promote_result *ret, char **ret_error);
void ws_promote_result_free(ws_promote_result *r);

/* Removes a directory tree without following symlinks (also the overlay's
 * work dir, whose inner directory has mode 000). */
int workspace_remove_tree(const char *path);
