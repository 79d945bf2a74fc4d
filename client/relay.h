/* Output relay for an attached spawn whose stdout/stderr agentd cannot reopen. */
#pragma once

#include <sys/types.h>

typedef struct stdio_relay {
        pid_t pid;        /* the relay process, 0 if none */
        int write_fd[3];  /* the pipe ends sent to agentd in place of fds 1 and 2, -1 if unused */
} stdio_relay;

/* For each of fds 1 and 2 that is a pipe or terminal this uid cannot open again
 * (another uid created it: sudo -u, su, CI runners), agentd could not either: put
 * a pipe in its place (fds[i] becomes its write end) and copy from it to the real
 * descriptor in a child process. Returns 0 (also when nothing needs relaying) or -errno. */
int stdio_relay_start(stdio_relay *r, int fds[3]);
/* After the descriptors were sent: close our copies of the write ends. */
void stdio_relay_sent(stdio_relay *r);
/* Wait until the relay has copied everything (agentd closed its ends). */
void stdio_relay_finish(stdio_relay *r);
