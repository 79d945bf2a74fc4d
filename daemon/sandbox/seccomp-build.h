/* Build a seccomp profile into a raw BPF program (an array of struct sock_filter)
 * that the sandbox helper installs with seccomp(2), without libseccomp. */
#pragma once

#include <stddef.h>

/* profile_name: "default", "strict", or the absolute path of a profile file (see
 * policy/seccomp-profiles.h for the format). On failure returns a negative errno
 * and, if ret_error is not NULL, a message for people (free() it). Syscalls the
 * native architecture lacks are skipped for the built-in profiles; in a profile
 * file an unknown syscall name is an error. Any other architecture (x32, i386 on
 * x86-64) kills the process. */
int seccomp_build_bpf(const char *profile_name, void **ret_bpf, size_t *ret_len, char **ret_error);

/* The same program in a sealed (read-only, fixed size) memfd, offset 0. */
int seccomp_build_memfd(const char *profile_name, int *ret_fd, char **ret_error);
