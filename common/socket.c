/* SCM_RIGHTS send and receive (see socket.h). */
#include "socket.h"

#include <errno.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

int socket_cmsg_put_fds(struct msghdr *mh, void *buf, size_t buf_size, const int *fds, size_t n) {
        struct cmsghdr *c;

        if (n == 0) {
                mh->msg_control = NULL;
                mh->msg_controllen = 0;
                return 0;
        }
        if (n > SOCKET_FDS_MAX)
                return -EINVAL;
        if (buf_size < SOCKET_CMSG_SPACE(n))
                return -ENOBUFS;
        memset(buf, 0, SOCKET_CMSG_SPACE(n));
        mh->msg_control = buf;
        mh->msg_controllen = SOCKET_CMSG_SPACE(n);
        c = CMSG_FIRSTHDR(mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * n);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
        return 0;
}

void socket_cmsg_take_fds(struct msghdr *mh, int *fds, size_t *n_fds, size_t max, SocketFdsInfo *ret_info) {
        SocketFdsInfo info = { .msg_flags = mh->msg_flags };

        for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
                        info.foreign = true;
                        continue;
                }
                info.n_rights++;
                size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (size_t i = 0; i < k; i++) {
                        int fd;

                        memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                        if (*n_fds < max)
                                fds[(*n_fds)++] = fd;
                        else {
                                (void) close(fd);
                                info.n_closed++;
                        }
                }
        }
        if (ret_info)
                *ret_info = info;
}

ssize_t socket_send_fds(int sock, const void *data, size_t len, const int *fds, size_t n_fds, int flags) {
        union {
                struct cmsghdr align;
                char buf[SOCKET_CMSG_SPACE(SOCKET_FDS_MAX)];
        } control;
        struct iovec iov = { .iov_base = (void *) data, .iov_len = len };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
        ssize_t n;
        int r;

        r = socket_cmsg_put_fds(&mh, control.buf, sizeof(control.buf), fds, n_fds);
        if (r < 0)
                return r;
        while ((n = sendmsg(sock, &mh, flags | MSG_NOSIGNAL)) < 0)
                if (errno != EINTR)
                        return -errno;
        return n;
}

int socket_send_all_fds(int sock, const void *data, size_t len, const int *fds, size_t n_fds, int flags) {
        const char *p = data;

        while (len > 0) {
                ssize_t n = socket_send_fds(sock, p, len, fds, n_fds, flags);
                if (n < 0)
                        return (int) n;
                n_fds = 0; /* the fds went with the first chunk */
                p += n;
                len -= (size_t) n;
        }
        return 0;
}

ssize_t socket_recv_fds(int sock, void *buf, size_t len, int *fds, size_t *n_fds, size_t max_fds, int flags,
                        SocketFdsInfo *ret_info) {
        union {
                struct cmsghdr align;
                char buf[SOCKET_CMSG_SPACE(SOCKET_FDS_MAX)];
        } control;
        size_t room = *n_fds < max_fds ? max_fds - *n_fds : 0;
        struct iovec iov = { .iov_base = buf, .iov_len = len };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
        ssize_t n;

        if (room > SOCKET_FDS_MAX)
                room = SOCKET_FDS_MAX;
        if (room > 0) {
                mh.msg_control = control.buf;
                mh.msg_controllen = SOCKET_CMSG_SPACE(room);
        }
        n = recvmsg(sock, &mh, flags | MSG_CMSG_CLOEXEC);
        if (n < 0)
                return -errno;
        socket_cmsg_take_fds(&mh, fds, n_fds, max_fds, ret_info);
        return n;
}
