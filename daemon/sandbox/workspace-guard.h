/* What promote holds back unless asked (include_hooks): the static rules of
 * ws_path_is_guarded() and the locations learnt from the host repository. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* One path component under the static rules. */
bool ws_name_is_guarded(const char *name, size_t n);
/* Locations inside the workspace that the host's git obeys, relative to it
 * (a strv, possibly empty): the gitdir of a .git file and its commondir when
 * they lie inside, and core.hooksPath / core.fsmonitor from the repository's
 * config, the user's ~/.gitconfig, $XDG_CONFIG_HOME/git/config and /etc/gitconfig. */
int ws_guard_discover(const char *workspace, char ***ret_prefixes);
/* rel is one of the prefixes, beneath one, or an ancestor of one (replacing
 * an ancestor with a symlink would move it). */
bool ws_guard_prefix_match(char *const *prefixes, const char *rel);
/* A directory git would take for a repository: HEAD with objects or refs,
 * objects with refs, or a commondir file. */
bool ws_dir_looks_like_gitdir(int dirfd);
