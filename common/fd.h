/* Small fd helpers (libc only): fsync of a directory, reopening an fd with
 * other flags, writing a buffer fully. */
#pragma once

#include <stddef.h>
#include <sys/types.h>

/* Writes all of data[0..len) to fd, retrying short writes and EINTR.
 * 0 or -errno (-EIO if write() returns 0). */
int fd_write_all(int fd, const void *data, size_t len);

/* Reads from fd until EOF or until `size` bytes are in buf, retrying EINTR
 * and short reads. The byte count, or -errno. */
ssize_t fd_read_full(int fd, void *buf, size_t size);

/* 0 when fd is a regular file, -EBADFD when it is something else (a FIFO, a
 * device, a directory), -errno when fstat fails. */
int fd_check_regular(int fd);

/* Opens `path` as a directory and fsyncs it: a rename or create inside is
 * durable afterwards. 0 or -errno. */
int fsync_directory(const char *path);

/* fsyncs the directory that contains `path` (".", if it has no slash). */
int fsync_parent_directory(const char *path);

/* Opens what `fd` refers to again, through /proc/self/fd, with `flags`
 * (O_CLOEXEC is added): e.g. a read-only fd for a sealed memfd, so the
 * receiver cannot even try to write. The new fd, or -errno. */
int fd_reopen(int fd, int flags);
