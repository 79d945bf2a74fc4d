/* Whole-file reads and writes, O_NOFOLLOW throughout: a bounded read, a
 * plain write, and the atomic replace (temp file, fsync, rename, optionally
 * fsync of the directory) every state file of agentd is written with.
 * libc only. */
#pragma once

#include <stddef.h>
#include <sys/types.h>

/* Reads a whole regular file of at most `max` bytes (not following a final
 * symlink) into a NUL-terminated buffer the caller frees. -EFBIG when it is
 * larger or not a regular file, -EIO when the read fails, else -errno of
 * open(). */
int read_file_bounded(const char *path, size_t max, char **ret, size_t *ret_len);

typedef enum WriteFileFlags {
        /* The file written (for the replace functions: the temp file) must
         * not exist yet: O_EXCL, -EEXIST otherwise. */
        WRITE_FILE_EXCL = 1 << 0,
        /* Replace only: fsync the directory after the rename, so the new
         * name survives a crash. */
        WRITE_FILE_SYNC_DIR = 1 << 1,
} WriteFileFlags;

/* Creates (or, without WRITE_FILE_EXCL, truncates) `path` with `mode`
 * (subject to the umask), writes all of data[0..len) and fsyncs it. 0 or
 * -errno; after a failure the file may hold part of the data. */
int write_file(const char *path, const void *data, size_t len, mode_t mode, unsigned flags);

/* Replaces `name` atomically: writes `tmp_name` (mode, subject to the umask),
 * fsyncs it and renames it over `name`; with WRITE_FILE_SYNC_DIR then fsyncs
 * the directory (dir_fd, or with AT_FDCWD the directory `name` is in). A
 * reader sees the old file or the new one, never half of either. 0 or -errno;
 * on failure the temp file is removed and `name` is as it was (unless only the
 * directory fsync failed: the rename has happened then). */
int write_file_replace_at(int dir_fd, const char *tmp_name, const char *name, const void *data, size_t len,
                          mode_t mode, unsigned flags);

/* write_file_replace_at() of `path` through "<path>.tmp", mode 0600, with
 * `flags`. -ENAMETOOLONG when the temp name does not fit PATH_MAX. */
int write_file_replace(const char *path, const void *data, size_t len, unsigned flags);

/* The same without flags: atomic, not yet durable across a crash. */
static inline int write_file_atomic(const char *path, const void *data, size_t len) {
        return write_file_replace(path, data, len, 0);
}

/* mkdir -p, mode 0700 for what it creates; the last component must then be
 * a directory owned by us (-ENOTDIR, -EPERM), and is made 0700. 0 or -errno. */
int mkdir_private(const char *path);
