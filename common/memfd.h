/* Sealed memfds: data handed to another process that can read it but never
 * change it (seccomp programs, specs, tokens). libc only. */
#pragma once

#include <fcntl.h>
#include <stddef.h>

/* The seals every memfd made here carries: no write, no resize, no more seals. */
#define MEMFD_SEALS (F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL)

/* Creates a memfd named `name` (MFD_CLOEXEC), writes all of data[0..len)
 * (EINTR and short writes retried), seals it with MEMFD_SEALS and rewinds
 * it to offset 0. Returns the fd, or -errno (nothing is left open). The fd
 * stays O_RDWR; fd_reopen(fd, O_RDONLY) gives one that cannot be opened for
 * writing even in principle. */
int memfd_new_sealed(const char *name, const void *data, size_t len);
