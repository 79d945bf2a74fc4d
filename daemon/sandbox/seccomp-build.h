/* Build a seccomp profile into a raw BPF program (an array of struct sock_filter)
 * that the sandbox helper installs with seccomp(2), without libseccomp. */
#pragma once

#include <stddef.h>

#include "error.h"

/* profile_name: "default", "strict", or the absolute path of a profile file (see
 * policy/seccomp-profiles.h for the format). On failure returns a negative errno
 * and sets err (may be NULL): policy_denied for a bad or unknown profile,
 * internal when libseccomp or the kernel failed. Syscalls the
 * native architecture lacks are skipped for the built-in profiles; in a profile
 * file an unknown syscall name is an error. Any other architecture (x32, i386 on
 * x86-64) kills the process. */
int seccomp_build_bpf(const char *profile_name, void **ret_bpf, size_t *ret_len, agentd_error *err);

/* The same program in a sealed (read-only, fixed size) memfd, offset 0. */
int seccomp_build_memfd(const char *profile_name, int *ret_fd, agentd_error *err);
