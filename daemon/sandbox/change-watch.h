/* [Limits] ChangeMax=: how much disk a sandbox's copy-on-write layer uses,
 * measured off the loop (a walk of the upper dir in the thread pool) every
 * second or so, and a callback once it is over the limit. The upper dir stays
 * where it is, on disk in the sandbox's state dir: diff and promote keep
 * working after the sandbox (and agentd) are gone, which an upper dir on a
 * tmpfs of the sandbox's own would not allow. The price: the limit is checked,
 * not enforced by the kernel, so a sandbox can overshoot it by what it writes
 * between two checks. */
#pragma once

#include <stdint.h>
#include <uv.h>

typedef struct change_watch change_watch;
/* Called once, on the loop, when the layer uses more than `limit` bytes. */
typedef void (*change_watch_cb)(void *userdata, uint64_t used, uint64_t limit);

int change_watch_start(uv_loop_t *loop, const char *upper, uint64_t limit, change_watch_cb cb, void *userdata,
                       change_watch **ret);
/* Stops it; memory goes once the timer is closed and no walk is running. NULL is fine. */
void change_watch_free(change_watch *w);
