/* Messages with file descriptors over Unix sockets (SCM_RIGHTS): the one
 * place the control-message arithmetic is written. libc only (the static
 * helper links it too). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

/* The most fds one message carries in or out here (the kernel's SCM_MAX_FD). */
#define SOCKET_FDS_MAX 253

/* The control buffer for a message carrying n fds. Declare it as
 *   union { struct cmsghdr align; char buf[SOCKET_CMSG_SPACE(n)]; } control;
 * so it is aligned for cmsghdr. */
#define SOCKET_CMSG_SPACE(n) CMSG_SPACE(sizeof(int) * (n))

/* Attaches fds[0..n) to `mh` as one SCM_RIGHTS control message built in
 * `buf` (buf_size >= SOCKET_CMSG_SPACE(n), cmsghdr-aligned). With n == 0 the
 * message gets no control data. -EINVAL if n > SOCKET_FDS_MAX, -ENOBUFS if
 * buf is too small; `mh` is untouched then. The fds stay the caller's. */
int socket_cmsg_put_fds(struct msghdr *mh, void *buf, size_t buf_size, const int *fds, size_t n);

/* What socket_cmsg_take_fds() saw besides the fds it kept. */
typedef struct SocketFdsInfo {
        size_t n_rights;  /* SCM_RIGHTS control messages */
        size_t n_closed;  /* fds beyond the caller's room: closed here */
        bool foreign;     /* control messages of another kind (ignored) */
        int msg_flags;    /* the message's flags: MSG_CTRUNC means the kernel
                           * dropped fds that did not fit, MSG_TRUNC data */
} SocketFdsInfo;

/* Takes every fd out of the SCM_RIGHTS control messages of a received `mh`:
 * appends them to fds[*n_fds..max) in order and closes the ones beyond max.
 * Afterwards the caller owns fds[0..*n_fds). `ret_info` may be NULL. Never
 * fails. */
void socket_cmsg_take_fds(struct msghdr *mh, int *fds, size_t *n_fds, size_t max, SocketFdsInfo *ret_info);

/* One sendmsg() of data[0..len) with fds[0..n_fds) attached, retried on
 * EINTR. `flags` are sendmsg's (MSG_NOSIGNAL is always added). Returns the
 * bytes sent (possibly fewer than len: the fds went with them) or -errno
 * (then no fd was sent; -EINVAL for more than SOCKET_FDS_MAX). The fds stay
 * the caller's. */
ssize_t socket_send_fds(int sock, const void *data, size_t len, const int *fds, size_t n_fds, int flags);

/* Sends all of data[0..len), the fds with the first chunk; short writes and
 * EINTR are retried. 0 or -errno (after a partial send the fds have gone). */
int socket_send_all_fds(int sock, const void *data, size_t len, const int *fds, size_t n_fds, int flags);

/* One recvmsg() into buf[0..len), with room for max_fds - *n_fds more fds
 * (capped at SOCKET_FDS_MAX), appended to fds[*n_fds..max_fds) as
 * socket_cmsg_take_fds() does. MSG_CMSG_CLOEXEC is always added to `flags`.
 * EINTR is NOT retried: the caller may have a signal to handle. The control
 * buffer is sized for the room; CMSG_SPACE's padding may let the kernel
 * deliver one fd more, which is closed here (ret_info->n_closed), and fds
 * beyond the buffer the kernel drops itself (MSG_CTRUNC in
 * ret_info->msg_flags): "exactly one fd" is n == 1, n_closed == 0 and no
 * MSG_CTRUNC. Returns the bytes read (0 at the end of the stream, with fds
 * possibly taken) or -errno (nothing taken). `ret_info` may be NULL. */
ssize_t socket_recv_fds(int sock, void *buf, size_t len, int *fds, size_t *n_fds, size_t max_fds, int flags,
                        SocketFdsInfo *ret_info);
