/* The ChangeMax= watch (change-watch.h). */
#include "change-watch.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "macro.h"

#define CHANGE_WATCH_INTERVAL_MS 1000
/* A big layer takes a while to walk: never spend more than a tenth of the time walking. */
#define CHANGE_WATCH_DUTY 10

struct change_watch {
        uv_timer_t timer;
        uv_work_t work;
        bool walking, timer_closed, freed, fired;
        uint64_t limit, used, walk_ms;
        change_watch_cb cb;
        void *userdata;
        char upper[];
};

static uint64_t mono_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

/* nftw has no user pointer; each walk runs on one thread pool thread. */
static __thread uint64_t walk_used, walk_limit;

static int walk_one(const char *path, const struct stat *st, int flag, struct FTW *f) {
        walk_used += (uint64_t) st->st_blocks * 512;
        return walk_used > walk_limit ? 1 : 0; /* over: no need to count the rest */
}

static void do_walk(uv_work_t *req) {
        change_watch *w = container_of(req, change_watch, work);
        uint64_t t0 = mono_ms();
        walk_used = 0;
        walk_limit = w->limit;
        (void) nftw(w->upper, walk_one, 16, FTW_PHYS | FTW_MOUNT);
        w->used = walk_used;
        w->walk_ms = mono_ms() - t0;
}

static void watch_maybe_free(change_watch *w) {
        if (w->freed && w->timer_closed && !w->walking)
                free(w);
}

static void on_tick(uv_timer_t *t);

static void after_walk(uv_work_t *req, int status) {
        change_watch *w = container_of(req, change_watch, work);
        w->walking = false;
        if (w->freed) {
                watch_maybe_free(w);
                return;
        }
        if (status == 0 && w->used > w->limit && !w->fired) {
                w->fired = true;
                w->cb(w->userdata, w->used, w->limit);
                return;
        }
        uint64_t next = w->walk_ms * CHANGE_WATCH_DUTY;
        uv_timer_start(&w->timer, on_tick, next > CHANGE_WATCH_INTERVAL_MS ? next : CHANGE_WATCH_INTERVAL_MS, 0);
}

static void on_tick(uv_timer_t *t) {
        change_watch *w = container_of(t, change_watch, timer);
        if (w->walking || w->freed)
                return;
        if (uv_queue_work(t->loop, &w->work, do_walk, after_walk) == 0)
                w->walking = true;
        else
                uv_timer_start(&w->timer, on_tick, CHANGE_WATCH_INTERVAL_MS, 0);
}

int change_watch_start(uv_loop_t *loop, const char *upper, uint64_t limit, change_watch_cb cb, void *userdata,
                       change_watch **ret) {
        size_t n = strlen(upper) + 1;
        change_watch *w = calloc(1, sizeof(*w) + n);
        if (!w)
                return -ENOMEM;
        memcpy(w->upper, upper, n);
        w->limit = limit;
        w->cb = cb;
        w->userdata = userdata;
        uv_timer_init(loop, &w->timer);
        uv_timer_start(&w->timer, on_tick, CHANGE_WATCH_INTERVAL_MS, 0);
        *ret = w;
        return 0;
}

static void on_timer_closed(uv_handle_t *h) {
        change_watch *w = container_of((uv_timer_t *) h, change_watch, timer);
        w->timer_closed = true;
        watch_maybe_free(w);
}

void change_watch_free(change_watch *w) {
        if (!w)
                return;
        w->freed = true;
        uv_timer_stop(&w->timer);
        uv_close((uv_handle_t *) &w->timer, on_timer_closed);
}
