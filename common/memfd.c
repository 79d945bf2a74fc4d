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
        int r = fd < 0 ? -errno : fd_write_all(fd, data, len);

        /* Sealed before anyone else sees it: what the reader gets is what was written. */
        if (r == 0 && fcntl(fd, F_ADD_SEALS, MEMFD_SEALS) < 0)
                r = -errno;
        if (r == 0 && lseek(fd, 0, SEEK_SET) < 0)
                r = -errno;
        return r < 0 ? r : TAKE_FD(fd);
}
