/* File-descriptor-relative helpers for the workspace walks: every path is
 * resolved beneath a directory fd without following symlinks, of any length
 * (resolved in chunks below PATH_MAX), and every file is opened without
 * blocking and checked to be the one the walk saw. */
#pragma once

#include <dirent.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>

/* openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS) with O_NOFOLLOW|O_CLOEXEC added. */
int ws_openat2_beneath(int dirfd, const char *path, int flags, mode_t mode);
/* The same for a path of any length; "" is dirfd itself. */
int ws_open_beneath(int rootfd, const char *rel, int flags);
/* The parent directory of rel beneath rootfd (O_RDONLY|O_DIRECTORY) and rel's last component. */
int ws_open_parent(int rootfd, const char *rel, const char **ret_name);
/* lstat of rel beneath rootfd. */
int ws_stat_beneath(int rootfd, const char *rel, struct stat *ret);
/* readlink of rel beneath rootfd, NUL-terminated (malloc'd). */
int ws_readlink_beneath(int rootfd, const char *rel, char **ret);
/* Opens name for reading with O_NONBLOCK|O_NOFOLLOW|O_NOCTTY and checks that it
 * is a regular file with the device and inode in *seen: -ESTALE if it is not
 * (the entry was swapped since the walk saw it). */
int ws_open_regular(int dirfd, const char *name, const struct stat *seen);
/* Reads a small regular file (at most max bytes, NUL-terminated) without
 * blocking on FIFOs or devices; symlinks are followed only when follow is set. */
int ws_read_small(int dirfd, const char *name, bool follow, size_t max, char **ret);
/* A DIR stream on a copy of dirfd, so the caller keeps its fd. */
DIR *ws_opendir_dup(int dirfd);
/* "rel/name", or name when rel is "" (malloc'd). */
char *ws_join(const char *rel, const char *name);
