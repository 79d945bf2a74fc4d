/* Small file helpers for the daemon: bounded reads and atomic writes. */
#pragma once

#include <stddef.h>

/* Reads a whole regular file of at most `max` bytes (not following a final
 * symlink) into a NUL-terminated buffer. -EFBIG when it is larger. */
int read_file_bounded(const char *path, size_t max, char **ret, size_t *ret_len);
/* Writes path.tmp (0600), fsyncs it and renames it over path. */
int write_file_atomic(const char *path, const void *data, size_t len);
