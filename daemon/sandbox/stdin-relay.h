/* An attached spawn's stdin: the sandbox reads a pipe of agentd's, and agentd
 * copies the caller's stdin into it. The sandbox never holds the caller's
 * open file description (no fchmod/futimens/xattrs on the caller's file, no
 * termios changes to the user's terminal). */
#pragma once

#include <uv.h>

typedef struct stdin_relay stdin_relay;

/* Takes client_fd (always: closed on failure too). *ret_sandbox_fd: the pipe's
 * read end for the sandbox's fd 0 (caller closes it once handed over). EOF on
 * client_fd closes the pipe (EOF inside); a sandbox that closes its stdin ends
 * the relay (agentd never blocks on it). */
int stdin_relay_start(uv_loop_t *loop, int client_fd, int *ret_sandbox_fd, stdin_relay **ret);
/* Stops relaying and frees it (in its handles' close callbacks). NULL is fine. */
void stdin_relay_free(stdin_relay *r);
