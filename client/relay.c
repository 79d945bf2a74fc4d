/* agentd writes an attached sandbox's output straight to the caller's stdout and
 * stderr, opening them again through /proc (a new open file description, so its
 * O_NONBLOCK does not touch the caller's shell). A pipe or terminal that another
 * uid created cannot be opened again by us or by agentd; this relays such a
 * stream through a pipe of our own instead. */
#include "relay.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "macro.h"

static bool can_reopen(int fd) {
        struct stat st;
        if (fstat(fd, &st) < 0)
                return true; /* nothing we can do better: agentd reports it */
        if (!S_ISFIFO(st.st_mode) && !(S_ISCHR(st.st_mode) && isatty(fd)))
                return true; /* agentd uses files and sockets as they are */
        char path[64];
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        int nfd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        if (nfd < 0)
                return errno != EACCES && errno != EPERM;
        close(nfd);
        return true;
}

static int write_all(int fd, const char *p, size_t n) {
        while (n > 0) {
                ssize_t w = write(fd, p, n);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w < 0)
                        return -errno;
                p += w;
                n -= (size_t) w;
        }
        return 0;
}

__attribute__((noreturn)) static void relay_run(const int read_fd[3]) {
        /* Ctrl-C is forwarded to the sandbox by agentctl; we copy until EOF. */
        signal(SIGINT, SIG_IGN);
        signal(SIGQUIT, SIG_IGN);
        signal(SIGTERM, SIG_IGN);
        signal(SIGHUP, SIG_IGN);
        struct pollfd pfd[2];
        int target[2];
        nfds_t n = 0;
        for (int i = 1; i < 3; i++)
                if (read_fd[i] >= 0) {
                        pfd[n] = (struct pollfd) { .fd = read_fd[i], .events = POLLIN };
                        target[n++] = i;
                }
        size_t open_streams = n;
        char buf[65536];
        while (open_streams > 0) {
                if (poll(pfd, n, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        _exit(1);
                }
                for (nfds_t k = 0; k < n; k++) {
                        if (pfd[k].fd < 0 || !pfd[k].revents)
                                continue;
                        ssize_t m = read(pfd[k].fd, buf, sizeof(buf));
                        if (m < 0 && (errno == EINTR || errno == EAGAIN))
                                continue;
                        if (m <= 0 || write_all(target[k], buf, (size_t) m) < 0) {
                                close(pfd[k].fd);
                                pfd[k].fd = -1;
                                open_streams--;
                        }
                }
        }
        _exit(0);
}

int stdio_relay_start(stdio_relay *r, int fds[3]) {
        int read_fd[3] = { -1, -1, -1 };
        *r = (stdio_relay) { .write_fd = { -1, -1, -1 } };
        for (int i = 1; i < 3; i++) {
                if (can_reopen(fds[i]))
                        continue;
                int p[2];
                if (pipe2(p, O_CLOEXEC) < 0) {
                        int e = -errno;
                        for (int j = 1; j < 3; j++) {
                                safe_close(read_fd[j]);
                                safe_close(r->write_fd[j]);
                        }
                        r->write_fd[1] = r->write_fd[2] = -1;
                        return e;
                }
                read_fd[i] = p[0];
                r->write_fd[i] = p[1];
        }
        if (read_fd[1] < 0 && read_fd[2] < 0)
                return 0;
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0) {
                int e = -errno;
                for (int j = 1; j < 3; j++) {
                        safe_close(read_fd[j]);
                        r->write_fd[j] = safe_close(r->write_fd[j]);
                }
                return e;
        }
        if (pid == 0) {
                for (int j = 1; j < 3; j++)
                        safe_close(r->write_fd[j]);
                relay_run(read_fd);
        }
        for (int j = 1; j < 3; j++) {
                safe_close(read_fd[j]);
                if (r->write_fd[j] >= 0)
                        fds[j] = r->write_fd[j];
        }
        r->pid = pid;
        return 0;
}

void stdio_relay_sent(stdio_relay *r) {
        for (int j = 1; j < 3; j++)
                r->write_fd[j] = safe_close(r->write_fd[j]);
}

void stdio_relay_finish(stdio_relay *r) {
        stdio_relay_sent(r);
        if (r->pid > 0)
                while (waitpid(r->pid, NULL, 0) < 0 && errno == EINTR)
                        ;
        r->pid = 0;
}
