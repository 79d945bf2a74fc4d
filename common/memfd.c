/* Sealed memfds (see memfd.h). */
#include "memfd.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fd.h"
#include "macro.h"

int memfd_new_sealed(const char *name, const void *data, size_t len) {
        _cleanup_close_ int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
        int r;

        if (fd < 0)
                return -errno;
        r = fd_write_all(fd, data, len);
        if (r < 0)
                return r;
        if (fcntl(fd, F_ADD_SEALS, MEMFD_SEALS) < 0)
                return -errno;
        if (lseek(fd, 0, SEEK_SET) < 0)
                return -errno;
        return TAKE_FD(fd);
}
